package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/datapath"
)

// trafficCollector exports the latest traffic read (observer.last) as
// Prometheus metrics: per local endpoint and per VPC of the host, so the
// series are bounded by the host's endpoints. Values are the data plane's
// cumulative counters (a counter that resets is an endpoint made anew).
type trafficCollector struct{ o *observer }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("weft_agent_"+name, help, labels, nil)
}

var (
	epPackets = desc("endpoint_packets_total", "Packets a local endpoint sent (delivered or not) and received, by direction.", "endpoint", "direction")
	epBytes   = desc("endpoint_bytes_total", "Bytes a local endpoint sent (delivered or not) and received, by direction.", "endpoint", "direction")
	epConns   = desc("endpoint_connections_total", "TCP connections a local endpoint opened (out) and was asked to accept (in).", "endpoint", "direction")
	epDrops   = desc("endpoint_drops_total", "Packets from or to a local endpoint that the data plane dropped, by reason.", "endpoint", "reason")
	vpcPkts   = desc("vpc_packets_total", "Packets of a VPC's endpoints on this host, by direction.", "tenant", "vpc", "direction")
	vpcBytes  = desc("vpc_bytes_total", "Bytes of a VPC's endpoints on this host, by direction.", "tenant", "vpc", "direction")
	vpcConns  = desc("vpc_connections_total", "TCP connections of a VPC's endpoints on this host, by direction.", "tenant", "vpc", "direction")
	vpcDrops  = desc("vpc_drops_total", "Packets of a VPC dropped on this host, by reason (its endpoints' and its router's).", "tenant", "vpc", "reason")
	flowsNow  = desc("flows_sampled", "Sampled flows the data plane holds.")
	flowRecs  = desc("flow_records_total", "Flow records made from the sampled flows (one per flow per interval it moved).")
	reports   = desc("flow_reports_total", "FlowReport datagrams sent to the controller.")
	readErrs  = desc("traffic_read_errors_total", "Failed reads of the data plane's counters.")
)

// Describe implements prometheus.Collector.
func (c *trafficCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{epPackets, epBytes, epConns, epDrops, vpcPkts, vpcBytes, vpcConns, vpcDrops, flowsNow, flowRecs, reports, readErrs} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *trafficCollector) Collect(ch chan<- prometheus.Metric) {
	o := c.o
	o.mu.Lock()
	defer o.mu.Unlock()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(flowRecs, o.records)
	counter(reports, o.reports)
	counter(readErrs, o.errs)
	ch <- prometheus.MustNewConstMetric(flowsNow, prometheus.GaugeValue, float64(o.sampled))
	if o.last == nil {
		return
	}
	type vpcSum struct {
		c [6]uint64
		d [datapath.NumDropReasons]uint64
	}
	sums := map[uint32]*vpcSum{}
	sum := func(vni uint32) *vpcSum {
		s := sums[vni]
		if s == nil {
			s = &vpcSum{}
			sums[vni] = s
		}
		return s
	}
	for i := range o.last.Endpoints {
		e := &o.last.Endpoints[i]
		counter(epPackets, e.SentPackets, e.ID, "sent")
		counter(epPackets, e.ReceivedPackets, e.ID, "received")
		counter(epBytes, e.SentBytes, e.ID, "sent")
		counter(epBytes, e.ReceivedBytes, e.ID, "received")
		counter(epConns, e.ConnsOut, e.ID, "out")
		counter(epConns, e.ConnsIn, e.ID, "in")
		for r, n := range e.Drops {
			if n > 0 || datapath.DropReason(r) == datapath.DropPolicy {
				counter(epDrops, n, e.ID, datapath.DropReason(r).String())
			}
		}
		s := sum(e.VNI)
		for j, v := range counts(e) {
			s.c[j] += v
		}
		for r, n := range e.Drops {
			s.d[r] += n
		}
	}
	for _, vt := range o.last.VPCs {
		s := sum(vt.VNI)
		for r, n := range vt.Drops {
			s.d[r] += n
		}
	}
	for vni, s := range sums {
		v, ok := o.vpcs[vni]
		if !ok {
			v = datapath.VPC{Name: "vni-" + strconv.FormatUint(uint64(vni), 10)}
		}
		counter(vpcPkts, s.c[0], v.Tenant, v.Name, "sent")
		counter(vpcBytes, s.c[1], v.Tenant, v.Name, "sent")
		counter(vpcPkts, s.c[2], v.Tenant, v.Name, "received")
		counter(vpcBytes, s.c[3], v.Tenant, v.Name, "received")
		counter(vpcConns, s.c[4], v.Tenant, v.Name, "out")
		counter(vpcConns, s.c[5], v.Tenant, v.Name, "in")
		for r, n := range s.d {
			switch reason := datapath.DropReason(r); {
			case reason == datapath.DropNone:
			case n > 0, reason == datapath.DropPolicy, reason == datapath.DropNoRoute, reason == datapath.DropMTU, reason == datapath.DropQoS:
				counter(vpcDrops, n, v.Tenant, v.Name, reason.String())
			}
		}
	}
}
