package liveness

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// maxMarkAttempts bounds how often the sink tries to mark a dead host's
// endpoints before it gives up (the host is marked again if the table
// declares it Dead again, after a restart for instance).
const maxMarkAttempts = DefaultSinkAttempts

// guard is what a RegistrySink remembers between batches: whether a mass
// disruption is under way, the dead hosts whose endpoints are still to be
// marked Lost, the marking budget, and the hosts whose Suspect was not
// written. RegistrySink.batchMu guards it.
type guard struct {
	disrupted bool
	since     time.Time // when the disruption began
	// calm is since when the share of hosts not Alive has been below the
	// threshold during a disruption; zero while it is not.
	calm time.Time
	// deferred and skipped count, during a disruption, the dead hosts
	// whose marking it deferred and the Suspect writes it skipped.
	deferred, skipped int

	// marks are the dead hosts whose endpoints are to be marked Lost.
	marks map[uint32]*mark
	// tokens is the marking budget (endpoints) as of tokensAt.
	tokens   float64
	tokensAt time.Time

	// unwritten are the hosts whose drop from Alive to Suspect was not
	// written: the store still says Alive.
	unwritten map[uint32]struct{}
}

// mark is a dead host whose endpoints are to be marked Lost.
type mark struct {
	host     string
	died     time.Time // when the sink learnt of it
	attempts int
}

// dueMark is a dead host whose endpoints are marked in this batch.
type dueMark struct {
	hostID uint32
	m      *mark
	jobs   []endpointJob
}

// disruptive reports whether counts c make a mass disruption.
func (s *RegistrySink) disruptive(c StateCounts) bool {
	known := c.Alive + c.Suspect + c.Dead
	return s.cfg.DisruptionThreshold >= 0 && known > 0 && known >= s.cfg.DisruptionMinHosts &&
		float64(c.Suspect+c.Dead) >= s.cfg.DisruptionThreshold*float64(known)
}

// observe starts or ends a mass disruption given the table's counts at at.
func (s *RegistrySink) observe(c StateCounts, at time.Time) {
	g := &s.guard
	over := s.disruptive(c)
	known := c.Alive + c.Suspect + c.Dead
	share := 0.0
	if known > 0 {
		share = float64(c.Suspect+c.Dead) / float64(known)
	}
	switch {
	case over && !g.disrupted:
		g.disrupted, g.since, g.calm = true, at, time.Time{}
		g.deferred, g.skipped = 0, 0
		s.m.disrupted.Set(1)
		s.log.Warn("mass disruption: endpoints of dead hosts are not marked Lost until it ends",
			"alive", c.Alive, "suspect", c.Suspect, "dead", c.Dead, "share", fmt.Sprintf("%.2f", share),
			"threshold", s.cfg.DisruptionThreshold)
	case over:
		g.calm = time.Time{}
	case g.disrupted:
		if g.calm.IsZero() {
			g.calm = at
		}
		if at.Sub(g.calm) < s.cfg.DisruptionHold {
			return
		}
		g.disrupted = false
		s.m.disrupted.Set(0)
		clear(g.unwritten) // their next transitions are written as usual
		s.log.Warn("mass disruption over: marking the endpoints of hosts still dead",
			"lasted", at.Sub(g.since).Round(time.Millisecond), "deferredHosts", g.deferred, "hostsToMark", len(g.marks),
			"suspectNotWritten", g.skipped, "alive", c.Alive, "suspect", c.Suspect, "dead", c.Dead,
			"share", fmt.Sprintf("%.2f", share))
	}
}

// skipHostWrite reports whether t is not to be written: during a
// disruption, a drop from Alive to Suspect (the store keeps Alive), and
// the return to Alive of such a host, whose stored status still says
// Alive.
func (s *RegistrySink) skipHostWrite(t Transition) bool {
	g := &s.guard
	_, unwritten := g.unwritten[t.HostID]
	delete(g.unwritten, t.HostID)
	switch {
	case g.disrupted && t.From == Alive && t.To == Suspect:
		g.unwritten[t.HostID] = struct{}{}
		g.skipped++
		s.m.suspectSkipped.Inc()
		return true
	case unwritten && t.From == Suspect && t.To == Alive:
		return true
	}
	return false
}

