package linux_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/conformance"
	"github.com/weftnet/weft/datapath/conformance/nsprobe"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
)

// update changes a local endpoint of the data centre's desired state.
func (c *dc) update(id string, fn func(e *datapath.Endpoint)) {
	c.t.Helper()
	for i := range c.eps[c.hostOf[id]] {
		if e := &c.eps[c.hostOf[id]][i]; e.ID == id {
			fn(e)
			return
		}
	}
	c.t.Fatalf("no endpoint %q", id)
}

func (c *dc) endpoint(id string) datapath.Endpoint {
	c.t.Helper()
	for _, e := range c.eps[c.hostOf[id]] {
		if e.ID == id {
			return e
		}
	}
	c.t.Fatalf("no endpoint %q", id)
	return datapath.Endpoint{}
}

// vpcNS is the path of VPC vni's router namespace on host i.
func (c *dc) vpcNS(i int, vni uint32) string {
	return c.net.Dir() + "/" + linux.VPCNetnsName(c.net.Prefix(), c.net.Host(i).Name, vni)
}

// flowCase is a probe and whether it must pass.
type flowCase struct {
	from, to string
	proto    datapath.Protocol
	port     uint16 // or ICMP type
	want     bool
}

func (f flowCase) String() string {
	return conformance.Flow{From: f.from, To: f.to, Proto: f.proto, Port: f.port, ICMPType: uint8(f.port)}.String()
}

func (c *dc) flow(f flowCase) conformance.Flow {
	to := c.endpoint(f.to)
	fl := conformance.Flow{From: f.from, To: f.to, Src: c.endpoint(f.from).IP, Dst: to.IP, Proto: f.proto}
	if f.proto == datapath.ProtoICMP {
		fl.ICMPType = uint8(f.port)
	} else {
		fl.Port = f.port
	}
	return fl
}

// probeAll checks the cases' verdicts with real traffic.
func (c *dc) probeAll(t *testing.T, cases []flowCase) {
	t.Helper()
	cs := make([]conformance.Case, len(cases))
	for i, f := range cases {
		c.netns(f.from) // resolved on this goroutine
		c.netns(f.to)
		cs[i] = conformance.Case{Flow: c.flow(f), Want: f.want}
	}
	for _, w := range conformance.CheckAll(c.ctx, cs, func(ctx context.Context, f conformance.Flow) error {
		return nsprobe.Send(ctx, c.nsPath[f.From], c.nsPath[f.To], f)
	}) {
		t.Error(w)
	}
}

// expected is what the reference semantics say of f in the desired state:
// the sender's egress policy and the receiver's ingress policy, with the
// sender's identity.
func (c *dc) expected(f flowCase) bool {
	from, to := c.endpoint(f.from), c.endpoint(f.to)
	fl := datapath.Flow{Proto: f.proto, Port: f.port}
	if f.proto == datapath.ProtoICMP {
		fl = datapath.Flow{Proto: f.proto, ICMPType: uint8(f.port)}
	}
	eg, in := fl, fl
	eg.Peer = to.IP
	in.Peer, in.PeerIdentity = from.IP, from.Identity
	return from.Policy.AllowsEgress(eg) && to.Policy.AllowsIngress(in)
}

func withNftables(t *testing.T, path string, fn func(c *nftables.Conn)) {
	t.Helper()
	fd, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd)))
	if err != nil {
		t.Fatal(err)
	}
	fn(c)
}

// testChain adds, in the namespace at path, table "test" with a base
// chain on the prerouting hook at prio with one rule, after what setup
// queues (sets the rule uses).
func testChain(t *testing.T, path, name string, prio int32, setup func(c *nftables.Conn, tb *nftables.Table), exprs ...expr.Any) {
	t.Helper()
	tb := &nftables.Table{Name: "test", Family: nftables.TableFamilyIPv4}
	withNftables(t, path, func(c *nftables.Conn) {
		c.AddTable(tb)
		if setup != nil {
			setup(c, tb)
		}
		ch := c.AddChain(&nftables.Chain{Table: tb, Name: name, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio))})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: exprs})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	})
}

