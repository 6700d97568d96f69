package liveness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// fakeRegistry is a HostSource and StatusWriter in memory: hosts h001,
// h002 … with host IDs 1, 2 …, each with endpoints h001-0, h001-1 …,
// Ready. It records every status write it makes as "Host h001 Dead" or
// "Endpoint h001-0 Lost".
type fakeRegistry struct {
	mu     sync.Mutex
	hosts  map[string]*apiv1.Host
	eps    map[string]*apiv1.Endpoint
	byHost map[string][]string
	writes []string
	// failEndpoints fails the next n endpoint writes.
	failEndpoints int
}

func newFakeRegistry(hosts, epsPerHost int) *fakeRegistry {
	f := &fakeRegistry{hosts: map[string]*apiv1.Host{}, eps: map[string]*apiv1.Endpoint{}, byHost: map[string][]string{}}
	for i := 1; i <= hosts; i++ {
		h := hostName(uint32(i))
		f.hosts[h] = &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: h},
			Status: apiv1.HostStatus{HostID: uint32(i)}}
		for j := range epsPerHost {
			name := fmt.Sprintf("%s-%d", h, j)
			f.eps[name] = &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "acme"},
				Spec: apiv1.EndpointSpec{Host: h}, Status: apiv1.EndpointStatus{Phase: apiv1.PhaseReady}}
			f.byHost[h] = append(f.byHost[h], name)
		}
	}
	return f
}

func hostName(id uint32) string { return fmt.Sprintf("h%03d", id) }

func (f *fakeRegistry) List(kind, _ string) []apiv1.Object {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []apiv1.Object
	if kind == apiv1.KindHost {
		for _, h := range f.hosts {
			out = append(out, h)
		}
	}
	return out
}

func (f *fakeRegistry) Get(kind, _, name string) (apiv1.Object, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch kind {
	case apiv1.KindHost:
		h, ok := f.hosts[name]
		return h, ok
	case apiv1.KindEndpoint:
		ep, ok := f.eps[name]
		return ep, ok
	}
	return nil, false
}

func (f *fakeRegistry) EndpointsByHost(host string) []*apiv1.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*apiv1.Endpoint
	for _, name := range f.byHost[host] {
		out = append(out, f.eps[name])
	}
	return out
}

func (f *fakeRegistry) PatchStatus(_ context.Context, ref apiv1.Ref, patch func(next apiv1.Object) bool) (apiv1.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch ref.Kind {
	case apiv1.KindHost:
		old, ok := f.hosts[ref.Name]
		if !ok {
			return nil, apiv1.NewNotFound(ref)
		}
		next := *old
		if !patch(&next) {
			return old, nil
		}
		f.hosts[ref.Name] = &next
		f.writes = append(f.writes, "Host "+ref.Name+" "+next.Status.Liveness)
		return &next, nil
	case apiv1.KindEndpoint:
		old, ok := f.eps[ref.Name]
		if !ok {
			return nil, apiv1.NewNotFound(ref)
		}
		if f.failEndpoints > 0 {
			f.failEndpoints--
			return nil, errors.New("etcd is down")
		}
		next := *old
		if !patch(&next) {
			return old, nil
		}
		f.eps[ref.Name] = &next
		f.writes = append(f.writes, "Endpoint "+ref.Name+" "+next.Status.Phase)
		return &next, nil
	}
	return nil, apiv1.NewNotFound(ref)
}

// setEndpoint sets an endpoint's status, as an agent would.
func (f *fakeRegistry) setEndpoint(name, phase, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := *f.eps[name]
	next.Status.Phase, next.Status.Message = phase, msg
	f.eps[name] = &next
}

// fakeQueue is a HostStatusQueue that records "h001 Dead lastSeen".
type fakeQueue struct {
	mu  sync.Mutex
	got []string
}

func (q *fakeQueue) QueueLiveness(host, liveness string, lastSeen time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	line := host + " " + liveness
	if !lastSeen.IsZero() {
		line += " lastSeen"
	}
	q.got = append(q.got, line)
}

var (
	_ HostSource      = (*fakeRegistry)(nil)
	_ StatusWriter    = (*fakeRegistry)(nil)
	_ HostStatusQueue = (*fakeQueue)(nil)
	_ BatchSink       = (*RegistrySink)(nil)
)

