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

// kindCache holds the objects of one kind other than Endpoint, by name
// and in tenant/name order.
type kindCache struct {
	items entryMap
	order *btree.BTreeG[*entry]
}

// entryMap finds entries by (tenant, name). It is keyed by a hash of the
// pair rather than the pair (a 16-byte slot instead of 40); entries whose
// hashes are equal chain on entry.next.
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
	// rec is an endpoint's obj made a record by prepare (obj is then nil);
	// the change holds a reference to it until it is applied.
	rec       *epRecord
	createRev int64
	rev       int64 // ModRevision of a put, revision of a delete
}

func (ch *change) isDelete() bool { return ch.obj == nil && ch.rec == nil }

// evType is an event type as the ring keeps it.
type evType uint8

const (
	evAdded evType = iota
	evModified
	evDeleted
)

var evTypes = [...]string{evAdded: EventAdded, evModified: EventModified, evDeleted: EventDeleted}

// ringEvent is an Event as the cache keeps it, with endpoints as records:
// obj and old are apiv1.Objects or *epRecords, and the event holds a
// reference to each record (two if obj and old are the same one).
type ringEvent struct {
	typ      evType
	rev      int64
	obj, old any
	// decoded is the endpoint obj was built from, if the watch just
	// decoded it: the object delivered, rather than one built from obj.
	// Not kept in the ring.
	decoded *apiv1.Endpoint
}

// cache is the typed, indexed copy of the store's objects at revision rev,
// plus the ring of recent events and the Watch subscribers. Objects are
// shared with every reader and never modified after insertion; endpoints
// are kept as records, and readers get new objects built from them.
type cache struct {
	metrics *metrics
	kinds   []*kindDesc
	epKind  *kindDesc

	mu     sync.RWMutex
	rev    int64
	revCh  chan struct{} // closed and replaced when rev advances
	byKind []*kindCache  // by kindDesc.idx; nil for endpoints, which are in eps
	eps    *epTable

	// snByVPC indexes subnets: (tenant, spec.vpc) → subnets. Its keys
	// share the objects' strings.
	snByVPC map[tn]set[*apiv1.Subnet]

	ring   ring
	subs   map[*subscriber]struct{}
	closed bool
}

func newCache(kinds kindTable, ringSize int, m *metrics) *cache {
	c := &cache{
		metrics: m,
		kinds:   kinds.all,
		epKind:  kinds.mustLookup(apiv1.KindEndpoint),
		revCh:   make(chan struct{}),
		eps:     newEpTable(),
		snByVPC: map[tn]set[*apiv1.Subnet]{},
		ring:    ring{buf: make([]ringEvent, ringSize)},
		subs:    map[*subscriber]struct{}{},
	}
	for _, k := range kinds.all {
		var kc *kindCache
		if k != c.epKind {
			kc = &kindCache{items: newEntryMap(), order: btree.NewG(32, lessEntry)}
		}
		c.byKind = append(c.byKind, kc)
	}
	return c
}

// prepare makes the decoded endpoints of chs records, as the cache keeps
// them, so that a long list does not keep every decoded object until it
// is applied. Changes prepared and not applied must be discarded.
func (c *cache) prepare(chs []change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range chs {
		c.prepareOne(&chs[i])
	}
}

func (c *cache) prepareOne(ch *change) {
	ep, ok := ch.obj.(*apiv1.Endpoint)
	if !ok {
		return
	}
	ch.rec = c.eps.newRecord(ep, ch.createRev, ch.rev)
	ch.obj = nil
	k := c.eps.key(ch.rec) // the record's strings, not the etcd key's
	ch.tenant, ch.name = k.tenant, k.name
}

// discard forgets prepared changes that will not be applied.
func (c *cache) discard(chs []change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range chs {
		if r := chs[i].rec; r != nil {
			c.eps.drop(r)
			chs[i].rec = nil
		}
	}
}

// load fills the empty cache from the initial list at rev, without events.
func (c *cache) load(snap []change, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range snap {
		if ev, ok := c.applyOne(ch, rev); ok {
			c.release(&ev)
		}
	}
	c.ring.start = rev
	c.advance(rev)
}

// apply applies watched changes and moves the cache to rev.
func (c *cache) apply(changes []change, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	evs := make([]ringEvent, 0, len(changes))
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
	listed := make([]map[tn]struct{}, len(c.kinds))
	for i := range listed {
		listed[i] = map[tn]struct{}{}
	}
	var evs []ringEvent
	for _, ch := range snap {
		key := tn{ch.tenant, ch.name}
		listed[ch.kind.idx][key] = struct{}{}
		if createRev, ok := c.createRev(ch.kind, key); ok && createRev != ch.createRev {
			// Deleted and created again while we were not watching.
			ev, _ := c.applyOne(change{kind: ch.kind, tenant: ch.tenant, name: ch.name, rev: rev}, rev)
			evs = append(evs, ev)
		}
		if ev, ok := c.applyOne(ch, rev); ok {
			evs = append(evs, ev)
		}
	}
	for _, k := range c.kinds {
		var gone []tn
		c.eachKey(k, func(key tn) {
			if _, ok := listed[k.idx][key]; !ok {
				gone = append(gone, key)
			}
		})
		for _, key := range gone {
			ev, _ := c.applyOne(change{kind: k, tenant: key.tenant, name: key.name, rev: rev}, rev)
			evs = append(evs, ev)
		}
	}
	c.publish(evs)
	c.advance(rev)
	return len(evs)
}

