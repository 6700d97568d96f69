package linux_test

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet/nettest"
	observecapture "github.com/weftnet/weft/observe/capture"
)

// hops collects what the drivers of a dc observe.
type hops struct {
	mu   sync.Mutex
	by   map[string][]datapath.TraceHop // by trace
	pkts []datapath.CapturedPacket
}

func watch(t *testing.T, c *dc) *hops {
	h := &hops{by: map[string][]datapath.TraceHop{}}
	for i, d := range c.drivers {
		// Both end when the driver closes its channels.
		go func() {
			for hop := range d.TraceHops() {
				hop.Detail = c.net.Host(i).Name + ": " + hop.Detail
				h.mu.Lock()
				h.by[hop.Trace] = append(h.by[hop.Trace], hop)
				h.mu.Unlock()
			}
		}()
		go func() {
			for p := range d.Captured() {
				h.mu.Lock()
				h.pkts = append(h.pkts, p)
				h.mu.Unlock()
			}
		}()
	}
	return h
}

var rank = map[string]int{"source-veth": 1, "vpc-router": 2, "policy": 3, "route": 4, "encap": 5, "underlay": 6,
	"decap": 7, "remote-policy": 8, "deliver": 9, "drop": 10}

// path waits for a trace's final hop and returns its points.
func (h *hops) path(t *testing.T, id string) ([]string, []datapath.TraceHop) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		got := append([]datapath.TraceHop(nil), h.by[id]...)
		h.mu.Unlock()
		final := false
		for _, x := range got {
			final = final || x.Final
		}
		if final || time.Now().After(deadline) {
			time.Sleep(100 * time.Millisecond) // the other host's last hops
			h.mu.Lock()
			got = append([]datapath.TraceHop(nil), h.by[id]...)
			h.mu.Unlock()
			// In path order, as the controller merges them.
			slices.SortStableFunc(got, func(a, b datapath.TraceHop) int {
				return cmp.Or(cmp.Compare(rank[a.Point], rank[b.Point]), cmp.Compare(a.Detail[:2], b.Detail[:2]))
			})
			var points []string
			for _, x := range got {
				points = append(points, x.Point)
			}
			if !final {
				t.Errorf("trace %s has no last hop after 10s: %v", id, points)
			}
			return points, got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *hops) dump(got []datapath.TraceHop) string {
	var b strings.Builder
	for _, x := range got {
		fmt.Fprintf(&b, "\n  %-13s %-9s %s rule=%q reason=%s attrs=%v", x.Point, x.Verdict, x.Detail, x.Rule, x.Reason, x.Attrs)
	}
	return b.String()
}

// trace arms a trace on the hosts of its ends, then fires it.
func (c *dc) trace(t *testing.T, tr datapath.Trace, active map[int][]datapath.Trace) {
	t.Helper()
	src, dst := c.hostOf[tr.Source], -1
	if tr.Dest != "" {
		dst = c.hostOf[tr.Dest]
	}
	for _, fire := range []bool{false, true} {
		for h := range c.drivers {
			x := tr
			x.Fire = fire
			if h != src {
				x.Source = ""
			}
			if h != dst {
				x.Dest = ""
			}
			if x.Source == "" && x.Dest == "" {
				continue
			}
			if err := c.drivers[h].Observe(c.ctx, append(active[h], x), nil); err != nil {
				t.Fatalf("Observe on host %d: %v", h, err)
			}
		}
	}
}

