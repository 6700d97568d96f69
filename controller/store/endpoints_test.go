package store

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestKeyIndex drives a keyIndex and a map with the same random inserts
// and removes, with hashes from a small range so that cells collide,
// chains wrap around the table's end and the table grows and shrinks.
func TestKeyIndex(t *testing.T) {
	for _, hashes := range []uint32{1, 7, 64, 1 << 20} {
		var x keyIndex
		want := map[uint32]uint32{} // slot → hash
		rng := rand.New(rand.NewPCG(uint64(hashes), 1))
		check := func(step int) {
			t.Helper()
			if x.len() != len(want) {
				t.Fatalf("hashes %d step %d: len %d, want %d", hashes, step, x.len(), len(want))
			}
			for slot, h := range want {
				got, ok := x.find(h, func(s uint32) bool { return s == slot })
				if !ok || got != slot {
					t.Fatalf("hashes %d step %d: slot %d (hash %d) not found", hashes, step, slot, h)
				}
			}
			if _, ok := x.find(rng.Uint32()%hashes, func(uint32) bool { return false }); ok {
				t.Fatalf("hashes %d step %d: found what is not there", hashes, step)
			}
		}
		next := uint32(0)
		for step := range 3000 {
			// Grow to ~500 keys, then shrink to none.
			if (step < 1500 && rng.IntN(3) != 0) || (step >= 1500 && len(want) == 0 && step < 1600) {
				h := rng.Uint32()%hashes + uint32(rng.IntN(2))<<31 // high bits: beyond any mask
				x.insert(h, next)
				want[next] = h
				next++
			} else if len(want) > 0 {
				slots := make([]uint32, 0, len(want))
				for s := range want {
					slots = append(slots, s)
				}
				slices.Sort(slots)
				s := slots[rng.IntN(len(slots))]
				x.remove(want[s], s)
				delete(want, s)
			}
			if step%50 == 0 || len(want) < 20 {
				check(step)
			}
		}
		check(3000)
		if len(x.cells) > keyIndexMin {
			t.Errorf("hashes %d: %d cells left for %d keys", hashes, len(x.cells), x.len())
		}
	}
}

// TestSlotSet checks a slotSet across its change from slice to map and
// back.
func TestSlotSet(t *testing.T) {
	var ss slotSet
	want := map[uint32]bool{}
	members := func() []uint32 {
		got := ss.appendTo(nil)
		slices.Sort(got)
		return got
	}
	wantMembers := func() []uint32 {
		var w []uint32
		for s := range want {
			w = append(w, s)
		}
		slices.Sort(w)
		return w
	}
	for i := range uint32(2 * slotSetSmall) {
		ss.add(i)
		want[i] = true
	}
	if ss.m == nil {
		t.Error("a large set is still a slice")
	}
	for i := range uint32(2 * slotSetSmall) {
		if i%8 != 0 {
			ss.del(i)
			delete(want, i)
		}
	}
	ss.del(1) // absent
	if ss.m != nil {
		t.Error("a small set is still a map")
	}
	if diff := cmp.Diff(wantMembers(), members()); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	for s := range want {
		ss.del(s)
	}
	if ss.len() != 0 || len(members()) != 0 {
		t.Errorf("%d members left", ss.len())
	}
}
