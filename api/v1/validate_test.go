package v1

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

// memLookup is an in-memory Lookup.
type memLookup map[Ref]Object

func newLookup(objs ...Object) memLookup {
	l := memLookup{}
	for _, o := range objs {
		Default(o)
		l[RefOf(o)] = o
	}
	return l
}

func (l memLookup) Get(kind, tenant, name string) (Object, bool) {
	o, ok := l[Ref{Kind: kind, Tenant: tenant, Name: name}]
	return o, ok
}

func (l memLookup) List(kind, tenant string) []Object {
	var out []Object
	for r, o := range l {
		if r.Kind == kind && r.Tenant == tenant {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b Object) int { return cmp.Compare(a.GetObjectMeta().Name, b.GetObjectMeta().Name) })
	return out
}

func meta(tenant, name string) ObjectMeta { return ObjectMeta{Tenant: tenant, Name: name} }

func mkTenant(f ...func(*Tenant)) *Tenant {
	o := &Tenant{Metadata: meta("", "acme")}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func mkHost(f ...func(*Host)) *Host {
	o := &Host{Metadata: meta("", "h1"), Spec: HostSpec{UnderlayIP: "192.0.2.11", Capacity: "10Gbit"}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func mkVPC(f ...func(*VPC)) *VPC {
	o := &VPC{Metadata: meta("acme", "main"), Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16"}}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func mkSubnet(f ...func(*Subnet)) *Subnet {
	o := &Subnet{Metadata: meta("acme", "b"), Spec: SubnetSpec{VPC: "main", CIDR: "10.0.2.0/24"}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func mkEndpoint(f ...func(*Endpoint)) *Endpoint {
	o := &Endpoint{Metadata: meta("acme", "web-1"), Spec: EndpointSpec{Subnet: "a", Host: "h1"}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func mkPolicy(f ...func(*SecurityPolicy)) *SecurityPolicy {
	o := &SecurityPolicy{Metadata: meta("acme", "allow-web"), Spec: SecurityPolicySpec{
		VPC:      "main",
		Selector: LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Ingress: []PolicyRule{{
			Peers: []PolicyPeer{{Selector: &LabelSelector{MatchLabels: map[string]string{"app": "lb"}}}, {CIDR: "192.168.0.0/16"}},
			Ports: []PolicyPort{{Port: 80}, {Protocol: "udp", Port: 5000, EndPort: 5010}, {Protocol: "ICMP"}},
		}},
		Egress: []PolicyRule{{}},
	}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func mkQoS(f ...func(*QoSClass)) *QoSClass {
	o := &QoSClass{Metadata: meta("acme", "silver"), Spec: QoSClassSpec{MinRate: "100Mbit", MaxRate: "1G", DSCP: 46}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

// world is the Lookup every case validates against: tenant acme (VPC main
// with subnet a, host h1, QoS class gold), tenant other, whose one VPC uses
// the same addresses, and tenant novpc without any.
func world() memLookup {
	return newLookup(
		mkTenant(),
		&Tenant{Metadata: meta("", "other")},
		&Tenant{Metadata: meta("", "novpc")},
		mkHost(),
		&QoSClass{Metadata: meta("acme", "gold")},
		mkVPC(),
		&VPC{Metadata: meta("acme", "second"), Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&VPC{Metadata: meta("other", "main"), Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&Subnet{Metadata: meta("acme", "a"), Spec: SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24"}},
		&Subnet{Metadata: meta("acme", "s2"), Spec: SubnetSpec{VPC: "second", CIDR: "10.0.2.0/24"}},
		&Subnet{Metadata: meta("other", "a"), Spec: SubnetSpec{VPC: "main", CIDR: "10.0.2.0/24"}},
	)
}

// fe is an expected field error: its exact path and a substring of its message.
type fe struct{ Field, Sub string }

// causesOf returns the causes of a validation error as fe pairs; a message
// that contains the wanted substring at the same position is shortened to
// it, so that cmp.Diff shows full messages only where they differ.
func causesOf(t *testing.T, err error, want []fe) []fe {
	t.Helper()
	if err == nil {
		return nil
	}
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a *StatusError", err)
	}
	if se.Reason != ReasonInvalid || se.Code != 422 {
		t.Errorf("reason %s code %d, want %s 422", se.Reason, se.Code, ReasonInvalid)
	}
	got := make([]fe, len(se.Causes))
	for i, c := range se.Causes {
		got[i] = fe{c.Field, c.Message}
		if i < len(want) && want[i].Sub != "" && strings.Contains(c.Message, want[i].Sub) {
			got[i].Sub = want[i].Sub
		}
	}
	return got
}

// validateCase is one case of a validation table: obj is defaulted
// (unless raw) and validated against world(), as an update of old if set.
type validateCase struct {
	name string
	obj  Object
	old  Object // set: ValidateUpdate(obj, old)
	raw  bool   // skip Default
	want []fe
}

func runValidate(t *testing.T, tests []validateCase) {
	t.Helper()
	names := map[string]bool{}
	for _, tt := range tests {
		if names[tt.name] {
			t.Fatalf("duplicate case name %q", tt.name)
		}
		names[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			l := world()
			if !tt.raw {
				Default(tt.obj)
			}
			var err error
			if tt.old != nil {
				Default(tt.old)
				err = ValidateUpdate(tt.obj, tt.old, l)
			} else {
				err = ValidateCreate(tt.obj, l)
			}
			if diff := gocmp.Diff(tt.want, causesOf(t, err, tt.want)); diff != "" {
				t.Errorf("causes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	longName := strings.Repeat("a", 64)
	tests := []validateCase{
		// ---- metadata, common to all kinds ----
		{name: "tenant valid", obj: &Tenant{Metadata: meta("", "new")}},
		{name: "tenant description too long", obj: mkTenant(func(o *Tenant) { o.Spec.Description = strings.Repeat("é", 1025) }),
			want: []fe{{"spec.description", "at most 1024 characters, got 1025"}}},
		{name: "tenant description of 1024 characters", obj: mkTenant(func(o *Tenant) { o.Spec.Description = strings.Repeat("é", 1024) })},
		{name: "name missing", obj: mkVPC(func(o *VPC) { o.Metadata.Name = "" }),
			want: []fe{{"metadata.name", "is required"}}},
		{name: "name upper case", obj: mkVPC(func(o *VPC) { o.Metadata.Name = "Main" }),
			want: []fe{{"metadata.name", "lower case alphanumeric"}}},
		{name: "name starts with dash", obj: mkVPC(func(o *VPC) { o.Metadata.Name = "-main" }),
			want: []fe{{"metadata.name", "start and end with an alphanumeric"}}},
		{name: "name with dot", obj: mkHost(func(o *Host) { o.Metadata.Name = "h1.example" }),
			want: []fe{{"metadata.name", "lower case alphanumeric"}}},
		{name: "name too long", obj: mkVPC(func(o *VPC) { o.Metadata.Name = longName }),
			want: []fe{{"metadata.name", "at most 63 characters"}}},
		{name: "name of 63 characters", obj: mkVPC(func(o *VPC) { o.Metadata.Name = longName[:63] })},
		{name: "wrong apiVersion", raw: true, obj: mkTenant(func(o *Tenant) { o.TypeMeta = TypeMeta{APIVersion: "weft/v2", Kind: KindTenant} }),
			want: []fe{{"apiVersion", `must be "weft/v1"`}}},
		{name: "kind does not match the type", raw: true, obj: mkTenant(func(o *Tenant) { o.TypeMeta = TypeMeta{APIVersion: APIVersion, Kind: KindHost} }),
			want: []fe{{"kind", `must be "Tenant"`}}},
		{name: "tenant missing on a tenant-scoped kind", obj: mkVPC(func(o *VPC) { o.Metadata.Tenant = "" }),
			want: []fe{{"metadata.tenant", "is required"}}},
		{name: "tenant invalid", obj: mkVPC(func(o *VPC) { o.Metadata.Tenant = "Acme" }),
			want: []fe{{"metadata.tenant", "lower case alphanumeric"}}},
		{name: "tenant not found", obj: mkVPC(func(o *VPC) { o.Metadata.Tenant = "nope" }),
			want: []fe{{"metadata.tenant", `Tenant "nope" not found`}}},
		{name: "tenant set on a cluster-scoped kind", obj: mkHost(func(o *Host) { o.Metadata.Tenant = "acme" }),
			want: []fe{{"metadata.tenant", "must not be set for cluster-scoped kind Host"}}},
		{name: "labels valid", obj: mkVPC(func(o *VPC) {
			o.Metadata.Labels = map[string]string{"app": "web", "weft.io/tier": "Front_end.1", "empty": "", "A-b_c.D": "x"}
		})},
		{name: "label key with bad prefix", obj: mkVPC(func(o *VPC) { o.Metadata.Labels = map[string]string{"Weft.io/tier": "x"} }),
			want: []fe{{"metadata.labels[Weft.io/tier]", "prefix before '/' must be a DNS subdomain"}}},
		{name: "label key with empty prefix", obj: mkVPC(func(o *VPC) { o.Metadata.Labels = map[string]string{"/tier": "x"} }),
			want: []fe{{"metadata.labels[/tier]", "prefix before '/' must be non-empty"}}},
		{name: "label key with two slashes", obj: mkVPC(func(o *VPC) { o.Metadata.Labels = map[string]string{"a/b/c": "x"} }),
			want: []fe{{"metadata.labels[a/b/c]", "at most one '/'"}}},
		{name: "label key name too long", obj: mkVPC(func(o *VPC) { o.Metadata.Labels = map[string]string{"weft.io/" + longName: "x"} }),
			want: []fe{{"metadata.labels[weft.io/" + longName + "]", "name must be at most 63 characters"}}},
		{name: "label value and key invalid, in key order", obj: mkVPC(func(o *VPC) {
			o.Metadata.Labels = map[string]string{"app": "-web", "b@d": "ok", "z": longName}
		}),
			want: []fe{
				{"metadata.labels[app]", `invalid label value "-web"`},
				{"metadata.labels[b@d]", "invalid label key: name must consist of alphanumeric"},
				{"metadata.labels[z]", "at most 63 characters"},
			}},

		// ---- Host ----
		{name: "host valid with IPv6 underlay and plain number capacity", obj: mkHost(func(o *Host) {
			o.Spec.UnderlayIP, o.Spec.Capacity = "2001:db8::11", "25000000000"
		})},
		{name: "host on loopback (simulator) is valid", obj: mkHost(func(o *Host) { o.Spec.UnderlayIP = "127.0.0.5" })},
		{name: "host underlayIP missing", obj: mkHost(func(o *Host) { o.Spec.UnderlayIP = "" }),
			want: []fe{{"spec.underlayIP", "is required"}}},
		{name: "host underlayIP not an address", obj: mkHost(func(o *Host) { o.Spec.UnderlayIP = "192.0.2" }),
			want: []fe{{"spec.underlayIP", `invalid IP address "192.0.2"`}}},
		{name: "host underlayIP multicast", obj: mkHost(func(o *Host) { o.Spec.UnderlayIP = "239.1.1.1" }),
			want: []fe{{"spec.underlayIP", "must be a unicast address"}}},
		{name: "host underlayIP unspecified", obj: mkHost(func(o *Host) { o.Spec.UnderlayIP = "::" }),
			want: []fe{{"spec.underlayIP", "must be a unicast address"}}},
		{name: "host underlayIP IPv4-mapped", obj: mkHost(func(o *Host) { o.Spec.UnderlayIP = "::ffff:192.0.2.1" }),
			want: []fe{{"spec.underlayIP", "write 192.0.2.1"}}},
		{name: "host capacity unparsable", obj: mkHost(func(o *Host) { o.Spec.Capacity = "fast" }),
			want: []fe{{"spec.capacity", `bandwidth "fast"`}}},

		// ---- VPC ----
		{name: "vpc valid", obj: mkVPC()},
		{name: "vpc IPv6 CIDR", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.0.0.0/16", "fd00:1::/48"} }),
			want: []fe{{"spec.cidrs[1]", "IPv6 is not supported by the data plane yet: fd00:1::/48"}}},
		{name: "vpc IPv4-mapped IPv6 CIDR", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"::ffff:10.0.0.0/112"} }),
			want: []fe{{"spec.cidrs[0]", "IPv6 is not supported"}}},
		{name: "vpc may overlap another tenant's and its own tenant's VPCs", obj: mkVPC(func(o *VPC) {
			o.Metadata.Name, o.Spec.CIDRs = "third", []string{"10.0.0.0/16"}
		})},
		{name: "vpc without CIDRs", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = nil }),
			want: []fe{{"spec.cidrs", "at least one CIDR"}}},
		{name: "vpc CIDR invalid", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.0.0.0/16", "10.1.0.0"} }),
			want: []fe{{"spec.cidrs[1]", `invalid CIDR "10.1.0.0"`}}},
		{name: "vpc CIDR host bits set", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.0.1.5/16"} }),
			want: []fe{{"spec.cidrs[0]", "host bits set in 10.0.1.5/16 (did you mean 10.0.0.0/16?)"}}},
		{name: "vpc IPv4 prefix too short", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.0.0.0/7"} }),
			want: []fe{{"spec.cidrs[0]", "between /8 and /30"}}},
		{name: "vpc IPv4 prefix too long", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.0.0.0/31"} }),
			want: []fe{{"spec.cidrs[0]", "between /8 and /30"}}},
		{name: "vpc IPv4 prefix /8 and /30 are the bounds", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.0.0.0/8", "192.168.0.0/30"} })},
		{name: "vpc CIDRs overlap each other", obj: mkVPC(func(o *VPC) {
			o.Spec.CIDRs = []string{"10.0.0.0/16", "10.0.128.0/20", "10.1.0.0/16", "10.1.0.0/16"}
		}),
			want: []fe{
				{"spec.cidrs[1]", "overlaps 10.0.0.0/16 (spec.cidrs[0])"},
				{"spec.cidrs[3]", "overlaps 10.1.0.0/16 (spec.cidrs[2])"},
			}},
		{name: "vpc update adding a CIDR", old: mkVPC(), obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = append(o.Spec.CIDRs, "10.9.0.0/16") })},
		{name: "vpc update dropping the CIDR a subnet uses", old: mkVPC(), obj: mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.9.0.0/16"} }),
			want: []fe{{"spec.cidrs", `must keep Subnet "a" (10.0.1.0/24) inside a CIDR`}}},

		// ---- Subnet ----
		{name: "subnet valid", obj: mkSubnet()},
		{name: "subnet IPv6", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "fd00:1:0:1::/64" }),
			want: []fe{{"spec.cidr", "IPv6 is not supported by the data plane yet: fd00:1:0:1::/64"}}},
		{name: "subnet with the CIDR of a subnet in another VPC", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "10.0.2.0/24" })},
		{name: "subnet vpc missing", obj: mkSubnet(func(o *Subnet) { o.Spec.VPC = "" }),
			want: []fe{{"spec.vpc", "is required"}}},
		{name: "subnet vpc not found", obj: mkSubnet(func(o *Subnet) { o.Spec.VPC = "nope" }),
			want: []fe{{"spec.vpc", `VPC "nope" not found`}}},
		{name: "subnet vpc of another tenant is not found", obj: mkSubnet(func(o *Subnet) { o.Metadata.Tenant = "other"; o.Spec.VPC = "second" }),
			want: []fe{{"spec.vpc", `VPC "second" not found`}}},
		{name: "subnet cidr missing", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "" }),
			want: []fe{{"spec.cidr", "is required"}}},
		{name: "subnet cidr host bits set", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "10.0.2.5/24" }),
			want: []fe{{"spec.cidr", "host bits set"}}},
		{name: "subnet cidr too small", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "10.0.2.0/31" }),
			want: []fe{{"spec.cidr", "at most /30"}}},
		{name: "subnet cidr /30 is the smallest", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "10.0.2.0/30" })},
		{name: "subnet cidr outside the VPC", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "10.1.0.0/24" }),
			want: []fe{{"spec.cidr", `must be inside a CIDR of VPC "main" (10.0.0.0/16)`}}},
		{name: "subnet cidr larger than the VPC", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "10.0.0.0/15" }),
			want: []fe{{"spec.cidr", "must be inside a CIDR"}}},
		{name: "subnet cidr overlaps a sibling", obj: mkSubnet(func(o *Subnet) { o.Spec.CIDR = "10.0.0.0/20" }),
			want: []fe{{"spec.cidr", `overlaps 10.0.1.0/24 of Subnet "a"`}}},
		{name: "subnet gateway outside the cidr", obj: mkSubnet(func(o *Subnet) { o.Spec.Gateway = "10.0.3.1" }),
			want: []fe{{"spec.gateway", "must be inside spec.cidr 10.0.2.0/24"}}},
		{name: "subnet gateway is the network address", obj: mkSubnet(func(o *Subnet) { o.Spec.Gateway = "10.0.2.0" }),
			want: []fe{{"spec.gateway", "network address"}}},
		{name: "subnet gateway is the broadcast address", obj: mkSubnet(func(o *Subnet) { o.Spec.Gateway = "10.0.2.255" }),
			want: []fe{{"spec.gateway", "broadcast address"}}},
		{name: "subnet gateway not an address", obj: mkSubnet(func(o *Subnet) { o.Spec.Gateway = "gw" }),
			want: []fe{{"spec.gateway", `invalid IP address "gw"`}}},
		{name: "subnet gateway missing without Default", raw: true, obj: mkSubnet(func(o *Subnet) { o.TypeMeta = TypeMeta{APIVersion, KindSubnet} }),
			want: []fe{{"spec.gateway", "is required"}}},
		{name: "subnet update keeping its cidr does not overlap itself", old: world()[Ref{KindSubnet, "acme", "a"}],
			obj: mkSubnet(func(o *Subnet) { o.Metadata.Name, o.Spec.CIDR, o.Spec.Gateway = "a", "10.0.1.0/24", "10.0.1.254" })},
		{name: "subnet update changing cidr and vpc", old: mkSubnet(),
			obj:  mkSubnet(func(o *Subnet) { o.Spec.VPC, o.Spec.CIDR = "second", "10.0.3.0/24" }),
			want: []fe{{"spec.vpc", "field is immutable"}, {"spec.cidr", "field is immutable"}}},

		// ---- Endpoint ----
		{name: "endpoint minimal", obj: mkEndpoint()},
		{name: "endpoint with everything", obj: mkEndpoint(func(o *Endpoint) {
			o.Spec.IP, o.Spec.MAC, o.Spec.Netns, o.Spec.QoSClass = "10.0.1.10", "02:00:0A:00:01:0A", "/var/run/netns/web-1", "gold"
			o.Metadata.Labels = map[string]string{"app": "web"}
		})},
		{name: "endpoint subnet and host missing", obj: mkEndpoint(func(o *Endpoint) { o.Spec.Subnet, o.Spec.Host = "", "" }),
			want: []fe{{"spec.subnet", "is required"}, {"spec.host", "is required"}}},
		{name: "endpoint references not found", obj: mkEndpoint(func(o *Endpoint) {
			o.Spec.Subnet, o.Spec.Host, o.Spec.QoSClass = "zz", "h9", "platinum"
		}),
			want: []fe{{"spec.subnet", `Subnet "zz" not found`}, {"spec.host", `Host "h9" not found`}, {"spec.qosClass", `QoSClass "platinum" not found`}}},
		{name: "endpoint subnet of another tenant is not found", obj: mkEndpoint(func(o *Endpoint) { o.Spec.Subnet = "s2"; o.Metadata.Tenant = "other" }),
			want: []fe{{"spec.subnet", `Subnet "s2" not found`}}},
		{name: "endpoint qosClass invalid name", obj: mkEndpoint(func(o *Endpoint) { o.Spec.QoSClass = "Gold" }),
			want: []fe{{"spec.qosClass", "lower case"}}},
		{name: "endpoint ip not an address", obj: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.300" }),
			want: []fe{{"spec.ip", "invalid IP address"}}},
		{name: "endpoint ip outside the subnet", obj: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.2.10" }),
			want: []fe{{"spec.ip", `must be inside 10.0.1.0/24 of Subnet "a"`}}},
		{name: "endpoint ip is the network address", obj: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.0" }),
			want: []fe{{"spec.ip", `network address of Subnet "a"`}}},
		{name: "endpoint ip is the broadcast address", obj: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.255" }),
			want: []fe{{"spec.ip", `broadcast address of Subnet "a"`}}},
		{name: "endpoint ip is the gateway", obj: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.1" }),
			want: []fe{{"spec.ip", `gateway address of Subnet "a"`}}},
		{name: "endpoint mac multicast", obj: mkEndpoint(func(o *Endpoint) { o.Spec.MAC = "01:00:5e:00:00:01" }),
			want: []fe{{"spec.mac", "must be a unicast MAC"}}},
		{name: "endpoint mac all zeros", obj: mkEndpoint(func(o *Endpoint) { o.Spec.MAC = "00:00:00:00:00:00" }),
			want: []fe{{"spec.mac", "all zeros"}}},
		{name: "endpoint mac not 48 bits", obj: mkEndpoint(func(o *Endpoint) { o.Spec.MAC = "02:00:00:00:00:00:00:01" }),
			want: []fe{{"spec.mac", "48-bit MAC"}}},
		{name: "endpoint netns relative", obj: mkEndpoint(func(o *Endpoint) { o.Spec.Netns = "netns/x" }),
			want: []fe{{"spec.netns", "absolute path"}}},
		{name: "endpoint update migrating to another host", old: mkEndpoint(func(o *Endpoint) { o.Spec.Host = "h2" }), obj: mkEndpoint()},
		{name: "endpoint update changing subnet", old: mkEndpoint(func(o *Endpoint) { o.Spec.Subnet = "z" }), obj: mkEndpoint(),
			want: []fe{{"spec.subnet", "field is immutable"}}},
		{name: "endpoint update changing a requested ip", old: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.10" }),
			obj:  mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.11" }),
			want: []fe{{"spec.ip", "field is immutable"}}},
		{name: "endpoint update changing an allocated ip", old: mkEndpoint(func(o *Endpoint) { o.Status.IP = "10.0.1.10" }),
			obj:  mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.11" }),
			want: []fe{{"spec.ip", "field is immutable"}}},
		{name: "endpoint update writing the allocated ip into spec", old: mkEndpoint(func(o *Endpoint) { o.Status.IP = "10.0.1.10" }),
			obj: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.10" })},
		{name: "endpoint update setting an ip before allocation", old: mkEndpoint(), obj: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.12" })},
		{name: "endpoint update omitting its ip", old: mkEndpoint(func(o *Endpoint) { o.Spec.IP = "10.0.1.10" }), obj: mkEndpoint()},
		{name: "update changing names", old: mkEndpoint(), obj: mkEndpoint(func(o *Endpoint) { o.Metadata.Name = "web-2" }),
			want: []fe{{"metadata.name", "field is immutable"}}},

		// ---- SecurityPolicy ----
		{name: "policy valid", obj: mkPolicy()},
		{name: "policy with empty selectors", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Selector = LabelSelector{}
			o.Spec.Egress = []PolicyRule{{Peers: []PolicyPeer{{Selector: &LabelSelector{}}}}}
		})},
		{name: "policy selector expressions invalid", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Selector = LabelSelector{
				MatchLabels: map[string]string{"app": "bad value"},
				MatchExpressions: []LabelSelectorRequirement{
					{Key: "tier", Operator: OpIn},
					{Key: "tier", Operator: OpExists, Values: []string{"x"}},
					{Key: "tier", Operator: "Equals", Values: []string{"x"}},
					{Key: "-tier", Operator: OpDoesNotExist},
					{Key: "tier", Operator: OpNotIn, Values: []string{"ok", "not ok"}},
				},
			}
		}),
			want: []fe{
				{"spec.selector.matchLabels[app]", `invalid label value "bad value"`},
				{"spec.selector.matchExpressions[0].values", "must be non-empty for operator In"},
				{"spec.selector.matchExpressions[1].values", "must be empty for operator Exists"},
				{"spec.selector.matchExpressions[2].operator", `unknown operator "Equals"`},
				{"spec.selector.matchExpressions[3].key", "invalid label key"},
				{"spec.selector.matchExpressions[4].values[1]", `invalid label value "not ok"`},
			}},
		{name: "policy peer with both selector and cidr", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Ingress[0].Peers[1].Selector = &LabelSelector{}
		}),
			want: []fe{{"spec.ingress[0].peers[1]", "exactly one of selector or cidr"}}},
		{name: "policy peer with neither", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Egress = []PolicyRule{{Peers: []PolicyPeer{{}}}} }),
			want: []fe{{"spec.egress[0].peers[0]", "exactly one of selector or cidr"}}},
		{name: "policy peer selector invalid", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Ingress[0].Peers[0].Selector.MatchExpressions = []LabelSelectorRequirement{{Key: "x", Operator: OpNotIn}}
		}),
			want: []fe{{"spec.ingress[0].peers[0].selector.matchExpressions[0].values", "non-empty"}}},
		{name: "policy peer cidr invalid and with host bits", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Ingress[0].Peers = []PolicyPeer{{CIDR: "any"}, {CIDR: "192.168.1.1/16"}}
		}),
			want: []fe{{"spec.ingress[0].peers[0].cidr", `invalid CIDR "any"`}, {"spec.ingress[0].peers[1].cidr", "host bits set"}}},
		{name: "policy protocol unknown", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Ports[1].Protocol = "http" }),
			want: []fe{{"spec.ingress[0].ports[1].protocol", `unknown protocol "HTTP"`}}},
		{name: "policy port out of range", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Ports[1].Port = 70000 }),
			want: []fe{{"spec.ingress[0].ports[1].port", "between 0 and 65535"}, {"spec.ingress[0].ports[1].endPort", "at least port (70000)"}}},
		{name: "policy negative port", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Ports[0].Port = -1 }),
			want: []fe{{"spec.ingress[0].ports[0].port", "between 0 and 65535"}}},
		{name: "policy endPort below port", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Ports[1].EndPort = 4999 }),
			want: []fe{{"spec.ingress[0].ports[1].endPort", "at least port (5000)"}}},
		{name: "policy endPort out of range", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Ports[1].EndPort = 65536 }),
			want: []fe{{"spec.ingress[0].ports[1].endPort", "between 0 and 65535"}}},
		{name: "policy endPort without port", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Egress[0].Ports = []PolicyPort{{EndPort: 80}} }),
			want: []fe{{"spec.egress[0].ports[0].endPort", "requires port"}}},
		{name: "policy ICMP with a port", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Ports[2].Port = 8 }),
			want: []fe{{"spec.ingress[0].ports[2].port", "must not be set for protocol ICMP"}}},
		{name: "policy lower-case protocol without Default", raw: true, obj: mkPolicy(func(o *SecurityPolicy) { o.TypeMeta = TypeMeta{APIVersion, KindSecurityPolicy} })},

		// ---- QoSClass ----
		{name: "qos valid", obj: mkQoS()},
		{name: "qos empty", obj: &QoSClass{Metadata: meta("acme", "best-effort")}},
		{name: "qos rates unparsable", obj: mkQoS(func(o *QoSClass) { o.Spec.MinRate, o.Spec.MaxRate = "lots", "1Xbit" }),
			want: []fe{{"spec.minRate", `bandwidth "lots"`}, {"spec.maxRate", `bandwidth "1Xbit"`}}},
		{name: "qos maxRate below minRate", obj: mkQoS(func(o *QoSClass) { o.Spec.MinRate, o.Spec.MaxRate = "2G", "1000Mbit" }),
			want: []fe{{"spec.maxRate", "must be at least spec.minRate (2G)"}}},
		{name: "qos maxRate zero", obj: mkQoS(func(o *QoSClass) { o.Spec.MinRate, o.Spec.MaxRate = "", "0" }),
			want: []fe{{"spec.maxRate", "greater than zero"}}},
		{name: "qos priority and dscp out of range", obj: mkQoS(func(o *QoSClass) { p := 8; o.Spec.Priority = &p; o.Spec.DSCP = 64 }),
			want: []fe{{"spec.priority", "between 0 and 7"}, {"spec.dscp", "between 0 and 63"}}},
		{name: "qos negative priority and dscp", obj: mkQoS(func(o *QoSClass) { p := -1; o.Spec.Priority = &p; o.Spec.DSCP = -1 }),
			want: []fe{{"spec.priority", "between 0 and 7"}, {"spec.dscp", "between 0 and 63"}}},
	}
	runValidate(t, tests)
}

