package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

func tenantQuota(name string, q apiv1.TenantQuota) *apiv1.Tenant {
	t := tenant(name)
	t.Spec.Quota = &q
	return t
}

// TestQuota: creates of endpoints, VPCs and policies beyond the tenant's
// quota are refused with 403 QuotaExceeded; deletes make room; a quota
// changed is enforced from then on; other tenants and kinds, and updates,
// are not counted.
func TestQuota(t *testing.T) {
	r, _ := newRegistry(t)
	mustCreate(t, r, tenantQuota("acme", apiv1.TenantQuota{Endpoints: 2, VPCs: 1, Policies: 1}), tenant("globex"),
		host("h1", "192.0.2.1"))
	ctx := context.Background()
	create := func(o apiv1.Object) func() error {
		return func() error { _, err := r.Create(ctx, o); return err }
	}
	del := func(kind, name string) func() error {
		return func() error {
			_, err := r.Delete(ctx, apiv1.Ref{Kind: kind, Tenant: "acme", Name: name})
			return err
		}
	}
	setQuota := func(q apiv1.TenantQuota) func() error {
		return func() error { _, err := r.Update(ctx, tenantQuota("acme", q)); return err }
	}
	for _, st := range []struct {
		name string
		do   func() error
		want string // the error's message, "" for success
	}{
		{"first VPC", create(vpc("acme", "main", "10.0.0.0/16")), ""},
		{"second VPC", create(vpc("acme", "other", "10.1.0.0/16")),
			"vpc/acme/other: tenant acme has 1 vpcs, its quota (spec.quota.vpcs) is 1: delete some or raise the quota"},
		{"subnets are not counted", create(subnet("acme", "a", "main", "10.0.1.0/24")), ""},
		{"first policy", create(policy("acme", "p1", "")), ""},
		{"second policy", create(policy("acme", "p2", "")),
			"securitypolicy/acme/p2: tenant acme has 1 securitypolicies, its quota (spec.quota.policies) is 1: delete some or raise the quota"},
		{"endpoint 1", create(endpoint("acme", "e1", "a", "h1")), ""},
		{"endpoint 2", create(endpoint("acme", "e2", "a", "h1")), ""},
		{"endpoint 3", create(endpoint("acme", "e3", "a", "h1")),
			"endpoint/acme/e3: tenant acme has 2 endpoints, its quota (spec.quota.endpoints) is 2: delete some or raise the quota"},
		{"updates are not counted", func() error {
			_, err := r.Update(ctx, labelled(endpoint("acme", "e2", "a", "h1"), map[string]string{"x": "y"}))
			return err
		}, ""},
		{"a delete makes room", del(apiv1.KindEndpoint, "e1"), ""},
		{"endpoint 3 again", create(endpoint("acme", "e3", "a", "h1")), ""},
		{"quota raised", setQuota(apiv1.TenantQuota{Endpoints: 3, VPCs: 1, Policies: 1}), ""},
		{"endpoint 4", create(endpoint("acme", "e4", "a", "h1")), ""},
		{"quota lowered below the count", setQuota(apiv1.TenantQuota{Endpoints: 1}), ""},
		{"endpoint 5", create(endpoint("acme", "e5", "a", "h1")),
			"endpoint/acme/e5: tenant acme has 3 endpoints, its quota (spec.quota.endpoints) is 1: delete some or raise the quota"},
		{"policies unlimited now", create(policy("acme", "p2", "")), ""},
		{"other tenants", create(vpc("globex", "v2", "10.2.0.0/16")), ""},
	} {
		err := st.do()
		got := ""
		if err != nil {
			got = err.Error()
			if st.want != "" {
				if se, ok := err.(*apiv1.StatusError); !ok || se.Code != 403 || se.Reason != apiv1.ReasonQuotaExceeded {
					t.Errorf("%s: %#v, want 403 QuotaExceeded", st.name, err)
				}
			}
		}
		if diff := cmp.Diff(st.want, got); diff != "" {
			t.Errorf("%s: error (-want +got):\n%s", st.name, diff)
		}
	}
}

// TestQuotaRace: 30 concurrent endpoint creates through two replicas in a
// tenant with a quota of 10: exactly 10 succeed; and two creates decided
// at once for the last place: one succeeds.
func TestQuotaRace(t *testing.T) {
	emb := startEtcd(t)
	rs := []*Registry{startRegistry(t, startStore(t, emb)), startRegistry(t, startStore(t, emb))}
	mustCreate(t, rs[0], tenantQuota("acme", apiv1.TenantQuota{Endpoints: 10}), host("h1", "192.0.2.1"),
		vpc("acme", "main", "10.0.0.0/16"), subnet("acme", "a", "main", "10.0.1.0/24"))
	ctx := context.Background()
	if err := rs[1].st.WaitForRevision(ctx, rs[0].st.Revision()); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 30)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = rs[i%2].Create(ctx, endpoint("acme", fmt.Sprint("e", i), "a", "h1")) })
	}
	wg.Wait()
	ok, created := 0, ""
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
			created = fmt.Sprint("e", i)
		case apiv1.ReasonOf(err) != apiv1.ReasonQuotaExceeded || !strings.Contains(err.Error(), "tenant acme has 10 endpoints"):
			t.Errorf("create e%d: %v, want QuotaExceeded at 10 endpoints", i, err)
		}
	}
	if ok != 10 {
		t.Fatalf("%d creates succeeded, want 10", ok)
	}

	// The last place, decided by both replicas at once (no address or
	// identity race between them: only the quota decides).
	if _, err := rs[0].Delete(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: created}); err != nil {
		t.Fatal(err)
	}
	if err := rs[1].st.WaitForRevision(ctx, rs[0].st.Revision()); err != nil {
		t.Fatal(err)
	}
	var both sync.WaitGroup
	both.Add(2)
	for _, r := range rs {
		var once sync.Once
		r.hooks.planned = func() { once.Do(func() { both.Done(); both.Wait() }) }
	}
	last := make([]error, 2)
	for i, r := range rs {
		ep := endpoint("acme", fmt.Sprint("last", i), "a", "h1")
		ep.Spec.IP = fmt.Sprint("10.0.1.", 200+i)
		wg.Go(func() { _, last[i] = r.Create(ctx, ep) })
	}
	wg.Wait()
	if (last[0] == nil) == (last[1] == nil) || apiv1.ReasonOf(errors.Join(last...)) != apiv1.ReasonQuotaExceeded {
		t.Errorf("creates for the last place: %v, want one success and one QuotaExceeded", last)
	}
}