// createRev returns the CreateRevision of a cached object.
func (c *cache) createRev(k *kindDesc, key tn) (int64, bool) {
	if k == c.epKind {
		if r := c.eps.get(key); r != nil {
			return r.createRev, true
		}
		return 0, false
	}
	if e := c.byKind[k.idx].items.get(key); e != nil {
		return e.createRev, true
	}
	return 0, false
}

// eachKey calls f with the key of every cached object of kind k, in
// tenant and name order.
func (c *cache) eachKey(k *kindDesc, f func(tn)) {
	if k == c.epKind {
		c.eps.ascend("", func(r *epRecord) bool {
			f(c.eps.key(r))
			return true
		})
		return
	}
	c.byKind[k.idx].order.Ascend(func(e *entry) bool {
		f(e.key())
		return true
	})
}

// applyOne applies one change, taking over the reference to its record;
// the event it produces, if any, carries evRev, and must be published or
// released.
func (c *cache) applyOne(ch change, evRev int64) (ringEvent, bool) {
	if ch.kind == c.epKind {
		return c.applyEndpoint(ch, evRev)
	}
	kc := c.byKind[ch.kind.idx]
	key := tn{ch.tenant, ch.name}
	old := kc.items.get(key)
	if ch.obj == nil {
		if old == nil {
			return ringEvent{}, false
		}
		c.unindex(old)
		kc.items.del(key)
		kc.order.Delete(old)
		return ringEvent{typ: evDeleted, rev: evRev, obj: old.obj, old: old.obj}, true
	}
	if old != nil && old.modRev >= ch.rev {
		return ringEvent{}, false // seen already
	}
	e := newEntry(ch.obj, ch.createRev, ch.rev)
	ev := ringEvent{typ: evAdded, rev: evRev, obj: e.obj}
	if old != nil {
		c.unindex(old)
		ev.typ, ev.old = evModified, old.obj
	}
	c.index(e)
	kc.items.put(e)
	kc.order.ReplaceOrInsert(e)
	return ev, true
}

// applyEndpoint is applyOne for an endpoint.
func (c *cache) applyEndpoint(ch change, evRev int64) (ringEvent, bool) {
	t := c.eps
	if ch.isDelete() {
		old := t.remove(tn{ch.tenant, ch.name})
		if old == nil {
			return ringEvent{}, false
		}
		t.hold(old) // the table's reference and this one: obj and old
		return ringEvent{typ: evDeleted, rev: evRev, obj: old, old: old}, true
	}
	var decoded *apiv1.Endpoint
	if ch.rec == nil {
		decoded = ch.obj.(*apiv1.Endpoint)
		c.prepareOne(&ch)
	}
	r := ch.rec
	if old := t.get(tn{ch.tenant, ch.name}); old != nil && old.modRev >= ch.rev {
		t.drop(r)
		return ringEvent{}, false // seen already
	}
	old := t.put(r)
	t.hold(r)
	ev := ringEvent{typ: evAdded, rev: evRev, obj: r, decoded: decoded}
	if old != nil {
		ev.typ, ev.old = evModified, old // with the table's reference
	}
	return ev, true
}

// release forgets an event's references to records.
func (c *cache) release(ev *ringEvent) {
	if r, ok := ev.obj.(*epRecord); ok {
		c.eps.drop(r)
	}
	if r, ok := ev.old.(*epRecord); ok {
		c.eps.drop(r)
	}
}

// object returns the object of an event's obj or old: an endpoint is
// built from its record.
func (c *cache) object(v any) apiv1.Object {
	switch v := v.(type) {
	case *epRecord:
		return c.eps.endpoint(v)
	case apiv1.Object:
		return v
	}
	return nil
}

// event returns ev as delivered to subscribers.
func (c *cache) event(ev *ringEvent) Event {
	out := Event{Type: evTypes[ev.typ], Revision: ev.rev}
	if ev.decoded != nil {
		out.Object = ev.decoded
	} else {
		out.Object = c.object(ev.obj)
	}
	switch {
	case ev.old == ev.obj:
		out.Old = out.Object
	case ev.old != nil:
		out.Old = c.object(ev.old)
	}
	return out
}

