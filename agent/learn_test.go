package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/wire"
)

var (
	host2 = mustAddr("192.0.2.12")
	host3 = mustAddr("192.0.2.13")
)

func peer(last byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 1, last}) }

// resolve sends a packet from acme/web to dst through the sim driver.
func (h *harness) resolve(t *testing.T, dst netip.Addr) sim.Decision {
	t.Helper()
	d, err := h.drv.Resolve("acme/web", dst)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// where returns where the sim driver sends a packet to dst: "miss", or
// "remote HOST".
func (h *harness) where(t *testing.T, dst netip.Addr) string {
	t.Helper()
	d := h.resolve(t, dst)
	if d.Verdict == sim.VerdictRemote {
		return "remote " + d.Host.String()
	}
	return d.Verdict.String()
}

func (h *harness) waitWhere(t *testing.T, dst netip.Addr, want string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to resolve to %q", dst, want), func() bool {
		d, err := h.drv.Resolve("acme/web", dst)
		if err != nil {
			t.Fatal(err)
		}
		got := d.Verdict.String()
		if d.Verdict == sim.VerdictRemote {
			got = "remote " + d.Host.String()
		}
		return got == want
	})
}

// lookup waits for the next LookupRequest, checks its header and returns it.
func (h *harness) lookup(t *testing.T) (*wire.LookupRequest, netip.AddrPort) {
	t.Helper()
	d := next(t, h.udp.lookups, "lookup request")
	if d.hdr.HostID != testHostID {
		t.Errorf("lookup request from host ID %d, want %d", d.hdr.HostID, testHostID)
	}
	return d.body.(*wire.LookupRequest), d.from
}

func (h *harness) reply(t *testing.T, to netip.AddrPort, answers ...wire.LookupAnswer) {
	t.Helper()
	h.udp.sealTo(t, to, testHostID, &wire.LookupReply{Answers: answers}, h.udp.key(t))
}

func foundAt(q wire.LookupQuery, host netip.Addr, epoch uint64) wire.LookupAnswer {
	return wire.LookupAnswer{RequestID: q.RequestID, VNI: q.VNI, IP: q.IP, Found: true,
		Location: wire.Location{HostIP: host, MAC: wire.MACAddr{2, 0, 10, 0, 1, q.IP.As4()[3]}, Identity: 3}, Epoch: epoch, TTL: 60}
}

func queried(req *wire.LookupRequest) []netip.Addr {
	var out []netip.Addr
	for _, q := range req.Queries {
		out = append(out, q.IP)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// learned makes the agent learn peer .20 at host2 with epoch 1.
func (h *harness) learned(t *testing.T) {
	t.Helper()
	dst := peer(20)
	if got := h.where(t, dst); got != "miss" {
		t.Fatalf("first packet to %s: %s, want miss", dst, got)
	}
	req, from := h.lookup(t)
	if len(req.Queries) != 1 || req.Queries[0].IP != dst || req.Queries[0].VNI != 100 {
		t.Fatalf("lookup request %+v, want one query for 100/%s", req.Queries, dst)
	}
	h.reply(t, from, foundAt(req.Queries[0], host2, 1))
	h.waitWhere(t, dst, "remote 192.0.2.12")
}

func TestMissLookupLearn(t *testing.T) {
	h := newHarness(t)
	h.connect(t)
	h.learned(t)
	// Waiting for the location resolves the address again and again; the
	// misses while the lookup is in flight send nothing more.
	none(t, h.udp.lookups, "second lookup request")
	st := h.agent.Stats()
	if st.Misses == 0 || st.LookupRequests != 1 || st.LookupQueries != 1 || st.AnswersFound != 1 {
		t.Errorf("stats %+v: want misses, 1 request, 1 query, 1 answer found", st)
	}
}

// TestLookupBatching: misses that arrive together leave in one request of
// up to MaxLookupBatch queries.
func TestLookupBatching(t *testing.T) {
	// With a long batch delay, only a full batch is sent.
	h := newHarness(t, func(c *Config) { c.LookupBatchDelay = time.Hour })
	h.connect(t)
	var want []netip.Addr
	for i := range wire.MaxLookupBatch {
		dst := peer(byte(100 + i))
		want = append(want, dst)
		h.resolve(t, dst)
		h.resolve(t, dst) // a second miss for the same address adds nothing
	}
	req, _ := h.lookup(t)
	if got := queried(req); !slices.Equal(got, want) {
		t.Errorf("batched request asks for %v, want %v", got, want)
	}
	waitFor(t, "every miss to be read", func() bool { return h.agent.Stats().Misses == 2*wire.MaxLookupBatch })
	none(t, h.udp.lookups, "second lookup request")
	if st := h.agent.Stats(); st.LookupRequests != 1 || st.LookupQueries != wire.MaxLookupBatch {
		t.Errorf("stats %+v: want 1 request of %d queries", st, wire.MaxLookupBatch)
	}
}

// TestLookupRetry: a lost request is sent again after LookupTimeout, and
// given up after LookupTries sends.
func TestLookupRetry(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LookupTimeout = 5 * time.Millisecond; c.LookupTries = 3 })
	h.connect(t)
	dst := peer(20)
	h.resolve(t, dst)
	var ids []uint32
	for range 3 {
		req, _ := h.lookup(t)
		if got := queried(req); len(got) != 1 || got[0] != dst {
			t.Fatalf("request %v, want a query for %s", got, dst)
		}
		ids = append(ids, req.Queries[0].RequestID)
	}
	waitFor(t, "the lookup to be given up", func() bool { return h.agent.Stats().LookupGiveUps == 1 })
	none(t, h.udp.lookups, "fourth send of the lookup")
	if st := h.agent.Stats(); st.LookupRetries != 2 || st.LookupQueries != 3 {
		t.Errorf("stats %+v: want 2 retries of 3 queries", st)
	}
	if u := slices.Compact(slices.Sorted(slices.Values(ids))); len(u) != 3 {
		t.Errorf("request IDs %v: want a fresh one per send", ids)
	}
	// The next miss starts over, and an answer to the retry is applied.
	h.resolve(t, dst)
	next(t, h.udp.lookups, "first send")
	req, from := h.lookup(t) // its retry
	h.reply(t, from, foundAt(req.Queries[0], host2, 1))
	h.waitWhere(t, dst, "remote 192.0.2.12")
}

