package compile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// peerWorld is one tenant with VPCs main and other, a tenant globex whose
// VPC overlaps, and endpoints of varied labels on five hosts:
//
//	acme/main:  web-1 (h1, app=web tier=fe), web-2 (h2, app=web tier=fe),
//	            api-1 (h2, app=api), db-1 (h3, app=db),
//	            db-2 (h3, app=db env=prod), x (h4, no labels)
//	acme/other: o-db (h5, app=db)
//	globex/main: g-db (h5, app=db)
func peerWorld(e *env) {
	var hosts []apiv1.Object
	for _, h := range []string{"h1", "h2", "h3", "h4", "h5"} {
		hosts = append(hosts, host(h, "192.0.2."+h[1:]))
	}
	e.create(tenant("acme"), tenant("globex"))
	e.create(hosts...)
	e.create(vpc("acme", "main", "10.0.0.0/16"), vpc("acme", "other", "10.1.0.0/16"), vpc("globex", "main", "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"), subnet("acme", "c", "other", "10.1.0.0/24"),
		subnet("globex", "a", "main", "10.0.1.0/24"))
	e.create(endpoint("acme", "web-1", "a", "h1", "app", "web", "tier", "fe"),
		endpoint("acme", "web-2", "a", "h2", "app", "web", "tier", "fe"),
		endpoint("acme", "api-1", "a", "h2", "app", "api"),
		endpoint("acme", "db-1", "a", "h3", "app", "db"),
		endpoint("acme", "db-2", "a", "h3", "app", "db", "env", "prod"),
		endpoint("acme", "x", "a", "h4"),
		endpoint("acme", "o-db", "c", "h5", "app", "db"),
		endpoint("globex", "g-db", "a", "h5", "app", "db"))
}

// idOf returns the identity the registry gave an endpoint.
func idOf(e *env, tenant, name string) uint32 {
	e.t.Helper()
	id := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, tenant, name).Status.Identity
	if id == 0 {
		e.t.Fatalf("endpoint %s/%s has no identity", tenant, name)
	}
	return id
}

