package agent

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// desiredOpts compares desired states: addresses by value, empty as nil,
// errors by their text.
var desiredOpts = cmp.Options{
	cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}),
	cmpopts.EquateEmpty(),
	cmp.Comparer(func(a, b error) bool { return a == nil && b == nil || a != nil && b != nil && a.Error() == b.Error() }),
}

// FuzzTranslate translates view files (the form a view is persisted in,
// and loaded from at start) into a desired state: it never panics; a view
// it takes yields a state that datapath.Desired.Normalize leaves as it is,
// whose endpoints are in VPCs of the state; one it refuses fails with
// ErrInvalidView.
func FuzzTranslate(f *testing.F) {
	must := func(v any) wire.Resource {
		r, err := view.Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		return r
	}
	seeds := [][]wire.Resource{
		{must(&view.Host{Name: "h1", HostID: 7, UnderlayIP: "192.0.2.11", CapacityBps: 10e9})},
		{
			must(&view.Host{Name: "h1", UnderlayIP: "192.0.2.11"}),
			must(&view.VPC{Tenant: "acme", Name: "main", VNI: 100, CIDRs: []string{"10.0.0.0/16"}, DefaultDeny: true, MaxRateBps: 1e9,
				Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1"}, {Name: "b", CIDR: "10.0.2.0/24"}}}),
			must(&view.Endpoint{Tenant: "acme", Name: "web", VPC: "main", VNI: 100, Subnet: "a", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1",
				IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a", QoSClass: "gold", Identity: 3, Labels: map[string]string{"app": "web"}}),
			must(&view.Endpoint{Tenant: "acme", Name: "db", VPC: "main", VNI: 100, Subnet: "b", CIDR: "10.0.2.0/24",
				IP: "10.0.2.20", MAC: "02:00:0a:00:02:14", Netns: "/var/run/netns/db"}),
			must(&view.QoS{Tenant: "acme", Name: "gold", MinRateBps: 1e8, MaxRateBps: 1e9, Priority: 1, DSCP: 46}),
			must(&view.Policy{Tenant: "acme", Name: "p", VPC: "main", IngressIsolated: true, EgressIsolated: true,
				Applies: []string{"acme/db", "acme/web"},
				Ingress: []view.Rule{{Name: "acme/p ingress[0]", Identities: []uint32{3}, Ports: []view.Port{{Protocol: 6, First: 80, Last: 90, ICMPType: -1, ICMPCode: -1}}}},
				Egress:  []view.Rule{{Name: "acme/p egress[0]", Prefixes: []string{"10.0.2.0/24"}, Ports: []view.Port{{Protocol: 1, ICMPType: 8, ICMPCode: -1}}}}}),
		},
	}
	cfg := &Config{Host: "h1", UnderlayIP: netip.MustParseAddr("192.0.2.1"), UnderlayDev: "eth0"}
	for _, rs := range seeds {
		v, err := state.New("h1").Apply(&wire.Delta{ToVersion: 1, Snapshot: true, Upserts: rs})
		if err != nil {
			f.Fatal(err)
		}
		if _, err := translate(v, cfg); err != nil {
			f.Fatalf("a seed does not translate: %v", err)
		}
		b, err := v.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := state.Unmarshal(data)
		if err != nil {
			return
		}
		d, err := translate(v, cfg)
		if err != nil {
			if !errors.Is(err, ErrInvalidView) {
				t.Fatalf("translate: %v, want ErrInvalidView", err)
			}
			return
		}
		again, err := d.Normalize()
		if err != nil {
			t.Fatalf("the translated state does not normalize: %v", err)
		}
		if diff := cmp.Diff(d, again, desiredOpts); diff != "" {
			t.Fatalf("Normalize changed the translated state (-translated +normalized):\n%s", diff)
		}
		vnis := map[uint32]bool{}
		for _, vpc := range d.VPCs {
			vnis[vpc.VNI] = true
		}
		for _, e := range d.Endpoints {
			if !vnis[e.VNI] {
				t.Fatalf("endpoint %s in VNI %d, which no VPC of the state has", e.ID, e.VNI)
			}
		}
	})
}
