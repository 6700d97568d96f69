// Package flowagg is the controller's side of traffic statistics: it
// takes what agents report on the UDP channel (wire.FlowReport: what each
// VPC's endpoints on the host did in the interval, the interval's top
// sampled flows, the heartbeats sent) and
//
//   - exports per-VPC counters as Prometheus metrics (labels tenant, vpc:
//     bounded by the VPCs, never by flows or endpoints);
//   - keeps each tenant's recent flows for the top-talkers query
//     (GET /apis/weft/v1/tenants/T/flows, `weft flows`), scoped to the
//     tenant that owns the VPC: a tenant sees only its own flows;
//   - measures the southbound's health: heartbeat loss per host (a
//     histogram over hosts, bounded however many hosts there are: the
//     agent says how many it sent, the controller counts what arrived),
//     and programming latency, from an API write to the Ack of an agent
//     that applied it (compile's view version is the etcd revision of
//     the change; the aggregator follows the store to know when each
//     revision was written).
//
// A flow is reported by the hosts of both its ends (each samples it, by
// the same hash); the query shows, per flow, the observation with the most
// bytes, so no flow counts twice.
package flowagg

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// Defaults of Config.
const (
	DefaultWindow            = 5 * time.Minute
	DefaultMaxFlowsPerTenant = 4096
	DefaultCapacity          = 1 << 20
	// revisionRing is how many recent revisions' times are kept for the
	// programming latency.
	revisionRing = 1 << 14
)

// Store is what the aggregator reads: VPCs (whose VNI names them) and
// endpoints (whose addresses name flows' ends), and the change stream it
// times revisions by. *store.Store is one.
type Store interface {
	store.Source
	List(kind, tenant string) []apiv1.Object
}

var _ Store = (*store.Store)(nil)

// Config configures an Aggregator.
type Config struct {
	Store Store
	// Window is how long a flow that is no longer reported stays
	// queryable (default DefaultWindow).
	Window time.Duration
	// MaxFlowsPerTenant bounds the flows kept per tenant (default
	// DefaultMaxFlowsPerTenant); past it, new flows are not kept until
	// old ones leave the window.
	MaxFlowsPerTenant int
	// Capacity is the number of host IDs whose heartbeats are counted
	// (default DefaultCapacity; 4 bytes each).
	Capacity   int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Aggregator aggregates flow reports. Report and Heartbeat are safe for
// concurrent use.
type Aggregator struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	received []atomic.Uint32 // heartbeats received, by host ID

	mu      sync.Mutex
	hosts   map[uint32]hostCount   // heartbeat counts at the host's last report
	vpcs    map[uint32]*vpcTotals  // by VNI
	names   map[uint32]vpcName     // VNI -> VPC, from the store
	namesAt time.Time              // when names was last read
	tenants map[string]*tenantFlow // recent flows, by tenant

	revMu   sync.Mutex
	revs    []revTime         // ring of recent revisions' times, ascending
	applied map[string]uint64 // version whose latency was last observed, by host

	life lifecycle.Group
}

type hostCount struct{ sent, received uint32 }

type vpcName struct{ tenant, name string }

type vpcTotals struct {
	c     [6]uint64 // sent packets, sent bytes, received packets, received bytes, connections out, in
	drops [wire.NumDropCounters]uint64
}

type revTime struct {
	rev int64
	at  time.Time
}

