package store

import (
	"hash/maphash"
	"maps"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// The values that many cached endpoints repeat (tenant, subnet, host, QoS
// class, label keys and values, label sets) are kept once and referred to
// by small integer IDs, so that an endpoint record holds no pointer to
// them. IDs are reference counted by the records that use them: a value no
// longer used is forgotten and its ID reused. The tables are used with the
// cache's lock held (for writing, to acquire or release).

// strTable interns strings as IDs. ID 0 is the empty string, never counted.
type strTable struct {
	ids  map[string]uint32
	strs []string // by ID
	refs []int32  // by ID
	free []uint32 // IDs to reuse
}

func newStrTable() strTable {
	return strTable{ids: map[string]uint32{}, strs: []string{""}, refs: []int32{0}}
}

// acquire returns the ID of s and counts a reference to it.
func (t *strTable) acquire(s string) uint32 {
	if s == "" {
		return 0
	}
	id, ok := t.ids[s]
	if !ok {
		s = strings.Clone(s) // not a piece of a larger string it would keep
		var grown bool
		if id, grown = takeSlot(&t.strs, &t.free, s); grown {
			t.refs = append(t.refs, 0)
		}
		t.ids[s] = id
	}
	t.refs[id]++
	return id
}

// release forgets one reference to id, taken by acquire.
func (t *strTable) release(id uint32) {
	if id == 0 {
		return
	}
	if t.refs[id]--; t.refs[id] > 0 {
		return
	}
	delete(t.ids, t.strs[id])
	t.strs[id] = ""
	t.free = append(t.free, id)
}

// str returns the string of id.
func (t *strTable) str(id uint32) string { return t.strs[id] }

// lookup returns the ID of s, if s is interned.
func (t *strTable) lookup(s string) (uint32, bool) {
	if s == "" {
		return 0, true
	}
	id, ok := t.ids[s]
	return id, ok
}

// len returns the number of strings interned.
func (t *strTable) len() int { return len(t.ids) }

// labelTable interns label sets as IDs. ID 0 is no labels, never counted.
type labelTable struct {
	seed   maphash.Seed
	byHash map[uint64]uint32 // labelsHash → first set; collisions chain on labelSet.next
	sets   []labelSet        // by ID
	free   []uint32
}

// labelSet is one interned label set.
type labelSet struct {
	// m is handed to every reader of an endpoint with these labels: it
	// must never be modified.
	m map[string]string
	// pairs are the interned keys and values: the label index keys.
	pairs []labelPair
	hash  uint64
	refs  int32
	next  uint32 // the next set of the same hash, 0 if none
}

// labelPair is an interned key=value.
type labelPair struct{ key, value uint32 }

func newLabelTable() labelTable {
	return labelTable{seed: maphash.MakeSeed(), byHash: map[uint64]uint32{}, sets: make([]labelSet, 1)}
}

// labelsHash does not depend on the map's iteration order.
func (t *labelTable) labelsHash(m map[string]string) uint64 {
	var h uint64
	for k, v := range m {
		h += maphash.String(t.seed, k) ^ maphash.String(t.seed, v)*0x9e3779b97f4a7c15
	}
	return h
}

// acquire returns the ID of the set equal to m and counts a reference to
// it; a new set's keys and values are interned in strs.
func (t *labelTable) acquire(m map[string]string, strs *strTable) uint32 {
	if len(m) == 0 {
		return 0
	}
	h := t.labelsHash(m)
	for id := t.byHash[h]; id != 0; id = t.sets[id].next {
		if ls := &t.sets[id]; maps.Equal(ls.m, m) {
			ls.refs++
			return id
		}
	}
	ls := labelSet{m: make(map[string]string, len(m)), hash: h, refs: 1, next: t.byHash[h]}
	for k, v := range m {
		p := labelPair{strs.acquire(k), strs.acquire(v)}
		ls.m[strs.str(p.key)] = strs.str(p.value)
		ls.pairs = append(ls.pairs, p)
	}
	id, _ := takeSlot(&t.sets, &t.free, ls)
	t.byHash[h] = id
	return id
}

// release forgets one reference to id, taken by acquire.
func (t *labelTable) release(id uint32, strs *strTable) {
	if id == 0 {
		return
	}
	ls := &t.sets[id]
	if ls.refs--; ls.refs > 0 {
		return
	}
	if head := t.byHash[ls.hash]; head == id {
		if ls.next == 0 {
			delete(t.byHash, ls.hash)
		} else {
			t.byHash[ls.hash] = ls.next
		}
	} else {
		prev := head
		for t.sets[prev].next != id {
			prev = t.sets[prev].next
		}
		t.sets[prev].next = ls.next
	}
	for _, p := range ls.pairs {
		strs.release(p.key)
		strs.release(p.value)
	}
	*ls = labelSet{}
	t.free = append(t.free, id)
}

// get returns the set of id.
func (t *labelTable) get(id uint32) *labelSet { return &t.sets[id] }

// len returns the number of label sets interned.
func (t *labelTable) len() int { return len(t.sets) - 1 - len(t.free) }

// constString returns the constant equal to s, if there is one: strings
// with few possible values need not be kept once per object.
func constString(s string, consts ...string) string {
	for _, c := range consts {
		if s == c {
			return c
		}
	}
	return s
}

// compactObject reduces a freshly decoded object's footprint without
// changing its value: constant strings become the constants. (Endpoints
// are not kept as decoded: see epRecord.)
func compactObject(o apiv1.Object, kind string) {
	tm := o.GetTypeMeta()
	tm.APIVersion = constString(tm.APIVersion, apiv1.APIVersion)
	tm.Kind = constString(tm.Kind, kind)
}

// takeSlot stores v in *items at an index taken from *free, or appended
// if there is none (grown), and returns the index: the slot allocation of
// the ID tables and the endpoint table, whose freed indexes are reused.
func takeSlot[T any](items *[]T, free *[]uint32, v T) (id uint32, grown bool) {
	if n := len(*free); n > 0 {
		id, *free = (*free)[n-1], (*free)[:n-1]
		(*items)[id] = v
		return id, false
	}
	*items = append(*items, v)
	return uint32(len(*items) - 1), true
}
