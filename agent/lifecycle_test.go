package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// TestHeadlessRestart: an agent that restarts while no controller answers
// programs its data plane from the view it persisted.
func TestHeadlessRestart(t *testing.T) {
	h := newHarness(t)
	s := h.connect(t)
	s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}})
	if got := s.answer(t); got != "ack 2" {
		t.Fatalf("delta answered %q", got)
	}
	want := h.drv.State()
	if err := h.agent.Close(); err != nil {
		t.Fatal(err)
	}
	// Close leaves the data plane programmed.
	if diff := cmp.Diff(lines(want), lines(h.drv.State())); diff != "" {
		t.Errorf("data plane after Close (-before +after):\n%s", diff)
	}
	h.stream.close() // no controller any more

	drv2 := newSim(t)
	a2 := startAgent(t, Config{
		Host: testHost, StreamAddrs: []string{h.stream.addr()}, UDPAddr: h.udp.addr(), Key: h.raw,
		Driver: drv2, StateDir: h.dir, UnderlayDev: "eth0", Logger: testLogger(t),
		Backoff: backoff.Policy{Min: time.Millisecond, Max: 10 * time.Millisecond},
	})
	// Start programs the persisted view before it returns.
	if diff := cmp.Diff(lines(want), lines(drv2.State())); diff != "" {
		t.Errorf("restarted agent's data plane (-first agent +restarted):\n%s", diff)
	}
	if a2.ViewVersion() != 2 || a2.AppliedVersion() != 2 || a2.HostID() != testHostID || a2.Connected() {
		t.Errorf("restarted agent: version %d applied %d host ID %d connected %v; want 2, 2, %d, false",
			a2.ViewVersion(), a2.AppliedVersion(), a2.HostID(), a2.Connected(), testHostID)
	}
}

// TestPersistedViewIgnored: a view file that cannot be used leaves the
// agent empty (version 0), so the controller sends a snapshot.
func TestPersistedViewIgnored(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, dir string)
	}{
		{"corrupt", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, state.FileName), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"another host's", func(t *testing.T, dir string) {
			v, err := state.New("h2").Apply(baseSnapshot(t, 4))
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Save(dir); err != nil {
				t.Fatal(err)
			}
		}},
		{"invalid", func(t *testing.T, dir string) {
			snap := baseSnapshot(t, 4)
			snap.Upserts = append(snap.Upserts, wire.Resource{Key: key("endpoint", "acme/x"), Data: []byte(`{"ip":"bad"}`)})
			v, err := state.New(testHost).Apply(snap)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Save(dir); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.write(t, dir)
			h := newHarness(t, func(c *Config) { c.StateDir = dir })
			s := h.stream.accept(t)
			if s.hello.ViewVersion != 0 || h.agent.ViewVersion() != 0 {
				t.Errorf("hello version %d, ViewVersion %d; want 0", s.hello.ViewVersion, h.agent.ViewVersion())
			}
			if st := h.drv.State(); st != "" {
				t.Errorf("data plane programmed from an unusable view:\n%s", st)
			}
		})
	}
}

