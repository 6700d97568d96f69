package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/weftnet/weft/agent/learn"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/wire"
)

// missNotifier is a driver that can hand each miss to a function, on the
// goroutine that met it, instead of sending it on Misses (datapath/sim
// does): then no goroutine of the agent waits on the channel. f nil stops
// the calls.
type missNotifier interface {
	NotifyMisses(f func(datapath.Miss))
}

// startLearning turns data-plane misses into lookups, from the driver's
// callback or from a goroutine reading Misses.
func (a *Agent) startLearning() {
	if n, ok := a.driver.(missNotifier); ok {
		n.NotifyMisses(a.onMiss)
		return
	}
	misses := a.driver.Misses()
	a.life.Go(func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-misses:
				if !ok {
					return // the driver closed
				}
				a.onMiss(m)
			}
		}
	})
}

// onMiss handles a miss: one not answered by the cache queues a lookup;
// queued lookups leave in one LookupRequest when MaxLookupBatch of them are
// queued or LookupBatchDelay after the first, and are sent again after
// LookupTimeout until LookupTries. The learn timer fires at the earliest
// of these deadlines and of the cache's next sweep (which forgets
// locations whose TTL ran out), so an idle agent costs no wake-ups beyond
// its sweeps, and no goroutine.
func (a *Agent) onMiss(m datapath.Miss) {
	ctx := a.life.Context()
	if ctx.Err() != nil {
		return
	}
	queued := a.miss(ctx, m)
	now := time.Now()
	switch {
	case queued >= wire.MaxLookupBatch:
		a.learnMu.Lock()
		a.flushAt = time.Time{}
		a.learnMu.Unlock()
		a.flushLookups(now)
	case queued > 0:
		a.learnMu.Lock()
		if a.flushAt.IsZero() {
			a.flushAt = now.Add(a.cfg.LookupBatchDelay)
		}
		a.learnMu.Unlock()
	}
	a.armLearn()
}

// learnTick runs when the learn timer fires: it sends the lookups due and
// sweeps the cache if its time came.
func (a *Agent) learnTick() {
	now := time.Now()
	a.learnMu.Lock()
	retryAt, retrying := a.cache.NextRetry()
	flush := !a.flushAt.IsZero() && !now.Before(a.flushAt) || retrying && !now.Before(retryAt)
	sweep := !a.sweepAt.IsZero() && !now.Before(a.sweepAt)
	if flush {
		a.flushAt = time.Time{}
	}
	if sweep {
		a.sweepAt = time.Time{}
	}
	a.learnMu.Unlock()
	if flush {
		a.flushLookups(now)
	}
	if sweep {
		a.sweep(a.life.Context(), now)
	}
	a.armLearn()
}

// armLearn sets the learn timer to the earliest deadline: queued lookups
// leaving, a retry, the cache's sweep. With none it is left as it is (a
// tick with nothing due does nothing).
func (a *Agent) armLearn() {
	a.learnMu.Lock()
	defer a.learnMu.Unlock() // reset under learnMu: the latest state wins
	retryAt, retrying := a.cache.NextRetry()
	if a.cache.Len() > 0 && a.sweepAt.IsZero() {
		a.sweepAt = time.Now().Add(a.sweepEvery)
	}
	next := a.flushAt
	for _, t := range []time.Time{a.sweepAt, retryAt} {
		if t.IsZero() || t.Equal(retryAt) && !retrying {
			continue
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if !next.IsZero() {
		a.learnTimer.reset(time.Until(next))
	}
}

// lookupBufs are datagram buffers for lookup requests, shared by the agents
// of a process.
var lookupBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, wire.MaxDatagramSize)
	return &b
}}

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
func (a *Agent) flushLookups(now time.Time) {
	a.learnMu.Lock()
	qs, retries, gaveUp := a.cache.Due(now)
	a.learnMu.Unlock()
	a.counters.lookupRetries.Add(uint64(retries))
	a.counters.giveUps.Add(uint64(gaveUp))
	id, dk := a.hostID.Load(), a.dgKey.Load()
	if retries+gaveUp > 0 && dk != nil && !a.connected.Load() {
		// Lookups sealed with the last session's key went unanswered while
		// the stream is down: the controller may have restarted and lost
		// that key. Reconnect now rather than after the backoff (not on a
		// first start, whose jittered wait spreads agents out).
		a.redial.kick()
	}
	if len(qs) == 0 {
		return
	}
	if id == 0 || dk == nil {
		// No session yet: the queries time out and are retried, by which
		// time a Welcome may have given the host its ID and key.
		return
	}
	bp := lookupBufs.Get().(*[]byte)
	defer lookupBufs.Put(bp)
	buf := *bp
	var req wire.LookupRequest
	for len(qs) > 0 {
		n := min(len(qs), wire.MaxLookupBatch)
		req.Queries = qs[:n]
		qs = qs[n:]
		pkt, err := wire.Seal(buf[:0], wire.Header{HostID: id, Seq: a.seq.Next()}, &req, &dk.key)
		if err != nil {
			a.log.Error("seal lookup request", "err", err)
			continue
		}
		buf = pkt
		if err := a.cfg.Transport.Send(pkt, a.udpTarget()); err != nil {
			a.log.Debug("send lookup request", "err", err)
			continue
		}
		a.counters.lookupRequests.Add(1)
		a.counters.lookupQueries.Add(uint64(n))
	}
	*bp = buf[:0]
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
		if act.Waited > 0 {
			a.obs.lookupSeconds.Observe(act.Waited.Seconds())
		}
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
	a.armLearn() // the retry and sweep deadlines changed
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
	a.armLearn()
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