// recordMarks makes the router namespace at path record the mark of every
// packet arriving from a VXLAN device, before the driver's chains see it;
// the returned function lists the marks seen.
func recordMarks(t *testing.T, path string) func() []uint32 {
	t.Helper()
	seen := &nftables.Set{Name: "seen", ID: 1, KeyType: nftables.TypeMark, Dynamic: true, Size: 64}
	testChain(t, path, "rec", -300, func(c *nftables.Conn, tb *nftables.Table) {
		seen.Table = tb
		if err := c.AddSet(seen, nil); err != nil {
			t.Fatal(err)
		}
	},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("wftx")},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Dynset{SrcRegKey: 1, SetName: seen.Name, SetID: seen.ID, Operation: unix.NFT_DYNSET_OP_UPDATE},
	)
	return func() []uint32 {
		var out []uint32
		withNftables(t, path, func(c *nftables.Conn) {
			es, err := c.GetSetElements(seen)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				out = append(out, binaryutil.NativeEndian.Uint32(e.Key))
			}
		})
		return out
	}
}

// orMark makes the router namespace at path set bits in the mark of every
// packet from an endpoint after the driver marked it (as a trace would).
func orMark(t *testing.T, path string, bits uint32) {
	t.Helper()
	testChain(t, path, "or", -140, nil,
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("wfte")},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bits), Xor: binaryutil.NativeEndian.PutUint32(bits)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	)
}

// TestPolicyIdentityOverGBP: the sending router marks an endpoint's
// packets with its identity (and the policy-applied bit); VXLAN-GBP
// carries the mark's bits 0-15, 19 and 22 to the receiving router, where
// the mark is set again after the namespace crossing scrubbed it, and
// nothing else of the mark travels. The receiver enforces ingress by that
// identity without knowing the sender.
func TestPolicyIdentityOverGBP(t *testing.T) {
	c := newDC(t, 2, twoTenants()[:1])
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(1, "acme/b", 100, "a", "10.0.1.11")
	c.update("acme/a", func(e *datapath.Endpoint) { e.Identity = 0x1234 })
	c.setAll()
	seen := recordMarks(t, c.vpcNS(1, 100))
	const dropReason = uint32(datapath.DropPolicy) << datapath.MarkDropReasonShift
	orMark(t, c.vpcNS(0, 100), datapath.MarkTrace|dropReason)
	if _, err := c.ping("acme/a", netip.MustParseAddr("10.0.1.11"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	want := []uint32{0x1234 | datapath.MarkPolicyApplied | datapath.MarkTrace}
	if got := seen(); !slices.Equal(got, want) {
		t.Errorf("marks arriving on h1 = %#x, want %#x (identity, policy applied, trace; no drop reason)", got, want)
	}

	icmpFrom := func(id uint32) *datapath.EndpointPolicy {
		return &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{Identities: []uint32{id},
			Ports: []datapath.Port{{Protocol: datapath.ProtoICMP, ICMPType: 8, ICMPCode: -1}}}}}
	}
	c.update("acme/b", func(e *datapath.Endpoint) { e.Policy = icmpFrom(0x1234) })
	c.setAll()
	c.probeAll(t, []flowCase{{"acme/a", "acme/b", datapath.ProtoICMP, 8, true}, {"acme/a", "acme/b", datapath.ProtoTCP, 80, false}})
	c.update("acme/a", func(e *datapath.Endpoint) { e.Identity = 0x1235 })
	c.setAll()
	c.probeAll(t, []flowCase{{"acme/a", "acme/b", datapath.ProtoICMP, 8, false}})
}