// kindTenant returns the kind and tenant of ev's object.
func (c *cache) kindTenant(ev *ringEvent) (kind, tenant string) {
	switch v := ev.obj.(type) {
	case *epRecord:
		return apiv1.KindEndpoint, c.eps.strs.str(v.tenant)
	case apiv1.Object:
		return v.GetTypeMeta().Kind, v.GetObjectMeta().Tenant
	}
	return "", ""
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

// index adds a new entry to the indexes.
func (c *cache) index(e *entry) {
	if o, ok := e.obj.(*apiv1.Subnet); ok {
		addTo(c.snByVPC, tn{o.Metadata.Tenant, o.Spec.VPC}, o)
	}
}

// unindex removes an entry from the indexes.
func (c *cache) unindex(e *entry) {
	if o, ok := e.obj.(*apiv1.Subnet); ok {
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
// is shared: callers must not modify it. (An endpoint is a new object at
// each call, but shares its labels map.) It implements apiv1 Lookup.
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
	defer c.mu.RUnlock()
	if k == c.epKind {
		if r := c.eps.get(tn{tenant, name}); r != nil {
			return c.eps.endpoint(r), true
		}
		return nil, false
	}
	if e := c.byKind[k.idx].items.get(tn{tenant, name}); e != nil {
		return e.obj, true
	}
	return nil, false
}

// Count returns the number of cached objects of a kind in a tenant (in
// all tenants if tenant is ""), without building them.
func (s *Store) Count(kind, tenant string) int {
	k, ok := s.kinds.lookup(kind)
	if !ok {
		return 0
	}
	all := !k.info.Namespaced || tenant == ""
	c := s.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	if k == c.epKind {
		if all {
			return c.eps.len()
		}
		return c.eps.countTenant(tenant)
	}
	order := c.byKind[k.idx].order
	if all {
		return order.Len()
	}
	n := 0
	order.AscendGreaterOrEqual(&entry{meta: &apiv1.ObjectMeta{Tenant: tenant}}, func(e *entry) bool {
		if e.meta.Tenant != tenant {
			return false
		}
		n++
		return true
	})
	return n
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
// from which Watch continues without a gap. Kind "" (or unknown) lists
// nothing and returns the revision alone.
func (s *Store) ListSelector(kind, tenant string, match func(labels map[string]string) bool) ([]apiv1.Object, int64) {
	k, ok := s.kinds.lookup(kind)
	c := s.cache
	all := ok && (!k.info.Namespaced || tenant == "")
	if ok && k == c.epKind {
		return c.listEndpoints(tenant, all, match)
	}
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
	if all {
		objs = make([]apiv1.Object, 0, order.Len())
		order.Ascend(visit)
	} else {
		order.AscendGreaterOrEqual(&entry{meta: &apiv1.ObjectMeta{Tenant: tenant}}, func(e *entry) bool {
			return e.meta.Tenant == tenant && visit(e)
		})
	}
	return objs, c.rev
}

// buildLockedMax is the most endpoints a read builds with the cache's
// lock held; a longer list is built once the lock is released.
const buildLockedMax = 4096

// listEndpoints is ListSelector for endpoints. The records that match are
// picked with the lock held; a long list is built after the lock is
// released, from a copy of the intern tables, not to hold up the watch
// (a million endpoints take a few hundred milliseconds to build).
func (c *cache) listEndpoints(tenant string, all bool, match func(labels map[string]string) bool) ([]apiv1.Object, int64) {
	objs, rest, names, rev := c.selectEndpoints(tenant, all, match)
	for _, r := range rest {
		objs = append(objs, names.endpoint(r))
	}
	return objs, rev
}

// selectEndpoints picks the records of listEndpoints and builds their
// endpoints if they are few; otherwise it returns them, as rest, with the
// names to build them with.
func (c *cache) selectEndpoints(tenant string, all bool, match func(labels map[string]string) bool) (
	objs []apiv1.Object, rest []*epRecord, names epNames, rev int64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t := c.eps
	var recs []*epRecord
	if all {
		recs = make([]*epRecord, 0, t.len())
		tenant = ""
	}
	names = t.names()
	t.ascend(tenant, func(r *epRecord) bool {
		if match == nil || match(names.labelsOf(r)) {
			recs = append(recs, r)
		}
		return true
	})
	if all {
		objs = make([]apiv1.Object, 0, len(recs))
	}
	if len(recs) > buildLockedMax {
		return objs, recs, t.namesCopy(), c.rev
	}
	for _, r := range recs {
		objs = append(objs, names.endpoint(r))
	}
	return objs, nil, names, c.rev
}

// EndpointsByHost returns the endpoints whose spec.host is host, sorted by
// tenant and name. Shared objects: do not modify.
func (s *Store) EndpointsByHost(host string) []*apiv1.Endpoint {
	c := s.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	slots := c.eps.byHostSlots(host)
	c.eps.sortSlots(slots)
	return c.eps.endpoints(slots)
}

// EndpointsBySubnet returns the endpoints of a tenant's subnet, sorted by name.
func (s *Store) EndpointsBySubnet(tenant, subnet string) []*apiv1.Endpoint {
	c := s.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	slots := c.eps.bySubnetSlots(tenant, subnet)
	c.eps.sortSlots(slots)
	return c.eps.endpoints(slots)
}

// EndpointsByLabel returns a tenant's endpoints labelled key=value, sorted by name.
func (s *Store) EndpointsByLabel(tenant, key, value string) []*apiv1.Endpoint {
	c := s.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	slots := c.eps.byLabelSlots(tenant, key, value)
	c.eps.sortSlots(slots)
	return c.eps.endpoints(slots)
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
