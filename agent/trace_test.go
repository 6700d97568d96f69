package agent

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/observe/trace"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// obsSink is a Reporter that takes observations too (an
// ObservationReporter, as package restreport's): it records the trace
// reports, by trace name.
type obsSink struct {
	mu      sync.Mutex
	reports map[string][]trace.Report
}

func (s *obsSink) Register(context.Context, string, string) error { return nil }

func (s *obsSink) ReportEndpoints(context.Context, []EndpointReport) error { return nil }

func (s *obsSink) ReportTrace(_ context.Context, _, name string, r *trace.Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reports == nil {
		s.reports = map[string][]trace.Report{}
	}
	rep := *r
	rep.Hops = slices.Clone(r.Hops)
	s.reports[name] = append(s.reports[name], rep)
	return nil
}

func (s *obsSink) UploadCapture(_ context.Context, _, _, _, _ string, body io.Reader) error {
	_, err := io.Copy(io.Discard, body)
	return err
}

// trace returns whether a trace was reported armed and its hops so far.
func (s *obsSink) trace(name string) (armed bool, hops []apiv1.TraceHop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.reports[name] {
		armed = armed || r.Armed
		hops = append(hops, r.Hops...)
	}
	return armed, hops
}

// TestTraceSimDriver runs probe traces through an agent with the sim
// driver, as `weft agent --datapath sim` does: the agent reports each
// armed, then the hops the driver saw: to a local endpoint, delivered;
// to an address whose location nobody answers, dropped for the unknown
// location once the driver stops waiting for it.
func TestTraceSimDriver(t *testing.T) {
	sink := &obsSink{}
	h := newHarness(t, func(c *Config) { c.Reporter = sink })
	s := h.connect(t)
	probe := func(name string, token uint16, dst, dest string) wire.Resource {
		return mustRes(t, &view.Trace{Tenant: "acme", Name: name, UID: "uid-" + name, Mode: apiv1.TraceProbe, Fire: true,
			VNI: 100, Token: token, Proto: 1, Src: "10.0.1.10", Dst: dst, Source: "web", Dest: dest})
	}
	s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{
		epRes(t, "acme", "db", 100, 20), probe("local", 1, "10.0.1.20", "db"), probe("nowhere", 2, "10.0.1.99", ""),
	}})
	if got := s.answer(t); got != "ack 2" {
		t.Fatalf("delta answered %q, want ack 2", got)
	}
	last := func(name string) (bool, []string, apiv1.TraceHop) {
		armed, hops := sink.trace(name)
		var points []string
		var final apiv1.TraceHop
		for _, h := range hops {
			points = append(points, h.Point)
			if h.Point == apiv1.HopDeliver || h.Point == apiv1.HopDrop {
				final = h
			}
		}
		return armed, points, final
	}
	waitFor(t, "both traces' last hops", func() bool {
		_, _, a := last("local")
		_, _, b := last("nowhere")
		return a.Point != "" && b.Point != ""
	})
	for _, tc := range []struct {
		name, want, reason string
	}{
		{"local", "source-veth vpc-router policy route remote-policy deliver", ""},
		{"nowhere", "source-veth vpc-router policy route drop", "unknown-location"},
	} {
		armed, points, final := last(tc.name)
		if !armed || !slices.Equal(points, strings.Fields(tc.want)) || final.Reason != tc.reason || final.Host != testHost {
			t.Errorf("trace %s: armed %v, path %v, last %+v; want armed, %s, reason %q", tc.name, armed, points, final, tc.want, tc.reason)
		}
	}
}

// TestObserveOnDemand runs an agent whose observations go to
// Config.Observations (no Reporter) with ObserveOnDemand: no observer
// runs while its views hold no trace or capture; the first view with a
// trace starts it, and the trace is reported armed and delivered.
func TestObserveOnDemand(t *testing.T) {
	sink := &obsSink{}
	h := newHarness(t, func(c *Config) { c.Observations, c.ObserveOnDemand = sink, true })
	s := h.connect(t)
	observing := func() bool {
		h.agent.mu.Lock()
		defer h.agent.mu.Unlock()
		return h.agent.tracer != nil
	}
	s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}})
	if got := s.answer(t); got != "ack 2" {
		t.Fatalf("delta answered %q, want ack 2", got)
	}
	if observing() {
		t.Fatal("the observer runs with no trace or capture in the view")
	}
	s.send(t, &wire.Delta{FromVersion: 2, ToVersion: 3, Upserts: []wire.Resource{
		mustRes(t, &view.Trace{Tenant: "acme", Name: "local", UID: "uid-local", Mode: apiv1.TraceProbe, Fire: true,
			VNI: 100, Token: 1, Proto: 1, Src: "10.0.1.10", Dst: "10.0.1.20", Source: "web", Dest: "db"}),
	}})
	if got := s.answer(t); got != "ack 3" {
		t.Fatalf("delta answered %q, want ack 3", got)
	}
	waitFor(t, "the trace reported armed and delivered", func() bool {
		armed, hops := sink.trace("local")
		return armed && len(hops) > 0 && hops[len(hops)-1].Point == apiv1.HopDeliver
	})
	if !observing() {
		t.Error("no observer after a trace")
	}
}
