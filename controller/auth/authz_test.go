package auth

import (
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// objects is a Lookup of a few Hosts (name → UID) and endpoints.
type objects struct {
	hosts map[string]string
	eps   []*apiv1.Endpoint
}

func (o *objects) Get(kind, _, name string) (apiv1.Object, bool) {
	uid, ok := o.hosts[name]
	if kind != apiv1.KindHost || !ok {
		return nil, false
	}
	return &apiv1.Host{Metadata: apiv1.ObjectMeta{Name: name, UID: uid}}, true
}

func (o *objects) EndpointsByHost(host string) []*apiv1.Endpoint {
	var out []*apiv1.Endpoint
	for _, ep := range o.eps {
		if ep.Spec.Host == host {
			out = append(out, ep)
		}
	}
	return out
}

func endpoint(tenant, name, host, netns string) *apiv1.Endpoint {
	return &apiv1.Endpoint{Metadata: apiv1.ObjectMeta{Tenant: tenant, Name: name}, Spec: apiv1.EndpointSpec{Subnet: "a", Host: host, Netns: netns}}
}

func labelled(ep *apiv1.Endpoint, l map[string]string) *apiv1.Endpoint {
	ep.Metadata.Labels = l
	return ep
}

func annotated(ep *apiv1.Endpoint) *apiv1.Endpoint {
	ep.Metadata.Annotations = map[string]string{"cni.weft.io/container-id": "c1"}
	return ep
}

func TestAuthorize(t *testing.T) {
	web, db := endpoint("acme", "web", "h1", ""), endpoint("acme", "db", "h2", "")
	az := NewAuthorizer(&objects{eps: []*apiv1.Endpoint{web, db, endpoint("globex", "gx", "h2", "")}})
	admin := &Identity{Role: RoleClusterAdmin}
	ta := &Identity{Role: RoleTenantAdmin, Tenant: "acme"}
	tv := &Identity{Role: RoleTenantViewer, Tenant: "acme"}
	ag := &Identity{Role: RoleAgent, Host: "h1", HostUID: "u1"}
	boot := &Identity{Role: RoleBootstrap, Host: "h1"}
	req := func(verb, kind, tenant, name string, obj, old apiv1.Object) Request {
		return Request{Verb: verb, Kind: kind, Tenant: tenant, Name: name, Obj: obj, Old: old}
	}
	const ok, forbidden, notFound = "", apiv1.ReasonForbidden, apiv1.ReasonNotFound
	for _, tc := range []struct {
		name string
		id   *Identity
		req  Request
		want string
	}{
		{"admin anything", admin, req(VerbStatus, apiv1.KindHost, "", "h1", nil, nil), ok},
		{"tenant admin writes its tenant", ta, req(VerbCreate, apiv1.KindVPC, "acme", "v", &apiv1.VPC{}, nil), ok},
		{"tenant admin, another tenant", ta, req(VerbGet, apiv1.KindVPC, "globex", "v", nil, nil), forbidden},
		{"tenant admin lists all tenants (narrowed)", ta, req(VerbList, apiv1.KindVPC, "", "", nil, nil), ok},
		{"tenant admin reads its Tenant", ta, req(VerbGet, apiv1.KindTenant, "", "acme", nil, nil), ok},
		{"tenant admin reads another Tenant", ta, req(VerbGet, apiv1.KindTenant, "", "globex", nil, nil), forbidden},
		{"tenant admin writes its Tenant", ta, req(VerbUpdate, apiv1.KindTenant, "", "acme", &apiv1.Tenant{}, nil), forbidden},
		{"tenant admin reads hosts", ta, req(VerbList, apiv1.KindHost, "", "", nil, nil), forbidden},
		{"tenant admin writes status", ta, req(VerbStatus, apiv1.KindEndpoint, "acme", "web", nil, web), forbidden},
		{"tenant admin creates with netns", ta, req(VerbCreate, apiv1.KindEndpoint, "acme", "x", endpoint("acme", "x", "h1", "/proc/1/ns/net"), nil), forbidden},
		{"tenant admin sets netns", ta, req(VerbUpdate, apiv1.KindEndpoint, "acme", "web", endpoint("acme", "web", "h1", "/x"), web), forbidden},
		{"tenant admin moves", ta, req(VerbUpdate, apiv1.KindEndpoint, "acme", "web", endpoint("acme", "web", "h2", ""), web), forbidden},
		{"tenant admin updates in place", ta, req(VerbUpdate, apiv1.KindEndpoint, "acme", "web", endpoint("acme", "web", "h1", ""), web), ok},
		{"tenant admin places", ta, req(VerbCreate, apiv1.KindEndpoint, "acme", "x", endpoint("acme", "x", "h2", ""), nil), ok},
		{"viewer reads", tv, req(VerbWatch, apiv1.KindEndpoint, "acme", "", nil, nil), ok},
		{"viewer writes", tv, req(VerbDelete, apiv1.KindEndpoint, "acme", "web", nil, web), forbidden},
		{"agent reads its host", ag, req(VerbGet, apiv1.KindHost, "", "h1", nil, nil), ok},
		{"agent writes its host's status", ag, req(VerbStatus, apiv1.KindHost, "", "h1", nil, nil), ok},
		{"agent writes its host", ag, req(VerbUpdate, apiv1.KindHost, "", "h1", &apiv1.Host{}, nil), forbidden},
		{"agent reads another host", ag, req(VerbGet, apiv1.KindHost, "", "h2", nil, nil), forbidden},
		{"agent reads its endpoint", ag, req(VerbGet, apiv1.KindEndpoint, "acme", "web", nil, web), ok},
		{"agent reads another host's endpoint", ag, req(VerbGet, apiv1.KindEndpoint, "acme", "db", nil, db), notFound},
		{"agent writes its endpoint's status", ag, req(VerbStatus, apiv1.KindEndpoint, "acme", "web", nil, web), ok},
		{"agent writes another's status", ag, req(VerbStatus, apiv1.KindEndpoint, "acme", "db", nil, db), notFound},
		{"agent creates on its host", ag, req(VerbCreate, apiv1.KindEndpoint, "globex", "c", endpoint("globex", "c", "h1", "/run/netns/c"), nil), ok},
		{"agent creates elsewhere", ag, req(VerbCreate, apiv1.KindEndpoint, "acme", "c", endpoint("acme", "c", "h2", ""), nil), forbidden},
		{"agent updates an endpoint", ag, req(VerbUpdate, apiv1.KindEndpoint, "acme", "web", endpoint("acme", "web", "h1", "/x"), web), forbidden},
		{"agent relabels an endpoint", ag, req(VerbUpdate, apiv1.KindEndpoint, "acme", "web", labelled(endpoint("acme", "web", "h1", ""), map[string]string{"a": "b"}), web), forbidden},
		{"agent annotates its endpoint", ag, req(VerbUpdate, apiv1.KindEndpoint, "acme", "web", annotated(endpoint("acme", "web", "h1", "")), web), ok},
		{"agent annotates another host's endpoint", ag, req(VerbUpdate, apiv1.KindEndpoint, "acme", "db", annotated(endpoint("acme", "db", "h2", "")), db), notFound},
		{"agent reads a placed tenant's VPC", ag, req(VerbGet, apiv1.KindVPC, "acme", "main", nil, nil), ok},
		{"agent reads another tenant's VPC", ag, req(VerbGet, apiv1.KindVPC, "globex", "main", nil, nil), forbidden},
		{"agent writes a VPC", ag, req(VerbCreate, apiv1.KindVPC, "acme", "v", &apiv1.VPC{}, nil), forbidden},
		{"agent reads Tenants", ag, req(VerbList, apiv1.KindTenant, "", "", nil, nil), forbidden},
		{"bootstrap reads", boot, req(VerbGet, apiv1.KindHost, "", "h1", nil, nil), forbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := az.Authorize(tc.id, tc.req)
			if got := apiv1.ReasonOf(err); got != tc.want || (err != nil && got == "") {
				t.Errorf("Authorize: %v, want %q", err, tc.want)
			}
		})
	}
	// The narrowing of lists.
	for _, tc := range []struct {
		name       string
		id         *Identity
		kind, ten  string
		wantTenant string
		obj        apiv1.Object
		keep       bool
	}{
		{"tenant role across tenants", ta, apiv1.KindEndpoint, "", "acme", db, true},
		{"tenant role's Tenant list", tv, apiv1.KindTenant, "", "", &apiv1.Tenant{Metadata: apiv1.ObjectMeta{Name: "globex"}}, false},
		{"agent's endpoints", ag, apiv1.KindEndpoint, "", "", db, false},
		{"agent's own endpoint", ag, apiv1.KindEndpoint, "acme", "acme", web, true},
		{"agent's hosts", ag, apiv1.KindHost, "", "", &apiv1.Host{Metadata: apiv1.ObjectMeta{Name: "h2"}}, false},
		{"agent's VPCs", ag, apiv1.KindVPC, "", "", &apiv1.VPC{Metadata: apiv1.ObjectMeta{Tenant: "globex"}}, false},
		{"admin", admin, apiv1.KindEndpoint, "", "", db, true},
	} {
		t.Run("filter "+tc.name, func(t *testing.T) {
			tenant, keep := az.Filter(tc.id, tc.kind, tc.ten)
			if kept := keep == nil || keep(tc.obj); tenant != tc.wantTenant || kept != tc.keep {
				t.Errorf("Filter: tenant %q, keeps %v; want %q, %v", tenant, kept, tc.wantTenant, tc.keep)
			}
		})
	}
}
