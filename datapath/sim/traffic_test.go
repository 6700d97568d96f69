package sim_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/sim"
)

// TestTraffic counts what Send and Deliver decide: delivered, denied by
// an ingress policy, no route, a remote sender; and samples every flow.
func TestTraffic(t *testing.T) {
	d := sim.New(sim.Config{FlowSampling: 1})
	defer d.Close()
	want := desired()
	want.Endpoints[1].Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{AllPeers: true,
		Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 80}}}}}
	if err := d.Set(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	db := netip.MustParseAddr("10.0.2.10")
	send := func(p sim.Packet) {
		t.Helper()
		if _, err := d.Send("acme/web", p); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		send(sim.Packet{Dst: db, Proto: datapath.ProtoTCP, SrcPort: 4000, DstPort: 80, Bytes: 100})
	}
	send(sim.Packet{Dst: db, Proto: datapath.ProtoTCP, SrcPort: 4001, DstPort: 22, Bytes: 60})
	send(sim.Packet{Dst: netip.MustParseAddr("192.168.0.1"), Proto: datapath.ProtoUDP, SrcPort: 5, DstPort: 53, Bytes: 70})
	if _, err := d.Deliver(100, netip.MustParseAddr("10.0.1.99"), 7, sim.Packet{Dst: db, Proto: datapath.ProtoTCP, SrcPort: 9, DstPort: 80, Bytes: 40}); err != nil {
		t.Fatal(err)
	}
	tr, err := d.Traffic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var drops [datapath.NumDropReasons]uint64
	drops[datapath.DropPolicy] = 1
	var noRoute [datapath.NumDropReasons]uint64
	noRoute[datapath.DropNoRoute] = 1
	if diff := cmp.Diff([]datapath.EndpointTraffic{
		// Each of the first four packets opens a connection (none is Midstream).
		{ID: "acme/db", VNI: 100, ReceivedPackets: 4, ReceivedBytes: 340, ConnsIn: 5, Drops: drops},
		{ID: "acme/web", VNI: 100, SentPackets: 5, SentBytes: 430, ConnsOut: 4},
		{ID: "zeta/web", VNI: 200},
	}, tr.Endpoints); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]datapath.VPCTraffic{{VNI: 100, Drops: noRoute}, {VNI: 200}}, tr.VPCs); diff != "" {
		t.Errorf("vpcs (-want +got):\n%s", diff)
	}
	if len(tr.Flows) != 4 || tr.Sampling != 1 {
		t.Errorf("%d flows sampled 1 in %d, want 4 in 1: %+v", len(tr.Flows), tr.Sampling, tr.Flows)
	}
	for _, f := range tr.Flows {
		if f.DstPort == 22 && (f.Dropped != 1 || f.Reason != datapath.DropPolicy) {
			t.Errorf("denied flow %+v, want 1 packet dropped by policy", f)
		}
	}
}
