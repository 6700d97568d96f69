package compile

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// classOf is the AppIntent rule in the form Config.ClassOf takes: the
// endpoint's own class, else "appintent-<name>" of the first AppIntent of
// its tenant and VPC that selects it and asks for bandwidth.
func classOf(l apiv1.Lookup, ep *apiv1.Endpoint) string {
	if ep.Spec.QoSClass != "" {
		return ep.Spec.QoSClass
	}
	sn, ok := l.Get(apiv1.KindSubnet, ep.Metadata.Tenant, ep.Spec.Subnet)
	if !ok {
		return ""
	}
	for _, o := range l.List(apiv1.KindAppIntent, ep.Metadata.Tenant) {
		in := o.(*apiv1.AppIntent)
		if in.Spec.VPC == sn.(*apiv1.Subnet).Spec.VPC && in.Spec.Bandwidth != nil && in.Spec.Selector.Matches(ep.Metadata.Labels) {
			return "appintent-" + in.Metadata.Name
		}
	}
	return ""
}

// TestClassOf: with Config.ClassOf, the endpoints an AppIntent selects use
// its class, and intent changes recompute exactly their hosts.
func TestClassOf(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: peerWorld, compile: func(c *Config) { c.ClassOf = classOf }})
	hosts := []string{"h1", "h2", "h3", "h4", "h5"}
	shop := &apiv1.AppIntent{TypeMeta: tm(apiv1.KindAppIntent), Metadata: apiv1.ObjectMeta{Name: "shop", Tenant: "acme"},
		Spec: apiv1.AppIntentSpec{VPC: "main", Selector: apiv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Bandwidth: &apiv1.IntentBandwidth{Max: "1Gbit"}}}
	steps := []step{
		{"the intent's class before any endpoint uses it: nothing", func() {
			e.create(qos("acme", "appintent-shop", "", "1Gbit", 0))
		}, nil, nil},
		{"an intent: the hosts of what it selects", func() { e.create(shop) }, []string{"h1", "h2"}, []string{"h1", "h2"}},
		{"the intent relabelled: nothing", func() {
			in := get[*apiv1.AppIntent](e, apiv1.KindAppIntent, "acme", "shop")
			in.Metadata.Labels = map[string]string{"team": "a"}
			e.update(in)
		}, nil, nil},
		{"its class changed: the hosts that use it", func() {
			q := get[*apiv1.QoSClass](e, apiv1.KindQoSClass, "acme", "appintent-shop")
			q.Spec.DSCP = 46
			e.update(q)
		}, []string{"h1", "h2"}, []string{"h1", "h2"}},
		{"the intent's selector moved: the hosts of what it selected and selects", func() {
			in := get[*apiv1.AppIntent](e, apiv1.KindAppIntent, "acme", "shop")
			in.Spec.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}
			e.update(in)
		}, []string{"h1", "h2"}, []string{"h1", "h2"}}, // web-1, web-2 (h1, h2) and api-1 (h2)
	}
	e.steps(t, hosts, steps)
	classes := func(host string) map[string]string {
		out := map[string]string{}
		for k, v := range e.snapshot(host) {
			switch r := v.(type) {
			case *view.Endpoint:
				out[k.ID] = r.QoSClass
			case *view.QoS:
				out[k.String()] = r.Name
			}
		}
		return out
	}
	want := map[string]string{"acme/web-2": "", "acme/api-1": "appintent-shop",
		wire.ResourceKey{Type: view.TypeQoS, ID: "acme/appintent-shop"}.String(): "appintent-shop"}
	if diff := cmp.Diff(want, classes("h2")); diff != "" {
		t.Errorf("h2's endpoint classes (-want +got):\n%s", diff)
	}
}
