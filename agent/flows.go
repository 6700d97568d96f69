package agent

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/observe/flows"
	"github.com/weftnet/weft/wire"
)

// Traffic counters and flow records. With a driver that counts its
// traffic (datapath.TrafficReader), the agent reads it every
// FlowConfig.Interval and
//
//   - exports it as Prometheus metrics, per local endpoint and per VPC
//     (bounded by the host's endpoints: no per-flow label);
//   - turns the sampled flows into flow records (observe/flows) and sends
//     them to an IPFIX collector, if one is configured;
//   - tells the controller, in one FlowReport datagram (or a few) on the
//     UDP channel, what each VPC did in the interval, the interval's top
//     flows and how many heartbeats it sent (so the controller can count
//     the ones it lost).

// Defaults of FlowConfig.
const (
	DefaultFlowInterval = 10 * time.Second
	DefaultFlowTop      = 32
)

// FlowConfig configures traffic counting and flow export.
type FlowConfig struct {
	// Interval is how often the data plane's counters are read (default
	// DefaultFlowInterval); negative turns counting off.
	Interval time.Duration
	// Top is how many of an interval's flows, the largest, the controller
	// is told (default DefaultFlowTop); the IPFIX collector gets them all.
	Top int
	// Collector is the address (host:port) of an IPFIX collector that
	// gets every flow record (UDP); "" exports none.
	Collector string
}

func (c FlowConfig) withDefaults() FlowConfig {
	if c.Interval == 0 {
		c.Interval = DefaultFlowInterval
	}
	if c.Top == 0 {
		c.Top = DefaultFlowTop
	}
	return c
}

// observer is the agent's traffic counting: its state between reads and
// its metrics. Its methods run on the flow timer's goroutine, one at a
// time; mu guards what the metrics read.
type observer struct {
	cfg    FlowConfig
	reader datapath.TrafficReader
	timer  *funcTimer
	export *flows.Exporter

	lookupSeconds prometheus.Histogram

	mu      sync.Mutex
	last    *datapath.Traffic        // the latest read
	vpcs    map[uint32]datapath.VPC  // names of the VPCs in last
	prev    map[string]endpointCount // per endpoint, at the previous report
	prevVPC map[uint32][datapath.NumDropReasons]uint64
	tracker flows.Tracker
	sampled int // flows sampled at the latest read
	records uint64
	reports uint64
	lastAt  time.Time
	errs    uint64
}

// endpointCount is an endpoint's counters at a report, to report the
// difference the next time.
type endpointCount struct {
	vni uint32
	c   [6]uint64
	d   [datapath.NumDropReasons]uint64
}

func counts(e *datapath.EndpointTraffic) [6]uint64 {
	return [6]uint64{e.SentPackets, e.SentBytes, e.ReceivedPackets, e.ReceivedBytes, e.ConnsOut, e.ConnsIn}
}

// newObserver returns the agent's observer; its timer is set by
// startFlows.
func (a *Agent) newObserver() *observer {
	o := &observer{
		cfg: a.cfg.Flows.withDefaults(),
		lookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "weft", Subsystem: "agent", Name: "lookup_seconds",
			Help:    "Lookup latency: a miss's first query sent to its answer applied.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16), // 50µs .. 1.6s
		}),
	}
	o.reader, _ = a.driver.(datapath.TrafficReader)
	return o
}

// startFlows starts reading the data plane's counters, if it counts.
func (a *Agent) startFlows(ctx context.Context) error {
	o := a.obs
	if o.reader == nil || o.cfg.Interval < 0 {
		return nil
	}
	if o.cfg.Collector != "" {
		h := fnv.New32a()
		h.Write([]byte(a.cfg.Host))
		x, err := flows.NewExporter(ctx, o.cfg.Collector, h.Sum32()) // the host's observation domain
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		o.export = x
	}
	o.timer = &funcTimer{f: a.flowTick, wg: &a.wg}
	o.lastAt = time.Now()
	o.timer.reset(o.cfg.Interval)
	return nil
}

// stopFlows stops the flow timer (shutdown waits for a tick running) and
// closes the exporter after it.
func (o *observer) stop() {
	if o.timer != nil {
		o.timer.stop()
	}
}

func (o *observer) close() {
	if o.export != nil {
		_ = o.export.Close()
	}
}

// flowTick reads the counters, exports the flow records and reports to
// the controller, then sets the timer again.
func (a *Agent) flowTick() {
	o := a.obs
	defer o.timer.reset(o.cfg.Interval)
	ctx, cancel := context.WithTimeout(a.life.Context(), o.cfg.Interval)
	defer cancel()
	tr, err := o.reader.Traffic(ctx)
	if err != nil {
		o.mu.Lock()
		o.errs++
		o.mu.Unlock()
		a.log.Warn("read traffic counters", "err", err)
		if tr == nil {
			return
		}
	}
	a.mu.Lock()
	var vpcs map[uint32]datapath.VPC
	if a.desired != nil {
		vpcs = make(map[uint32]datapath.VPC, len(a.desired.VPCs))
		for _, v := range a.desired.VPCs {
			vpcs[v.VNI] = datapath.VPC{Tenant: v.Tenant, Name: v.Name, VNI: v.VNI}
		}
	}
	a.mu.Unlock()

	o.mu.Lock()
	recs := o.tracker.Update(tr)
	report := o.report(tr, recs)
	o.last, o.vpcs, o.sampled = tr, vpcs, len(tr.Flows)
	o.records += uint64(len(recs))
	o.mu.Unlock()

	if o.export != nil && len(recs) > 0 {
		if _, err := o.export.Export(recs, tr.At); err != nil {
			a.log.Debug("IPFIX export", "err", err)
		}
	}
	report.HeartbeatsSent = uint32(a.counters.heartbeats.Load())
	a.sendFlowReport(report)
}

