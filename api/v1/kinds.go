package v1

import (
	"fmt"
	"strings"
)

// KindInfo describes one kind: its names and scope.
type KindInfo struct {
	Kind   string   // e.g. "Endpoint"
	Plural string   // e.g. "endpoints", used in REST paths and etcd keys
	Short  []string // CLI short names, e.g. "ep"
	// Namespaced kinds live in a tenant (metadata.tenant); the others are cluster-scoped.
	Namespaced bool
	newObj     func() Object
}

// New returns an empty object of this kind with apiVersion and kind set.
func (k KindInfo) New() Object {
	o := k.newObj()
	*o.GetTypeMeta() = TypeMeta{APIVersion: APIVersion, Kind: k.Kind}
	return o
}

// kinds is the fixed table of served kinds, in dependency order: an object
// may refer only to kinds before it, which is also the order `apply` creates
// them in.
var kinds = [...]KindInfo{
	{Kind: KindTenant, Plural: "tenants", Short: []string{"tenant", "tn"}, newObj: func() Object { return &Tenant{} }},
	{Kind: KindHost, Plural: "hosts", Short: []string{"host", "ho"}, newObj: func() Object { return &Host{} }},
	{Kind: KindQoSClass, Plural: "qosclasses", Short: []string{"qosclass", "qos"}, Namespaced: true, newObj: func() Object { return &QoSClass{} }},
	{Kind: KindVPC, Plural: "vpcs", Short: []string{"vpc"}, Namespaced: true, newObj: func() Object { return &VPC{} }},
	{Kind: KindSubnet, Plural: "subnets", Short: []string{"subnet", "sn"}, Namespaced: true, newObj: func() Object { return &Subnet{} }},
	{Kind: KindSecurityPolicy, Plural: "securitypolicies", Short: []string{"securitypolicy", "policy", "policies", "sp"}, Namespaced: true, newObj: func() Object { return &SecurityPolicy{} }},
	{Kind: KindAppIntent, Plural: "appintents", Short: []string{"appintent", "intent", "ai"}, Namespaced: true, newObj: func() Object { return &AppIntent{} }},
	{Kind: KindEndpoint, Plural: "endpoints", Short: []string{"endpoint", "ep"}, Namespaced: true, newObj: func() Object { return &Endpoint{} }},
	{Kind: KindTrace, Plural: "traces", Short: []string{"trace", "tr"}, Namespaced: true, newObj: func() Object { return &Trace{} }},
	{Kind: KindCapture, Plural: "captures", Short: []string{"capture", "cap"}, Namespaced: true, newObj: func() Object { return &Capture{} }},
}

// Kinds returns every served kind in dependency order.
func Kinds() []KindInfo { return kinds[:] }

// LookupKind finds a kind by its Kind, plural or short name, case-insensitively.
// It allocates nothing: the API resolves a kind on every request.
func LookupKind(name string) (KindInfo, bool) {
	for _, k := range kinds {
		if k.Kind == name {
			return k, true
		}
	}
	for _, k := range kinds {
		if strings.EqualFold(k.Kind, name) || strings.EqualFold(k.Plural, name) {
			return k, true
		}
		for _, s := range k.Short {
			if strings.EqualFold(s, name) {
				return k, true
			}
		}
	}
	return KindInfo{}, false
}

// MustKind returns the KindInfo of a kind constant; it panics on an unknown
// kind, which is a programming error.
func MustKind(kind string) KindInfo {
	k, ok := LookupKind(kind)
	if !ok {
		panic(fmt.Sprintf("weft/v1: unknown kind %q", kind))
	}
	return k
}

// New returns an empty object of the named kind.
func New(kind string) (Object, error) {
	k, ok := LookupKind(kind)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	return k.New(), nil
}

// Ref identifies one object.
type Ref struct {
	Kind   string
	Tenant string // empty for cluster-scoped kinds
	Name   string
}

// RefOf returns the Ref of an object.
func RefOf(o Object) Ref {
	m := o.GetObjectMeta()
	return Ref{Kind: o.GetTypeMeta().Kind, Tenant: m.Tenant, Name: m.Name}
}

// String formats the ref as CLI output does: "endpoint/acme/web-1", "host/h1".
func (r Ref) String() string {
	k := strings.ToLower(r.Kind)
	if r.Tenant == "" {
		return k + "/" + r.Name
	}
	return k + "/" + r.Tenant + "/" + r.Name
}
