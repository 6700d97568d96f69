package agent

import (
	"context"
	"errors"
	"time"

	"github.com/weftnet/weft/agent/learn"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/wire"
)

// learnLoop turns data-plane misses into lookups. A miss not answered by
// the cache queues a lookup; queued lookups leave in one LookupRequest when
// MaxLookupBatch of them are queued or LookupBatchDelay after the first,
// and are sent again after LookupTimeout until LookupTries. The loop also
// sweeps the cache, forgetting locations whose TTL ran out. It sleeps on a
// single timer set to the earliest of these deadlines, so an idle agent
// costs no wake-ups beyond its sweeps.
func (a *Agent) learnLoop(ctx context.Context, misses <-chan datapath.Miss) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	sweepEvery := min(max(a.cfg.LearnTTL/8, 10*time.Millisecond), time.Second)
	var flushAt, sweepAt time.Time
	buf := make([]byte, 0, wire.MaxDatagramSize)
	for {
		// Arm the timer for the earliest deadline.
		a.learnMu.Lock()
		retryAt, retrying := a.cache.NextRetry()
		cached := a.cache.Len() > 0
		a.learnMu.Unlock()
		if cached && sweepAt.IsZero() {
			sweepAt = time.Now().Add(sweepEvery)
		}
		next := flushAt
		for _, t := range []time.Time{sweepAt, retryAt} {
			if !t.IsZero() && (next.IsZero() || t.Before(next)) {
				next = t
			}
		}
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}

		select {
		case <-ctx.Done():
			return
		case m, ok := <-misses:
			if !ok {
				misses = nil // the driver closed
				continue
			}
			queued := a.miss(ctx, m)
			switch {
			case queued >= wire.MaxLookupBatch:
				buf = a.flushLookups(buf, time.Now())
				flushAt = time.Time{}
			case queued > 0 && flushAt.IsZero():
				flushAt = time.Now().Add(a.cfg.LookupBatchDelay)
			}
		case <-a.learnWake:
		case <-timer.C:
			now := time.Now()
			if !flushAt.IsZero() && !now.Before(flushAt) || retrying && !now.Before(retryAt) {
				buf = a.flushLookups(buf, now)
				flushAt = time.Time{}
			}
			if !sweepAt.IsZero() && !now.Before(sweepAt) {
				a.sweep(ctx, now)
				sweepAt = time.Time{}
			}
		}
	}
}

// miss handles one miss and returns the number of lookups queued.
func (a *Agent) miss(ctx context.Context, m datapath.Miss) int {
	a.counters.misses.Add(1)
	k := learn.Key{VNI: m.VNI, IP: m.IP}
	a.learnMu.Lock()
	defer a.learnMu.Unlock()
	res, r := a.cache.Miss(k, time.Now())
	if res == learn.MissCached {
		// The driver lost a location the cache holds (a Set dropped its VPC
		// and added it back, say): install it again.
		a.counters.relearns.Add(1)
		a.learn(ctx, r)
	}
	return a.cache.Queued()
}

// flushLookups sends every due query, in LookupRequests of up to
// MaxLookupBatch queries.
func (a *Agent) flushLookups(buf []byte, now time.Time) []byte {
	a.learnMu.Lock()
	qs, retries, gaveUp := a.cache.Due(now)
	a.learnMu.Unlock()
	a.counters.lookupRetries.Add(uint64(retries))
	a.counters.giveUps.Add(uint64(gaveUp))
	if len(qs) == 0 {
		return buf
	}
	id := a.hostID.Load()
	if id == 0 {
		// Not numbered yet: the queries time out and are retried, by which
		// time a Welcome may have given the host its ID.
		return buf
	}
	var req wire.LookupRequest
	for len(qs) > 0 {
		n := min(len(qs), wire.MaxLookupBatch)
		req.Queries = qs[:n]
		qs = qs[n:]
		pkt, err := wire.Seal(buf[:0], wire.Header{HostID: id, Seq: a.seq.Next()}, &req, &a.key)
		if err != nil {
			a.log.Error("seal lookup request", "err", err)
			continue
		}
		buf = pkt
		if _, err := a.udp.WriteToUDPAddrPort(pkt, a.udpTarget()); err != nil {
			a.log.Debug("send lookup request", "err", err)
			continue
		}
		a.counters.lookupRequests.Add(1)
		a.counters.lookupQueries.Add(uint64(n))
	}
	return buf
}

// sweep forgets the locations whose TTL ran out.
func (a *Agent) sweep(ctx context.Context, now time.Time) {
	a.learnMu.Lock()
	defer a.learnMu.Unlock()
	keys := a.cache.Expire(now)
	if len(keys) == 0 {
		return
	}
	a.counters.expiries.Add(uint64(len(keys)))
	if err := a.driver.Forget(ctx, keys); err != nil && ctx.Err() == nil {
		a.log.Warn("forget expired locations", "count", len(keys), "err", err)
	}
}

// answer applies a lookup reply.
func (a *Agent) answer(ctx context.Context, reply *wire.LookupReply) {
	now := time.Now()
	a.learnMu.Lock()
	for i := range reply.Answers {
		act := a.cache.Answer(&reply.Answers[i], now)
		switch act.Outcome {
		case learn.Learn:
			a.counters.answersFound.Add(1)
		case learn.Negative, learn.Forget:
			a.counters.answersMissing.Add(1)
		default:
			a.counters.answersIgnored.Add(1)
		}
		a.perform(ctx, act)
	}
	a.learnMu.Unlock()
	kick(a.learnWake) // the retry and sweep deadlines changed
}

// invalidate applies a controller invalidation (UDP, authenticated, or from
// the config stream).
func (a *Agent) invalidate(ctx context.Context, inv *wire.Invalidate) {
	a.learnMu.Lock()
	act := a.cache.Invalidate(inv, time.Now())
	switch act.Outcome {
	case learn.Learn, learn.Forget:
		a.counters.invalidations.Add(1)
	case learn.Stale:
		a.counters.invalidStale.Add(1)
	default:
		a.counters.invalidIgnored.Add(1)
	}
	a.perform(ctx, act)
	a.learnMu.Unlock()
	kick(a.learnWake)
}

// perform carries out a cache action on the driver. The caller holds
// learnMu, so that driver calls for one key happen in the cache's order.
func (a *Agent) perform(ctx context.Context, act learn.Action) {
	switch act.Outcome {
	case learn.Learn:
		a.learn(ctx, act.Remote)
	case learn.Forget:
		if err := a.driver.Forget(ctx, []datapath.RemoteKey{act.Key}); err != nil && ctx.Err() == nil {
			a.log.Warn("forget remote", "vni", act.Key.VNI, "ip", act.Key.IP, "err", err)
		}
	case learn.Invalid:
		a.log.Warn("controller sent a location without a host address", "vni", act.Key.VNI, "ip", act.Key.IP)
	}
}

// learn installs r; if the driver refuses it the cache drops it. The caller
// holds learnMu.
func (a *Agent) learn(ctx context.Context, r datapath.Remote) {
	err := a.driver.Learn(ctx, []datapath.Remote{r})
	if err == nil {
		return
	}
	a.cache.Drop(r.Key())
	if errors.Is(err, datapath.ErrUnknownVNI) || ctx.Err() != nil {
		a.log.Debug("learn remote refused", "vni", r.VNI, "ip", r.IP, "err", err)
		return
	}
	a.log.Warn("learn remote", "vni", r.VNI, "ip", r.IP, "host", r.HostUnderlay, "err", err)
}
