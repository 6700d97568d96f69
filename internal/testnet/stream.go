package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netnsfile"
)

// VethPair is two namespaces "<prefix>-<name>a" and "<prefix>-<name>b"
// joined by a plain veth pair (eth0 in each), the reference path of data
// plane benchmarks.
type VethPair struct {
	APath, BPath string
	A, B         netip.Prefix // the addresses of eth0 in A and B
}

// AddVethPair makes a VethPair with addresses a and b and the given MTU (0:
// the kernel's default, 1500). Close deletes it.
func (n *Net) AddVethPair(name string, a, b netip.Prefix, mtu int) (*VethPair, error) {
	p := &VethPair{A: a, B: b}
	var err error
	if p.APath, err = n.AddNetns(name + "a"); err != nil {
		return nil, err
	}
	if p.BPath, err = n.AddNetns(name + "b"); err != nil {
		return nil, err
	}
	if err := join(p.APath, p.BPath, "eth0", mtu, a, b); err != nil {
		return nil, fmt.Errorf("veth pair %s: %w", name, err)
	}
	return p, nil
}

// StreamOptions configure Stream.
type StreamOptions struct {
	// From and To are the paths of the sender's and the receiver's
	// namespaces; the receiver listens on Addr inside To.
	From, To string
	Addr     netip.AddrPort
	// Warmup is sent before the measured Duration starts (default 200ms);
	// Duration defaults to 1s.
	Warmup, Duration time.Duration
	// WriteSize is the size of each write(2) (default 128 KiB); the receiver
	// reads with the same buffer size.
	WriteSize int
	// SenderCPU and ReceiverCPU pin the sending and receiving threads to a
	// CPU; -1 (or any negative value) leaves them to the scheduler.
	SenderCPU, ReceiverCPU int
}

// StreamResult is what one Stream measured.
type StreamResult struct {
	// Bytes the receiver read during Elapsed (the measured window).
	Bytes   uint64
	Elapsed time.Duration
	// Retransmits is the sender's TCP retransmitted segments over the whole
	// stream (tcpi_total_retrans), warm-up included.
	Retransmits uint32
	// SenderCPU and ReceiverCPU are the user+system time of the sending and
	// receiving threads over the whole stream (getrusage RUSAGE_THREAD):
	// the kernel work done in their system calls, including the softirq
	// processing that ran on their CPU in their context.
	SenderCPU, ReceiverCPU time.Duration
}

// Gbps is the measured throughput in Gbit/s.
func (r StreamResult) Gbps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9
}

