package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/weftnet/weft/datapath"
)

// NewDriver returns a fresh driver on a fresh host, with the host's config.
// It registers its own cleanup with t (the suite also closes the driver).
type NewDriver func(t *testing.T) (datapath.Driver, datapath.HostConfig)

// Prober sends test traffic from inside a local endpoint.
type Prober interface {
	// Ping sends one ICMP echo request (or its simulation) from local
	// endpoint id of d to dst and returns nil once the reply arrives, or an
	// error when ctx ends first.
	Ping(ctx context.Context, d datapath.Driver, id string, dst netip.Addr) error
}

// Timeouts of the suite. A reply on a local path takes microseconds; a
// negative probe waits negativeWait for nothing.
const (
	opTimeout    = 30 * time.Second
	positiveWait = 2 * time.Second
	negativeWait = 300 * time.Millisecond
	missWait     = 3 * time.Second
)

// Run runs the suite. probe may be nil: the tests that need traffic are then
// skipped.
func Run(t *testing.T, newDriver NewDriver, probe Prober) {
	tests := []struct {
		name  string
		probe bool
		fn    func(t *testing.T, s *suite)
	}{
		{"SetAndSnapshot", false, testSetAndSnapshot},
		{"SetIdempotent", false, testSetIdempotent},
		{"Transitions", false, testTransitions},
		{"EmptyRemovesEverything", false, testEmptyRemovesEverything},
		{"InvalidStateWritesNothing", false, testInvalid},
		{"LearnForget", false, testLearnForget},
		{"LearnUnknownVNI", false, testLearnUnknownVNI},
		{"RemotesFollowVPC", false, testRemotesFollowVPC},
		{"LearnDuringSet", false, testLearnDuringSet},
		{"Reachability", true, testReachability},
		{"MissForUnknownDestination", true, testMiss},
		{"CloseIdempotent", false, testClose},
		{"QoS", false, testQoS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.probe && probe == nil {
				t.Skip("no prober given for this driver")
			}
			d, host := newDriver(t)
			t.Cleanup(func() { _ = d.Close() })
			s := &suite{d: d, host: host, probe: probe}
			var ok bool
			if s.counter, ok = d.(datapath.Counter); !ok {
				t.Fatalf("driver %T does not implement datapath.Counter", d)
			}
			if s.snap, ok = d.(datapath.Snapshotter); !ok {
				t.Fatalf("driver %T does not implement datapath.Snapshotter", d)
			}
			tc.fn(t, s)
		})
	}
}

type suite struct {
	d       datapath.Driver
	host    datapath.HostConfig
	probe   Prober
	counter datapath.Counter
	snap    datapath.Snapshotter
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// set applies d and returns the writes it caused.
func (s *suite) set(t *testing.T, d *datapath.Desired) datapath.Counts {
	t.Helper()
	before := s.counter.Counts()
	if err := s.d.Set(ctxT(t, opTimeout), d); err != nil {
		t.Fatalf("Set: %v", err)
	}
	return s.counter.Counts().Sub(before)
}

func (s *suite) learn(t *testing.T, rs ...datapath.Remote) datapath.Counts {
	t.Helper()
	before := s.counter.Counts()
	if err := s.d.Learn(ctxT(t, opTimeout), rs); err != nil {
		t.Fatalf("Learn: %v", err)
	}
	return s.counter.Counts().Sub(before)
}

func (s *suite) forget(t *testing.T, ks ...datapath.RemoteKey) datapath.Counts {
	t.Helper()
	before := s.counter.Counts()
	if err := s.d.Forget(ctxT(t, opTimeout), ks); err != nil {
		t.Fatalf("Forget: %v", err)
	}
	return s.counter.Counts().Sub(before)
}

// check compares the driver's snapshot and endpoint status with want.
func (s *suite) check(t *testing.T, want *datapath.Desired, remotes []datapath.Remote) {
	t.Helper()
	got, err := s.snap.Snapshot(ctxT(t, opTimeout))
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if diff := cmp.Diff(Expected(want, remotes), got, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("snapshot mismatch (-want +got):\n%s", diff)
	}
	for _, e := range want.Endpoints {
		st, ok := s.d.Status(e.ID)
		if !ok || st.Netns == "" {
			t.Errorf("Status(%q) = %+v, %v; want a netns path", e.ID, st, ok)
		}
		if e.Netns != "" && st.Netns != e.Netns {
			t.Errorf("Status(%q).Netns = %q, want the given %q", e.ID, st.Netns, e.Netns)
		}
	}
}

func (s *suite) checkGone(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if st, ok := s.d.Status(id); ok {
			t.Errorf("Status(%q) = %+v after removal, want not found", id, st)
		}
	}
}

