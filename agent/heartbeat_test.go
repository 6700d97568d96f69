package agent

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// TestHeartbeats: once the host has an ID, heartbeats arrive every
// HeartbeatInterval, authenticated with the host key (the fake controller
// verifies every datagram), with increasing sequence numbers, the view
// version applied, the endpoint count and health flags.
func TestHeartbeats(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HeartbeatInterval = 5 * time.Millisecond })
	s := h.connect(t)
	// Wait for a heartbeat that reports the applied view.
	var hb *wire.Heartbeat
	var seqs []uint64
	for hb == nil || hb.ViewVersion != 1 {
		d := next(t, h.udp.heartbeats, "heartbeat")
		if d.hdr.HostID != testHostID {
			t.Fatalf("heartbeat from host ID %d, want %d", d.hdr.HostID, testHostID)
		}
		seqs = append(seqs, d.hdr.Seq)
		hb = d.body.(*wire.Heartbeat)
	}
	if hb.EndpointCount != 1 || hb.Health&wire.HealthReady == 0 || hb.Health&wire.HealthDegraded != 0 {
		t.Errorf("heartbeat %+v: want 1 endpoint, Ready, not Degraded", hb)
	}
	for range 3 {
		d := next(t, h.udp.heartbeats, "heartbeat")
		seqs = append(seqs, d.hdr.Seq)
	}
	if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
		t.Errorf("sequence numbers %v are not strictly increasing", seqs)
	}
	// The stream goes down: heartbeats say Headless, and keep coming.
	h.stream.setWelcome(func(*wire.Hello) *wire.Welcome { return &wire.Welcome{Error: "go away"} })
	s.conn.Close()
	waitFor(t, "a Headless heartbeat", func() bool {
		d := next(t, h.udp.heartbeats, "heartbeat")
		return d.body.(*wire.Heartbeat).Health&wire.HealthHeadless != 0
	})
}

// TestNoHeartbeatWithoutHostID: a host without an ID stays silent.
func TestNoHeartbeatWithoutHostID(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HeartbeatInterval = time.Millisecond })
	h.stream.setWelcome(func(*wire.Hello) *wire.Welcome { return &wire.Welcome{} })
	s := h.stream.accept(t)
	s.send(t, &wire.Delta{ToVersion: 1, Snapshot: true, Upserts: []wire.Resource{hostRes(t)}})
	if got := s.answer(t); got != "ack 1" {
		t.Fatalf("answer %q", got)
	}
	time.Sleep(10 * time.Millisecond) // ten heartbeat periods: lets a bug show, asserts no timing
	none(t, h.udp.heartbeats, "heartbeat without a host ID")
}

// recorder is a Reporter that records its calls.
type recorder struct {
	mu       sync.Mutex
	register []string
	reports  [][]EndpointReport
	fail     int // fail this many calls with a retryable error
	wake     chan struct{}
}

func (r *recorder) Register(_ context.Context, host, ip string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errInjected
	}
	r.register = append(r.register, host+" "+ip)
	return nil
}

func (r *recorder) ReportEndpoints(_ context.Context, reps []EndpointReport) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errInjected
	}
	r.reports = append(r.reports, slices.Clone(reps))
	return nil
}

func (r *recorder) snapshot() ([]string, [][]EndpointReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.register), slices.Clone(r.reports)
}

func sortReports(rs []EndpointReport) []EndpointReport {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b EndpointReport) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return rs
}

// TestReporter: the host is registered (retrying failures), and endpoint
// status is reported after Set, only when it changed.
func TestReporter(t *testing.T) {
	rec := &recorder{fail: 2}
	h := newHarness(t, func(c *Config) { c.Reporter = rec; c.UnderlayIP = mustAddr(underlay1) })
	s := h.connect(t)
	waitFor(t, "the first report", func() bool { _, r := rec.snapshot(); return len(r) == 1 })
	reg, reps := rec.snapshot()
	if diff := cmp.Diff([]string{"h1 192.0.2.11"}, reg); diff != "" {
		t.Errorf("registrations (-want +got):\n%s", diff)
	}
	want := []EndpointReport{{ID: "acme/web", Netns: "sim:/h1/acme/web", Phase: PhaseReady}}
	if diff := cmp.Diff(want, reps[0]); diff != "" {
		t.Errorf("first report (-want +got):\n%s", diff)
	}
	// A delta that leaves acme/web as it is and adds acme/db reports db only.
	s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}})
	if got := s.answer(t); got != "ack 2" {
		t.Fatalf("answer %q", got)
	}
	waitFor(t, "the second report", func() bool { _, r := rec.snapshot(); return len(r) == 2 })
	_, reps = rec.snapshot()
	want = []EndpointReport{{ID: "acme/db", Netns: "sim:/h1/acme/db", Phase: PhaseReady}}
	if diff := cmp.Diff(want, sortReports(reps[1])); diff != "" {
		t.Errorf("second report (-want +got):\n%s", diff)
	}
	if got := h.agent.Stats().ReportErrors; got != 2 {
		t.Errorf("ReportErrors = %d, want 2", got)
	}
}