func TestTrace(t *testing.T) {
	nettest.RequireRoot(t)
	c := newDC(t, 2, twoTenants())
	for _, tn := range []string{"acme", "zeta"} {
		vni := uint32(100)
		if tn == "zeta" {
			vni = 200
		}
		c.add(0, tn+"/a1", vni, "a", "10.0.1.10")
		c.add(0, tn+"/a2", vni, "a", "10.0.1.11")
		c.add(1, tn+"/b1", vni, "b", "10.0.2.10")
	}
	// b1 of acme admits UDP to 5353 only, from anyone.
	for i := range c.eps[1] {
		if c.eps[1][i].ID == "acme/b1" {
			c.eps[1][i].Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{
				{Name: "acme/b1-dns ingress[0]", AllPeers: true, Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: 5353, Last: 5353}, {Protocol: datapath.ProtoICMP, ICMPType: -1, ICMPCode: -1}}},
			}}
		}
	}
	c.setAll()
	h := watch(t, c)
	ip := netip.MustParseAddr
	// A UDP socket on acme/b1's port 5353 counts what reaches it.
	var got sync.Map
	for _, id := range []string{"acme/b1", "zeta/b1"} {
		var conn net.PacketConn
		if err := netnsfile.Do(c.netns(id), func() (err error) {
			conn, err = net.ListenPacket("udp4", "0.0.0.0:5353")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				_, _, err := conn.ReadFrom(buf)
				if err != nil {
					return
				}
				v, _ := got.LoadOrStore(id, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		}()
	}
	tests := []struct {
		name   string
		tr     datapath.Trace
		before func()
		want   []string
		check  func(t *testing.T, hs []datapath.TraceHop)
	}{
		{name: "same host", tr: datapath.Trace{ID: "acme/same", Token: 101, VNI: 100, Proto: datapath.ProtoICMP, Src: ip("10.0.1.10"), Dst: ip("10.0.1.11"), Source: "acme/a1", Dest: "acme/a2"},
			want: []string{"source-veth", "vpc-router", "policy", "route", "remote-policy", "deliver"}},
		{name: "cross host", tr: datapath.Trace{ID: "acme/cross", Token: 102, VNI: 100, Proto: datapath.ProtoUDP, SPort: 50000, DPort: 5353, Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "acme/a1", Dest: "acme/b1", SourceIdentity: 100},
			want: []string{"source-veth", "vpc-router", "policy", "route", "encap", "underlay", "underlay", "decap", "remote-policy", "deliver"},
			check: func(t *testing.T, hs []datapath.TraceHop) {
				for _, x := range hs {
					if x.Point == "encap" && (x.Attrs["vni"] != "100" || x.Attrs["outerDst"] != c.net.Host(1).UnderlayIP.String()) {
						t.Errorf("encap hop %+v", x)
					}
					if x.Point == "remote-policy" && x.Rule != "acme/b1-dns ingress[0]" {
						t.Errorf("remote policy names rule %q", x.Rule)
					}
				}
			}},
		{name: "overlapping tenant", tr: datapath.Trace{ID: "zeta/cross", Token: 103, VNI: 200, Proto: datapath.ProtoUDP, SPort: 50001, DPort: 5353, Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "zeta/a1", Dest: "zeta/b1", SourceIdentity: 200},
			want: []string{"source-veth", "vpc-router", "policy", "route", "encap", "underlay", "underlay", "decap", "remote-policy", "deliver"},
			check: func(t *testing.T, hs []datapath.TraceHop) {
				for _, x := range hs {
					if x.Attrs["vni"] != "" && x.Attrs["vni"] != "200" {
						t.Errorf("zeta's trace saw VNI %s", x.Attrs["vni"])
					}
				}
			}},
		{name: "denied by policy", tr: datapath.Trace{ID: "acme/denied", Token: 104, VNI: 100, Proto: datapath.ProtoUDP, SPort: 50002, DPort: 9999, Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "acme/a1", Dest: "acme/b1", SourceIdentity: 100},
			want: []string{"source-veth", "vpc-router", "policy", "route", "encap", "underlay", "underlay", "decap", "drop"},
			check: func(t *testing.T, hs []datapath.TraceHop) {
				last := hs[len(hs)-1]
				if last.Reason != datapath.DropPolicy || last.Endpoint != "acme/b1" {
					t.Errorf("drop %+v, want policy at acme/b1", last)
				}
			}},
		{name: "unknown location", tr: datapath.Trace{ID: "acme/nowhere", Token: 105, VNI: 100, Proto: datapath.ProtoICMP, Src: ip("10.0.1.10"), Dst: ip("10.0.2.99"), Source: "acme/a1"},
			want: []string{"source-veth", "vpc-router", "policy", "route", "drop"},
			check: func(t *testing.T, hs []datapath.TraceHop) {
				if last := hs[len(hs)-1]; last.Reason != datapath.DropNoLocation {
					t.Errorf("drop reason %s, want unknown location", last.Reason)
				}
			}},
		{name: "route deleted behind the driver's back", tr: datapath.Trace{ID: "acme/noroute", Token: 106, VNI: 100, Proto: datapath.ProtoICMP, Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "acme/a1"},
			before: func() {
				vpcNS := c.net.Dir() + "/" + c.net.Prefix() + "-" + c.net.Host(0).Name + "-v100"
				hd := handleIn(t, vpcNS)
				routes, err := hd.RouteList(nil, netlink.FAMILY_V4)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range routes {
					if r.Dst != nil && r.Dst.String() == "10.0.2.0/24" {
						if err := hd.RouteDel(&r); err != nil {
							t.Fatal(err)
						}
					}
				}
			},
			want: []string{"source-veth", "vpc-router", "policy", "drop"},
			check: func(t *testing.T, hs []datapath.TraceHop) {
				if last := hs[len(hs)-1]; last.Reason != datapath.DropNoRoute {
					t.Errorf("drop reason %s, want no route", last.Reason)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			start := time.Now()
			c.trace(t, tt.tr, nil)
			points, hs := h.path(t, tt.tr.ID)
			t.Logf("%s in %v:%s", tt.tr.ID, time.Since(start).Round(time.Millisecond), h.dump(hs))
			if strings.Join(points, " ") != strings.Join(tt.want, " ") {
				t.Errorf("path %v, want %v", points, tt.want)
			}
			if tt.check != nil && len(hs) > 0 {
				tt.check(t, hs)
			}
		})
	}
	c.setAll() // repairs the route
	time.Sleep(200 * time.Millisecond)
	for _, id := range []string{"acme/b1", "zeta/b1"} {
		if v, ok := got.Load(id); ok {
			t.Errorf("%d probes reached the socket of %s", v.(*atomic.Int64).Load(), id)
		}
	}
	// A real datagram does reach it: the counter works.
	if err := netnsfile.Do(c.netns("acme/a1"), func() error {
		conn, err := net.Dial("udp4", "10.0.2.10:5353")
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("hello"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v, ok := got.Load("acme/b1"); ok && v.(*atomic.Int64).Load() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a real datagram did not reach acme/b1's socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// With no trace left, no trace table is left.
	for i, d := range c.drivers {
		if err := d.Observe(c.ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		if n := traceTables(t, c, i); n != 0 {
			t.Errorf("host %d keeps %d trace tables with no trace", i, n)
		}
	}
}

// traceTables counts the trace tables on a host (its namespace and its
// VPC namespaces).
func traceTables(t *testing.T, c *dc, host int) int {
	n := 0
	paths := []string{c.net.Host(host).Path}
	for _, v := range c.vpcs {
		paths = append(paths, fmt.Sprintf("%s/%s-%s-v%d", c.net.Dir(), c.net.Prefix(), c.net.Host(host).Name, v.VNI))
	}
	for _, p := range paths {
		fd, err := netns.GetFromPath(p)
		if err != nil {
			continue
		}
		nc, err := nftables.New(nftables.WithNetNSFd(int(fd)))
		if err == nil {
			tables, _ := nc.ListTables() // family ip (captures) and netdev (traces)
			for _, tb := range tables {
				if tb.Name == linux.TraceTable {
					n++
				}
			}
		}
		fd.Close()
	}
	return n
}

// udpProgram takes IPv4 UDP frames.
func udpProgram(t testing.TB) []bpf.RawInstruction {
	p, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0800, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 23, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 17, SkipTrue: 1},
		bpf.RetConstant{Val: 65535},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCapture: captures of one tenant's endpoint (its veth's router side)
// and of the peer's, both directions, with a filter, a count, and the
// other tenant sending between the same addresses at the same time; and
// a dropped-only capture that records a policy's drop with its reason.
func TestCapture(t *testing.T) {
	nettest.RequireRoot(t)
	c := newDC(t, 2, twoTenants())
	for _, tn := range []string{"acme", "zeta"} {
		vni := uint32(100)
		if tn == "zeta" {
			vni = 200
		}
		c.add(0, tn+"/a1", vni, "a", "10.0.1.10")
		c.add(1, tn+"/b1", vni, "b", "10.0.2.10")
	}
	for i := range c.eps[1] {
		if c.eps[1][i].ID == "acme/b1" {
			c.eps[1][i].Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{
				{Name: "acme/b1 ingress[0]", AllPeers: true, Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: 7000, Last: 7000}}},
			}}
		}
	}
	c.setAll()
	h := watch(t, c)
	send := func(from string, port, n int) {
		t.Helper()
		c.sendUDP(t, from, netip.AddrPortFrom(netip.MustParseAddr("10.0.2.10"), uint16(port)), n, 2*time.Millisecond)
	}
	send("acme/a1", 7000, 1) // learn the location first
	send("zeta/a1", 7000, 1)
	time.Sleep(100 * time.Millisecond)
	caps := map[int][]datapath.Capture{
		0: {{ID: "acme/cap", Endpoints: []string{"acme/a1"}, Program: udpProgram(t), Snaplen: 128, Rate: 1000, Count: 20}},
		1: {{ID: "acme/cap", Endpoints: []string{"acme/b1"}, Program: udpProgram(t), Snaplen: 128, Rate: 1000, Count: 20},
			{ID: "acme/drops", Endpoints: []string{"acme/b1"}, DroppedOnly: true, Snaplen: 128, Rate: 1000}},
	}
	for i, d := range c.drivers {
		if err := d.Observe(c.ctx, nil, caps[i]); err != nil {
			t.Fatal(err)
		}
	}
	send("acme/a1", 7000, 10)
	send("zeta/a1", 7000, 10)
	send("acme/a1", 7001, 3) // denied by acme/b1's policy
	// ICMP: not taken by the UDP filter, denied by b1's policy (recorded
	// by the dropped-only capture): no reply.
	if err := testnetPing(c, "acme/a1"); err == nil {
		t.Error("a ping crossed acme/b1's policy")
	}
	send("acme/a1", 7000, 30) // beyond the count
	want := map[string]int{
		"acme/cap acme/a1 out":                 20, // 10 + 3 + 7 of the last 30: the count stops it
		"acme/cap acme/b1 in":                  20, // the 3 denied do not reach b1's veth: 10 + 10 of the 30
		"acme/drops acme/b1 in dropped:policy": 4,  // the 3 to port 7001 and the ping
	}
	var count map[string]int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h.mu.Lock()
		pkts := append([]datapath.CapturedPacket(nil), h.pkts...)
		h.mu.Unlock()
		count = map[string]int{}
		for _, p := range pkts {
			key := p.Capture + " " + p.Endpoint + " " + map[bool]string{true: "out", false: "in"}[p.Out]
			if p.Drop != datapath.DropNone {
				key += " dropped:" + p.Drop.String()
			}
			count[key]++
			if p.Endpoint != "acme/a1" && p.Endpoint != "acme/b1" {
				t.Fatalf("captured a packet of %q", p.Endpoint)
			}
			if p.Capture == "acme/cap" && (len(p.Data) > 128 || len(p.Data) < 42 || p.Data[23] != 17) {
				t.Fatalf("the UDP capture took %d bytes, protocol %d", len(p.Data), p.Data[23])
			}
		}
		if maps.Equal(count, want) || time.Now().After(deadline) {
			break
		}
	}
	if !maps.Equal(count, want) {
		t.Errorf("captured %v, want %v", count, want)
	}
	for i, d := range c.drivers {
		if err := d.Observe(c.ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		if n := traceTables(t, c, i); n != 0 {
			t.Errorf("host %d keeps %d trace tables after the captures", i, n)
		}
	}
}

// sendUDP sends n datagrams from an endpoint to an address, gap apart.
func (c *dc) sendUDP(t *testing.T, from string, to netip.AddrPort, n int, gap time.Duration) {
	t.Helper()
	if err := netnsfile.Do(c.netns(from), func() error {
		conn, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		defer conn.Close()
		for range n {
			if _, err := conn.WriteTo([]byte("datagram"), net.UDPAddrFromAddrPort(to)); err != nil {
				return err
			}
			if gap > 0 {
				time.Sleep(gap)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCaptureUnderlay captures acme's VNI on both hosts' underlay while
// acme and zeta send between the same addresses at the same time: every
// packet recorded carries the VXLAN outer headers (IPv4 between the hosts'
// underlay addresses, UDP to 4789) with acme's VNI, both hosts record
// acme's datagrams (one sending, the other receiving), and none of zeta's
// is recorded.
func TestCaptureUnderlay(t *testing.T) {
	nettest.RequireRoot(t)
	c := newDC(t, 2, twoTenants())
	for _, tn := range []string{"acme", "zeta"} {
		vni := uint32(100)
		if tn == "zeta" {
			vni = 200
		}
		c.add(0, tn+"/a1", vni, "a", "10.0.1.10")
		c.add(1, tn+"/b1", vni, "b", "10.0.2.10")
	}
	c.setAll()
	h := watch(t, c)
	to := netip.MustParseAddrPort("10.0.2.10:7000")
	for _, from := range []string{"acme/a1", "zeta/a1"} {
		// The locations are learned before the capture (to another port:
		// this one may be held until then).
		c.sendUDP(t, from, netip.MustParseAddrPort("10.0.2.10:7001"), 1, 0)
	}
	for _, d := range c.drivers {
		if err := d.Observe(c.ctx, nil, []datapath.Capture{{ID: "acme/ul", Snaplen: 256, Rate: 1000,
			Underlay: map[uint32][]bpf.RawInstruction{100: observecapture.UnderlayProgram(100)}}}); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		c.sendUDP(t, "acme/a1", to, 1, 0)
		c.sendUDP(t, "zeta/a1", to, 1, 2*time.Millisecond)
	}
	hosts := [2]netip.Addr{c.net.Host(0).UnderlayIP, c.net.Host(1).UnderlayIP}
	var got map[string]int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h.mu.Lock()
		pkts := append([]datapath.CapturedPacket(nil), h.pkts...)
		h.mu.Unlock()
		got = map[string]int{}
		for _, p := range pkts {
			pk := gopacket.NewPacket(p.Data, layers.LayerTypeEthernet, gopacket.Default)
			outer, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
			vx, _ := pk.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if p.Endpoint != "" || outer == nil || udp == nil || vx == nil || udp.DstPort != 4789 || vx.VNI != 100 ||
				!(outer.SrcIP.Equal(hosts[0].AsSlice()) && outer.DstIP.Equal(hosts[1].AsSlice()) || outer.SrcIP.Equal(hosts[1].AsSlice()) && outer.DstIP.Equal(hosts[0].AsSlice())) {
				t.Fatalf("captured on %s (endpoint %q) a packet that is not acme's VXLAN between the hosts: %v", p.Interface, p.Endpoint, pk)
			}
			// The inner datagram, after the VXLAN header.
			inner := gopacket.NewPacket(vx.LayerPayload(), layers.LayerTypeEthernet, gopacket.Default)
			if in, _ := inner.Layer(layers.LayerTypeUDP).(*layers.UDP); in != nil && in.DstPort == 7000 {
				got[map[bool]string{true: "sent", false: "received"}[p.Out]+" on "+outer.SrcIP.String()+"→"+outer.DstIP.String()]++
			}
		}
		way := hosts[0].String() + "→" + hosts[1].String()
		if got["sent on "+way] >= 10 && got["received on "+way] >= 10 || time.Now().After(deadline) {
			break
		}
	}
	want := map[string]int{
		"sent on " + hosts[0].String() + "→" + hosts[1].String():     10,
		"received on " + hosts[0].String() + "→" + hosts[1].String(): 10,
	}
	if !maps.Equal(got, want) {
		t.Errorf("acme's datagrams on the underlay %v, want %v", got, want)
	}
	for i, d := range c.drivers {
		if err := d.Observe(c.ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		if n := traceTables(t, c, i); n != 0 {
			t.Errorf("host %d keeps %d trace tables after the capture", i, n)
		}
	}
}

// TestCaptureBudget floods a capture with ten times its rate budget: the
// host records no more than the budget allows (its burst, and its rate
// over the time it ran) and reports the packets it did not record as
// lost.
func TestCaptureBudget(t *testing.T) {
	nettest.RequireRoot(t)
	c := newDC(t, 1, twoTenants()[:1])
	c.add(0, "acme/a1", 100, "a", "10.0.1.10")
	c.add(0, "acme/a2", 100, "a", "10.0.1.11")
	c.setAll()
	h := watch(t, c)
	const rate = 50 // a burst of rate/10
	start := time.Now()
	if err := c.drivers[0].Observe(c.ctx, nil, []datapath.Capture{{ID: "acme/flood", Endpoints: []string{"acme/a1"},
		Direction: datapath.DirOut, Program: udpProgram(t), Snaplen: 128, Rate: rate}}); err != nil {
		t.Fatal(err)
	}
	// Fewer than a CPU's backlog (netdev_max_backlog, 1000) holds: the
	// kernel drops none before the capture sees them.
	const flood = 500
	c.sendUDP(t, "acme/a1", netip.MustParseAddrPort("10.0.1.11:9"), flood, 0)
	// Then a datagram to port 10 every 20 ms until one is recorded: the
	// reader has read the flood, and that packet reports what it lost.
	sent := flood
	var last datapath.CapturedPacket
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h.mu.Lock()
		for _, p := range h.pkts {
			if len(p.Data) >= 38 && p.Data[36] == 0 && p.Data[37] == 10 { // the UDP destination port
				last = p
			}
		}
		h.mu.Unlock()
		if last.Capture != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no datagram recorded after the flood")
		}
		c.sendUDP(t, "acme/a1", netip.MustParseAddrPort("10.0.1.11:10"), 1, 0)
		sent++
	}
	elapsed := time.Since(start)
	h.mu.Lock()
	recorded := len(h.pkts)
	h.mu.Unlock()
	limit := rate/10 + int(rate*elapsed.Seconds()) + 1
	t.Logf("%d datagrams in %v: %d recorded (budget %d), %d reported lost", sent, elapsed.Round(time.Millisecond), recorded, limit, last.Lost)
	if recorded > limit {
		t.Errorf("recorded %d packets in %v, the budget allows %d", recorded, elapsed, limit)
	}
	if last.Lost < flood/2 || int(last.Lost)+recorded > sent {
		t.Errorf("%d recorded and %d reported lost of %d sent, want at least %d lost", recorded, last.Lost, sent, flood/2)
	}
}

func testnetPing(c *dc, from string) error {
	_, err := c.ping(from, netip.MustParseAddr("10.0.2.10"), time.Second)
	return err
}
