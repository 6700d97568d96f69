package udp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// Source is the part of the store the Locator reads; *store.Store
// implements it. Returned objects are shared and never modified.
type Source interface {
	store.Source
	Get(kind, tenant, name string) (apiv1.Object, bool)
	EndpointsByHost(host string) []*apiv1.Endpoint
}

// Defaults of LocatorConfig.
const (
	DefaultTTL            = 60 * time.Second
	DefaultNegativeTTL    = 5 * time.Second
	DefaultExpireInterval = 10 * time.Second
)

// LocatorConfig configures a Locator. Zero values select the defaults.
type LocatorConfig struct {
	// Store is followed for Endpoint and Host events. Required.
	Store Source
	// TTL is how long an agent may cache a found location, and how long
	// the Locator remembers that it asked (default DefaultTTL).
	TTL time.Duration
	// NegativeTTL is the same for a not-found answer (default
	// DefaultNegativeTTL).
	NegativeTTL time.Duration
	// ExpireInterval is the period at which expired interests are dropped
	// (default DefaultExpireInterval).
	ExpireInterval time.Duration
	// Now is the monotonic clock in ns (default: time since NewLocator).
	Now func() int64
	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the Locator's metrics; nil means not registered.
	Registerer prometheus.Registerer
}

// Validate reports an impossible setting.
func (c LocatorConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("Store is required"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"TTL", c.TTL}, {"NegativeTTL", c.NegativeTTL}, {"ExpireInterval", c.ExpireInterval}} {
		if d.v < 0 || d.v > 65535*time.Second {
			errs = append(errs, fmt.Errorf("%s %v out of range 0..65535s", d.name, d.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("udp locator config: %w", err)
	}
	return nil
}

func (c *LocatorConfig) setDefaults() {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultNegativeTTL
	}
	if c.ExpireInterval == 0 {
		c.ExpireInterval = DefaultExpireInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Locator answers "where does (VNI, IP) live" from an index that follows
// the store, remembers who asked, and invalidates their answers when the
// endpoint moves or goes away. See the package documentation.
type Locator struct {
	cfg              LocatorConfig
	log              *slog.Logger
	src              Source
	now              func() int64
	ttl, negTTL      int64 // ns
	ttlSec, negTTLSc uint16

	index    [indexShards]indexShard
	interest interestTable
	// rev is the store revision the index reflects: the epoch of negative
	// answers.
	rev atomic.Int64
	// notify sends invalidations; set by the Server while it runs.
	notify atomic.Pointer[notifier]

	// scope says which hosts may look up which VNIs (scope.go).
	scope scopeTable

	// Owned by the follow goroutine (and Start, before it runs).
	eps     map[epRef]epState
	hosts   map[string]hostState
	scopes  map[epRef]epScope
	tenants map[string]int32
	buf     []uint32

	m    locatorMetrics
	life lifecycle.Group
}

// notifier delivers an Invalidate to hosts.
type notifier struct {
	send func(hostIDs []uint32, inv *wire.Invalidate)
}

type epRef struct{ tenant, name string }

// epState is where an indexed endpoint is in the index; its location is
// the index entry's (kept once: the Locator holds an entry per endpoint).
type epState struct {
	key locKey
	rv  int64
}

type hostState struct {
	ip netip.Addr
	id uint32
	rv int64
}

// location is an index entry. It holds no pointers, so the garbage
// collector never scans the index.
type location struct {
	hostIP   [16]byte // unmapped
	mac      wire.MACAddr
	identity uint32
	epoch    uint64
}

func newLocation(loc wire.Location, epoch uint64) location {
	return location{hostIP: loc.HostIP.As16(), mac: loc.MAC, identity: loc.Identity, epoch: epoch}
}

func (l *location) wire() wire.Location {
	return wire.Location{HostIP: netip.AddrFrom16(l.hostIP).Unmap(), MAC: l.mac, Identity: l.identity}
}

const indexShards = 64

type indexShard struct {
	mu sync.RWMutex
	m  map[locKey]location
	// version counts the writes, so that a lookup can tell whether the
	// entry it read may have changed.
	version atomic.Uint64
	_       [24]byte // RWMutex (24) + map (8) + version (8) + 24: a shard per cache line
}

type locatorMetrics struct {
	endpoints, interests prometheus.Gauge
}

// NewLocator returns a Locator; Start loads it.
func NewLocator(cfg LocatorConfig) (*Locator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	l := &Locator{
		cfg:      cfg,
		log:      cfg.Logger.With("subsystem", "udp-locator"),
		src:      cfg.Store,
		now:      cfg.Now,
		ttl:      int64(cfg.TTL),
		negTTL:   int64(cfg.NegativeTTL),
		ttlSec:   uint16(max(cfg.TTL/time.Second, 1)),
		negTTLSc: uint16(max(cfg.NegativeTTL/time.Second, 1)),
		eps:      map[epRef]epState{},
		hosts:    map[string]hostState{},
		scopes:   map[epRef]epScope{},
		tenants:  map[string]int32{},
		m: locatorMetrics{
			endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "weft_locator_endpoints", Help: "Endpoint addresses the locator can answer for."}),
			interests: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "weft_locator_interests", Help: "(address, host) pairs to invalidate on a change, at the last expiry."}),
		},
	}
	for i := range l.index {
		l.index[i].m = map[locKey]location{}
	}
	if l.now == nil {
		base := time.Now()
		l.now = func() int64 { return int64(time.Since(base)) }
	}
	if r := cfg.Registerer; r != nil {
		for _, c := range []prometheus.Collector{l.m.endpoints, l.m.interests} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("udp locator: register metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Start loads the index from the store, then follows its events until
// Close. The store must be started.
func (l *Locator) Start(context.Context) error {
	if _, err := l.life.Start(); err != nil {
		return fmt.Errorf("udp locator: %w", err)
	}
	l.resync()
	l.life.Go(func(ctx context.Context) {
		_ = store.Follow(ctx, l.src, store.FollowConfig{Name: "udp-locator", From: l.rev.Load(), Logger: l.log,
			OnEvents: func(evs []store.Event) {
				for _, ev := range evs {
					l.apply(ev)
				}
			},
			OnReset: func([]apiv1.Object, int64) { l.resync() }})
	})
	l.life.Go(func(ctx context.Context) {
		tick := time.NewTicker(l.cfg.ExpireInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				l.m.interests.Set(float64(l.interest.expire(l.now())))
			}
		}
	})
	return nil
}

// Close stops following the store and waits. It is idempotent.
func (l *Locator) Close() error { return l.life.Close() }

// resync makes the index equal to a fresh list of hosts and endpoints.
func (l *Locator) resync() {
	hosts, hrev := l.src.ListSelector(apiv1.KindHost, "", nil)
	eps, erev := l.src.ListSelector(apiv1.KindEndpoint, "", nil)
	seenHosts := make(map[string]bool, len(hosts))
	for _, o := range hosts {
		h := o.(*apiv1.Host)
		seenHosts[h.Metadata.Name] = true
		l.applyHost(h)
	}
	for name := range l.hosts {
		if !seenHosts[name] {
			delete(l.hosts, name)
		}
	}
	l.scope.clear()
	clear(l.scopes)
	seen := make(map[epRef]bool, len(eps))
	for _, o := range eps {
		ep := o.(*apiv1.Endpoint)
		ref := epRef{ep.Metadata.Tenant, ep.Metadata.Name}
		seen[ref] = true
		l.updateEndpoint(ep, 0)
		l.rescope(ref, ep)
	}
	for ref, st := range l.eps {
		if !seen[ref] {
			l.remove(ref, st, uint64(erev))
		}
	}
	// Events after the older list are replayed; applying them again is a
	// no-op (they carry revisions the index already has).
	l.rev.Store(min(hrev, erev))
	l.m.endpoints.Set(float64(len(l.eps)))
}

// apply applies one store event.
func (l *Locator) apply(ev store.Event) {
	switch o := ev.Object.(type) {
	case *apiv1.Endpoint:
		ref := epRef{o.Metadata.Tenant, o.Metadata.Name}
		if ev.Type == store.EventDeleted {
			if st, ok := l.eps[ref]; ok && st.rv < ev.Revision {
				l.remove(ref, st, uint64(ev.Revision))
			}
			l.rescope(ref, nil)
		} else {
			l.updateEndpoint(o, 0)
			l.rescope(ref, o)
		}
		l.m.endpoints.Set(float64(len(l.eps)))
	case *apiv1.Host:
		if ev.Type == store.EventDeleted {
			if st, ok := l.hosts[o.Metadata.Name]; ok && st.rv < ev.Revision {
				delete(l.hosts, o.Metadata.Name)
				l.rehome(o.Metadata.Name, ev.Revision)
				l.rescopeHost(o.Metadata.Name)
			}
		} else {
			l.applyHost(o)
		}
	}
	if ev.Revision > l.rev.Load() {
		l.rev.Store(ev.Revision)
	}
}

func resourceVersion(o apiv1.Object) int64 {
	rv, _ := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	return rv
}

// applyHost records a host's underlay address; if it changed, the
// endpoints on the host moved.
func (l *Locator) applyHost(h *apiv1.Host) {
	rv := resourceVersion(h)
	old, had := l.hosts[h.Metadata.Name]
	if had && rv <= old.rv {
		return
	}
	ip := parseHostIP(h.Spec.UnderlayIP)
	l.hosts[h.Metadata.Name] = hostState{ip: ip, id: h.Status.HostID, rv: rv}
	if had && old.ip != ip {
		l.rehome(h.Metadata.Name, rv)
	}
	if had && old.id != h.Status.HostID {
		l.rescopeHost(h.Metadata.Name)
	}
}

func parseHostIP(s string) netip.Addr {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap().WithZone("")
}

// rehome re-resolves the endpoints on a host whose address changed; their
// new epoch is at least rev.
func (l *Locator) rehome(host string, rev int64) {
	for _, ep := range l.src.EndpointsByHost(host) {
		l.updateEndpoint(ep, rev)
	}
}

// updateEndpoint indexes an endpoint's current location. minEpoch, when
// set, forces a re-evaluation and bounds the new epoch from below (a host
// address change moves the endpoint without changing it).
func (l *Locator) updateEndpoint(ep *apiv1.Endpoint, minEpoch int64) {
	ref := epRef{ep.Metadata.Tenant, ep.Metadata.Name}
	rv := resourceVersion(ep)
	old, had := l.eps[ref]
	if had && (rv < old.rv || rv == old.rv && minEpoch == 0) {
		return // replayed
	}
	epoch := uint64(max(rv, minEpoch))
	key, loc, ok := l.resolve(ep)
	switch {
	case !ok:
		if had {
			l.remove(ref, old, epoch)
		}
		return
	case had && old.key == key && l.indexed(key) == loc:
		old.rv = rv // a change that does not move it
		l.eps[ref] = old
		return
	case had && old.key != key:
		l.remove(ref, old, epoch)
	}
	// Index first, then collect the interest: a concurrent Lookup that
	// registers after the collection reads the new location.
	sh := l.indexShard(key)
	sh.mu.Lock()
	sh.m[key] = newLocation(loc, epoch)
	sh.version.Add(1)
	sh.mu.Unlock()
	l.eps[ref] = epState{key: key, rv: rv}

	now := l.now()
	l.buf = l.interest.take(l.buf[:0], key, now)
	if len(l.buf) == 0 {
		return
	}
	// The new location is an answer the hosts may cache: keep following
	// it, from before they receive it.
	for _, h := range l.buf {
		l.interest.add(key, h, now+l.ttl)
	}
	inv := wire.Invalidate{VNI: key.vni, IP: key.addr(), Epoch: epoch, HasLocation: true, Location: loc}
	l.send(l.buf, &inv)
}

// remove drops an endpoint from the index and tells the hosts that asked
// about it that it is gone.
func (l *Locator) remove(ref epRef, st epState, epoch uint64) {
	sh := l.indexShard(st.key)
	sh.mu.Lock()
	delete(sh.m, st.key)
	sh.version.Add(1)
	sh.mu.Unlock()
	delete(l.eps, ref)
	l.buf = l.interest.take(l.buf[:0], st.key, l.now())
	if len(l.buf) > 0 {
		inv := wire.Invalidate{VNI: st.key.vni, IP: st.key.addr(), Epoch: epoch}
		l.send(l.buf, &inv)
	}
}

func (l *Locator) send(hosts []uint32, inv *wire.Invalidate) {
	if n := l.notify.Load(); n != nil {
		n.send(hosts, inv)
	}
}

// resolve returns an endpoint's key and location, false if it has no
// address, VNI or host address yet.
func (l *Locator) resolve(ep *apiv1.Endpoint) (locKey, wire.Location, bool) {
	ipStr := ep.Status.IP
	if ipStr == "" {
		ipStr = ep.Spec.IP
	}
	ip, err := netip.ParseAddr(ipStr)
	if err != nil {
		return locKey{}, wire.Location{}, false
	}
	vni := ep.Status.VNI
	if vni == 0 {
		vni = l.subnetVNI(ep.Metadata.Tenant, ep.Spec.Subnet)
	}
	if vni == 0 || vni > wire.MaxVNI {
		return locKey{}, wire.Location{}, false
	}
	hs, _ := l.host(ep.Spec.Host)
	if !hs.ip.IsValid() {
		return locKey{}, wire.Location{}, false
	}
	loc := wire.Location{HostIP: hs.ip, Identity: ep.Status.Identity}
	if hw, err := net.ParseMAC(ep.Status.MAC); err == nil && len(hw) == len(loc.MAC) {
		copy(loc.MAC[:], hw)
	}
	return newLocKey(vni, ip), loc, true
}

// host returns what the Locator knows of a host, read from the store the
// first time it is needed (before the host's event).
func (l *Locator) host(name string) (hostState, bool) {
	hs, ok := l.hosts[name]
	if !ok {
		if o, found := l.src.Get(apiv1.KindHost, "", name); found {
			h := o.(*apiv1.Host)
			hs, ok = hostState{ip: parseHostIP(h.Spec.UnderlayIP), id: h.Status.HostID, rv: resourceVersion(h)}, true
			l.hosts[name] = hs
		}
	}
	return hs, ok
}

// subnetVNI returns the VNI of a subnet's VPC, or 0.
func (l *Locator) subnetVNI(tenant, subnet string) uint32 {
	o, ok := l.src.Get(apiv1.KindSubnet, tenant, subnet)
	if !ok {
		return 0
	}
	sn := o.(*apiv1.Subnet)
	if sn.Status.VNI != 0 {
		return sn.Status.VNI
	}
	if v, ok := l.src.Get(apiv1.KindVPC, tenant, sn.Spec.VPC); ok {
		return v.(*apiv1.VPC).Status.VNI
	}
	return 0
}

func (l *Locator) indexShard(k locKey) *indexShard {
	return &l.index[k.hash()%indexShards]
}

// indexed returns the location indexed at k (zero if none).
func (l *Locator) indexed(k locKey) wire.Location {
	v, _, _ := l.read(l.indexShard(k), k)
	return v.wire()
}

// read returns the index entry of k and the version of its shard.
func (l *Locator) read(sh *indexShard, k locKey) (location, bool, uint64) {
	sh.mu.RLock()
	v, ok := sh.m[k]
	ver := sh.version.Load()
	sh.mu.RUnlock()
	return v, ok, ver
}

// Lookup answers one query from a host and records the host's interest in
// the address until the answer expires. It does not allocate once the
// host's interest is known.
func (l *Locator) Lookup(hostID uint32, q wire.LookupQuery) wire.LookupAnswer {
	return l.lookup(hostID, &q, l.now())
}

func (l *Locator) lookup(hostID uint32, q *wire.LookupQuery, now int64) wire.LookupAnswer {
	k := newLocKey(q.VNI, q.IP)
	sh := l.indexShard(k)
	v, found, ver := l.read(sh, k)
	ttl := l.negTTL
	if found {
		ttl = l.ttl
	}
	// The interest is registered before the answer is final: either the
	// update that changes the answer sees the interest and invalidates
	// it, or it bumped the shard's version before, and the entry is read
	// again.
	l.interest.add(k, hostID, now+ttl)
	if sh.version.Load() != ver {
		var found2 bool
		if v, found2, _ = l.read(sh, k); found2 && !found {
			l.interest.add(k, hostID, now+l.ttl)
		}
		found = found2
	}
	a := wire.LookupAnswer{RequestID: q.RequestID, VNI: q.VNI, IP: q.IP}
	if found {
		a.Found, a.Location, a.Epoch, a.TTL = true, v.wire(), v.epoch, l.ttlSec
	} else {
		a.Epoch, a.TTL = uint64(l.rev.Load()), l.negTTLSc
	}
	return a
}

// Interested returns the hosts whose answer about (vni, ip) has not
// expired yet: those an Invalidate would go to.
func (l *Locator) Interested(vni uint32, ip netip.Addr) []uint32 {
	return l.interest.hosts(newLocKey(vni, ip), l.now())
}

// Len returns the number of addresses in the index.
func (l *Locator) Len() int {
	n := 0
	for i := range l.index {
		sh := &l.index[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// Revision returns the store revision the index reflects.
func (l *Locator) Revision() int64 { return l.rev.Load() }

// attach makes send the Locator's way to deliver invalidations; detach
// (nil) stops them.
func (l *Locator) attach(send func(hostIDs []uint32, inv *wire.Invalidate)) bool {
	if send == nil {
		l.notify.Store(nil)
		return true
	}
	return l.notify.CompareAndSwap(nil, &notifier{send: send})
}