// TestNegativeCache: a not-found answer is cached for NegativeTTL: misses
// for the address meanwhile send no lookup.
func TestNegativeCache(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.NegativeTTL = time.Hour })
	h.connect(t)
	gone, other := peer(30), peer(31)
	h.resolve(t, gone)
	req, from := h.lookup(t)
	q := req.Queries[0]
	h.reply(t, from, wire.LookupAnswer{RequestID: q.RequestID, VNI: q.VNI, IP: q.IP, Epoch: 4, TTL: 30})
	waitFor(t, "the negative answer", func() bool { return h.agent.Stats().AnswersMissing == 1 })
	for range 5 {
		if got := h.where(t, gone); got != "miss" {
			t.Fatalf("packet to %s: %s, want miss (held by the kernel)", gone, got)
		}
	}
	// Misses are handled in order: the lookup for other comes after the
	// misses for gone, so had they sent anything it would come first.
	h.resolve(t, other)
	req, _ = h.lookup(t)
	if got := queried(req); len(got) != 1 || got[0] != other {
		t.Fatalf("next lookup asks for %v, want only %s", got, other)
	}
	if st := h.agent.Stats(); st.Misses != 7 {
		t.Errorf("Misses = %d, want 7", st.Misses)
	}
}

// TestNegativeCacheExpires: after NegativeTTL the address is looked up again.
func TestNegativeCacheExpires(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.NegativeTTL = 20 * time.Millisecond })
	h.connect(t)
	gone := peer(30)
	h.resolve(t, gone)
	req, from := h.lookup(t)
	q := req.Queries[0]
	h.reply(t, from, wire.LookupAnswer{RequestID: q.RequestID, VNI: q.VNI, IP: q.IP, Epoch: 4})
	waitFor(t, "the negative answer", func() bool { return h.agent.Stats().AnswersMissing == 1 })
	time.Sleep(30 * time.Millisecond) // past NegativeTTL (a lower bound, not an assertion)
	h.resolve(t, gone)
	req, _ = h.lookup(t)
	if got := queried(req); len(got) != 1 || got[0] != gone {
		t.Fatalf("lookup after NegativeTTL asks for %v, want %s", got, gone)
	}
}

