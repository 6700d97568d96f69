package ebpf_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

const mbit = 1_000_000

// qosDC is two hosts with acme/a (h0) and acme/b, acme/c (h1), whose
// endpoints change their QoS between steps.
func qosDC(t *testing.T) *dc {
	c := newDC(t, 2, twoTenants()[:1])
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(0, "acme/l", 100, "a", "10.0.1.12")
	c.add(1, "acme/b", 100, "b", "10.0.2.11")
	c.add(1, "acme/c", 100, "b", "10.0.2.12")
	c.setAll()
	for _, p := range [][2]string{{"acme/a", "10.0.2.11"}, {"acme/a", "10.0.2.12"}, {"acme/b", "10.0.1.10"}, {"acme/c", "10.0.1.10"}, {"acme/a", "10.0.1.12"}} {
		c.mustReach(t, p[0], p[1])
	}
	return c
}

// setQoS gives endpoint id the QoS q and programs its host.
func (c *dc) setQoS(id string, q *datapath.QoS) {
	c.t.Helper()
	h := c.hostOf[id]
	for i := range c.eps[h] {
		if c.eps[h][i].ID == id {
			c.eps[h][i].QoS = q
		}
	}
	c.setAll()
}

func (c *dc) ip(id string) netip.Addr {
	for _, eps := range c.eps {
		for _, e := range eps {
			if e.ID == id {
				return e.IP
			}
		}
	}
	c.t.Fatalf("no endpoint %s", id)
	return netip.Addr{}
}

// stream measures one TCP stream from one endpoint to another, in Mbit/s
// of payload.
func (c *dc) stream(from, to string, port uint16) float64 {
	c.t.Helper()
	r, err := testnet.Stream(c.ctx, testnet.StreamOptions{From: c.netns(from), To: c.netns(to), Addr: netip.AddrPortFrom(c.ip(to), port),
		Warmup: 300 * time.Millisecond, Duration: time.Second, SenderCPU: -1, ReceiverCPU: -1})
	if err != nil {
		c.t.Fatalf("stream %s -> %s: %v", from, to, err)
	}
	return r.Gbps() * 1000
}

// capped checks a rate held under a cap: at most 3% above (what a second
// measures of a token bucket's burst) and at least half of it (the path
// is far faster than the caps tested).
func capped(t *testing.T, what string, got, limit float64) {
	t.Helper()
	t.Logf("%s: %.1f Mbit/s (cap %.0f)", what, got, limit)
	if got > limit*1.03 || got < limit/2 {
		t.Errorf("%s: %.1f Mbit/s, want at most %.0f and at least half of it", what, got, limit)
	}
}

// TestQoSCaps: an endpoint's cap holds what it sends and what it receives,
// to and from another host and on its own host; a VPC's cap holds its
// endpoints together; without a cap the path is not held.
func TestQoSCaps(t *testing.T) {
	c := qosDC(t)
	c.setQoS("acme/a", &datapath.QoS{MaxRateBps: 100 * mbit})
	t.Run("endpoint", func(t *testing.T) {
		capped(t, "a -> b (sent, across hosts)", c.stream("acme/a", "acme/b", 7001), 100)
		capped(t, "b -> a (received, across hosts)", c.stream("acme/b", "acme/a", 7002), 100)
		capped(t, "a -> l (sent, same host)", c.stream("acme/a", "acme/l", 7003), 100)
		capped(t, "l -> a (received, same host)", c.stream("acme/l", "acme/a", 7004), 100)
		got, sent := c.udpFlood("acme/a", "acme/b", 7005, 300)
		t.Logf("UDP a -> b: %.1f of %.1f Mbit/s sent", got, sent)
		if got > 100*1.03 {
			t.Errorf("UDP a -> b: %.1f Mbit/s over a cap of 100", got)
		}
	})
	t.Run("uncapped", func(t *testing.T) {
		if got := c.stream("acme/b", "acme/c", 7006); got < 300 {
			t.Errorf("b -> c (no cap): %.1f Mbit/s, want far above the caps tested", got)
		}
	})
	t.Run("VPC", func(t *testing.T) {
		c.setQoS("acme/a", nil)
		c.vpcs[0].QoS = &datapath.VPCQoS{MaxRateBps: 200 * mbit}
		c.setAll()
		var wg sync.WaitGroup
		var ab, lb float64
		wg.Add(2)
		go func() { defer wg.Done(); ab = c.stream("acme/a", "acme/b", 7007) }()
		go func() { defer wg.Done(); lb = c.stream("acme/l", "acme/c", 7008) }()
		wg.Wait()
		capped(t, "a -> b and l -> c together (sent by one VPC's endpoints on h0)", ab+lb, 200)
	})
}

