package liveness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// recorder is a Sink that formats transitions as "t=1.75s 1 Alive->Suspect",
// t measured on the table's clock.
type recorder struct {
	tab  *Table
	mu   sync.Mutex
	got  []string
	fail int // fail the next n calls
}

func (r *recorder) Transitions(_ context.Context, ts []Transition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errors.New("sink down")
	}
	for _, t := range ts {
		at := t.At.Sub(r.tab.Time(0))
		r.got = append(r.got, fmt.Sprintf("t=%v %d %s->%s", at, t.HostID, t.From, t.To))
	}
	return nil
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// fakeTable returns a table on a fake clock and its recording sink.
func fakeTable(t *testing.T, cfg Config) (*Table, *recorder, *int64) {
	t.Helper()
	var now int64
	rec := &recorder{}
	cfg.Sink = rec
	cfg.Now = func() int64 { return now }
	if cfg.Capacity == 0 {
		cfg.Capacity = 64
	}
	tab, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tab.Close() })
	rec.tab = tab
	return tab, rec, &now
}

const ms = time.Millisecond

// script drives host 1 with heartbeats at the given times (and the
// optional extra actions), sweeping every 250 ms until end, flushing after
// every sweep, and returns the transitions.
type script struct {
	name       string
	cfg        Config
	track      bool            // Track host 1 at t=0
	heartbeats []time.Duration // times of host 1's heartbeats
	end        time.Duration
	want       []string
	wantState  State
}

// beats returns heartbeats every period in [from, to).
func beats(from, to, period time.Duration) []time.Duration {
	var out []time.Duration
	for t := from; t < to; t += period {
		out = append(out, t)
	}
	return out
}