// guardEnv is a table on a fake clock whose sink is a RegistrySink on a
// fakeRegistry.
type guardEnv struct {
	t    *testing.T
	reg  *fakeRegistry
	sink *RegistrySink
	tab  *Table
	now  time.Duration
}

func newGuardEnv(t *testing.T, hosts, epsPerHost int, cfg RegistrySinkConfig) *guardEnv {
	t.Helper()
	e := &guardEnv{t: t, reg: newFakeRegistry(hosts, epsPerHost)}
	cfg.Store, cfg.Registry = e.reg, e.reg
	var err error
	if e.sink, err = NewRegistrySink(cfg); err != nil {
		t.Fatal(err)
	}
	e.tab, err = New(Config{Capacity: hosts + 1, Sink: e.sink, Now: func() int64 { return int64(e.now) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.tab.Close() })
	return e
}

// run advances the clock to until by 250 ms sweeps, every host but the
// silent ones heartbeating before each, and flushes every 500 ms.
func (e *guardEnv) run(until time.Duration, silent func(id uint32) bool) {
	e.t.Helper()
	for e.now < until {
		e.now += 250 * ms
		for id := uint32(1); int(id) < e.tab.Capacity(); id++ {
			if silent == nil || !silent(id) {
				e.tab.Observe(id, int64(e.now), 1, 0)
			}
		}
		e.tab.Sweep(int64(e.now))
		if e.now%(500*ms) == 0 {
			if err := e.tab.Flush(context.Background()); err != nil {
				e.t.Logf("t=%v: %v", e.now, err)
			}
		}
	}
}

// ids returns a predicate true for host IDs from..to.
func ids(from, to uint32) func(uint32) bool {
	return func(id uint32) bool { return id >= from && id <= to }
}

// guardState is what the tests compare: the stored state and the metrics.
type guardState struct {
	Liveness      map[string]int // hosts per stored liveness
	Lost          int            // endpoints Lost because their host is dead
	HostWrites    int
	SuspectWrites int
	Disrupted     float64
	Deferred      map[string]float64 // by reason
	Pending       float64
}

// value returns a gauge's or a counter's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

func (e *guardEnv) state() guardState {
	f := e.reg
	f.mu.Lock()
	defer f.mu.Unlock()
	s := guardState{Liveness: map[string]int{}, Deferred: map[string]float64{}}
	for _, h := range f.hosts {
		s.Liveness[h.Status.Liveness]++
	}
	for _, ep := range f.eps {
		if ep.Status.Phase == apiv1.PhaseLost && ep.Status.Message == DeadMessage(ep.Spec.Host) {
			s.Lost++
		}
	}
	for _, w := range f.writes {
		if strings.HasPrefix(w, "Host ") {
			s.HostWrites++
			if strings.HasSuffix(w, " "+apiv1.LivenessSuspect) {
				s.SuspectWrites++
			}
		}
	}
	m := e.sink.m
	s.Disrupted = value(e.t, m.disrupted)
	for _, r := range []string{"disruption", "rate"} {
		if v := value(e.t, m.deferred.WithLabelValues(r)); v != 0 {
			s.Deferred[r] = v
		}
	}
	s.Pending = value(e.t, m.marksPending)
	return s
}

// TestDisruptionGuard replays scenarios of hosts going silent on a fake
// clock and compares, after each step, the stored statuses and the sink's
// metrics. Hosts silent from t=2s are Suspect at 3.75s (flushed at 4s) and
// Dead at 4.75s (flushed at 5s).
func TestDisruptionGuard(t *testing.T) {
	type step struct {
		name   string
		until  time.Duration
		silent func(uint32) bool
		want   guardState
	}
	alive := func(n int) map[string]int { return map[string]int{apiv1.LivenessAlive: n} }
	none := map[string]float64{}
	for _, tc := range []struct {
		name              string
		hosts, epsPerHost int
		cfg               RegistrySinkConfig
		steps             []step
	}{{
		name: "one dead host among many: marked at once", hosts: 100, epsPerHost: 2,
		steps: []step{
			{"all alive", 2 * time.Second, nil, guardState{Liveness: alive(100), HostWrites: 100, Deferred: none}},
			{"h001 dead", 6 * time.Second, ids(1, 1), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 99, apiv1.LivenessDead: 1}, Lost: 2,
				HostWrites: 102, SuspectWrites: 1, Deferred: none}},
		},
	}, {
		name: "60% dead at once: no endpoint marked until the disruption ends", hosts: 100, epsPerHost: 2,
		steps: []step{
			{"all alive", 2 * time.Second, nil, guardState{Liveness: alive(100), HostWrites: 100, Deferred: none}},
			{"60 dead", 6 * time.Second, ids(1, 60), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 40, apiv1.LivenessDead: 60}, HostWrites: 160,
				Disrupted: 1, Deferred: map[string]float64{"disruption": 60}, Pending: 60}},
			{"50 back, within the hold", 8 * time.Second, ids(1, 10), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 90, apiv1.LivenessDead: 10}, HostWrites: 210,
				Disrupted: 1, Deferred: map[string]float64{"disruption": 60}, Pending: 10}},
			{"hold over: the 10 still dead are marked", 17 * time.Second, ids(1, 10), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 90, apiv1.LivenessDead: 10}, Lost: 20, HostWrites: 210,
				Deferred: map[string]float64{"disruption": 60}}},
		},
	}, {
		name: "60% late but back before dead: nothing written", hosts: 100, epsPerHost: 2,
		steps: []step{
			{"all alive", 2 * time.Second, nil, guardState{Liveness: alive(100), HostWrites: 100, Deferred: none}},
			{"60 suspect", 4 * time.Second, ids(1, 60), guardState{Liveness: alive(100), HostWrites: 100,
				Disrupted: 1, Deferred: none}},
			{"back", 6 * time.Second, nil, guardState{Liveness: alive(100), HostWrites: 100, Disrupted: 1, Deferred: none}},
			{"hold over", 15 * time.Second, nil, guardState{Liveness: alive(100), HostWrites: 100, Deferred: none}},
			{"Suspect written again after the disruption", 19 * time.Second, ids(1, 1), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 99, apiv1.LivenessDead: 1}, Lost: 2,
				HostWrites: 102, SuspectWrites: 1, Deferred: none}},
		},
	}, {
		name: "40% dead, below the threshold: marked at MarkRate", hosts: 100, epsPerHost: 10,
		cfg: RegistrySinkConfig{MarkRate: 100, MarkBurst: 100},
		steps: []step{
			{"all alive", 2 * time.Second, nil, guardState{Liveness: alive(100), HostWrites: 100, Deferred: none}},
			{"40 dead: a burst of 10 hosts", 5 * time.Second, ids(1, 40), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 60, apiv1.LivenessDead: 40}, Lost: 100,
				HostWrites: 180, SuspectWrites: 40, Deferred: map[string]float64{"rate": 30}, Pending: 30}},
			{"one second later: 10 more", 6 * time.Second, ids(1, 40), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 60, apiv1.LivenessDead: 40}, Lost: 200,
				HostWrites: 180, SuspectWrites: 40, Deferred: map[string]float64{"rate": 30}, Pending: 20}},
			{"the rest", 8 * time.Second, ids(1, 40), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 60, apiv1.LivenessDead: 40}, Lost: 400,
				HostWrites: 180, SuspectWrites: 40, Deferred: map[string]float64{"rate": 30}}},
		},
	}, {
		name: "small lab below DisruptionMinHosts: all marked", hosts: 10, epsPerHost: 2,
		steps: []step{
			{"all alive", 2 * time.Second, nil, guardState{Liveness: alive(10), HostWrites: 10, Deferred: none}},
			{"all dead", 6 * time.Second, ids(1, 10), guardState{Liveness: map[string]int{apiv1.LivenessDead: 10},
				Lost: 20, HostWrites: 30, SuspectWrites: 10, Deferred: none}},
		},
	}, {
		name: "guard off: all marked", hosts: 100, epsPerHost: 2, cfg: RegistrySinkConfig{DisruptionThreshold: -1},
		steps: []step{
			{"all alive", 2 * time.Second, nil, guardState{Liveness: alive(100), HostWrites: 100, Deferred: none}},
			{"60 dead", 6 * time.Second, ids(1, 60), guardState{
				Liveness: map[string]int{apiv1.LivenessAlive: 40, apiv1.LivenessDead: 60}, Lost: 120,
				HostWrites: 220, SuspectWrites: 60, Deferred: none}},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newGuardEnv(t, tc.hosts, tc.epsPerHost, tc.cfg)
			for _, st := range tc.steps {
				e.run(st.until, st.silent)
				if diff := cmp.Diff(st.want, e.state()); diff != "" {
					t.Fatalf("after %q (t=%v) (-want +got):\n%s", st.name, e.now, diff)
				}
			}
		})
	}
}