func noWrites(t *testing.T, what string, c datapath.Counts) {
	t.Helper()
	if len(c) != 0 {
		t.Errorf("%s wrote to the data plane: %s; want no writes", what, c)
	}
}

func someWrites(t *testing.T, what string, c datapath.Counts) {
	t.Helper()
	if c.Total() == 0 {
		t.Errorf("%s wrote nothing; want writes", what)
	}
}

// Expected is the snapshot a driver must report after Set(d) and Learn(remotes)
// (remotes in d's VPCs and not on this host).
func Expected(d *datapath.Desired, remotes []datapath.Remote) datapath.Snapshot {
	n, err := d.Normalize()
	if err != nil {
		panic(fmt.Sprintf("conformance: expected of an invalid state: %v", err))
	}
	var s datapath.Snapshot
	for _, v := range n.VPCs {
		local := slices.ContainsFunc(n.Endpoints, func(e datapath.Endpoint) bool { return e.VNI == v.VNI })
		sv := datapath.SnapshotVPC{VNI: v.VNI, QoS: v.QoS.Enforced(n.Host.CapacityBps, local)}
		for _, sn := range v.Subnets {
			sv.CIDRs = append(sv.CIDRs, sn.CIDR)
			sv.Gateways = append(sv.Gateways, sn.Gateway)
		}
		s.VPCs = append(s.VPCs, sv)
	}
	for _, e := range n.Endpoints {
		s.Endpoints = append(s.Endpoints, datapath.SnapshotEndpoint{ID: e.ID, VNI: e.VNI, IP: e.IP, MAC: e.MAC.String(),
			QoS: e.QoS.Enforced(n.Host.CapacityBps)})
	}
	latest := map[datapath.RemoteKey]datapath.Remote{}
	for _, r := range remotes {
		if n.VPC(r.VNI) == nil || r.HostUnderlay == n.Host.UnderlayIP {
			continue
		}
		if cur, ok := latest[r.Key()]; ok && r.Epoch < cur.Epoch {
			continue
		}
		latest[r.Key()] = r
	}
	for _, r := range latest {
		s.Remotes = append(s.Remotes, datapath.SnapshotRemote{VNI: r.VNI, IP: r.IP, Host: r.HostUnderlay})
	}
	s.Sort()
	return s
}

// ---- fixtures ----

var (
	acmeA = netip.MustParsePrefix("10.0.1.0/24")
	acmeB = netip.MustParsePrefix("10.0.2.0/24")
	zetaA = netip.MustParsePrefix("10.0.1.0/24") // overlaps acme on purpose
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func mac(vni uint32, a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, byte(vni), b[0], b[1], b[2], b[3]}
}

func ep(id string, vni uint32, subnet, addr string) datapath.Endpoint {
	a := ip(addr)
	return datapath.Endpoint{ID: id, VNI: vni, Subnet: subnet, IP: a, MAC: mac(vni, a), Identity: vni*1000 + uint32(a.As4()[3])}
}

func vpcAcme() datapath.VPC {
	return datapath.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []datapath.Subnet{
		{Name: "a", CIDR: acmeA}, {Name: "b", CIDR: acmeB},
	}}
}

func vpcZeta() datapath.VPC {
	return datapath.VPC{Tenant: "zeta", Name: "main", VNI: 200, Subnets: []datapath.Subnet{{Name: "a", CIDR: zetaA}}}
}

// full is two tenants with overlapping address space, three endpoints of
// acme over two subnets and one of zeta at the same IP as acme/a1.
func (s *suite) full() *datapath.Desired {
	return &datapath.Desired{
		Host: s.host,
		VPCs: []datapath.VPC{vpcAcme(), vpcZeta()},
		Endpoints: []datapath.Endpoint{
			ep("acme/a1", 100, "a", "10.0.1.10"),
			ep("acme/a2", 100, "a", "10.0.1.11"),
			ep("acme/b1", 100, "b", "10.0.2.10"),
			ep("zeta/a1", 200, "a", "10.0.1.10"),
		},
	}
}

func (s *suite) empty() *datapath.Desired { return &datapath.Desired{Host: s.host} }

