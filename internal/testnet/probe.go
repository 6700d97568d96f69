package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/internal/netnsfile"
)

// Ping sends exactly one ICMP echo request from inside the namespace at
// nsPath to dst and waits for the matching reply until ctx is done. It
// returns the round-trip time. It never retransmits, so a lost first packet
// shows up as an error.
func Ping(ctx context.Context, nsPath string, dst netip.Addr) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("ping %s: only IPv4", dst)
	}
	var c *icmp.PacketConn
	if err := netnsfile.Do(nsPath, func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, fmt.Errorf("ping %s: %w", dst, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()

	id, seq := rand.IntN(1<<16), 1
	payload := []byte("weft-testnet-probe")
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", dst, err)
	}
	start := time.Now()
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, fmt.Errorf("ping %s: send: %w", dst, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("ping %s: no reply: %w", dst, ctx.Err())
			}
			return 0, fmt.Errorf("ping %s: receive: %w", dst, err)
		}
		rtt := time.Since(start)
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if m.Type != ipv4.ICMPTypeEchoReply || !ok || echo.ID != id || echo.Seq != seq {
			continue
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(dst.AsSlice()) {
			continue
		}
		return rtt, nil
	}
}

// ListenTCP listens on addr ("ip:port") inside the namespace at nsPath.
func ListenTCP(nsPath, addr string) (net.Listener, error) {
	var l net.Listener
	err := netnsfile.Do(nsPath, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", addr, nsPath, err)
	}
	return l, nil
}

// DialTCP connects from inside the namespace at nsPath to addr ("ip:port").
func DialTCP(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	var c net.Conn
	err := netnsfile.Do(nsPath, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, nsPath, err)
	}
	return c, nil
}

// ServeHello accepts connections on l and writes hello to each, then closes
// it, until l is closed. The returned function closes l and waits for the
// server to stop.
func ServeHello(l net.Listener, hello string) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte(hello))
			c.Close()
		}
	}()
	return func() {
		l.Close()
		<-done
	}
}

// ServeEcho accepts connections on l; on each it writes greeting (if any),
// then echoes what it reads until the peer closes, each read written back
// at once (a request/response server). The returned function closes l and
// every connection, and waits for the server to stop.
func ServeEcho(l net.Listener, greeting string) (stop func()) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); c.Close() }()
				if greeting != "" {
					if _, err := io.WriteString(c, greeting); err != nil {
						return
					}
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// Hello dials addr from the namespace at nsPath and returns what the server
// wrote before closing (see ServeHello).
func Hello(ctx context.Context, nsPath, addr string) (string, error) {
	c, err := DialTCP(ctx, nsPath, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	var b []byte
	buf := make([]byte, 256)
	for {
		n, err := c.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			if len(b) > 0 {
				return string(b), nil
			}
			return "", fmt.Errorf("read from %s: %w", addr, err)
		}
	}
}

// PingStats is what a Pinger saw.
type PingStats struct {
	Sent, Received int
	// Lost lists the sequence numbers of requests that got no reply.
	Lost   []int
	MaxRTT time.Duration
}

// Pinger sends one ICMP echo request every interval from inside a
// namespace and matches the replies, to check that traffic flows without a
// gap while something changes.
type Pinger struct {
	conn     *icmp.PacketConn
	dst      *net.IPAddr
	id       int
	interval time.Duration

	mu    sync.Mutex
	sent  map[int]time.Time
	rtts  map[int]time.Duration
	stop  chan struct{}
	wg    sync.WaitGroup
	sendE error
}

// StartPinger starts pinging dst from the namespace at nsPath every
// interval until Stop.
func StartPinger(nsPath string, dst netip.Addr, interval time.Duration) (*Pinger, error) {
	if !dst.Is4() {
		return nil, fmt.Errorf("pinger %s: only IPv4", dst)
	}
	p := &Pinger{dst: &net.IPAddr{IP: dst.AsSlice()}, id: rand.IntN(1 << 16), interval: interval,
		sent: map[int]time.Time{}, rtts: map[int]time.Duration{}, stop: make(chan struct{})}
	if err := netnsfile.Do(nsPath, func() error {
		var err error
		p.conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return nil, fmt.Errorf("pinger %s: %w", dst, err)
	}
	p.wg.Add(2)
	go p.send()
	go p.receive()
	return p, nil
}

func (p *Pinger) send() {
	defer p.wg.Done()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for seq := 1; ; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("weft-testnet-pinger")}}
		b, err := msg.Marshal(nil)
		if err == nil {
			p.mu.Lock()
			p.sent[seq&0xffff] = time.Now()
			p.mu.Unlock()
			_, err = p.conn.WriteTo(b, p.dst)
		}
		if err != nil {
			p.mu.Lock()
			p.sendE = err
			p.mu.Unlock()
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

func (p *Pinger) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return // closed by Stop
		}
		now := time.Now()
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || echo.ID != p.id {
			continue
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(p.dst.IP) {
			continue
		}
		p.mu.Lock()
		if t0, ok := p.sent[echo.Seq]; ok {
			if _, dup := p.rtts[echo.Seq]; !dup {
				p.rtts[echo.Seq] = now.Sub(t0)
			}
		}
		p.mu.Unlock()
	}
}

// Stop stops sending, waits grace for the last replies, and reports. An
// error says that sending failed at some point (the stats still count).
func (p *Pinger) Stop(grace time.Duration) (PingStats, error) {
	close(p.stop)
	time.Sleep(grace)
	p.conn.Close()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PingStats{Sent: len(p.sent), Received: len(p.rtts)}
	for seq := range p.sent {
		if rtt, ok := p.rtts[seq]; !ok {
			st.Lost = append(st.Lost, seq)
		} else if rtt > st.MaxRTT {
			st.MaxRTT = rtt
		}
	}
	slices.Sort(st.Lost)
	if p.sendE != nil {
		return st, fmt.Errorf("pinger %s: send: %w", p.dst, p.sendE)
	}
	return st, nil
}
