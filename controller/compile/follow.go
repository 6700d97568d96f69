package compile

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/wire"
)

// run applies store events until Close: it coalesces the events waiting
// (up to maxBatch) into a set of touched hosts and recomputes each once.
// Between batches it compiles the views asked for and drops the views that
// lingered unused.
func (c *Compiler) run(ch <-chan store.Event, rev int64) {
	defer c.wg.Done()
	sweep := time.NewTicker(max(c.cfg.Linger/4, 10*time.Millisecond))
	defer sweep.Stop()
	dirty := map[string]struct{}{}
	for {
		var ev store.Event
		ok := false
		select {
		case ev, ok = <-ch:
		case h := <-c.adopt:
			c.adoptViews(h, rev)
			continue
		case now := <-sweep.C:
			c.sweep(now)
			continue
		case <-c.ctx.Done():
			return
		}
		for n := 0; ok; n++ {
			c.mark(ev, dirty)
			rev = max(rev, ev.Revision)
			if n+1 >= maxBatch || !c.tryRecv(ch, &ev, &ok) {
				break
			}
		}
		c.recomputeSet(dirty, rev)
		c.setRev(rev)
		if !ok {
			// The store closed the channel: Close, or this subscriber fell
			// too far behind (then rev is complete and we resume from it).
			if ch, rev = c.rewatch(rev); ch == nil {
				return
			}
		}
	}
}

// adoptViews compiles the view of first and of every other host waiting
// to be compiled (up to adoptBatch), in parallel, at revision rev: every
// event up to rev has been applied, so later events find these hosts in
// the reverse indexes.
func (c *Compiler) adoptViews(first string, rev int64) {
	hosts := []string{first}
	for len(hosts) < adoptBatch {
		select {
		case h := <-c.adopt:
			hosts = append(hosts, h)
			continue
		default:
		}
		break
	}
	ver := makeVersion(c.epoch, uint64(rev))
	views := make([]*hostView, 0, len(hosts))
	c.mu.RLock()
	todo := hosts[:0]
	for _, h := range hosts {
		if hv := c.hosts[h]; hv != nil && !hv.isBuilt() {
			todo = append(todo, h)
			views = append(views, hv)
		}
	}
	c.mu.RUnlock()
	for _, hv := range views {
		hv.start(ver)
	}
	c.buildAll(c.ctx, todo, ver)
	for _, hv := range views {
		close(hv.built)
	}
}

// sweep drops the views nobody subscribed to or asked for within
// Config.Linger, and their entries in the reverse indexes.
func (c *Compiler) sweep(now time.Time) {
	var gone []string
	c.mu.Lock()
	for h, hv := range c.hosts {
		hv.mu.Lock()
		if hv.isBuilt() && len(hv.subs) == 0 && !hv.idleSince.IsZero() && now.Sub(hv.idleSince) >= c.cfg.Linger {
			delete(c.hosts, h)
			gone = append(gone, h)
			c.m.views.Dec()
			c.m.resources.Sub(float64(len(hv.res)))
		}
		hv.mu.Unlock()
	}
	c.mu.Unlock()
	for _, h := range gone {
		c.setDeps(h, deps{})
	}
}

// tryRecv receives from ch if an event is waiting.
func (c *Compiler) tryRecv(ch <-chan store.Event, ev *store.Event, ok *bool) bool {
	select {
	case *ev, *ok = <-ch:
		return true
	default:
		return false
	}
}