// TestPolicyHoldsAgainstWorkload: the workload is root in its namespace;
// whatever it does there (flush every nftables table, delete qdiscs,
// rewrite its routes, mark its packets, take another endpoint's address)
// does not lift the policy, which lives in the router namespace.
func TestPolicyHoldsAgainstWorkload(t *testing.T) {
	c := newDC(t, 1, twoTenants()[:1])
	c.add(0, "acme/web", 100, "a", "10.0.1.10")
	c.add(0, "acme/evil", 100, "a", "10.0.1.12")
	c.add(0, "acme/db", 100, "b", "10.0.2.10")
	c.update("acme/web", func(e *datapath.Endpoint) { e.Identity = 10 })
	c.update("acme/evil", func(e *datapath.Endpoint) { e.Identity = 30 })
	c.update("acme/db", func(e *datapath.Endpoint) {
		e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{
			{Identities: []uint32{10}, Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5432}}},
			{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.10/32")}, Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: 53}}},
		}}
	})
	c.setAll()
	cases := []flowCase{
		{"acme/web", "acme/db", datapath.ProtoTCP, 5432, true},
		{"acme/web", "acme/db", datapath.ProtoUDP, 53, true},
		{"acme/evil", "acme/db", datapath.ProtoTCP, 5432, false},
		{"acme/evil", "acme/db", datapath.ProtoUDP, 53, false},
		{"acme/evil", "acme/db", datapath.ProtoICMP, 8, false},
	}
	c.probeAll(t, cases)
	evil := c.netns("acme/evil")
	run := func(args ...string) {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		var out []byte
		err := netnsfile.Do(evil, func() error {
			var err error
			out, err = exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
			return err
		})
		t.Logf("in acme/evil: %v: %v %s", args, err, out)
	}
	run("nft", "flush", "ruleset")
	run("tc", "qdisc", "del", "dev", "eth0", "root")
	run("tc", "qdisc", "del", "dev", "eth0", "clsact")
	run("ip", "route", "flush", "table", "main")
	run("ip", "route", "add", "10.0.2.10/32", "dev", "eth0")
	run("ip", "route", "add", "default", "via", "10.0.1.1", "dev", "eth0", "onlink")
	// Its packets marked as identity 10 with the policy-applied bit.
	run("nft", "add", "table", "ip", "x")
	run("nft", "add", "chain", "ip", "x", "out", "{ type route hook output priority 0; }")
	run("nft", "add", "rule", "ip", "x", "out", "meta", "mark", "set", "0x8000a")
	c.probeAll(t, cases)
	// web's address as its own: the router's strict reverse path filter
	// drops what it sends from it.
	run("ip", "addr", "add", "10.0.1.10/32", "dev", "eth0")
	run("ip", "route", "replace", "10.0.2.10/32", "dev", "eth0", "src", "10.0.1.10")
	c.probeAll(t, cases[2:])
	// What the workload did cost the driver nothing to keep.
	before := c.drivers[0].Counts()
	c.setAll()
	if w := c.drivers[0].Counts().Sub(before); w["nftables/commit"] != 0 {
		t.Errorf("the workload's changes made the driver rewrite its table: %s", w)
	}
}

