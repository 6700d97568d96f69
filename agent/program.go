package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/wire"
)

// set programs d. The caller holds setMu.
func (a *Agent) set(ctx context.Context, d *datapath.Desired) error {
	if err := a.driver.Set(ctx, d); err != nil {
		a.counters.setErrors.Add(1)
		return fmt.Errorf("program datapath: %w", err)
	}
	return nil
}

// adopt makes v (translated to d) the agent's view; setErr is the result of
// programming it. The caller holds setMu.
func (a *Agent) adopt(v *state.View, d *datapath.Desired, setErr error) {
	a.mu.Lock()
	old := a.desired
	a.view, a.desired, a.setErr = v, d, setErr
	if setErr == nil {
		a.applied = v.Version
	}
	a.observeView(v)
	a.mu.Unlock()
	a.version.Store(v.Version)
	if old != nil && !sameVNIs(old, d) {
		keep := make(map[uint32]bool, len(d.VPCs))
		for _, vp := range d.VPCs {
			keep[vp.VNI] = true
		}
		a.learnMu.Lock()
		// The driver drops the remotes of VPCs it stops carrying.
		a.cache.Retain(func(vni uint32) bool { return keep[vni] })
		a.learnMu.Unlock()
	}
	a.publishReports(v, d, setErr)
}

func sameVNIs(a, b *datapath.Desired) bool {
	if len(a.VPCs) != len(b.VPCs) {
		return false
	}
	for i := range a.VPCs {
		if a.VPCs[i].VNI != b.VPCs[i].VNI { // normalized: sorted by VNI
			return false
		}
	}
	return true
}

// persist saves v in StateDir. The caller holds setMu.
func (a *Agent) persist(v *state.View) {
	if a.cfg.StateDir == "" {
		return
	}
	if err := v.Save(a.cfg.StateDir); err != nil {
		a.counters.persistErrs.Add(1)
		a.log.Error("persist view failed", "version", v.Version, "err", err)
		return
	}
	a.mu.Lock()
	a.persisted = v.Version
	a.mu.Unlock()
}

// applyDelta applies the frames of one delta (one frame, or several with
// More set on all but the last) and returns the answer for the controller:
// Nack if the view is refused (it stays as it was; a snapshot follows), Ack
// if it was adopted, with the error of programming it if that failed (the
// reconciler retries; a snapshot would not help). The caller holds setMu,
// and writes the answer before releasing it, so that the answer reaches
// the controller before any later status Ack of the reconciler (tell).
func (a *Agent) applyDelta(ctx context.Context, frames []*wire.Delta) wire.Message {
	first := frames[0]
	to := first.ToVersion
	a.mu.Lock()
	cur := a.view
	a.mu.Unlock()
	if !first.Snapshot && first.FromVersion != cur.Version {
		a.log.Info("delta does not start at the version held, asking for a snapshot",
			"from", first.FromVersion, "to", to, "held", cur.Version)
		return a.nack(to, fmt.Sprintf("delta from version %d but the agent holds version %d", first.FromVersion, cur.Version))
	}
	next, err := cur.Apply(frames...)
	if err != nil {
		return a.nack(to, err.Error())
	}
	if want := frames[len(frames)-1].ViewHash; len(want) > 0 && !bytes.Equal(next.Hash(), want) {
		// The view diverged from the controller's: refuse it and keep
		// the one held; the Nack brings a snapshot.
		a.counters.hashMismatches.Add(1)
		a.log.Warn("view hash mismatch after a delta, asking for a snapshot",
			"from", first.FromVersion, "to", to, "snapshot", first.Snapshot)
		return a.nack(to, fmt.Sprintf("view hash mismatch after delta %d→%d", first.FromVersion, to))
	}
	next = next.WithHostID(a.hostID.Load())
	d, err := translate(next, &a.cfg)
	if err != nil {
		a.log.Warn("refusing an invalid view", "version", to, "err", err)
		return a.nack(to, err.Error())
	}
	setErr := a.set(ctx, d)
	a.adopt(next, d, setErr)
	a.counters.acks.Add(1)
	a.told = errText(setErr)
	if setErr != nil {
		a.log.Error("programming the view failed; the reconciler retries", "version", to, "err", setErr)
		kick(a.reconcileKick)
		return &wire.Ack{Version: to, Error: a.told}
	}
	a.persist(next)
	a.log.Debug("view applied", "version", to, "snapshot", first.Snapshot, "frames", len(frames),
		"endpoints", len(d.Endpoints), "vpcs", len(d.VPCs))
	return &wire.Ack{Version: to}
}

