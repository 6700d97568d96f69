package agent

import (
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
