package agent

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/observe/flows"
	"github.com/weftnet/weft/wire"
)

// TestFlowExport runs an agent whose (simulated) data plane carries
// traffic: its flow reports tell the controller what the VPC did and its
// top flows, an IPFIX collector receives and decodes the flow records,
// and the Prometheus metrics show the endpoint's and the VPC's counters.
func TestFlowExport(t *testing.T) {
	collector, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer collector.Close()
	drv := sim.New(sim.Config{FlowSampling: 1})
	defer drv.Close()
	reg := prometheus.NewRegistry()
	h := newHarness(t, func(c *Config) {
		c.Driver = drv
		c.Registerer = reg
		c.Flows = FlowConfig{Interval: 20 * time.Millisecond, Collector: collector.LocalAddr().String()}
	})
	h.connect(t)
	const n = 40
	gw := netip.MustParseAddr("10.0.1.1")
	outside := netip.MustParseAddr("192.168.7.7")
	for i := range n {
		if _, err := drv.Send("acme/web", sim.Packet{Dst: gw, Proto: datapath.ProtoTCP, SrcPort: 5000, DstPort: 80, Bytes: 1000, Midstream: i > 0}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := drv.Send("acme/web", sim.Packet{Dst: outside, Proto: datapath.ProtoUDP, SrcPort: 6000, DstPort: 53, Bytes: 100}); err != nil {
		t.Fatal(err)
	}

	// The controller's view: the interval's differences, summed over reports.
	var got wire.VPCCounters
	var flow *wire.FlowEntry
	var hb uint32
	waitFor(t, "flow reports with all the traffic", func() bool {
		d := next(t, h.udp.reports, "flow report")
		r := d.body.(*wire.FlowReport)
		hb = r.HeartbeatsSent
		for _, v := range r.VPCs {
			if v.VNI != 100 {
				t.Errorf("report of VNI %d", v.VNI)
			}
			got.SentPackets += v.SentPackets
			got.SentBytes += v.SentBytes
			got.ConnsOut += v.ConnsOut
			for i := range got.Drops {
				got.Drops[i] += v.Drops[i]
			}
		}
		for i := range r.Flows {
			if f := r.Flows[i]; f.DstPort == 80 {
				flow = &f
			}
		}
		return got.SentPackets == n+1 && flow != nil
	})
	if got.SentBytes != n*1000+100 || got.ConnsOut != 1 || got.Drops[datapath.DropNoRoute-1] != 1 {
		t.Errorf("reported %+v: want %d bytes sent, 1 connection, 1 drop for no route", got, n*1000+100)
	}
	if flow.Bytes != n*1000 || flow.Packets != n || flow.Src != netip.MustParseAddr("10.0.1.10") {
		t.Errorf("top flow %+v, want %d packets of 1000 bytes from 10.0.1.10", flow, n)
	}
	if hb != uint32(h.agent.Stats().HeartbeatsSent) && hb+1 != uint32(h.agent.Stats().HeartbeatsSent) {
		t.Errorf("report says %d heartbeats sent, the agent %d", hb, h.agent.Stats().HeartbeatsSent)
	}

	// The IPFIX collector's view.
	ts := flows.Templates{}
	buf := make([]byte, 65536)
	var ipfix []flows.Record
	_ = collector.SetReadDeadline(time.Now().Add(waitTimeout))
	for len(ipfix) < 2 {
		m, _, err := collector.ReadFrom(buf)
		if err != nil {
			t.Fatalf("IPFIX collector: %v (records so far: %+v)", err, ipfix)
		}
		rs, _, err := flows.ParseIPFIX(buf[:m], ts)
		if err != nil {
			t.Fatal(err)
		}
		ipfix = append(ipfix, rs...)
	}
	var bytes uint64
	for _, r := range ipfix {
		bytes += r.Bytes
	}
	if bytes != n*1000+100 {
		t.Errorf("IPFIX records %+v carry %d bytes, want %d", ipfix, bytes, n*1000+100)
	}

	// Prometheus.
	want := `
# HELP weft_agent_endpoint_bytes_total Bytes a local endpoint sent (delivered or not) and received, by direction.
# TYPE weft_agent_endpoint_bytes_total counter
weft_agent_endpoint_bytes_total{direction="received",endpoint="acme/web"} 0
weft_agent_endpoint_bytes_total{direction="sent",endpoint="acme/web"} 40100
# HELP weft_agent_vpc_drops_total Packets of a VPC dropped on this host, by reason (its endpoints' and its router's).
# TYPE weft_agent_vpc_drops_total counter
weft_agent_vpc_drops_total{reason="mtu",tenant="acme",vpc="main"} 0
weft_agent_vpc_drops_total{reason="no-route",tenant="acme",vpc="main"} 1
weft_agent_vpc_drops_total{reason="policy",tenant="acme",vpc="main"} 0
weft_agent_vpc_drops_total{reason="qos",tenant="acme",vpc="main"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weft_agent_endpoint_bytes_total", "weft_agent_vpc_drops_total"); err != nil {
		t.Error(err)
	}
}

// TestFlowReportSplit: a report larger than a datagram goes out as
// several, each within the limit, together carrying everything.
func TestFlowReportSplit(t *testing.T) {
	h := newHarness(t)
	h.connect(t)
	r := &wire.FlowReport{IntervalMs: 1000, HeartbeatsSent: 3}
	for i := range 40 {
		r.VPCs = append(r.VPCs, wire.VPCCounters{VNI: uint32(100 + i), SentBytes: 1 << 40, ReceivedBytes: 1 << 40})
	}
	for i := range 100 {
		r.Flows = append(r.Flows, wire.FlowEntry{VNI: 100, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
			Proto: 6, SrcPort: uint16(i), DstPort: 80, Bytes: 1 << 40, Packets: 1 << 30})
	}
	h.agent.sendFlowReport(r)
	var vpcs, flows int
	for vpcs < 40 || flows < 100 {
		d := next(t, h.udp.reports, "flow report")
		got := d.body.(*wire.FlowReport)
		if got.HeartbeatsSent != 3 || got.IntervalMs != 1000 {
			t.Errorf("part %+v lost the report's header fields", got)
		}
		vpcs += len(got.VPCs)
		flows += len(got.Flows)
	}
	if vpcs != 40 || flows != 100 {
		t.Errorf("parts carried %d VPCs and %d flows, want 40 and 100", vpcs, flows)
	}
}
