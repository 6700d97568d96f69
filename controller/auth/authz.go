package auth

import (
	"fmt"
	"maps"
	"slices"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Verbs of a Request.
const (
	VerbGet    = "get"
	VerbList   = "list"
	VerbWatch  = "watch"
	VerbCreate = "create"
	VerbUpdate = "update" // labels and spec
	VerbDelete = "delete"
	VerbStatus = "status" // replace or patch the status
)

// Lookup reads the objects that authorization depends on; the store's
// cache implements it.
type Lookup interface {
	Get(kind, tenant, name string) (apiv1.Object, bool)
	EndpointsByHost(host string) []*apiv1.Endpoint
}

// Request is one API call on objects. Authorize may be called first
// without Obj (before the body is read) and again with it.
type Request struct {
	Verb string
	// Kind, Tenant and Name address the object(s), as in the path (Tenant
	// "" for cluster-scoped kinds and lists across tenants).
	Kind, Tenant, Name string
	// Obj is the requested object of a create or update.
	Obj apiv1.Object
	// Old is the stored object of an update, delete or status write, nil
	// if there is none. Only decisions that need it read it.
	Old apiv1.Object
}

// Authorizer decides what an identity may do.
type Authorizer struct{ l Lookup }

// NewAuthorizer returns an Authorizer that reads l.
func NewAuthorizer(l Lookup) *Authorizer { return &Authorizer{l: l} }

// NeedsOld reports whether Authorize needs req.Old for id: only for
// credentials below cluster-admin.
func NeedsOld(id *Identity, verb string) bool {
	return id.Role != RoleClusterAdmin && verb != VerbCreate && verb != VerbList && verb != VerbWatch
}

// Authorize returns nil if id may do req, else a 403 StatusError, or a
// 404 where a 403 would tell that an object the credential may not see
// exists. Lists and watches are also narrowed by Filter.
func (a *Authorizer) Authorize(id *Identity, req Request) error {
	switch id.Role {
	case RoleClusterAdmin:
		return nil
	case RoleTenantAdmin, RoleTenantViewer:
		return a.tenantRole(id, req)
	case RoleAgent:
		return a.agent(id, req)
	}
	return denied(id, req, "")
}

func (a *Authorizer) tenantRole(id *Identity, req Request) error {
	read := req.Verb == VerbGet || req.Verb == VerbList || req.Verb == VerbWatch
	switch req.Kind {
	case apiv1.KindHost:
		return denied(id, req, "hosts are managed by cluster admins")
	case apiv1.KindTenant:
		if !read || (req.Name != "" && req.Name != id.Tenant) {
			return denied(id, req, fmt.Sprintf("it may read its own Tenant %q only", id.Tenant))
		}
		return nil
	}
	if req.Tenant != "" && req.Tenant != id.Tenant {
		return denied(id, req, fmt.Sprintf("it may access tenant %q only", id.Tenant))
	}
	switch {
	case read:
		return nil
	case id.Role == RoleTenantViewer:
		return denied(id, req, "it may only read")
	case req.Verb == VerbStatus:
		return denied(id, req, "status is written by the controller and the agents")
	}
	if req.Kind != apiv1.KindEndpoint {
		return nil
	}
	ep, old := asEndpoint(req.Obj), asEndpoint(req.Old)
	switch {
	case ep == nil: // the fields are checked once the body is read
	case req.Verb == VerbCreate && ep.Spec.Netns != "",
		req.Verb == VerbUpdate && old != nil && ep.Spec.Netns != old.Spec.Netns:
		return denied(id, req, "spec.netns may be set only by the agent of the endpoint's host or a cluster admin")
	case req.Verb == VerbUpdate && old != nil && ep.Spec.Host != old.Spec.Host:
		return denied(id, req, "moving an endpoint to another host (spec.host) takes a cluster admin")
	}
	return nil
}

func (a *Authorizer) agent(id *Identity, req Request) error {
	read := req.Verb == VerbGet || req.Verb == VerbList || req.Verb == VerbWatch
	switch req.Kind {
	case apiv1.KindHost:
		switch {
		case req.Verb == VerbList || req.Verb == VerbWatch:
			return nil // narrowed to its own Host by Filter
		case req.Name == id.Host && (req.Verb == VerbGet || req.Verb == VerbStatus):
			return nil
		}
		return denied(id, req, fmt.Sprintf("it may read Host %q and write its status only", id.Host))
	case apiv1.KindEndpoint:
		switch req.Verb {
		case VerbList, VerbWatch:
			return nil // narrowed to the endpoints on its host by Filter
		case VerbCreate:
			if ep := asEndpoint(req.Obj); ep != nil && ep.Spec.Host != id.Host {
				return denied(id, req, fmt.Sprintf("it may create endpoints on host %q only", id.Host))
			}
			return nil
		case VerbGet, VerbDelete, VerbStatus, VerbUpdate:
			// Endpoints on other hosts do not exist for it.
			old := asEndpoint(req.Old)
			if old == nil || old.Spec.Host != id.Host {
				return apiv1.NewNotFound(apiv1.Ref{Kind: req.Kind, Tenant: req.Tenant, Name: req.Name})
			}
			if ep := asEndpoint(req.Obj); req.Verb == VerbUpdate && ep != nil && !onlyAnnotations(ep, old) {
				return denied(id, req, "it may change only the status and the annotations of the endpoints on its host")
			}
			return nil
		}
		return denied(id, req, "it may change only the status and the annotations of the endpoints on its host")
	case apiv1.KindVPC, apiv1.KindSubnet, apiv1.KindSecurityPolicy, apiv1.KindQoSClass:
		if read && (req.Tenant == "" || a.placed(id.Host, req.Tenant)) {
			return nil
		}
	}
	return denied(id, req, "")
}

// placed reports whether tenant has an endpoint on host.
func (a *Authorizer) placed(host, tenant string) bool {
	for _, ep := range a.l.EndpointsByHost(host) {
		if ep.Metadata.Tenant == tenant {
			return true
		}
	}
	return false
}

// Filter narrows an authorized list or watch for id: the tenant to read
// ("" all) and a test of each object (nil keeps all). It never widens what
// the request asked for.
func (a *Authorizer) Filter(id *Identity, kind, tenant string) (string, func(apiv1.Object) bool) {
	switch id.Role {
	case RoleClusterAdmin:
		return tenant, nil
	case RoleTenantAdmin, RoleTenantViewer:
		if kind == apiv1.KindTenant {
			return "", func(o apiv1.Object) bool { return o.GetObjectMeta().Name == id.Tenant }
		}
		return id.Tenant, nil
	case RoleAgent:
		switch kind {
		case apiv1.KindHost:
			return "", func(o apiv1.Object) bool { return o.GetObjectMeta().Name == id.Host }
		case apiv1.KindEndpoint:
			return tenant, func(o apiv1.Object) bool { return o.(*apiv1.Endpoint).Spec.Host == id.Host }
		}
		return tenant, func(o apiv1.Object) bool { return a.placed(id.Host, o.GetObjectMeta().Tenant) }
	}
	return tenant, func(apiv1.Object) bool { return false }
}

// onlyAnnotations says ep differs from old at most in its annotations (an
// agent's CNI server records the container it attached an endpoint of its
// warm pool to).
func onlyAnnotations(ep, old *apiv1.Endpoint) bool {
	m, o := &ep.Metadata, &old.Metadata
	return ep.Spec == old.Spec && m.Name == o.Name && m.Tenant == o.Tenant && maps.Equal(m.Labels, o.Labels) &&
		slices.Equal(m.OwnerReferences, o.OwnerReferences)
}

func asEndpoint(o apiv1.Object) *apiv1.Endpoint {
	ep, _ := o.(*apiv1.Endpoint)
	return ep
}

// denied is the 403 of a request: it names the credential's role and what
// it may do, never the object or tenant asked for.
func denied(id *Identity, req Request, why string) error {
	plural := req.Kind
	if ki, ok := apiv1.LookupKind(req.Kind); ok {
		plural = ki.Plural
	}
	msg := fmt.Sprintf("forbidden: a %s credential may not %s %s", id.Role, req.Verb, plural)
	if why != "" {
		msg += ": " + why
	}
	return apiv1.NewForbidden("%s", msg)
}
