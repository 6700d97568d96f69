package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

// apiEnv is a `weft controller` process and a client of its API, for the
// tests that need no data plane.
func apiEnv(t *testing.T) (context.Context, *client.Client) {
	t.Helper()
	cl := startController(t, t.TempDir(), freePort(t)).client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx, cl
}

func mustCreate(ctx context.Context, t *testing.T, cl *client.Client, objs ...apiv1.Object) {
	t.Helper()
	for _, o := range objs {
		if _, err := cl.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
	}
}

// network returns a tenant with one VPC "main" (10.0.0.0/16) and subnet
// "a" (10.0.0.0/20).
func network(tenant string) []apiv1.Object {
	return []apiv1.Object{
		&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: tenant}},
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "main", Tenant: tenant}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "a", Tenant: tenant}, Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.0.0/20"}},
	}
}

// TestAdmissionRace: 50 endpoints whose QoS class guarantees 100 Mbit/s
// are created at once on a host of 1 Gbit/s, through the controller's API:
// exactly 10 succeed, the other 40 are refused with 422 naming the host,
// its capacity and the committed sum, and the host's endpoints are the 10.
func TestAdmissionRace(t *testing.T) {
	ctx, cl := apiEnv(t)
	mustCreate(ctx, t, cl, network("acme")...)
	mustCreate(ctx, t, cl,
		&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: "hcap"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.1", Capacity: "1Gbit"}},
		&apiv1.QoSClass{TypeMeta: tm(apiv1.KindQoSClass), Metadata: apiv1.ObjectMeta{Name: "min100", Tenant: "acme"}, Spec: apiv1.QoSClassSpec{MinRate: "100Mbit"}})
	const n, fit = 50, 10
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		created  []string
		refused  []*apiv1.StatusError
		unwanted []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			name := fmt.Sprintf("ep-%d", i)
			_, err := cl.Create(ctx, &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "acme"},
				Spec: apiv1.EndpointSpec{Subnet: "a", Host: "hcap", QoSClass: "min100"}})
			mu.Lock()
			defer mu.Unlock()
			var se *apiv1.StatusError
			switch {
			case err == nil:
				created = append(created, name)
			case errors.As(err, &se) && se.Code == http.StatusUnprocessableEntity:
				refused = append(refused, se)
			default:
				unwanted = append(unwanted, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range unwanted {
		t.Errorf("create: %v, want success or 422", err)
	}
	if len(created) != fit || len(refused) != n-fit {
		t.Errorf("%d created, %d refused with 422; want %d and %d", len(created), len(refused), fit, n-fit)
	}
	for _, se := range refused {
		if msg := se.Error(); !strings.Contains(msg, "hcap") || !strings.Contains(msg, "1000000000") && !strings.Contains(msg, "1Gbit") {
			t.Errorf("refusal %q does not name the host and its capacity", msg)
			break
		}
	}
	objs, _, err := cl.List(ctx, apiv1.KindEndpoint, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != fit {
		t.Errorf("%d endpoints stored, want %d", len(objs), fit)
	}
	if len(refused) > 0 {
		t.Logf("%d of %d concurrent creates admitted; a refusal: %v", len(created), n, refused[0])
	}
}

// TestPolicyBadInput: policies the data plane could not express, or that
// are malformed, are refused with 422 and the paths of the faulty fields;
// overlapping and contradicting rules, selectors that match nothing and a
// direction with the most rules allowed are accepted (their meaning is
// the OR of the rules: see TestPolicy for how they are enforced).
func TestPolicyBadInput(t *testing.T) {
	ctx, cl := apiEnv(t)
	mustCreate(ctx, t, cl, network("acme")...)
	rules := func(n int) []apiv1.PolicyRule {
		rs := make([]apiv1.PolicyRule, n)
		for i := range rs {
			rs[i] = apiv1.PolicyRule{Peers: []apiv1.PolicyPeer{{CIDR: "10.0.0.0/16"}}, Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 20000 + i%40000}}}
		}
		return rs
	}
	sel := func(k, v string) *apiv1.LabelSelector {
		return &apiv1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
	icmpType, code := 8, 0
	for _, tc := range []struct {
		name   string
		spec   apiv1.SecurityPolicySpec
		fields []string // nil: accepted
	}{
		{name: "the most rules allowed", spec: apiv1.SecurityPolicySpec{Egress: rules(apiv1.MaxRules)}},
		{name: "one rule too many", spec: apiv1.SecurityPolicySpec{Egress: rules(apiv1.MaxRules + 1)}, fields: []string{"spec.egress"}},
		{name: "overlapping and contradicting rules", spec: apiv1.SecurityPolicySpec{
			Selector: *sel("role", "db"),
			Ingress: []apiv1.PolicyRule{
				{Peers: []apiv1.PolicyPeer{{CIDR: "10.0.0.0/16"}, {CIDR: "10.0.1.0/24"}, {Selector: sel("role", "web")}},
					Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 5000, EndPort: 6000}, {Protocol: "TCP", Port: 5432}}},
				{}, // every peer, every port: the rules above add nothing
			}}},
		{name: "a selector that matches nothing", spec: apiv1.SecurityPolicySpec{Selector: *sel("role", "nobody"), Ingress: []apiv1.PolicyRule{}}},
		{name: "an unknown selector operator", spec: apiv1.SecurityPolicySpec{Selector: apiv1.LabelSelector{
			MatchExpressions: []apiv1.LabelSelectorRequirement{{Key: "role", Operator: "Like", Values: []string{"d*"}}}}},
			fields: []string{"spec.selector.matchExpressions[0].operator"}},
		{name: "an IPv6 peer", spec: apiv1.SecurityPolicySpec{Ingress: []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{CIDR: "2001:db8::/32"}}}}},
			fields: []string{"spec.ingress[0].peers[0].cidr"}},
		{name: "a port with ICMP", spec: apiv1.SecurityPolicySpec{Ingress: []apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Protocol: "ICMP", Port: 80}}}}},
			fields: []string{"spec.ingress[0].ports[0].port"}},
		{name: "an ICMP type with TCP", spec: apiv1.SecurityPolicySpec{Ingress: []apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Protocol: "TCP", ICMPType: &icmpType}}}}},
			fields: []string{"spec.ingress[0].ports[0].icmpType"}},
		{name: "an ICMP code without a type", spec: apiv1.SecurityPolicySpec{Egress: []apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Protocol: "ICMP", ICMPCode: &code}}}}},
			fields: []string{"spec.egress[0].ports[0].icmpCode"}},
		{name: "an inverted port range", spec: apiv1.SecurityPolicySpec{Egress: []apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Protocol: "UDP", Port: 100, EndPort: 10}}}}},
			fields: []string{"spec.egress[0].ports[0].endPort"}},
		{name: "a peer with both a selector and a CIDR", spec: apiv1.SecurityPolicySpec{Egress: []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{CIDR: "10.0.0.0/8", Selector: sel("a", "b")}}}}},
			fields: []string{"spec.egress[0].peers[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.NewReplacer(" ", "-", "'", "").Replace(tc.name)
			_, err := cl.Create(ctx, &apiv1.SecurityPolicy{TypeMeta: tm(apiv1.KindSecurityPolicy),
				Metadata: apiv1.ObjectMeta{Name: name, Tenant: "acme"}, Spec: tc.spec})
			if tc.fields == nil {
				if err != nil {
					t.Fatalf("create: %v, want it accepted", err)
				}
				return
			}
			var se *apiv1.StatusError
			if !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity {
				t.Fatalf("create = %v, want 422", err)
			}
			var got []string
			for _, c := range se.Causes {
				got = append(got, c.Field)
			}
			for _, f := range tc.fields {
				found := false
				for _, g := range got {
					found = found || g == f || strings.HasPrefix(g, f+".") || strings.HasPrefix(g, f+"[")
				}
				if !found {
					t.Errorf("422 names fields %q, want %q among them (%v)", got, f, err)
				}
			}
		})
	}
}
