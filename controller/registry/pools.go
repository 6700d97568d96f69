package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/alloc"
	"github.com/weftnet/weft/controller/store"
)

// Address pools are built lazily. Every replica follows every Endpoint,
// but most replicas never allocate an address (allocation happens on the
// replicas that serve Endpoint creates), so a replica builds the pool of a
// subnet only when a write first needs it, from the store's cache, and
// keeps it current from then on. Until then an endpoint event costs a map
// lookup.
//
// A pool built from the cache as of revision S holds every address that the
// subnet's endpoints hold at S (subnetAt reads the subnet and its endpoints
// at one revision). The Endpoint follow goroutine must then apply exactly
// the events after S to it: an event at S or before is already in the
// pool, and applying it again can be wrong (a replayed delete of endpoint A
// whose address went to endpoint B later would free the address that B
// holds). Two rules make that so:
//
//   - subnetPools.mu is held while a pool is built and registered, and
//     while the follow goroutine applies an endpoint event. The follow
//     goroutine receives events from the cache, so at any moment the
//     events it has applied are at or before the cache revision; a pool
//     built under mu at the cache revision S therefore misses no event that
//     the follow goroutine has already passed, and every later event
//     reaches it.
//   - Each pool records S, and the follow goroutine skips the events of a
//     pool's subnet at S or before (replays after a re-watch, and events
//     that it had queued while the pool was built).
//
// When the history to resume a watch from is compacted, the follow
// goroutine may have missed events, so it drops every pool; the pools are
// rebuilt on next use, at the cache revision then, which is at or after
// the one it resumes from.
//
// A pool also records which Subnet object it was built for (UID, CIDR,
// gateway): a write to a subnet deleted and created again under the same
// name gets a new pool even before the delete event arrives.
//
// Building holds mu, so it delays the follow goroutine and other writers'
// pool lookups by the build time: about 100 µs for a subnet of 100
// endpoints (BenchmarkRegistryMemory), once per subnet and replica.

// poolSnapshotTries is how often buildPool tries to read a subnet and its
// endpoints between two equal cache revisions before it lists the tenant's
// endpoints instead.
const poolSnapshotTries = 16

// errSubnetChanging reports that a subnet changed during every try to read
// it at one revision.
var errSubnetChanging = errors.New("registry: subnet kept changing while its address pool was built")

// subnetKey names a subnet.
type subnetKey struct{ tenant, name string }

func (k subnetKey) String() string { return k.tenant + "/" + k.name }

// subnetPool is the address pool of one subnet as this replica knows it.
type subnetPool struct {
	pool *alloc.Pool
	// rev is the store revision the pool was built at: it reflects every
	// endpoint of the subnet as of rev, and only events after rev change it.
	rev int64
	// uid, cidr and gateway identify the Subnet the pool was built for: a
	// subnet deleted and created again under the same name needs a new pool.
	uid, cidr, gateway string
}

// builtFor reports whether sp is the pool of sn.
func (sp *subnetPool) builtFor(sn *apiv1.Subnet) bool {
	return sp.uid == sn.Metadata.UID && sp.cidr == sn.Spec.CIDR && sp.gateway == sn.Spec.Gateway
}

// poolAddr is one address of one subnet.
type poolAddr struct {
	subnet subnetKey
	ip     netip.Addr
}

// subnetPools holds the address pools this replica has built. The zero
// value is empty and ready to use.
type subnetPools struct {
	// mu guards everything below, and is held while a pool is built and
	// while the follow goroutine applies an endpoint event (see above).
	mu sync.Mutex
	m  map[subnetKey]*subnetPool
	// heldRev and held: the addresses that endpoint events of revision
	// heldRev reserved. Events of one revision come together, and a store
	// relist collapses changes into events of one revision in any order: a
	// delete of endpoint A there does not free an address that endpoint B
	// holds at the same revision.
	heldRev int64
	held    map[poolAddr]struct{}
	// seen is the revision of the last endpoint event observed (read
	// without mu by tests).
	seen atomic.Int64
}

// len returns the number of pools built.
func (ps *subnetPools) len() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.m)
}

// seenRevision returns the revision of the last endpoint event observed.
func (ps *subnetPools) seenRevision() int64 {
	return ps.seen.Load()
}

// get returns the pool of a subnet if it has been built.
func (ps *subnetPools) get(tenant, subnet string) (*alloc.Pool, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	sp, ok := ps.m[subnetKey{tenant, subnet}]
	if !ok {
		return nil, false
	}
	return sp.pool, true
}

// pool returns the address pool of a subnet for a write, building it on
// first use.
func (r *Registry) pool(tenant, subnet string) (*alloc.Pool, error) {
	k := subnetKey{tenant, subnet}
	ps := &r.pools
	ps.mu.Lock()
	defer ps.mu.Unlock()
	o, ok := r.st.Get(apiv1.KindSubnet, tenant, subnet)
	if !ok {
		return nil, fmt.Errorf("subnet %s not found", k)
	}
	if sp := ps.m[k]; sp != nil && sp.builtFor(o.(*apiv1.Subnet)) {
		return sp.pool, nil
	}
	sp, err := r.buildPool(k)
	if err != nil {
		return nil, err
	}
	if ps.m == nil {
		ps.m = map[subnetKey]*subnetPool{}
	}
	ps.m[k] = sp
	r.log.Debug("built address pool", "subnet", k.String(), "rev", sp.rev, "free", sp.pool.Free())
	return sp.pool, nil
}

