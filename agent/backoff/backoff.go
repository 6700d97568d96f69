package backoff

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with full jitter.
type Policy struct {
	// Min is the cap of the first delay (attempt 0).
	Min time.Duration
	// Max bounds the cap of every delay.
	Max time.Duration
}

// Validate checks that 0 < Min <= Max.
func (p Policy) Validate() error {
	if p.Min <= 0 {
		return fmt.Errorf("backoff: Min %v must be positive", p.Min)
	}
	if p.Max < p.Min {
		return fmt.Errorf("backoff: Max %v is below Min %v", p.Max, p.Min)
	}
	return nil
}

// IsZero reports whether p is unset.
func (p Policy) IsZero() bool { return p == Policy{} }

// Cap returns min(Max, Min·2^attempt), the upper bound of Delay(attempt).
// A negative attempt counts as 0.
func (p Policy) Cap(attempt int) time.Duration {
	if attempt < 0 {
		attempt = 0
	}
	c := p.Min
	for range attempt {
		if c >= p.Max/2 {
			return p.Max
		}
		c *= 2
	}
	return min(c, p.Max)
}

// Delay returns a delay drawn uniformly from [0, Cap(attempt)], using r, or
// the (concurrency-safe, randomly seeded) global source of math/rand/v2 if
// r is nil. It returns 0 for a policy whose cap is not positive.
func (p Policy) Delay(attempt int, r *rand.Rand) time.Duration {
	c := p.Cap(attempt)
	if c <= 0 {
		return 0
	}
	if r == nil {
		return time.Duration(rand.Int64N(int64(c) + 1))
	}
	return time.Duration(r.Int64N(int64(c) + 1))
}
