package datapath_test

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/weftnet/weft/datapath"
)

// TestNormalizeInvalidVPC: problems confined to one VPC fail only that VPC
// (Desired.Invalid), never the whole state.
func TestNormalizeInvalidVPC(t *testing.T) {
	rule := func(r datapath.Rule) func(d *datapath.Desired) {
		return func(d *datapath.Desired) {
			d.Endpoints[1].Policy = &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true}
			if len(r.Identities) > 0 && r.Name == "egress" {
				d.Endpoints[1].Policy.Egress = []datapath.Rule{r}
				return
			}
			d.Endpoints[1].Policy.Ingress = []datapath.Rule{r}
		}
	}
	tcp := func(first, last uint16) datapath.Port {
		return datapath.Port{Protocol: datapath.ProtoTCP, First: first, Last: last}
	}
	icmp := func(typ, code int16) datapath.Port {
		return datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: typ, ICMPCode: code}
	}
	tests := []struct {
		name   string
		mutate func(d *datapath.Desired)
		vnis   []uint32 // failed VPCs
		want   string   // part of each error
	}{
		{"identity too large", func(d *datapath.Desired) { d.Endpoints[1].Identity = datapath.MaxIdentity + 1 }, []uint32{100}, "identity"},
		{"rule identity zero", rule(datapath.Rule{Identities: []uint32{0}}), []uint32{100}, "identity 0"},
		{"rule identity too large", rule(datapath.Rule{Identities: []uint32{1 << 16}}), []uint32{100}, "out of range"},
		{"egress identities", rule(datapath.Rule{Name: "egress", Identities: []uint32{5}}), []uint32{100}, "ingress peers only"},
		{"unmasked peer", rule(datapath.Rule{Prefixes: []netip.Prefix{p("10.0.0.1/8")}}), []uint32{100}, "not a network prefix"},
		{"invalid peer", rule(datapath.Rule{Prefixes: []netip.Prefix{{}}}), []uint32{100}, "not a network prefix"},
		{"reversed ports", rule(datapath.Rule{Ports: []datapath.Port{tcp(90, 80)}}), []uint32{100}, "port range"},
		{"range from zero", rule(datapath.Rule{Ports: []datapath.Port{tcp(0, 80)}}), []uint32{100}, "port range"},
		{"ICMP with ports", rule(datapath.Rule{Ports: []datapath.Port{{Protocol: datapath.ProtoICMP, First: 1}}}), []uint32{100}, "not ports"},
		{"ICMP code without type", rule(datapath.Rule{Ports: []datapath.Port{icmp(-1, 3)}}), []uint32{100}, "ICMP type"},
		{"ICMP type too large", rule(datapath.Rule{Ports: []datapath.Port{icmp(256, -1)}}), []uint32{100}, "ICMP type"},
		{"unknown protocol", rule(datapath.Rule{Ports: []datapath.Port{{Protocol: 47}}}), []uint32{100}, "protocol 47"},
		{"same netns and ifname", func(d *datapath.Desired) {
			d.Endpoints[0].Netns, d.Endpoints[0].IfName = "/proc/1/ns/net", "net1"
		}, []uint32{100, 200}, "net1 in /proc/1/ns/net"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := base()
			tc.mutate(d)
			n, err := d.Normalize()
			if err != nil {
				t.Fatalf("Normalize = %v; want only VPCs %v invalid", err, tc.vnis)
			}
			if len(n.Invalid) != len(tc.vnis) {
				t.Errorf("Invalid = %v; want VPCs %v", n.Invalid, tc.vnis)
			}
			for _, vni := range tc.vnis {
				err := n.Invalid[vni]
				if !errors.Is(err, datapath.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Invalid[%d] = %v; want ErrInvalid mentioning %q", vni, err, tc.want)
				}
			}
			// A driver normalizes the copy it is given again (an agent
			// hands it Normalize's result): the same VPCs fail.
			again, err := n.Normalize()
			if err != nil || len(again.Invalid) != len(n.Invalid) {
				t.Errorf("Normalize of the normalized copy: Invalid = %v, %v; want VPCs %v", again.Invalid, err, tc.vnis)
			}
		})
	}
	// Normalize recomputes Invalid: a stale one on the input is ignored.
	d := base()
	d.Invalid = map[uint32]error{100: errors.New("stale")}
	if n, err := d.Normalize(); err != nil || n.Invalid != nil {
		t.Errorf("Normalize of a valid state with a stale Invalid = %v, %v", n.Invalid, err)
	}
}