// TestReconcileRepairsDrift: state changed behind the agent's back is put
// back by the periodic re-Set.
func TestReconcileRepairsDrift(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReconcileInterval = 5 * time.Millisecond })
	h.connect(t)
	want := h.drv.State()
	// Someone deletes our endpoint and VPC.
	if err := h.drv.Set(t.Context(), &datapath.Desired{Host: datapath.HostConfig{Name: testHost, UnderlayIP: mustAddr(underlay1), UnderlayDev: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if h.drv.State() == want {
		t.Fatal("the drift did not change the sim driver")
	}
	waitFor(t, "the reconciler to repair the drift", func() bool { return h.drv.State() == want })
	waitFor(t, "Stats.Repairs", func() bool { return h.agent.Stats().Repairs >= 1 })
}

// flaky fails Set while fail is positive, counting down.
type flaky struct {
	datapath.Driver
	fail atomic.Int32
	sets atomic.Int32
}

func (f *flaky) Set(ctx context.Context, d *datapath.Desired) error {
	f.sets.Add(1)
	if f.fail.Add(-1) >= 0 {
		return errInjected
	}
	return f.Driver.Set(ctx, d)
}

// TestFailedSetRetried: a view whose Set fails is adopted and acked with
// the error (no snapshot can help), and the reconciler retries it with
// backoff until it succeeds, then persists it and tells the controller
// with a second Ack of the version, without an error.
func TestFailedSetRetried(t *testing.T) {
	drv := newSim(t)
	f := &flaky{Driver: drv}
	f.fail.Store(3)
	h := newHarness(t, func(c *Config) { c.Driver = f })
	s := h.stream.accept(t)
	s.send(t, baseSnapshot(t, 1))
	const failed = "ack 1: program datapath: injected failure"
	if got := s.answer(t); got != failed {
		t.Fatalf("snapshot answered %q, want %q", got, failed)
	}
	// The view is held (a delta from 1 would apply), not yet applied.
	if v := h.agent.ViewVersion(); v != 1 {
		t.Errorf("ViewVersion = %d, want 1", v)
	}
	// The retries fail with the same error, which the controller knows:
	// the next answer is the success.
	if got := s.answer(t); got != "ack 1" {
		t.Fatalf("after the retries the agent said %q, want ack 1", got)
	}
	if got := h.agent.AppliedVersion(); got != 1 {
		t.Errorf("AppliedVersion = %d, want 1", got)
	}
	if diff := cmp.Diff(state_(epLine("acme/web", 10)), lines(drv.State())); diff != "" {
		t.Errorf("programmed state (-want +got):\n%s", diff)
	}
	if n := f.sets.Load(); n != 4 {
		t.Errorf("%d Set calls, want 4 (3 failures and a success)", n)
	}
	v, err := state.Load(h.dir)
	if err != nil || v.Version != 1 {
		t.Errorf("persisted view: version %v, %v; want 1", v, err)
	}
	if st := h.agent.Stats(); st.SetErrors != 3 || st.Nacks != 0 {
		t.Errorf("Stats: %d Set errors, %d nacks; want 3 and 0", st.SetErrors, st.Nacks)
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t)
	if err := h.agent.Start(t.Context()); !errors.Is(err, lifecycle.ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	if err := h.agent.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.agent.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := h.agent.Start(t.Context()); !errors.Is(err, lifecycle.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	// Close without Start.
	a, err := New(Config{Host: "x", StreamAddrs: []string{"127.0.0.1:1"}, UDPAddr: "127.0.0.1:1", Key: h.raw, Driver: newSim(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
}

// TestStartContextIsStartupOnly: the context given to Start bounds the
// startup only; the agent runs (config stream, heartbeats) until Close.
func TestStartContextIsStartupOnly(t *testing.T) {
	raw := testKey(t.Name())
	stream := newFakeStream(t, raw, testHostID)
	udp := newFakeUDP(t, stream)
	a, err := New(Config{Host: testHost, StreamAddrs: []string{stream.addr()}, UDPAddr: udp.addr(), Key: raw,
		Driver: newSim(t), HeartbeatInterval: 5 * time.Millisecond, Logger: testLogger(t),
		Backoff: backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	cancel()
	s := stream.accept(t)
	s.send(t, baseSnapshot(t, 1))
	if got := s.answer(t); got != "ack 1" {
		t.Fatalf("snapshot answered %q, want ack 1", got)
	}
	waitFor(t, "a heartbeat of the applied view", func() bool {
		return next(t, udp.heartbeats, "heartbeat").body.(*wire.Heartbeat).ViewVersion == 1
	})
}

func TestConfigValidate(t *testing.T) {
	raw := testKey("v")
	good := func() Config {
		return Config{Host: "h1", StreamAddrs: []string{"127.0.0.1:7444"}, UDPAddr: "127.0.0.1:7445", Key: raw, Driver: newSim(t)}
	}
	for _, tc := range []struct {
		name   string
		mod    func(c *Config)
		errHas string
	}{
		{"defaults", func(*Config) {}, ""},
		{"no host", func(c *Config) { c.Host = "" }, "Host is required"},
		{"no controller", func(c *Config) { c.StreamAddrs = nil }, "at least one controller"},
		{"empty controller", func(c *Config) { c.StreamAddrs = []string{""} }, "empty address"},
		{"no UDP", func(c *Config) { c.UDPAddr = "" }, "UDPAddr is required"},
		{"short key", func(c *Config) { c.Key = raw[:16] }, "Key is 16 bytes, want 32"},
		{"no driver", func(c *Config) { c.Driver = nil }, "Driver is required"},
		{"negative interval", func(c *Config) { c.HeartbeatInterval = -time.Second }, "HeartbeatInterval -1s is negative"},
		{"backoff", func(c *Config) { c.Backoff = backoff.Policy{Min: time.Second, Max: time.Millisecond} }, "Backoff"},
		{"zoned underlay", func(c *Config) { c.UnderlayIP = mustAddr("fe80::1%eth0") }, "zones"},
		{"listen on a shared transport", func(c *Config) { c.Transport, c.UDPListen = (*socket)(nil), "127.0.0.1:0" }, "binds none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := c.Validate()
			if tc.errHas == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.errHas)
			}
			if _, err := New(c); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, func(c *Config) { c.Registerer = reg })
	h.connect(t)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.GetCounter() != nil:
				got[name] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[name] = m.GetGauge().GetValue()
			}
		}
	}
	for name, want := range map[string]float64{
		"weft_agent_deltas_total{result=ack}":            1,
		"weft_agent_view_version":                        1,
		"weft_agent_stream_connects_total":               1,
		"weft_agent_misses_total":                        0,
		"weft_agent_lookup_answers_total{result=found}":  0,
		"weft_agent_invalidations_total{result=applied}": 0,
		"weft_agent_learn_expiries_total":                0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	// A second agent on the same registry is refused; after Close the
	// names are free again.
	if _, err := New(Config{Host: "x", StreamAddrs: []string{"127.0.0.1:1"}, UDPAddr: "127.0.0.1:1", Key: h.raw, Driver: newSim(t), Registerer: reg}); err == nil {
		t.Error("a second agent registered on the same Registerer")
	}
	if err := h.agent.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Host: "x", StreamAddrs: []string{"127.0.0.1:1"}, UDPAddr: "127.0.0.1:1", Key: h.raw, Driver: newSim(t), Registerer: reg})
	if err != nil {
		t.Fatalf("New after the first agent closed: %v", err)
	}
	a.Close()
}
