package intent_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/intent"
)

// shop returns a defaulted AppIntent acme/shop in VPC main selecting
// app=shop; edit adjusts its spec first.
func shop(edit func(s *apiv1.AppIntentSpec)) *apiv1.AppIntent {
	in := &apiv1.AppIntent{
		Metadata: apiv1.ObjectMeta{Name: "shop", Tenant: "acme", UID: "u-1", Generation: 1},
		Spec:     apiv1.AppIntentSpec{VPC: "main", Selector: apiv1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}},
	}
	if edit != nil {
		edit(&in.Spec)
	}
	apiv1.Default(in)
	return in
}

func intp(n int) *int { return &n }

var (
	owner   = apiv1.ObjectMeta{Name: "appintent-shop", Tenant: "acme", OwnerReferences: []apiv1.OwnerReference{{Kind: "AppIntent", Name: "shop", UID: "u-1"}}}
	appShop = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}
	appDB   = &apiv1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	pg      = []apiv1.PolicyPort{{Protocol: "TCP", Port: 5432}}
)

func policy(ingress, egress []apiv1.PolicyRule) *apiv1.SecurityPolicy {
	return &apiv1.SecurityPolicy{TypeMeta: apiv1.TypeMeta{APIVersion: "weft/v1", Kind: "SecurityPolicy"}, Metadata: owner,
		Spec: apiv1.SecurityPolicySpec{VPC: "main", Selector: appShop, Ingress: ingress, Egress: egress}}
}

func class(spec apiv1.QoSClassSpec) *apiv1.QoSClass {
	return &apiv1.QoSClass{TypeMeta: apiv1.TypeMeta{APIVersion: "weft/v1", Kind: "QoSClass"}, Metadata: owner, Spec: spec}
}

func TestCompile(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec func(s *apiv1.AppIntentSpec)
		want []apiv1.Object
	}{
		{"no needs: nothing", nil, nil},
		{"normal latency and empty bandwidth: no class", func(s *apiv1.AppIntentSpec) {
			s.Latency, s.Bandwidth = apiv1.LatencyNormal, &apiv1.IntentBandwidth{}
		}, nil},
		{"talksTo: egress only, one rule per destination", func(s *apiv1.AppIntentSpec) {
			s.TalksTo = []apiv1.IntentDestination{
				{PolicyPeer: apiv1.PolicyPeer{Selector: appDB}, Ports: []apiv1.PolicyPort{{Port: 5432}}},
				{PolicyPeer: apiv1.PolicyPeer{CIDR: "192.0.2.0/24"}},
			}
		}, []apiv1.Object{policy(nil, []apiv1.PolicyRule{
			{Peers: []apiv1.PolicyPeer{{Selector: appDB}}, Ports: pg},
			{Peers: []apiv1.PolicyPeer{{CIDR: "192.0.2.0/24"}}},
		})}},
		{"exposes: ingress only; no from is anyone", func(s *apiv1.AppIntentSpec) {
			s.Exposes = []apiv1.IntentExposure{
				{Ports: []apiv1.PolicyPort{{Protocol: "tcp", Port: 443}}},
				{Ports: []apiv1.PolicyPort{{Protocol: "ICMP", ICMPType: intp(8)}}, From: []apiv1.PolicyPeer{{CIDR: "10.0.0.0/8"}, {Selector: appDB}}},
			}
		}, []apiv1.Object{policy([]apiv1.PolicyRule{
			{Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 443}}},
			{Peers: []apiv1.PolicyPeer{{CIDR: "10.0.0.0/8"}, {Selector: appDB}}, Ports: []apiv1.PolicyPort{{Protocol: "ICMP", ICMPType: intp(8)}}},
		}, nil)}},
		{"bandwidth: class with the rates, normal priority", func(s *apiv1.AppIntentSpec) {
			s.Bandwidth = &apiv1.IntentBandwidth{Min: "100Mbit", Max: "1Gbit"}
		}, []apiv1.Object{class(apiv1.QoSClassSpec{MinRate: "100Mbit", MaxRate: "1Gbit", Priority: intp(4)})}},
		{"only a cap", func(s *apiv1.AppIntentSpec) {
			s.Bandwidth = &apiv1.IntentBandwidth{Max: "50M"}
		}, []apiv1.Object{class(apiv1.QoSClassSpec{MaxRate: "50M", Priority: intp(4)})}},
		{"low latency: priority 0, DSCP EF", func(s *apiv1.AppIntentSpec) {
			s.Latency = apiv1.LatencyLow
		}, []apiv1.Object{class(apiv1.QoSClassSpec{Priority: intp(0), DSCP: 46})}},
		{"every need: policy and class", func(s *apiv1.AppIntentSpec) {
			s.Latency = apiv1.LatencyLow
			s.Bandwidth = &apiv1.IntentBandwidth{Min: "10M"}
			s.TalksTo = []apiv1.IntentDestination{{PolicyPeer: apiv1.PolicyPeer{Selector: appDB}, Ports: pg}}
			s.Exposes = []apiv1.IntentExposure{{Ports: []apiv1.PolicyPort{{Protocol: "UDP", Port: 5000, EndPort: 5100}}}}
		}, []apiv1.Object{
			policy([]apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Protocol: "UDP", Port: 5000, EndPort: 5100}}}},
				[]apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: appDB}}, Ports: pg}}),
			class(apiv1.QoSClassSpec{MinRate: "10M", Priority: intp(0), DSCP: 46}),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := shop(tc.spec)
			got := intent.Compile(in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Compile (-want +got):\n%s", diff)
			}
			for _, o := range got {
				if errs := apiv1.ValidateObject(o); len(errs) > 0 {
					t.Errorf("%s is invalid: %v", apiv1.RefOf(o), errs)
				}
			}
		})
	}
}

