package sim_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/conformance"
	"github.com/weftnet/weft/datapath/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var host = datapath.HostConfig{Name: "h1", UnderlayIP: netip.MustParseAddr("192.0.2.11"), UnderlayDev: "eth0", MTU: 1500}

// prober resolves a simulated echo: a reply comes back from a local endpoint
// or the gateway; a remote host is not simulated here.
type prober struct{}

func (prober) Ping(ctx context.Context, d datapath.Driver, id string, dst netip.Addr) error {
	dec, err := d.(*sim.Driver).Resolve(id, dst)
	if err != nil {
		return err
	}
	switch dec.Verdict {
	case sim.VerdictLocal, sim.VerdictGateway:
		return nil
	}
	<-ctx.Done()
	return fmt.Errorf("no reply (%s): %w", dec.Verdict, ctx.Err())
}

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) (datapath.Driver, datapath.HostConfig) {
		return sim.New(sim.Config{}), host
	}, prober{})
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func desired() *datapath.Desired {
	return &datapath.Desired{
		Host: host,
		VPCs: []datapath.VPC{{Tenant: "acme", Name: "main", VNI: 100, Subnets: []datapath.Subnet{
			{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")},
			{Name: "b", CIDR: netip.MustParsePrefix("10.0.2.0/24"), Gateway: netip.MustParseAddr("10.0.2.254")},
		}}, {Tenant: "zeta", Name: "main", VNI: 200, Subnets: []datapath.Subnet{
			{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")},
		}}},
		Endpoints: []datapath.Endpoint{
			{ID: "acme/web", VNI: 100, Subnet: "a", IP: netip.MustParseAddr("10.0.1.10"), MAC: mac("02:00:0a:00:01:0a"), Identity: 5},
			{ID: "acme/db", VNI: 100, Subnet: "b", IP: netip.MustParseAddr("10.0.2.10"), MAC: mac("02:00:0a:00:02:0a")},
			{ID: "zeta/web", VNI: 200, Subnet: "a", IP: netip.MustParseAddr("10.0.1.10"), MAC: mac("02:00:0a:00:01:0b"), Netns: "/var/run/netns/z"},
		},
	}
}

func TestState(t *testing.T) {
	d := sim.New(sim.Config{})
	defer d.Close()
	ctx := t.Context()
	if err := d.Set(ctx, desired()); err != nil {
		t.Fatal(err)
	}
	if err := d.Learn(ctx, []datapath.Remote{{VNI: 100, IP: netip.MustParseAddr("10.0.1.20"), MAC: mac("02:00:0a:00:01:14"),
		HostUnderlay: netip.MustParseAddr("192.0.2.12"), Identity: 9, Epoch: 3}}); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		`endpoint acme/db vni=100 subnet=b ip=10.0.2.10/24 mac=02:00:0a:00:02:0a gw=10.0.2.254 if=eth0 netns="" identity=0`,
		`endpoint acme/web vni=100 subnet=a ip=10.0.1.10/24 mac=02:00:0a:00:01:0a gw=10.0.1.1 if=eth0 netns="" identity=5`,
		`endpoint zeta/web vni=200 subnet=a ip=10.0.1.10/24 mac=02:00:0a:00:01:0b gw=10.0.1.1 if=eth0 netns="/var/run/netns/z" identity=0`,
		`host h1 underlay=192.0.2.11 dev=eth0 mtu=1500`,
		`remote 100 10.0.1.20 host=192.0.2.12 mac=02:00:0a:00:01:14 identity=9 epoch=3`,
		`vpc 100 acme/main`,
		`vpc 100 subnet a 10.0.1.0/24 gw=10.0.1.1`,
		`vpc 100 subnet b 10.0.2.0/24 gw=10.0.2.254`,
		`vpc 200 subnet a 10.0.1.0/24 gw=10.0.1.1`,
		`vpc 200 zeta/main`,
	}, "\n")
	if diff := cmp.Diff(want, d.State()); diff != "" {
		t.Errorf("State (-want +got):\n%s", diff)
	}
	wantCounts := datapath.Counts{"host/add": 1, "vpc/add": 2, "subnet/add": 3, "endpoint/add": 3, "remote/add": 1}
	if diff := cmp.Diff(wantCounts, d.Counts()); diff != "" {
		t.Errorf("Counts (-want +got):\n%s", diff)
	}
	st, ok := d.Status("acme/web")
	if want := (datapath.EndpointStatus{Netns: "sim:/h1/acme/web", IfName: "eth0", HostIfName: "sim-acme/web"}); !ok || st != want {
		t.Errorf("Status = %+v, %v; want %+v", st, ok, want)
	}
}

