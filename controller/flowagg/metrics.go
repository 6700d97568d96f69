package flowagg

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/datapath"
)

// metrics are the aggregator's own metrics; the per-VPC counters are
// collected from its totals (collector).
type metrics struct {
	reports     prometheus.Counter
	skipped     prometheus.Counter
	hbLost      prometheus.Counter
	hbLoss      prometheus.Histogram
	programming prometheus.Histogram
}

func newMetrics(a *Aggregator, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_flow_reports_total", Help: "Flow reports received from agents (datagrams)."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_flow_records_skipped_total", Help: "Reported flows not kept for queries: their tenant held the most flows kept."}),
		hbLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_southbound_heartbeats_lost_total", Help: "Heartbeats agents sent that this replica did not receive (counted at each agent's flow report)."}),
		hbLoss: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_southbound_heartbeat_loss_ratio",
			Help:    "Heartbeat loss of one host over one flow-report interval (lost/sent), one observation per host and report: the distribution over hosts, bounded whatever their number.",
			Buckets: []float64{0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1}}),
		programming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_southbound_programming_seconds",
			Help:    "Programming latency: from the API write (its etcd revision seen by this replica) to the Ack of an agent that applied the view of that revision to its data plane.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}), // 1 ms .. 33 s
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.reports, m.skipped, m.hbLost, m.hbLoss, m.programming, &collector{a}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("flowagg: register metrics: %w", err)
		}
	}
	return m, nil
}

// collector exports the per-VPC totals, labelled by tenant and VPC name.
type collector struct{ a *Aggregator }

var (
	vpcPackets = prometheus.NewDesc("weft_vpc_packets_total", "Packets of a VPC's endpoints, all hosts (as their agents reported them), by direction.", []string{"tenant", "vpc", "direction"}, nil)
	vpcBytes   = prometheus.NewDesc("weft_vpc_bytes_total", "Bytes of a VPC's endpoints, all hosts, by direction.", []string{"tenant", "vpc", "direction"}, nil)
	vpcConns   = prometheus.NewDesc("weft_vpc_connections_total", "TCP connections a VPC's endpoints opened (out) and were asked to accept (in), all hosts.", []string{"tenant", "vpc", "direction"}, nil)
	vpcDrops   = prometheus.NewDesc("weft_vpc_drops_total", "Packets of a VPC dropped, all hosts, by reason.", []string{"tenant", "vpc", "reason"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{vpcPackets, vpcBytes, vpcConns, vpcDrops} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for vni, t := range a.vpcs {
		n, ok := a.vpcName(vni, now)
		if !ok {
			if a.namesAt.Equal(now) {
				delete(a.vpcs, vni) // the store was just read: the VPC is gone
			}
			continue
		}
		put := func(d *prometheus.Desc, v uint64, label string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), n.tenant, n.name, label)
		}
		put(vpcPackets, t.c[0], "sent")
		put(vpcBytes, t.c[1], "sent")
		put(vpcPackets, t.c[2], "received")
		put(vpcBytes, t.c[3], "received")
		put(vpcConns, t.c[4], "out")
		put(vpcConns, t.c[5], "in")
		for i, v := range t.drops {
			if r := datapath.DropReason(i + 1); v > 0 || r.String() != "unknown" {
				put(vpcDrops, v, r.String())
			}
		}
	}
}