// TestCompileSharesNothing: the objects are written after defaulting,
// which rewrites slices in place; the cached intent must not change.
func TestCompileSharesNothing(t *testing.T) {
	in := shop(func(s *apiv1.AppIntentSpec) {
		s.TalksTo = []apiv1.IntentDestination{{PolicyPeer: apiv1.PolicyPeer{Selector: appDB}, Ports: pg}}
		s.Exposes = []apiv1.IntentExposure{{Ports: []apiv1.PolicyPort{{Port: 443}}, From: []apiv1.PolicyPeer{{CIDR: "10.0.0.0/8"}}}}
	})
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want, err := apiv1.DecodeInto(b, apiv1.KindAppIntent)
	if err != nil {
		t.Fatal(err)
	}
	p := intent.Compile(in)[0].(*apiv1.SecurityPolicy)
	p.Spec.Selector.MatchLabels["app"] = "changed"
	p.Spec.Egress[0].Peers[0].Selector.MatchLabels["app"] = "changed"
	p.Spec.Egress[0].Ports[0].Port = 1
	p.Spec.Ingress[0].Peers[0].CIDR = "changed"
	if diff := cmp.Diff(want, apiv1.Object(in)); diff != "" {
		t.Errorf("the intent changed with its compiled policy (-before +after):\n%s", diff)
	}
}

// lookup is an apiv1.Lookup over a fixed set of objects.
type lookup []apiv1.Object

func (l lookup) Get(kind, tenant, name string) (apiv1.Object, bool) {
	for _, o := range l {
		if m := o.GetObjectMeta(); o.GetTypeMeta().Kind == kind && m.Tenant == tenant && m.Name == name {
			return o, true
		}
	}
	return nil, false
}

// List returns the objects in the order given (tests give them sorted by
// name, as the store does).
func (l lookup) List(kind, tenant string) []apiv1.Object {
	var out []apiv1.Object
	for _, o := range l {
		if o.GetTypeMeta().Kind == kind && o.GetObjectMeta().Tenant == tenant {
			out = append(out, o)
		}
	}
	return out
}

func named(name, vpc string, edit func(s *apiv1.AppIntentSpec)) *apiv1.AppIntent {
	in := shop(edit)
	in.Metadata.Name, in.Spec.VPC = name, vpc
	return in
}

