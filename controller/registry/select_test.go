package registry

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

func TestSelect(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	web := func(ep *apiv1.Endpoint) *apiv1.Endpoint {
		ep.Metadata.Labels = map[string]string{"app": "web"}
		return ep
	}
	mustCreate(t, r, web(endpoint("acme", "e1", "a", "h1")), endpoint("acme", "e2", "a", "h2"),
		web(endpoint("globex", "e1", "a", "h1")), subnet("acme", "b", "main", "10.0.2.0/24"), endpoint("acme", "e3", "b", "h1"))
	ctx := context.Background()
	for _, tc := range []struct {
		name, kind, tenant, labels, fields string
		want                               []string
	}{
		{name: "by host, all tenants", kind: "endpoints", fields: "spec.host=h1", want: []string{"endpoint/acme/e1", "endpoint/acme/e3", "endpoint/globex/e1"}},
		{name: "by host in a tenant", kind: "endpoints", tenant: "acme", fields: "spec.host=h1", want: []string{"endpoint/acme/e1", "endpoint/acme/e3"}},
		{name: "by host and labels", kind: "endpoints", labels: "app=web", fields: "spec.host=h1", want: []string{"endpoint/acme/e1", "endpoint/globex/e1"}},
		{name: "by host and another field", kind: "endpoints", fields: "spec.host=h1,spec.subnet!=b", want: []string{"endpoint/acme/e1", "endpoint/globex/e1"}},
		{name: "by subnet in a tenant", kind: "endpoints", tenant: "acme", fields: "spec.subnet=a", want: []string{"endpoint/acme/e1", "endpoint/acme/e2"}},
		{name: "by subnet, all tenants", kind: "endpoints", fields: "spec.subnet=a", want: []string{"endpoint/acme/e1", "endpoint/acme/e2", "endpoint/globex/e1"}},
		{name: "by phase", kind: "endpoints", fields: "status.phase=Pending,metadata.tenant=globex", want: []string{"endpoint/globex/e1"}},
		{name: "by phase, none", kind: "endpoints", fields: "status.phase=Ready"},
		{name: "by name in a tenant", kind: "endpoints", tenant: "globex", fields: "metadata.name=e1", want: []string{"endpoint/globex/e1"}},
		{name: "by name, all tenants", kind: "endpoints", fields: "metadata.name=e1", want: []string{"endpoint/acme/e1", "endpoint/globex/e1"}},
		{name: "by name, another tenant", kind: "endpoints", tenant: "acme", fields: "metadata.tenant=globex"},
		{name: "subnets by VPC", kind: "subnets", tenant: "acme", fields: "spec.vpc=main", want: []string{"subnet/acme/a", "subnet/acme/b"}},
		{name: "hosts by name", kind: "hosts", fields: "metadata.name=h2", want: []string{"host/h2"}},
		{name: "hosts by name and label", kind: "hosts", labels: "x", fields: "metadata.name=h2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := apiv1.ParseSelector(tc.labels)
			if err != nil {
				t.Fatal(err)
			}
			fields, err := apiv1.ParseFieldSelector(tc.kind, tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			objs, rev := r.Select(ctx, tc.kind, tc.tenant, sel, fields)
			var got []string
			for _, o := range objs {
				got = append(got, apiv1.RefOf(o).String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
			if rev != r.Revision() {
				t.Errorf("revision %d, want %d", rev, r.Revision())
			}
		})
	}
}
