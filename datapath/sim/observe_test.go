package sim_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/observe/capture"
)

// simDC is two simulated hosts on one sim.Underlay, each with acme's VPC
// (VNI 100) and zeta's (VNI 200) on the same addresses: a1 and a2 on h1,
// b1 and b2 on h2. acme/b1 admits UDP to 5353 and ICMP only. h1 has
// learned where the b1s are, not b2.
type simDC struct {
	ctx    context.Context
	d      [2]*sim.Driver
	ul     [2]netip.Addr
	mu     sync.Mutex
	misses []datapath.Miss
	hops   []hostHop
}

type hostHop struct {
	host int
	datapath.TraceHop
}

func newSimDC(t *testing.T) *simDC {
	t.Helper()
	var u sim.Underlay
	return newSimDCOn(t, [2]*sim.Underlay{&u, &u})
}

// newSimDCOn is a simDC whose hosts are on the underlays us (one, or one
// each, as the hosts of two processes).
func newSimDCOn(t *testing.T, us [2]*sim.Underlay) *simDC {
	t.Helper()
	c := &simDC{ctx: t.Context(), ul: [2]netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12")}}
	subnets := []datapath.Subnet{{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")}, {Name: "b", CIDR: netip.MustParsePrefix("10.0.2.0/24")}}
	vpcs := []datapath.VPC{{Tenant: "acme", Name: "main", VNI: 100, Subnets: subnets}, {Tenant: "zeta", Name: "main", VNI: 200, Subnets: subnets}}
	ep := func(id, subnet, ip string, identity uint32) datapath.Endpoint {
		vni := uint32(100)
		if strings.HasPrefix(id, "zeta/") {
			vni = 200
		}
		a := netip.MustParseAddr(ip).As4()
		return datapath.Endpoint{ID: id, VNI: vni, Subnet: subnet, IP: netip.AddrFrom4(a), Identity: identity,
			MAC: net.HardwareAddr{0x02, byte(vni / 100), a[0], a[1], a[2], a[3]}}
	}
	b1 := ep("acme/b1", "b", "10.0.2.10", 12)
	b1.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{Name: "acme/b1-dns ingress[0]", AllPeers: true,
		Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: 5353, Last: 5353}, {Protocol: datapath.ProtoICMP, ICMPType: -1, ICMPCode: -1}}}}}
	eps := [2][]datapath.Endpoint{
		{ep("acme/a1", "a", "10.0.1.10", 11), ep("acme/a2", "a", "10.0.1.11", 11), ep("zeta/a1", "a", "10.0.1.10", 21)},
		{b1, ep("acme/b2", "b", "10.0.2.20", 13), ep("zeta/b1", "b", "10.0.2.10", 22)},
	}
	for i := range c.d {
		c.d[i] = sim.New(sim.Config{Underlay: us[i], OnMiss: func(m datapath.Miss) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.misses = append(c.misses, m)
		}})
		t.Cleanup(func() { c.d[i].Close() })
		host := datapath.HostConfig{Name: "h" + strconv.Itoa(i+1), UnderlayIP: c.ul[i], UnderlayDev: "eth0", MTU: 1500}
		if err := c.d[i].Set(c.ctx, &datapath.Desired{Host: host, VPCs: vpcs, Endpoints: eps[i]}); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range eps[1] {
		if e.ID != "acme/b2" {
			if err := c.d[0].Learn(c.ctx, []datapath.Remote{{VNI: e.VNI, IP: e.IP, MAC: e.MAC, HostUnderlay: c.ul[1], Identity: e.Identity, Epoch: 1}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, e := range eps[0] {
		if err := c.d[1].Learn(c.ctx, []datapath.Remote{{VNI: e.VNI, IP: e.IP, MAC: e.MAC, HostUnderlay: c.ul[0], Identity: e.Identity, Epoch: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range c.d {
		// Asked for now: what a driver sees before anyone asks is dropped.
		hops := d.TraceHops()
		d.Captured()
		go func() { // ends when the driver closes the channel
			for h := range hops {
				c.mu.Lock()
				c.hops = append(c.hops, hostHop{i, h})
				c.mu.Unlock()
			}
		}()
	}
	return c
}

var rank = map[string]int{"source-veth": 1, "vpc-router": 2, "policy": 3, "route": 4, "encap": 5, "underlay": 6,
	"decap": 7, "remote-policy": 8, "deliver": 9, "drop": 10}

// trace arms a trace on the hosts of its ends, then fires it, and returns
// its hops in path order ("h1:route") once they make a path as long as
// want with a last hop.
func (c *simDC) trace(t *testing.T, tr datapath.Trace, srcHost, dstHost int, want int, after func()) ([]string, []hostHop) {
	t.Helper()
	for _, fire := range []bool{false, true} {
		for h, d := range c.d {
			x := tr
			x.Fire = fire
			if h != srcHost {
				x.Source = ""
			}
			if h != dstHost {
				x.Dest = ""
			}
			if x.Source == "" && x.Dest == "" {
				continue
			}
			if err := d.Observe(c.ctx, []datapath.Trace{x}, nil); err != nil {
				t.Fatalf("Observe on h%d: %v", h+1, err)
			}
		}
	}
	if after != nil {
		after()
	}
	var got []hostHop
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		got = got[:0]
		final := false
		for _, h := range c.hops {
			if h.Trace == tr.ID {
				got = append(got, h)
				final = final || h.Final
			}
		}
		c.mu.Unlock()
		if final && len(got) >= want || time.Now().After(deadline) {
			break
		}
	}
	slices.SortStableFunc(got, func(a, b hostHop) int {
		return cmp.Or(cmp.Compare(a.Packet, b.Packet), cmp.Compare(rank[a.Point], rank[b.Point]), cmp.Compare(a.host, b.host))
	})
	var points []string
	for _, h := range got {
		points = append(points, "h"+strconv.Itoa(h.host+1)+":"+h.Point)
		t.Logf("h%d %-13s %-9s %s rule=%q reason=%s attrs=%v", h.host+1, h.Point, h.Verdict, h.Detail, h.Rule, h.Reason, h.Attrs)
	}
	return points, got
}

// TestTrace traces probes through two simulated hosts: the same host,
// across hosts (the remote policy's rule named), the other tenant on the
// same addresses, a drop by the remote policy, a drop for a location
// nobody knows (after the miss asked for it), no route, and a location
// learned while the probe waited. No probe is delivered to an endpoint.
func TestTrace(t *testing.T) {
	c := newSimDC(t)
	ip := netip.MustParseAddr
	path := func(s string) []string { return strings.Fields(s) }
	cross := path("h1:source-veth h1:vpc-router h1:policy h1:route h1:encap h1:underlay h2:underlay h2:decap h2:remote-policy h2:deliver")
	tests := []struct {
		name             string
		tr               datapath.Trace
		srcHost, dstHost int
		after            func()
		want             []string
		check            func(t *testing.T, last hostHop, hs []hostHop)
	}{
		{name: "same host", tr: datapath.Trace{ID: "acme/same", Token: 101, VNI: 100, Proto: datapath.ProtoICMP, Src: ip("10.0.1.10"), Dst: ip("10.0.1.11"), Source: "acme/a1", Dest: "acme/a2"},
			want: path("h1:source-veth h1:vpc-router h1:policy h1:route h1:remote-policy h1:deliver")},
		{name: "cross host", tr: datapath.Trace{ID: "acme/cross", Token: 102, VNI: 100, Proto: datapath.ProtoUDP, SPort: 50000, DPort: 5353, Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "acme/a1", Dest: "acme/b1", SourceIdentity: 11},
			dstHost: 1, want: cross,
			check: func(t *testing.T, _ hostHop, hs []hostHop) {
				for _, h := range hs {
					if h.Point == "encap" && (h.Attrs["vni"] != "100" || h.Attrs["outerDst"] != "192.0.2.12" || h.Attrs["outerSrc"] != "192.0.2.11") {
						t.Errorf("encap hop %+v", h)
					}
					if h.Point == "remote-policy" && h.Rule != "acme/b1-dns ingress[0]" {
						t.Errorf("remote policy names rule %q", h.Rule)
					}
				}
			}},
		{name: "overlapping tenant", tr: datapath.Trace{ID: "zeta/cross", Token: 103, VNI: 200, Proto: datapath.ProtoUDP, SPort: 50001, DPort: 5353, Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "zeta/a1", Dest: "zeta/b1", SourceIdentity: 21},
			dstHost: 1, want: cross,
			check: func(t *testing.T, _ hostHop, hs []hostHop) {
				for _, h := range hs {
					if v := h.Attrs["vni"]; v != "" && v != "200" || h.Endpoint != "" && !strings.HasPrefix(h.Endpoint, "zeta/") {
						t.Errorf("zeta's trace left its tenant: %+v", h)
					}
				}
			}},
		{name: "denied by the remote policy", tr: datapath.Trace{ID: "acme/denied", Token: 104, VNI: 100, Proto: datapath.ProtoUDP, SPort: 50002, DPort: 9999, Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "acme/a1", Dest: "acme/b1", SourceIdentity: 11},
			dstHost: 1, want: path("h1:source-veth h1:vpc-router h1:policy h1:route h1:encap h1:underlay h2:underlay h2:decap h2:drop"),
			check: func(t *testing.T, last hostHop, _ []hostHop) {
				if last.Reason != datapath.DropPolicy || last.Endpoint != "acme/b1" {
					t.Errorf("drop %+v, want policy at acme/b1", last)
				}
			}},
		{name: "unknown location", tr: datapath.Trace{ID: "acme/nowhere", Token: 105, VNI: 100, Proto: datapath.ProtoICMP, Src: ip("10.0.1.10"), Dst: ip("10.0.2.99"), Source: "acme/a1"},
			dstHost: -1, want: path("h1:source-veth h1:vpc-router h1:policy h1:route h1:drop"),
			check: func(t *testing.T, last hostHop, _ []hostHop) {
				if last.Reason != datapath.DropNoLocation {
					t.Errorf("drop reason %s, want unknown location", last.Reason)
				}
				c.mu.Lock()
				defer c.mu.Unlock()
				if !slices.Contains(c.misses, datapath.Miss{VNI: 100, IP: ip("10.0.2.99")}) {
					t.Errorf("the probe asked for no location: misses %v", c.misses)
				}
			}},
		{name: "no route", tr: datapath.Trace{ID: "acme/noroute", Token: 106, VNI: 100, Proto: datapath.ProtoICMP, Src: ip("10.0.1.10"), Dst: ip("10.9.0.1"), Source: "acme/a1"},
			dstHost: -1, want: path("h1:source-veth h1:vpc-router h1:policy h1:drop"),
			check: func(t *testing.T, last hostHop, _ []hostHop) {
				if last.Reason != datapath.DropNoRoute {
					t.Errorf("drop reason %s, want no route", last.Reason)
				}
			}},
		{name: "location learned while held", tr: datapath.Trace{ID: "acme/learned", Token: 107, VNI: 100, Proto: datapath.ProtoTCP, SPort: 50003, DPort: 80, Src: ip("10.0.1.10"), Dst: ip("10.0.2.20"), Source: "acme/a1", Dest: "acme/b2", SourceIdentity: 11},
			dstHost: 1, want: cross,
			after: func() {
				if err := c.d[0].Learn(c.ctx, []datapath.Remote{{VNI: 100, IP: ip("10.0.2.20"), HostUnderlay: c.ul[1], Identity: 13, Epoch: 1}}); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			points, hs := c.trace(t, tt.tr, 0, tt.dstHost, len(tt.want), tt.after)
			if !slices.Equal(points, tt.want) {
				t.Fatalf("path %v, want %v", points, tt.want)
			}
			if tt.check != nil {
				tt.check(t, hs[len(hs)-1], hs)
			}
		})
	}
	// No probe reached an endpoint; a real packet does (the counter works).
	received := func() map[string]uint64 {
		tr, err := c.d[1].Traffic(c.ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]uint64{}
		for _, e := range tr.Endpoints {
			out[e.ID] = e.ReceivedPackets
		}
		return out
	}
	if got := received(); got["acme/b1"]+got["acme/b2"]+got["zeta/b1"] != 0 {
		t.Errorf("probes were delivered: %v", got)
	}
	if _, err := c.d[1].Deliver(100, ip("10.0.1.10"), 11, sim.Packet{Dst: ip("10.0.2.10"), Proto: datapath.ProtoUDP, SrcPort: 1, DstPort: 5353}); err != nil {
		t.Fatal(err)
	}
	if got := received(); got["acme/b1"] != 1 {
		t.Errorf("a real datagram was not counted: %v", got)
	}
}

// TestTraceElsewhere traces a probe between hosts on two underlays, as
// a simulator's hosts in two processes: the probe leaves through the
// first's Elsewhere, travels as JSON and arrives through the second's
// Arrive, and the path is the one a shared underlay gives.
func TestTraceElsewhere(t *testing.T) {
	us := [2]*sim.Underlay{{}, {}}
	var lost []sim.Crossing
	for i, u := range us {
		u.Elsewhere = func(c sim.Crossing) {
			b, err := json.Marshal(c)
			if err != nil {
				t.Errorf("encode %+v: %v", c, err)
				return
			}
			var back sim.Crossing
			if err := json.Unmarshal(b, &back); err != nil {
				t.Errorf("decode %s: %v", b, err)
				return
			}
			if !us[1-i].Arrive(back) {
				lost = append(lost, back)
			}
		}
	}
	c := newSimDCOn(t, us)
	ip := netip.MustParseAddr
	want := strings.Fields("h1:source-veth h1:vpc-router h1:policy h1:route h1:encap h1:underlay h2:underlay h2:decap h2:remote-policy h2:deliver")
	tr := datapath.Trace{ID: "acme/cross", Token: 102, VNI: 100, Proto: datapath.ProtoUDP, SPort: 50000, DPort: 5353,
		Src: ip("10.0.1.10"), Dst: ip("10.0.2.10"), Source: "acme/a1", Dest: "acme/b1", SourceIdentity: 11}
	if points, _ := c.trace(t, tr, 0, 1, len(want), nil); !slices.Equal(points, want) {
		t.Errorf("path %v, want %v", points, want)
	}
	if len(lost) > 0 {
		t.Errorf("probes with no host: %+v", lost)
	}
	if us[0].Arrive(sim.Crossing{To: ip("192.0.2.99")}) {
		t.Error("Arrive at an address no driver is attached at reported true")
	}
}

// TestLiveTrace follows the next 2 packets of a 5-tuple across the hosts
// (Send on one, Deliver on the other), not the third.
func TestLiveTrace(t *testing.T) {
	c := newSimDC(t)
	src, dst := netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.2.10")
	tr := datapath.Trace{ID: "acme/live", Mode: datapath.TraceLive, Token: 7, VNI: 100, Proto: datapath.ProtoUDP, DPort: 5353,
		Src: src, Dst: dst, Source: "acme/a1", Dest: "acme/b1", Count: 2, Until: time.Now().Add(time.Hour)}
	// 2 packets of 10 hops: 6 on h1 (to the underlay), 4 on h2.
	_, hs := c.trace(t, tr, 0, 1, 20, func() {
		for i := range 3 {
			p := sim.Packet{Dst: dst, Proto: datapath.ProtoUDP, SrcPort: uint16(40000 + i), DstPort: 5353, Bytes: 100}
			dec, err := c.d[0].Send("acme/a1", p)
			if err != nil || dec.Verdict != sim.VerdictRemote {
				t.Fatalf("Send: %+v, %v", dec, err)
			}
			if _, err := c.d[1].Deliver(100, src, 11, p); err != nil {
				t.Fatal(err)
			}
		}
	})
	delivered := map[int]bool{}
	for _, h := range hs {
		if h.Point == "deliver" && h.host == 1 {
			delivered[h.Packet] = true
		}
		if h.Packet > 1 {
			t.Errorf("a third packet was traced: %+v", h)
		}
	}
	if !maps.Equal(delivered, map[int]bool{0: true, 1: true}) || len(hs) != 20 {
		t.Errorf("delivered packets %v in %d hops, want 0 and 1 in 20", delivered, len(hs))
	}
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

type hostPacket struct {
	host int
	datapath.CapturedPacket
}

// drain reads the packets the drivers captured until none comes for a
// while after at least n.
func (c *simDC) drain(t *testing.T, n int) []hostPacket {
	t.Helper()
	var out []hostPacket
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		for i, d := range c.d {
			select {
			case p := <-d.Captured():
				out = append(out, hostPacket{i, p})
			case <-time.After(time.Millisecond):
			}
		}
	}
	for i, d := range c.d { // what else came
		for more := true; more; {
			select {
			case p := <-d.Captured():
				out = append(out, hostPacket{i, p})
			default:
				more = false
			}
		}
	}
	return out
}

// TestCapture captures acme's a1 (with its VNI on the underlay) and b1,
// with a UDP filter, and b1's drops, while zeta sends between the same
// addresses: the frames are acme's only, well formed (gopacket decodes
// every layer; the underlay's carry VNI 100 and a1's identity), and the
// merged pcapng reads in tshark.
func TestCapture(t *testing.T) {
	c := newSimDC(t)
	caps := [2][]datapath.Capture{
		{{ID: "acme/cap", Endpoints: []string{"acme/a1"}, Program: udpProgram(t), Underlay: map[uint32][]bpf.RawInstruction{100: capture.UnderlayProgram(100)},
			Snaplen: 256, Rate: 1000}},
		{{ID: "acme/cap", Endpoints: []string{"acme/b1"}, Program: udpProgram(t), Snaplen: 256, Rate: 1000},
			{ID: "acme/drops", Endpoints: []string{"acme/b1"}, DroppedOnly: true, Snaplen: 256, Rate: 1000}},
	}
	for i, d := range c.d {
		if err := d.Observe(c.ctx, nil, caps[i]); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.2.10")
	send := func(from string, identity uint32, p sim.Packet, n int) {
		t.Helper()
		vni := uint32(100)
		if strings.HasPrefix(from, "zeta/") {
			vni = 200
		}
		for range n {
			if _, err := c.d[0].Send(from, p); err != nil {
				t.Fatal(err)
			}
			if _, err := c.d[1].Deliver(vni, src, identity, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("acme/a1", 11, sim.Packet{Dst: dst, Proto: datapath.ProtoUDP, SrcPort: 4000, DstPort: 5353, Bytes: 300}, 5)
	send("zeta/a1", 21, sim.Packet{Dst: dst, Proto: datapath.ProtoUDP, SrcPort: 4000, DstPort: 5353, Bytes: 300}, 5)
	send("acme/a1", 11, sim.Packet{Dst: dst, Proto: datapath.ProtoUDP, SrcPort: 4001, DstPort: 7001, Bytes: 80}, 2) // b1's policy drops them
	send("acme/a1", 11, sim.Packet{Dst: dst, Proto: datapath.ProtoICMP, ICMPType: 8, Bytes: 84}, 1)                 // not UDP
	want := map[string]int{
		"h1 acme/cap acme/a1 out":                 7,
		"h1 acme/cap  out":                        8, // the underlay program takes VNI 100's ICMP too
		"h2 acme/cap acme/b1 in":                  5,
		"h2 acme/drops acme/b1 in dropped:policy": 2,
	}
	pkts := c.drain(t, 22)
	got := map[string]int{}
	for _, p := range pkts {
		k := "h" + strconv.Itoa(p.host+1) + " " + p.Capture + " " + p.Endpoint + " " + map[bool]string{true: "out", false: "in"}[p.Out]
		if p.Drop != datapath.DropNone {
			k += " dropped:" + p.Drop.String()
		}
		got[k]++
		pk := gopacket.NewPacket(p.Data, layers.LayerTypeEthernet, gopacket.Default)
		if el := pk.ErrorLayer(); el != nil && len(p.Data) == p.Length {
			t.Errorf("%s: a frame that does not decode: %v", k, el.Error())
		}
		if p.Length < len(p.Data) || len(p.Data) > 256 {
			t.Errorf("%s: %d bytes of a %d-byte packet", k, len(p.Data), p.Length)
		}
		if p.Endpoint == "" {
			vx, _ := pk.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if vx == nil || vx.VNI != 100 || vx.GBPGroupPolicyID != 11 || p.Interface != "eth0" {
				t.Errorf("%s: underlay frame %v", k, pk)
			}
		}
		if ip4, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ip4 == nil {
			t.Errorf("%s: no IPv4 header: %v", k, pk)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("captured %v, want %v", got, want)
	}

	// The hosts' packets merged into one pcapng, as the collector does.
	// They are added host by host after the capture, so no time is given:
	// with the wall clock a packet older than the merger's Hold would be
	// written at once and another host's earlier packets then dropped as
	// late (a loaded run's capture spans more than Hold).
	var buf bytes.Buffer
	m := capture.NewMerger(&buf)
	ifaces := map[string]uint16{}
	for _, p := range pkts {
		host := "h" + strconv.Itoa(p.host+1)
		id, ok := ifaces[host+p.Interface]
		if !ok {
			id = uint16(len(ifaces) + 1)
			ifaces[host+p.Interface] = id
			if err := m.Add(host, &capture.Record{Type: capture.RecInterface, Iface: id, Name: p.Interface, Endpoint: p.Endpoint, Underlay: p.Endpoint == ""}, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Add(host, &capture.Record{Type: capture.RecPacket, Iface: id, Out: p.Out, Drop: uint8(p.Drop), Time: p.Time, Length: uint32(p.Length), Data: p.Data}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("tshark"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tshark is not installed (.ci/run installs it)")
		}
		t.Skip("tshark is not installed: the pcapng is not read back")
	}
	file := filepath.Join(t.TempDir(), "sim.pcapng")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("tshark", "-r", file, "-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "ip.dst", "-e", "vxlan.vni", "-e", "udp.dstport")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v: %s", err, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(pkts) {
		t.Errorf("tshark read %d packets, want %d:\n%s", len(lines), len(pkts), out)
	}
	for _, l := range lines {
		f := strings.Split(l, "|")
		if len(f) != 4 || !strings.HasSuffix(f[1], "10.0.2.10") || f[2] != "" && f[2] != "100" {
			t.Errorf("tshark line %q", l)
		}
	}
}

// TestCaptureBudget floods a capture with more than its rate budget: it
// records no more than the budget allows (its burst and its rate over the
// flood's time) and reports the rest lost.
func TestCaptureBudget(t *testing.T) {
	c := newSimDC(t)
	const rate = 20 // burst: rate/10
	start := time.Now()
	if err := c.d[0].Observe(c.ctx, nil, []datapath.Capture{{ID: "acme/cap", Endpoints: []string{"acme/a1"}, Snaplen: 128, Rate: rate}}); err != nil {
		t.Fatal(err)
	}
	packets := c.d[0].Captured()
	p := sim.Packet{Dst: netip.MustParseAddr("10.0.1.11"), Proto: datapath.ProtoUDP, SrcPort: 1, DstPort: 2, Bytes: 64}
	sent := 0
	for range 2000 {
		if _, err := c.d[0].Send("acme/a1", p); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	flood := time.Since(start)
	var got []datapath.CapturedPacket
	for more := true; more; {
		select {
		case x := <-packets:
			got = append(got, x)
		default:
			more = false
		}
	}
	if limit := rate/10 + int(float64(rate)*flood.Seconds()) + 1; len(got) > limit || len(got) == 0 {
		t.Errorf("captured %d of %d packets sent in %v, want 1..%d", len(got), sent, flood, limit)
	}
	// The next packet the budget lets through reports the others lost.
	var last datapath.CapturedPacket
	for deadline := time.Now().Add(10 * time.Second); last.Capture == ""; {
		if time.Now().After(deadline) {
			t.Fatal("no packet captured after the flood")
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := c.d[0].Send("acme/a1", p); err != nil {
			t.Fatal(err)
		}
		sent++
		select {
		case last = <-packets:
		default:
		}
	}
	if want := uint64(sent - len(got) - 1); last.Lost != want {
		t.Errorf("the packet after the flood reports %d lost, want %d", last.Lost, want)
	}
}
