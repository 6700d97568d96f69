package bench

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted
	}
	tests := []struct {
		name string
		d    []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one element p0", ms(7), 0, 7 * time.Millisecond},
		{"one element p50", ms(7), 50, 7 * time.Millisecond},
		{"one element p100", ms(7), 100, 7 * time.Millisecond},
		{"p0 is the smallest", ms(3, 1, 2), 0, time.Millisecond},
		{"p100 is the largest", ms(3, 1, 2), 100, 3 * time.Millisecond},
		{"p50 of four is the second", ms(4, 3, 2, 1), 50, 2 * time.Millisecond},
		{"p50 of five is the middle", ms(5, 4, 3, 2, 1), 50, 3 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(hundred...), 99, 99 * time.Millisecond},
		{"p99.9 of 100 is the largest", ms(hundred...), 99.9, 100 * time.Millisecond},
		{"p1 of 100 is the first", ms(hundred...), 1, time.Millisecond},
		{"p99 of ten is the largest", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.d, tt.p); got != tt.want {
				t.Errorf("percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
			// The histogram counts the same values and picks the same rank.
			var h latencyHist
			for _, v := range tt.d {
				h.add(int64(v))
			}
			want := float64(tt.want) / 1e6
			if got := h.percentileMs(tt.p); got < want*0.984 || got > want*1.016 {
				t.Errorf("histogram p%v = %.4f ms, want %.4f ms ± 1.6%%", tt.p, got, want)
			}
		})
	}
	if d := ms(3, 1, 2); percentile(d, 50) != 2*time.Millisecond || d[0] != 3*time.Millisecond {
		t.Errorf("percentile sorted its argument: %v", d)
	}
}

func TestRankWholeNumbers(t *testing.T) {
	// p·n/100 that is a whole number in exact arithmetic picks that rank,
	// whatever floating point makes of it.
	for _, tc := range []struct {
		n    int
		p    float64
		want int
	}{{1000, 99.9, 998}, {10000, 99.99, 9998}, {300, 99, 296}, {200, 50, 99}, {3, 100.0 / 3, 0}} {
		if got := rank(tc.n, tc.p); got != tc.want {
			t.Errorf("rank(%d, %v) = %d, want %d", tc.n, tc.p, got, tc.want)
		}
	}
}

func TestLatencyHist(t *testing.T) {
	var h latencyHist
	for v := int64(1); v <= 100_000; v++ {
		h.add(v * 1000) // 1µs .. 100ms
	}
	tests := []struct {
		p    float64
		want float64 // ms
	}{{50, 50}, {99, 99}, {100, 100}}
	for _, tc := range tests {
		got := h.percentileMs(tc.p)
		if got < tc.want*0.98 || got > tc.want*1.02 {
			t.Errorf("p%v = %.3fms, want %.3fms ± 2%%", tc.p, got, tc.want)
		}
	}
	for _, v := range []int64{0, 63, 64, 1 << 40, 1<<63 - 1} {
		if i := histBucket(v); i < 0 || i >= len(h.counts) {
			t.Errorf("bucket of %d: %d out of range", v, i)
		}
	}
}