// TestReporterFailedSet: endpoints the datapath could not program are
// reported Failed with the error.
func TestReporterFailedSet(t *testing.T) {
	rec := &recorder{}
	f := &flaky{Driver: newSim(t)}
	f.fail.Store(1 << 30) // every Set fails, the retries too
	h := newHarness(t, func(c *Config) {
		c.Reporter = rec
		c.Driver = f
	})
	s := h.stream.accept(t)
	s.send(t, baseSnapshot(t, 1))
	if got := s.answer(t); got != "ack 1: program datapath: injected failure" {
		t.Fatalf("answer %q", got)
	}
	waitFor(t, "the report", func() bool { _, r := rec.snapshot(); return len(r) == 1 })
	_, reps := rec.snapshot()
	const msg = "program datapath: injected failure"
	want := []EndpointReport{{ID: "acme/web", Phase: PhaseFailed, Message: msg, PolicyErr: msg, QoSErr: msg}}
	if diff := cmp.Diff(want, reps[0]); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
}

// qosRefuser is a driver whose Status says that the QoS of the endpoints
// of VNI refuse is not enforced.
type qosRefuser struct {
	datapath.Driver
	refuse uint32
	vnis   map[string]uint32
}

func (q *qosRefuser) Set(ctx context.Context, d *datapath.Desired) error {
	for _, e := range d.Endpoints {
		q.vnis[e.ID] = e.VNI
	}
	return q.Driver.Set(ctx, d)
}

func (q *qosRefuser) Status(id string) (datapath.EndpointStatus, bool) {
	st, ok := q.Driver.Status(id)
	if ok && q.vnis[id] == q.refuse {
		st.QoSErr = "vpc 200: injected"
	}
	return st, ok
}

// TestReporterConditions: reports carry the endpoint's generation from
// the view and the datapath's policy and QoS errors of the endpoint alone
// (another VPC's endpoints report none); a new generation is reported; an
// endpoint that leaves is reported Gone once.
func TestReporterConditions(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, func(c *Config) {
		c.Reporter = rec
		c.Driver = &qosRefuser{Driver: newSim(t), refuse: 200, vnis: map[string]uint32{}}
	})
	ep := func(tenant, name string, vni uint32, last byte, gen int64) wire.Resource {
		return mustRes(t, &view.Endpoint{Tenant: tenant, Name: name, VPC: "main", VNI: vni, Subnet: "a",
			IP: fmt.Sprintf("10.0.1.%d", last), MAC: fmt.Sprintf("02:00:0a:00:01:%02x", last), Generation: gen})
	}
	s := h.stream.accept(t)
	s.send(t, &wire.Delta{ToVersion: 1, Snapshot: true, Upserts: []wire.Resource{hostRes(t),
		vpcRes(t, "acme", 100), vpcRes(t, "globex", 200), ep("acme", "web", 100, 10, 3), ep("globex", "db", 200, 10, 1)}})
	if got := s.answer(t); got != "ack 1" {
		t.Fatalf("answer %q", got)
	}
	steps := []struct {
		name  string
		delta *wire.Delta
		want  []EndpointReport
	}{
		{name: "first", want: []EndpointReport{
			{ID: "acme/web", Netns: "sim:/h1/acme/web", Phase: PhaseReady, Generation: 3},
			{ID: "globex/db", Netns: "sim:/h1/globex/db", Phase: PhaseReady, Generation: 1, QoSErr: "vpc 200: injected"},
		}},
		{name: "a new generation", delta: &wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{ep("acme", "web", 100, 10, 4)}},
			want: []EndpointReport{{ID: "acme/web", Netns: "sim:/h1/acme/web", Phase: PhaseReady, Generation: 4}}},
		{name: "gone", delta: &wire.Delta{FromVersion: 2, ToVersion: 3, Deletes: []wire.ResourceKey{key("endpoint", "globex/db")}},
			want: []EndpointReport{{ID: "globex/db", Gone: true}}},
	}
	for i, st := range steps {
		if st.delta != nil {
			s.send(t, st.delta)
			if got, want := s.answer(t), fmt.Sprint("ack ", st.delta.ToVersion); got != want {
				t.Fatalf("%s: answer %q, want %q", st.name, got, want)
			}
		}
		waitFor(t, st.name+" report", func() bool { _, r := rec.snapshot(); return len(r) == i+1 })
		_, reps := rec.snapshot()
		if diff := cmp.Diff(st.want, sortReports(reps[i])); diff != "" {
			t.Errorf("%s report (-want +got):\n%s", st.name, diff)
		}
	}
}

