package agent

import (
	"sync"
	"sync/atomic"

	"github.com/weftnet/weft/datapath"
)

// DefaultPolicyCacheSize is the number of policies a PolicyCache keeps
// per generation when NewPolicyCache is given no size.
const DefaultPolicyCacheSize = 16384

// PolicyCache keeps translated policies by the bytes that every host
// holding a policy receives alike (view.SplitPolicy: the compiled policy
// without the list of local endpoints it applies to). An agent that
// finds a policy resource's shared bytes in it takes the translation
// from it and decodes only that list, instead of decoding and
// translating the rules again: on every view change for the policies
// that did not change, and, when the agents of one process share one
// cache (Config.PolicyCache; a simulator's hosts), once per process for
// a policy that many of them hold.
//
// What it keeps is derived from the bytes alone, never from the view
// they came in, and is never modified once kept, so any agent may use
// it. It holds at most twice its size: when the current generation is
// full it becomes the old one and the previous old one is dropped; a
// policy found in the old generation moves back to the current one. It
// is safe for concurrent use.
type PolicyCache struct {
	size         int
	mu           sync.Mutex
	cur, old     map[string]*sharedPolicy
	hits, misses atomic.Uint64
}

// PolicyCacheStats counts the lookups of a PolicyCache and what it
// holds.
type PolicyCacheStats struct {
	Hits, Misses uint64
	Entries      int
}

// sharedPolicy is a policy resource translated, without the endpoints it
// applies to: read only.
type sharedPolicy struct {
	tenant, name, vpc string
	// pol is the translated policy, or err why it cannot be (reported
	// only for a policy that applies to an endpoint of the view).
	pol *datapath.EndpointPolicy
	err error
}

// NewPolicyCache returns a cache that keeps up to size policies per
// generation (DefaultPolicyCacheSize if size <= 0).
func NewPolicyCache(size int) *PolicyCache {
	if size <= 0 {
		size = DefaultPolicyCacheSize
	}
	return &PolicyCache{size: size, cur: map[string]*sharedPolicy{}}
}

// Stats returns the cache's counters.
func (c *PolicyCache) Stats() PolicyCacheStats {
	c.mu.Lock()
	n := len(c.cur) + len(c.old)
	c.mu.Unlock()
	return PolicyCacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Entries: n}
}

// get returns the policy kept for shared, or nil.
func (c *PolicyCache) get(shared []byte) *sharedPolicy {
	c.mu.Lock()
	p := c.cur[string(shared)]
	if p == nil {
		if p = c.old[string(shared)]; p != nil {
			delete(c.old, string(shared))
			c.addLocked(string(shared), p)
		}
	}
	c.mu.Unlock()
	if p == nil {
		c.misses.Add(1)
	} else {
		c.hits.Add(1)
	}
	return p
}

// put keeps p for shared (copied).
func (c *PolicyCache) put(shared []byte, p *sharedPolicy) {
	c.mu.Lock()
	c.addLocked(string(shared), p)
	c.mu.Unlock()
}

func (c *PolicyCache) addLocked(k string, p *sharedPolicy) {
	if len(c.cur) >= c.size {
		c.old, c.cur = c.cur, make(map[string]*sharedPolicy, c.size/4)
	}
	c.cur[k] = p
}
