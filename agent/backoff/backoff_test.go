package backoff

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestCap(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		name    string
		attempt int
		want    time.Duration
	}{
		{"negative", -3, 100 * time.Millisecond},
		{"first", 0, 100 * time.Millisecond},
		{"second", 1, 200 * time.Millisecond},
		{"third", 2, 400 * time.Millisecond},
		{"fourth", 3, 800 * time.Millisecond},
		{"capped", 4, time.Second},
		{"huge attempt does not overflow", 1000, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Cap(tc.attempt); got != tc.want {
				t.Errorf("Cap(%d) = %v, want %v", tc.attempt, got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"ok", Policy{Min: time.Millisecond, Max: time.Second}, true},
		{"equal", Policy{Min: time.Second, Max: time.Second}, true},
		{"zero", Policy{}, false},
		{"max below min", Policy{Min: time.Second, Max: time.Millisecond}, false},
		{"negative", Policy{Min: -time.Second, Max: time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestDelayDistribution checks that delays are uniform over [0, cap] (full
// jitter), for several attempts: every tenth of the range gets a tenth of
// the samples, and the mean is half the cap. With a fixed seed the test is
// deterministic; the bounds are about 6 standard deviations wide.
func TestDelayDistribution(t *testing.T) {
	p := Policy{Min: time.Second, Max: 30 * time.Second}
	const n = 100_000
	for _, attempt := range []int{0, 1, 3, 10} {
		t.Run(p.Cap(attempt).String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(attempt)))
			c := p.Cap(attempt)
			var buckets [10]int
			var sum float64
			for range n {
				d := p.Delay(attempt, r)
				if d < 0 || d > c {
					t.Fatalf("Delay(%d) = %v, outside [0, %v]", attempt, d, c)
				}
				b := int(int64(d) * 10 / (int64(c) + 1))
				buckets[b]++
				sum += float64(d)
			}
			for i, got := range buckets {
				if got < n/10*94/100 || got > n/10*106/100 {
					t.Errorf("bucket %d (%v..%v) holds %d of %d delays, want about %d", i,
						c*time.Duration(i)/10, c*time.Duration(i+1)/10, got, n, n/10)
				}
			}
			if mean := sum / n; mean < float64(c)*0.49 || mean > float64(c)*0.51 {
				t.Errorf("mean delay %v, want about %v", time.Duration(mean), c/2)
			}
		})
	}
}

// TestHerdSpreads simulates 100,000 agents that lose the controller at the
// same instant and reconnect after Delay(0) with Min = 1 s: no 10 ms window
// of that second may receive much more than its share (1,000) of the
// connection attempts. Without jitter all 100,000 would land in one window.
func TestHerdSpreads(t *testing.T) {
	p := Policy{Min: time.Second, Max: 30 * time.Second}
	const agents = 100_000
	const window = 10 * time.Millisecond
	r := rand.New(rand.NewPCG(7, 7))
	counts := map[time.Duration]int{}
	for range agents {
		counts[p.Delay(0, r)/window]++
	}
	share := agents / int(p.Min/window)
	peak := 0
	for _, c := range counts {
		peak = max(peak, c)
	}
	if peak > share*125/100 {
		t.Errorf("busiest %v window gets %d reconnects, want at most %d (share %d)", window, peak, share*125/100, share)
	}
	if len(counts) < int(p.Min/window) {
		t.Errorf("reconnects land in %d windows of %v, want all %d", len(counts), window, int(p.Min/window))
	}
}

func TestDelayGlobalSource(t *testing.T) {
	p := Policy{Min: time.Millisecond, Max: time.Millisecond}
	seen := map[time.Duration]bool{}
	for range 100 {
		d := p.Delay(5, nil)
		if d < 0 || d > time.Millisecond {
			t.Fatalf("Delay = %v, outside [0, 1ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Errorf("100 delays from the global source take only %d distinct values", len(seen))
	}
}

func TestDelayZeroPolicy(t *testing.T) {
	if d := (Policy{}).Delay(3, nil); d != 0 {
		t.Errorf("zero policy Delay = %v, want 0", d)
	}
}
