package compile

import (
	"bytes"
	"cmp"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/weftnet/weft/wire"
)

// resource is one resource of a host's view: its encoded JSON and the
// version at which it last changed.
type resource struct {
	encoded
	ver uint64
}

// encoded is the JSON of a resource: data, followed by tail if set (a
// compiled policy, shared by every view that holds it, and the endpoints
// it applies to on the host: policyTail). Both are shared and never
// modified, and together compact as json.Marshal writes them (every
// resource is encoded by view.Encode, or compiled from its output), so
// the deltas say so (wire.Delta.CompactData) and their frames copy them
// unchecked.
type encoded struct{ data, tail []byte }

// equal reports whether e and o are the same JSON, however split.
func (e encoded) equal(o encoded) bool {
	if len(e.data)+len(e.tail) != len(o.data)+len(o.tail) {
		return false
	}
	a, a2, b, b2 := e.data, e.tail, o.data, o.tail
	for len(a)+len(a2) > 0 {
		if len(a) == 0 {
			a, a2 = a2, nil
		}
		if len(b) == 0 {
			b, b2 = b2, nil
		}
		n := min(len(a), len(b))
		if !bytes.Equal(a[:n], b[:n]) {
			return false
		}
		a, b = a[n:], b[n:]
	}
	return true
}

// tombstone records that key was deleted at version ver, the seq-th change
// of its view.
type tombstone struct {
	key wire.ResourceKey
	ver uint64
	seq uint64
}

// hostView is the compiled view of one host. The compiler writes (runMu)
// it; stream sessions read deltas from it. Memory is O(resources +
// tombstones kept), whatever the agents have acknowledged.
type hostView struct {
	mu   sync.Mutex
	res  map[wire.ResourceKey]*resource
	tomb map[wire.ResourceKey]uint64 // live tombstones: key → delete version
	// tombQ holds tombstones in delete order for pruning; an entry whose key
	// was re-created (or deleted again) since is stale and skipped.
	tombQ []tombstone
	ver   uint64 // current version
	seq   uint64 // number of changes so far (the horizon counts these)
	// floor: a delta from a version below it could miss a pruned tombstone
	// (or predates this view), so it is answered with a snapshot.
	floor uint64
	subs  map[chan struct{}]struct{}
	// hash caches wire.ViewHash of res; nil when stale.
	hash []byte

	// built is closed once the compiler has compiled the view;
	// requested is set once somebody asked it to.
	built     chan struct{}
	requested bool
	// idleSince is when the view was last used with nobody subscribed
	// (zero while somebody is): it is dropped Config.Linger after.
	idleSince time.Time
}

func newHostView(ver uint64) *hostView {
	return &hostView{
		res:   map[wire.ResourceKey]*resource{},
		tomb:  map[wire.ResourceKey]uint64{},
		ver:   ver,
		floor: ver,
		subs:  map[chan struct{}]struct{}{},
		built: make(chan struct{}),
	}
}

// start sets the version of a view about to be compiled for the first
// time: nobody holds a version of it from this compiler, so its history
// starts there.
func (hv *hostView) start(ver uint64) {
	hv.mu.Lock()
	defer hv.mu.Unlock()
	hv.ver, hv.floor = ver, ver
}

// isBuilt reports whether the view has been compiled.
func (hv *hostView) isBuilt() bool {
	select {
	case <-hv.built:
		return true
	default:
		return false
	}
}

// applyResult says what an apply changed.
type applyResult struct {
	changed          bool
	upserts, deletes int
	sizeDelta        int // change in the number of resources
}

// apply makes the view equal to next (key → encoded resource). Resources
// whose bytes are unchanged keep their version; if anything changed, the
// view moves to the version nextVersion returns (called at most once),
// tombstones beyond the horizon are pruned and subscribers are poked.
func (hv *hostView) apply(next map[wire.ResourceKey]encoded, nextVersion func() uint64, horizon int) applyResult {
	hv.mu.Lock()
	defer hv.mu.Unlock()
	var r applyResult
	var v uint64
	if len(hv.res) == 0 && len(next) > 0 {
		hv.res = make(map[wire.ResourceKey]*resource, len(next)) // the first build: not grown key by key
	}
	bump := func() {
		if v == 0 {
			v = nextVersion()
		}
	}
	for k, e := range next {
		old := hv.res[k]
		if old != nil && old.equal(e) {
			continue
		}
		bump()
		r.upserts++
		if old == nil {
			hv.res[k] = &resource{encoded: e, ver: v}
			delete(hv.tomb, k)
			r.sizeDelta++
			continue
		}
		old.encoded, old.ver = e, v
	}
	for k := range hv.res {
		if _, ok := next[k]; ok {
			continue
		}
		bump()
		r.deletes++
		r.sizeDelta--
		delete(hv.res, k)
		hv.tomb[k] = v
		hv.tombQ = append(hv.tombQ, tombstone{key: k, ver: v, seq: hv.seq + 1})
	}
	if v == 0 {
		return r
	}
	r.changed = true
	hv.ver = v
	hv.hash = nil
	hv.seq++
	hv.prune(horizon)
	for ch := range hv.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return r
}