// idsOf returns the distinct identities of acme's endpoints, sorted.
func idsOf(e *env, names ...string) []uint32 {
	e.t.Helper()
	var ids []uint32
	for _, n := range names {
		ids = append(ids, idOf(e, "acme", n))
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// hostsOf returns the /32 prefixes of acme's endpoints, sorted by address.
func hostsOf(e *env, names ...string) []string {
	e.t.Helper()
	var addrs []netip.Addr
	for _, n := range names {
		addrs = append(addrs, netip.MustParseAddr(get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", n).Status.IP))
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	var out []string
	for _, a := range addrs {
		out = append(out, a.String()+"/32")
	}
	return out
}

func sel(kv ...string) *apiv1.LabelSelector {
	s := &apiv1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func intp(n int) *int { return &n }

// TestCompiledRules is the truth table of the compiler's rules: selector
// and CIDR peers, ports and isolation, as the agents get them.
func TestCompiledRules(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: peerWorld})
	any4 := func(p uint8, first, last uint16) view.Port {
		return view.Port{Protocol: p, First: first, Last: last, ICMPType: -1, ICMPCode: -1}
	}
	rule := func(r view.Rule) []view.Rule { return []view.Rule{r} }
	const in0, out0 = "acme/p ingress[0]", "acme/p egress[0]"
	tests := []struct {
		name            string
		ingress, egress []apiv1.PolicyRule
		want            *view.Policy // Tenant, Name, VPC, Applies filled in
	}{
		{"ingress from a selector: the identities of its label sets",
			[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: sel("app", "db")}}}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0, Identities: idsOf(e, "db-1", "db-2")})}},
		{"ingress from a set expression",
			[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: &apiv1.LabelSelector{MatchExpressions: []apiv1.LabelSelectorRequirement{
				{Key: "app", Operator: apiv1.OpIn, Values: []string{"web", "db"}}}}}}}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0, Identities: idsOf(e, "web-1", "db-1", "db-2")})}},
		{"ingress from the empty selector: every identity of the VPC, none of another VPC or tenant",
			[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: &apiv1.LabelSelector{}}}}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0, Identities: idsOf(e, "web-1", "api-1", "db-1", "db-2", "x")})}},
		{"ingress from DoesNotExist matches the unlabelled",
			[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: &apiv1.LabelSelector{MatchExpressions: []apiv1.LabelSelectorRequirement{
				{Key: "app", Operator: apiv1.OpDoesNotExist}}}}}}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0, Identities: idsOf(e, "x")})}},
		{"a selector that matches nothing allows nothing",
			[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: sel("app", "nope")}}}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0})}},
		{"ingress from a CIDR and a selector",
			[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{CIDR: "192.0.2.0/24"}, {Selector: sel("app", "api")}}}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0, Identities: idsOf(e, "api-1"), Prefixes: []string{"192.0.2.0/24"}})}},
		{"no peers: all peers",
			[]apiv1.PolicyRule{{}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0, AllPeers: true})}},
		{"egress to a selector: the addresses of its endpoints, on any host",
			nil, []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: sel("app", "db")}}}},
			&view.Policy{EgressIsolated: true, Egress: rule(view.Rule{Name: out0, Prefixes: hostsOf(e, "db-1", "db-2")})}},
		{"egress to CIDRs: masked, sorted, distinct, after the addresses they cover",
			nil, []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{CIDR: "10.0.0.0/8"}, {Selector: sel("app", "api")}, {CIDR: "10.0.0.0/8"}, {CIDR: "0.0.0.0/0"}}}},
			&view.Policy{EgressIsolated: true, Egress: rule(view.Rule{Name: out0,
				Prefixes: append([]string{"0.0.0.0/0", "10.0.0.0/8"}, hostsOf(e, "api-1")...)})}},
		{"ports: ranges, all ports, ICMP type and code",
			[]apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{
				{Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 1000, EndPort: 2000}, {Protocol: "SCTP"},
				{Protocol: "ICMP", ICMPType: intp(8), ICMPCode: intp(0)}, {Protocol: "ICMP", ICMPType: intp(3)}, {Protocol: "ICMP"},
			}}}, nil,
			&view.Policy{IngressIsolated: true, Ingress: rule(view.Rule{Name: in0, AllPeers: true, Ports: []view.Port{
				any4(6, 80, 80), any4(17, 1000, 2000), any4(132, 0, 0),
				{Protocol: 1, ICMPType: 8, ICMPCode: 0}, {Protocol: 1, ICMPType: 3, ICMPCode: -1}, {Protocol: 1, ICMPType: -1, ICMPCode: -1},
			}})}},
		{"an empty ingress isolates it (deny all in), egress left alone",
			[]apiv1.PolicyRule{}, nil,
			&view.Policy{IngressIsolated: true}},
		{"an empty egress isolates it (deny all out)",
			nil, []apiv1.PolicyRule{},
			&view.Policy{EgressIsolated: true}},
		{"rules named by direction and index",
			[]apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Port: 1}}}, {Ports: []apiv1.PolicyPort{{Port: 2}}}},
			[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{CIDR: "192.0.2.1/32"}}}},
			&view.Policy{IngressIsolated: true, EgressIsolated: true,
				Ingress: []view.Rule{{Name: in0, AllPeers: true, Ports: []view.Port{any4(6, 1, 1)}}, {Name: "acme/p ingress[1]", AllPeers: true, Ports: []view.Port{any4(6, 2, 2)}}},
				Egress:  rule(view.Rule{Name: out0, Prefixes: []string{"192.0.2.1/32"}})}},
	}
	key := wire.ResourceKey{Type: view.TypePolicy, ID: "acme/p"}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy("acme", "main", "p", map[string]string{"app": "web"})
			p.Spec.Ingress, p.Spec.Egress = tt.ingress, tt.egress
			if i == 0 {
				e.create(p)
			} else {
				p.Metadata.ResourceVersion = ""
				e.update(p)
			}
			want := *tt.want
			want.Tenant, want.Name, want.VPC, want.Applies = "acme", "p", "main", []string{"acme/web-1"}
			if diff := cmp.Diff(&want, e.snapshot("h1")[key]); diff != "" {
				t.Errorf("policy on h1 (-want +got):\n%s", diff)
			}
			// The resource, encoded once per policy and completed per
			// host, is what view.Encode writes.
			d, err := e.c.Delta("h1", 0)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := view.Encode(&want)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range d.Upserts {
				if r.Key == key && string(r.Bytes()) != string(enc.Data) {
					t.Errorf("resource data\n%s\nview.Encode writes\n%s", r.Bytes(), enc.Data)
				}
			}
		})
	}
}