func TestValidateUpdateOfAnotherKind(t *testing.T) {
	err := ValidateUpdate(mkVPC(), mkSubnet(), world())
	want := []fe{{"kind", "field is immutable"}}
	if diff := gocmp.Diff(want, causesOf(t, err, want)); diff != "" {
		t.Errorf("causes (-want +got):\n%s", diff)
	}
}

func TestValidateWithoutLookup(t *testing.T) {
	// Without a Lookup only the static checks run: the missing tenant and
	// VPC go unnoticed, the bad CIDR does not.
	s := mkSubnet(func(o *Subnet) { o.Metadata.Tenant, o.Spec.VPC, o.Spec.CIDR = "ghost", "ghost", "10.0.0.1/24" })
	Default(s)
	err := ValidateCreate(s, nil)
	want := []fe{{"spec.cidr", "host bits set"}}
	if diff := gocmp.Diff(want, causesOf(t, err, want)); diff != "" {
		t.Errorf("causes (-want +got):\n%s", diff)
	}
	if diff := gocmp.Diff([]FieldError{{Field: "spec.cidr", Message: "host bits set in 10.0.0.1/24 (did you mean 10.0.0.0/24?)"}}, ValidateObject(s)); diff != "" {
		t.Errorf("ValidateObject (-want +got):\n%s", diff)
	}
}