// tell sends the controller, unasked, an Ack of the view held if the
// error of programming it (the reconciler's latest result) is not the one
// the controller last heard: the Host's status then shows the error, or no
// longer shows it. The caller holds setMu.
func (a *Agent) tell(ctx context.Context) {
	a.mu.Lock()
	version, msg := a.view.Version, errText(a.setErr)
	a.mu.Unlock()
	if a.stream == nil || version == 0 || msg == a.told {
		return
	}
	if err := a.reply(ctx, a.stream, &wire.Ack{Version: version, Error: msg}); err != nil {
		a.log.Debug("tell the controller the programming status", "version", version, "err", err)
		return // the session sees the connection fail
	}
	a.told = msg
}

// errText is err's text, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (a *Agent) nack(version uint64, msg string) *wire.Nack {
	a.counters.nacks.Add(1)
	return &wire.Nack{Version: version, Error: msg}
}

// reconcileTick runs when the reconcile timer (reconcileKick) fires: it
// re-Sets the desired state, and sets the timer to ReconcileInterval, or
// after a failure to a backoff delay growing with each failure in a row. A
// kick (a Set failed elsewhere) sets it to the current backoff delay.
func (a *Agent) reconcileTick() {
	ctx := a.life.Context()
	err := a.reconcile(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		attempt := min(a.reconAttempt.Add(1), 62)
		a.reconAttempt.Store(attempt)
		d := a.cfg.Backoff.Delay(int(attempt), a.cfg.BackoffRand)
		a.log.Warn("reconcile failed, retrying", "err", err, "attempt", attempt, "in", d)
		a.reconcileKick.reset(d)
		return
	}
	a.reconAttempt.Store(0)
	a.reconcileKick.reset(a.cfg.ReconcileInterval)
}

// Reconcile programs the current desired state again now, as the
// reconciler does every ReconcileInterval, and reports what changed: for
// a caller that changed what the desired state refers to (the CNI server
// bound a namespace to an endpoint's netns path).
func (a *Agent) Reconcile(ctx context.Context) error { return a.reconcile(ctx) }

// attacher is a driver that attaches endpoints of its last Set that
// waited for their namespace, once it exists, without a Set
// (*linux.Driver). It fails, changing nothing, when it cannot attach them
// alone; a Set then does.
type attacher interface {
	Attach(ctx context.Context, ids []string) error
}

// Attach programs the local endpoints ids, which waited for their
// namespace (their netns path named none) and whose namespace the caller
// made exist: the CNI server bound a container's namespace where a
// warm-pool endpoint waited. A driver that can (attacher) attaches just
// them, and only their reports change, so that a claim costs the same on a
// host with 10 or 1,000 endpoints; otherwise, or when the driver cannot
// attach them alone, the agent programs its whole desired state again
// (Reconcile). Like Reconcile, its error is the programming's; the
// endpoints' reports say how each went.
func (a *Agent) Attach(ctx context.Context, ids []string) error {
	at, ok := a.driver.(attacher)
	if !ok {
		return a.reconcile(ctx)
	}
	a.setMu.Lock()
	a.mu.Lock()
	v, d, setErr := a.view, a.desired, a.setErr
	a.mu.Unlock()
	err := errNoView
	if d != nil {
		// The driver's last Set was of d: Sets hold setMu.
		err = at.Attach(ctx, ids)
	}
	if err == nil {
		a.publishAttached(v, d, setErr, ids)
	}
	a.setMu.Unlock()
	if err != nil {
		a.log.Info("attaching endpoints alone failed, programming the whole view", "endpoints", len(ids), "err", err)
		return a.reconcile(ctx)
	}
	return nil
}

// errNoView: the agent has not programmed a view yet.
var errNoView = errors.New("agent: no view programmed yet")

// reconcile programs the current desired state again.
func (a *Agent) reconcile(ctx context.Context) error {
	a.setMu.Lock()
	defer a.setMu.Unlock()
	a.mu.Lock()
	v, d, failing := a.view, a.desired, a.setErr != nil
	a.mu.Unlock()
	if d == nil {
		return nil
	}
	a.counters.reconciles.Add(1)
	counter, _ := a.driver.(datapath.Counter)
	var before datapath.Counts
	if counter != nil {
		before = counter.Counts()
	}
	err := a.set(ctx, d)
	if counter != nil && err == nil {
		if writes := counter.Counts().Sub(before); len(writes) > 0 {
			a.counters.repairs.Add(1)
			a.log.Info("reconcile repaired drift", "version", v.Version, "writes", writes.String())
		}
	}
	a.mu.Lock()
	a.setErr = err
	persist := false
	if err == nil {
		a.applied = v.Version
		persist = a.persisted != v.Version
	}
	a.mu.Unlock()
	if persist {
		a.persist(v)
	}
	a.tell(ctx)
	// Endpoint status may have changed (a retry attached what had failed);
	// only changes reach the Reporter.
	a.publishReports(v, d, err)
	if err == nil && failing {
		a.log.Info("datapath programmed after retry", "version", v.Version)
	}
	return err
}