// TestPeerDependencies runs writes that change, or do not change, the
// compiled peers of policies, and checks which hosts were recomputed and
// whose views changed: exactly the hosts whose views change.
//
// Views: acme/in-db (app=web, ingress from app=db) is on h1 and h2
// (web-1, web-2); acme/out-db (app=api, egress to app=db) on h2 (api-1).
// h3 holds db-1 and db-2, h4 x, h5 o-db (acme/other) and g-db (globex).
func TestPeerDependencies(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: func(e *env) {
		peerWorld(e)
		in := policy("acme", "main", "in-db", map[string]string{"app": "web"})
		in.Spec.Ingress[0].Peers = []apiv1.PolicyPeer{{Selector: sel("app", "db")}}
		out := policy("acme", "main", "out-db", map[string]string{"app": "api"})
		out.Spec.Ingress = nil
		out.Spec.Egress = []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: sel("app", "db")}}}}
		e.create(in, out)
	}})
	hosts := []string{"h1", "h2", "h3", "h4", "h5"}
	relabel := func(name string, kv ...string) {
		ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", name)
		ep.Metadata.Labels = sel(kv...).MatchLabels
		e.update(ep)
	}
	steps := []step{
		{"an endpoint with an existing identity: egress peers (h2) and its host", func() {
			e.create(endpoint("acme", "db-3", "a", "h4", "app", "db"))
		}, []string{"h2", "h4"}, []string{"h2", "h4"}},
		{"an endpoint with a new identity: ingress (h1, h2), egress (h2) and its host", func() {
			e.create(endpoint("acme", "db-4", "a", "h4", "app", "db", "tier", "x"))
		}, []string{"h1", "h2", "h4"}, []string{"h1", "h2", "h4"}},
		{"relabelled out of the selectors: its identity and address go", func() {
			relabel("db-4", "app", "cache")
		}, []string{"h1", "h2", "h4"}, []string{"h1", "h2", "h4"}},
		{"relabelled within the selector, to an identity others hold: address stays, identity goes", func() {
			relabel("db-2", "app", "db")
		}, []string{"h1", "h2", "h3"}, []string{"h1", "h2", "h3"}},
		{"deleted, its identity still held by others: only its address goes", func() {
			e.delete(apiv1.KindEndpoint, "acme", "db-3")
		}, []string{"h2", "h4"}, []string{"h2", "h4"}},
		{"an endpoint no selector matches: its host only", func() {
			e.create(endpoint("acme", "c-2", "a", "h3", "app", "cache"))
		}, []string{"h3"}, []string{"h3"}},
		{"re-addressed: egress peers and its host", func() {
			ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "db-1")
			ep.Status.IP = "10.0.1.250"
			e.put(ep)
		}, []string{"h2", "h3"}, []string{"h2", "h3"}},
		{"status only: nothing", func() {
			ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "db-1")
			ep.Status.Phase = apiv1.PhaseFailed
			e.put(ep)
		}, nil, nil},
		{"an endpoint of another VPC matching the selectors: its host only", func() {
			e.create(endpoint("acme", "o-db-2", "c", "h5", "app", "db", "tier", "y"))
		}, []string{"h5"}, []string{"h5"}},
		{"an endpoint of another tenant: its host only", func() {
			e.create(endpoint("globex", "g-db-2", "a", "h5", "app", "db", "tier", "y"))
		}, []string{"h5"}, []string{"h5"}},
		{"policy peers changed: the hosts that hold it", func() {
			p := get[*apiv1.SecurityPolicy](e, apiv1.KindSecurityPolicy, "acme", "in-db")
			p.Spec.Ingress[0].Peers[0].Selector = sel("app", "cache")
			e.update(p)
		}, []string{"h1", "h2"}, []string{"h1", "h2"}},
		{"policy relabelled: nothing", func() {
			p := get[*apiv1.SecurityPolicy](e, apiv1.KindSecurityPolicy, "acme", "in-db")
			p.Metadata.Labels = map[string]string{"team": "a"}
			e.update(p)
		}, nil, nil},
		{"policy created: the hosts of what it selects", func() {
			e.create(policy("acme", "main", "caches", map[string]string{"app": "cache"}))
		}, []string{"h3", "h4"}, []string{"h3", "h4"}},
		{"policy of another VPC: the hosts of what it selects there", func() {
			e.create(policy("acme", "other", "o", map[string]string{"app": "db"}))
		}, []string{"h5"}, []string{"h5"}},
		{"policy selector moved: the hosts that held it and those it selects now", func() {
			p := get[*apiv1.SecurityPolicy](e, apiv1.KindSecurityPolicy, "acme", "caches")
			p.Spec.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}
			e.update(p)
		}, []string{"h2", "h3", "h4"}, []string{"h2", "h3", "h4"}},
		{"policy deleted: the hosts that held it", func() { e.delete(apiv1.KindSecurityPolicy, "acme", "out-db") },
			[]string{"h2"}, []string{"h2"}},
		{"VPC default policy: the hosts of the VPC", func() {
			v := get[*apiv1.VPC](e, apiv1.KindVPC, "acme", "main")
			v.Spec.DefaultPolicy = apiv1.DefaultPolicyDeny
			e.update(v)
		}, []string{"h1", "h2", "h3", "h4"}, []string{"h1", "h2", "h3", "h4"}},
		{"VPC qos: the hosts of the VPC", func() {
			v := get[*apiv1.VPC](e, apiv1.KindVPC, "acme", "other")
			v.Spec.QoS = &apiv1.VPCQoS{MaxRate: "1Gbit"}
			e.update(v)
		}, []string{"h5"}, []string{"h5"}},
		{"VPC labels: nothing", func() {
			v := get[*apiv1.VPC](e, apiv1.KindVPC, "acme", "other")
			v.Metadata.Labels = map[string]string{"team": "a"}
			e.update(v)
		}, nil, nil},
	}
	e.steps(t, hosts, steps)
}

