package flowagg_test

import (
	"net/netip"
	"testing"

	"github.com/weftnet/weft/controller/flowagg"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/wire"
)

// BenchmarkReport is the controller's cost of one flow report as it
// arrives: decoding the body and aggregating it (a host with endpoints in
// 4 VPCs reporting its 32 largest flows), over 100,000 hosts. The UDP
// path before it (authentication, replay window) costs what a heartbeat's
// does.
//
//	go test ./controller/flowagg -run '^$' -bench Report
func BenchmarkReport(b *testing.B) {
	st := &fakeStore{events: make(chan store.Event)}
	a, err := flowagg.New(flowagg.Config{Store: st, Capacity: 100_000})
	if err != nil {
		b.Fatal(err)
	}
	r := &wire.FlowReport{IntervalMs: 10000, HeartbeatsSent: 10, Sampling: 1}
	for v := range 4 {
		r.VPCs = append(r.VPCs, wire.VPCCounters{VNI: uint32(100 + 100*(v%2)), SentPackets: 123456, SentBytes: 1 << 30, ReceivedPackets: 65432, ReceivedBytes: 1 << 28, ConnsOut: 40})
	}
	for i := range 32 {
		r.Flows = append(r.Flows, wire.FlowEntry{VNI: uint32(100 + 100*(i%2)), Src: netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), Dst: web,
			Proto: 6, SrcPort: uint16(30000 + i), DstPort: 443, Bytes: 1 << 24, Packets: 12000, DurationMs: 9000, IdleMs: 10})
	}
	body, err := r.AppendBinary(nil)
	if err != nil {
		b.Fatal(err)
	}
	if len(body) > wire.MaxFlowReportBody {
		b.Fatalf("report body of %d bytes does not fit a datagram", len(body))
	}
	b.Logf("report body: %d bytes", len(body))
	var dec wire.FlowReport
	host := uint32(0)
	for b.Loop() {
		if err := dec.UnmarshalBinary(body); err != nil {
			b.Fatal(err)
		}
		host = (host + 1) % 100_000
		dec.HeartbeatsSent++
		a.Report(host, &dec)
	}
}
