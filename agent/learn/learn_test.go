package learn

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/wire"
)

var (
	t0   = time.Unix(1_700_000_000, 0)
	ipA  = netip.MustParseAddr("10.0.1.20")
	ipB  = netip.MustParseAddr("10.0.1.21")
	keyA = Key{VNI: 100, IP: ipA}
	keyB = Key{VNI: 100, IP: ipB}
	h2   = netip.MustParseAddr("192.0.2.12")
	h3   = netip.MustParseAddr("192.0.2.13")
)

var cfg = Config{TTL: 60 * time.Second, NegativeTTL: 2 * time.Second, RetryTimeout: 50 * time.Millisecond, MaxTries: 3}

func newCache(t *testing.T) *Cache {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func at(d time.Duration) time.Time { return t0.Add(d) }

// sent sends the due queries at now and returns them by key.
func sent(c *Cache, now time.Time) map[Key]uint32 {
	qs, _, _ := c.Due(now)
	m := map[Key]uint32{}
	for _, q := range qs {
		m[Key{VNI: q.VNI, IP: q.IP}] = q.RequestID
	}
	return m
}

func found(id uint32, k Key, host netip.Addr, epoch uint64, ttl uint16) *wire.LookupAnswer {
	return &wire.LookupAnswer{RequestID: id, VNI: k.VNI, IP: k.IP, Found: true,
		Location: wire.Location{HostIP: host, MAC: wire.MACAddr{2, 0, 10, 0, 1, 20}, Identity: 7}, Epoch: epoch, TTL: ttl}
}

func describe(a Action) string {
	s := a.Outcome.String() + " " + a.Key.IP.String()
	if a.Outcome == Learn {
		s += fmt.Sprintf(" at %s epoch %d", a.Remote.HostUnderlay, a.Remote.Epoch)
	}
	return s
}

func TestMissLookupAnswer(t *testing.T) {
	c := newCache(t)
	if r, _ := c.Miss(keyA, t0); r != MissQueued {
		t.Fatalf("first miss: %v, want queued", r)
	}
	if r, _ := c.Miss(keyA, t0); r != MissPending {
		t.Fatalf("second miss: %v, want pending", r)
	}
	if r, _ := c.Miss(keyB, t0); r != MissQueued {
		t.Fatalf("miss of another key: %v, want queued", r)
	}
	if c.Queued() != 2 {
		t.Fatalf("Queued = %d, want 2", c.Queued())
	}
	ids := sent(c, t0)
	if len(ids) != 2 || c.Queued() != 0 {
		t.Fatalf("Due sent %v, Queued %d; want both keys, 0 queued", ids, c.Queued())
	}
	if next, ok := c.NextRetry(); !ok || !next.Equal(at(50*time.Millisecond)) {
		t.Fatalf("NextRetry = %v %v, want %v", next, ok, at(50*time.Millisecond))
	}
	// An answer to a request ID we did not use is ignored.
	if a := c.Answer(found(ids[keyA]+100, keyA, h2, 1, 0), t0); a.Outcome != Ignored {
		t.Fatalf("unsolicited answer: %s, want ignored", describe(a))
	}
	// The request ID of another key does not match either.
	if a := c.Answer(found(ids[keyB], keyA, h2, 1, 0), t0); a.Outcome != Ignored {
		t.Fatalf("answer with another key's request ID: %s, want ignored", describe(a))
	}
	a := c.Answer(found(ids[keyA], keyA, h2, 1, 0), at(time.Millisecond))
	if diff := cmp.Diff("learn 10.0.1.20 at 192.0.2.12 epoch 1", describe(a)); diff != "" {
		t.Fatalf("answer (-want +got):\n%s", diff)
	}
	if a.Remote.MAC.String() != "02:00:0a:00:01:14" || a.Remote.Identity != 7 {
		t.Errorf("learned remote %+v: wrong MAC or identity", a.Remote)
	}
	// A duplicate answer (the retry's, say) is ignored: the lookup is done.
	if a := c.Answer(found(ids[keyA], keyA, h2, 1, 0), at(time.Millisecond)); a.Outcome != Ignored {
		t.Fatalf("duplicate answer: %s, want ignored", describe(a))
	}
	if r, rem := c.Miss(keyA, at(time.Second)); r != MissCached || rem.HostUnderlay != h2 {
		t.Fatalf("miss after the answer: %v %v, want cached at %s", r, rem, h2)
	}
	// Not found: cached as negative for NegativeTTL.
	if a := c.Answer(&wire.LookupAnswer{RequestID: ids[keyB], VNI: 100, IP: ipB, Epoch: 4, TTL: 30}, at(time.Millisecond)); a.Outcome != Negative {
		t.Fatalf("not-found answer: %s, want negative", describe(a))
	}
	if r, _ := c.Miss(keyB, at(time.Second)); r != MissNegative {
		t.Fatalf("miss within NegativeTTL: %v, want negative", r)
	}
	if r, _ := c.Miss(keyB, at(2*time.Second+time.Millisecond)); r != MissQueued {
		t.Fatalf("miss after NegativeTTL: %v, want queued", r)
	}
	if c.Len() != 2 || c.Positives() != 1 {
		t.Errorf("Len %d Positives %d, want 2 and 1", c.Len(), c.Positives())
	}
}

func TestRetryAndGiveUp(t *testing.T) {
	c := newCache(t)
	c.Miss(keyA, t0)
	var ids []uint32
	for i, d := range []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond} {
		qs, retries, gaveUp := c.Due(at(d))
		if len(qs) != 1 || retries != min(i, 1) || gaveUp != 0 {
			t.Fatalf("Due at %v: %d queries, %d retries, %d given up; want 1, %d, 0", d, len(qs), retries, gaveUp, min(i, 1))
		}
		// Not due again before the timeout.
		if qs, _, _ := c.Due(at(d + 49*time.Millisecond)); len(qs) != 0 {
			t.Fatalf("Due before the retry timeout returned %v", qs)
		}
		ids = append(ids, qs[0].RequestID)
	}
	if u := slices.Compact(slices.Sorted(slices.Values(ids))); len(u) != 3 {
		t.Errorf("request IDs %v are not fresh per send", ids)
	}
	qs, retries, gaveUp := c.Due(at(150 * time.Millisecond))
	if len(qs) != 0 || retries != 0 || gaveUp != 1 {
		t.Fatalf("Due after the last try: %d queries, %d retries, %d given up; want 0, 0, 1", len(qs), retries, gaveUp)
	}
	if c.Pending() != 0 {
		t.Fatalf("Pending = %d after giving up", c.Pending())
	}
	if _, ok := c.NextRetry(); ok {
		t.Errorf("NextRetry reports a query in flight after giving up")
	}
	// A late answer to the first send is ignored; a new miss starts over.
	if a := c.Answer(found(ids[0], keyA, h2, 1, 0), at(200*time.Millisecond)); a.Outcome != Ignored {
		t.Errorf("late answer after giving up: %s, want ignored", describe(a))
	}
	if r, _ := c.Miss(keyA, at(200*time.Millisecond)); r != MissQueued {
		t.Errorf("miss after giving up: %v, want queued", r)
	}
	// An answer to an earlier send of a lookup still in flight counts.
	c2 := newCache(t)
	c2.Miss(keyA, t0)
	first := sent(c2, t0)[keyA]
	sent(c2, at(50*time.Millisecond))
	if a := c2.Answer(found(first, keyA, h2, 1, 0), at(60*time.Millisecond)); a.Outcome != Learn {
		t.Errorf("answer to the first send after a retry: %s, want learn", describe(a))
	}
}