func TestResolve(t *testing.T) {
	d := sim.New(sim.Config{})
	defer d.Close()
	ctx := t.Context()
	if err := d.Set(ctx, desired()); err != nil {
		t.Fatal(err)
	}
	misses := d.Misses()
	h2 := netip.MustParseAddr("192.0.2.12")
	a := netip.MustParseAddr
	type step struct {
		name     string
		learn    []datapath.Remote
		forget   []datapath.RemoteKey
		src, dst string
		want     sim.Decision
		wantMiss bool
	}
	steps := []step{
		{name: "local same subnet is zeta's own", src: "zeta/web", dst: "10.0.1.10", want: sim.Decision{Verdict: sim.VerdictLocal, VNI: 200, Endpoint: "zeta/web"}},
		{name: "local other subnet", src: "acme/web", dst: "10.0.2.10", want: sim.Decision{Verdict: sim.VerdictLocal, VNI: 100, Endpoint: "acme/db"}},
		{name: "back to acme not zeta", src: "acme/db", dst: "10.0.1.10", want: sim.Decision{Verdict: sim.VerdictLocal, VNI: 100, Endpoint: "acme/web", Identity: 5}},
		{name: "gateway", src: "acme/db", dst: "10.0.2.254", want: sim.Decision{Verdict: sim.VerdictGateway, VNI: 100}},
		{name: "outside every subnet", src: "acme/web", dst: "8.8.8.8", want: sim.Decision{Verdict: sim.VerdictDrop, VNI: 100, Reason: "no route"}},
		{name: "unknown remote misses", src: "acme/web", dst: "10.0.1.20", want: sim.Decision{Verdict: sim.VerdictMiss, VNI: 100}, wantMiss: true},
		{name: "learned remote forwards", src: "acme/web", dst: "10.0.1.20",
			learn: []datapath.Remote{{VNI: 100, IP: a("10.0.1.20"), HostUnderlay: h2, Identity: 9, Epoch: 1}},
			want:  sim.Decision{Verdict: sim.VerdictRemote, VNI: 100, Host: h2, Identity: 9}},
		{name: "zeta does not see acme's remote", src: "zeta/web", dst: "10.0.1.20", want: sim.Decision{Verdict: sim.VerdictMiss, VNI: 200}, wantMiss: true},
		{name: "forgotten remote misses again", src: "acme/web", dst: "10.0.1.20",
			forget: []datapath.RemoteKey{{VNI: 100, IP: a("10.0.1.20")}},
			want:   sim.Decision{Verdict: sim.VerdictMiss, VNI: 100}, wantMiss: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := d.Learn(ctx, st.learn); err != nil {
				t.Fatal(err)
			}
			if err := d.Forget(ctx, st.forget); err != nil {
				t.Fatal(err)
			}
			got, err := d.Resolve(st.src, a(st.dst))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(st.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("Resolve (-want +got):\n%s", diff)
			}
			select {
			case m := <-misses:
				if !st.wantMiss {
					t.Errorf("unexpected miss %+v", m)
				} else if m.VNI != got.VNI || m.IP != a(st.dst) {
					t.Errorf("miss %+v, want {%d %s}", m, got.VNI, st.dst)
				}
			default:
				if st.wantMiss {
					t.Error("no miss emitted")
				}
			}
		})
	}
	if _, err := d.Resolve("nobody", a("10.0.1.1")); err == nil {
		t.Error("Resolve from an unknown endpoint succeeded")
	}
}

func TestOnMissAndDrops(t *testing.T) {
	var got []datapath.Miss
	d := sim.New(sim.Config{OnMiss: func(m datapath.Miss) { got = append(got, m) }})
	defer d.Close()
	if err := d.Set(t.Context(), desired()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Resolve("acme/web", netip.MustParseAddr("10.0.2.99")); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]datapath.Miss{{VNI: 100, IP: netip.MustParseAddr("10.0.2.99")}}, got,
		cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("OnMiss (-want +got):\n%s", diff)
	}

	// Without OnMiss and without anyone asking for Misses, misses are counted as dropped.
	d2 := sim.New(sim.Config{MissBuffer: 1})
	defer d2.Close()
	if err := d2.Set(t.Context(), desired()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := d2.Resolve("acme/web", netip.MustParseAddr("10.0.2.99")); err != nil {
			t.Fatal(err)
		}
	}
	if n := d2.MissDrops(); n != 3 {
		t.Errorf("MissDrops = %d, want 3", n)
	}
	_ = d2.Misses() // buffer of one
	for range 2 {
		if _, err := d2.Resolve("acme/web", netip.MustParseAddr("10.0.2.99")); err != nil {
			t.Fatal(err)
		}
	}
	if n := d2.MissDrops(); n != 4 {
		t.Errorf("MissDrops = %d, want 4", n)
	}
}