func concat(lists ...[]time.Duration) []time.Duration {
	var out []time.Duration
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func TestStateMachine(t *testing.T) {
	flappy := func(times int) []time.Duration {
		// Heartbeats at 0 and 1 s, then silent for 2 s (Suspect, not
		// Dead), repeated every 3 s.
		var out []time.Duration
		for i := 0; i < times; i++ {
			base := time.Duration(i) * 3 * time.Second
			out = append(out, beats(base, base+2*time.Second, time.Second)...)
		}
		return out
	}
	tests := []script{
		{
			name:       "heartbeat makes a host alive",
			heartbeats: []time.Duration{100 * ms},
			end:        time.Second,
			want:       []string{"t=250ms 1 Unknown->Alive"},
			wantState:  Alive,
		},
		{
			name:       "steady heartbeats stay alive",
			heartbeats: beats(0, 20*time.Second, time.Second),
			end:        20 * time.Second,
			want:       []string{"t=0s 1 Unknown->Alive"},
			wantState:  Alive,
		},
		{
			name:       "silent host is suspect then dead within 3s",
			heartbeats: []time.Duration{0},
			end:        10 * time.Second,
			want:       []string{"t=0s 1 Unknown->Alive", "t=1.75s 1 Alive->Suspect", "t=2.75s 1 Suspect->Dead"},
			wantState:  Dead,
		},
		{
			name:       "one late heartbeat is only suspect",
			heartbeats: concat([]time.Duration{0, time.Second}, beats(3*time.Second, 6*time.Second, time.Second)),
			end:        6 * time.Second,
			want:       []string{"t=0s 1 Unknown->Alive", "t=2.75s 1 Alive->Suspect", "t=3s 1 Suspect->Alive"},
			wantState:  Alive,
		},
		{
			name:       "dead host comes back",
			heartbeats: concat([]time.Duration{0}, beats(5*time.Second, 7*time.Second, time.Second)),
			end:        7 * time.Second,
			want: []string{"t=0s 1 Unknown->Alive", "t=1.75s 1 Alive->Suspect", "t=2.75s 1 Suspect->Dead",
				"t=5s 1 Dead->Alive"},
			wantState: Alive,
		},
		{
			name:      "tracked host never heard from is dead",
			track:     true,
			end:       5 * time.Second,
			want:      []string{"t=2.75s 1 Unknown->Dead"},
			wantState: Dead,
		},
		{
			name:      "untracked host never heard from stays unknown",
			end:       5 * time.Second,
			wantState: Unknown,
		},
		{
			name:       "flapping host is held suspect, then alive after the hold-down",
			cfg:        Config{MaxFlaps: 3, HoldDown: 5 * time.Second},
			heartbeats: concat(flappy(4), beats(12*time.Second, 30*time.Second, time.Second)),
			end:        30 * time.Second,
			want: []string{
				"t=0s 1 Unknown->Alive",
				"t=2.75s 1 Alive->Suspect", "t=3s 1 Suspect->Alive", // flap 1
				"t=5.75s 1 Alive->Suspect", "t=6s 1 Suspect->Alive", // flap 2
				"t=8.75s 1 Alive->Suspect", "t=9s 1 Suspect->Alive", // flap 3
				"t=11.75s 1 Alive->Suspect", // flap 4: held from 12 s to 17 s
				"t=17s 1 Suspect->Alive",
			},
			wantState: Alive,
		},
		{
			name:       "flaps spread beyond the window are not damped",
			cfg:        Config{MaxFlaps: 3, FlapWindow: 8 * time.Second},
			heartbeats: concat(flappy(4), beats(12*time.Second, 20*time.Second, time.Second)),
			end:        20 * time.Second,
			want: []string{
				"t=0s 1 Unknown->Alive",
				"t=2.75s 1 Alive->Suspect", "t=3s 1 Suspect->Alive",
				"t=5.75s 1 Alive->Suspect", "t=6s 1 Suspect->Alive",
				"t=8.75s 1 Alive->Suspect", "t=9s 1 Suspect->Alive",
				"t=11.75s 1 Alive->Suspect", "t=12s 1 Suspect->Alive", // a new window began
			},
			wantState: Alive,
		},
		{
			name: "held host that dies is dead, and held again when it returns",
			cfg:  Config{MaxFlaps: 1, HoldDown: 3 * time.Second},
			heartbeats: concat(beats(0, 2*time.Second, time.Second), beats(3*time.Second, 5*time.Second, time.Second),
				beats(10*time.Second, 20*time.Second, time.Second)),
			end: 20 * time.Second,
			want: []string{
				"t=0s 1 Unknown->Alive",
				"t=2.75s 1 Alive->Suspect", "t=3s 1 Suspect->Alive", // flap 1
				"t=5.75s 1 Alive->Suspect", // flap 2, and silent
				"t=6.75s 1 Suspect->Dead",
				"t=10s 1 Dead->Suspect", // back, still flapping: held
				"t=13s 1 Suspect->Alive",
			},
			wantState: Alive,
		},
		{
			name:       "a late heartbeat restarts the hold-down",
			cfg:        Config{MaxFlaps: 1, HoldDown: 3 * time.Second},
			heartbeats: concat([]time.Duration{0, 2 * time.Second, 4 * time.Second, 5 * time.Second}, beats(7*time.Second, 12*time.Second, time.Second)),
			end:        12 * time.Second,
			want: []string{
				"t=0s 1 Unknown->Alive",
				"t=1.75s 1 Alive->Suspect", "t=2s 1 Suspect->Alive", // flap 1
				"t=3.75s 1 Alive->Suspect", // flap 2: held from 4 s; late at 6.75 s, so held until 9.75 s
				"t=9.75s 1 Suspect->Alive",
			},
			wantState: Alive,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab, rec, now := fakeTable(t, tc.cfg)
			if tc.track {
				tab.Track(1, 0)
			}
			ctx := context.Background()
			hb := tc.heartbeats
			for at := time.Duration(0); at <= tc.end; at += 250 * ms {
				for len(hb) > 0 && hb[0] <= at {
					*now = int64(hb[0])
					tab.Observe(1, *now, 1, 0)
					hb = hb[1:]
				}
				*now = int64(at)
				tab.Sweep(*now)
				if err := tab.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tc.want, rec.lines()); diff != "" {
				t.Errorf("transitions (-want +got):\n%s", diff)
			}
			if got := tab.State(1); got != tc.wantState {
				t.Errorf("final state %s, want %s", got, tc.wantState)
			}
		})
	}
}

func TestFlushCoalescesAndRetries(t *testing.T) {
	tab, rec, now := fakeTable(t, Config{SinkAttempts: 2})
	ctx := context.Background()
	// Host 1 dies, host 2 flaps back, host 3 is new: one flush sees the net change.
	for _, id := range []uint32{1, 2} {
		tab.Observe(id, 0, 0, 0)
	}
	tab.Sweep(0)
	if err := tab.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	*now = int64(2 * time.Second)
	tab.Sweep(*now) // 1 and 2 Suspect
	tab.Observe(2, *now, 0, 0)
	tab.Observe(3, *now, 0, 0)
	*now = int64(3 * time.Second)
	tab.Sweep(*now) // 1 Dead, 2 Alive, 3 Alive
	if got := tab.Pending(); got != 2 {
		t.Errorf("pending %d, want 2 (host 2 is back where it was)", got)
	}
	rec.fail = 1
	if err := tab.Flush(ctx); err == nil {
		t.Fatal("flush with a failing sink: no error")
	}
	if err := tab.Flush(ctx); err != nil {
		t.Fatalf("retry: %v", err)
	}
	want := []string{"t=0s 1 Unknown->Alive", "t=0s 2 Unknown->Alive", "t=3s 1 Alive->Dead", "t=3s 3 Unknown->Alive"}
	if diff := cmp.Diff(want, rec.lines()); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
	// A sink that keeps failing loses the batch after SinkAttempts.
	tab.Observe(4, *now, 0, 0)
	tab.Sweep(*now)
	rec.fail = 5
	for i := 0; i < 2; i++ {
		if err := tab.Flush(ctx); err == nil {
			t.Fatalf("flush %d: no error", i)
		}
	}
	if got := tab.Pending(); got != 0 {
		t.Errorf("pending after %d failed attempts: %d, want 0", 2, got)
	}
}