// TestPolicyMatrix: two tenants with the same addresses, four endpoints
// each on three hosts, policies by identity, address, port and protocol:
// every pair (same host and across hosts) × {TCP on an allowed port, TCP
// on another, UDP, ICMP echo} gets the verdict of the reference
// semantics. Then policies change under live connections across hosts.
func TestPolicyMatrix(t *testing.T) {
	c := newDC(t, 3, twoTenants())
	type ep struct {
		id       string
		host     int
		subnet   string
		ip       string
		identity uint32
	}
	eps := []ep{
		{"acme/web1", 0, "a", "10.0.1.10", 10}, {"acme/web2", 1, "a", "10.0.1.11", 10},
		{"acme/db", 2, "b", "10.0.2.10", 20}, {"acme/other", 0, "b", "10.0.2.11", 30},
		{"zeta/web1", 1, "a", "10.0.1.10", 10}, {"zeta/web2", 2, "a", "10.0.1.11", 10},
		{"zeta/db", 0, "b", "10.0.2.10", 20}, {"zeta/other", 2, "b", "10.0.2.11", 30},
	}
	for _, e := range eps {
		vni := uint32(100)
		if e.id[:4] == "zeta" {
			vni = 200
		}
		c.add(e.host, e.id, vni, e.subnet, e.ip)
		c.update(e.id, func(d *datapath.Endpoint) { d.Identity = e.identity })
	}
	tcp := func(p uint16) []datapath.Port { return []datapath.Port{{Protocol: datapath.ProtoTCP, First: p}} }
	c.update("acme/db", func(e *datapath.Endpoint) {
		e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{
			{Identities: []uint32{10}, Ports: tcp(5432)},
			{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}, Ports: []datapath.Port{{Protocol: datapath.ProtoICMP, ICMPType: 8, ICMPCode: -1}}},
		}}
	})
	c.update("acme/web1", func(e *datapath.Endpoint) {
		e.Policy = &datapath.EndpointPolicy{EgressIsolated: true, Egress: []datapath.Rule{
			{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.2.0/24")}, Ports: tcp(5432)},
			{AllPeers: true, Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: 53}}},
		}}
	})
	c.update("zeta/db", func(e *datapath.Endpoint) {
		e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true, Ingress: []datapath.Rule{
			{Identities: []uint32{30}, Ports: append(tcp(5432), datapath.Port{Protocol: datapath.ProtoUDP, First: 53})},
		}}
	})
	c.update("zeta/other", func(e *datapath.Endpoint) {
		e.Policy = &datapath.EndpointPolicy{IngressIsolated: true}
	})
	c.setAll()
	var cases []flowCase
	for _, a := range eps {
		for _, b := range eps {
			if a.id == b.id || a.id[:4] != b.id[:4] {
				continue
			}
			for _, p := range []struct {
				proto datapath.Protocol
				port  uint16
			}{{datapath.ProtoTCP, 5432}, {datapath.ProtoTCP, 5433}, {datapath.ProtoUDP, 53}, {datapath.ProtoICMP, 8}} {
				f := flowCase{from: a.id, to: b.id, proto: p.proto, port: p.port}
				f.want = c.expected(f)
				cases = append(cases, f)
			}
		}
	}
	allowed := 0
	for _, f := range cases {
		if f.want {
			allowed++
		}
	}
	t.Logf("%d probes, %d allowed", len(cases), allowed)
	c.probeAll(t, cases)
	noWrites := func(what string) {
		for i, d := range c.drivers {
			before := d.Counts()
			if err := d.Set(c.ctx, c.desired(i)); err != nil {
				t.Fatal(err)
			}
			if w := d.Counts().Sub(before); len(w) > 0 {
				t.Errorf("%s: repeated Set on host %d wrote %s", what, i, w)
			}
		}
	}
	noWrites("matrix")

	t.Run("live connections across hosts", func(t *testing.T) {
		// web2 (h1) -> db (h2), allowed by db's identity rule.
		f := c.flow(flowCase{from: "acme/web2", to: "acme/db", proto: datapath.ProtoTCP, port: 5432})
		open := func() conformance.Conn {
			ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
			defer cancel()
			conn, err := nsprobe.Dial(ctx, c.netns(f.From), c.netns(f.To), f)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			if err := conn.Exchange(ctx); err != nil {
				t.Fatal(err)
			}
			return conn
		}
		// A connection that must live gets a generous wait; one that must
		// be dead must not answer within a second of Set returning.
		exchange := func(conn conformance.Conn, alive bool) error {
			wait := time.Second
			if alive {
				wait = 5 * time.Second
			}
			ctx, cancel := context.WithTimeout(c.ctx, wait)
			defer cancel()
			return conn.Exchange(ctx)
		}
		dbRules := c.endpoint("acme/db").Policy.Ingress
		setDB := func(rules ...datapath.Rule) {
			c.update("acme/db", func(e *datapath.Endpoint) {
				e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: rules}
			})
			if err := c.drivers[2].Set(c.ctx, c.desired(2)); err != nil {
				t.Fatal(err)
			}
		}
		conn := open()
		setDB(append(slices.Clone(dbRules), datapath.Rule{AllPeers: true, Ports: tcp(9999)})...)
		if err := exchange(conn, true); err != nil {
			t.Errorf("a rule added on the receiver's host killed an allowed connection: %v", err)
		}
		setDB(dbRules[1:]...)
		if err := exchange(conn, false); err == nil {
			t.Error("a connection the receiver's host no longer allows still answered after Set returned")
		}
		setDB(dbRules...)
		conn = open()
		c.update("acme/web2", func(e *datapath.Endpoint) {
			e.Policy = &datapath.EndpointPolicy{EgressIsolated: true}
		})
		if err := c.drivers[1].Set(c.ctx, c.desired(1)); err != nil {
			t.Fatal(err)
		}
		if err := exchange(conn, false); err == nil {
			t.Error("a connection the sender's host no longer allows still answered after Set returned")
		}
	})
}

// TestPolicyRuleCounts: an isolated endpoint with no rule admits nothing;
// with 10,000 rules plus one for its client it admits exactly that; the
// Sets that install and repeat them are timed.
func TestPolicyRuleCounts(t *testing.T) {
	c := newDC(t, 1, twoTenants()[:1])
	c.add(0, "acme/web", 100, "a", "10.0.1.10")
	c.add(0, "acme/other", 100, "a", "10.0.1.11")
	c.add(0, "acme/db", 100, "b", "10.0.2.10")
	c.update("acme/web", func(e *datapath.Endpoint) { e.Identity = 10 })
	c.update("acme/other", func(e *datapath.Endpoint) { e.Identity = 11 })
	for _, n := range []int{0, 10000} {
		t.Run(fmt.Sprintf("rules=%d", n), func(t *testing.T) {
			rules := costRules(n, true) // none admits web or other on TCP
			if n > 0 {
				rules = append(rules, datapath.Rule{Identities: []uint32{10}, Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5432}}})
			}
			c.update("acme/db", func(e *datapath.Endpoint) {
				e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: rules}
			})
			start := time.Now()
			c.setAll()
			took := time.Since(start)
			start = time.Now()
			before := c.drivers[0].Counts()
			c.setAll()
			t.Logf("%d rules: Set installing them %v, repeated Set %v (writes: %s)", n, took, time.Since(start), c.drivers[0].Counts().Sub(before))
			c.probeAll(t, []flowCase{
				{"acme/web", "acme/db", datapath.ProtoTCP, 5432, n > 0},
				{"acme/web", "acme/db", datapath.ProtoTCP, 5433, false},
				{"acme/other", "acme/db", datapath.ProtoTCP, 5432, false},
				{"acme/web", "acme/db", datapath.ProtoICMP, 8, false},
				{"acme/db", "acme/web", datapath.ProtoTCP, 80, true},
			})
		})
	}
}

