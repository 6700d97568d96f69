package udp

import (
	"sync"
	"sync/atomic"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// A host may look up addresses only in the virtual networks (VNIs) where it
// has endpoints of its own: its scope. The Locator keeps the scope of every
// host ID, counting the host's endpoints per VNI, and the tenant each VNI
// belongs to, whose token bucket bounds the lookups of all its hosts.

// scopeKey is one host's presence in one VNI.
type scopeKey struct{ host, vni uint32 }

// scopeEntry counts the host's endpoints in the VNI; tenant indexes the
// Locator's tenant buckets.
type scopeEntry struct {
	endpoints int32
	tenant    int32
}

const scopeShards = 64

// scopeTable is safe for concurrent use: lookups read it, the Locator's
// follow goroutine writes it. Entries hold no pointers.
type scopeTable struct {
	shards [scopeShards]scopeShard
	// buckets are the tenants' lookup token buckets, by tenant index; the
	// slice is replaced (the buckets kept) when a tenant is added.
	buckets atomic.Pointer[[]*tokenBucket]
}

type scopeShard struct {
	mu sync.RWMutex
	m  map[scopeKey]scopeEntry
	_  [32]byte // RWMutex (24) + map (8) + 32: a shard per cache line
}

func (t *scopeTable) shard(k scopeKey) *scopeShard {
	return &t.shards[(k.host*0x9e3779b1^k.vni)%scopeShards]
}

// get returns the scope entry of host in vni.
func (t *scopeTable) get(host, vni uint32) (scopeEntry, bool) {
	k := scopeKey{host, vni}
	sh := t.shard(k)
	sh.mu.RLock()
	e, ok := sh.m[k]
	sh.mu.RUnlock()
	return e, ok
}

// add counts n (±1) endpoints of host in vni, of tenant.
func (t *scopeTable) add(k scopeKey, tenant int32, n int32) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	e.endpoints += n
	switch {
	case e.endpoints <= 0:
		delete(sh.m, k)
	default:
		e.tenant = tenant
		if sh.m == nil {
			sh.m = map[scopeKey]scopeEntry{}
		}
		sh.m[k] = e
	}
}

// clear empties the table (the buckets stay).
func (t *scopeTable) clear() {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.m = nil
		sh.mu.Unlock()
	}
}

// bucket returns the token bucket of a tenant index.
func (t *scopeTable) bucket(tenant int32) *tokenBucket {
	if bs := t.buckets.Load(); bs != nil && int(tenant) < len(*bs) {
		return (*bs)[tenant]
	}
	return nil
}

// epScope is where an endpoint counts: its host's ID and its VNI.
type epScope struct {
	key    scopeKey
	tenant int32
}

// rescope moves an endpoint's count to its current scope (none if it was
// deleted, or has no host ID or VNI yet). The follow goroutine calls it.
func (l *Locator) rescope(ref epRef, ep *apiv1.Endpoint) {
	old, had := l.scopes[ref]
	var now epScope
	ok := false
	if ep != nil {
		if hs, found := l.host(ep.Spec.Host); found && hs.id != 0 {
			vni := ep.Status.VNI
			if vni == 0 {
				vni = l.subnetVNI(ep.Metadata.Tenant, ep.Spec.Subnet)
			}
			if vni != 0 {
				now, ok = epScope{key: scopeKey{hs.id, vni}, tenant: l.tenantIndex(ep.Metadata.Tenant)}, true
			}
		}
	}
	if had && ok && old == now {
		return
	}
	if had {
		l.scope.add(old.key, old.tenant, -1)
		delete(l.scopes, ref)
	}
	if ok {
		l.scope.add(now.key, now.tenant, 1)
		l.scopes[ref] = now
	}
}

// tenantIndex returns the index of a tenant's bucket, adding one for a
// tenant seen for the first time.
func (l *Locator) tenantIndex(tenant string) int32 {
	if i, ok := l.tenants[tenant]; ok {
		return i
	}
	i := int32(len(l.tenants))
	l.tenants[tenant] = i
	var next []*tokenBucket
	if bs := l.scope.buckets.Load(); bs != nil {
		next = append(next, *bs...)
	}
	next = append(next, &tokenBucket{})
	l.scope.buckets.Store(&next)
	return i
}

// rescopeHost re-evaluates the scope of a host's endpoints (its ID
// changed, or it went).
func (l *Locator) rescopeHost(host string) {
	for _, ep := range l.src.EndpointsByHost(host) {
		l.rescope(epRef{ep.Metadata.Tenant, ep.Metadata.Name}, ep)
	}
}

// Scope reports whether the host with this ID has endpoints in vni: the
// lookups it may make there.
func (l *Locator) Scope(hostID, vni uint32) bool {
	_, ok := l.scope.get(hostID, vni)
	return ok
}