// TestDisruptionKeepsOtherLost: an endpoint Lost for another reason, or
// marked Lost before the disruption, keeps its state; those of a host back
// during the disruption were never touched.
func TestDisruptionKeepsOtherLost(t *testing.T) {
	e := newGuardEnv(t, 100, 1, RegistrySinkConfig{})
	e.reg.setEndpoint("h002-0", apiv1.PhaseLost, "evicted")
	e.run(2*time.Second, nil)
	e.run(6*time.Second, ids(1, 1)) // h001 dead alone: marked
	e.run(12*time.Second, ids(1, 60))
	e.run(30*time.Second, ids(1, 3)) // h004..h060 back; h001..h003 still dead
	phases := map[string]string{}
	for _, name := range []string{"h001-0", "h002-0", "h003-0", "h004-0"} {
		o, _ := e.reg.Get(apiv1.KindEndpoint, "acme", name)
		ep := o.(*apiv1.Endpoint)
		phases[name] = ep.Status.Phase + " " + ep.Status.Message
	}
	want := map[string]string{
		"h001-0": "Lost " + DeadMessage("h001"), "h002-0": "Lost evicted",
		"h003-0": "Lost " + DeadMessage("h003"), "h004-0": "Ready ",
	}
	if diff := cmp.Diff(want, phases); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	var h004 []string
	for _, w := range e.reg.writes {
		if strings.HasPrefix(w, "Endpoint h004") {
			h004 = append(h004, w)
		}
	}
	if len(h004) != 0 {
		t.Errorf("writes of h004's endpoint, back during the disruption: %q", h004)
	}
}

