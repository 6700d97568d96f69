package agent

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/datapath"
)

// waiter is a driver that leaves every endpoint waiting for its namespace.
type waiter struct{ datapath.Driver }

func (w waiter) Status(id string) (datapath.EndpointStatus, bool) {
	return datapath.EndpointStatus{Netns: "/run/pins/" + id, IfName: "eth0", Waiting: "waiting for a network namespace"}, true
}

// TestReporterWaiting: an endpoint the datapath leaves waiting for its
// namespace is reported Pending, with nothing of it enforced.
func TestReporterWaiting(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, func(c *Config) {
		c.Reporter = rec
		c.Driver = waiter{newSim(t)}
	})
	s := h.stream.accept(t)
	s.send(t, baseSnapshot(t, 1))
	if got := s.answer(t); got != "ack 1" {
		t.Fatalf("answer %q", got)
	}
	waitFor(t, "the report", func() bool { _, r := rec.snapshot(); return len(r) == 1 })
	_, reps := rec.snapshot()
	const msg = "waiting for a network namespace"
	want := []EndpointReport{{ID: "acme/web", Netns: "/run/pins/acme/web", Phase: PhasePending, Message: msg, PolicyErr: msg, QoSErr: msg}}
	if diff := cmp.Diff(want, reps[0]); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
}

// attaching is a driver whose endpoints wait for their namespace until
// Attach attaches them (as the linux driver's pool endpoints do); it
// counts Sets.
type attaching struct {
	datapath.Driver

	mu       sync.Mutex
	attached map[string]bool
	sets     int
}

func (d *attaching) Set(ctx context.Context, desired *datapath.Desired) error {
	d.mu.Lock()
	d.sets++
	d.mu.Unlock()
	return d.Driver.Set(ctx, desired)
}

func (d *attaching) Attach(_ context.Context, ids []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		if _, ok := d.Driver.Status(id); !ok {
			return fmt.Errorf("%s is not waiting", id)
		}
	}
	for _, id := range ids {
		d.attached[id] = true
	}
	return nil
}

func (d *attaching) Status(id string) (datapath.EndpointStatus, bool) {
	st, ok := d.Driver.Status(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if ok && !d.attached[id] {
		st.Waiting = "waiting for a network namespace"
	}
	return st, ok
}

func (d *attaching) setCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sets
}

// TestAttach: Attach has a driver that can attach endpoints alone do so
// without a Set, and reports just them again; an Attach the driver
// refuses programs the whole view (a Set) instead.
func TestAttach(t *testing.T) {
	rec := &recorder{}
	drv := &attaching{Driver: newSim(t), attached: map[string]bool{}}
	h := newHarness(t, func(c *Config) {
		c.Reporter = rec
		c.Driver = drv
	})
	s := h.stream.accept(t)
	s.send(t, baseSnapshot(t, 1))
	if got := s.answer(t); got != "ack 1" {
		t.Fatalf("answer %q", got)
	}
	waitFor(t, "the Pending report", func() bool { _, r := rec.snapshot(); return len(r) == 1 })
	sets, reconciles := drv.setCount(), h.agent.Stats().Reconciles
	if err := h.agent.Attach(t.Context(), []string{"acme/web"}); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if got := drv.setCount(); got != sets || h.agent.Stats().Reconciles != reconciles {
		t.Errorf("Attach made %d Sets, %d reconciles; want none", got-sets, h.agent.Stats().Reconciles-reconciles)
	}
	waitFor(t, "the Ready report", func() bool { _, r := rec.snapshot(); return len(r) == 2 })
	_, reps := rec.snapshot()
	want := []EndpointReport{{ID: "acme/web", Netns: "sim:/h1/acme/web", Phase: PhaseReady}}
	if diff := cmp.Diff(want, reps[1]); diff != "" {
		t.Errorf("report after Attach (-want +got):\n%s", diff)
	}
	if err := h.agent.Attach(t.Context(), []string{"acme/none"}); err != nil {
		t.Fatalf("Attach refused by the driver: %v", err)
	}
	if got := drv.setCount(); got != sets+1 {
		t.Errorf("an Attach the driver refused made %d Sets, want 1 (the whole view)", got-sets)
	}
}
