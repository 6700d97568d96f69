package compile

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/wire"
)

// apply applies a batch of store events: it recomputes, once, each host
// whose view they may change.
func (c *Compiler) apply(evs []store.Event) {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	for _, ev := range evs {
		c.mark(ev, c.dirty)
	}
	rev := evs[len(evs)-1].Revision
	c.recomputeSet(c.dirty, rev)
	c.setRev(rev)
}

// reset recompiles every view at revision rev after the store's history
// to resume from was compacted.
func (c *Compiler) reset(_ []apiv1.Object, rev int64) {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.vpcMu.Lock()
	c.vpcCache = map[tn]wire.Resource{}
	c.vpcMu.Unlock()
	c.idxMu.Lock()
	c.idx = map[tn]*vpcIndex{} // the builds below load them again
	c.idxMu.Unlock()
	var hosts []string
	c.mu.RLock()
	for h, hv := range c.hosts {
		if hv.isBuilt() {
			hosts = append(hosts, h)
		}
	}
	c.mu.RUnlock()
	c.buildAll(c.ctx, hosts, makeVersion(c.epoch, uint64(rev)))
	c.setRev(rev)
}

// run compiles the views asked for and drops the views that lingered
// unused, until ctx ends.
func (c *Compiler) run(ctx context.Context) {
	sweep := time.NewTicker(max(c.cfg.Linger/4, 10*time.Millisecond))
	defer sweep.Stop()
	for {
		select {
		case h := <-c.adopt:
			c.runMu.Lock()
			c.adoptViews(h, c.Revision())
			c.runMu.Unlock()
		case now := <-sweep.C:
			c.runMu.Lock()
			c.sweep(now)
			c.runMu.Unlock()
		case <-ctx.Done():
			return
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
	c.idxMu.Lock()
	for k := range c.idx {
		if len(c.vpcHosts[k]) == 0 {
			delete(c.idx, k)
		}
	}
	c.idxMu.Unlock()
}

// buildAll builds the views of hosts in parallel (the store's cache is safe
// for concurrent readers) and applies them one by one at version ver;
// runMu is held.
func (c *Compiler) buildAll(ctx context.Context, hosts []string, ver uint64) {
	c.idxMu.Lock()
	c.tenantPolicies = map[string]map[string][]*apiv1.SecurityPolicy{}
	c.idxMu.Unlock()
	defer func() {
		c.idxMu.Lock()
		c.tenantPolicies = nil
		c.idxMu.Unlock()
	}()
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
		next  map[wire.ResourceKey]encoded
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

// mark adds the hosts whose views an event may change to dirty, and
// keeps the VPC indexes current.
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
	modified := ev.Type == store.EventModified
	t := ev.Object.GetObjectMeta().Tenant
	switch o := ev.Object.(type) {
	case *apiv1.Endpoint:
		old, _ := ev.Old.(*apiv1.Endpoint)
		if modified && old != nil && sameEndpointView(old, o) {
			return // a status write (phase, agent reports): nothing a view holds
		}
		add(o.Spec.Host)
		if old != nil {
			add(old.Spec.Host)
		}
		c.markPeers(ev, o, dirty)
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
		if old, ok := ev.Old.(*apiv1.VPC); ok && modified && sameVPCView(old, o) {
			return
		}
		k := tn{t, o.Metadata.Name}
		c.forgetVPC(k)
		addAll(c.vpcHosts[k])
	case *apiv1.SecurityPolicy:
		c.markPolicy(ev, o, dirty)
	case *apiv1.QoSClass:
		if old, ok := ev.Old.(*apiv1.QoSClass); ok && modified && reflect.DeepEqual(old.Spec, o.Spec) {
			return
		}
		addAll(c.qosHosts[tn{t, o.Metadata.Name}])
	case *apiv1.AppIntent:
		if c.cfg.ClassOf == nil {
			return
		}
		old, _ := ev.Old.(*apiv1.AppIntent)
		if modified && old != nil && reflect.DeepEqual(old.Spec, o.Spec) {
			return
		}
		c.markSelected(o.Metadata.Tenant, o.Spec.VPC, o.Spec.Selector, dirty)
		if old != nil {
			c.markSelected(old.Metadata.Tenant, old.Spec.VPC, old.Spec.Selector, dirty)
		}
	case *apiv1.Host:
		if old, ok := ev.Old.(*apiv1.Host); ok && modified && sameHostView(old, o) {
			return // a status write (liveness, acks): nothing a view holds
		}
		add(o.Metadata.Name)
	case *apiv1.Trace, *apiv1.Capture:
		c.markObserve(ev, dirty)
	}
}

// markPeers applies an endpoint event to the index of its VPC and marks
// the hosts holding a policy whose compiled rules it changes: an identity
// that appears in, or leaves, the VPC and an ingress selector matches it;
// an address that does and an egress selector matches it.
func (c *Compiler) markPeers(ev store.Event, ep *apiv1.Endpoint, dirty map[string]struct{}) {
	t, name := ep.Metadata.Tenant, ep.Metadata.Name
	var x *vpcIndex
	if o, ok := c.st.Get(apiv1.KindSubnet, t, ep.Spec.Subnet); ok {
		x = c.existingIndex(tn{t, o.(*apiv1.Subnet).Spec.VPC})
	} else {
		x = c.memberIndex(t, name) // its subnet is gone (deleted after it)
	}
	if x == nil || !x.loaded.Load() {
		return // no view holds the VPC, or no policy has needed its members
	}
	var ch []touched
	if ev.Type == store.EventDeleted {
		ch = x.remove(name, ev.Revision)
	} else {
		ch = x.set(ep, ev.Revision)
	}
	if len(ch) == 0 {
		return
	}
	for pname, pe := range x.policies {
		if affects(pe.p, ch) && c.recompile(x, pe) {
			for h := range c.policyHosts[tn{t, pname}] {
				dirty[h] = struct{}{}
			}
		}
	}
}

// memberIndex returns the loaded index of tenant's VPCs that has endpoint
// name as a member, or nil.
func (c *Compiler) memberIndex(tenant, name string) *vpcIndex {
	c.idxMu.Lock()
	defer c.idxMu.Unlock()
	for k, x := range c.idx {
		if k.tenant == tenant && x.loaded.Load() && x.members[name] != nil {
			return x
		}
	}
	return nil
}

// markPolicy applies a policy event to the index of its VPC (and of its
// old VPC) and marks the hosts that held it and those with an endpoint its
// selector now matches.
func (c *Compiler) markPolicy(ev store.Event, p *apiv1.SecurityPolicy, dirty map[string]struct{}) {
	old, _ := ev.Old.(*apiv1.SecurityPolicy)
	if ev.Type == store.EventModified && old != nil && reflect.DeepEqual(old.Spec, p.Spec) {
		return // labels, annotations, owners: nothing a view holds
	}
	t, name := p.Metadata.Tenant, p.Metadata.Name
	for h := range c.policyHosts[tn{t, name}] {
		dirty[h] = struct{}{}
	}
	vpcs := []string{p.Spec.VPC}
	if old != nil && old.Spec.VPC != p.Spec.VPC {
		vpcs = append(vpcs, old.Spec.VPC)
	}
	for _, v := range vpcs {
		x := c.existingIndex(tn{t, v})
		if x == nil {
			continue // no view holds the VPC
		}
		pe := x.policies[name]
		if pe != nil && pe.rv >= ev.Revision {
			continue // the index loaded a later state
		}
		x.policyGen++ // its selector may have changed, or it is gone
		if ev.Type == store.EventDeleted || p.Spec.VPC != v {
			delete(x.policies, name)
			continue
		}
		x.policies[name] = newPolicyEntry(p, ev.Revision)
		c.ensureMembers(x)
		x.hostsSelected(p.Spec.Selector, dirty)
	}
}

// markSelected marks the hosts of the endpoints of a tenant's VPC that sel
// matches.
func (c *Compiler) markSelected(tenant, vpc string, sel apiv1.LabelSelector, dirty map[string]struct{}) {
	if x := c.existingIndex(tn{tenant, vpc}); x != nil {
		c.ensureMembers(x)
		x.hostsSelected(sel, dirty)
	}
}

// sameEndpointView reports whether two states of an Endpoint give the
// same view.Endpoint, policies and peers (see build).
func sameEndpointView(a, b *apiv1.Endpoint) bool {
	return a.Spec == b.Spec && a.Metadata.UID == b.Metadata.UID && a.Metadata.Generation == b.Metadata.Generation &&
		maps.Equal(a.Metadata.Labels, b.Metadata.Labels) && a.Status.IP == b.Status.IP && a.Status.MAC == b.Status.MAC &&
		a.Status.VNI == b.Status.VNI && a.Status.Identity == b.Status.Identity
}

// sameVPCView reports whether two states of a VPC give the same view.VPC.
func sameVPCView(a, b *apiv1.VPC) bool {
	return slices.Equal(a.Spec.CIDRs, b.Spec.CIDRs) && a.Spec.DefaultPolicy == b.Spec.DefaultPolicy &&
		reflect.DeepEqual(a.Spec.QoS, b.Spec.QoS) && a.Status.VNI == b.Status.VNI
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
// dependencies; runMu is held.
func (c *Compiler) finish(host string, next map[wire.ResourceKey]encoded, d deps, ver uint64, start time.Time) {
	c.mu.RLock()
	hv := c.hosts[host]
	c.mu.RUnlock()
	if hv == nil {
		return // dropped meanwhile (only sweep drops, under runMu)
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
	if len(d.vpcs)+len(d.policies)+len(d.qos) == 0 {
		delete(c.deps, host)
	} else {
		c.deps[host] = d
	}
	reindex(c.vpcHosts, host, old.vpcs, d.vpcs)
	reindex(c.policyHosts, host, old.policies, d.policies)
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