func TestInvalidate(t *testing.T) {
	dst := peer(20)
	inv := func(epoch uint64, host netip.Addr) *wire.Invalidate {
		i := &wire.Invalidate{VNI: 100, IP: dst, Epoch: epoch}
		if host.IsValid() {
			i.HasLocation, i.Location = true, wire.Location{HostIP: host, MAC: wire.MACAddr{2, 0, 10, 0, 1, 20}}
		}
		return i
	}
	t.Run("moved then gone, over UDP", func(t *testing.T) {
		h := newHarness(t)
		h.connect(t)
		h.learned(t)
		h.udp.sealTo(t, h.agentUDP(t), testHostID, inv(2, host3), h.udp.key(t))
		h.waitWhere(t, dst, "remote 192.0.2.13")
		// A stale invalidation (epoch 2 again, pointing elsewhere) is ignored.
		h.udp.sealTo(t, h.agentUDP(t), testHostID, inv(2, host2), h.udp.key(t))
		waitFor(t, "the stale invalidation", func() bool { return h.agent.Stats().InvalidStale == 1 })
		if got := h.where(t, dst); got != "remote 192.0.2.13" {
			t.Errorf("after a stale invalidation: %s", got)
		}
		h.udp.sealTo(t, h.agentUDP(t), testHostID, inv(3, netip.Addr{}), h.udp.key(t))
		waitFor(t, "the forget", func() bool { return h.agent.Stats().Invalidations == 2 })
		if got := h.where(t, dst); got != "miss" {
			t.Errorf("after the endpoint is gone: %s, want miss", got)
		}
		// The miss this caused is looked up (the tombstone holds only for
		// answers older than the invalidation).
	})
	t.Run("over the config stream", func(t *testing.T) {
		h := newHarness(t)
		s := h.connect(t)
		h.learned(t)
		s.send(t, inv(5, host3))
		h.waitWhere(t, dst, "remote 192.0.2.13")
	})
	t.Run("forged and replayed invalidations are ignored", func(t *testing.T) {
		h := newHarness(t)
		h.connect(t)
		h.learned(t)
		wrong, err := wire.NewKey(testKey("someone else"))
		if err != nil {
			t.Fatal(err)
		}
		h.udp.sealTo(t, h.agentUDP(t), testHostID, inv(9, netip.Addr{}), &wrong)
		waitFor(t, "the forged invalidation to be rejected", func() bool { return h.agent.Stats().DatagramsRejected == 1 })
		// Another host's ID with its own valid-looking tag.
		h.udp.sealTo(t, h.agentUDP(t), testHostID+1, inv(9, netip.Addr{}), h.udp.key(t))
		waitFor(t, "the misaddressed invalidation to be rejected", func() bool { return h.agent.Stats().DatagramsRejected == 2 })
		if got := h.where(t, dst); got != "remote 192.0.2.12" {
			t.Fatalf("after forged invalidations: %s", got)
		}
		// An authentic one, then the same bytes again after the location
		// was re-learned: the replay is refused.
		pkt := h.udp.sealTo(t, h.agentUDP(t), testHostID, inv(2, host3), h.udp.key(t))
		h.waitWhere(t, dst, "remote 192.0.2.13")
		h.udp.sendRaw(t, h.agentUDP(t), pkt)
		waitFor(t, "the replay to be rejected", func() bool { return h.agent.Stats().DatagramsRejected == 3 })
		if st := h.agent.Stats(); st.Invalidations != 1 {
			t.Errorf("Invalidations = %d, want 1", st.Invalidations)
		}
	})
	t.Run("not cached", func(t *testing.T) {
		h := newHarness(t)
		h.connect(t)
		h.agentUDP(t)
		h.udp.sealTo(t, h.agentUDP(t), testHostID, inv(2, host3), h.udp.key(t))
		waitFor(t, "the invalidation", func() bool { return h.agent.Stats().InvalidIgnored == 1 })
		if got := h.where(t, dst); got != "miss" {
			t.Errorf("an invalidation of an address never looked up installed it: %s", got)
		}
	})
}

// TestLearnTTLExpiry: a learned location is forgotten when its TTL runs out.
func TestLearnTTLExpiry(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LearnTTL = 30 * time.Millisecond })
	h.connect(t)
	h.learned(t)
	waitFor(t, "the location to expire", func() bool {
		d, err := h.drv.Resolve("acme/web", peer(20))
		return err == nil && d.Verdict == sim.VerdictMiss
	})
	if st := h.agent.Stats(); st.Expiries != 1 {
		t.Errorf("Expiries = %d, want 1", st.Expiries)
	}
}

// TestRelearnFromCache: a miss for a location the cache holds (the driver
// lost it) is answered from the cache without a lookup.
func TestRelearnFromCache(t *testing.T) {
	h := newHarness(t)
	s := h.connect(t)
	h.learned(t)
	// The VPC goes away and comes back: the driver drops its remotes.
	s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 2, Deletes: []wire.ResourceKey{key("vpc", "acme/main"), key("endpoint", "acme/web")}})
	if got := s.answer(t); got != "ack 2" {
		t.Fatalf("answer %q", got)
	}
	s.send(t, &wire.Delta{FromVersion: 2, ToVersion: 3, Upserts: []wire.Resource{vpcRes(t, "acme", 100), epRes(t, "acme", "web", 100, 10)}})
	if got := s.answer(t); got != "ack 3" {
		t.Fatalf("answer %q", got)
	}
	// The cache dropped the VPC's entries with it, so this is a lookup.
	h.resolve(t, peer(20))
	req, from := h.lookup(t)
	h.reply(t, from, foundAt(req.Queries[0], host2, 1))
	h.waitWhere(t, peer(20), "remote 192.0.2.12")
	// Now make the driver lose it without the agent knowing.
	if err := h.drv.Forget(t.Context(), []datapathKey{{VNI: 100, IP: peer(20)}}); err != nil {
		t.Fatal(err)
	}
	h.waitWhere(t, peer(20), "remote 192.0.2.12") // each try is a miss
	none(t, h.udp.lookups, "lookup for a cached location")
	if st := h.agent.Stats(); st.Relearns == 0 {
		t.Errorf("Relearns = 0, want the misses answered from the cache")
	}
}

// channelDriver hides the sim driver's miss callback, so the agent reads
// the Misses channel as it does with the linux driver.
type channelDriver struct{ datapath.Driver }

// TestMissesChannel: misses of a driver without a callback are read from
// its channel and become lookups.
func TestMissesChannel(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Driver = channelDriver{c.Driver} })
	h.connect(t)
	h.learned(t)
	if st := h.agent.Stats(); st.LookupRequests != 1 || st.AnswersFound != 1 {
		t.Errorf("stats %+v: want 1 lookup request, 1 answer found", st)
	}
}