// report builds the controller's report of the interval: per-VPC
// differences since the previous one and the top flows. The caller holds
// o.mu.
func (o *observer) report(tr *datapath.Traffic, recs []flows.Record) *wire.FlowReport {
	r := &wire.FlowReport{IntervalMs: uint32(min(tr.At.Sub(o.lastAt).Milliseconds(), 1<<32-1)), Sampling: tr.Sampling}
	o.lastAt = tr.At
	byVNI := map[uint32]*wire.VPCCounters{}
	vpc := func(vni uint32) *wire.VPCCounters {
		v := byVNI[vni]
		if v == nil {
			v = &wire.VPCCounters{VNI: vni}
			byVNI[vni] = v
		}
		return v
	}
	addDrops := func(v *wire.VPCCounters, cur, prev [datapath.NumDropReasons]uint64) {
		for i := 1; i < datapath.NumDropReasons && i <= wire.NumDropCounters; i++ {
			v.Drops[i-1] += diff(cur[i], prev[i])
		}
	}
	next := make(map[string]endpointCount, len(tr.Endpoints))
	for i := range tr.Endpoints {
		e := &tr.Endpoints[i]
		cur := endpointCount{vni: e.VNI, c: counts(e), d: e.Drops}
		prev, ok := o.prev[e.ID]
		if !ok || prev.vni != e.VNI {
			prev = endpointCount{} // new here: count from zero
		}
		v := vpc(e.VNI)
		d := [6]uint64{}
		for j := range d {
			d[j] = diff(cur.c[j], prev.c[j])
		}
		v.SentPackets += d[0]
		v.SentBytes += d[1]
		v.ReceivedPackets += d[2]
		v.ReceivedBytes += d[3]
		v.ConnsOut += d[4]
		v.ConnsIn += d[5]
		addDrops(v, cur.d, prev.d)
		next[e.ID] = cur
	}
	nextVPC := make(map[uint32][datapath.NumDropReasons]uint64, len(tr.VPCs))
	for _, vt := range tr.VPCs {
		addDrops(vpc(vt.VNI), vt.Drops, o.prevVPC[vt.VNI])
		nextVPC[vt.VNI] = vt.Drops
	}
	o.prev, o.prevVPC = next, nextVPC
	for _, v := range byVNI {
		if *v != (wire.VPCCounters{VNI: v.VNI}) {
			r.VPCs = append(r.VPCs, *v)
		}
	}
	top := flows.Top(append([]flows.Record(nil), recs...), o.cfg.Top)
	for i := range top {
		f := &top[i]
		r.Flows = append(r.Flows, wire.FlowEntry{VNI: f.VNI, Src: f.Src, Dst: f.Dst, Proto: uint8(f.Proto),
			SrcPort: f.SrcPort, DstPort: f.DstPort, Bytes: f.Bytes, Packets: f.Packets, Dropped: f.Dropped, Reason: uint8(f.Reason),
			DurationMs: ms(f.End.Sub(f.Start)), IdleMs: ms(tr.At.Sub(f.End))})
	}
	return r
}

// diff is cur - prev for a cumulative counter; a counter that went back
// (its object made anew) counts from zero.
func diff(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func ms(d time.Duration) uint32 { return uint32(min(max(d.Milliseconds(), 0), 1<<32-1)) }

// sendFlowReport seals r in as many datagrams as it takes and sends them
// to the controller. Nothing is sent while the host has no ID.
func (a *Agent) sendFlowReport(r *wire.FlowReport) {
	id := a.hostID.Load()
	if id == 0 {
		return
	}
	send := func(m *wire.FlowReport) {
		pkt, err := wire.Seal(nil, wire.Header{HostID: id, Seq: a.seq.Next()}, m, &a.key)
		if err != nil {
			a.log.Error("seal flow report", "err", err)
			return
		}
		if err := a.cfg.Transport.Send(pkt, a.udpTarget()); err != nil {
			a.log.Debug("send flow report", "err", err)
			return
		}
		a.obs.mu.Lock()
		a.obs.reports++
		a.obs.mu.Unlock()
	}
	// Pack greedily: VPCs first, then flows, a new datagram when one is full.
	cur := &wire.FlowReport{IntervalMs: r.IntervalMs, HeartbeatsSent: r.HeartbeatsSent, Sampling: r.Sampling}
	size := func() int { b, _ := cur.AppendBinary(nil); return len(b) }
	flush := func() {
		send(cur)
		cur = &wire.FlowReport{IntervalMs: r.IntervalMs, HeartbeatsSent: r.HeartbeatsSent, Sampling: r.Sampling}
	}
	full := func(n int) bool { return size() > wire.MaxFlowReportBody || n > 255 }
	packInto(r.VPCs, func() *[]wire.VPCCounters { return &cur.VPCs }, full, flush)
	packInto(r.Flows, func() *[]wire.FlowEntry { return &cur.Flows }, full, flush)
	flush() // the last, or the only one (heartbeat count and interval even when idle)
}

// packInto appends items to the list of the report being filled (list
// returns it); when an item makes the report full, it is sent without it
// (flush starts the next one) and the item goes into the next.
func packInto[T any](items []T, list func() *[]T, full func(n int) bool, flush func()) {
	for _, it := range items {
		l := list()
		*l = append(*l, it)
		if full(len(*l)) {
			*l = (*l)[:len(*l)-1]
			flush()
			l = list()
			*l = append(*l, it)
		}
	}
}