// udpFlood sends 1400-byte datagrams at about offered Mbit/s for a second
// and returns the rate at which they arrived (from the first to the last)
// and the rate at which they were sent, in Mbit/s.
func (c *dc) udpFlood(from, to string, port uint16, offered float64) (got, sent float64) {
	c.t.Helper()
	var srv, cli net.PacketConn
	if err := netnsfile.Do(c.netns(to), func() error {
		var err error
		srv, err = net.ListenPacket("udp4", netip.AddrPortFrom(c.ip(to), port).String())
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	defer srv.Close()
	if err := netnsfile.Do(c.netns(from), func() error {
		var err error
		cli, err = net.ListenPacket("udp4", ":0")
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	defer cli.Close()
	var (
		rcvd        uint64
		first, last time.Time
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 2048)
		for {
			n, _, err := srv.ReadFrom(b)
			if err != nil {
				return
			}
			if last = time.Now(); first.IsZero() {
				first = last
			} else {
				rcvd += uint64(n)
			}
		}
	}()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.ip(to), port))
	payload := make([]byte, 1400)
	start := time.Now()
	var n uint64
	for time.Since(start) < time.Second {
		for target := uint64(offered * 1e6 / 8 * time.Since(start).Seconds()); n < target; {
			if _, err := cli.WriteTo(payload, dst); err == nil {
				n += uint64(len(payload))
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	srv.Close()
	<-done
	if last.Sub(first) <= 0 {
		return 0, float64(n) * 8 / 1e6 / elapsed.Seconds()
	}
	return float64(rcvd) * 8 / 1e6 / last.Sub(first).Seconds(), float64(n) * 8 / 1e6 / elapsed.Seconds()
}

func htbClassID(minor uint16) uint32 { return netlink.MakeHandle(0x7766, minor) }

// udpWithPriority sends n 1400-byte datagrams with the socket priority
// prio from one endpoint to another.
func (c *dc) udpWithPriority(from, to string, port uint16, n int, prio uint32) {
	c.t.Helper()
	var cli net.PacketConn
	if err := netnsfile.Do(c.netns(from), func() error {
		var err error
		if cli, err = net.ListenPacket("udp4", ":0"); err != nil {
			return err
		}
		rc, err := cli.(*net.UDPConn).SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PRIORITY, int(prio)) }); err != nil {
			return err
		}
		return serr
	}); err != nil {
		c.t.Fatal(err)
	}
	defer cli.Close()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.ip(to), port))
	payload := make([]byte, 1400)
	for i := range n {
		if _, err := cli.WriteTo(payload, dst); err != nil {
			c.t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond)
}

// classBytes reads the bytes sent through class 7766:minor of the uplink
// of host i.
func (c *dc) classBytes(i int, minor uint16) uint64 {
	c.t.Helper()
	h := handleIn(c.t, c.net.Host(i).Path)
	l, err := h.LinkByName(c.net.Host(i).UnderlayDev)
	if err != nil {
		c.t.Fatal(err)
	}
	cs, err := h.ClassList(l, netlink.MakeHandle(0x7766, 0))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, cl := range cs {
		if cl.Attrs().Handle == netlink.MakeHandle(0x7766, minor) && cl.Attrs().Statistics != nil {
			return cl.Attrs().Statistics.Basic.Bytes
		}
	}
	return 0
}

