package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/btree"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// entry is one cached object.
type entry struct {
	tenant, name      string
	obj               apiv1.Object
	createRev, modRev int64
}

func lessEntry(a, b *entry) bool {
	if a.tenant != b.tenant {
		return a.tenant < b.tenant
	}
	return a.name < b.name
}

// tn is a (tenant, name) pair: an object of a known kind, or an index key
// such as (tenant, subnet name).
type tn struct{ tenant, name string }

// labelKey is one tenant's label key=value.
type labelKey struct{ tenant, key, value string }

// kindCache holds the objects of one kind, by name and in tenant/name order.
type kindCache struct {
	items map[tn]*entry
	order *btree.BTreeG[*entry]
}

// change is one decoded etcd event or listed key; obj is nil for a delete.
type change struct {
	kind         *kindDesc
	tenant, name string
	obj          apiv1.Object
	createRev    int64
	rev          int64 // ModRevision of a put, revision of a delete
}

// cache is the typed, indexed copy of the store's objects at revision rev,
// plus the ring of recent events and the Watch subscribers. Objects are
// shared with every reader and never modified after insertion.
type cache struct {
	metrics *metrics
	kinds   []*kindDesc

	mu     sync.RWMutex
	rev    int64
	revCh  chan struct{} // closed and replaced when rev advances
	byKind []*kindCache  // by kindDesc.idx

	epByHost   map[string]map[tn]*apiv1.Endpoint // spec.host → endpoints
	epBySubnet map[tn]map[string]*apiv1.Endpoint // (tenant, spec.subnet) → name → endpoint
	epByLabel  map[labelKey]map[string]*apiv1.Endpoint
	snByVPC    map[tn]map[string]*apiv1.Subnet // (tenant, spec.vpc) → name → subnet

	ring   ring
	subs   map[*subscriber]struct{}
	closed bool
}

func newCache(kinds kindTable, ringSize int, m *metrics) *cache {
	c := &cache{
		metrics:    m,
		kinds:      kinds.all,
		revCh:      make(chan struct{}),
		epByHost:   map[string]map[tn]*apiv1.Endpoint{},
		epBySubnet: map[tn]map[string]*apiv1.Endpoint{},
		epByLabel:  map[labelKey]map[string]*apiv1.Endpoint{},
		snByVPC:    map[tn]map[string]*apiv1.Subnet{},
		ring:       ring{buf: make([]Event, ringSize)},
		subs:       map[*subscriber]struct{}{},
	}
	for range kinds.all {
		c.byKind = append(c.byKind, &kindCache{items: map[tn]*entry{}, order: btree.NewG(32, lessEntry)})
	}
	return c
}

// load fills the empty cache from the initial list at rev, without events.
func (c *cache) load(snap []change, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range snap {
		c.applyOne(ch, rev)
	}
	c.ring.start = rev
	c.advance(rev)
}

// apply applies watched changes and moves the cache to rev.
func (c *cache) apply(changes []change, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	evs := make([]Event, 0, len(changes))
	for _, ch := range changes {
		if ev, ok := c.applyOne(ch, ch.rev); ok {
			evs = append(evs, ev)
		}
	}
	c.publish(evs)
	c.advance(rev)
}

// replace makes the cache equal to a fresh list at rev and publishes the
// difference as events at rev: what a subscriber needs to converge, with
// the history in between collapsed.
func (c *cache) replace(snap []change, rev int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	listed := make([]map[tn]struct{}, len(c.byKind))
	for i := range listed {
		listed[i] = map[tn]struct{}{}
	}
	var evs []Event
	for _, ch := range snap {
		listed[ch.kind.idx][tn{ch.tenant, ch.name}] = struct{}{}
		if old := c.byKind[ch.kind.idx].items[tn{ch.tenant, ch.name}]; old != nil && old.createRev != ch.createRev {
			// Deleted and created again while we were not watching.
			ev, _ := c.applyOne(change{kind: ch.kind, tenant: ch.tenant, name: ch.name, rev: rev}, rev)
			evs = append(evs, ev)
		}
		if ev, ok := c.applyOne(ch, rev); ok {
			evs = append(evs, ev)
		}
	}
	for _, k := range c.kinds {
		var gone []*entry
		c.byKind[k.idx].order.Ascend(func(e *entry) bool {
			if _, ok := listed[k.idx][tn{e.tenant, e.name}]; !ok {
				gone = append(gone, e)
			}
			return true
		})
		for _, e := range gone {
			ev, _ := c.applyOne(change{kind: k, tenant: e.tenant, name: e.name, rev: rev}, rev)
			evs = append(evs, ev)
		}
	}
	c.publish(evs)
	c.advance(rev)
	return len(evs)
}

