package registry

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
)

func policy(t, name, vpc string) *apiv1.SecurityPolicy {
	return &apiv1.SecurityPolicy{TypeMeta: tm(apiv1.KindSecurityPolicy), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t},
		Spec: apiv1.SecurityPolicySpec{VPC: vpc, Ingress: []apiv1.PolicyRule{{}}}}
}

func intent(t, name, vpc string) *apiv1.AppIntent {
	return &apiv1.AppIntent{TypeMeta: tm(apiv1.KindAppIntent), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t},
		Spec: apiv1.AppIntentSpec{VPC: vpc}}
}

// TestPolicyVPC: spec.vpc of policies and intents is defaulted while the
// tenant has one VPC and kept on update, and a VPC is not deleted while a
// policy or intent names it.
func TestPolicyVPC(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	vpcOfStored := func(kind, name string) string {
		o, err := r.Get(ctx, apiv1.Ref{Kind: kind, Tenant: "acme", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return vpcOf(o)
	}
	deleteVPC := func(name string) []string {
		_, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "acme", Name: name})
		if err == nil {
			return nil
		}
		se, ok := err.(*apiv1.StatusError)
		if !ok || se.Reason != apiv1.ReasonConflict {
			t.Fatalf("delete VPC %s: %v, want a Conflict", name, err)
		}
		return se.Dependents
	}
	steps := []struct {
		name    string
		do      func() error
		want    string // reason
		wantVPC map[string]string
	}{
		{"policy defaulted", func() error { _, err := r.Create(ctx, policy("acme", "p", "")); return err }, "",
			map[string]string{"p": "main"}},
		{"intent defaulted", func() error { _, err := r.Create(ctx, intent("acme", "shop", "")); return err }, "",
			map[string]string{"shop": "main"}},
		{"second VPC", func() error { _, err := r.Create(ctx, vpc("acme", "other", "10.1.0.0/16")); return err }, "", nil},
		{"now required", func() error { _, err := r.Create(ctx, policy("acme", "q", "")); return err }, apiv1.ReasonInvalid, nil},
		{"unknown VPC", func() error { _, err := r.Create(ctx, policy("acme", "q", "nope")); return err }, apiv1.ReasonInvalid, nil},
		{"update keeps it", func() error {
			p := policy("acme", "p", "")
			p.Spec.Egress = []apiv1.PolicyRule{{}}
			_, err := r.Update(ctx, p)
			return err
		}, "", map[string]string{"p": "main"}},
		{"update moves it", func() error { _, err := r.Update(ctx, policy("acme", "p", "other")); return err }, "",
			map[string]string{"p": "other", "shop": "main"}},
	}
	for _, st := range steps {
		err := st.do()
		if got := apiv1.ReasonOf(err); got != st.want {
			t.Fatalf("%s: reason %q (%v), want %q", st.name, got, err, st.want)
		}
		for name, want := range st.wantVPC {
			kind := apiv1.KindSecurityPolicy
			if name == "shop" {
				kind = apiv1.KindAppIntent
			}
			if got := vpcOfStored(kind, name); got != want {
				t.Errorf("%s: %s has spec.vpc %q, want %q", st.name, name, got, want)
			}
		}
	}
	if diff := cmp.Diff([]string{"appintent/acme/shop", "subnet/acme/a"}, deleteVPC("main")); diff != "" {
		t.Errorf("dependents of VPC main (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"securitypolicy/acme/p"}, deleteVPC("other")); diff != "" {
		t.Errorf("dependents of VPC other (-want +got):\n%s", diff)
	}
	if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindSecurityPolicy, Tenant: "acme", Name: "p"}); err != nil {
		t.Fatal(err)
	}
	if deps := deleteVPC("other"); deps != nil {
		t.Errorf("VPC other not deleted once its policy was: dependents %v", deps)
	}
}

// TestVPCDeleteRacesPolicyCreate: a VPC delete and a create of a policy
// naming it run concurrently, many times; etcd lets one of them win, never
// both (no policy outlives its VPC).
func TestVPCDeleteRacesPolicyCreate(t *testing.T) {
	emb := startEtcd(t)
	r1, r2 := startRegistry(t, startStore(t, emb)), startRegistry(t, startStore(t, emb))
	mustCreate(t, r1, tenant("acme"))
	ctx := context.Background()
	for i := range 20 {
		name := fmt.Sprint("v", i)
		mustCreate(t, r1, vpc("acme", name, fmt.Sprintf("10.%d.0.0/16", i)))
		if err := r2.st.WaitForRevision(ctx, r1.st.Revision()); err != nil {
			t.Fatal(err)
		}
		var g errgroup.Group
		g.Go(func() error {
			_, err := r1.Delete(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "acme", Name: name})
			if err != nil && apiv1.ReasonOf(err) != apiv1.ReasonConflict {
				return err
			}
			return nil
		})
		g.Go(func() error {
			_, err := r2.Create(ctx, policy("acme", name, name))
			if err != nil && apiv1.ReasonOf(err) != apiv1.ReasonInvalid {
				return err
			}
			return nil
		})
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		if err := r1.st.WaitForRevision(ctx, r2.st.Revision()); err != nil {
			t.Fatal(err)
		}
		_, vpcErr := r1.Get(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "acme", Name: name})
		_, polErr := r1.Get(ctx, apiv1.Ref{Kind: apiv1.KindSecurityPolicy, Tenant: "acme", Name: name})
		if vpcErr != nil && polErr == nil {
			t.Fatalf("round %d: policy %s outlived its VPC", i, name)
		}
	}
}

// TestStatusValidated: status writes are validated (ValidateStatus) and
// cannot change allocated fields.
func TestStatusValidated(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	mustCreate(t, r, endpoint("acme", "e", "a", "h1"))
	ref := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "e"}
	ok := apiv1.Condition{Type: apiv1.ConditionPolicyProgrammed, Status: apiv1.ConditionTrue, ObservedGeneration: 1}
	for _, tc := range []struct {
		name  string
		patch func(*apiv1.Endpoint)
		merge string
		want  string
	}{
		{"condition", func(e *apiv1.Endpoint) { e.Status.Conditions = []apiv1.Condition{ok} }, "", ""},
		{"bad status", func(e *apiv1.Endpoint) {
			e.Status.Conditions = []apiv1.Condition{{Type: apiv1.ConditionQoSProgrammed, Status: "Maybe"}}
		}, "", apiv1.ReasonInvalid},
		{"duplicate type", func(e *apiv1.Endpoint) { e.Status.Conditions = []apiv1.Condition{ok, ok} }, "", apiv1.ReasonInvalid},
		{"long message", nil, fmt.Sprintf(`{"status":{"message":%q}}`, strings.Repeat("x", apiv1.MaxMessageLen+1)), apiv1.ReasonInvalid},
		{"merge condition", nil, `{"status":{"conditions":[{"type":"QoSProgrammed","status":"False","reason":"Unsupported"}]}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.merge != "" {
				_, err = r.MergePatchStatus(ctx, ref, []byte(tc.merge))
			} else {
				_, err = r.PatchStatus(ctx, ref, func(o apiv1.Object) bool {
					tc.patch(o.(*apiv1.Endpoint))
					return true
				})
			}
			if got := apiv1.ReasonOf(err); got != tc.want {
				t.Errorf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}
