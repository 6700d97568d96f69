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
func (c *Compiler) run(ch <-chan store.Event, rev int64) {
	defer c.wg.Done()
	dirty := map[string]struct{}{}
	for {
		var ev store.Event
		ok := false
		select {
		case ev, ok = <-ch:
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
		c.recomputeSet(dirty)
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
			if err := c.compileAll(c.ctx); err != nil {
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

// compileAll recomputes every host that has a Host object, an endpoint or
// a view. Views are built in parallel (the store's cache is safe for
// concurrent readers) and applied one by one.
func (c *Compiler) compileAll(ctx context.Context) error {
	set := map[string]struct{}{}
	for _, o := range c.st.List(apiv1.KindHost, "") {
		set[o.GetObjectMeta().Name] = struct{}{}
	}
	for _, o := range c.st.List(apiv1.KindEndpoint, "") {
		if h := o.(*apiv1.Endpoint).Spec.Host; h != "" {
			set[h] = struct{}{}
		}
	}
	c.mu.RLock()
	for h := range c.hosts {
		set[h] = struct{}{}
	}
	c.mu.RUnlock()
	for h := range c.deps {
		set[h] = struct{}{}
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
	for range max(1, c.workers) {
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
		for h := range set {
			select {
			case jobs <- h:
			case <-ctx.Done():
				return
			}
		}
	}()
	for r := range results {
		c.finish(r.host, r.next, r.deps, r.start)
	}
	return ctx.Err()
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
		add(o.Metadata.Name)
	}
}

// recomputeSet recomputes every host in dirty and empties it.
func (c *Compiler) recomputeSet(dirty map[string]struct{}) {
	for h := range dirty {
		c.recompute(h)
		delete(dirty, h)
	}
}

// recompute rebuilds host's view from the store and applies the difference.
func (c *Compiler) recompute(host string) {
	start := time.Now()
	next, d := c.build(host)
	c.finish(host, next, d, start)
}

// finish applies a built view and its dependencies; compile goroutine only.
func (c *Compiler) finish(host string, next map[wire.ResourceKey][]byte, d deps, start time.Time) {
	c.setDeps(host, d)
	if r := c.applyView(host, next); r.changed {
		c.m.changes.Inc()
		c.m.resources.Add(float64(r.sizeDelta))
	}
	c.m.recomputes.Inc()
	c.m.recomputeSeconds.Observe(time.Since(start).Seconds())
	if c.onRecompute != nil {
		c.onRecompute(host)
	}
}

// applyView applies next to host's view. The view is looked up and
// changed under c.mu so that maybeRemove cannot orphan it in between. A host
// with nothing to hold gets no view unless someone asked for one.
func (c *Compiler) applyView(host string, next map[wire.ResourceKey][]byte) applyResult {
	c.mu.RLock()
	if hv := c.hosts[host]; hv != nil {
		r := hv.apply(next, c.nextVersion, c.cfg.TombstoneHorizon)
		c.mu.RUnlock()
		if len(next) == 0 {
			c.maybeRemove(host, hv)
		}
		return r
	}
	c.mu.RUnlock()
	if len(next) == 0 {
		return applyResult{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.viewLocked(host).apply(next, c.nextVersion, c.cfg.TombstoneHorizon)
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