// New returns an Aggregator; Start follows the store for revision times.
func New(cfg Config) (*Aggregator, error) {
	if cfg.Store == nil {
		return nil, errors.New("flowagg: Store is required")
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxFlowsPerTenant <= 0 {
		cfg.MaxFlowsPerTenant = DefaultMaxFlowsPerTenant
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Aggregator{
		cfg: cfg, log: cfg.Logger.With("subsystem", "flowagg"),
		received: make([]atomic.Uint32, cfg.Capacity),
		hosts:    map[uint32]hostCount{}, vpcs: map[uint32]*vpcTotals{}, names: map[uint32]vpcName{},
		tenants: map[string]*tenantFlow{}, applied: map[string]uint64{},
	}
	var err error
	if a.m, err = newMetrics(a, cfg.Registerer); err != nil {
		return nil, err
	}
	return a, nil
}

// Start follows the store's changes (store.Follow) to time revisions.
func (a *Aggregator) Start(context.Context) error {
	if _, err := a.life.Start(); err != nil {
		return fmt.Errorf("flowagg: %w", err)
	}
	a.life.Go(func(ctx context.Context) {
		_ = store.Follow(ctx, a.cfg.Store, store.FollowConfig{Name: "flowagg", Logger: a.log,
			OnEvents: a.observeRevisions,
			// The times of compacted revisions are unknown: nothing to reset.
			OnReset: func([]apiv1.Object, int64) {}})
	})
	return nil
}

// Close stops following the store. It is idempotent.
func (a *Aggregator) Close() error { return a.life.Close(nil) }

// observeRevisions records when each revision was seen (within
// milliseconds of its commit).
func (a *Aggregator) observeRevisions(evs []store.Event) {
	now := a.cfg.Now()
	a.revMu.Lock()
	defer a.revMu.Unlock()
	for _, ev := range evs {
		if n := len(a.revs); n == 0 || a.revs[n-1].rev < ev.Revision {
			if n == revisionRing {
				a.revs = append(a.revs[:0], a.revs[n/2:]...)
			}
			a.revs = append(a.revs, revTime{ev.Revision, now})
		}
	}
}

// StatusSink is the config stream's status sink (stream.StatusSink).
type StatusSink interface {
	Connected(host, agentVersion string)
	Acked(host string, version uint64, programErr string)
	Nacked(host string, version uint64, err string)
	Disconnected(host string)
}

// WrapStatus returns a StatusSink that tells next everything and observes
// the programming latency of each Ack without error: from the time the
// version's revision was seen to now, once per host and version.
func (a *Aggregator) WrapStatus(next StatusSink) StatusSink { return &statusTee{next, a} }

type statusTee struct {
	StatusSink
	a *Aggregator
}

// versionCounterBits is compile's view version layout: the low bits are
// the etcd revision (compile.EpochOf takes the rest).
const versionCounterBits = 44

func (s *statusTee) Acked(host string, version uint64, programErr string) {
	s.StatusSink.Acked(host, version, programErr)
	if programErr == "" {
		s.a.applied1(host, version, s.a.cfg.Now())
	}
}

func (s *statusTee) Disconnected(host string) {
	s.StatusSink.Disconnected(host)
	s.a.revMu.Lock()
	delete(s.a.applied, host)
	s.a.revMu.Unlock()
}

// applied1 observes host's applying version at now.
func (a *Aggregator) applied1(host string, version uint64, now time.Time) {
	rev := int64(version & (1<<versionCounterBits - 1))
	a.revMu.Lock()
	defer a.revMu.Unlock()
	if a.applied[host] == version {
		return
	}
	a.applied[host] = version
	i := sort.Search(len(a.revs), func(i int) bool { return a.revs[i].rev >= rev })
	if i == len(a.revs) || a.revs[i].rev != rev {
		return // not a revision this replica saw lately
	}
	a.m.programming.Observe(max(now.Sub(a.revs[i].at), 0).Seconds())
}

// Heartbeat counts an authentic heartbeat of hostID.
func (a *Aggregator) Heartbeat(hostID uint32) {
	if uint64(hostID) < uint64(len(a.received)) {
		a.received[hostID].Add(1)
	}
}

// Report takes an authentic flow report of hostID.
func (a *Aggregator) Report(hostID uint32, r *wire.FlowReport) {
	now := a.cfg.Now()
	a.m.reports.Inc()
	a.mu.Lock()
	defer a.mu.Unlock()
	if uint64(hostID) < uint64(len(a.received)) {
		got := a.received[hostID].Load()
		prev, ok := a.hosts[hostID]
		a.hosts[hostID] = hostCount{sent: r.HeartbeatsSent, received: got}
		if sent := r.HeartbeatsSent - prev.sent; ok && sent > 0 && sent < 1<<31 {
			recv := got - prev.received
			lost := uint32(0)
			if recv < sent {
				lost = sent - recv
			}
			a.m.hbLost.Add(float64(lost))
			a.m.hbLoss.Observe(float64(lost) / float64(sent))
		}
	}
	for i := range r.VPCs {
		v := &r.VPCs[i]
		t := a.vpcs[v.VNI]
		if t == nil {
			t = &vpcTotals{}
			a.vpcs[v.VNI] = t
		}
		for j, c := range []uint64{v.SentPackets, v.SentBytes, v.ReceivedPackets, v.ReceivedBytes, v.ConnsOut, v.ConnsIn} {
			t.c[j] += c
		}
		for j, c := range v.Drops {
			t.drops[j] += c
		}
	}
	for i := range r.Flows {
		f := &r.Flows[i]
		name, ok := a.vpcName(f.VNI, now)
		if !ok {
			continue
		}
		a.addFlow(name.tenant, hostID, f, r.Sampling, now)
	}
}

// vpcName returns the VPC of a VNI, reading the store again (at most
// once a second) for a VNI it does not know. The caller holds mu.
func (a *Aggregator) vpcName(vni uint32, now time.Time) (vpcName, bool) {
	if n, ok := a.names[vni]; ok {
		return n, true
	}
	if now.Sub(a.namesAt) < time.Second {
		return vpcName{}, false
	}
	a.namesAt = now
	a.names = map[uint32]vpcName{}
	for _, o := range a.cfg.Store.List(apiv1.KindVPC, "") {
		if v, ok := o.(*apiv1.VPC); ok && v.Status.VNI != 0 {
			a.names[v.Status.VNI] = vpcName{v.Metadata.Tenant, v.Metadata.Name}
		}
	}
	n, ok := a.names[vni]
	return n, ok
}

// tenantFlow holds a tenant's recent flows.
type tenantFlow struct {
	flows   map[datapath.FlowKey]*flowObs
	skipped uint64 // flows not kept: the tenant was at MaxFlowsPerTenant
}

// flowObs is one flow as up to two hosts (its ends) observed it.
type flowObs struct {
	by       [2]observation
	sampling uint32
	seen     time.Time // last report
}

type observation struct {
	host                    uint32
	bytes, packets, dropped uint64
	reason                  uint8
	start, end              time.Time
}

func (a *Aggregator) addFlow(tenant string, host uint32, f *wire.FlowEntry, sampling uint32, now time.Time) {
	tf := a.tenants[tenant]
	if tf == nil {
		tf = &tenantFlow{flows: map[datapath.FlowKey]*flowObs{}}
		a.tenants[tenant] = tf
	}
	k := datapath.FlowKey{VNI: f.VNI, Src: f.Src, Dst: f.Dst, Proto: datapath.Protocol(f.Proto), SrcPort: f.SrcPort, DstPort: f.DstPort}
	fo := tf.flows[k]
	if fo == nil {
		if len(tf.flows) >= a.cfg.MaxFlowsPerTenant {
			a.expire(tf, now)
		}
		if len(tf.flows) >= a.cfg.MaxFlowsPerTenant {
			tf.skipped++
			a.m.skipped.Inc()
			return
		}
		fo = &flowObs{}
		tf.flows[k] = fo
	}
	fo.seen, fo.sampling = now, sampling
	end := now.Add(-time.Duration(f.IdleMs) * time.Millisecond)
	start := end.Add(-time.Duration(f.DurationMs) * time.Millisecond)
	i := 0
	switch {
	case fo.by[0].host == host || fo.by[0].end.IsZero():
	case fo.by[1].host == host || fo.by[1].end.IsZero():
		i = 1
	default: // a third host (the flow's end moved): replace the older
		if fo.by[1].end.Before(fo.by[0].end) {
			i = 1
		}
		fo.by[i] = observation{}
	}
	o := &fo.by[i]
	o.host = host
	o.bytes += f.Bytes
	o.packets += f.Packets
	o.dropped += f.Dropped
	if f.Reason != 0 {
		o.reason = f.Reason
	}
	if o.start.IsZero() || start.Before(o.start) {
		o.start = start
	}
	if end.After(o.end) {
		o.end = end
	}
}

// expire forgets the tenant's flows not reported within the window.
func (a *Aggregator) expire(tf *tenantFlow, now time.Time) {
	for k, fo := range tf.flows {
		if now.Sub(fo.seen) > a.cfg.Window {
			delete(tf.flows, k)
		}
	}
}

// Flow is one top talker, as the API shows it.
type Flow struct {
	VPC         string `json:"vpc"`
	Src         string `json:"src"`
	Dst         string `json:"dst"`
	SrcPort     uint16 `json:"sport,omitempty"`
	DstPort     uint16 `json:"dport,omitempty"`
	Proto       string `json:"proto"`
	SrcEndpoint string `json:"srcEndpoint,omitempty"`
	DstEndpoint string `json:"dstEndpoint,omitempty"`
	Bytes       uint64 `json:"bytes"`
	Packets     uint64 `json:"packets"`
	Dropped     uint64 `json:"dropped,omitempty"`
	// Verdict is allow, drop (every packet dropped) or partial; Reason
	// the drop reason.
	Verdict  string `json:"verdict"`
	Reason   string `json:"reason,omitempty"`
	Duration string `json:"duration"`
	// Start and End bound the flow's packets as reported.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Sampling is N of the 1-in-N flow sampling that found it.
	Sampling uint32 `json:"sampling,omitempty"`
}

// FlowList is the answer to a top-talkers query.
type FlowList struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Tenant     string `json:"tenant"`
	// Window is how far back the flows go.
	Window string `json:"window"`
	Items  []Flow `json:"items"`
}

// Query is a top-talkers query.
type Query struct {
	Tenant string
	// Endpoint, if set, keeps the flows one of whose ends is this
	// endpoint of the tenant (by name).
	Endpoint string
	// Top is how many flows to return, the ones with the most bytes
	// (<= 0: all).
	Top int
}

// ErrNoEndpoint is returned for a query naming an endpoint the tenant
// does not have.
var ErrNoEndpoint = errors.New("flowagg: no such endpoint")

// Top answers a query: the tenant's flows of the window (never another
// tenant's), most bytes first.
func (a *Aggregator) Top(q Query) (*FlowList, error) {
	now := a.cfg.Now()
	// The tenant's endpoints name the flows' ends.
	type epKey struct {
		vni uint32
		ip  netip.Addr
	}
	names := map[epKey]string{}
	var want epKey
	for _, o := range a.cfg.Store.List(apiv1.KindEndpoint, q.Tenant) {
		e, ok := o.(*apiv1.Endpoint)
		if !ok {
			continue
		}
		ip, err := netip.ParseAddr(e.Status.IP)
		if err != nil || e.Status.VNI == 0 {
			continue
		}
		k := epKey{e.Status.VNI, ip}
		names[k] = e.Metadata.Name
		if e.Metadata.Name == q.Endpoint {
			want = k
		}
	}
	if q.Endpoint != "" && !want.ip.IsValid() {
		return nil, fmt.Errorf("%w: %q in tenant %q (or it has no address yet)", ErrNoEndpoint, q.Endpoint, q.Tenant)
	}
	out := &FlowList{APIVersion: apiv1.APIVersion, Kind: "FlowList", Tenant: q.Tenant, Window: a.cfg.Window.String(), Items: []Flow{}}
	a.mu.Lock()
	defer a.mu.Unlock()
	tf := a.tenants[q.Tenant]
	if tf == nil {
		return out, nil
	}
	a.expire(tf, now)
	for k, fo := range tf.flows {
		if q.Endpoint != "" && (k.VNI != want.vni || k.Src != want.ip && k.Dst != want.ip) {
			continue
		}
		o := fo.by[0]
		if fo.by[1].bytes > o.bytes {
			o = fo.by[1]
		}
		vpc, _ := a.vpcName(k.VNI, now)
		f := Flow{VPC: vpc.name, Src: k.Src.String(), Dst: k.Dst.String(), SrcPort: k.SrcPort, DstPort: k.DstPort,
			Proto: protoName(k.Proto), SrcEndpoint: names[epKey{k.VNI, k.Src}], DstEndpoint: names[epKey{k.VNI, k.Dst}],
			Bytes: o.bytes, Packets: o.packets, Dropped: max(fo.by[0].dropped, fo.by[1].dropped),
			Start: o.start, End: o.end, Duration: o.end.Sub(o.start).Round(time.Millisecond).String(), Sampling: fo.sampling}
		reason := datapath.DropReason(max(fo.by[0].reason, fo.by[1].reason))
		switch {
		case f.Dropped == 0:
			f.Verdict = "allow"
		case f.Dropped >= f.Packets:
			f.Verdict, f.Reason = "drop", reason.String()
		default:
			f.Verdict, f.Reason = "partial", reason.String()
		}
		out.Items = append(out.Items, f)
	}
	slices.SortFunc(out.Items, func(x, y Flow) int {
		return cmp.Or(cmp.Compare(y.Bytes, x.Bytes), x.Start.Compare(y.Start), cmp.Compare(x.Src, y.Src), cmp.Compare(x.SrcPort, y.SrcPort))
	})
	if q.Top > 0 && len(out.Items) > q.Top {
		out.Items = out.Items[:q.Top]
	}
	return out, nil
}

// protoName is an IP protocol's name as the API shows it.
func protoName(p datapath.Protocol) string {
	switch p {
	case datapath.ProtoTCP:
		return "tcp"
	case datapath.ProtoUDP:
		return "udp"
	case datapath.ProtoICMP:
		return "icmp"
	case datapath.ProtoSCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// Query answers the API's top-talkers query (rest.Config.Flows): a
// FlowList, or a 404 for an endpoint the tenant does not have.
func (a *Aggregator) Query(_ context.Context, tenant, endpoint string, top int) (any, error) {
	out, err := a.Top(Query{Tenant: tenant, Endpoint: endpoint, Top: top})
	if errors.Is(err, ErrNoEndpoint) {
		return nil, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "%v", err)
	}
	return out, err
}
