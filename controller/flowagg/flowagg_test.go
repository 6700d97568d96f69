package flowagg_test

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/flowagg"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStore holds two tenants with the same addresses in their VPCs.
type fakeStore struct {
	mu     sync.Mutex
	events chan store.Event
}

func vpc(tenant string, vni uint32) *apiv1.VPC {
	v := &apiv1.VPC{Metadata: apiv1.ObjectMeta{Tenant: tenant, Name: "main"}}
	v.Status.VNI = vni
	return v
}

func ep(tenant, name, ip string, vni uint32) *apiv1.Endpoint {
	e := &apiv1.Endpoint{Metadata: apiv1.ObjectMeta{Tenant: tenant, Name: name}}
	e.Status.IP, e.Status.VNI = ip, vni
	return e
}

func (s *fakeStore) List(kind, tenant string) []apiv1.Object {
	var all []apiv1.Object
	switch kind {
	case apiv1.KindVPC:
		all = []apiv1.Object{vpc("acme", 100), vpc("zeta", 200)}
	case apiv1.KindEndpoint:
		all = []apiv1.Object{ep("acme", "web", "10.0.1.10", 100), ep("acme", "db", "10.0.1.20", 100),
			ep("zeta", "web", "10.0.1.10", 200), ep("zeta", "db", "10.0.1.20", 200)}
	}
	var out []apiv1.Object
	for _, o := range all {
		if tenant == "" || o.GetObjectMeta().Tenant == tenant {
			out = append(out, o)
		}
	}
	return out
}

func (s *fakeStore) ListSelector(kind, tenant string, _ func(map[string]string) bool) ([]apiv1.Object, int64) {
	return s.List(kind, tenant), 1
}