func TestValidateErrorMessage(t *testing.T) {
	v := mkVPC(func(o *VPC) { o.Spec.CIDRs = []string{"10.0.0.0/16", "10.0.1.0/24"} })
	Default(v)
	err := ValidateCreate(v, world())
	want := "vpc/acme/main is invalid: spec.cidrs[1]: overlaps 10.0.0.0/16 (spec.cidrs[0])"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

// labelsN returns n distinct labels.
func labelsN(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m["k"+strconv.Itoa(i)] = "v"
	}
	return m
}

// nOf returns n copies of x.
func nOf[T any](n int, x T) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = x
	}
	return s
}

func intp(n int) *int { return &n }

func TestValidateMetadata(t *testing.T) {
	owner := OwnerReference{Kind: KindAppIntent, Name: "shop", UID: "0b8e7c1a-1c1d-4a3e-9c55-0c1b2a3d4e5f"}
	withOwners := func(refs ...OwnerReference) func(*SecurityPolicy) {
		return func(o *SecurityPolicy) { o.Metadata.OwnerReferences = refs }
	}
	runValidate(t, []validateCase{
		{name: "64 labels", obj: mkVPC(func(o *VPC) { o.Metadata.Labels = labelsN(64) })},
		{name: "65 labels, not checked one by one", obj: mkVPC(func(o *VPC) { o.Metadata.Labels = labelsN(64); o.Metadata.Labels["B@D"] = "" }),
			want: []fe{{"metadata.labels", "must have at most 64 labels, got 65"}}},
		{name: "annotations with any values", obj: mkVPC(func(o *VPC) {
			o.Metadata.Annotations = map[string]string{"argocd.argoproj.io/sync-wave": "-1", "note": "free text: {\"json\": true}\nline two", "empty": ""}
		})},
		{name: "64 annotations", obj: mkVPC(func(o *VPC) { o.Metadata.Annotations = labelsN(64) })},
		{name: "65 annotations", obj: mkVPC(func(o *VPC) { o.Metadata.Annotations = labelsN(65) }),
			want: []fe{{"metadata.annotations", "must have at most 64 annotations, got 65"}}},
		{name: "annotation keys invalid", obj: mkVPC(func(o *VPC) { o.Metadata.Annotations = map[string]string{"a b": "x", "Weft.io/x": "y"} }),
			want: []fe{
				{"metadata.annotations[Weft.io/x]", "invalid annotation key: prefix before '/' must be a DNS subdomain"},
				{"metadata.annotations[a b]", "invalid annotation key: name must consist of alphanumeric"},
			}},
		{name: "annotations of exactly 256 KiB", obj: mkVPC(func(o *VPC) {
			o.Metadata.Annotations = map[string]string{"a": strings.Repeat("x", 128<<10-1), "b": strings.Repeat("y", 128<<10-1)}
		})},
		{name: "annotations over 256 KiB", obj: mkVPC(func(o *VPC) {
			o.Metadata.Annotations = map[string]string{"a": strings.Repeat("x", 128<<10-1), "b": strings.Repeat("y", 128<<10)}
		}),
			want: []fe{{"metadata.annotations", "keys and values must total at most 262144 bytes, got 262145"}}},
		{name: "owner reference valid", obj: mkPolicy(withOwners(owner))},
		{name: "owner of a cluster-scoped kind on a tenant-scoped object", obj: mkPolicy(withOwners(OwnerReference{Kind: KindHost, Name: "h1", UID: "u"}))},
		{name: "owner reference fields missing", obj: mkPolicy(withOwners(OwnerReference{})),
			want: []fe{
				{"metadata.ownerReferences[0].kind", "is required"},
				{"metadata.ownerReferences[0].name", "is required"},
				{"metadata.ownerReferences[0].uid", "is required"},
			}},
		{name: "owner reference kind unknown or not exact", obj: mkPolicy(withOwners(
			OwnerReference{Kind: "Deployment", Name: "a", UID: "u"}, OwnerReference{Kind: "appintent", Name: "b", UID: "u"})),
			want: []fe{
				{"metadata.ownerReferences[0].kind", `unknown kind "Deployment"`},
				{"metadata.ownerReferences[1].kind", `unknown kind "appintent"`},
			}},
		{name: "owner reference name invalid", obj: mkPolicy(withOwners(OwnerReference{Kind: KindAppIntent, Name: "Shop", UID: "u"})),
			want: []fe{{"metadata.ownerReferences[0].name", "lower case alphanumeric"}}},
		{name: "owner reference duplicate", obj: mkPolicy(withOwners(owner, owner)),
			want: []fe{{"metadata.ownerReferences[1]", "duplicate of metadata.ownerReferences[0]"}}},
		{name: "tenant-scoped owner of a cluster-scoped object", obj: mkHost(func(o *Host) { o.Metadata.OwnerReferences = []OwnerReference{owner} }),
			want: []fe{{"metadata.ownerReferences[0].kind", "must be a cluster-scoped kind: AppIntent is tenant-scoped and Host is not"}}},
		{name: "16 owner references", obj: mkPolicy(func(o *SecurityPolicy) {
			for i := range 16 {
				o.Metadata.OwnerReferences = append(o.Metadata.OwnerReferences, OwnerReference{Kind: KindAppIntent, Name: "i" + strconv.Itoa(i), UID: "u"})
			}
		})},
		{name: "17 owner references", obj: mkPolicy(withOwners(nOf(17, owner)...)),
			want: []fe{{"metadata.ownerReferences", "must have at most 16 owner references, got 17"}}},
	})
}

