package agent

import (
	"context"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
	want := []EndpointReport{{ID: "acme/web", Phase: PhaseFailed, Message: "program datapath: injected failure"}}
	if diff := cmp.Diff(want, reps[0]); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
}

// TestUDPFollowsStream: with UDPFollowsStream, heartbeats go to the UDP
// port of the replica whose config stream the agent is connected to, not
// to the configured UDPAddr.
func TestUDPFollowsStream(t *testing.T) {
	var onStreamPort *fakeUDP
	h := newHarness(t, func(c *Config) {
		c.HeartbeatInterval = 5 * time.Millisecond
		c.UDPFollowsStream = true
		_, port, err := net.SplitHostPort(c.StreamAddrs[0])
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(port)
		onStreamPort = newFakeUDPOn(t, testKey(t.Name()), testHostID, n)
	})
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