func (s *suite) otherHost(last byte) netip.Addr {
	if s.host.UnderlayIP.Is4() {
		b := s.host.UnderlayIP.As4()
		b[3] = last
		return netip.AddrFrom4(b)
	}
	b := s.host.UnderlayIP.As16()
	b[15] = last
	return netip.AddrFrom16(b)
}

// ---- tests ----

func testSetAndSnapshot(t *testing.T, s *suite) {
	d := s.full()
	someWrites(t, "first Set", s.set(t, d))
	s.check(t, d, nil)
}

func testSetIdempotent(t *testing.T, s *suite) {
	d := s.full()
	s.set(t, d)
	noWrites(t, "second Set of the same state", s.set(t, d))

	// The same state in another order and with the defaults spelled out.
	n, err := d.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(n.VPCs), func(i, j int) { n.VPCs[i], n.VPCs[j] = n.VPCs[j], n.VPCs[i] })
	r.Shuffle(len(n.Endpoints), func(i, j int) { n.Endpoints[i], n.Endpoints[j] = n.Endpoints[j], n.Endpoints[i] })
	noWrites(t, "Set of the same state reordered, defaults explicit", s.set(t, n))
	s.check(t, d, nil)
}

// testTransitions replays a list of states in order, then in a shuffled
// order, checking after every Set that the snapshot matches and that a
// repeated Set writes nothing.
func testTransitions(t *testing.T, s *suite) {
	full := s.full()
	onlyVPCs := s.empty()
	onlyVPCs.VPCs = full.VPCs
	oneEP := s.empty()
	oneEP.VPCs = []datapath.VPC{vpcAcme()}
	oneEP.Endpoints = []datapath.Endpoint{ep("acme/a1", 100, "a", "10.0.1.10")}
	// acme/a1 changes address and subnet, acme/b1 swaps into its old IP,
	// zeta gets a second subnet.
	changed := s.full()
	changed.Endpoints[0] = ep("acme/a1", 100, "b", "10.0.2.20")
	changed.Endpoints[2] = ep("acme/b1", 100, "a", "10.0.1.10")
	changed.VPCs[1].Subnets = append(changed.VPCs[1].Subnets, datapath.Subnet{Name: "b", CIDR: netip.MustParsePrefix("10.9.0.0/16")})
	noZeta := s.full()
	noZeta.VPCs = noZeta.VPCs[:1]
	noZeta.Endpoints = noZeta.Endpoints[:3]

	states := []struct {
		name string
		d    *datapath.Desired
	}{
		{"empty", s.empty()},
		{"vpcs-only", onlyVPCs},
		{"one-endpoint", oneEP},
		{"full", full},
		{"changed", changed},
		{"no-zeta", noZeta},
	}
	order := make([]int, 0, 2*len(states)+1)
	for i := range states {
		order = append(order, i)
	}
	r := rand.New(rand.NewPCG(3, 4))
	order = append(order, r.Perm(len(states))...)
	order = append(order, 0)
	var prev *datapath.Desired
	for step, i := range order {
		st := states[i]
		t.Run(fmt.Sprintf("%02d-%s", step, st.name), func(t *testing.T) {
			c := s.set(t, st.d)
			if prev != nil && !cmp.Equal(Expected(prev, nil), Expected(st.d, nil), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})) {
				someWrites(t, "Set of a different state", c)
			}
			s.check(t, st.d, nil)
			for _, e := range allEndpoints(states) {
				if !slices.ContainsFunc(st.d.Endpoints, func(x datapath.Endpoint) bool { return x.ID == e }) {
					s.checkGone(t, e)
				}
			}
			noWrites(t, "repeated Set", s.set(t, st.d))
		})
		prev = st.d
	}
}

func allEndpoints(states []struct {
	name string
	d    *datapath.Desired
}) []string {
	var ids []string
	for _, st := range states {
		for _, e := range st.d.Endpoints {
			if !slices.Contains(ids, e.ID) {
				ids = append(ids, e.ID)
			}
		}
	}
	return ids
}

func testEmptyRemovesEverything(t *testing.T, s *suite) {
	s.set(t, s.full())
	s.learn(t, datapath.Remote{VNI: 100, IP: ip("10.0.1.50"), MAC: mac(100, ip("10.0.1.50")), HostUnderlay: s.otherHost(201), Epoch: 1})
	c := s.set(t, s.empty())
	if c.Verb("del") == 0 {
		t.Errorf("Set(empty) deleted nothing: %s", c)
	}
	s.check(t, s.empty(), nil)
	s.checkGone(t, "acme/a1", "acme/a2", "acme/b1", "zeta/a1")
	noWrites(t, "second Set(empty)", s.set(t, s.empty()))
}

