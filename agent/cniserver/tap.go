package cniserver

import (
	"context"
	"sync"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
)

// Tap is the agent's Reporter, seen by the CNI server: it passes every
// call to the Reporter it wraps and, once a report is written, tells the
// ADDs waiting for it. An ADD returns when the API says its endpoint is
// Ready, with the conditions PolicyProgrammed and QoSProgrammed true for
// its generation: what the agent wrote after programming it.
type Tap struct {
	inner agent.Reporter

	mu      sync.Mutex
	written map[string]agent.EndpointReport // the last report written, by endpoint ID
	waiters map[string]map[*waiter]struct{}
}

var _ agent.Reporter = (*Tap)(nil)

// waiter waits for a report of an endpoint incarnation.
type waiter struct {
	uid string
	gen int64
	ch  chan agent.EndpointReport // buffered 1: the report that decided
}

// NewTap returns a Tap over inner.
func NewTap(inner agent.Reporter) *Tap {
	return &Tap{inner: inner, written: map[string]agent.EndpointReport{}, waiters: map[string]map[*waiter]struct{}{}}
}

// Register implements agent.Reporter.
func (t *Tap) Register(ctx context.Context, host, underlayIP string) error {
	return t.inner.Register(ctx, host, underlayIP)
}

// ReportEndpoints implements agent.Reporter. The reports count as written
// only when the inner Reporter succeeded for all of them.
func (t *Tap) ReportEndpoints(ctx context.Context, reports []agent.EndpointReport) error {
	err := t.inner.ReportEndpoints(ctx, reports)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range reports {
		if r.Gone {
			delete(t.written, r.ID)
			continue
		}
		t.written[r.ID] = r
		for w := range t.waiters[r.ID] {
			if decides(w, r) {
				w.ch <- r
				delete(t.waiters[r.ID], w)
			}
		}
		if len(t.waiters[r.ID]) == 0 {
			delete(t.waiters, r.ID)
		}
	}
	return nil
}

// decides says r settles w: r is of w's incarnation, and says Ready with
// everything programmed at w's generation or later, or Failed.
func decides(w *waiter, r agent.EndpointReport) bool {
	if r.UID != w.uid || r.Generation < w.gen {
		return false
	}
	return r.Phase == agent.PhaseFailed || programmed(r)
}

// programmed says r reports an endpoint fully programmed.
func programmed(r agent.EndpointReport) bool {
	return r.Phase == agent.PhaseReady && r.PolicyErr == "" && r.QoSErr == ""
}

// Wait waits until the report of endpoint id (incarnation uid, generation
// gen or later) that says it is Ready and programmed, or Failed, is
// written, and returns it; or until ctx ends.
func (t *Tap) Wait(ctx context.Context, id, uid string, gen int64) (agent.EndpointReport, error) {
	w := &waiter{uid: uid, gen: gen, ch: make(chan agent.EndpointReport, 1)}
	t.mu.Lock()
	if r, ok := t.written[id]; ok && decides(w, r) {
		t.mu.Unlock()
		return r, nil
	}
	if t.waiters[id] == nil {
		t.waiters[id] = map[*waiter]struct{}{}
	}
	t.waiters[id][w] = struct{}{}
	t.mu.Unlock()
	select {
	case r := <-w.ch:
		return r, nil
	case <-ctx.Done():
		t.mu.Lock()
		delete(t.waiters[id], w)
		if len(t.waiters[id]) == 0 {
			delete(t.waiters, id)
		}
		t.mu.Unlock()
		select {
		case r := <-w.ch: // decided meanwhile
			return r, nil
		default:
		}
		return agent.EndpointReport{}, ctx.Err()
	}
}

// known is implemented by a Reporter that can be told the stored
// conditions of an endpoint (restreport.Reporter.Known).
type known interface {
	Known(id string, conds []apiv1.Condition)
}

// Known tells the Reporter the stored conditions of ep, which the server
// just created or read: its first report then needs no read.
func (t *Tap) Known(ep *apiv1.Endpoint) {
	if k, ok := t.inner.(known); ok {
		k.Known(ep.Metadata.Tenant+"/"+ep.Metadata.Name, ep.Status.Conditions)
	}
}

// Written returns the last report of endpoint id that was written, if it
// is still on the host.
func (t *Tap) Written(id string) (agent.EndpointReport, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.written[id]
	return r, ok
}