func TestClassOf(t *testing.T) {
	bw := func(s *apiv1.AppIntentSpec) { s.Bandwidth = &apiv1.IntentBandwidth{Max: "1G"} }
	low := func(s *apiv1.AppIntentSpec) { s.Latency = apiv1.LatencyLow }
	rules := func(s *apiv1.AppIntentSpec) {
		s.TalksTo = []apiv1.IntentDestination{{PolicyPeer: apiv1.PolicyPeer{CIDR: "192.0.2.0/24"}}}
	}
	subnets := lookup{
		&apiv1.Subnet{TypeMeta: apiv1.TypeMeta{Kind: "Subnet"}, Metadata: apiv1.ObjectMeta{Name: "a", Tenant: "acme"}, Spec: apiv1.SubnetSpec{VPC: "main"}},
		&apiv1.Subnet{TypeMeta: apiv1.TypeMeta{Kind: "Subnet"}, Metadata: apiv1.ObjectMeta{Name: "b", Tenant: "acme"}, Spec: apiv1.SubnetSpec{VPC: "other"}},
	}
	ep := func(subnet, qos string) *apiv1.Endpoint {
		return &apiv1.Endpoint{Metadata: apiv1.ObjectMeta{Name: "e", Tenant: "acme", Labels: map[string]string{"app": "shop"}},
			Spec: apiv1.EndpointSpec{Subnet: subnet, QoSClass: qos}}
	}
	for _, tc := range []struct {
		name    string
		intents []apiv1.Object
		ep      *apiv1.Endpoint
		want    string
	}{
		{"no intent, no class", nil, ep("a", ""), ""},
		{"its own class", nil, ep("a", "gold"), "gold"},
		{"its own class wins over an intent's", []apiv1.Object{named("shop", "main", bw)}, ep("a", "gold"), "gold"},
		{"the selecting intent's class", []apiv1.Object{named("shop", "main", bw)}, ep("a", ""), "appintent-shop"},
		{"low latency is a QoS need", []apiv1.Object{named("shop", "main", low)}, ep("a", ""), "appintent-shop"},
		{"the first by name", []apiv1.Object{named("a-first", "main", low), named("shop", "main", bw)}, ep("a", ""), "appintent-a-first"},
		{"intents without QoS needs do not count", []apiv1.Object{named("a-first", "main", rules), named("shop", "main", bw)}, ep("a", ""), "appintent-shop"},
		{"only intents of the endpoint's VPC", []apiv1.Object{named("shop", "other", bw)}, ep("a", ""), ""},
		{"only intents that select it", []apiv1.Object{named("shop", "main", func(s *apiv1.AppIntentSpec) {
			bw(s)
			s.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
		})}, ep("a", ""), ""},
		{"an endpoint of a missing subnet", []apiv1.Object{named("shop", "main", bw)}, ep("gone", ""), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, o := range tc.intents {
				o.GetTypeMeta().Kind = apiv1.KindAppIntent
			}
			if got := intent.ClassOf(append(subnets, tc.intents...), tc.ep); got != tc.want {
				t.Errorf("ClassOf = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	in := shop(func(s *apiv1.AppIntentSpec) {
		s.Latency = apiv1.LatencyLow
		s.Bandwidth = &apiv1.IntentBandwidth{Min: "100Mbit", Max: "1Gbit"}
		s.TalksTo = []apiv1.IntentDestination{
			{PolicyPeer: apiv1.PolicyPeer{Selector: appDB}, Ports: pg},
			{PolicyPeer: apiv1.PolicyPeer{CIDR: "192.0.2.0/24"}},
		}
		s.Exposes = []apiv1.IntentExposure{{Ports: []apiv1.PolicyPort{{Port: 443}, {Protocol: "ICMP", ICMPType: intp(8), ICMPCode: intp(0)}}}}
	})
	in.Status.Objects = []apiv1.LocalObjectReference{{Kind: "SecurityPolicy", Name: "appintent-shop"}}
	want := []intent.Mapping{
		{"selector: app=shop in VPC main", "SecurityPolicy/appintent-shop", "applies to app=shop in VPC main"},
		{"talksTo[0]: app=db TCP 5432", "SecurityPolicy/appintent-shop", "egress[0]: to app=db on TCP 5432"},
		{"talksTo[1]: 192.0.2.0/24 all traffic", "SecurityPolicy/appintent-shop", "egress[1]: to 192.0.2.0/24 on all traffic"},
		{"exposes[0]: TCP 443, ICMP type 8 code 0 from anyone", "SecurityPolicy/appintent-shop", "ingress[0]: from anyone on TCP 443, ICMP type 8 code 0"},
		{"selector: app=shop in VPC main", "QoSClass/appintent-shop (not written)", "the class of the selected endpoints that name none"},
		{"bandwidth.min: 100Mbit", "QoSClass/appintent-shop (not written)", "minRate: 100Mbit, guaranteed on the host uplink"},
		{"bandwidth.max: 1Gbit", "QoSClass/appintent-shop (not written)", "maxRate: 1Gbit, each direction"},
		{"latency: low", "QoSClass/appintent-shop (not written)", "priority: 0, dscp: 46"},
	}
	if diff := cmp.Diff(want, intent.Explain(in)); diff != "" {
		t.Errorf("Explain (-want +got):\n%s", diff)
	}
	want = []intent.Mapping{
		{"talksTo: none", "-", "egress left alone"},
		{"exposes: none", "-", "ingress left alone"},
		{"bandwidth, latency: normal", "-", "no class: the endpoints keep their own"},
	}
	if diff := cmp.Diff(want, intent.Explain(shop(nil))); diff != "" {
		t.Errorf("Explain of an intent without needs (-want +got):\n%s", diff)
	}
}
