package compile

import (
	"testing"

	gocmp "github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/observe/capture"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// TestTracesAndCapturesInViews: a trace is in the views of its ends'
// hosts while it arms and runs, and fires once running; a capture is in
// the views of the hosts with endpoints it selects while it runs; hop and
// count updates recompute nothing.
func TestTracesAndCapturesInViews(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world})
	traceKey := wire.ResourceKey{Type: view.TypeTrace, ID: "acme/t1"}
	capKey := wire.ResourceKey{Type: view.TypeCapture, ID: "acme/c1"}

	e.create(&apiv1.Trace{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTrace}, Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "t1"}, Spec: apiv1.TraceSpec{From: "web-1", To: "web-2", Proto: "udp", DPort: 53}})
	if _, ok := e.snapshot("h1")[traceKey]; ok {
		t.Fatal("a pending trace is in a view")
	}
	tr := get[*apiv1.Trace](e, apiv1.KindTrace, "acme", "t1")
	tr.Status = apiv1.TraceStatus{Phase: apiv1.PhaseArming, VNI: 4096, Token: 77, SPort: 50000, Hosts: []string{"h1", "h2"},
		Source:      &apiv1.TraceEnd{Endpoint: "web-1", Host: "h1", IP: "10.0.1.2"},
		Destination: &apiv1.TraceEnd{Endpoint: "web-2", Host: "h2", IP: "10.0.1.3"}}
	e.put(tr)
	// Both ends carry the source's identity (the destination's policy
	// names the rule that admits it).
	id := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-1").Status.Identity
	if id == 0 {
		t.Fatal("web-1 has no identity")
	}
	want := &view.Trace{Tenant: "acme", Name: "t1", UID: tr.Metadata.UID, Mode: "probe", VNI: 4096, Token: 77, Proto: 17, Src: "10.0.1.2", Dst: "10.0.1.3", SPort: 50000, DPort: 53, SourceIdentity: id}
	src, dst := *want, *want
	src.Source, dst.Dest = "web-1", "web-2"
	if diff := gocmp.Diff(&src, e.snapshot("h1")[traceKey]); diff != "" {
		t.Errorf("h1's trace (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff(&dst, e.snapshot("h2")[traceKey]); diff != "" {
		t.Errorf("h2's trace (-want +got):\n%s", diff)
	}
	if _, ok := e.snapshot("h3")[traceKey]; ok {
		t.Error("h3 takes no part but has the trace")
	}
	tr = get[*apiv1.Trace](e, apiv1.KindTrace, "acme", "t1")
	tr.Status.Phase, tr.Status.Started = apiv1.PhaseRunning, "2030-01-01T00:00:00Z"
	e.put(tr)
	if v := e.snapshot("h1")[traceKey].(*view.Trace); !v.Fire {
		t.Error("a running trace does not fire")
	}
	e.takeRecomputes()
	tr = get[*apiv1.Trace](e, apiv1.KindTrace, "acme", "t1")
	tr.Status.Hops = []apiv1.TraceHop{{Host: "h1", Point: "policy", Verdict: "allow"}}
	e.put(tr)
	if r := e.takeRecomputes(); len(r) != 0 {
		t.Errorf("a hop recomputed %v", r)
	}
	tr = get[*apiv1.Trace](e, apiv1.KindTrace, "acme", "t1")
	tr.Status.Phase = apiv1.PhaseCompleted
	e.put(tr)
	if _, ok := e.snapshot("h2")[traceKey]; ok {
		t.Error("a completed trace is still in a view")
	}

	e.create(&apiv1.Capture{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindCapture}, Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "c1"}, Spec: apiv1.CaptureSpec{
		Selector: &apiv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Underlay: true}})
	cp := get[*apiv1.Capture](e, apiv1.KindCapture, "acme", "c1")
	prog := capture.Encode(capture.UnderlayProgram(1))
	cp.Status = apiv1.CaptureStatus{Phase: apiv1.PhaseRunning, Program: prog, Ends: "2030-01-01T00:00:00Z", Collector: "http://c"}
	e.put(cp)
	got, ok := e.snapshot("h1")[capKey].(*view.Capture)
	if !ok || !gocmp.Equal(got.Endpoints, []string{"web-1"}) || len(got.Underlay) != 1 || !gocmp.Equal(got.Program, prog) || got.Until != cp.Status.Ends {
		t.Errorf("h1's capture %+v", got)
	}
	if got, ok := e.snapshot("h2")[capKey].(*view.Capture); !ok || !gocmp.Equal(got.Endpoints, []string{"web-2"}) {
		t.Errorf("h2's capture %+v (globex's web-1 there is another tenant's)", got)
	}
	if _, ok := e.snapshot("h3")[capKey]; ok {
		t.Error("h3 has no selected endpoint but has the capture")
	}
	cp = get[*apiv1.Capture](e, apiv1.KindCapture, "acme", "c1")
	cp.Status.Phase = apiv1.PhaseCompleted
	e.put(cp)
	if _, ok := e.snapshot("h1")[capKey]; ok {
		t.Error("a completed capture is still in a view")
	}
}