// applyOne applies one change; the event it produces, if any, carries evRev.
func (c *cache) applyOne(ch change, evRev int64) (Event, bool) {
	kc := c.byKind[ch.kind.idx]
	key := tn{ch.tenant, ch.name}
	old := kc.items[key]
	if ch.obj == nil {
		if old == nil {
			return Event{}, false
		}
		c.unindex(old)
		delete(kc.items, key)
		kc.order.Delete(old)
		return Event{Type: EventDeleted, Object: old.obj, Old: old.obj, Revision: evRev}, true
	}
	if old != nil && old.modRev >= ch.rev {
		return Event{}, false // seen already
	}
	e := &entry{tenant: ch.tenant, name: ch.name, obj: ch.obj, createRev: ch.createRev, modRev: ch.rev}
	ev := Event{Type: EventAdded, Object: e.obj, Revision: evRev}
	if old != nil {
		c.unindex(old)
		ev.Type, ev.Old = EventModified, old.obj
	}
	kc.items[key] = e
	kc.order.ReplaceOrInsert(e)
	c.index(e)
	return ev, true
}

// advance moves the cache revision forward and wakes WaitForRevision.
// c.mu must be held for writing.
func (c *cache) advance(rev int64) {
	if rev <= c.rev {
		return
	}
	c.rev = rev
	close(c.revCh)
	c.revCh = make(chan struct{})
	c.metrics.applied(rev)
}

func (c *cache) index(e *entry) {
	switch o := e.obj.(type) {
	case *apiv1.Endpoint:
		if o.Spec.Host != "" {
			addTo(c.epByHost, o.Spec.Host, tn{e.tenant, e.name}, o)
		}
		addTo(c.epBySubnet, tn{e.tenant, o.Spec.Subnet}, e.name, o)
		for k, v := range o.Metadata.Labels {
			addTo(c.epByLabel, labelKey{e.tenant, k, v}, e.name, o)
		}
	case *apiv1.Subnet:
		addTo(c.snByVPC, tn{e.tenant, o.Spec.VPC}, e.name, o)
	}
}

func (c *cache) unindex(e *entry) {
	switch o := e.obj.(type) {
	case *apiv1.Endpoint:
		if o.Spec.Host != "" {
			delFrom(c.epByHost, o.Spec.Host, tn{e.tenant, e.name})
		}
		delFrom(c.epBySubnet, tn{e.tenant, o.Spec.Subnet}, e.name)
		for k, v := range o.Metadata.Labels {
			delFrom(c.epByLabel, labelKey{e.tenant, k, v}, e.name)
		}
	case *apiv1.Subnet:
		delFrom(c.snByVPC, tn{e.tenant, o.Spec.VPC}, e.name)
	}
}

func addTo[K, K2 comparable, V any](m map[K]map[K2]V, k K, k2 K2, v V) {
	inner := m[k]
	if inner == nil {
		inner = map[K2]V{}
		m[k] = inner
	}
	inner[k2] = v
}

func delFrom[K, K2 comparable, V any](m map[K]map[K2]V, k K, k2 K2) {
	inner := m[k]
	delete(inner, k2)
	if len(inner) == 0 {
		delete(m, k)
	}
}

// ---- reads ----

// Get returns the cached object kind/tenant/name (tenant is ignored for
// cluster-scoped kinds). kind is a Kind, plural or short name. The object
// is shared: callers must not modify it. It implements apiv1 Lookup.
func (s *Store) Get(kind, tenant, name string) (apiv1.Object, bool) {
	k, ok := s.kinds.lookup(kind)
	if !ok {
		return nil, false
	}
	if !k.info.Namespaced {
		tenant = ""
	}
	c := s.cache
	c.mu.RLock()
	e := c.byKind[k.idx].items[tn{tenant, name}]
	c.mu.RUnlock()
	if e == nil {
		return nil, false
	}
	return e.obj, true
}

// List returns the cached objects of a kind sorted by tenant and name:
// those of one tenant, or of all tenants if tenant is "" (tenant is ignored
// for cluster-scoped kinds). An unknown kind gives nil. The objects are
// shared: callers must not modify them. It implements apiv1 Lookup.
func (s *Store) List(kind, tenant string) []apiv1.Object {
	objs, _ := s.ListSelector(kind, tenant, nil)
	return objs
}