func (s *fakeStore) Watch(ctx context.Context, _, _ string, _ int64) (<-chan store.Event, error) {
	out := make(chan store.Event)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-s.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newAgg(t *testing.T) (*flowagg.Aggregator, *prometheus.Registry, *fakeStore, *clock) {
	t.Helper()
	st := &fakeStore{events: make(chan store.Event)}
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	a, err := flowagg.New(flowagg.Config{Store: st, Registerer: reg, Now: clk.now, Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a, reg, st, clk
}

var (
	web, db = netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.20")
)

func flow(vni uint32, sport uint16, bytes uint64) wire.FlowEntry {
	return wire.FlowEntry{VNI: vni, Src: web, Dst: db, Proto: 6, SrcPort: sport, DstPort: 5432, Bytes: bytes, Packets: bytes / 1000, DurationMs: 2000}
}

// TestTopTalkersTenantScoped: two tenants with the same addresses; each
// sees only the flows of its own VPC, with its own endpoints' names; a
// flow reported by both its hosts counts once; the endpoint filter.
func TestTopTalkersTenantScoped(t *testing.T) {
	a, _, _, _ := newAgg(t)
	// Host 1 (the sender's) and host 2 (the receiver's) report acme's flow.
	a.Report(1, &wire.FlowReport{Sampling: 4, Flows: []wire.FlowEntry{flow(100, 40000, 9000), flow(200, 41000, 500000)}})
	a.Report(2, &wire.FlowReport{Sampling: 4, Flows: []wire.FlowEntry{flow(100, 40000, 9000)}})
	a.Report(1, &wire.FlowReport{Sampling: 4, Flows: []wire.FlowEntry{flow(100, 40000, 1000), flow(100, 40001, 3000)}})
	drop := flow(100, 40002, 2000)
	drop.Dropped, drop.Reason = 2, 1
	a.Report(2, &wire.FlowReport{Sampling: 4, Flows: []wire.FlowEntry{drop}})

	tests := []struct {
		name string
		q    flowagg.Query
		want []string
	}{
		{"acme, all", flowagg.Query{Tenant: "acme"}, []string{
			"web 10.0.1.10:40000 > db 10.0.1.20:5432 tcp 10000 allow", "web 10.0.1.10:40001 > db 10.0.1.20:5432 tcp 3000 allow",
			"web 10.0.1.10:40002 > db 10.0.1.20:5432 tcp 2000 drop policy"}},
		{"acme, top 1", flowagg.Query{Tenant: "acme", Top: 1}, []string{"web 10.0.1.10:40000 > db 10.0.1.20:5432 tcp 10000 allow"}},
		{"zeta sees only its own", flowagg.Query{Tenant: "zeta"}, []string{"web 10.0.1.10:41000 > db 10.0.1.20:5432 tcp 500000 allow"}},
		{"zeta, its endpoint", flowagg.Query{Tenant: "zeta", Endpoint: "db"}, []string{"web 10.0.1.10:41000 > db 10.0.1.20:5432 tcp 500000 allow"}},
		{"a tenant without flows", flowagg.Query{Tenant: "other"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := a.Top(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range out.Items {
				s := f.SrcEndpoint + " " + f.Src + ":" + itoa(f.SrcPort) + " > " + f.DstEndpoint + " " + f.Dst + ":" + itoa(f.DstPort) + " " + f.Proto + " " + itoa(f.Bytes) + " " + f.Verdict
				if f.Reason != "" {
					s += " " + f.Reason
				}
				got = append(got, s)
				if f.Sampling != 4 || f.VPC != "main" || f.Duration == "" {
					t.Errorf("flow %+v: want sampling 4, vpc main, a duration", f)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("top talkers (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := a.Top(flowagg.Query{Tenant: "zeta", Endpoint: "nope"}); err == nil {
		t.Error("a query for an endpoint the tenant does not have succeeded")
	}
}

func itoa[T uint16 | uint64](v T) string { return strconv.FormatUint(uint64(v), 10) }

// TestMetrics: per-VPC totals summed over hosts and reports, heartbeat
// loss per host, programming latency from a revision to an Ack.
func TestMetrics(t *testing.T) {
	a, reg, st, clk := newAgg(t)
	for h := uint32(1); h <= 2; h++ {
		a.Report(h, &wire.FlowReport{HeartbeatsSent: 10, VPCs: []wire.VPCCounters{{VNI: 100, SentPackets: 5, SentBytes: 500, Drops: [wire.NumDropCounters]uint64{1}}}})
	}
	// Host 1 sends 10 more heartbeats and all arrive; host 2's half do.
	for range 10 {
		a.Heartbeat(1)
	}
	for range 5 {
		a.Heartbeat(2)
	}
	a.Report(1, &wire.FlowReport{HeartbeatsSent: 20, VPCs: []wire.VPCCounters{{VNI: 100, SentPackets: 1, SentBytes: 100}}})
	a.Report(2, &wire.FlowReport{HeartbeatsSent: 20})

	want := `
# HELP weft_vpc_bytes_total Bytes of a VPC's endpoints, all hosts, by direction.
# TYPE weft_vpc_bytes_total counter
weft_vpc_bytes_total{direction="received",tenant="acme",vpc="main"} 0
weft_vpc_bytes_total{direction="sent",tenant="acme",vpc="main"} 1100
# HELP weft_southbound_heartbeats_lost_total Heartbeats agents sent that this replica did not receive (counted at each agent's flow report).
# TYPE weft_southbound_heartbeats_lost_total counter
weft_southbound_heartbeats_lost_total 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weft_vpc_bytes_total", "weft_southbound_heartbeats_lost_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "weft_vpc_drops_total"); n != 6 {
		t.Errorf("%d drop series, want 6 (one per reason)", n)
	}

	// A write at revision 42, seen now; the agent acks its view 40 ms later.
	st.events <- store.Event{Revision: 42}
	st.events <- store.Event{Revision: 43}
	st.events <- store.Event{Revision: 44} // taken: 43 was received, so 42 is recorded
	clk.add(40 * time.Millisecond)
	sink := a.WrapStatus(nopSink{})
	const epoch = uint64(3) << 44
	sink.Acked("h1", epoch|42, "")
	sink.Acked("h1", epoch|42, "") // the same version again: not observed twice
	sink.Acked("h2", epoch|42, "program failed")
	sink.Acked("h3", epoch|7, "") // a revision not seen lately
	h, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range h {
		if mf.GetName() == "weft_southbound_programming_seconds" {
			hs := mf.GetMetric()[0].GetHistogram()
			if hs.GetSampleCount() != 1 || hs.GetSampleSum() < 0.039 || hs.GetSampleSum() > 0.041 {
				t.Errorf("programming latency: %d samples, sum %v; want one of 40 ms", hs.GetSampleCount(), hs.GetSampleSum())
			}
		}
	}
}

type nopSink struct{}

func (nopSink) Connected(string, string)      {}
func (nopSink) Acked(string, uint64, string)  {}
func (nopSink) Nacked(string, uint64, string) {}
func (nopSink) Disconnected(string)           {}