func testInvalid(t *testing.T, s *suite) {
	good := s.full()
	s.set(t, good)
	tests := []struct {
		name   string
		mutate func(d *datapath.Desired)
	}{
		{"endpoint in unknown VNI", func(d *datapath.Desired) { d.Endpoints[0].VNI = 999 }},
		{"endpoint in unknown subnet", func(d *datapath.Desired) { d.Endpoints[0].Subnet = "nope" }},
		{"endpoint IP outside subnet", func(d *datapath.Desired) { d.Endpoints[0].IP = ip("10.0.3.1") }},
		{"endpoint IP is the gateway", func(d *datapath.Desired) { d.Endpoints[0].IP = ip("10.0.1.1") }},
		{"duplicate IP in VPC", func(d *datapath.Desired) { d.Endpoints[1].IP = d.Endpoints[0].IP }},
		{"duplicate endpoint ID", func(d *datapath.Desired) { d.Endpoints[1].ID = d.Endpoints[0].ID }},
		{"multicast MAC", func(d *datapath.Desired) { d.Endpoints[0].MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }},
		{"duplicate VNI", func(d *datapath.Desired) { d.VPCs[1].VNI = d.VPCs[0].VNI }},
		{"VNI zero", func(d *datapath.Desired) { d.VPCs[0].VNI = 0 }},
		{"overlapping subnets", func(d *datapath.Desired) { d.VPCs[0].Subnets[1].CIDR = netip.MustParsePrefix("10.0.0.0/16") }},
		{"gateway outside subnet", func(d *datapath.Desired) { d.VPCs[0].Subnets[0].Gateway = ip("10.0.2.1") }},
		{"no host name", func(d *datapath.Desired) { d.Host.Name = "" }},
		{"relative netns", func(d *datapath.Desired) { d.Endpoints[0].Netns = "run/netns/x" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := s.full()
			tc.mutate(d)
			before := s.counter.Counts()
			err := s.d.Set(ctxT(t, opTimeout), d)
			if !errors.Is(err, datapath.ErrInvalid) {
				t.Fatalf("Set = %v, want ErrInvalid", err)
			}
			noWrites(t, "rejected Set", s.counter.Counts().Sub(before))
			s.check(t, good, nil)
		})
	}
}

func testLearnForget(t *testing.T, s *suite) {
	d := s.full()
	s.set(t, d)
	h1, h2 := s.otherHost(201), s.otherHost(202)
	r := func(vni uint32, addr string, host netip.Addr, epoch uint64) datapath.Remote {
		a := ip(addr)
		return datapath.Remote{VNI: vni, IP: a, MAC: mac(vni, a), HostUnderlay: host, Identity: 7, Epoch: epoch}
	}
	steps := []struct {
		name    string
		learn   []datapath.Remote
		forget  []datapath.RemoteKey
		writes  bool
		remotes []datapath.Remote // expected afterwards
	}{
		{name: "learn two", learn: []datapath.Remote{r(100, "10.0.1.50", h1, 1), r(100, "10.0.2.50", h1, 1)}, writes: true,
			remotes: []datapath.Remote{r(100, "10.0.1.50", h1, 1), r(100, "10.0.2.50", h1, 1)}},
		{name: "learn the same again", learn: []datapath.Remote{r(100, "10.0.1.50", h1, 1)}, writes: false,
			remotes: []datapath.Remote{r(100, "10.0.1.50", h1, 1), r(100, "10.0.2.50", h1, 1)}},
		{name: "same IP in other VPC", learn: []datapath.Remote{r(200, "10.0.1.50", h2, 1)}, writes: true,
			remotes: []datapath.Remote{r(100, "10.0.1.50", h1, 1), r(100, "10.0.2.50", h1, 1), r(200, "10.0.1.50", h2, 1)}},
		{name: "migration to h2", learn: []datapath.Remote{r(100, "10.0.1.50", h2, 2)}, writes: true,
			remotes: []datapath.Remote{r(100, "10.0.1.50", h2, 2), r(100, "10.0.2.50", h1, 1), r(200, "10.0.1.50", h2, 1)}},
		{name: "late answer with older epoch is ignored", learn: []datapath.Remote{r(100, "10.0.1.50", h1, 1)}, writes: false,
			remotes: []datapath.Remote{r(100, "10.0.1.50", h2, 2), r(100, "10.0.2.50", h1, 1), r(200, "10.0.1.50", h2, 1)}},
		{name: "forget one", forget: []datapath.RemoteKey{{VNI: 100, IP: ip("10.0.1.50")}}, writes: true,
			remotes: []datapath.Remote{r(100, "10.0.2.50", h1, 1), r(200, "10.0.1.50", h2, 1)}},
		{name: "forget unknown", forget: []datapath.RemoteKey{{VNI: 100, IP: ip("10.0.1.50")}, {VNI: 300, IP: ip("1.2.3.4")}}, writes: false,
			remotes: []datapath.Remote{r(100, "10.0.2.50", h1, 1), r(200, "10.0.1.50", h2, 1)}},
		{name: "forget the rest", forget: []datapath.RemoteKey{{VNI: 100, IP: ip("10.0.2.50")}, {VNI: 200, IP: ip("10.0.1.50")}}, writes: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var c datapath.Counts
			if st.learn != nil {
				c = s.learn(t, st.learn...)
			} else {
				c = s.forget(t, st.forget...)
			}
			if st.writes {
				someWrites(t, st.name, c)
			} else {
				noWrites(t, st.name, c)
			}
			s.check(t, d, st.remotes)
			noWrites(t, "Set after learning", s.set(t, d))
			s.check(t, d, st.remotes)
		})
	}

	t.Run("invalid remote", func(t *testing.T) {
		before := s.counter.Counts()
		err := s.d.Learn(ctxT(t, opTimeout), []datapath.Remote{{VNI: 100, IP: ip("10.0.1.60")}})
		if !errors.Is(err, datapath.ErrInvalid) {
			t.Errorf("Learn without host = %v, want ErrInvalid", err)
		}
		noWrites(t, "invalid Learn", s.counter.Counts().Sub(before))
	})
}