func TestHostInfoAndLimits(t *testing.T) {
	tab, _, now := fakeTable(t, Config{Capacity: 8})
	if tab.Observe(8, 0, 0, 0) {
		t.Error("Observe of host ID 8 in a table of 8: accepted")
	}
	if tab.Track(8, 0) {
		t.Error("Track of host ID 8 in a table of 8: accepted")
	}
	if _, ok := tab.Get(3); ok {
		t.Error("Get of a host never seen: found")
	}
	*now = int64(time.Second)
	tab.Observe(3, *now, 42, 5)
	tab.Sweep(*now)
	info, ok := tab.Get(3)
	if !ok {
		t.Fatal("Get(3): not found")
	}
	want := HostInfo{State: Alive, Since: tab.Time(*now), LastSeen: tab.Time(*now), ViewVersion: 42, Health: 5}
	if diff := cmp.Diff(want, info); diff != "" {
		t.Errorf("HostInfo (-want +got):\n%s", diff)
	}
	if got, want := tab.Counts(), (StateCounts{Alive: 1}); got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
	tab.Forget(3)
	tab.Sweep(*now)
	if _, ok := tab.Get(3); ok || tab.State(3) != Unknown {
		t.Errorf("after Forget: state %s, found %v", tab.State(3), ok)
	}
	if got := tab.Counts(); got != (StateCounts{}) {
		t.Errorf("counts after Forget %+v, want none", got)
	}
}

func TestSlotSize(t *testing.T) {
	if got := unsafe.Sizeof(slot{}); got != BytesPerHost {
		t.Errorf("slot is %d bytes, BytesPerHost says %d", got, BytesPerHost)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	tab, _, _ := fakeTable(t, Config{Capacity: 1024})
	var id uint32
	allocs := testing.AllocsPerRun(1000, func() {
		tab.Observe(id%1024, int64(id)+1, 1, 1)
		id++
	})
	if allocs != 0 {
		t.Errorf("Observe allocates %.1f times per call", allocs)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"suspect after dead", Config{SuspectAfter: 3 * time.Second, DeadAfter: 2 * time.Second}, false},
		{"negative sweep", Config{SweepInterval: -1}, false},
		{"negative capacity", Config{Capacity: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestRealTime runs the sweeper and the flusher on the real clock with
// short settings: a heartbeating host becomes Alive, a silent one Dead.
func TestRealTime(t *testing.T) {
	got := make(chan Transition, 16)
	tab, err := New(Config{
		Capacity: 4, SuspectAfter: 60 * ms, DeadAfter: 120 * ms, SweepInterval: 10 * ms, FlushInterval: 20 * ms,
		Sink: SinkFunc(func(_ context.Context, ts []Transition) error {
			for _, tr := range ts {
				got <- tr
			}
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	if err := tab.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := tab.Start(context.Background()); err == nil {
		t.Error("second Start: no error")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // host 2 heartbeats every 10 ms until stopped
		defer wg.Done()
		tick := time.NewTicker(10 * ms)
		defer tick.Stop()
		for {
			tab.Observe(2, tab.Now(), 1, 0)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer wg.Wait()
	wait := func(to State) Transition {
		t.Helper()
		timeout := time.After(10 * time.Second) // a failure bound, not a timing assertion
		for {
			select {
			case tr := <-got:
				if tr.HostID == 2 && tr.To == to {
					return tr
				}
			case <-timeout:
				t.Fatalf("host 2 never became %s", to)
			}
		}
	}
	wait(Alive)
	close(stop)
	tr := wait(Dead)
	if tr.LastSeen.IsZero() || !tr.At.After(tr.LastSeen) {
		t.Errorf("dead transition: at %v, last seen %v", tr.At, tr.LastSeen)
	}
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tab.Start(context.Background()); err == nil {
		t.Error("Start after Close: no error")
	}
}
