package store

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/google/btree"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// entry is one cached object. Its tenant and name are those of meta, the
// object's metadata (not of the etcd key, which is not kept).
type entry struct {
	obj               apiv1.Object
	meta              *apiv1.ObjectMeta
	createRev, modRev int64
	next              *entry // in entryMap, of the same hash
}

func newEntry(obj apiv1.Object, createRev, modRev int64) *entry {
	return &entry{obj: obj, meta: obj.GetObjectMeta(), createRev: createRev, modRev: modRev}
}

func (e *entry) key() tn { return tn{e.meta.Tenant, e.meta.Name} }

func lessEntry(a, b *entry) bool {
	if a.meta.Tenant != b.meta.Tenant {
		return a.meta.Tenant < b.meta.Tenant
	}
	return a.meta.Name < b.meta.Name
}

// tn is a (tenant, name) pair: an object of a known kind, or an index key
// such as (tenant, subnet name).
type tn struct{ tenant, name string }

// labelKey is one tenant's label key=value.
type labelKey struct{ tenant, key, value string }

// kindCache holds the objects of one kind, by name and in tenant/name order.
type kindCache struct {
	items entryMap
	order *btree.BTreeG[*entry]
}

// entryMap finds entries by (tenant, name). It is keyed by a hash of the
// pair rather than the pair (a 16-byte slot instead of 40, for a million
// endpoints); entries whose hashes are equal chain on entry.next.
type entryMap struct {
	seed maphash.Seed
	m    map[uint64]*entry
	n    int
}

func newEntryMap() entryMap { return entryMap{seed: maphash.MakeSeed(), m: map[uint64]*entry{}} }

func (em *entryMap) hash(k tn) uint64 { return maphash.Comparable(em.seed, k) }

func (em *entryMap) get(k tn) *entry { return em.getHashed(em.hash(k), k) }

// put adds e or replaces the entry of the same key.
func (em *entryMap) put(e *entry) { em.putHashed(em.hash(e.key()), e) }

// del removes the entry of key k, if any.
func (em *entryMap) del(k tn) { em.delHashed(em.hash(k), k) }

func (em *entryMap) getHashed(h uint64, k tn) *entry {
	for e := em.m[h]; e != nil; e = e.next {
		if e.meta.Name == k.name && e.meta.Tenant == k.tenant {
			return e
		}
	}
	return nil
}

func (em *entryMap) putHashed(h uint64, e *entry) {
	var prev *entry
	for cur := em.m[h]; cur != nil; prev, cur = cur, cur.next {
		if cur.meta.Name == e.meta.Name && cur.meta.Tenant == e.meta.Tenant {
			e.next = cur.next
			em.link(h, prev, e)
			return
		}
	}
	e.next = em.m[h]
	em.m[h] = e
	em.n++
}

func (em *entryMap) delHashed(h uint64, k tn) {
	var prev *entry
	for cur := em.m[h]; cur != nil; prev, cur = cur, cur.next {
		if cur.meta.Name == k.name && cur.meta.Tenant == k.tenant {
			em.link(h, prev, cur.next)
			em.n--
			return
		}
	}
}

// link makes next follow prev (nil: head of h's chain).
func (em *entryMap) link(h uint64, prev, next *entry) {
	switch {
	case prev != nil:
		prev.next = next
	case next != nil:
		em.m[h] = next
	default:
		delete(em.m, h)
	}
}

func (em *entryMap) len() int { return em.n }

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

	// Indexes: sets of cached objects. Their keys share the objects' strings.
	epByHost   map[string]set[*apiv1.Endpoint] // spec.host → endpoints
	epBySubnet map[tn]set[*apiv1.Endpoint]     // (tenant, spec.subnet) → endpoints
	epByLabel  map[labelKey]set[*apiv1.Endpoint]
	snByVPC    map[tn]set[*apiv1.Subnet] // (tenant, spec.vpc) → subnets
	intern     *interner

	ring   ring
	subs   map[*subscriber]struct{}
	closed bool
}