// TestUDPFollowsStream: with UDPFollowsStream, heartbeats go to the UDP
// port of the replica whose config stream the agent is connected to, not
// to the configured UDPAddr.
func TestUDPFollowsStream(t *testing.T) {
	port := 0
	h := newHarness(t, func(c *Config) {
		c.HeartbeatInterval = 5 * time.Millisecond
		c.UDPFollowsStream = true
		_, p, err := net.SplitHostPort(c.StreamAddrs[0])
		if err != nil {
			t.Fatal(err)
		}
		port, _ = strconv.Atoi(p)
	})
	onStreamPort := newFakeUDPOn(t, h.stream, port)
	h.connect(t)
	d := next(t, onStreamPort.heartbeats, "heartbeat on the stream's port")
	if d.hdr.HostID != testHostID {
		t.Fatalf("heartbeat from host ID %d, want %d", d.hdr.HostID, testHostID)
	}
	// Once connected, nothing more goes to the configured address.
	for len(h.udp.heartbeats) > 0 {
		<-h.udp.heartbeats
	}
	next(t, onStreamPort.heartbeats, "second heartbeat on the stream's port")
	next(t, onStreamPort.heartbeats, "third heartbeat on the stream's port")
	none(t, h.udp.heartbeats, "heartbeat to the configured UDPAddr after connecting")
}

// TestReporterVPCContained: a VPC whose policy the datapath refuses fails
// alone: the other VPC's endpoint reports Ready with its policy and QoS
// programmed; the failed VPC's new endpoint reports Failed with that VPC's
// error, and Ready once the policy is fixed.
func TestReporterVPCContained(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, func(c *Config) { c.Reporter = rec })
	ep := func(tenant, name string, vni uint32) wire.Resource {
		return mustRes(t, &view.Endpoint{Tenant: tenant, Name: name, VPC: "main", VNI: vni, Subnet: "a",
			IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a", Generation: 1})
	}
	policy := func(tenant, applies string, identity uint32) wire.Resource {
		return mustRes(t, &view.Policy{Tenant: tenant, Name: "p", VPC: "main", IngressIsolated: true, Applies: []string{applies},
			Ingress: []view.Rule{{Name: tenant + "/p ingress[0]", Identities: []uint32{identity}}}})
	}
	s := h.stream.accept(t)
	s.send(t, &wire.Delta{ToVersion: 1, Snapshot: true, Upserts: []wire.Resource{hostRes(t),
		vpcRes(t, "acme", 100), vpcRes(t, "globex", 200), ep("acme", "web", 100), ep("globex", "db", 200),
		policy("acme", "acme/web", 7), policy("globex", "globex/db", 0)}})
	ack := s.answer(t)
	if !strings.HasPrefix(ack, "ack 1: ") || !strings.Contains(ack, "vpc 200") || strings.Contains(ack, "vpc 100") {
		t.Fatalf("answer %q, want an ack with VPC 200's error only", ack)
	}
	waitFor(t, "the first report", func() bool { _, r := rec.snapshot(); return len(r) == 1 })
	_, reps := rec.snapshot()
	got := sortReports(reps[0])
	if len(got) != 2 {
		t.Fatalf("reports %+v", got)
	}
	if want := (EndpointReport{ID: "acme/web", Netns: "sim:/h1/acme/web", Phase: PhaseReady, Generation: 1}); got[0] != want {
		t.Errorf("acme/web: %+v, want %+v", got[0], want)
	}
	if db := got[1]; db.Phase != PhaseFailed || !strings.HasPrefix(db.Message, "vpc 200: ") || !strings.Contains(db.Message, "identity 0") ||
		db.PolicyErr != db.Message || db.QoSErr != db.Message {
		t.Errorf("globex/db: %+v, want Failed with VPC 200's error", db)
	}
	s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{policy("globex", "globex/db", 9)}})
	if got := s.answer(t); got != "ack 2" {
		t.Fatalf("answer %q after the fix", got)
	}
	waitFor(t, "the report after the fix", func() bool { _, r := rec.snapshot(); return len(r) == 2 })
	_, reps = rec.snapshot()
	want := []EndpointReport{{ID: "globex/db", Netns: "sim:/h1/globex/db", Phase: PhaseReady, Generation: 1}}
	if diff := cmp.Diff(want, reps[1]); diff != "" {
		t.Errorf("report after the fix (-want +got):\n%s", diff)
	}
}