func TestNormalizePolicy(t *testing.T) {
	in := base()
	pol := &datapath.EndpointPolicy{
		IngressIsolated: true,
		Ingress: []datapath.Rule{{Name: "web", Identities: []uint32{7}, Prefixes: []netip.Prefix{p("192.0.2.0/24")},
			Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 80}, {Protocol: datapath.ProtoUDP, First: 5000, Last: 5010}}}},
		Egress: []datapath.Rule{{AllPeers: true}},
	}
	in.Endpoints[1].Policy = pol
	n, err := in.Normalize()
	if err != nil || n.Invalid != nil {
		t.Fatalf("Normalize = %v, %v", n.Invalid, err)
	}
	got := n.Endpoints[0].Policy // acme/x sorts first
	want := &datapath.EndpointPolicy{
		IngressIsolated: true,
		Ingress: []datapath.Rule{{Name: "web", Identities: []uint32{7}, Prefixes: []netip.Prefix{p("192.0.2.0/24")},
			Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 80, Last: 80}, {Protocol: datapath.ProtoUDP, First: 5000, Last: 5010}}}},
		Egress: []datapath.Rule{{AllPeers: true}},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("normalized policy (-want +got):\n%s", diff)
	}
	// Deep: the copy shares nothing with the input.
	got.Ingress[0].Identities[0] = 8
	got.Ingress[0].Ports[0].First = 81
	got.Ingress[0].Prefixes[0] = p("10.0.0.0/8")
	if pol.Ingress[0].Identities[0] != 7 || pol.Ingress[0].Ports[0].First != 80 || pol.Ingress[0].Prefixes[0] != p("192.0.2.0/24") {
		t.Error("Normalize shares policy storage with its input")
	}
}

// TestNormalizeSharedPolicy: endpoints given one policy share one
// normalized copy of it (not one copy each), still apart from the input;
// an invalid shared policy fails the VPC of each endpoint it applies to.
func TestNormalizeSharedPolicy(t *testing.T) {
	in := base()
	in.Endpoints = append(in.Endpoints, datapath.Endpoint{ID: "acme/y", VNI: 100, Subnet: "a", IP: a("10.0.1.11"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}})
	pol := &datapath.EndpointPolicy{IngressIsolated: true,
		Ingress: []datapath.Rule{{Name: "web", Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 80}}}}}
	in.Endpoints[1].Policy, in.Endpoints[2].Policy = pol, pol
	n, err := in.Normalize()
	if err != nil || n.Invalid != nil {
		t.Fatalf("Normalize = %v, %v", n.Invalid, err)
	}
	x, y := n.Endpoints[0].Policy, n.Endpoints[1].Policy // acme/x, acme/y
	if x == nil || x != y || x == pol {
		t.Fatalf("policies of acme/x and acme/y: %p and %p (input %p); want one copy, not the input", x, y, pol)
	}
	if got := x.Ingress[0].Ports[0].Last; got != 80 || pol.Ingress[0].Ports[0].Last != 0 {
		t.Errorf("Last: copy %d, input %d; want 80 and 0", got, pol.Ingress[0].Ports[0].Last)
	}

	in = base()
	in.Endpoints = append(in.Endpoints, datapath.Endpoint{ID: "zeta/y", VNI: 200, Subnet: "a", IP: a("10.0.1.11"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}})
	bad := &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{Identities: []uint32{0}}}}
	in.Endpoints[1].Policy, in.Endpoints[2].Policy = bad, bad // acme/x, zeta/y
	n, err = in.Normalize()
	if err != nil || len(n.Invalid) != 2 || n.Invalid[100] == nil || n.Invalid[200] == nil {
		t.Fatalf("Normalize = %v, %v; want VPCs 100 and 200 invalid", n.Invalid, err)
	}
}