func newCache(kinds kindTable, ringSize int, m *metrics) *cache {
	c := &cache{
		metrics:    m,
		kinds:      kinds.all,
		revCh:      make(chan struct{}),
		epByHost:   map[string]set[*apiv1.Endpoint]{},
		epBySubnet: map[tn]set[*apiv1.Endpoint]{},
		epByLabel:  map[labelKey]set[*apiv1.Endpoint]{},
		snByVPC:    map[tn]set[*apiv1.Subnet]{},
		intern:     newInterner(),
		ring:       ring{buf: make([]Event, ringSize)},
		subs:       map[*subscriber]struct{}{},
	}
	for range kinds.all {
		c.byKind = append(c.byKind, &kindCache{items: newEntryMap(), order: btree.NewG(32, lessEntry)})
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
		if old := c.byKind[ch.kind.idx].items.get(tn{ch.tenant, ch.name}); old != nil && old.createRev != ch.createRev {
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
			if _, ok := listed[k.idx][e.key()]; !ok {
				gone = append(gone, e)
			}
			return true
		})
		for _, e := range gone {
			ev, _ := c.applyOne(change{kind: k, tenant: e.meta.Tenant, name: e.meta.Name, rev: rev}, rev)
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
	old := kc.items.get(key)
	if ch.obj == nil {
		if old == nil {
			return Event{}, false
		}
		c.unindex(old)
		kc.items.del(key)
		kc.order.Delete(old)
		return Event{Type: EventDeleted, Object: old.obj, Old: old.obj, Revision: evRev}, true
	}
	if old != nil && old.modRev >= ch.rev {
		return Event{}, false // seen already
	}
	e := newEntry(ch.obj, ch.createRev, ch.rev)
	ev := Event{Type: EventAdded, Object: e.obj, Revision: evRev}
	if old != nil {
		c.unindex(old)
		ev.Type, ev.Old = EventModified, old.obj
	}
	c.index(e)
	kc.items.put(e)
	kc.order.ReplaceOrInsert(e)
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

// index adds a new entry to the indexes, first making its object share
// repeated values with the other cached objects (before anyone reads it).
func (c *cache) index(e *entry) {
	switch o := e.obj.(type) {
	case *apiv1.Endpoint:
		c.intern.endpoint(o)
		t := o.Metadata.Tenant
		if o.Spec.Host != "" {
			addTo(c.epByHost, o.Spec.Host, o)
		}
		addTo(c.epBySubnet, tn{t, o.Spec.Subnet}, o)
		for k, v := range o.Metadata.Labels {
			addTo(c.epByLabel, labelKey{t, k, v}, o)
		}
	case *apiv1.Subnet:
		addTo(c.snByVPC, tn{o.Metadata.Tenant, o.Spec.VPC}, o)
	}
}

// unindex removes an entry from the indexes.
func (c *cache) unindex(e *entry) {
	switch o := e.obj.(type) {
	case *apiv1.Endpoint:
		t := o.Metadata.Tenant
		if o.Spec.Host != "" {
			delFrom(c.epByHost, o.Spec.Host, o)
		}
		delFrom(c.epBySubnet, tn{t, o.Spec.Subnet}, o)
		for k, v := range o.Metadata.Labels {
			delFrom(c.epByLabel, labelKey{t, k, v}, o)
		}
		c.intern.releaseEndpoint(o)
	case *apiv1.Subnet:
		delFrom(c.snByVPC, tn{o.Metadata.Tenant, o.Spec.VPC}, o)
	}
}

// set is an index bucket: a set of cached objects.
type set[V comparable] = map[V]struct{}

func addTo[K, V comparable](m map[K]set[V], k K, v V) {
	inner := m[k]
	if inner == nil {
		inner = set[V]{}
		m[k] = inner
	}
	inner[v] = struct{}{}
}

func delFrom[K, V comparable](m map[K]set[V], k K, v V) {
	inner := m[k]
	delete(inner, v)
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
	e := c.byKind[k.idx].items.get(tn{tenant, name})
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
		order.AscendGreaterOrEqual(&entry{meta: &apiv1.ObjectMeta{Tenant: tenant}}, func(e *entry) bool {
			return e.meta.Tenant == tenant && visit(e)
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
	eps := members(c.epByHost[host])
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
	eps := members(c.epBySubnet[tn{tenant, subnet}])
	c.mu.RUnlock()
	sortByName(eps)
	return eps
}

// EndpointsByLabel returns a tenant's endpoints labelled key=value, sorted by name.
func (s *Store) EndpointsByLabel(tenant, key, value string) []*apiv1.Endpoint {
	c := s.cache
	c.mu.RLock()
	eps := members(c.epByLabel[labelKey{tenant, key, value}])
	c.mu.RUnlock()
	sortByName(eps)
	return eps
}

// SubnetsByVPC returns the subnets of a tenant's VPC, sorted by name.
func (s *Store) SubnetsByVPC(tenant, vpc string) []*apiv1.Subnet {
	c := s.cache
	c.mu.RLock()
	sns := members(c.snByVPC[tn{tenant, vpc}])
	c.mu.RUnlock()
	sortByName(sns)
	return sns
}

// members returns the objects of an index bucket, in no order.
func members[V comparable](s set[V]) []V {
	vs := make([]V, 0, len(s))
	for v := range s {
		vs = append(vs, v)
	}
	return vs
}

// sortByName sorts objects of one tenant by name.
func sortByName[V apiv1.Object](vs []V) {
	slices.SortFunc(vs, func(a, b V) int {
		return cmp.Compare(a.GetObjectMeta().Name, b.GetObjectMeta().Name)
	})
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
