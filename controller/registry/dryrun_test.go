package registry

import (
	"context"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// TestDryRun: a dry run defaults, validates, allocates and checks quota
// and dependents as the write would, answers with what would be stored,
// and stores nothing nor keeps what it allocated.
func TestDryRun(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	dry := apiv1.WithDryRun()
	rev := r.Revision()

	out, err := r.Create(ctx, endpoint("acme", "e1", "a", "h1"), dry)
	if err != nil {
		t.Fatal(err)
	}
	if ep := out.(*apiv1.Endpoint); ep.Status.IP != "10.0.1.2" || ep.Status.Phase != apiv1.PhasePending || ep.Metadata.UID == "" || ep.Metadata.ResourceVersion != "" {
		t.Errorf("dry-run create answered %+v %+v", ep.Metadata, ep.Status)
	}
	if _, err := r.Create(ctx, vpc("acme", "v2", "10.0.0.0/8", "bad"), dry); apiv1.ReasonOf(err) != apiv1.ReasonInvalid {
		t.Errorf("dry-run create of an invalid VPC: %v, want Invalid", err)
	}
	if _, err := r.Create(ctx, vpc("acme", "main", "10.9.0.0/16"), dry); !apiv1.IsAlreadyExists(err) {
		t.Errorf("dry-run create of an existing VPC: %v, want AlreadyExists", err)
	}
	upd := vpc("acme", "main", "10.0.0.0/16", "10.1.0.0/16")
	out, err = r.Update(ctx, upd, dry)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := r.Get(ctx, apiv1.RefOf(upd))
	if m := out.GetObjectMeta(); len(out.(*apiv1.VPC).Spec.CIDRs) != 2 || m.Generation != 2 || m.ResourceVersion != stored.GetObjectMeta().ResourceVersion {
		t.Errorf("dry-run update answered %+v %+v, stored resourceVersion %s", m, out.(*apiv1.VPC).Spec, stored.GetObjectMeta().ResourceVersion)
	}
	if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindSubnet, Tenant: "acme", Name: "a"}, dry); err != nil {
		t.Errorf("dry-run delete of an unused subnet: %v", err)
	}
	if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "acme", Name: "main"}, dry); !apiv1.IsConflict(err) {
		t.Errorf("dry-run delete of a VPC with a subnet: %v, want Conflict", err)
	}
	if got := r.Revision(); got != rev {
		t.Fatalf("dry runs wrote: revision %d, was %d", got, rev)
	}
	if _, err := r.Get(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "e1"}); !apiv1.IsNotFound(err) {
		t.Errorf("dry-run endpoint stored: %v", err)
	}
	// The addresses the dry runs allocated were given back: a subnet with
	// one free address still has it.
	mustCreate(t, r, subnet("acme", "tiny", "main", "10.0.9.0/30"))
	for range 3 {
		if _, err := r.Create(ctx, endpoint("acme", "e1", "tiny", "h1"), dry); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, r, endpoint("acme", "e1", "tiny", "h1"))

	// Quota is counted by a dry run too.
	tn, _ := r.Get(ctx, apiv1.Ref{Kind: apiv1.KindTenant, Name: "acme"})
	q := *tn.(*apiv1.Tenant)
	q.Spec.Quota = &apiv1.TenantQuota{Endpoints: 1}
	if _, err := r.Update(ctx, &q); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, endpoint("acme", "e2", "a", "h1"), dry); apiv1.ReasonOf(err) != apiv1.ReasonQuotaExceeded {
		t.Errorf("dry-run create over quota: %v, want QuotaExceeded", err)
	}
}
