package learn

import (
	"fmt"
	"net"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/wire"
)

// Key names a remote endpoint: its VNI and IP.
type Key = datapath.RemoteKey

// Config configures a Cache.
type Config struct {
	// TTL bounds how long a found location is cached (an answer's own TTL,
	// if shorter, wins).
	TTL time.Duration
	// NegativeTTL bounds how long a not-found answer is cached.
	NegativeTTL time.Duration
	// RetryTimeout is how long a sent query waits for its answer before it
	// is sent again.
	RetryTimeout time.Duration
	// MaxTries is how many times a query is sent before the lookup is
	// given up.
	MaxTries int
}

// Validate checks that every field is positive.
func (c Config) Validate() error {
	if c.TTL <= 0 || c.NegativeTTL <= 0 || c.RetryTimeout <= 0 || c.MaxTries <= 0 {
		return fmt.Errorf("learn: config: TTL %v, NegativeTTL %v, RetryTimeout %v and MaxTries %d must all be positive",
			c.TTL, c.NegativeTTL, c.RetryTimeout, c.MaxTries)
	}
	return nil
}

// MissResult is what the cache says about a miss.
type MissResult uint8

// Miss results.
const (
	// MissQueued: a lookup was queued; send it with the next Due.
	MissQueued MissResult = iota
	// MissPending: a lookup for the key is already queued or in flight.
	MissPending
	// MissNegative: the controller recently said there is no such endpoint.
	MissNegative
	// MissCached: the location is cached (the data plane lost it): install
	// the returned Remote again.
	MissCached
)

func (r MissResult) String() string {
	switch r {
	case MissQueued:
		return "queued"
	case MissPending:
		return "pending"
	case MissNegative:
		return "negative"
	case MissCached:
		return "cached"
	}
	return fmt.Sprintf("MissResult(%d)", uint8(r))
}

// Outcome says what to do after an Answer or an Invalidate.
type Outcome uint8

// Outcomes.
const (
	// Ignored: nothing to do (an answer to no query of ours, an invalidation
	// of a key not cached).
	Ignored Outcome = iota
	// Stale: the event is older (by epoch) than what is cached.
	Stale
	// Learn: install Action.Remote in the data plane.
	Learn
	// Forget: remove Action.Key from the data plane.
	Forget
	// Negative: a not-found answer was cached; nothing was installed before.
	Negative
	// Invalid: a found answer or invalidation without a host address.
	Invalid
)

