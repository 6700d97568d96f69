package udp

import (
	"net/netip"
	"sync/atomic"
)

// peer is the server's per-host slot (16 bytes), indexed by host ID.
type peer struct {
	// addr is the source address of the host's latest authentic datagram,
	// where replies and invalidations go. It is replaced (one allocation)
	// only when it changes.
	addr atomic.Pointer[netip.AddrPort]
	// bucket is the host's lookup token bucket.
	bucket tokenBucket
}

// tokenBucket is a token bucket in one word: tokens in the low
// bucketTokenBits bits, the time of the last refill (ms since the server
// started) above them. Lock-free.
type tokenBucket struct{ v atomic.Uint64 }

// PeerBytes is the server's memory per host slot (plus 32 bytes per host
// once it has sent a datagram: its address).
const PeerBytes = 16

const (
	bucketTokenBits = 20
	bucketTokenMask = 1<<bucketTokenBits - 1
	// MaxBurst is the largest RateLimit.Burst.
	MaxBurst = bucketTokenMask
)

// remember records the host's source address.
func (p *peer) remember(from netip.AddrPort) {
	if cur := p.addr.Load(); cur != nil && *cur == from {
		return
	}
	a := from // escapes: allocated only here, not on every call
	p.addr.Store(&a)
}

// address returns the host's last source address.
func (p *peer) address() (netip.AddrPort, bool) {
	if a := p.addr.Load(); a != nil {
		return *a, true
	}
	return netip.AddrPort{}, false
}

// take removes n tokens from the bucket, refilled at rate tokens per
// second up to burst, and reports whether there were enough. nowMs is the
// time in ms since the server started.
func (b *tokenBucket) take(n, nowMs, rate, burst uint64) bool {
	for {
		old := b.v.Load()
		tokens, last := old&bucketTokenMask, old>>bucketTokenBits
		if old == 0 {
			tokens, last = burst, nowMs // first use: a full bucket
		}
		if nowMs > last {
			if add := (nowMs - last) * rate / 1000; add > 0 {
				tokens += add
				if tokens >= burst {
					tokens, last = burst, nowMs
				} else {
					last += add * 1000 / rate // keep the fraction of a token
				}
			}
		}
		if tokens < n {
			return false
		}
		next := (tokens - n) | last<<bucketTokenBits
		if next == 0 {
			next = 1 << bucketTokenBits // 0 means "never used"
		}
		if b.v.CompareAndSwap(old, next) {
			return true
		}
	}
}
