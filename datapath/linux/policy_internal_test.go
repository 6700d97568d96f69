package linux

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/datapath"
)

// judge decides a flow the way the kernel runs a compiled class: the
// peer's port set by identity, then by address, each accepting if the
// packet matches one of the set's exact-match keys.
func (c *policyClass) judge(f datapath.Flow) bool {
	var ids []uint32
	if c.ingress {
		for _, j := range c.ids {
			if j.id == f.PeerIdentity&datapath.MarkIdentityMask {
				ids = append(ids, j.ports)
			}
		}
	}
	a := binary.BigEndian.Uint32(f.Peer.AsSlice())
	for _, j := range c.nets {
		if j.first <= a && a <= j.last {
			ids = append(ids, j.ports)
		}
	}
	for _, id := range ids {
		if c.ports[id].Allows(f) {
			return true
		}
	}
	return false
}

func randPolicy(r *rand.Rand) []datapath.Rule {
	addr := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(3)), byte(r.IntN(8) * 32)}) }
	var rules []datapath.Rule
	for range r.IntN(5) {
		var rule datapath.Rule
		switch r.IntN(4) {
		case 0:
			rule.AllPeers = true
		case 1:
			rule.Identities = []uint32{uint32(1 + r.IntN(4)), uint32(1 + r.IntN(4))}
		default:
			for range 1 + r.IntN(3) {
				rule.Prefixes = append(rule.Prefixes, netip.PrefixFrom(addr(), []int{8, 16, 24, 27, 32}[r.IntN(5)]).Masked())
			}
		}
		for range r.IntN(3) {
			switch r.IntN(5) {
			case 0:
				rule.Ports = append(rule.Ports, datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: int16(r.IntN(3)*4 - 1), ICMPCode: -1})
			case 1:
				rule.Ports = append(rule.Ports, datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: 3, ICMPCode: int16(r.IntN(4))})
			case 2:
				rule.Ports = append(rule.Ports, datapath.Port{Protocol: datapath.ProtoUDP})
			default:
				first := uint16(1 + r.IntN(100))
				rule.Ports = append(rule.Ports, datapath.Port{Protocol: datapath.ProtoTCP, First: first, Last: first + uint16(r.IntN(40))})
			}
		}
		rules = append(rules, rule)
	}
	return rules
}

func randFlow(r *rand.Rand) datapath.Flow {
	f := datapath.Flow{
		Peer:         netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(3)), byte(r.IntN(256))}),
		PeerIdentity: uint32(r.IntN(5)),
	}
	switch r.IntN(4) {
	case 0:
		f.Proto, f.ICMPType, f.ICMPCode = datapath.ProtoICMP, uint8(r.IntN(12)), uint8(r.IntN(4))
	case 1:
		f.Proto, f.Port = datapath.ProtoUDP, uint16(r.IntN(150))
	default:
		f.Proto, f.Port = datapath.ProtoTCP, uint16(r.IntN(150))
	}
	return f
}

// TestCompileMatchesSemantics: a compiled class decides every flow as the
// reference semantics do, for random rules.
func TestCompileMatchesSemantics(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := range 300 {
		rules := randPolicy(r)
		for _, ingress := range []bool{true, false} {
			pol := &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true, Ingress: rules}
			if !ingress {
				eg := make([]datapath.Rule, len(rules))
				for j, rule := range rules {
					rule.Identities = nil
					eg[j] = rule
				}
				pol = &datapath.EndpointPolicy{EgressIsolated: true, Egress: eg}
			}
			n, err := (&datapath.Desired{Host: datapath.HostConfig{Name: "h", UnderlayIP: netip.MustParseAddr("192.0.2.1")},
				VPCs:      []datapath.VPC{{VNI: 1, Subnets: []datapath.Subnet{{Name: "a", CIDR: netip.MustParsePrefix("10.0.0.0/16")}}}},
				Endpoints: []datapath.Endpoint{{ID: "e", VNI: 1, Subnet: "a", IP: netip.MustParseAddr("10.0.0.5"), MAC: []byte{2, 0, 0, 0, 0, 1}, Policy: pol}},
			}).Normalize()
			if err != nil || n.Invalid != nil {
				t.Fatalf("normalize: %v %v", err, n.Invalid)
			}
			e := &n.Endpoints[0]
			tbl, err := compilePolicies([]*datapath.Endpoint{e})
			if err != nil {
				t.Fatal(err)
			}
			name := tbl.egress[VethName("e")]
			if ingress {
				name = tbl.ingress[VethName("e")]
			}
			c := tbl.classes[name]
			for range 200 {
				f := randFlow(r)
				want := e.Policy.AllowsEgress(f)
				if ingress {
					want = e.Policy.AllowsIngress(f)
				}
				if got := c.judge(f); got != want {
					t.Fatalf("case %d ingress=%v: rules %+v\nflow %+v: compiled %v, semantics %v", i, ingress, rules, f, got, want)
				}
			}
		}
	}
}

// TestClassNamesStable: the same rules in another order compile to the
// same class; other rules to another.
func TestClassNamesStable(t *testing.T) {
	a := []datapath.Rule{
		{Identities: []uint32{3, 1}, Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 80, Last: 80}}},
		{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
	}
	b := []datapath.Rule{a[1], {Identities: []uint32{1, 3}, Ports: a[0].Ports}}
	name := func(rs []datapath.Rule) string {
		tbl := &policyTable{classes: map[string]*policyClass{}}
		n, err := tbl.class(rs, true)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if name(a) != name(b) {
		t.Errorf("reordered rules: %s != %s", name(a), name(b))
	}
	c := append([]datapath.Rule{}, a...)
	c[0].Ports = []datapath.Port{{Protocol: datapath.ProtoTCP, First: 81, Last: 81}}
	if name(a) == name(c) {
		t.Errorf("different rules compiled to the same class %s", name(a))
	}
}

func BenchmarkCompilePolicies(b *testing.B) {
	for _, n := range []int{10, 1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rules := make([]datapath.Rule, n)
			for i := range rules {
				if i%2 == 0 {
					rules[i] = datapath.Rule{Identities: []uint32{uint32(1 + i%65000)}, Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: uint16(1 + i%60000), Last: uint16(1 + i%60000)}}}
				} else {
					rules[i] = datapath.Rule{Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + i>>16), byte(i >> 8), byte(i)}), 32)},
						Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: 53, Last: 53}}}
				}
			}
			e := &datapath.Endpoint{ID: "e", Identity: 1, Policy: &datapath.EndpointPolicy{IngressIsolated: true, Ingress: rules}}
			for b.Loop() {
				if _, err := compilePolicies([]*datapath.Endpoint{e}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