// prune drops tombstones older than horizon changes of the view and keeps
// at most horizon of them; the floor rises to the newest one dropped.
func (hv *hostView) prune(horizon int) {
	h := uint64(horizon)
	i := 0
	for ; i < len(hv.tombQ); i++ {
		t := hv.tombQ[i]
		if t.seq+h > hv.seq && len(hv.tombQ)-i <= horizon {
			break
		}
		if hv.tomb[t.key] == t.ver {
			delete(hv.tomb, t.key)
			hv.floor = max(hv.floor, t.ver)
		}
	}
	if i == len(hv.tombQ) {
		hv.tombQ = nil
	} else if i > 0 {
		hv.tombQ = hv.tombQ[i:]
	}
}

// delta returns the changes after from, an empty delta, or a snapshot
// (see Compiler.Resume). agentHash is the hash of what the agent holds
// (nil: unknown); applied is the version of the compiler's last applied
// revision.
func (hv *hostView) delta(from uint64, agentHash []byte, epoch uint32, applied uint64) wire.Delta {
	hv.mu.Lock()
	defer hv.mu.Unlock()
	snapshot := false
	switch {
	case from == 0 || EpochOf(from) != epoch || from > max(applied, hv.ver):
		snapshot = true // nothing, another cluster, or the future
	case agentHash != nil && bytes.Equal(agentHash, hv.hashLocked()):
		// The agent holds exactly this view, whatever history we have:
		// nothing to send but, if it is behind, the current version.
		return wire.Delta{FromVersion: from, ToVersion: max(from, hv.ver)}
	case from > hv.ver:
		// The agent's version is newer than this view's last change: it
		// came from another replica that applied the same revisions. Its
		// content is this one unless its hash says otherwise.
		if agentHash != nil {
			snapshot = true
		} else {
			return wire.Delta{FromVersion: from, ToVersion: from}
		}
	case from < hv.floor:
		snapshot = true // history pruned, or the view is younger than from
	}
	d := wire.Delta{FromVersion: from, ToVersion: hv.ver, Snapshot: snapshot, CompactData: true}
	if from == hv.ver && !snapshot {
		return d
	}
	if snapshot {
		d.FromVersion = 0
		d.Upserts = make([]wire.Resource, 0, len(hv.res))
	}
	for k, r := range hv.res {
		if snapshot || r.ver > from {
			d.Upserts = append(d.Upserts, wire.Resource{Key: k, Data: json.RawMessage(r.data), Tail: r.tail})
		}
	}
	if !snapshot {
		for k, v := range hv.tomb {
			if v > from {
				d.Deletes = append(d.Deletes, k)
			}
		}
	}
	slices.SortFunc(d.Upserts, func(a, b wire.Resource) int { return compareKeys(a.Key, b.Key) })
	slices.SortFunc(d.Deletes, compareKeys)
	if snapshot && hv.hash == nil {
		// The upserts are the whole view, sorted: hash them (ViewHash's
		// sort then moves nothing) instead of gathering and sorting the
		// resources again.
		hv.hash = wire.ViewHash(d.Upserts)
	}
	d.ViewHash = hv.hashLocked()
	return d
}

// hashLocked returns wire.ViewHash of the view's resources; hv.mu is held.
func (hv *hostView) hashLocked() []byte {
	if hv.hash == nil {
		rs := make([]wire.Resource, 0, len(hv.res))
		for k, r := range hv.res {
			rs = append(rs, wire.Resource{Key: k, Data: r.data, Tail: r.tail})
		}
		hv.hash = wire.ViewHash(rs)
	}
	return hv.hash
}

func compareKeys(a, b wire.ResourceKey) int {
	return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.ID, b.ID))
}

func (hv *hostView) version() uint64 {
	hv.mu.Lock()
	defer hv.mu.Unlock()
	return hv.ver
}

// stats returns the number of resources and live tombstones.
func (hv *hostView) stats() (resources, tombstones int) {
	hv.mu.Lock()
	defer hv.mu.Unlock()
	return len(hv.res), len(hv.tomb)
}
