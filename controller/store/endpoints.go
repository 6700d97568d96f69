package store

import (
	"cmp"
	"hash/maphash"
	"slices"

	"github.com/google/btree"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// epTable holds the cached endpoints as records (see epRecord) in slots,
// and indexes them by slot number, so that its maps and trees hold no
// pointers for the GC to follow. It is used with the cache's lock held.
type epTable struct {
	strs   strTable
	labels labelTable

	recs []*epRecord // by slot; nil if free
	free []uint32    // free slots
	n    int

	// byKey finds a slot by a hash of its (tenant, name).
	seed  maphash.Seed
	byKey keyIndex

	// byTenant orders each tenant's slots by name (List).
	byTenant  map[uint32]*btree.BTreeG[uint32]
	treeNodes *btree.FreeListG[uint32]

	byHost   map[uint32]*slotSet    // spec.host (not "") → slots
	bySubnet map[subnetIdx]*slotSet // (tenant, spec.subnet) → slots
	byLabel  map[labelIdx]*slotSet  // (tenant, key, value) → slots
}

// subnetIdx and labelIdx are index keys of interned strings.
type (
	subnetIdx struct{ tenant, subnet uint32 }
	labelIdx  struct{ tenant, key, value uint32 }
)

func newEpTable() *epTable {
	return &epTable{
		strs:      newStrTable(),
		labels:    newLabelTable(),
		seed:      maphash.MakeSeed(),
		byTenant:  map[uint32]*btree.BTreeG[uint32]{},
		treeNodes: btree.NewFreeListG[uint32](64),
		byHost:    map[uint32]*slotSet{},
		bySubnet:  map[subnetIdx]*slotSet{},
		byLabel:   map[labelIdx]*slotSet{},
	}
}

// key returns the (tenant, name) of r.
func (t *epTable) key(r *epRecord) tn { return tn{t.strs.str(r.tenant), r.name} }

// hash returns the hash of a key in byKey.
func (t *epTable) hash(k tn) uint32 { return uint32(maphash.Comparable(t.seed, k)) }

// find returns the slot of tenant/name.
func (t *epTable) find(k tn) (uint32, bool) {
	return t.byKey.find(t.hash(k), func(s uint32) bool {
		r := t.recs[s]
		return r.name == k.name && t.strs.str(r.tenant) == k.tenant
	})
}

// get returns the record of tenant/name, or nil.
func (t *epTable) get(k tn) *epRecord {
	if s, ok := t.find(k); ok {
		return t.recs[s]
	}
	return nil
}

// put makes r the record of its key, taking over the caller's reference.
// It returns the record r replaces, if any, with the table's reference
// handed to the caller. r keeps the name string of the record it replaces.
func (t *epTable) put(r *epRecord) (old *epRecord) {
	k := t.key(r)
	if s, ok := t.find(k); ok {
		old = t.recs[s]
		r.name = old.name
		t.recs[s] = r
		t.reindex(s, old, r)
		return old
	}
	s, _ := takeSlot(&t.recs, &t.free, r)
	t.n++
	t.byKey.insert(t.hash(k), s)
	tree := t.byTenant[r.tenant]
	if tree == nil {
		tree = btree.NewWithFreeListG(32, t.lessName, t.treeNodes)
		t.byTenant[r.tenant] = tree
	}
	tree.ReplaceOrInsert(s)
	t.reindex(s, nil, r)
	return nil
}

// remove takes the record of tenant/name out of the table and returns it,
// with the table's reference handed to the caller; nil if there is none.
func (t *epTable) remove(k tn) *epRecord {
	s, ok := t.find(k)
	if !ok {
		return nil
	}
	r := t.recs[s]
	t.reindex(s, r, nil)
	tree := t.byTenant[r.tenant]
	tree.Delete(s)
	if tree.Len() == 0 {
		delete(t.byTenant, r.tenant)
	}
	t.byKey.remove(t.hash(k), s)
	t.recs[s] = nil
	t.free = append(t.free, s)
	t.n--
	return r
}

// lessName orders the slots of one tenant by name.
func (t *epTable) lessName(a, b uint32) bool { return t.recs[a].name < t.recs[b].name }

// hold counts one more reference to r.
func (t *epTable) hold(r *epRecord) { r.refs++ }

// drop forgets one reference to r; the last releases r's interned values.
func (t *epTable) drop(r *epRecord) {
	if r.refs--; r.refs > 0 {
		return
	}
	for _, id := range [...]uint32{r.tenant, r.subnet, r.host, r.qos, r.statusHost} {
		t.strs.release(id)
	}
	t.labels.release(r.labels, &t.strs)
	t.releaseConditions(r)
}

// reindex moves slot s from the index buckets of old to those of cur
// (either may be nil).
func (t *epTable) reindex(s uint32, old, cur *epRecord) {
	if old != nil && cur != nil && old.host == cur.host && old.subnet == cur.subnet && old.labels == cur.labels {
		return // a status change
	}
	if old != nil {
		if old.host != 0 {
			delFromSet(t.byHost, old.host, s)
		}
		delFromSet(t.bySubnet, subnetIdx{old.tenant, old.subnet}, s)
		if old.labels != 0 {
			for _, p := range t.labels.get(old.labels).pairs {
				delFromSet(t.byLabel, labelIdx{old.tenant, p.key, p.value}, s)
			}
		}
	}
	if cur != nil {
		if cur.host != 0 {
			addToSet(t.byHost, cur.host, s)
		}
		addToSet(t.bySubnet, subnetIdx{cur.tenant, cur.subnet}, s)
		if cur.labels != 0 {
			for _, p := range t.labels.get(cur.labels).pairs {
				addToSet(t.byLabel, labelIdx{cur.tenant, p.key, p.value}, s)
			}
		}
	}
}

// len returns the number of endpoints.
func (t *epTable) len() int { return t.n }

// countTenant returns the number of endpoints of a tenant.
func (t *epTable) countTenant(tenant string) int {
	if id, ok := t.strs.lookup(tenant); ok {
		if tree := t.byTenant[id]; tree != nil {
			return tree.Len()
		}
	}
	return 0
}

// ---- reads ----

// endpoints returns the endpoints in slots, built from their records.
func (t *epTable) endpoints(slots []uint32) []*apiv1.Endpoint {
	eps := make([]*apiv1.Endpoint, len(slots))
	for i, s := range slots {
		eps[i] = t.endpoint(t.recs[s])
	}
	return eps
}

// bucket returns the slots of an index bucket (nil: none).
func bucket[K comparable](m map[K]*slotSet, k K) []uint32 {
	if set := m[k]; set != nil {
		return set.appendTo(nil)
	}
	return nil
}

// byHostSlots returns the slots of the endpoints on host.
func (t *epTable) byHostSlots(host string) []uint32 {
	if id, ok := t.strs.lookup(host); ok && id != 0 {
		return bucket(t.byHost, id)
	}
	return nil
}

// bySubnetSlots returns the slots of the endpoints of a tenant's subnet.
func (t *epTable) bySubnetSlots(tenant, subnet string) []uint32 {
	tid, ok1 := t.strs.lookup(tenant)
	sid, ok2 := t.strs.lookup(subnet)
	if !ok1 || !ok2 {
		return nil
	}
	return bucket(t.bySubnet, subnetIdx{tid, sid})
}

// byLabelSlots returns the slots of a tenant's endpoints labelled key=value.
func (t *epTable) byLabelSlots(tenant, key, value string) []uint32 {
	tid, ok1 := t.strs.lookup(tenant)
	kid, ok2 := t.strs.lookup(key)
	vid, ok3 := t.strs.lookup(value)
	if !ok1 || !ok2 || !ok3 {
		return nil
	}
	return bucket(t.byLabel, labelIdx{tid, kid, vid})
}

// sortSlots sorts slots by tenant and name.
func (t *epTable) sortSlots(slots []uint32) {
	slices.SortFunc(slots, func(a, b uint32) int {
		ra, rb := t.recs[a], t.recs[b]
		if ra.tenant != rb.tenant {
			return cmp.Compare(t.strs.str(ra.tenant), t.strs.str(rb.tenant))
		}
		return cmp.Compare(ra.name, rb.name)
	})
}

// ascend calls visit with the records of tenant ("": all tenants), in
// tenant and name order, until visit returns false.
func (t *epTable) ascend(tenant string, visit func(*epRecord) bool) {
	each := func(tree *btree.BTreeG[uint32]) bool {
		more := true
		tree.Ascend(func(s uint32) bool {
			more = visit(t.recs[s])
			return more
		})
		return more
	}
	if tenant != "" {
		if id, ok := t.strs.lookup(tenant); ok {
			if tree := t.byTenant[id]; tree != nil {
				each(tree)
			}
		}
		return
	}
	tenants := make([]uint32, 0, len(t.byTenant))
	for id := range t.byTenant {
		tenants = append(tenants, id)
	}
	slices.SortFunc(tenants, func(a, b uint32) int { return cmp.Compare(t.strs.str(a), t.strs.str(b)) })
	for _, id := range tenants {
		if !each(t.byTenant[id]) {
			return
		}
	}
}

// ---- index buckets ----

// slotSetSmall is the size up to which a slotSet is a slice.
const slotSetSmall = 512

// slotSet is an index bucket: a set of slots, in a slice while small (an
// endpoint per host, subnet or label is a few bytes) and a map beyond.
type slotSet struct {
	list []uint32
	m    map[uint32]struct{}
}

func (ss *slotSet) len() int { return len(ss.list) + len(ss.m) }

// add adds s, which must not be in the set.
func (ss *slotSet) add(s uint32) {
	if ss.m != nil {
		ss.m[s] = struct{}{}
		return
	}
	ss.list = append(ss.list, s)
	if len(ss.list) > slotSetSmall {
		ss.m = make(map[uint32]struct{}, len(ss.list))
		for _, x := range ss.list {
			ss.m[x] = struct{}{}
		}
		ss.list = nil
	}
}

// del removes s, if present.
func (ss *slotSet) del(s uint32) {
	if ss.m != nil {
		delete(ss.m, s)
		if len(ss.m) <= slotSetSmall/2 {
			ss.list = make([]uint32, 0, slotSetSmall)
			for x := range ss.m {
				ss.list = append(ss.list, x)
			}
			ss.m = nil
		}
		return
	}
	i := slices.Index(ss.list, s)
	if i < 0 {
		return
	}
	last := len(ss.list) - 1
	ss.list[i] = ss.list[last]
	ss.list = ss.list[:last]
	if cap(ss.list) > 16 && len(ss.list) < cap(ss.list)/4 {
		ss.list = slices.Clone(ss.list)
	}
}

// appendTo appends the slots of the set to dst, in no order.
func (ss *slotSet) appendTo(dst []uint32) []uint32 {
	if ss.m == nil {
		return append(dst, ss.list...)
	}
	for s := range ss.m {
		dst = append(dst, s)
	}
	return dst
}

func addToSet[K comparable](m map[K]*slotSet, k K, s uint32) {
	ss := m[k]
	if ss == nil {
		ss = &slotSet{}
		m[k] = ss
	}
	ss.add(s)
}

func delFromSet[K comparable](m map[K]*slotSet, k K, s uint32) {
	ss := m[k]
	if ss == nil {
		return
	}
	ss.del(s)
	if ss.len() == 0 {
		delete(m, k)
	}
}