func TestInvalidate(t *testing.T) {
	moved := &wire.Invalidate{VNI: 100, IP: ipA, Epoch: 5, HasLocation: true, Location: wire.Location{HostIP: h3, MAC: wire.MACAddr{2, 0, 0, 0, 0, 9}}}
	gone := &wire.Invalidate{VNI: 100, IP: ipA, Epoch: 5}
	for _, tc := range []struct {
		name  string
		inv   *wire.Invalidate
		setup func(c *Cache)
		want  []string // outcomes of inv applied twice, then the entry
	}{
		{
			name:  "moved: learn the new location, once",
			inv:   moved,
			setup: learnA(2),
			want:  []string{"learn 10.0.1.20 at 192.0.2.13 epoch 5", "stale 10.0.1.20", "found at 192.0.2.13 epoch 5"},
		},
		{
			name:  "gone: forget, leave a tombstone",
			inv:   gone,
			setup: learnA(2),
			want:  []string{"forget 10.0.1.20", "stale 10.0.1.20", "negative epoch 5"},
		},
		{
			name:  "older than the cached answer",
			inv:   gone,
			setup: learnA(9),
			want:  []string{"stale 10.0.1.20", "stale 10.0.1.20", "found at 192.0.2.12 epoch 9"},
		},
		{
			name:  "not cached",
			inv:   moved,
			setup: func(*Cache) {},
			want:  []string{"ignored 10.0.1.20", "ignored 10.0.1.20", "absent"},
		},
		{
			name: "negative entry learns a new endpoint",
			inv:  moved,
			setup: func(c *Cache) {
				c.Miss(keyA, t0)
				c.Answer(&wire.LookupAnswer{RequestID: sent(c, t0)[keyA], VNI: 100, IP: ipA, Epoch: 1}, t0)
			},
			want: []string{"learn 10.0.1.20 at 192.0.2.13 epoch 5", "stale 10.0.1.20", "found at 192.0.2.13 epoch 5"},
		},
		{
			name:  "invalid: moved without a host",
			inv:   &wire.Invalidate{VNI: 100, IP: ipA, Epoch: 5, HasLocation: true},
			setup: learnA(2),
			want:  []string{"invalid 10.0.1.20", "invalid 10.0.1.20", "found at 192.0.2.12 epoch 2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t)
			tc.setup(c)
			var got []string
			for range 2 {
				got = append(got, describe(c.Invalidate(tc.inv, at(time.Second))))
			}
			got = append(got, entryString(c, keyA))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestInvalidateWhileLookupInFlight: an answer older than an invalidation
// that arrived while the query was in flight is not installed.
func TestInvalidateWhileLookupInFlight(t *testing.T) {
	c := newCache(t)
	c.Miss(keyA, t0)
	id := sent(c, t0)[keyA]
	if a := c.Invalidate(&wire.Invalidate{VNI: 100, IP: ipA, Epoch: 5}, at(time.Millisecond)); a.Outcome != Ignored {
		t.Fatalf("invalidate: %s, want ignored", describe(a))
	}
	if a := c.Answer(found(id, keyA, h2, 4, 0), at(2*time.Millisecond)); a.Outcome != Stale {
		t.Fatalf("answer older than the invalidation: %s, want stale", describe(a))
	}
	qs, retries, _ := c.Due(at(50 * time.Millisecond))
	if len(qs) != 1 || retries != 1 {
		t.Fatalf("the lookup is not retried after a stale answer: %v", qs)
	}
	if a := c.Answer(found(qs[0].RequestID, keyA, h3, 6, 0), at(60*time.Millisecond)); a.Outcome != Learn {
		t.Fatalf("fresh answer: %s, want learn", describe(a))
	}
}

func TestStaleAnswer(t *testing.T) {
	c := newCache(t)
	learnA(9)(c)
	// Expired, so a miss looks it up again; the answer is older.
	now := at(61 * time.Second)
	if r, _ := c.Miss(keyA, now); r != MissQueued {
		t.Fatalf("miss of an expired entry: %v, want queued", r)
	}
	id := sent(c, now)[keyA]
	if a := c.Answer(found(id, keyA, h3, 3, 0), now); a.Outcome != Stale {
		t.Errorf("older answer: %s, want stale", describe(a))
	}
}

func TestExpire(t *testing.T) {
	c := newCache(t)
	learnA(1)(c) // at t0, TTL 60 s
	c.Miss(keyB, t0)
	c.Answer(found(sent(c, t0)[keyB], keyB, h2, 1, 10), t0) // its own TTL: 10 s
	neg := Key{VNI: 100, IP: netip.MustParseAddr("10.0.1.99")}
	c.Miss(neg, t0)
	c.Answer(&wire.LookupAnswer{RequestID: sent(c, t0)[neg], VNI: 100, IP: neg.IP}, t0)
	for _, tc := range []struct {
		at        time.Duration
		want      []Key
		len, poss int
	}{
		{time.Second, nil, 3, 2},
		{2 * time.Second, nil, 2, 2}, // the negative entry goes silently
		{10 * time.Second, []Key{keyB}, 1, 1},
		{59 * time.Second, nil, 1, 1},
		{60 * time.Second, []Key{keyA}, 0, 0},
	} {
		t.Run(tc.at.String(), func(t *testing.T) {
			got := c.Expire(at(tc.at))
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Expire (-want +got):\n%s", diff)
			}
			if c.Len() != tc.len || c.Positives() != tc.poss {
				t.Errorf("Len %d Positives %d, want %d and %d", c.Len(), c.Positives(), tc.len, tc.poss)
			}
		})
	}
}

func TestRetainAndDrop(t *testing.T) {
	c := newCache(t)
	learnA(1)(c)
	other := Key{VNI: 200, IP: ipA}
	c.Miss(other, t0)
	c.Answer(found(sent(c, t0)[other], other, h2, 1, 0), t0)
	c.Miss(Key{VNI: 200, IP: ipB}, t0) // pending
	got := c.Retain(func(vni uint32) bool { return vni == 100 })
	if len(got) != 1 || got[0] != other {
		t.Errorf("Retain removed locations %v, want [%v]", got, other)
	}
	if c.Len() != 1 || c.Pending() != 0 || c.Queued() != 0 || c.Positives() != 1 {
		t.Errorf("after Retain: Len %d Pending %d Queued %d Positives %d, want 1 0 0 1", c.Len(), c.Pending(), c.Queued(), c.Positives())
	}
	c.Drop(keyA)
	if c.Len() != 0 || c.Positives() != 0 {
		t.Errorf("after Drop: Len %d Positives %d", c.Len(), c.Positives())
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := New(Config{TTL: time.Second}); err == nil {
		t.Error("New accepted a config with zero fields")
	}
}

func learnA(epoch uint64) func(c *Cache) {
	return func(c *Cache) {
		c.Miss(keyA, t0)
		c.Answer(found(sent(c, t0)[keyA], keyA, h2, epoch, 0), t0)
	}
}

func entryString(c *Cache, k Key) string {
	e, ok := c.Lookup(k)
	switch {
	case !ok:
		return "absent"
	case e.Found:
		return fmt.Sprintf("found at %s epoch %d", e.Remote.HostUnderlay, e.Epoch)
	}
	return strings.TrimSpace(fmt.Sprintf("negative epoch %d", e.Epoch))
}
