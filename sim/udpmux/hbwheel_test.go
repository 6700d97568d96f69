package udpmux

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestHBWheel drives a wheel on a simulated clock the way the heartbeat
// loop does (wake at next, take what is due within the window, put each
// back for its next beat), with members of very different intervals
// joining and leaving and the loop sometimes late, and checks it against
// a plain list of due times: next is never later than the earliest live
// heartbeat (and is exactly it while no member left), every heartbeat
// taken is due within the window, and every one due is taken unless the
// batch is full. A few members leave most slots empty (and their
// heartbeats often due in a slot the wheel has passed), many fill them.
func TestHBWheel(t *testing.T) {
	for _, members := range []int{1, 3, 300} {
		t.Run(fmt.Sprint(members), func(t *testing.T) { testHBWheel(t, members) })
	}
}

func testHBWheel(t *testing.T, members int) {
	const window = int64(10 * time.Millisecond)
	intervals := []time.Duration{time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond,
		time.Second, 7300 * time.Millisecond, 100 * time.Second, time.Hour}
	rng := rand.New(rand.NewPCG(3, 4))
	w := newHBWheel(time.Now(), time.Duration(window))
	due := map[*member]int64{} // the live members' next heartbeats
	iv := map[*member]int64{}  // their intervals
	var clock int64
	left := false
	join := func() {
		e := &member{}
		iv[e] = int64(intervals[rng.IntN(len(intervals))])
		d := clock + rng.Int64N(iv[e])
		due[e] = d
		w.push(e, d)
	}
	for range members {
		join()
	}
	var out []hbBeat
	for step := range 50_000 {
		earliest := int64(-1)
		for _, d := range due {
			if earliest < 0 || d < earliest {
				earliest = d
			}
		}
		next, ok := w.next()
		switch {
		case !ok && len(due) > 0, ok && len(due) == 0 && !left:
			t.Fatalf("step %d: next ok=%v with %d live members", step, ok, len(due))
		case len(due) > 0 && next > earliest:
			t.Fatalf("step %d: next %d, later than the earliest heartbeat %d", step, next, earliest)
		case !left && ok && next != earliest:
			t.Fatalf("step %d: next %d, want the earliest heartbeat %d", step, next, earliest)
		}
		if ok {
			clock = max(clock, next)
		}
		if rng.IntN(100) == 0 {
			clock += rng.Int64N(int64(3 * time.Second)) // the loop was late
		}
		limit := 1 + rng.IntN(64)
		out = w.popDue(clock+window, limit, out[:0])
		for _, x := range out {
			d, live := due[x.e]
			switch {
			case !live:
				t.Fatalf("step %d: took the heartbeat of a member that left", step)
			case x.due != d:
				t.Fatalf("step %d: took a heartbeat due at %d, the member's is due at %d", step, x.due, d)
			case d > clock+window:
				t.Fatalf("step %d: took a heartbeat due at %d at %d, more than the window early", step, d, clock)
			}
			delete(due, x.e)
		}
		if len(out) < limit {
			for _, d := range due {
				if d <= clock+window {
					t.Fatalf("step %d: a heartbeat due at %d left behind at %d (took %d of at most %d)", step, d, clock, len(out), limit)
				}
			}
		}
		for _, x := range out {
			d := x.due + iv[x.e]
			if d < clock {
				d = clock + iv[x.e] - (clock-d)%iv[x.e]
			}
			due[x.e] = d
			w.push(x.e, d)
		}
		switch rng.IntN(200) {
		case 0:
			join()
		case 1:
			for e := range due {
				e.dead, left = true, true
				delete(due, e)
				break
			}
		}
	}
}

// TestHBWheelWidens: a member whose interval the ring cannot span at the
// batch window's tick widens the tick instead of growing the ring without
// bound.
func TestHBWheelWidens(t *testing.T) {
	w := newHBWheel(time.Now(), time.Millisecond)
	e, iv := &member{}, int64(24*time.Hour)
	w.push(e, iv)
	if len(w.slots) > 2*hbMaxSlots {
		t.Errorf("%d slots, want at most %d", len(w.slots), 2*hbMaxSlots)
	}
	if d, ok := w.next(); !ok || d != iv {
		t.Errorf("next = %d, %v; want %d", d, ok, iv)
	}
	if out := w.popDue(iv, 1, nil); len(out) != 1 || out[0].e != e {
		t.Errorf("popDue at the due time took %v", out)
	}
}
