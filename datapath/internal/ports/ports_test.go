package ports

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/datapath"
)

func TestBlocks(t *testing.T) {
	tests := []struct {
		first, last uint16
		want        []Block
	}{
		{80, 80, []Block{{6, 80, 0}}},
		{0, 65535, []Block{{6, 0, 16}}},
		{8000, 8010, []Block{{6, 8000, 3}, {6, 8008, 1}, {6, 8010, 0}}},
		{1, 7, []Block{{6, 1, 0}, {6, 2, 1}, {6, 4, 2}}},
		{65534, 65535, []Block{{6, 65534, 1}}},
	}
	for _, tc := range tests {
		s := &Set{L4: []Range{{6, tc.first, tc.last}}}
		if diff := cmp.Diff(tc.want, s.Blocks()); diff != "" {
			t.Errorf("Blocks(%d-%d) (-want +got):\n%s", tc.first, tc.last, diff)
		}
	}
}

// TestAllows compares a set's answers with datapath.Port's for every
// port of a few ranges and ICMP types.
func TestAllows(t *testing.T) {
	rule := []datapath.Port{
		{Protocol: datapath.ProtoTCP, First: 80, Last: 80},
		{Protocol: datapath.ProtoTCP, First: 8000, Last: 8010},
		{Protocol: datapath.ProtoUDP, First: 53, Last: 54},
		{Protocol: datapath.ProtoICMP, ICMPType: 8, ICMPCode: -1},
		{Protocol: datapath.ProtoICMP, ICMPType: 13, ICMPCode: 0},
	}
	s := Of(rule)
	p := &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{AllPeers: true, Ports: rule}}}
	for _, proto := range []datapath.Protocol{datapath.ProtoTCP, datapath.ProtoUDP, datapath.ProtoSCTP} {
		for port := range 1 << 16 {
			f := datapath.Flow{Proto: proto, Port: uint16(port)}
			if got, want := s.Allows(f), p.AllowsIngress(f); got != want {
				t.Fatalf("%+v: Allows %v, want %v", f, got, want)
			}
		}
	}
	for typ := range 256 {
		for _, code := range []uint8{0, 1, 255} {
			f := datapath.Flow{Proto: datapath.ProtoICMP, ICMPType: uint8(typ), ICMPCode: code}
			if got, want := s.Allows(f), p.AllowsIngress(f); got != want {
				t.Fatalf("%+v: Allows %v, want %v", f, got, want)
			}
		}
	}
}
