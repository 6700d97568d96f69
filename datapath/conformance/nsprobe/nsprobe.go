// Package nsprobe is the conformance suite's FlowProber for drivers whose
// endpoints are real network namespaces (datapath/linux, datapath/ebpf):
// it sends real ICMP, TCP and UDP between them, playing both ends.
package nsprobe

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/conformance"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// Prober sends real traffic between endpoint namespaces (as Status
// reports them).
type Prober struct{}

var _ conformance.FlowProber = Prober{}

func netnsOf(d datapath.Driver, id string) (string, error) {
	st, ok := d.Status(id)
	if !ok {
		return "", fmt.Errorf("endpoint %q not programmed", id)
	}
	return st.Netns, nil
}

// Ping implements conformance.Prober.
func (Prober) Ping(ctx context.Context, d datapath.Driver, id string, dst netip.Addr) error {
	ns, err := netnsOf(d, id)
	if err != nil {
		return err
	}
	_, err = testnet.Ping(ctx, ns, dst)
	return err
}

// Probe implements conformance.FlowProber.
func (Prober) Probe(ctx context.Context, d datapath.Driver, f conformance.Flow) error {
	from, err := netnsOf(d, f.From)
	if err != nil {
		return err
	}
	to, err := netnsOf(d, f.To)
	if err != nil {
		return err
	}
	return Send(ctx, from, to, f)
}

// Send sends one request of f from the namespace at from to the namespace
// at to, which answers it, and waits for the answer.
func Send(ctx context.Context, from, to string, f conformance.Flow) error {
	switch f.Proto {
	case datapath.ProtoTCP:
		c, err := Dial(ctx, from, to, f)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Exchange(ctx)
	case datapath.ProtoUDP:
		return udpProbe(ctx, from, to, f)
	case datapath.ProtoICMP:
		if f.ICMPType == 8 {
			_, err := testnet.Ping(ctx, from, f.Dst)
			return err
		}
		return icmpTimestamp(ctx, from, f.Dst)
	}
	return fmt.Errorf("probe: protocol %d not supported", f.Proto)
}

// Connect implements conformance.FlowProber.
func (Prober) Connect(ctx context.Context, d datapath.Driver, f conformance.Flow) (conformance.Conn, error) {
	from, err := netnsOf(d, f.From)
	if err != nil {
		return nil, err
	}
	to, err := netnsOf(d, f.To)
	if err != nil {
		return nil, err
	}
	return Dial(ctx, from, to, f)
}

// tcpConn is a TCP connection to an echo server that lives as long as it.
type tcpConn struct {
	c    net.Conn
	stop func()
}

// Dial starts an echo server in the namespace at to on f.Port and
// connects to it from the namespace at from (from f.SrcPort, if set).
func Dial(ctx context.Context, from, to string, f conformance.Flow) (conformance.Conn, error) {
	l, err := testnet.ListenTCP(to, net.JoinHostPort(f.Dst.String(), strconv.Itoa(int(f.Port))))
	if err != nil {
		return nil, err
	}
	stop, accepted := serveEchoOnce(l)
	var c net.Conn
	err = netnsfile.Do(from, func() error {
		d := net.Dialer{}
		if f.SrcPort != 0 {
			d.LocalAddr = &net.TCPAddr{Port: int(f.SrcPort)}
		}
		var err error
		c, err = d.DialContext(ctx, "tcp", l.Addr().String())
		return err
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("connect %s: %w", l.Addr(), err)
	}
	// The port is free again once the server accepted.
	select {
	case <-accepted:
	case <-ctx.Done():
		c.Close()
		stop()
		return nil, fmt.Errorf("connect %s: not accepted: %w", l.Addr(), ctx.Err())
	}
	return &tcpConn{c: c, stop: stop}, nil
}

// Exchange sends one byte and waits for it to come back.
func (t *tcpConn) Exchange(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = t.c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := t.c.Write([]byte{'x'}); err != nil {
		return err
	}
	b := make([]byte, 1)
	_, err := t.c.Read(b)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("no answer: %w", ctx.Err())
	}
	return err
}

func (t *tcpConn) Close() error {
	err := t.c.Close()
	t.stop()
	return err
}

// serveEchoOnce accepts one connection on l, closes l (so that the port
// is free for other probes; accepted is closed then) and echoes the
// connection until stop, which closes it and waits.
func serveEchoOnce(l net.Listener) (stop func(), accepted <-chan struct{}) {
	done, acc := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var conn net.Conn
	stopped := false
	go func() {
		defer close(done)
		c, err := l.Accept()
		l.Close()
		close(acc)
		if err != nil {
			return
		}
		mu.Lock()
		if stopped {
			mu.Unlock()
			c.Close()
			return
		}
		conn = c
		mu.Unlock()
		b := make([]byte, 512)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
		}
	}()
	return func() {
		l.Close()
		mu.Lock()
		stopped = true
		if conn != nil {
			conn.Close()
		}
		mu.Unlock()
		<-done
	}, acc
}

// udpProbe sends one datagram to an echo socket in to and waits for the
// echo.
func udpProbe(ctx context.Context, from, to string, f conformance.Flow) error {
	var srv, cli net.PacketConn
	if err := netnsfile.Do(to, func() error {
		var err error
		srv, err = net.ListenPacket("udp4", net.JoinHostPort(f.Dst.String(), strconv.Itoa(int(f.Port))))
		return err
	}); err != nil {
		return err
	}
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 512)
		for {
			n, addr, err := srv.ReadFrom(b)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(b[:n], addr)
		}
	}()
	defer func() { srv.Close(); <-done }()
	if err := netnsfile.Do(from, func() error {
		var err error
		cli, err = net.ListenPacket("udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(int(f.SrcPort))))
		return err
	}); err != nil {
		return err
	}
	defer cli.Close()
	stop := context.AfterFunc(ctx, func() { _ = cli.SetDeadline(time.Now()) })
	defer stop()
	dst := &net.UDPAddr{IP: f.Dst.AsSlice(), Port: int(f.Port)}
	if _, err := cli.WriteTo([]byte("weft"), dst); err != nil {
		return err
	}
	b := make([]byte, 512)
	if _, _, err := cli.ReadFrom(b); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer from %s: %w", dst, ctx.Err())
		}
		return err
	}
	return nil
}

// icmpTimestamp sends one ICMP timestamp request (type 13) from the
// namespace at ns to dst and waits for the reply (type 14).
func icmpTimestamp(ctx context.Context, ns string, dst netip.Addr) error {
	var c *icmp.PacketConn
	if err := netnsfile.Do(ns, func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	id := uint16(rand.IntN(1 << 16))
	body := make([]byte, 16) // id, seq, originate, receive, transmit
	binary.BigEndian.PutUint16(body[0:], id)
	binary.BigEndian.PutUint16(body[2:], 1)
	m := icmp.Message{Type: ipv4.ICMPTypeTimestamp, Body: &icmp.RawBody{Data: body}}
	b, err := m.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no timestamp reply from %s: %w", dst, ctx.Err())
			}
			return err
		}
		r, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || r.Type != ipv4.ICMPTypeTimestampReply {
			continue
		}
		if raw, ok := r.Body.(*icmp.RawBody); ok && len(raw.Data) >= 2 && binary.BigEndian.Uint16(raw.Data) == id {
			return nil
		}
	}
}