// TestPolicyRestartAdoptsWithoutWrites: a restarted driver reads its
// tables back: the first Set writes nothing, the policies still hold, and
// a connection open across the restart lives on.
func TestPolicyRestartAdoptsWithoutWrites(t *testing.T) {
	c := newDC(t, 2, twoTenants())
	c.add(0, "acme/web", 100, "a", "10.0.1.10")
	c.add(1, "acme/db", 100, "b", "10.0.2.10")
	c.add(1, "zeta/db", 200, "b", "10.0.2.10")
	c.update("acme/web", func(e *datapath.Endpoint) {
		e.Identity = 10
		e.Policy = &datapath.EndpointPolicy{EgressIsolated: true, Egress: []datapath.Rule{{AllPeers: true, Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5432}}}}}
	})
	c.update("acme/db", func(e *datapath.Endpoint) {
		e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{Identities: []uint32{10}}}}
	})
	c.update("zeta/db", func(e *datapath.Endpoint) { e.Policy = &datapath.EndpointPolicy{IngressIsolated: true} })
	c.setAll()
	f := c.flow(flowCase{from: "acme/web", to: "acme/db", proto: datapath.ProtoTCP, port: 5432})
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	conn, err := nsprobe.Dial(ctx, c.netns(f.From), c.netns(f.To), f)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cases := []flowCase{
		{"acme/web", "acme/db", datapath.ProtoTCP, 5432, true},
		{"acme/web", "acme/db", datapath.ProtoTCP, 80, false},
		{"acme/db", "acme/web", datapath.ProtoICMP, 8, true},
	}
	c.probeAll(t, cases)
	for i := range c.drivers {
		if err := c.drivers[i].Close(); err != nil {
			t.Fatal(err)
		}
		d := startDriver(t, c.net, c.net.Host(i))
		if err := d.Set(c.ctx, c.desired(i)); err != nil {
			t.Fatal(err)
		}
		if w := d.Counts(); len(w) != 0 {
			t.Errorf("host %d: first Set of a restarted driver wrote %s", i, w)
		}
		c.drivers[i] = d
		c.ctl.serve(c.ctx, fmt.Sprintf("h%d-restarted", i), d)
	}
	if err := conn.Exchange(ctx); err != nil {
		t.Errorf("connection across the restart: %v", err)
	}
	c.probeAll(t, cases)
}