// TestPolicyData checks that a compiled policy completed for a host is
// what view.Encode writes for the host's view.Policy, whatever the IDs.
func TestPolicyData(t *testing.T) {
	p := view.Policy{Tenant: "acme", Name: "p", VPC: "main", IngressIsolated: true,
		Ingress: []view.Rule{{Name: "acme/p ingress[0]", AllPeers: true, Ports: []view.Port{tcp80}}}}
	b, err := json.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	compiled := bytes.TrimSuffix(b, []byte("null}"))
	for _, tc := range []struct {
		name    string
		applies []string
	}{
		{"one", []string{"acme/web-1"}},
		{"several", []string{"acme/a", "acme/b.c", "acme/d-e"}},
		{"escaped by encoding/json", []string{"acme/a", "acme/<b>&\"c\\"}},
		{"not ASCII", []string{"acme/ü", "acme/\u2028", "acme/\xff"}},
		{"control", []string{"acme/\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Applies = tc.applies
			r, err := view.Encode(&p)
			if err != nil {
				t.Fatal(err)
			}
			if got := append(slices.Clip(compiled), policyTail(tc.applies)...); !bytes.Equal(got, r.Data) {
				t.Errorf("compiled and policyTail = %s, view.Encode = %s", got, r.Data)
			}
		})
	}
}