func testLearnUnknownVNI(t *testing.T, s *suite) {
	d := s.full()
	s.set(t, d)
	good := datapath.Remote{VNI: 100, IP: ip("10.0.1.70"), MAC: mac(100, ip("10.0.1.70")), HostUnderlay: s.otherHost(201), Epoch: 1}
	bad := datapath.Remote{VNI: 4242, IP: ip("10.0.1.70"), MAC: mac(100, ip("10.0.1.70")), HostUnderlay: s.otherHost(201), Epoch: 1}
	err := s.d.Learn(ctxT(t, opTimeout), []datapath.Remote{bad, good})
	if !errors.Is(err, datapath.ErrUnknownVNI) {
		t.Errorf("Learn = %v, want ErrUnknownVNI", err)
	}
	s.check(t, d, []datapath.Remote{good})
}

func testRemotesFollowVPC(t *testing.T, s *suite) {
	d := s.full()
	s.set(t, d)
	r100 := datapath.Remote{VNI: 100, IP: ip("10.0.1.80"), MAC: mac(100, ip("10.0.1.80")), HostUnderlay: s.otherHost(201), Epoch: 1}
	r200 := datapath.Remote{VNI: 200, IP: ip("10.0.1.80"), MAC: mac(200, ip("10.0.1.80")), HostUnderlay: s.otherHost(202), Epoch: 1}
	s.learn(t, r100, r200)
	s.check(t, d, []datapath.Remote{r100, r200})

	noZeta := s.full()
	noZeta.VPCs = noZeta.VPCs[:1]
	noZeta.Endpoints = noZeta.Endpoints[:3]
	s.set(t, noZeta)
	s.check(t, noZeta, []datapath.Remote{r100})

	s.set(t, d)
	s.check(t, d, []datapath.Remote{r100}) // a re-created VPC starts without remotes
}

// testLearnDuringSet runs the fast path (Learn, Forget, Status) while Sets
// add and remove endpoints, then checks that the end state is exact.
func testLearnDuringSet(t *testing.T, s *suite) {
	full := s.full()
	less := s.full()
	less.Endpoints = less.Endpoints[:1]
	s.set(t, full)
	r := datapath.Remote{VNI: 100, IP: ip("10.0.2.90"), MAC: mac(100, ip("10.0.2.90")), HostUnderlay: s.otherHost(201), Epoch: 1}
	ctx := ctxT(t, opTimeout)
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			var err error
			if i%2 == 0 {
				err = s.d.Learn(ctx, []datapath.Remote{r})
			} else {
				err = s.d.Forget(ctx, []datapath.RemoteKey{r.Key()})
			}
			s.d.Status("acme/a1")
			if err != nil {
				done <- err
				return
			}
		}
	}()
	for range 3 {
		for _, d := range []*datapath.Desired{less, full} {
			if err := s.d.Set(ctx, d); err != nil {
				t.Errorf("Set: %v", err)
			}
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Errorf("fast path during Set: %v", err)
	}
	s.forget(t, r.Key())
	s.check(t, full, nil)
	noWrites(t, "Set after the race", s.set(t, full))
	s.learn(t, r)
	s.check(t, full, []datapath.Remote{r})
}