// TestMarkRetries: a dead host's marking that fails is tried again at
// the next flushes, also when no transition brings the host back (at the
// end of a disruption), and given up after maxMarkAttempts.
func TestMarkRetries(t *testing.T) {
	for _, tc := range []struct {
		name         string
		hosts        int
		before       func(e *guardEnv) // until the failures start
		failures     int
		after        func(e *guardEnv)
		wantLost     int
		wantAttempts int // failed writes
	}{{
		name: "dies alone, fails twice", hosts: 10, failures: 2, wantLost: 1, wantAttempts: 2,
		before: func(e *guardEnv) { e.run(2*time.Second, nil) },
		after:  func(e *guardEnv) { e.run(10*time.Second, ids(1, 1)) },
	}, {
		name: "dies alone, fails always", hosts: 10, failures: 1000, wantLost: 0, wantAttempts: maxMarkAttempts,
		before: func(e *guardEnv) { e.run(2*time.Second, nil) },
		after:  func(e *guardEnv) { e.run(10*time.Second, ids(1, 1)) },
	}, {
		name: "still dead at the end of a disruption, fails twice", hosts: 100, failures: 2, wantLost: 10, wantAttempts: 2,
		before: func(e *guardEnv) {
			e.run(2*time.Second, nil)
			e.run(6*time.Second, ids(1, 60))
			e.run(16*time.Second, ids(1, 10)) // the disruption ends at 16.5 s
		},
		after: func(e *guardEnv) { e.run(20*time.Second, ids(1, 10)) },
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newGuardEnv(t, tc.hosts, 1, RegistrySinkConfig{})
			tc.before(e)
			e.reg.mu.Lock()
			e.reg.failEndpoints = tc.failures
			e.reg.mu.Unlock()
			tc.after(e)
			got := e.state()
			attempts := tc.failures - e.reg.failEndpoints
			if got.Lost != tc.wantLost || got.Pending != 0 || attempts != tc.wantAttempts {
				t.Errorf("Lost %d, pending %v, failed writes %d; want %d, 0, %d", got.Lost, got.Pending, attempts, tc.wantLost, tc.wantAttempts)
			}
		})
	}
}