// TestSelectionFollowsChanges checks which policies each host's view
// holds, and for which of its endpoints, as endpoints are relabelled and
// policies created, changed and deleted. The compiler matches selectors
// once per label set and keeps the answer until a policy changes: web-1
// (h1) and web-2 (h2) share a label set, db-1 and db-2 (h3) have two.
func TestSelectionFollowsChanges(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: peerWorld})
	hosts := []string{"h1", "h2", "h3", "h4"}
	held := func() map[string]map[string][]string { // host → policy → applies
		out := map[string]map[string][]string{}
		for _, h := range hosts {
			for _, v := range e.snapshot(h) {
				if p, ok := v.(*view.Policy); ok {
					if out[h] == nil {
						out[h] = map[string][]string{}
					}
					out[h][p.Name] = p.Applies
				}
			}
		}
		return out
	}
	steps := []struct {
		name string
		do   func()
		want map[string]map[string][]string
	}{
		{"policy p selects app=web", func() {
			e.create(policy("acme", "main", "p", map[string]string{"app": "web"}))
		}, map[string]map[string][]string{"h1": {"p": {"acme/web-1"}}, "h2": {"p": {"acme/web-2"}}}},
		{"web-2 relabelled out of it", func() {
			ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-2")
			ep.Metadata.Labels = map[string]string{"app": "db"}
			e.update(ep)
		}, map[string]map[string][]string{"h1": {"p": {"acme/web-1"}}}},
		{"p's selector moves to app=db", func() {
			p := get[*apiv1.SecurityPolicy](e, apiv1.KindSecurityPolicy, "acme", "p")
			p.Spec.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
			e.update(p)
		}, map[string]map[string][]string{"h2": {"p": {"acme/web-2"}}, "h3": {"p": {"acme/db-1", "acme/db-2"}}}},
		{"policy q selects app=web", func() {
			e.create(policy("acme", "main", "q", map[string]string{"app": "web"}))
		}, map[string]map[string][]string{"h1": {"q": {"acme/web-1"}}, "h2": {"p": {"acme/web-2"}},
			"h3": {"p": {"acme/db-1", "acme/db-2"}}}},
		{"web-1 relabelled into p too", func() {
			ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-1")
			ep.Metadata.Labels = map[string]string{"app": "db", "also": "web"}
			e.update(ep)
		}, map[string]map[string][]string{"h1": {"p": {"acme/web-1"}}, "h2": {"p": {"acme/web-2"}},
			"h3": {"p": {"acme/db-1", "acme/db-2"}}}},
		{"p deleted", func() { e.delete(apiv1.KindSecurityPolicy, "acme", "p") }, map[string]map[string][]string{}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			if diff := cmp.Diff(s.want, held()); diff != "" {
				t.Errorf("policies held (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSelections checks the policies a host's build finds selecting its
// endpoints, with few policies (a list) and with many (a map too).
func TestSelections(t *testing.T) {
	for _, n := range []int{1, 3, 16, 17, 40} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var s selections
			want := map[string][]string{}
			var order []string
			for ep := range 3 {
				for p := range n {
					if (p+ep)%2 == 0 || ep == 1 {
						name, id := fmt.Sprintf("p%d", (p*7)%n), fmt.Sprintf("t/e%d", ep)
						s.add(name, id)
						if want[name] == nil {
							order = append(order, name)
						}
						want[name] = append(want[name], id)
					}
				}
			}
			var got []string
			for _, e := range s.list {
				got = append(got, e.name)
				if diff := cmp.Diff(want[e.name], e.applies); diff != "" {
					t.Errorf("%s applies (-want +got):\n%s", e.name, diff)
				}
			}
			if diff := cmp.Diff(order, got); diff != "" {
				t.Errorf("policies (-want +got):\n%s", diff)
			}
		})
	}
}