// TestVPCFailuresContained: a VPC this driver cannot program (an IPv6
// subnet) or whose rules the kernel refuses fails alone: the Set's error
// names it, the other tenant's new endpoints are programmed, its own
// endpoints keep their last ruleset and report why, and its new endpoint
// is not attached until its rules are in place.
func TestVPCFailuresContained(t *testing.T) {
	c := newDC(t, 1, twoTenants())
	c.add(0, "acme/web", 100, "a", "10.0.1.10")
	c.add(0, "acme/db", 100, "b", "10.0.2.10")
	c.add(0, "zeta/web", 200, "a", "10.0.1.10")
	c.update("acme/web", func(e *datapath.Endpoint) { e.Identity = 10 })
	allowWeb := &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{Identities: []uint32{10}}}}
	c.update("acme/db", func(e *datapath.Endpoint) { e.Policy = allowWeb })
	c.setAll()
	d := c.drivers[0]
	webToDB := flowCase{"acme/web", "acme/db", datapath.ProtoTCP, 5432, true}
	c.probeAll(t, []flowCase{webToDB})

	setWant := func(vni uint32) {
		t.Helper()
		err := d.Set(c.ctx, c.desired(0))
		var ve *datapath.VPCError
		if !errors.As(err, &ve) || ve.VNI != vni {
			t.Fatalf("Set = %v; want a VPCError for VNI %d", err, vni)
		}
		t.Logf("Set: %v", err)
	}

	t.Run("kernel refuses", func(t *testing.T) {
		linux.SetPolicyFault(d, func(vni uint32) bool { return vni == 100 })
		c.update("acme/db", func(e *datapath.Endpoint) { e.Policy = &datapath.EndpointPolicy{IngressIsolated: true} })
		c.add(0, "acme/new", 100, "a", "10.0.1.20")
		c.add(0, "zeta/new", 200, "a", "10.0.1.20")
		setWant(100)
		if _, ok := d.Status("acme/new"); ok {
			t.Error("acme/new attached while its VPC's rules were refused")
		}
		if _, ok := d.Status("zeta/new"); !ok {
			t.Error("zeta/new not attached while only acme failed")
		}
		if st, _ := d.Status("acme/db"); st.PolicyErr == "" {
			t.Error("acme/db reports no PolicyErr")
		}
		c.probeAll(t, []flowCase{webToDB}) // the last good ruleset
		linux.SetPolicyFault(d, nil)
		c.setAll()
		webToDB.want = false
		c.probeAll(t, []flowCase{webToDB, {"acme/new", "acme/web", datapath.ProtoICMP, 8, true}})
		if st, _ := d.Status("acme/db"); st.PolicyErr != "" {
			t.Errorf("acme/db PolicyErr = %q after the fix", st.PolicyErr)
		}
	})

	t.Run("IPv6 subnet", func(t *testing.T) {
		c.vpcs[0].Subnets = append(c.vpcs[0].Subnets, datapath.Subnet{Name: "v6", CIDR: netip.MustParsePrefix("fd00::/64")})
		c.add(0, "zeta/newer", 200, "a", "10.0.1.21")
		setWant(100)
		if _, ok := d.Status("zeta/newer"); !ok {
			t.Error("zeta/newer not attached while only acme failed")
		}
		c.probeAll(t, []flowCase{webToDB, {"zeta/newer", "zeta/web", datapath.ProtoICMP, 8, true}})
	})
}

// TestPolicyDriftRepaired: the policy table changed behind the driver's
// back (deleted, a dispatch element or a base rule removed) is repaired by
// the next Set, which otherwise writes nothing.
func TestPolicyDriftRepaired(t *testing.T) {
	c := newDC(t, 1, twoTenants()[:1])
	c.add(0, "acme/web", 100, "a", "10.0.1.10")
	c.add(0, "acme/db", 100, "b", "10.0.2.10")
	c.update("acme/web", func(e *datapath.Endpoint) { e.Identity = 10 })
	c.update("acme/db", func(e *datapath.Endpoint) {
		e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{Identities: []uint32{10},
			Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5432}}}}}
	})
	c.setAll()
	cases := []flowCase{
		{"acme/web", "acme/db", datapath.ProtoTCP, 5432, true},
		{"acme/web", "acme/db", datapath.ProtoTCP, 5433, false},
	}
	tb := &nftables.Table{Name: linux.PolicyTable, Family: nftables.TableFamilyIPv4}
	tests := []struct {
		name   string
		tamper func(c *nftables.Conn)
	}{
		{"table deleted", func(c *nftables.Conn) { c.DelTable(tb) }},
		{"dispatch element deleted", func(c *nftables.Conn) {
			key := make([]byte, 16)
			copy(key, linux.VethName("acme/db"))
			if err := c.SetDeleteElements(&nftables.Set{Table: tb, Name: "ingress"}, []nftables.SetElement{{Key: key}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"base chain flushed", func(c *nftables.Conn) { c.FlushChain(&nftables.Chain{Table: tb, Name: "forward"}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			withNftables(t, c.vpcNS(0, 100), func(n *nftables.Conn) {
				tc.tamper(n)
				if err := n.Flush(); err != nil {
					t.Fatal(err)
				}
			})
			before := c.drivers[0].Counts()
			c.setAll()
			if w := c.drivers[0].Counts().Sub(before); w["nftables/commit"] != 1 {
				t.Errorf("repair wrote %s; want one nftables commit", w)
			}
			before = c.drivers[0].Counts()
			c.setAll()
			if w := c.drivers[0].Counts().Sub(before); len(w) != 0 {
				t.Errorf("Set after the repair wrote %s", w)
			}
			c.probeAll(t, cases)
		})
	}
}