func TestValidateQuotaAndQoS(t *testing.T) {
	runValidate(t, []validateCase{
		{name: "tenant quota zero is unlimited", obj: mkTenant(func(o *Tenant) { o.Spec.Quota = &TenantQuota{} })},
		{name: "tenant quota set", obj: mkTenant(func(o *Tenant) { o.Spec.Quota = &TenantQuota{Endpoints: 1000, VPCs: 1, Policies: 50} })},
		{name: "tenant quota negative", obj: mkTenant(func(o *Tenant) { o.Spec.Quota = &TenantQuota{Endpoints: -1, VPCs: -2, Policies: -3} }),
			want: []fe{
				{"spec.quota.endpoints", "must not be negative (0 means unlimited)"},
				{"spec.quota.vpcs", "must not be negative"},
				{"spec.quota.policies", "must not be negative"},
			}},
		{name: "vpc default policy deny", obj: mkVPC(func(o *VPC) { o.Spec.DefaultPolicy = DefaultPolicyDeny })},
		{name: "vpc default policy unknown", obj: mkVPC(func(o *VPC) { o.Spec.DefaultPolicy = "Deny" }),
			want: []fe{{"spec.defaultPolicy", `unknown default policy "Deny", want allow or deny`}}},
		{name: "vpc qos min equal to max", obj: mkVPC(func(o *VPC) { o.Spec.QoS = &VPCQoS{MinRate: "1G", MaxRate: "1000Mbit"} })},
		{name: "vpc qos only one rate", obj: mkVPC(func(o *VPC) { o.Spec.QoS = &VPCQoS{MinRate: "100M"} })},
		{name: "vpc qos empty", obj: mkVPC(func(o *VPC) { o.Spec.QoS = &VPCQoS{} })},
		{name: "vpc qos min above max", obj: mkVPC(func(o *VPC) { o.Spec.QoS = &VPCQoS{MinRate: "1000000001", MaxRate: "1G"} }),
			want: []fe{{"spec.qos.maxRate", "must be at least spec.qos.minRate (1000000001)"}}},
		{name: "vpc qos max zero and min unparsable", obj: mkVPC(func(o *VPC) { o.Spec.QoS = &VPCQoS{MinRate: "fast", MaxRate: "0"} }),
			want: []fe{{"spec.qos.minRate", `bandwidth "fast"`}, {"spec.qos.maxRate", "greater than zero"}}},
		{name: "vpc without CIDRs still checks the rest", obj: mkVPC(func(o *VPC) { o.Spec.CIDRs, o.Spec.DefaultPolicy = nil, "none" }),
			want: []fe{{"spec.cidrs", "at least one CIDR"}, {"spec.defaultPolicy", "unknown default policy"}}},
	})
}