// Stream runs one bulk TCP transfer from a socket in From to a listener in
// To and measures the receiver's goodput over Duration after Warmup. Both
// ends are plain blocking sockets on locked OS threads (like iperf3, no Go
// netpoller in the data path), created inside their namespaces.
func Stream(ctx context.Context, o StreamOptions) (StreamResult, error) {
	if o.Warmup <= 0 {
		o.Warmup = 200 * time.Millisecond
	}
	if o.Duration <= 0 {
		o.Duration = time.Second
	}
	if o.WriteSize <= 0 {
		o.WriteSize = 128 << 10
	}
	if !o.Addr.Addr().Is4() {
		return StreamResult{}, fmt.Errorf("stream to %s: only IPv4", o.Addr)
	}
	sa := &unix.SockaddrInet4{Port: int(o.Addr.Port()), Addr: o.Addr.Addr().As4()}

	// Every socket is closed here, after both threads are done, so that a
	// shutdown(2) (which wakes a thread blocked in accept, read or write;
	// close(2) would not) never hits a reused descriptor.
	var lfd, cfd, sfd atomic.Int64
	lfd.Store(-1)
	cfd.Store(-1)
	sfd.Store(-1)
	defer func() {
		for _, fd := range []*atomic.Int64{&lfd, &cfd, &sfd} {
			if v := fd.Load(); v >= 0 {
				unix.Close(int(v))
			}
		}
	}()

	// Receiver: listen, accept one connection, read until EOF.
	var received atomic.Uint64
	var scpu, rcpu atomic.Int64
	listening := make(chan error, 1)
	rdone := make(chan error, 1)
	go func() {
		rdone <- onThread(o.To, o.ReceiverCPU, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				listening <- fmt.Errorf("receiver socket: %w", err)
				return nil
			}
			lfd.Store(int64(fd))
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if err := unix.Bind(fd, sa); err != nil {
				listening <- fmt.Errorf("receiver bind %s: %w", o.Addr, err)
				return nil
			}
			if err := unix.Listen(fd, 1); err != nil {
				listening <- fmt.Errorf("receiver listen: %w", err)
				return nil
			}
			listening <- nil
			c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err != nil {
				return fmt.Errorf("receiver accept: %w", err)
			}
			cfd.Store(int64(c))
			defer func() { rcpu.Store(int64(threadCPU())) }()
			buf := make([]byte, o.WriteSize)
			for {
				n, err := unix.Read(c, buf)
				if n > 0 {
					received.Add(uint64(n))
				}
				if n == 0 || err != nil {
					return nil
				}
			}
		})
	}()
	if err := <-listening; err != nil {
		return StreamResult{}, fmt.Errorf("stream to %s: %w", o.Addr, errors.Join(err, <-rdone))
	}

	// Sender: connect, write until told to stop.
	var stop atomic.Bool
	var retrans atomic.Uint32
	connected := make(chan error, 1)
	sdone := make(chan error, 1)
	go func() {
		sdone <- onThread(o.From, o.SenderCPU, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				connected <- fmt.Errorf("sender socket: %w", err)
				return nil
			}
			sfd.Store(int64(fd))
			if err := unix.Connect(fd, sa); err != nil {
				connected <- fmt.Errorf("connect: %w", err)
				return nil
			}
			connected <- nil
			buf := make([]byte, o.WriteSize)
			for !stop.Load() {
				if _, err := unix.Write(fd, buf); err != nil {
					if stop.Load() {
						break
					}
					return fmt.Errorf("sender write: %w", err)
				}
			}
			if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				retrans.Store(ti.Total_retrans)
			}
			scpu.Store(int64(threadCPU()))
			return nil
		})
	}()
	shut := func(fds ...*atomic.Int64) {
		for _, fd := range fds {
			if v := fd.Load(); v >= 0 {
				_ = unix.Shutdown(int(v), unix.SHUT_RDWR)
			}
		}
	}
	var res StreamResult
	var errs []error
	senderDone := false
	select {
	case err := <-connected:
		if err != nil {
			errs = append(errs, err)
			break
		}
		res, err = measure(ctx, &received, o.Warmup, o.Duration)
		errs = append(errs, err)
	case err := <-sdone:
		senderDone = true
		errs = append(errs, err)
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	// Stop the sender by flag first, so that it reads TCP_INFO; a sender
	// blocked on a full socket for long is woken by a shutdown.
	stop.Store(true)
	if !senderDone {
		timer := time.AfterFunc(2*time.Second, func() { shut(&sfd) })
		errs = append(errs, <-sdone)
		timer.Stop()
	}
	shut(&sfd, &lfd, &cfd)
	errs = append(errs, <-rdone)
	res.Retransmits = retrans.Load()
	res.SenderCPU, res.ReceiverCPU = time.Duration(scpu.Load()), time.Duration(rcpu.Load())
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("stream to %s: %w", o.Addr, err)
	}
	return res, nil
}

// measure returns the bytes received over d, after a warm-up.
func measure(ctx context.Context, received *atomic.Uint64, warmup, d time.Duration) (StreamResult, error) {
	t := time.NewTimer(warmup)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return StreamResult{}, ctx.Err()
	case <-t.C:
	}
	b0, t0 := received.Load(), time.Now()
	t.Reset(d)
	select {
	case <-ctx.Done():
		return StreamResult{}, ctx.Err()
	case <-t.C:
	}
	return StreamResult{Bytes: received.Load() - b0, Elapsed: time.Since(t0)}, nil
}

// threadCPU is the calling thread's user+system time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// onThread runs fn on an OS thread inside the namespace at path, pinned
// to cpu unless it is negative (the thread's affinity is restored after).
func onThread(path string, cpu int, fn func() error) error {
	return netnsfile.Do(path, func() error {
		if cpu < 0 {
			return fn()
		}
		var old, set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return fmt.Errorf("pin to cpu %d: %w", cpu, err)
		}
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pin to cpu %d: %w", cpu, err)
		}
		ferr := fn()
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			return errors.Join(ferr, fmt.Errorf("unpin from cpu %d: %w", cpu, err))
		}
		return ferr
	})
}