// TestQoSUplink: with a capacity, the uplink's HTB classifies what each
// endpoint sends across hosts by the class the programs set (a minimum
// and a priority; best effort for an endpoint without QoS, whatever
// priority its workload puts on its packets), and the outer header
// carries the endpoint's DSCP with the inner header unchanged.
func TestQoSUplink(t *testing.T) {
	c := qosDC(t)
	for i := range c.drivers {
		c.capacity[i] = 1000 * mbit
	}
	c.setQoS("acme/a", &datapath.QoS{MinRateBps: 300 * mbit, Priority: 1, DSCP: 46})
	snap, err := c.drivers[0].Snapshot(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var minor uint16
	for _, e := range snap.Endpoints {
		if e.ID == "acme/a" {
			if e.QoS == nil || e.QoS.MinRateBps != 300*mbit || e.QoS.Priority != 1 || e.QoS.DSCP != 46 {
				t.Fatalf("snapshot of acme/a: QoS %+v", e.QoS)
			}
		}
	}
	h := handleIn(t, c.net.Host(0).Path)
	l, err := h.LinkByName(c.net.Host(0).UnderlayDev)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := h.ClassList(l, netlink.MakeHandle(0x7766, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cs {
		if hc, ok := cl.(*netlink.HtbClass); ok && hc.Rate == 300*mbit/8 {
			minor = uint16(hc.Handle)
		}
	}
	if minor == 0 {
		t.Fatalf("no class of 300 Mbit/s on %s: %+v", l.Attrs().Name, cs)
	}
	cap := startCapture(t, c.net.Host(0).Path, c.net.Host(0).UnderlayDev)
	ownBefore := c.classBytes(0, minor)
	c.stream("acme/a", "acme/b", 7011)
	own := c.classBytes(0, minor) - ownBefore
	// A workload that asks for acme/a's class (SO_PRIORITY) gets best
	// effort (once what acme/a's socket still had to send is sent).
	time.Sleep(time.Second)
	ownBefore, defBefore := c.classBytes(0, minor), c.classBytes(0, 2)
	c.udpWithPriority("acme/l", "acme/c", 7012, 2000, htbClassID(minor))
	stolen, def := c.classBytes(0, minor)-ownBefore, c.classBytes(0, 2)-defBefore
	t.Logf("uplink of h0: class 7766:%x carried %d bytes of acme/a's stream; acme/l's datagrams asking for it: %d bytes in it, %d in best effort", minor, own, stolen, def)
	if own < 10<<20 || stolen > 0 || def < 2000*1400 {
		t.Errorf("class 7766:%x carried %d bytes of acme/a and %d of acme/l, best effort %d: want acme/a's stream in its class and acme/l's datagrams in best effort", minor, own, stolen, def)
	}
	tos := cap.stop()
	if got, ok := tos[c.ip("acme/a")]; !ok || got[0] != 46<<2 || got[1] != 0 {
		t.Errorf("acme/a's encapsulated packets: outer, inner TOS %v (seen: %v); want %d and 0", got, ok, 46<<2)
	}
	if got, ok := tos[c.ip("acme/l")]; !ok || got[0] != 0 {
		t.Errorf("acme/l's encapsulated packets: outer, inner TOS %v (seen: %v); want 0", got, ok)
	}
}

// capture reads the VXLAN packets leaving a device and records, by inner
// source address, the outer and inner TOS bytes last seen.
type capture struct {
	fd   int
	mu   sync.Mutex
	tos  map[netip.Addr][2]byte
	done chan struct{}
}

func startCapture(t *testing.T, ns, dev string) *capture {
	t.Helper()
	c := &capture{tos: map[netip.Addr][2]byte{}, done: make(chan struct{})}
	err := netnsfile.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		// Only ETH_P_ALL sockets see what a device sends.
		proto := uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8 // htons
		if c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(proto)); err != nil {
			return err
		}
		return unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", dev, err)
	}
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	go func() {
		defer close(c.done)
		b := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(c.fd, b, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			// outer IPv4 (20) + UDP (8) + VXLAN (8) + Ethernet (14) + inner IPv4
			if n < 20+8+8+14+20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_UDP || binary.BigEndian.Uint16(b[22:]) != ebpf.VXLANPort {
				continue
			}
			in := b[50:]
			src := netip.AddrFrom4([4]byte(in[12:16]))
			c.mu.Lock()
			c.tos[src] = [2]byte{b[1], in[1]}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *capture) stop() map[netip.Addr][2]byte {
	select {
	case <-c.done:
	default:
		unix.Close(c.fd)
		<-c.done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tos
}

// TestQoSUplinkNotOurs: an uplink whose root qdisc is someone else's
// cannot carry minimums: the endpoints under QoS say so in their status
// (their caps and marking hold), the others report nothing, and forwarding
// goes on.
func TestQoSUplinkNotOurs(t *testing.T) {
	c := qosDC(t)
	h := handleIn(t, c.net.Host(0).Path)
	l, err := h.LinkByName(c.net.Host(0).UnderlayDev)
	if err != nil {
		t.Fatal(err)
	}
	tbf := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0x1234, 0), Parent: netlink.HANDLE_ROOT},
		Rate: 1e9, Limit: 1 << 20, Buffer: 1 << 16}
	if err := h.QdiscAdd(tbf); err != nil {
		t.Fatal(err)
	}
	c.capacity[0] = 1000 * mbit
	for i := range c.eps[0] {
		if c.eps[0][i].ID == "acme/a" {
			c.eps[0][i].QoS = &datapath.QoS{MinRateBps: 100 * mbit}
		}
	}
	err = c.drivers[0].Set(c.ctx, c.desired(0))
	if err == nil || !strings.Contains(err.Error(), "not ours") {
		t.Fatalf("Set = %v; want the uplink's foreign qdisc reported", err)
	}
	if st, _ := c.drivers[0].Status("acme/a"); st.QoSErr == "" || st.PolicyErr != "" {
		t.Errorf("Status(acme/a) = %+v; want a QoS error", st)
	}
	if st, _ := c.drivers[0].Status("acme/l"); st.QoSErr != "" {
		t.Errorf("Status(acme/l) = %+v; want no error (no QoS)", st)
	}
	c.mustReach(t, "acme/a", "10.0.2.11")
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) == 0 || qs[0].Attrs().Handle != netlink.MakeHandle(0x1234, 0) {
		t.Errorf("uplink qdiscs %+v; want the foreign one left alone", qs)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if err := h.QdiscDel(tbf); err != nil {
		t.Fatal(err)
	}
	if err := c.drivers[0].Set(ctx, c.desired(0)); err != nil {
		t.Fatalf("Set once the uplink is free: %v", err)
	}
	if st, _ := c.drivers[0].Status("acme/a"); st.QoSErr != "" {
		t.Errorf("Status(acme/a) = %+v after the fix", st)
	}
}
