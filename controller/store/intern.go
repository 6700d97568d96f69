package store

import (
	"hash/maphash"
	"maps"
	"unsafe"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// The cache holds every object of the cluster, a million endpoints and
// more, so an endpoint's footprint is kept small (see BenchmarkCacheMemory):
//   - strings that many endpoints repeat (tenant, subnet, host, phase) and
//     label sets are shared among the cached objects, through reference
//     counts kept by the interner as objects enter and leave the cache, so
//     that a value no longer used is forgotten;
//   - the strings unique to an endpoint that nobody keeps on their own
//     (uid, resourceVersion, timestamp, MAC …) share one allocation
//     (packStrings), which lives as long as the object.
// Cached objects are immutable, so sharing is invisible to readers.

// interner shares equal strings and label maps among cached objects. It
// is used with the cache's write lock held.
type interner struct {
	strs   map[string]internedString
	seed   maphash.Seed
	labels map[uint64]*labelSet // by labelsHash; collisions chain on next
}

type internedString struct {
	s    string
	refs int
}

// labelSet is a shared label map.
type labelSet struct {
	m    map[string]string
	refs int
	next *labelSet
}

func newInterner() *interner {
	return &interner{strs: map[string]internedString{}, seed: maphash.MakeSeed(), labels: map[uint64]*labelSet{}}
}

// str returns the shared copy of s and counts a reference to it.
func (in *interner) str(s string) string {
	if s == "" {
		return ""
	}
	is, ok := in.strs[s]
	if !ok {
		is.s = s
	}
	is.refs++
	in.strs[is.s] = is
	return is.s
}

// dropStr forgets one reference to s, taken by str.
func (in *interner) dropStr(s string) {
	if s == "" {
		return
	}
	is, ok := in.strs[s]
	switch {
	case !ok:
	case is.refs <= 1:
		delete(in.strs, s)
	default:
		is.refs--
		in.strs[s] = is
	}
}

// labelsHash does not depend on the map's iteration order.
func (in *interner) labelsHash(m map[string]string) uint64 {
	var h uint64
	for k, v := range m {
		h += maphash.String(in.seed, k) ^ maphash.String(in.seed, v)*0x9e3779b97f4a7c15
	}
	return h
}

// labelMap returns the shared map equal to m and counts a reference to it.
// A new set's keys and values are interned as strings.
func (in *interner) labelMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return m
	}
	h := in.labelsHash(m)
	for ls := in.labels[h]; ls != nil; ls = ls.next {
		if maps.Equal(ls.m, m) {
			ls.refs++
			return ls.m
		}
	}
	shared := make(map[string]string, len(m))
	for k, v := range m {
		shared[in.str(k)] = in.str(v)
	}
	in.labels[h] = &labelSet{m: shared, refs: 1, next: in.labels[h]}
	return shared
}

// dropLabelMap forgets one reference to a map returned by labelMap.
func (in *interner) dropLabelMap(m map[string]string) {
	if len(m) == 0 {
		return
	}
	h := in.labelsHash(m)
	var prev *labelSet
	for ls := in.labels[h]; ls != nil; prev, ls = ls, ls.next {
		if !maps.Equal(ls.m, m) { // equal sets share one map: this is m
			continue
		}
		if ls.refs--; ls.refs > 0 {
			return
		}
		switch {
		case prev != nil:
			prev.next = ls.next
		case ls.next != nil:
			in.labels[h] = ls.next
		default:
			delete(in.labels, h)
		}
		for k, v := range ls.m {
			in.dropStr(k)
			in.dropStr(v)
		}
		return
	}
}

// endpoint makes ep share its repeated strings and its labels; release
// undoes it when ep leaves the cache.
func (in *interner) endpoint(ep *apiv1.Endpoint) {
	m := &ep.Metadata
	m.Tenant = in.str(m.Tenant)
	m.Labels = in.labelMap(m.Labels)
	ep.Spec.Subnet = in.str(ep.Spec.Subnet)
	ep.Spec.Host = in.str(ep.Spec.Host)
	ep.Spec.QoSClass = in.str(ep.Spec.QoSClass)
	ep.Status.Host = in.str(ep.Status.Host)
}

func (in *interner) releaseEndpoint(ep *apiv1.Endpoint) {
	in.dropStr(ep.Metadata.Tenant)
	in.dropLabelMap(ep.Metadata.Labels)
	in.dropStr(ep.Spec.Subnet)
	in.dropStr(ep.Spec.Host)
	in.dropStr(ep.Spec.QoSClass)
	in.dropStr(ep.Status.Host)
}

// constString returns the constant equal to s, if there is one: strings
// with few possible values need no counting.
func constString(s string, consts ...string) string {
	for _, c := range consts {
		if s == c {
			return c
		}
	}
	return s
}

// packStrings makes the strings *ps, unique to one object, share one
// allocation, which therefore lives exactly as long as the object.
func packStrings(ps ...*string) {
	n := 0
	for _, p := range ps {
		n += len(*p)
	}
	if n == 0 {
		return
	}
	buf := make([]byte, 0, n)
	for _, p := range ps {
		buf = append(buf, *p...)
	}
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	off := 0
	for _, p := range ps {
		l := len(*p)
		*p = all[off : off+l]
		off += l
	}
}

// compactObject reduces a freshly decoded object's footprint without
// changing its value: constant strings become the constants, and an
// endpoint's own strings share one allocation.
func compactObject(o apiv1.Object, kind string) {
	tm := o.GetTypeMeta()
	tm.APIVersion = constString(tm.APIVersion, apiv1.APIVersion)
	tm.Kind = constString(tm.Kind, kind)
	ep, ok := o.(*apiv1.Endpoint)
	if !ok {
		return
	}
	ep.Status.Phase = constString(ep.Status.Phase, apiv1.PhasePending, apiv1.PhaseReady, apiv1.PhaseFailed, apiv1.PhaseLost)
	// Not the name nor the addresses: readers keep those, as map keys
	// for instance, and one of them would keep all of an old version's.
	m := &ep.Metadata
	packStrings(&m.UID, &m.ResourceVersion, &m.CreationTimestamp,
		&ep.Spec.MAC, &ep.Spec.Netns, &ep.Status.MAC, &ep.Status.Netns, &ep.Status.Message)
}
