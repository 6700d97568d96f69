package registry

import (
	"context"
	"fmt"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// TestEndpointReady: the registry keeps an endpoint's Ready condition in
// step with its phase, its programmed conditions and its generation,
// whoever writes them.
func TestEndpointReady(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	ref := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "e1"}
	ready := func(o apiv1.Object) string {
		ep := o.(*apiv1.Endpoint)
		c := apiv1.FindCondition(ep.Status.Conditions, apiv1.ConditionReady)
		if c == nil {
			return "none"
		}
		return fmt.Sprintf("%s %s gen %d/%d", c.Status, c.Reason, c.ObservedGeneration, ep.Metadata.Generation)
	}
	report := func(gen int) []byte { // an agent's report, as agent/restreport sends it
		return fmt.Appendf(nil, `{"status":{"phase":"Ready","conditions":[
			{"type":"PolicyProgrammed","status":"True","reason":"Programmed","observedGeneration":%d},
			{"type":"QoSProgrammed","status":"True","reason":"Programmed","observedGeneration":%d}]}}`, gen, gen)
	}
	steps := []struct {
		name  string
		write func() (apiv1.Object, error)
		want  string
	}{
		{"created", func() (apiv1.Object, error) { return r.Create(ctx, endpoint("acme", "e1", "a", "h1")) }, "False Pending gen 1/1"},
		{"programmed", func() (apiv1.Object, error) { return r.MergePatchStatus(ctx, ref, report(1)) }, "True Programmed gen 1/1"},
		{"relabelled: a new generation", func() (apiv1.Object, error) {
			ep := endpoint("acme", "e1", "a", "h1")
			ep.Metadata.Labels = map[string]string{"app": "web"}
			return r.Update(ctx, ep)
		}, "False Programming gen 2/2"},
		{"the new generation programmed", func() (apiv1.Object, error) { return r.MergePatchStatus(ctx, ref, report(2)) }, "True Programmed gen 2/2"},
		{"its host died", func() (apiv1.Object, error) {
			return r.PatchStatus(ctx, ref, func(next apiv1.Object) bool {
				next.(*apiv1.Endpoint).Status.Phase = apiv1.PhaseLost
				return true
			})
		}, "False Lost gen 2/2"},
	}
	for _, s := range steps {
		out, err := s.write()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		stored, _ := r.Get(ctx, ref)
		if got := ready(out); got != s.want || ready(stored) != s.want {
			t.Errorf("%s: Ready %s (stored: %s), want %s", s.name, got, ready(stored), s.want)
		}
	}

	// A report that differs from the stored status only in a stale Ready
	// (the agent's copy from before the host died) writes nothing: Ready
	// is the registry's.
	lost := `{"status":{"phase":"Lost","conditions":[
		{"type":"PolicyProgrammed","status":"True","reason":"Programmed","observedGeneration":2},
		{"type":"QoSProgrammed","status":"True","reason":"Programmed","observedGeneration":2},
		{"type":"Ready","status":"True","reason":"Programmed","observedGeneration":2,"lastTransitionTime":"2020-01-01T00:00:00Z"}]}}`
	rev := r.Revision()
	if _, err := r.MergePatchStatus(ctx, ref, []byte(lost)); err != nil {
		t.Fatal(err)
	}
	if r.Revision() != rev {
		t.Error("a report changing only the derived Ready was written")
	}
}

// TestHostConditionsFollowGeneration: a new generation of a host's spec
// restamps its Alive and ViewApplied conditions (they describe the host,
// not its spec), so that a wait for them at the current generation ends.
func TestHostConditionsFollowGeneration(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	mustCreate(t, r, host("h1", "192.0.2.1"))
	ref := apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}
	// As the liveness and config-stream sinks write it.
	if _, err := r.PatchStatus(ctx, ref, func(next apiv1.Object) bool {
		h := next.(*apiv1.Host)
		h.Status.Liveness, h.Status.ViewVersion = apiv1.LivenessAlive, 7
		return apiv1.SetHostConditions(h, r.cfg.Now())
	}); err != nil {
		t.Fatal(err)
	}
	conds := func() string {
		o, _ := r.Get(ctx, ref)
		h := o.(*apiv1.Host)
		out := fmt.Sprintf("gen %d:", h.Metadata.Generation)
		for _, c := range h.Status.Conditions {
			out += fmt.Sprintf(" %s=%s@%d", c.Type, c.Status, c.ObservedGeneration)
		}
		return out
	}
	if got, want := conds(), "gen 1: Alive=True@1 ViewApplied=True@1"; got != want {
		t.Fatalf("after the sinks' write: %s, want %s", got, want)
	}
	h := host("h1", "192.0.2.1")
	h.Spec.Capacity = "1Gbit"
	if _, err := r.Update(ctx, h); err != nil {
		t.Fatal(err)
	}
	if got, want := conds(), "gen 2: Alive=True@2 ViewApplied=True@2"; got != want {
		t.Errorf("after a new spec: %s, want %s", got, want)
	}
}