func TestValidatePolicy(t *testing.T) {
	port := func(p PolicyPort) func(*SecurityPolicy) {
		return func(o *SecurityPolicy) { o.Spec.Ingress[0].Ports = []PolicyPort{p} }
	}
	icmp := func(typ, code *int) func(*SecurityPolicy) {
		return port(PolicyPort{Protocol: ProtocolICMP, ICMPType: typ, ICMPCode: code})
	}
	sel := LabelSelector{MatchLabels: map[string]string{"app": "lb"}}
	runValidate(t, []validateCase{
		// spec.vpc
		{name: "vpc not found", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.VPC = "nope" }),
			want: []fe{{"spec.vpc", `VPC "nope" not found`}}},
		{name: "vpc of another tenant is not found", obj: mkPolicy(func(o *SecurityPolicy) { o.Metadata.Tenant, o.Spec.VPC = "other", "second" }),
			want: []fe{{"spec.vpc", `VPC "second" not found`}}},
		{name: "vpc invalid name", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.VPC = "Main" }),
			want: []fe{{"spec.vpc", "lower case alphanumeric"}}},
		{name: "vpc empty when the tenant has two", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.VPC = "" }),
			want: []fe{{"spec.vpc", `is required when the tenant has more than one VPC (tenant "acme" has 2)`}}},
		{name: "vpc empty when the tenant has one", obj: mkPolicy(func(o *SecurityPolicy) { o.Metadata.Tenant, o.Spec.VPC = "other", "" })},
		{name: "vpc empty when the tenant has none", obj: mkPolicy(func(o *SecurityPolicy) { o.Metadata.Tenant, o.Spec.VPC = "novpc", "" }),
			want: []fe{{"spec.vpc", `is required (tenant "novpc" has no VPC)`}}},
		{name: "update moving the policy to another VPC", old: mkPolicy(), obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.VPC = "second" })},

		// ICMP type and code
		{name: "icmp type and code at their bounds", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Ingress[0].Ports = []PolicyPort{
				{Protocol: "icmp", ICMPType: intp(0), ICMPCode: intp(0)},
				{Protocol: ProtocolICMP, ICMPType: intp(255), ICMPCode: intp(255)},
				{Protocol: ProtocolICMP, ICMPType: intp(8)},
			}
		})},
		{name: "icmp type above 255", obj: mkPolicy(icmp(intp(256), nil)),
			want: []fe{{"spec.ingress[0].ports[0].icmpType", "must be between 0 and 255"}}},
		{name: "icmp type and code negative", obj: mkPolicy(icmp(intp(-1), intp(-1))),
			want: []fe{{"spec.ingress[0].ports[0].icmpType", "between 0 and 255"}, {"spec.ingress[0].ports[0].icmpCode", "between 0 and 255"}}},
		{name: "icmp code above 255", obj: mkPolicy(icmp(intp(3), intp(256))),
			want: []fe{{"spec.ingress[0].ports[0].icmpCode", "must be between 0 and 255"}}},
		{name: "icmp code without type", obj: mkPolicy(icmp(nil, intp(0))),
			want: []fe{{"spec.ingress[0].ports[0].icmpCode", "requires icmpType"}}},
		{name: "icmp type and code with TCP", obj: mkPolicy(port(PolicyPort{Port: 80, ICMPType: intp(8), ICMPCode: intp(0)})),
			want: []fe{{"spec.ingress[0].ports[0].icmpType", "must only be set for protocol ICMP"}, {"spec.ingress[0].ports[0].icmpCode", "must only be set for protocol ICMP"}}},
		{name: "icmp type with UDP", obj: mkPolicy(port(PolicyPort{Protocol: ProtocolUDP, ICMPType: intp(0)})),
			want: []fe{{"spec.ingress[0].ports[0].icmpType", "must only be set for protocol ICMP"}}},
		{name: "port range at its bounds", obj: mkPolicy(port(PolicyPort{Protocol: ProtocolSCTP, Port: 1, EndPort: 65535}))},

		// IPv6 peers
		{name: "cidr peer IPv6", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Egress = []PolicyRule{{Peers: []PolicyPeer{{CIDR: "::/0"}}}} }),
			want: []fe{{"spec.egress[0].peers[0].cidr", "IPv6 is not supported by the data plane yet: ::/0"}}},
		{name: "cidr peer of every IPv4 address", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Egress = []PolicyRule{{Peers: []PolicyPeer{{CIDR: "0.0.0.0/0"}}}} })},

		// limits
		{name: "1000 rules per direction", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Ingress, o.Spec.Egress = nOf(1000, o.Spec.Ingress[0]), nOf(1000, PolicyRule{})
		})},
		{name: "1001 rules, not checked one by one", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Ingress = append(nOf(1000, o.Spec.Ingress[0]), PolicyRule{Peers: []PolicyPeer{{}}})
			o.Spec.Egress = nOf(1001, PolicyRule{})
		}),
			want: []fe{{"spec.ingress", "must have at most 1000 rules, got 1001"}, {"spec.egress", "must have at most 1000 rules, got 1001"}}},
		{name: "100 peers", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Peers = nOf(100, PolicyPeer{Selector: &sel}) })},
		{name: "101 peers", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Ingress[0].Peers = nOf(101, PolicyPeer{}) }),
			want: []fe{{"spec.ingress[0].peers", "must have at most 100 peers, got 101"}}},
		{name: "100 ports", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Egress[0].Ports = nOf(100, PolicyPort{Port: 443}) })},
		{name: "101 ports", obj: mkPolicy(func(o *SecurityPolicy) { o.Spec.Egress[0].Ports = nOf(101, PolicyPort{Port: -1}) }),
			want: []fe{{"spec.egress[0].ports", "must have at most 100 ports, got 101"}}},
		{name: "selector of 32 requirements", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Selector = LabelSelector{MatchLabels: labelsN(16), MatchExpressions: nOf(16, LabelSelectorRequirement{Key: "x", Operator: OpExists})}
		})},
		{name: "selector of 33 requirements, not checked one by one", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Selector = LabelSelector{MatchLabels: labelsN(16), MatchExpressions: nOf(17, LabelSelectorRequirement{Key: "-", Operator: "?"})}
		}),
			want: []fe{{"spec.selector", "must have at most 32 requirements (matchLabels and matchExpressions together), got 33"}}},
		{name: "peer selector of 33 requirements", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Ingress[0].Peers[0].Selector = &LabelSelector{MatchLabels: labelsN(33)}
		}),
			want: []fe{{"spec.ingress[0].peers[0].selector", "must have at most 32 requirements"}}},
		{name: "requirement of 64 values", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Selector = LabelSelector{MatchExpressions: []LabelSelectorRequirement{{Key: "x", Operator: OpIn, Values: nOf(64, "v")}}}
		})},
		{name: "requirement of 65 values", obj: mkPolicy(func(o *SecurityPolicy) {
			o.Spec.Selector = LabelSelector{MatchExpressions: []LabelSelectorRequirement{{Key: "x", Operator: OpIn, Values: nOf(65, "v")}}}
		}),
			want: []fe{{"spec.selector.matchExpressions[0].values", "must have at most 64 values, got 65"}}},
	})
}