// ListSelector is List restricted to objects whose labels satisfy match
// (nil matches all); it also returns the cache revision the list reflects,
// from which Watch continues without a gap.
func (s *Store) ListSelector(kind, tenant string, match func(labels map[string]string) bool) ([]apiv1.Object, int64) {
	k, ok := s.kinds.lookup(kind)
	c := s.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !ok {
		return nil, c.rev
	}
	order := c.byKind[k.idx].order
	var objs []apiv1.Object
	visit := func(e *entry) bool {
		if match == nil || match(e.obj.GetObjectMeta().Labels) {
			objs = append(objs, e.obj)
		}
		return true
	}
	if k.info.Namespaced && tenant != "" {
		order.AscendGreaterOrEqual(&entry{tenant: tenant}, func(e *entry) bool {
			return e.tenant == tenant && visit(e)
		})
	} else {
		objs = make([]apiv1.Object, 0, order.Len())
		order.Ascend(visit)
	}
	return objs, c.rev
}

// EndpointsByHost returns the endpoints whose spec.host is host, sorted by
// tenant and name. Shared objects: do not modify.
func (s *Store) EndpointsByHost(host string) []*apiv1.Endpoint {
	c := s.cache
	c.mu.RLock()
	inner := c.epByHost[host]
	eps := make([]*apiv1.Endpoint, 0, len(inner))
	for _, ep := range inner {
		eps = append(eps, ep)
	}
	c.mu.RUnlock()
	slices.SortFunc(eps, func(a, b *apiv1.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Metadata.Tenant, b.Metadata.Tenant), cmp.Compare(a.Metadata.Name, b.Metadata.Name))
	})
	return eps
}

// EndpointsBySubnet returns the endpoints of a tenant's subnet, sorted by name.
func (s *Store) EndpointsBySubnet(tenant, subnet string) []*apiv1.Endpoint {
	c := s.cache
	c.mu.RLock()
	eps := sortedValues(c.epBySubnet[tn{tenant, subnet}])
	c.mu.RUnlock()
	return eps
}

// EndpointsByLabel returns a tenant's endpoints labelled key=value, sorted by name.
func (s *Store) EndpointsByLabel(tenant, key, value string) []*apiv1.Endpoint {
	c := s.cache
	c.mu.RLock()
	eps := sortedValues(c.epByLabel[labelKey{tenant, key, value}])
	c.mu.RUnlock()
	return eps
}

// SubnetsByVPC returns the subnets of a tenant's VPC, sorted by name.
func (s *Store) SubnetsByVPC(tenant, vpc string) []*apiv1.Subnet {
	c := s.cache
	c.mu.RLock()
	sns := sortedValues(c.snByVPC[tn{tenant, vpc}])
	c.mu.RUnlock()
	return sns
}

// sortedValues returns the values of a name-keyed index bucket sorted by name.
func sortedValues[V any](m map[string]V) []V {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	vs := make([]V, len(names))
	for i, n := range names {
		vs[i] = m[n]
	}
	return vs
}

// Revision returns the etcd revision the cache has applied.
func (s *Store) Revision() int64 {
	s.cache.mu.RLock()
	defer s.cache.mu.RUnlock()
	return s.cache.rev
}

// Progress requests are sent when a WaitForRevision has waited this long
// (and again at this interval): the revision may belong to a write outside
// the prefix, which the watch never reports.
const progressDelay = 50 * time.Millisecond

// WaitForRevision blocks until the cache has applied revision rev (e.g. the
// Revision of a Commit: read-your-writes), ctx ends or the Store closes.
func (s *Store) WaitForRevision(ctx context.Context, rev int64) error {
	c := s.cache
	var timer *time.Timer
	for {
		c.mu.RLock()
		cur, ch := c.rev, c.revCh
		c.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		if !s.started.Load() {
			return ErrNotStarted
		}
		if timer == nil {
			timer = time.NewTimer(progressDelay)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			select {
			case s.progressReq <- struct{}{}:
			default:
			}
			timer.Reset(progressDelay)
		case <-ctx.Done():
			return fmt.Errorf("wait for revision %d (cache at %d): %w", rev, cur, ctx.Err())
		case <-s.ctx.Done():
			return fmt.Errorf("wait for revision %d: %w", rev, ErrClosed)
		}
	}
}