func (o Outcome) String() string {
	switch o {
	case Ignored:
		return "ignored"
	case Stale:
		return "stale"
	case Learn:
		return "learn"
	case Forget:
		return "forget"
	case Negative:
		return "negative"
	case Invalid:
		return "invalid"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Action is the outcome of an event and what it applies to.
type Action struct {
	Outcome Outcome
	Key     Key
	// Remote is the location to install (Outcome Learn).
	Remote datapath.Remote
	// Waited is how long the answered lookup waited since its first send
	// (Outcome Learn and Negative; the lookup latency).
	Waited time.Duration
}

// Entry is a cached answer.
type Entry struct {
	// Found is false for a negative answer (or a tombstone left by an
	// invalidation without a new location).
	Found bool
	// Remote is the location (Found).
	Remote datapath.Remote
	// Epoch is the version of the answer.
	Epoch uint64
	// Expires is when the entry stops being valid.
	Expires time.Time
}

type pending struct {
	tries    int       // sends so far
	deadline time.Time // when the last send times out (zero: not sent yet)
	first    time.Time // when it was first sent
	reqIDs   []uint32  // request IDs of every send
	minEpoch uint64    // answers below this epoch are outdated (an invalidation passed)
}

// Cache is the learn cache. Build it with New.
type Cache struct {
	cfg       Config
	entries   map[Key]*Entry
	pending   map[Key]*pending
	reqs      map[uint32]Key
	queued    int // pending lookups not sent yet
	positives int // entries with Found
	nextReq   uint32
}

// New returns an empty cache.
func New(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Cache{cfg: cfg, entries: map[Key]*Entry{}, pending: map[Key]*pending{}, reqs: map[uint32]Key{}}, nil
}

// Len returns the number of cached entries, positive and negative.
func (c *Cache) Len() int { return len(c.entries) }

// Positives returns the number of cached locations (found entries).
func (c *Cache) Positives() int { return c.positives }

// Pending returns the number of lookups queued or in flight.
func (c *Cache) Pending() int { return len(c.pending) }

// Queued returns the number of lookups not sent yet.
func (c *Cache) Queued() int { return c.queued }

// Lookup returns the cached entry for k, expired or not.
func (c *Cache) Lookup(k Key) (Entry, bool) {
	e, ok := c.entries[k]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

func (c *Cache) put(k Key, e *Entry) {
	if old := c.entries[k]; old != nil && old.Found {
		c.positives--
	}
	if e.Found {
		c.positives++
	}
	c.entries[k] = e
}

func (c *Cache) remove(k Key) {
	if old := c.entries[k]; old != nil {
		if old.Found {
			c.positives--
		}
		delete(c.entries, k)
	}
}

func (c *Cache) resolve(k Key) {
	p := c.pending[k]
	if p == nil {
		return
	}
	for _, id := range p.reqIDs {
		delete(c.reqs, id)
	}
	if p.tries == 0 {
		c.queued--
	}
	delete(c.pending, k)
}

// Miss records that the data plane wants k.
func (c *Cache) Miss(k Key, now time.Time) (MissResult, datapath.Remote) {
	if _, ok := c.pending[k]; ok {
		return MissPending, datapath.Remote{}
	}
	if e := c.entries[k]; e != nil && now.Before(e.Expires) {
		if e.Found {
			return MissCached, cloneRemote(e.Remote)
		}
		return MissNegative, datapath.Remote{}
	}
	// Absent or expired: look it up. An expired location stays until
	// Expire removes it from the data plane (or an answer refreshes it).
	c.pending[k] = &pending{}
	c.queued++
	return MissQueued, datapath.Remote{}
}

// Due returns the queries to send at now: every queued lookup and every
// lookup whose last send timed out and has tries left, each with a fresh
// request ID. Lookups whose last try timed out are given up. retries counts
// the queries that are resends, gaveUp the lookups given up.
func (c *Cache) Due(now time.Time) (qs []wire.LookupQuery, retries, gaveUp int) {
	for k, p := range c.pending {
		if p.tries > 0 && now.Before(p.deadline) {
			continue
		}
		if p.tries >= c.cfg.MaxTries {
			c.resolve(k)
			gaveUp++
			continue
		}
		if p.tries == 0 {
			c.queued--
			p.first = now
		} else {
			retries++
		}
		p.tries++
		p.deadline = now.Add(c.cfg.RetryTimeout)
		id := c.newRequestID()
		p.reqIDs = append(p.reqIDs, id)
		c.reqs[id] = k
		qs = append(qs, wire.LookupQuery{RequestID: id, VNI: k.VNI, IP: k.IP})
	}
	return qs, retries, gaveUp
}

func (c *Cache) newRequestID() uint32 {
	for {
		c.nextReq++
		if _, used := c.reqs[c.nextReq]; !used && c.nextReq != 0 {
			return c.nextReq
		}
	}
}

// NextRetry returns when the earliest sent query times out; ok is false if
// no query is in flight.
func (c *Cache) NextRetry() (t time.Time, ok bool) {
	for _, p := range c.pending {
		if p.tries > 0 && (!ok || p.deadline.Before(t)) {
			t, ok = p.deadline, true
		}
	}
	return t, ok
}

// ttl returns the lifetime of an answer: bound, or the answer's own TTL
// (seconds) if it is shorter and not zero.
func ttl(bound time.Duration, seconds uint16) time.Duration {
	if seconds == 0 {
		return bound
	}
	return min(bound, time.Duration(seconds)*time.Second)
}

// Answer applies a controller answer.
func (c *Cache) Answer(a *wire.LookupAnswer, now time.Time) Action {
	k := Key{VNI: a.VNI, IP: a.IP}
	if qk, ok := c.reqs[a.RequestID]; !ok || qk != k {
		return Action{Outcome: Ignored, Key: k}
	}
	p := c.pending[k]
	if a.Epoch < p.minEpoch {
		// An invalidation newer than this answer passed while the query was
		// in flight: let the retry ask again.
		return Action{Outcome: Stale, Key: k}
	}
	c.resolve(k)
	waited := now.Sub(p.first)
	cur := c.entries[k]
	if cur != nil && a.Epoch < cur.Epoch {
		return Action{Outcome: Stale, Key: k}
	}
	if !a.Found {
		c.put(k, &Entry{Epoch: a.Epoch, Expires: now.Add(ttl(c.cfg.NegativeTTL, a.TTL))})
		if cur != nil && cur.Found {
			return Action{Outcome: Forget, Key: k, Waited: waited}
		}
		return Action{Outcome: Negative, Key: k, Waited: waited}
	}
	if !a.Location.HostIP.IsValid() {
		return Action{Outcome: Invalid, Key: k}
	}
	r := remote(k, &a.Location, a.Epoch)
	c.put(k, &Entry{Found: true, Remote: r, Epoch: a.Epoch, Expires: now.Add(ttl(c.cfg.TTL, a.TTL))})
	return Action{Outcome: Learn, Key: k, Remote: cloneRemote(r), Waited: waited}
}

// Invalidate applies a controller invalidation.
func (c *Cache) Invalidate(inv *wire.Invalidate, now time.Time) Action {
	k := Key{VNI: inv.VNI, IP: inv.IP}
	cur := c.entries[k]
	if cur == nil {
		if p := c.pending[k]; p != nil {
			p.minEpoch = max(p.minEpoch, inv.Epoch)
		}
		return Action{Outcome: Ignored, Key: k}
	}
	if inv.Epoch <= cur.Epoch {
		return Action{Outcome: Stale, Key: k}
	}
	if inv.HasLocation {
		if !inv.Location.HostIP.IsValid() {
			return Action{Outcome: Invalid, Key: k}
		}
		r := remote(k, &inv.Location, inv.Epoch)
		c.put(k, &Entry{Found: true, Remote: r, Epoch: inv.Epoch, Expires: now.Add(c.cfg.TTL)})
		return Action{Outcome: Learn, Key: k, Remote: cloneRemote(r)}
	}
	// Gone: keep a tombstone with the epoch so that an older answer still in
	// flight cannot bring the old location back.
	c.put(k, &Entry{Epoch: inv.Epoch, Expires: now.Add(c.cfg.NegativeTTL)})
	return Action{Outcome: Forget, Key: k}
}

// Expire removes the entries that expired at now and returns the keys of
// the locations among them, to remove from the data plane.
func (c *Cache) Expire(now time.Time) []Key {
	var out []Key
	for k, e := range c.entries {
		if now.Before(e.Expires) {
			continue
		}
		if e.Found {
			out = append(out, k)
		}
		c.remove(k)
	}
	return out
}

// Drop removes k's entry and lookup (the data plane refused the location,
// e.g. datapath.ErrUnknownVNI).
func (c *Cache) Drop(k Key) {
	c.resolve(k)
	c.remove(k)
}

// Retain removes every entry and lookup whose VNI keep rejects (the host
// stopped carrying the VPC) and returns the keys of the locations removed.
func (c *Cache) Retain(keep func(vni uint32) bool) []Key {
	var out []Key
	for k, e := range c.entries {
		if !keep(k.VNI) {
			if e.Found {
				out = append(out, k)
			}
			c.remove(k)
		}
	}
	for k := range c.pending {
		if !keep(k.VNI) {
			c.resolve(k)
		}
	}
	return out
}

func remote(k Key, l *wire.Location, epoch uint64) datapath.Remote {
	return datapath.Remote{
		VNI: k.VNI, IP: k.IP, MAC: append(net.HardwareAddr(nil), l.MAC[:]...),
		HostUnderlay: l.HostIP, Identity: l.Identity, Epoch: epoch,
	}
}

func cloneRemote(r datapath.Remote) datapath.Remote {
	r.MAC = append(net.HardwareAddr(nil), r.MAC...)
	return r
}