// rewatch opens the store watch again from rev. If the store no longer has
// that history, it recompiles every view and watches from the revision it
// compiled. It returns nil when the compiler or the store is closed.
func (c *Compiler) rewatch(rev int64) (<-chan store.Event, int64) {
	backoff := 50 * time.Millisecond
	for {
		if c.ctx.Err() != nil {
			return nil, rev
		}
		ch, err := c.st.Watch(c.ctx, "", "", rev)
		switch {
		case err == nil:
			c.log.Info("store watch resumed", "revision", rev)
			return ch, rev
		case errors.Is(err, store.ErrClosed):
			c.log.Warn("store closed: views no longer follow it")
			return nil, rev
		case errors.Is(err, store.ErrCompacted):
			c.log.Warn("store history compacted: recompiling every view", "revision", rev)
			c.m.relists.Inc()
			rev = c.st.Revision()
			c.vpcMu.Lock()
			c.vpcCache = map[tn]wire.Resource{}
			c.vpcMu.Unlock()
			if err := c.compileAll(c.ctx, makeVersion(c.epoch, uint64(rev))); err != nil {
				return nil, rev
			}
			c.setRev(rev)
			continue
		}
		c.log.Warn("store watch failed, retrying", "revision", rev, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil, rev
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// compileAll recomputes every compiled view at ver, after the store's
// history was lost.
func (c *Compiler) compileAll(ctx context.Context, ver uint64) error {
	var hosts []string
	c.mu.RLock()
	for h, hv := range c.hosts {
		if hv.isBuilt() {
			hosts = append(hosts, h)
		}
	}
	c.mu.RUnlock()
	c.buildAll(ctx, hosts, ver)
	return ctx.Err()
}

// buildAll builds the views of hosts in parallel (the store's cache is safe
// for concurrent readers) and applies them one by one at version ver;
// compile goroutine only.
func (c *Compiler) buildAll(ctx context.Context, hosts []string, ver uint64) {
	if len(hosts) <= 4 || c.workers <= 1 {
		for _, h := range hosts {
			start := time.Now()
			next, d := c.build(h)
			c.finish(h, next, d, ver, start)
		}
		return
	}
	type built struct {
		host  string
		next  map[wire.ResourceKey][]byte
		deps  deps
		start time.Time
	}
	jobs := make(chan string)
	results := make(chan built, 256)
	var wg sync.WaitGroup
	for range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range jobs {
				start := time.Now()
				next, d := c.build(h)
				results <- built{h, next, d, start}
			}
		}()
	}
	go func() {
		defer close(results)
		defer wg.Wait()
		defer close(jobs)
		for _, h := range hosts {
			select {
			case jobs <- h:
			case <-ctx.Done():
				return
			}
		}
	}()
	for r := range results {
		c.finish(r.host, r.next, r.deps, ver, r.start)
	}
}

// mark adds the hosts whose views an event may change to dirty.
func (c *Compiler) mark(ev store.Event, dirty map[string]struct{}) {
	add := func(h string) {
		if h != "" {
			dirty[h] = struct{}{}
		}
	}
	addAll := func(hs map[string]struct{}) {
		for h := range hs {
			dirty[h] = struct{}{}
		}
	}
	t := ev.Object.GetObjectMeta().Tenant
	switch o := ev.Object.(type) {
	case *apiv1.Endpoint:
		add(o.Spec.Host)
		if old, ok := ev.Old.(*apiv1.Endpoint); ok {
			add(old.Spec.Host)
		}
	case *apiv1.Subnet:
		vpcs := []tn{{t, o.Spec.VPC}}
		if old, ok := ev.Old.(*apiv1.Subnet); ok && old.Spec.VPC != o.Spec.VPC {
			vpcs = append(vpcs, tn{t, old.Spec.VPC})
		}
		for _, k := range vpcs {
			c.forgetVPC(k)
			addAll(c.vpcHosts[k])
		}
	case *apiv1.VPC:
		k := tn{t, o.Metadata.Name}
		c.forgetVPC(k)
		addAll(c.vpcHosts[k])
	case *apiv1.SecurityPolicy:
		addAll(c.tenantHosts[t])
	case *apiv1.QoSClass:
		addAll(c.qosHosts[tn{t, o.Metadata.Name}])
	case *apiv1.Host:
		if old, ok := ev.Old.(*apiv1.Host); ok && ev.Type == store.EventModified && sameHostView(old, o) {
			return // a status write (liveness, acks): nothing a view holds
		}
		add(o.Metadata.Name)
	}
}

// sameHostView reports whether two states of a Host give the same
// view.Host (see build).
func sameHostView(a, b *apiv1.Host) bool {
	return a.Spec.UnderlayIP == b.Spec.UnderlayIP && a.Spec.Capacity == b.Spec.Capacity && a.Status.HostID == b.Status.HostID
}

// recomputeSet recomputes, at revision rev, every compiled view of a host
// in dirty, and empties dirty. Hosts without a compiled view are skipped:
// a view compiled later reads the cache then.
func (c *Compiler) recomputeSet(dirty map[string]struct{}, rev int64) {
	hosts := make([]string, 0, len(dirty))
	c.mu.RLock()
	for h := range dirty {
		if hv := c.hosts[h]; hv != nil && hv.isBuilt() {
			hosts = append(hosts, h)
		}
		delete(dirty, h)
	}
	c.mu.RUnlock()
	c.buildAll(c.ctx, hosts, makeVersion(c.epoch, uint64(rev)))
}

// finish applies a built view at version ver and records its
// dependencies; compile goroutine only.
func (c *Compiler) finish(host string, next map[wire.ResourceKey][]byte, d deps, ver uint64, start time.Time) {
	c.mu.RLock()
	hv := c.hosts[host]
	c.mu.RUnlock()
	if hv == nil {
		return // dropped meanwhile (only the compile goroutine drops)
	}
	c.setDeps(host, d)
	if r := hv.apply(next, func() uint64 { return ver }, c.cfg.TombstoneHorizon); r.changed {
		c.m.changes.Inc()
		c.m.resources.Add(float64(r.sizeDelta))
	}
	c.m.recomputes.Inc()
	c.m.recomputeSeconds.Observe(time.Since(start).Seconds())
	if c.onRecompute != nil {
		c.onRecompute(host)
	}
}

// setDeps records what host's view was built from in the reverse indexes.
func (c *Compiler) setDeps(host string, d deps) {
	old := c.deps[host]
	if len(d.vpcs)+len(d.tenants)+len(d.qos) == 0 {
		delete(c.deps, host)
	} else {
		c.deps[host] = d
	}
	reindex(c.vpcHosts, host, old.vpcs, d.vpcs)
	reindex(c.tenantHosts, host, old.tenants, d.tenants)
	reindex(c.qosHosts, host, old.qos, d.qos)
}

// reindex moves host from the index entries of old to those of cur.
func reindex[K comparable](idx map[K]map[string]struct{}, host string, old, cur []K) {
	for _, k := range old {
		if !slices.Contains(cur, k) {
			delete(idx[k], host)
			if len(idx[k]) == 0 {
				delete(idx, k)
			}
		}
	}
	for _, k := range cur {
		if slices.Contains(old, k) {
			continue
		}
		hs := idx[k]
		if hs == nil {
			hs = map[string]struct{}{}
			idx[k] = hs
		}
		hs[host] = struct{}{}
	}
}