// queueMark queues a dead host's endpoints to be marked; it reports
// whether the host was not queued yet.
func (s *RegistrySink) queueMark(hostID uint32, host string, at time.Time) bool {
	if m := s.guard.marks[hostID]; m != nil && m.host == host {
		return false // a batch handed again
	}
	s.guard.marks[hostID] = &mark{host: host, died: at}
	return true
}

// refill adds the marking budget earned since the last batch.
func (s *RegistrySink) refill(at time.Time) {
	g := &s.guard
	burst := float64(max(s.cfg.MarkBurst, 1))
	switch {
	case g.tokensAt.IsZero():
		g.tokens, g.tokensAt = burst, at
	case at.After(g.tokensAt):
		g.tokens = min(burst, g.tokens+at.Sub(g.tokensAt).Seconds()*s.cfg.MarkRate)
		g.tokensAt = at
	}
}

// dueMarks returns the dead hosts whose endpoints are to be marked now,
// oldest death first: none during a disruption, else as many as the
// budget allows (a host's endpoints together, so the budget may go
// negative). Hosts no longer Dead in the table, deleted, spoken for by
// another replica or with nothing to mark leave the queue.
func (s *RegistrySink) dueMarks(b Batch) []dueMark {
	g := &s.guard
	limited := s.cfg.MarkRate >= 0
	if limited {
		s.refill(b.At)
	}
	if g.disrupted || len(g.marks) == 0 {
		return nil
	}
	ids := make([]uint32, 0, len(g.marks))
	for id := range g.marks {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uint32) int {
		return cmp.Or(g.marks[a].died.Compare(g.marks[b].died), cmp.Compare(a, b))
	})
	var due []dueMark
	for _, id := range ids {
		if limited && g.tokens <= 0 {
			break
		}
		m := g.marks[id]
		h := s.hostByName(id, m.host)
		if h == nil || b.State != nil && b.State(id) != Dead || s.speaksFor != nil && !s.speaksFor(h) {
			delete(g.marks, id)
			continue
		}
		jobs := s.endpointJobs(nil, m.host, id, Dead)
		if len(jobs) == 0 {
			delete(g.marks, id)
			continue
		}
		g.tokens -= float64(len(jobs))
		due = append(due, dueMark{hostID: id, m: m, jobs: jobs})
	}
	return due
}

// countDeferred counts the hosts that died in this batch and whose
// endpoints are not marked in it: they wait for the disruption to end, or
// for budget.
func (s *RegistrySink) countDeferred(died []uint32, due []dueMark) {
	g := &s.guard
	marking := make(map[uint32]bool, len(due))
	for _, d := range due {
		marking[d.hostID] = true
	}
	n := 0
	for _, id := range died {
		if g.marks[id] != nil && !marking[id] {
			n++
		}
	}
	switch {
	case n == 0:
	case g.disrupted:
		g.deferred += n
		s.m.deferredDisruption.Add(float64(n))
	default:
		s.m.deferredRate.Add(float64(n))
	}
}

// markedOrRetry takes the hosts whose endpoints were marked off the queue;
// those whose marking failed stay, until maxMarkAttempts.
func (s *RegistrySink) markedOrRetry(due []dueMark, failed map[uint32]bool) []error {
	var errs []error
	for _, d := range due {
		if !failed[d.hostID] {
			if s.guard.marks[d.hostID] == d.m {
				delete(s.guard.marks, d.hostID)
			}
			continue
		}
		d.m.attempts++
		if d.m.attempts >= maxMarkAttempts {
			delete(s.guard.marks, d.hostID)
			errs = append(errs, fmt.Errorf("mark the endpoints of dead host %s Lost: gave up after %d attempts", d.m.host, d.m.attempts))
		}
	}
	s.m.marksPending.Set(float64(len(s.guard.marks)))
	return errs
}

// hostByName returns the stored Host name if it still has host ID id.
func (s *RegistrySink) hostByName(id uint32, name string) *apiv1.Host {
	o, ok := s.st.Get(apiv1.KindHost, "", name)
	if !ok {
		return nil
	}
	if h, ok := o.(*apiv1.Host); ok && h.Status.HostID == id {
		return h
	}
	return nil
}
