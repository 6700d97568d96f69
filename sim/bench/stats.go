package bench

import (
	"math"
	"math/bits"
	"slices"
	"strconv"
	"time"
)

// rank is the 0-based index of the p-th percentile (0 ≤ p ≤ 100) of n
// sorted values by the nearest-rank rule: the smallest value with at
// least p% of the values at or below it (p = 0: the smallest). Every
// percentile the benchmarks report uses it.
func rank(n int, p float64) int {
	// The tolerance keeps p·n/100 that is a whole number in exact
	// arithmetic (99.9 × 1000) from rounding up past it.
	r := int(math.Ceil(p*float64(n)/100-1e-9)) - 1
	return max(0, min(r, n-1))
}

// percentile returns the p-th percentile of d by nearest rank (0 when d
// is empty); d is left as it is.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[rank(len(s), p)]
}

// percentileMs is percentile in milliseconds, to the microsecond.
func percentileMs(d []time.Duration, p float64) float64 { return msOf(percentile(d, p)) }

// median returns the median of v (the mean of the middle two of an even
// count; 0 when v is empty).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// msOf is d in milliseconds, to the microsecond.
func msOf(d time.Duration) float64 { return round3(float64(d) / 1e6) }

// round3 rounds x to three decimals.
func round3(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 3, 64), 64)
	return v
}

// latencyHist is a log-linear histogram of nanoseconds: exact below 64,
// then 64 buckets per power of two (at most 1.6% error).
type latencyHist struct {
	counts [64 + 58*64]uint64
	n      uint64
	max    int64
}

func histBucket(v int64) int {
	if v < 64 {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - 7
	return 64 + shift*64 + int(v>>shift) - 64
}

// histValue is the middle of a bucket.
func histValue(i int) int64 {
	if i < 64 {
		return int64(i)
	}
	shift := (i - 64) / 64
	m := int64((i-64)%64 + 64)
	return m<<shift + (int64(1)<<shift)/2
}

func (h *latencyHist) add(v int64) {
	h.counts[histBucket(v)]++
	h.n++
	h.max = max(h.max, v)
}

func (h *latencyHist) merge(o *latencyHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// percentileMs is the p-th percentile by nearest rank (rank), to the
// bucket, in milliseconds.
func (h *latencyHist) percentileMs(p float64) float64 {
	if h.n == 0 {
		return 0
	}
	r := uint64(rank(int(min(h.n, math.MaxInt)), p))
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum > r {
			return float64(min(histValue(i), h.max)) / 1e6
		}
	}
	return float64(h.max) / 1e6
}