// buildPool builds the pool of a subnet from the cache as of one revision.
// r.pools.mu is held.
func (r *Registry) buildPool(k subnetKey) (*subnetPool, error) {
	sn, eps, rev, err := r.subnetAt(k)
	if err != nil {
		return nil, err
	}
	if h := r.hooks.poolSnapshot; h != nil {
		h(rev)
	}
	cidr, err := netip.ParsePrefix(sn.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("subnet %s cidr: %w", k, err)
	}
	gw, err := netip.ParseAddr(sn.Spec.Gateway)
	if err != nil {
		return nil, fmt.Errorf("subnet %s gateway: %w", k, err)
	}
	p, err := alloc.NewPool(cidr, gw, r.cfg.BlockSize)
	if err != nil {
		return nil, fmt.Errorf("subnet %s pool: %w", k, err)
	}
	for _, ep := range eps {
		if ip, err := netip.ParseAddr(ep.Status.IP); err == nil {
			_ = p.Reserve(ip, ep.Spec.Host) // ErrInUse: a duplicate that etcd refused long ago
		}
	}
	return &subnetPool{pool: p, rev: rev, uid: sn.Metadata.UID, cidr: sn.Spec.CIDR, gateway: sn.Spec.Gateway}, nil
}

// subnetAt reads a subnet and its endpoints from the cache as of one cache
// revision, which it returns.
//
// The cache applies every change together with the revision it moves to,
// under its lock, so reads made between two equal results of Revision see
// the cache at that revision. When the cache keeps moving (large subnets,
// busy stores), it lists the tenant's endpoints, which ListSelector reads
// at one revision, checking that the subnet is the same object before and
// after.
func (r *Registry) subnetAt(k subnetKey) (*apiv1.Subnet, []*apiv1.Endpoint, int64, error) {
	for range poolSnapshotTries {
		rev := r.st.Revision()
		o, ok := r.st.Get(apiv1.KindSubnet, k.tenant, k.name)
		if !ok {
			return nil, nil, 0, fmt.Errorf("subnet %s not found", k)
		}
		eps := r.st.EndpointsBySubnet(k.tenant, k.name)
		if r.st.Revision() == rev {
			return o.(*apiv1.Subnet), eps, rev, nil
		}
	}
	for range poolSnapshotTries {
		before, ok := r.st.Get(apiv1.KindSubnet, k.tenant, k.name)
		if !ok {
			return nil, nil, 0, fmt.Errorf("subnet %s not found", k)
		}
		objs, rev := r.st.ListSelector(apiv1.KindEndpoint, k.tenant, nil)
		if after, _ := r.st.Get(apiv1.KindSubnet, k.tenant, k.name); after != before {
			continue // changed: the list may not be of this subnet
		}
		var eps []*apiv1.Endpoint
		for _, o := range objs {
			if ep := o.(*apiv1.Endpoint); ep.Spec.Subnet == k.name {
				eps = append(eps, ep)
			}
		}
		return before.(*apiv1.Subnet), eps, rev, nil
	}
	return nil, nil, 0, fmt.Errorf("subnet %s: %w", k, errSubnetChanging)
}

// observeEndpoint applies an endpoint event to the pool of its subnet if
// this replica has built that pool and the event is newer than the pool.
// It is called by the Endpoint follow goroutine only, in revision order.
func (r *Registry) observeEndpoint(ev store.Event, o *apiv1.Endpoint) {
	ps := &r.pools
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.seen.Store(ev.Revision)
	if len(ps.m) == 0 {
		return
	}
	if ev.Revision != ps.heldRev {
		ps.heldRev, ps.held = ev.Revision, nil
	}
	if old, ok := ev.Old.(*apiv1.Endpoint); ok && ev.Type == store.EventModified &&
		(old.Spec.Subnet != o.Spec.Subnet || old.Status.IP != o.Status.IP) {
		ps.apply(old, ev.Revision, false)
	}
	ps.apply(o, ev.Revision, ev.Type != store.EventDeleted)
}

// apply reserves (or releases) the address of ep, changed at rev, in its
// subnet's pool, if that pool exists and is older than rev. ps.mu is held.
func (ps *subnetPools) apply(ep *apiv1.Endpoint, rev int64, reserve bool) {
	k := subnetKey{ep.Metadata.Tenant, ep.Spec.Subnet}
	sp, ok := ps.m[k]
	if !ok || rev <= sp.rev {
		return
	}
	ip, err := netip.ParseAddr(ep.Status.IP)
	if err != nil {
		return
	}
	a := poolAddr{k, ip}
	if reserve {
		_ = sp.pool.Reserve(ip, ep.Spec.Host) // ErrInUse: allocated here, or known already
		if ps.held == nil {
			ps.held = map[poolAddr]struct{}{}
		}
		ps.held[a] = struct{}{}
		return
	}
	if _, ok := ps.held[a]; ok {
		return // another endpoint holds it at this revision
	}
	sp.pool.Release(ip)
}

// forget drops the pool of a subnet deleted at rev, unless it was built
// after that (for a subnet of the same name created again).
func (ps *subnetPools) forget(k subnetKey, rev int64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if sp, ok := ps.m[k]; ok && sp.rev < rev {
		delete(ps.m, k)
	}
}

// resetPools drops every pool.
func (r *Registry) resetPools() {
	ps := &r.pools
	ps.mu.Lock()
	defer ps.mu.Unlock()
	clear(ps.m)
	ps.held = nil
}