// TestHostStatusQueue: with RegistrySinkConfig.Hosts, host liveness goes to
// the queue and no host status is written; endpoints are written either way.
func TestHostStatusQueue(t *testing.T) {
	for _, tc := range []struct {
		name       string
		queue      bool
		wantQueued []string
		wantWrites []string
	}{{
		name: "written", queue: false,
		wantWrites: []string{
			"Endpoint h001-0 Lost", "Endpoint h001-0 Ready",
			"Host h001 Alive", "Host h001 Alive", "Host h001 Dead", "Host h001 Suspect", "Host h002 Alive", "Host h003 Alive",
		},
	}, {
		name: "queued", queue: true,
		wantQueued: []string{
			"h001 Alive lastSeen", "h002 Alive lastSeen", "h003 Alive lastSeen",
			"h001 Suspect lastSeen", "h001 Dead lastSeen", "h001 Alive lastSeen",
		},
		wantWrites: []string{"Endpoint h001-0 Lost", "Endpoint h001-0 Ready"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg RegistrySinkConfig
			q := &fakeQueue{}
			if tc.queue {
				cfg.Hosts = q
			}
			e := newGuardEnv(t, 3, 1, cfg)
			e.run(time.Second, nil)
			e.run(5*time.Second, ids(1, 1))
			e.run(6*time.Second, nil)
			writes := append([]string(nil), e.reg.writes...)
			sort.Strings(writes)
			if diff := cmp.Diff(tc.wantWrites, writes); diff != "" {
				t.Errorf("status writes (-want +got):\n%s", diff)
			}
			// In order: the table hands each batch sorted by host ID.
			got, want := q.got, tc.wantQueued
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("queued (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRegistrySinkConfigValidate(t *testing.T) {
	base := RegistrySinkConfig{Store: newFakeRegistry(0, 0), Registry: newFakeRegistry(0, 0)}
	for _, tc := range []struct {
		name string
		mod  func(*RegistrySinkConfig)
		ok   bool
	}{
		{"defaults", func(*RegistrySinkConfig) {}, true},
		{"no store", func(c *RegistrySinkConfig) { c.Store = nil }, false},
		{"guard off", func(c *RegistrySinkConfig) { c.DisruptionThreshold = -1 }, true},
		{"threshold above 1", func(c *RegistrySinkConfig) { c.DisruptionThreshold = 1.5 }, false},
		{"threshold NaN", func(c *RegistrySinkConfig) { c.DisruptionThreshold = math.NaN() }, false},
		{"threshold 1", func(c *RegistrySinkConfig) { c.DisruptionThreshold = 1 }, true},
		{"negative min hosts", func(c *RegistrySinkConfig) { c.DisruptionMinHosts = -1 }, false},
		{"negative hold", func(c *RegistrySinkConfig) { c.DisruptionHold = -time.Second }, false},
		{"no rate limit", func(c *RegistrySinkConfig) { c.MarkRate = -1 }, true},
		{"infinite rate", func(c *RegistrySinkConfig) { c.MarkRate = math.Inf(1) }, false},
		{"negative burst", func(c *RegistrySinkConfig) { c.MarkBurst = -1 }, false},
		{"negative concurrency", func(c *RegistrySinkConfig) { c.Concurrency = -1 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			err := c.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tc.ok)
			}
			if _, nerr := NewRegistrySink(c); (nerr == nil) != (err == nil) {
				t.Errorf("NewRegistrySink error %v, Validate %v", nerr, err)
			}
		})
	}
}

// TestDisruptionLogs: a disruption's start and end are logged at Warn with
// the counts.
func TestDisruptionLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	e := newGuardEnv(t, 100, 1, RegistrySinkConfig{Logger: log})
	e.run(2*time.Second, nil)
	e.run(6*time.Second, ids(1, 60))
	e.run(17*time.Second, ids(1, 10))
	want := []string{
		`level=WARN msg="mass disruption: endpoints of dead hosts are not marked Lost until it ends" subsystem=liveness-sink alive=40 suspect=60 dead=0 share=0.60 threshold=0.55`,
		`level=WARN msg="mass disruption over: marking the endpoints of hosts still dead" subsystem=liveness-sink lasted=12.5s deferredHosts=60 hostsToMark=10 suspectNotWritten=60 alive=90 suspect=0 dead=10 share=0.10`,
	}
	if diff := cmp.Diff(want, strings.Split(strings.TrimSpace(buf.String()), "\n")); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
}
