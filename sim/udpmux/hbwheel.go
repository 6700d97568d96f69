package udpmux

import "time"

// hbWheel is a mux's heartbeat schedule: a timing wheel, a ring of slots
// one tick (the batch window) wide, each holding the members whose next
// heartbeat falls in it. Taking the heartbeats due and putting each back
// for its next beat costs O(1) per heartbeat and touches one slot's
// contiguous array, where a heap ordered per member cost O(log n) cache
// misses (at 4096 members per mux, the heap took a fifth of the heartbeat
// loop's CPU).
//
// Times are nanoseconds since the wheel's epoch, on the monotonic clock.
// The ring always spans more than the longest interval, so that every
// entry is in the current lap: an entry due at d sits in slot d/tick (or,
// if that slot is already behind, in slot cur, the earliest slot that can
// hold entries). The earliest heartbeat is then the earliest of the first
// non-empty slot.
//
// Members that leave are marked dead and dropped when their slot comes.
// An hbWheel is not safe for concurrent use (the mux's hbMu guards it).
type hbWheel struct {
	epoch time.Time
	tick  int64
	slots [][]hbBeat // len is a power of two
	cur   int64      // no entry sits in a slot below cur
	n     int        // entries, dead ones included
}

// hbBeat is one member's next heartbeat, in its slot.
type hbBeat struct {
	due int64
	e   *member
}

// Bounds of the wheel's geometry.
const (
	hbMinTick  = int64(time.Millisecond)
	hbMinSlots = 64
	hbMaxSlots = 1 << 14
)

// newHBWheel returns an empty wheel of slots tick wide (at least 1 ms).
func newHBWheel(epoch time.Time, tick time.Duration) *hbWheel {
	return &hbWheel{epoch: epoch, tick: max(int64(tick), hbMinTick), slots: make([][]hbBeat, hbMinSlots)}
}

// now returns the current time on the wheel's clock.
func (w *hbWheel) now() int64 { return int64(time.Since(w.epoch)) }

// at converts a time on the wheel's clock back to a time.Time.
func (w *hbWheel) at(t int64) time.Time { return w.epoch.Add(time.Duration(t)) }

// slot returns the slot an entry due at due goes into.
func (w *hbWheel) slot(due int64) int64 { return max(due/w.tick, w.cur) }

// push schedules e's next heartbeat at due; a time already behind the
// wheel is due at once.
func (w *hbWheel) push(e *member, due int64) {
	if s := w.slot(due); s-w.cur >= int64(len(w.slots)) {
		w.fit(s - w.cur + 1)
	}
	w.insert(hbBeat{due: due, e: e})
}

// insert puts x into its slot, which must be in the current lap.
func (w *hbWheel) insert(x hbBeat) {
	i := w.slot(x.due) & int64(len(w.slots)-1)
	w.slots[i] = append(w.slots[i], x)
	w.n++
}

// fit rebuilds the ring so that it spans at least span slots from cur,
// twice over (room for the next beats of a member with a longer interval
// than any before); past hbMaxSlots, it widens the tick instead.
func (w *hbWheel) fit(span int64) {
	need := max(span, int64(len(w.slots))) * w.tick // nanoseconds from slot cur
	tick := w.tick
	for 2*need/tick > hbMaxSlots {
		tick *= 2
	}
	size := int64(hbMinSlots)
	for size < 2*(need/tick+1) {
		size *= 2
	}
	old := w.slots
	w.cur = w.cur * w.tick / tick
	w.slots, w.tick, w.n = make([][]hbBeat, size), tick, 0
	for _, sl := range old {
		for _, x := range sl {
			if !x.e.dead {
				w.insert(x)
			}
		}
	}
}

// next returns the time of the earliest heartbeat (ok false: none).
func (w *hbWheel) next() (due int64, ok bool) {
	if w.n == 0 {
		return 0, false
	}
	mask := int64(len(w.slots) - 1)
	for s := w.cur; s < w.cur+int64(len(w.slots)); s++ {
		sl := w.slots[s&mask]
		if len(sl) == 0 {
			continue
		}
		due = sl[0].due
		for _, x := range sl[1:] {
			due = min(due, x.due)
		}
		return due, true
	}
	return 0, false // not reached: n counts the entries in the ring
}

// popDue appends to out the heartbeats due at or before horizon, up to
// limit of them in all (the earliest slots first), removes them from the
// wheel and returns out. Dead entries met on the way are dropped.
func (w *hbWheel) popDue(horizon int64, limit int, out []hbBeat) []hbBeat {
	mask := int64(len(w.slots) - 1)
	start := w.cur
	for s := start; s < start+int64(len(w.slots)) && len(out) < limit; s++ {
		// Slot cur may hold entries due before its start; the others
		// only entries due within them.
		if s != start && s*w.tick > horizon {
			break
		}
		sl := w.slots[s&mask]
		keep := sl[:0]
		for _, x := range sl {
			switch {
			case x.e.dead:
				w.n--
			case x.due <= horizon && len(out) < limit:
				out = append(out, x)
				w.n--
			default:
				keep = append(keep, x)
			}
		}
		clear(sl[len(keep):]) // no references to members that left
		w.slots[s&mask] = keep
		if len(keep) == 0 && w.cur == s {
			w.cur = s + 1
		}
	}
	return out
}