func mkIntent(f ...func(*AppIntent)) *AppIntent {
	db := LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	o := &AppIntent{Metadata: meta("acme", "shop"), Spec: AppIntentSpec{
		VPC:       "main",
		Selector:  LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
		Bandwidth: &IntentBandwidth{Min: "100Mbit", Max: "1Gbit"},
		Latency:   LatencyLow,
		TalksTo: []IntentDestination{
			{PolicyPeer: PolicyPeer{Selector: &db}, Ports: []PolicyPort{{Protocol: ProtocolTCP, Port: 5432}}},
			{PolicyPeer: PolicyPeer{CIDR: "192.0.2.0/24"}},
		},
		Exposes: []IntentExposure{{Ports: []PolicyPort{{Port: 443}}, From: []PolicyPeer{{CIDR: "0.0.0.0/0"}}}},
	}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func TestValidateAppIntent(t *testing.T) {
	runValidate(t, []validateCase{
		{name: "valid", obj: mkIntent()},
		{name: "selector only", obj: &AppIntent{Metadata: meta("other", "x")}},
		{name: "exposes to anyone on any port", obj: mkIntent(func(o *AppIntent) { o.Spec.Exposes = []IntentExposure{{}} })},
		{name: "vpc empty when the tenant has two", obj: mkIntent(func(o *AppIntent) { o.Spec.VPC = "" }),
			want: []fe{{"spec.vpc", "is required when the tenant has more than one VPC"}}},
		{name: "vpc not found", obj: mkIntent(func(o *AppIntent) { o.Spec.VPC = "nope" }),
			want: []fe{{"spec.vpc", `VPC "nope" not found`}}},
		{name: "tenant not found", obj: mkIntent(func(o *AppIntent) { o.Metadata.Tenant = "ghost" }),
			want: []fe{{"metadata.tenant", `Tenant "ghost" not found`}, {"spec.vpc", `VPC "main" not found`}}},
		{name: "selector invalid", obj: mkIntent(func(o *AppIntent) { o.Spec.Selector.MatchLabels["app"] = "-" }),
			want: []fe{{"spec.selector.matchLabels[app]", "invalid label value"}}},
		{name: "bandwidth min only", obj: mkIntent(func(o *AppIntent) { o.Spec.Bandwidth.Max = "" })},
		{name: "bandwidth max only", obj: mkIntent(func(o *AppIntent) { o.Spec.Bandwidth.Min = "" })},
		{name: "bandwidth min above max", obj: mkIntent(func(o *AppIntent) { o.Spec.Bandwidth.Min = "2Gbit" }),
			want: []fe{{"spec.bandwidth.max", "must be at least spec.bandwidth.min (2Gbit)"}}},
		{name: "bandwidth max zero", obj: mkIntent(func(o *AppIntent) { o.Spec.Bandwidth = &IntentBandwidth{Max: "0"} }),
			want: []fe{{"spec.bandwidth.max", "greater than zero"}}},
		{name: "bandwidth unparsable", obj: mkIntent(func(o *AppIntent) { o.Spec.Bandwidth.Min = "lots" }),
			want: []fe{{"spec.bandwidth.min", `bandwidth "lots"`}}},
		{name: "latency unknown", obj: mkIntent(func(o *AppIntent) { o.Spec.Latency = "Low" }),
			want: []fe{{"spec.latency", `unknown latency "Low", want low or normal`}}},
		{name: "talksTo peer with neither or both", obj: mkIntent(func(o *AppIntent) {
			o.Spec.TalksTo[0].CIDR = "10.0.0.0/8"
			o.Spec.TalksTo[1].CIDR = ""
		}),
			want: []fe{{"spec.talksTo[0]", "exactly one of selector or cidr"}, {"spec.talksTo[1]", "exactly one of selector or cidr"}}},
		{name: "talksTo cidr IPv6 and selector invalid", obj: mkIntent(func(o *AppIntent) {
			o.Spec.TalksTo[0].Selector.MatchExpressions = []LabelSelectorRequirement{{Key: "a", Operator: OpIn}}
			o.Spec.TalksTo[1].CIDR = "2001:db8::/32"
		}),
			want: []fe{
				{"spec.talksTo[0].selector.matchExpressions[0].values", "non-empty"},
				{"spec.talksTo[1].cidr", "IPv6 is not supported by the data plane yet"},
			}},
		{name: "talksTo port invalid", obj: mkIntent(func(o *AppIntent) { o.Spec.TalksTo[0].Ports[0].EndPort = 1 }),
			want: []fe{{"spec.talksTo[0].ports[0].endPort", "at least port (5432)"}}},
		{name: "1000 talksTo and exposes", obj: mkIntent(func(o *AppIntent) {
			o.Spec.TalksTo, o.Spec.Exposes = nOf(1000, o.Spec.TalksTo[1]), nOf(1000, o.Spec.Exposes[0])
		})},
		{name: "1001 talksTo and exposes", obj: mkIntent(func(o *AppIntent) {
			o.Spec.TalksTo, o.Spec.Exposes = nOf(1001, IntentDestination{}), nOf(1001, o.Spec.Exposes[0])
		}),
			want: []fe{{"spec.talksTo", "must have at most 1000 entries, got 1001"}, {"spec.exposes", "must have at most 1000 entries, got 1001"}}},
		{name: "talksTo of 100 ports", obj: mkIntent(func(o *AppIntent) { o.Spec.TalksTo[0].Ports = nOf(100, PolicyPort{Port: 1}) })},
		{name: "talksTo of 101 ports", obj: mkIntent(func(o *AppIntent) { o.Spec.TalksTo[0].Ports = nOf(101, PolicyPort{Port: 1}) }),
			want: []fe{{"spec.talksTo[0].ports", "must have at most 100 ports, got 101"}}},
		{name: "exposes from 100 peers", obj: mkIntent(func(o *AppIntent) { o.Spec.Exposes[0].From = nOf(100, PolicyPeer{CIDR: "10.0.0.0/8"}) })},
		{name: "exposes from 101 peers", obj: mkIntent(func(o *AppIntent) { o.Spec.Exposes[0].From = nOf(101, PolicyPeer{CIDR: "10.0.0.0/8"}) }),
			want: []fe{{"spec.exposes[0].from", "must have at most 100 peers, got 101"}}},
		{name: "exposes from a bad peer on a bad port", obj: mkIntent(func(o *AppIntent) {
			o.Spec.Exposes[0].From = []PolicyPeer{{CIDR: "fd00::/8"}, {}}
			o.Spec.Exposes[0].Ports[0].Protocol = "gre"
		}),
			want: []fe{
				{"spec.exposes[0].ports[0].protocol", `unknown protocol "GRE"`},
				{"spec.exposes[0].from[0].cidr", "IPv6 is not supported"},
				{"spec.exposes[0].from[1]", "exactly one of selector or cidr"},
			}},
		{name: "exposes of 101 ports", obj: mkIntent(func(o *AppIntent) { o.Spec.Exposes[0].Ports = nOf(101, PolicyPort{Port: 1}) }),
			want: []fe{{"spec.exposes[0].ports", "must have at most 100 ports, got 101"}}},
	})
}

func TestDefaultRefs(t *testing.T) {
	l := world()
	tests := []struct {
		name      string
		obj, old  Object
		wantVPC   string
		wantValid bool
	}{
		{name: "policy in the tenant's only VPC", obj: &SecurityPolicy{Metadata: meta("other", "p")}, wantVPC: "main", wantValid: true},
		{name: "intent in the tenant's only VPC", obj: &AppIntent{Metadata: meta("other", "i")}, wantVPC: "main", wantValid: true},
		{name: "set vpc is kept", obj: &SecurityPolicy{Metadata: meta("other", "p"), Spec: SecurityPolicySpec{VPC: "nope"}}, wantVPC: "nope"},
		{name: "tenant of two VPCs", obj: &SecurityPolicy{Metadata: meta("acme", "p")}},
		{name: "tenant without VPC", obj: &AppIntent{Metadata: meta("novpc", "i")}},
		{name: "update keeps the stored vpc", obj: &SecurityPolicy{Metadata: meta("acme", "p")},
			old: &SecurityPolicy{Metadata: meta("acme", "p"), Spec: SecurityPolicySpec{VPC: "second"}}, wantVPC: "second", wantValid: true},
		{name: "update of an object stored without vpc", obj: &AppIntent{Metadata: meta("other", "i")},
			old: &AppIntent{Metadata: meta("other", "i")}, wantVPC: "main", wantValid: true},
		{name: "other kinds are left alone", obj: mkSubnet(), wantVPC: "main", wantValid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Default(tt.obj)
			DefaultRefs(tt.obj, tt.old, l)
			got := ""
			switch o := tt.obj.(type) {
			case *SecurityPolicy:
				got = o.Spec.VPC
			case *AppIntent:
				got = o.Spec.VPC
			case *Subnet:
				got = o.Spec.VPC
			}
			if got != tt.wantVPC {
				t.Errorf("spec.vpc %q, want %q", got, tt.wantVPC)
			}
			if err := ValidateCreate(tt.obj, l); (err == nil) != tt.wantValid {
				t.Errorf("ValidateCreate after DefaultRefs: %v, want valid %v", err, tt.wantValid)
			}
		})
	}
}
