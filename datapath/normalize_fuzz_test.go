package datapath_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/weftnet/weft/datapath"
)

// FuzzNormalize normalizes desired states decoded from arbitrary JSON:
// Normalize never panics and fails only with ErrInvalid; what it returns
// it returns unchanged when normalized again, leaves its input as it was,
// has its slices in canonical order and every endpoint in a VPC of the
// state.
func FuzzNormalize(f *testing.F) {
	withPolicy := base()
	withPolicy.Endpoints[0].Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{
		{Name: "zeta/p ingress[0]", Identities: []uint32{4}, Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 80, ICMPType: -1, ICMPCode: -1}}},
		{Name: "zeta/p ingress[1]", Prefixes: []netip.Prefix{p("10.0.0.0/8")}, Ports: []datapath.Port{{Protocol: datapath.ProtoICMP, ICMPType: 8, ICMPCode: -1}}},
	}}
	withPolicy.Endpoints[1].QoS = &datapath.QoS{MinRateBps: 1e6, MaxRateBps: 1e9 + 3, Priority: 2}
	withPolicy.VPCs[0].QoS = &datapath.VPCQoS{MaxRateBps: 5e9}
	for _, d := range []*datapath.Desired{base(), withPolicy, {Host: host}} {
		if _, err := d.Normalize(); err != nil {
			f.Fatalf("a seed does not normalize: %v", err)
		}
		b, err := json.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	opts := cmp.Options{
		cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}),
		cmpopts.EquateEmpty(),
		cmp.Comparer(func(a, b error) bool { return a == nil && b == nil || a != nil && b != nil && a.Error() == b.Error() }),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d datapath.Desired
		if json.Unmarshal(data, &d) != nil {
			return
		}
		var in datapath.Desired
		_ = json.Unmarshal(data, &in)
		n, err := d.Normalize()
		if err != nil {
			if !errors.Is(err, datapath.ErrInvalid) {
				t.Fatalf("Normalize: %v, want ErrInvalid", err)
			}
			return
		}
		if diff := cmp.Diff(&in, &d, opts, cmpopts.IgnoreFields(datapath.Desired{}, "Invalid")); diff != "" {
			t.Fatalf("Normalize changed its input (-before +after):\n%s", diff)
		}
		again, err := n.Normalize()
		if err != nil {
			t.Fatalf("a normalized state fails Normalize: %v", err)
		}
		if diff := cmp.Diff(n, again, opts); diff != "" {
			t.Fatalf("Normalize is not idempotent (-first +second):\n%s", diff)
		}
		vnis := map[uint32]bool{}
		for i, v := range n.VPCs {
			if i > 0 && n.VPCs[i-1].VNI >= v.VNI {
				t.Fatalf("VPCs out of order: %d before %d", n.VPCs[i-1].VNI, v.VNI)
			}
			vnis[v.VNI] = true
		}
		for i, e := range n.Endpoints {
			if i > 0 && n.Endpoints[i-1].ID >= e.ID {
				t.Fatalf("endpoints out of order: %q before %q", n.Endpoints[i-1].ID, e.ID)
			}
			if !vnis[e.VNI] {
				t.Fatalf("endpoint %s in VNI %d, which no VPC of the state has", e.ID, e.VNI)
			}
		}
	})
}