// TestAllows is the truth table of the policy semantics every driver
// enforces.
func TestAllows(t *testing.T) {
	tcp := func(port uint16) datapath.Flow {
		return datapath.Flow{Proto: datapath.ProtoTCP, Peer: a("10.0.1.20"), PeerIdentity: 7, Port: port}
	}
	from := func(f datapath.Flow, peer string, id uint32) datapath.Flow {
		f.Peer, f.PeerIdentity = a(peer), id
		return f
	}
	proto := func(f datapath.Flow, pr datapath.Protocol) datapath.Flow { f.Proto = pr; return f }
	echo := datapath.Flow{Proto: datapath.ProtoICMP, Peer: a("10.0.1.20"), PeerIdentity: 7, ICMPType: 8}
	unreach := datapath.Flow{Proto: datapath.ProtoICMP, Peer: a("10.0.1.20"), PeerIdentity: 7, ICMPType: 3, ICMPCode: 3}
	ports := func(ps ...datapath.Port) []datapath.Port { return ps }
	tcpRange := func(first, last uint16) datapath.Port {
		return datapath.Port{Protocol: datapath.ProtoTCP, First: first, Last: last}
	}
	in := func(rs ...datapath.Rule) *datapath.EndpointPolicy {
		return &datapath.EndpointPolicy{IngressIsolated: true, Ingress: rs}
	}
	tests := []struct {
		name string
		pol  *datapath.EndpointPolicy
		flow datapath.Flow
		want bool
	}{
		{"nil policy", nil, tcp(80), true},
		{"not isolated, rules ignored", &datapath.EndpointPolicy{Ingress: []datapath.Rule{{}}}, tcp(80), true},
		{"isolated, no rules", in(), tcp(80), false},
		{"empty peers match nothing", in(datapath.Rule{}), tcp(80), false},
		{"all peers", in(datapath.Rule{AllPeers: true}), tcp(80), true},
		{"all peers, other port", in(datapath.Rule{AllPeers: true, Ports: ports(tcpRange(443, 443))}), tcp(80), false},
		{"identity", in(datapath.Rule{Identities: []uint32{7}}), tcp(80), true},
		{"other identity", in(datapath.Rule{Identities: []uint32{8}}), tcp(80), false},
		{"identity 0 never matches", in(datapath.Rule{Identities: []uint32{7}}), from(tcp(80), "10.0.1.20", 0), false},
		{"prefix", in(datapath.Rule{Prefixes: []netip.Prefix{p("10.0.1.0/24")}}), from(tcp(80), "10.0.1.20", 0), true},
		{"prefix, outside", in(datapath.Rule{Prefixes: []netip.Prefix{p("10.0.2.0/24")}}), tcp(80), false},
		{"port range low end", in(datapath.Rule{AllPeers: true, Ports: ports(tcpRange(80, 90))}), tcp(80), true},
		{"port range high end", in(datapath.Rule{AllPeers: true, Ports: ports(tcpRange(80, 90))}), tcp(90), true},
		{"port range above", in(datapath.Rule{AllPeers: true, Ports: ports(tcpRange(80, 90))}), tcp(91), false},
		{"all TCP ports", in(datapath.Rule{AllPeers: true, Ports: ports(tcpRange(0, 0))}), tcp(65535), true},
		{"TCP rule, UDP flow", in(datapath.Rule{AllPeers: true, Ports: ports(tcpRange(0, 0))}), proto(tcp(80), datapath.ProtoUDP), false},
		{"no ports: every protocol", in(datapath.Rule{AllPeers: true}), echo, true},
		{"ICMP any", in(datapath.Rule{AllPeers: true, Ports: ports(datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: -1, ICMPCode: -1})}), unreach, true},
		{"ICMP type", in(datapath.Rule{AllPeers: true, Ports: ports(datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: 8, ICMPCode: -1})}), echo, true},
		{"ICMP other type", in(datapath.Rule{AllPeers: true, Ports: ports(datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: 8, ICMPCode: -1})}), unreach, false},
		{"ICMP type and code", in(datapath.Rule{AllPeers: true, Ports: ports(datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: 3, ICMPCode: 3})}), unreach, true},
		{"ICMP other code", in(datapath.Rule{AllPeers: true, Ports: ports(datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: 3, ICMPCode: 1})}), unreach, false},
		{"rules are ORed", in(datapath.Rule{Identities: []uint32{8}}, datapath.Rule{Identities: []uint32{7}, Ports: ports(tcpRange(80, 80))}), tcp(80), true},
		{"peer of one rule, port of another", in(datapath.Rule{Identities: []uint32{7}, Ports: ports(tcpRange(443, 443))},
			datapath.Rule{Identities: []uint32{8}, Ports: ports(tcpRange(80, 80))}), tcp(80), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.pol.AllowsIngress(tc.flow); got != tc.want {
				t.Errorf("AllowsIngress(%+v) = %v, want %v", tc.flow, got, tc.want)
			}
			// The same rules in the other direction decide the same by
			// address; identities are ingress peers only.
			if tc.pol == nil || slices.ContainsFunc(tc.pol.Ingress, func(r datapath.Rule) bool { return len(r.Identities) > 0 }) {
				return
			}
			eg := &datapath.EndpointPolicy{EgressIsolated: tc.pol.IngressIsolated, Egress: tc.pol.Ingress}
			if got := eg.AllowsEgress(tc.flow); got != tc.want {
				t.Errorf("AllowsEgress(%+v) = %v, want %v", tc.flow, got, tc.want)
			}
		})
	}
	egressByIdentity := &datapath.EndpointPolicy{EgressIsolated: true, Egress: []datapath.Rule{{Identities: []uint32{7}}}}
	if egressByIdentity.AllowsEgress(tcp(80)) {
		t.Error("an egress rule matched by identity; identities are ingress peers only")
	}
}