func (s *suite) reach(t *testing.T, from string, to netip.Addr, want bool) {
	t.Helper()
	wait := positiveWait
	if !want {
		wait = negativeWait
	}
	err := s.probe.Ping(ctxT(t, wait), s.d, from, to)
	switch {
	case want && err != nil:
		t.Errorf("%s -> %s: %v; want a reply", from, to, err)
	case !want && err == nil:
		t.Errorf("%s -> %s: got a reply; want none", from, to)
	}
}

func testReachability(t *testing.T, s *suite) {
	d := s.full()
	s.set(t, d)
	tests := []struct {
		from string
		to   string
		want bool
	}{
		{"acme/a1", "10.0.1.11", true},  // same subnet
		{"acme/a1", "10.0.2.10", true},  // other subnet, same VPC
		{"acme/b1", "10.0.1.10", true},  // back, reaches acme/a1 not zeta/a1
		{"acme/a1", "10.0.1.1", true},   // distributed gateway
		{"acme/b1", "10.0.2.1", true},   // gateway of the other subnet
		{"zeta/a1", "10.0.1.1", true},   // zeta's own gateway
		{"zeta/a1", "10.0.1.11", false}, // acme's address, not in zeta
		{"zeta/a1", "10.0.2.10", false}, // acme's other subnet
		{"acme/a1", "10.0.1.99", false}, // nobody
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s->%s", tc.from, tc.to), func(t *testing.T) {
			s.reach(t, tc.from, ip(tc.to), tc.want)
		})
	}
	t.Run("after removal", func(t *testing.T) {
		less := s.full()
		less.Endpoints = slices.DeleteFunc(less.Endpoints, func(e datapath.Endpoint) bool { return e.ID == "acme/a2" })
		s.set(t, less)
		s.reach(t, "acme/a1", ip("10.0.1.11"), false)
		s.reach(t, "acme/a1", ip("10.0.2.10"), true)
	})
}

func testMiss(t *testing.T, s *suite) {
	s.set(t, s.full())
	misses := s.d.Misses()
	tests := []struct {
		from string
		to   string
		want datapath.Miss
	}{
		{"acme/a1", "10.0.2.77", datapath.Miss{VNI: 100, IP: ip("10.0.2.77")}},
		// acme has 10.0.1.11 but zeta does not: zeta must ask, not deliver.
		{"zeta/a1", "10.0.1.11", datapath.Miss{VNI: 200, IP: ip("10.0.1.11")}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s->%s", tc.from, tc.to), func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- s.probe.Ping(ctxT(t, negativeWait), s.d, tc.from, ip(tc.to)) }()
			timeout := time.After(missWait)
			for {
				select {
				case m, ok := <-misses:
					if !ok {
						t.Fatal("Misses closed")
					}
					if m == tc.want {
						if err := <-done; err == nil {
							t.Errorf("ping to an unknown destination got a reply")
						}
						return
					}
					t.Logf("other miss %+v", m)
				case <-timeout:
					<-done
					t.Fatalf("no miss %+v within %v", tc.want, missWait)
				}
			}
		})
	}
}

func testClose(t *testing.T, s *suite) {
	s.set(t, s.full())
	misses := s.d.Misses()
	if err := s.d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case _, ok := <-misses:
		if ok {
			t.Error("Misses delivered after Close")
		}
	case <-time.After(5 * time.Second):
		t.Error("Misses not closed by Close")
	}
	ctx := ctxT(t, opTimeout)
	if err := s.d.Set(ctx, s.full()); !errors.Is(err, datapath.ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
	if err := s.d.Learn(ctx, nil); !errors.Is(err, datapath.ErrClosed) {
		t.Errorf("Learn after Close = %v, want ErrClosed", err)
	}
	if err := s.d.Forget(ctx, nil); !errors.Is(err, datapath.ErrClosed) {
		t.Errorf("Forget after Close = %v, want ErrClosed", err)
	}
}