// hostState is a typical host of the cold-start goal: 10 endpoints in 2 VPCs.
func hostState(i int) *datapath.Desired {
	d := &datapath.Desired{
		Host: datapath.HostConfig{Name: fmt.Sprintf("h%d", i), UnderlayIP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), UnderlayDev: "eth0", MTU: 1500},
		VPCs: []datapath.VPC{
			{Tenant: "t1", Name: "v", VNI: uint32(2*i%datapath.MaxVNI + 1), Subnets: []datapath.Subnet{{Name: "a", CIDR: netip.MustParsePrefix("10.0.0.0/16")}}},
			{Tenant: "t2", Name: "v", VNI: uint32((2*i+1)%datapath.MaxVNI + 1), Subnets: []datapath.Subnet{{Name: "a", CIDR: netip.MustParsePrefix("10.0.0.0/16")}}},
		},
	}
	for j := range 10 {
		v := d.VPCs[j%2]
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(10 + j)})
		d.Endpoints = append(d.Endpoints, datapath.Endpoint{ID: fmt.Sprintf("%s/e%d-%d", v.Tenant, i, j), VNI: v.VNI, Subnet: "a", IP: ip,
			MAC: net.HardwareAddr{2, 0, 10, 0, byte(i >> 8), byte(10 + j)}})
	}
	return d
}

// TestMemoryPerDriver reports the heap cost of a driver holding a typical
// host (10 endpoints, 2 VPCs) and fails if 100,000 of them would not fit in
// 4 GiB.
func TestMemoryPerDriver(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 5,000 drivers")
	}
	const n = 5000
	states := make([]*datapath.Desired, n)
	for i := range states {
		states[i] = hostState(i)
	}
	drivers := make([]*sim.Driver, n)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range drivers {
		drivers[i] = sim.New(sim.Config{})
		if err := drivers[i].Set(t.Context(), states[i]); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (after.HeapAlloc - before.HeapAlloc) / n
	t.Logf("sim driver with 10 endpoints in 2 VPCs: %d bytes of heap each (%.1f MiB per 100,000)", per, float64(per)*100000/(1<<20))
	if per*100000 > 4<<30 {
		t.Errorf("%d bytes per driver: 100,000 drivers would need more than 4 GiB", per)
	}
	runtime.KeepAlive(drivers)
	runtime.KeepAlive(states)
}

func BenchmarkSetUnchanged(b *testing.B) {
	d := sim.New(sim.Config{})
	defer d.Close()
	st := hostState(1)
	if err := d.Set(b.Context(), st); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := d.Set(b.Context(), st); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolveLearned(b *testing.B) {
	d := sim.New(sim.Config{})
	defer d.Close()
	st := hostState(1)
	if err := d.Set(b.Context(), st); err != nil {
		b.Fatal(err)
	}
	dst := netip.MustParseAddr("10.0.9.9")
	if err := d.Learn(b.Context(), []datapath.Remote{{VNI: st.VPCs[0].VNI, IP: dst, HostUnderlay: netip.MustParseAddr("10.9.9.9"), Epoch: 1}}); err != nil {
		b.Fatal(err)
	}
	src := st.Endpoints[0].ID
	for b.Loop() {
		if dec, err := d.Resolve(src, dst); err != nil || dec.Verdict != sim.VerdictRemote {
			b.Fatal(dec, err)
		}
	}
}

// TestComparedFields: Set's no-op check (and the endpoint diff) compare
// these types field by field; a new field must be compared too.
func TestComparedFields(t *testing.T) {
	for _, c := range []struct {
		v    any
		want int
	}{{datapath.Desired{}, 3}, {datapath.VPC{}, 5}, {datapath.Endpoint{}, 11}} {
		if n := reflect.TypeOf(c.v).NumField(); n != c.want {
			t.Errorf("%T has %d fields, the sim driver compares %d: update Driver.programmed and sameEndpoint", c.v, n, c.want)
		}
	}
}

// TestSetSameStateNoop: a Set of the state programmed changes nothing, and
// a Set of a changed one still does.
func TestSetSameStateNoop(t *testing.T) {
	d := sim.New(sim.Config{})
	defer d.Close()
	ctx := t.Context()
	want, err := desired().Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	before := d.Counts()
	if err := d.Set(ctx, want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, d.Counts()); diff != "" {
		t.Errorf("a Set of the same state wrote (-before +after):\n%s", diff)
	}
	changed := desired()
	changed.Endpoints[0].Identity = 6
	if err := d.Set(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if got := d.Counts()["endpoint/update"]; got != 1 {
		t.Errorf("endpoint/update = %d after a changed Set, want 1", got)
	}
}

// TestNormalized: a driver told its input is normalized ends in the same
// state as one that normalizes it, also when the input is not sorted.
func TestNormalized(t *testing.T) {
	ctx := t.Context()
	norm, err := desired().Normalize()
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*datapath.Desired{"normalized": norm, "unsorted": desired()} {
		t.Run(name, func(t *testing.T) {
			plain, trusting := sim.New(sim.Config{}), sim.New(sim.Config{Normalized: true})
			defer plain.Close()
			defer trusting.Close()
			for _, d := range []*sim.Driver{plain, trusting} {
				if err := d.Set(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(plain.State(), trusting.State()); diff != "" {
				t.Errorf("state (-normalizing +trusting):\n%s", diff)
			}
			if diff := cmp.Diff(plain.Counts(), trusting.Counts()); diff != "" {
				t.Errorf("counts (-normalizing +trusting):\n%s", diff)
			}
		})
	}
}
