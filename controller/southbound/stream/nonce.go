package stream

import (
	"sync"
	"time"
)

// nonceCache remembers the nonces of accepted Hellos for as long as their
// time is within the clock skew, so that a captured Hello cannot be
// replayed to open a second session. Only verified Hellos are recorded, so
// its size is bounded by the legitimate connections within 2×skew.
type nonceCache struct {
	skew time.Duration

	mu        sync.Mutex
	seen      map[string]time.Time // host NUL nonce → when it can be forgotten
	lastSweep time.Time
}

func newNonceCache(skew time.Duration) *nonceCache {
	return &nonceCache{skew: skew, seen: map[string]time.Time{}}
}

// add records host's nonce of a Hello sent at unix second sent; it reports
// false if the nonce was already seen.
func (c *nonceCache) add(host string, nonce []byte, sent int64, now time.Time) bool {
	key := host + "\x00" + string(nonce)
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.lastSweep) > c.skew {
		for k, until := range c.seen {
			if now.After(until) {
				delete(c.seen, k)
			}
		}
		c.lastSweep = now
	}
	if until, ok := c.seen[key]; ok && !now.After(until) {
		return false
	}
	// VerifyHello accepts the Hello until now passes sent+skew.
	c.seen[key] = time.Unix(sent, 0).Add(c.skew + time.Second)
	return true
}
