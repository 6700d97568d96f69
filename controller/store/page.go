package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// PageQuery asks ListAt for one page of a list.
type PageQuery struct {
	// Kind is a Kind, plural or short name; Tenant narrows a namespaced
	// kind to one tenant ("" all tenants).
	Kind, Tenant string
	// Rev is the revision the list is read at (the first page's).
	Rev int64
	// AfterTenant and AfterName are the last object of the previous page:
	// the page starts after it. Both "" start at the beginning.
	AfterTenant, AfterName string
	// Limit is the most objects of the page (at least 1).
	Limit int
	// Keep admits an object to the page (nil admits all).
	Keep func(apiv1.Object) bool
}

// Page is one page of a list read by ListAt.
type Page struct {
	// Objects are the page's objects, in tenant and name order.
	Objects []apiv1.Object
	// More reports that at least one more admitted object follows.
	More bool
	// Decoded is the number of stored objects the page read and decoded
	// (those Keep refused included); for ListHead, the cached objects it
	// looked at.
	Decoded int
	// Rev is the revision the page is at: the query's, or for ListHead the
	// cache's.
	Rev int64
}

// ListHead reads the first page of a list: the first q.Limit objects in
// the order of List that q.Keep admits (q.Rev and the After fields are
// ignored), at the cache's revision, which it returns in the Page and from
// which ListAt reads the next pages. It takes the first q.Limit+1 objects
// from the cache and, if q.Keep refuses some, reads on from etcd at that
// revision (ListAt): it looks at about as many objects as the page needs,
// not at the whole kind. q.Keep runs without the cache's lock held (it may
// read the Store).
func (s *Store) ListHead(ctx context.Context, q PageQuery) (Page, error) {
	k, ok := s.kinds.lookup(q.Kind)
	if !ok {
		return Page{}, fmt.Errorf("list %s: unknown kind", q.Kind)
	}
	if q.Limit < 1 {
		return Page{}, fmt.Errorf("list %s: limit %d: want a positive one", k.info.Plural, q.Limit)
	}
	tenant := q.Tenant
	if !k.info.Namespaced {
		tenant = ""
	}
	head, rev := s.cache.head(k, tenant, q.Limit+1)
	out := Page{Rev: rev, Decoded: len(head)}
	for _, o := range head {
		if q.Keep == nil || q.Keep(o) {
			out.Objects = append(out.Objects, o)
		}
	}
	if len(out.Objects) <= q.Limit && len(head) == q.Limit+1 {
		// Keep refused some: the rest of the page is read on, at rev.
		last := head[len(head)-1].GetObjectMeta()
		rest, err := s.ListAt(ctx, PageQuery{Kind: q.Kind, Tenant: q.Tenant, Rev: rev, AfterTenant: last.Tenant, AfterName: last.Name,
			Limit: q.Limit - len(out.Objects) + 1, Keep: q.Keep})
		if err != nil {
			return Page{}, err
		}
		out.Objects, out.Decoded = append(out.Objects, rest.Objects...), out.Decoded+rest.Decoded
	}
	if len(out.Objects) > q.Limit {
		out.Objects, out.More = out.Objects[:q.Limit], true
	}
	return out, nil
}

// head returns the first n cached objects of kind k in tenant ("": all),
// in List's order, and the revision they are at.
func (c *cache) head(k *kindDesc, tenant string, n int) ([]apiv1.Object, int64) {
	var objs []apiv1.Object
	c.mu.RLock()
	defer c.mu.RUnlock()
	if k == c.epKind {
		names := c.eps.names()
		c.eps.ascend(tenant, func(r *epRecord) bool {
			objs = append(objs, names.endpoint(r))
			return len(objs) < n
		})
		return objs, c.rev
	}
	order := c.byKind[k.idx].order
	visit := func(e *entry) bool {
		objs = append(objs, e.obj)
		return len(objs) < n
	}
	if tenant == "" {
		order.Ascend(visit)
	} else {
		order.AscendGreaterOrEqual(&entry{meta: &apiv1.ObjectMeta{Tenant: tenant}}, func(e *entry) bool {
			return e.meta.Tenant == tenant && visit(e)
		})
	}
	return objs, c.rev
}

// pageChunkMin is the fewest keys ListAt asks etcd for at once.
const pageChunkMin = 16

// ListAt reads a page of a list from etcd as the list was at q.Rev: the
// objects after (q.AfterTenant, q.AfterName), in the order of List (tenant,
// then name), that q.Keep admits, at most q.Limit. It reads from the first
// key after the previous page's last object, in range requests limited to
// what the page still needs, so a page costs what it reads, not the size
// of the kind (objects that Keep refuses are read too). Across tenants it
// goes from one tenant's keys to the next tenant's, in name order, using
// the Tenant objects at q.Rev (a namespaced object exists only in an
// existing tenant). A q.Rev that etcd has compacted gives ErrCompacted.
func (s *Store) ListAt(ctx context.Context, q PageQuery) (Page, error) {
	k, ok := s.kinds.lookup(q.Kind)
	if !ok {
		return Page{}, fmt.Errorf("list %s: unknown kind", q.Kind)
	}
	if q.Limit < 1 || q.Rev <= 0 {
		return Page{}, fmt.Errorf("list %s: limit %d, revision %d: want both positive", k.info.Plural, q.Limit, q.Rev)
	}
	pg := &pager{s: s, k: k, q: q}
	var err error
	if !k.info.Namespaced || q.Tenant != "" {
		tenant := q.Tenant
		if !k.info.Namespaced {
			tenant = ""
		}
		err = pg.scanTenant(ctx, tenant, q.AfterName)
	} else {
		err = pg.scanTenants(ctx)
	}
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			err = fmt.Errorf("list %s at revision %d: %w", k.info.Plural, q.Rev, ErrCompacted)
		}
		return Page{}, err
	}
	if len(pg.out.Objects) > q.Limit {
		pg.out.Objects, pg.out.More = pg.out.Objects[:q.Limit], true
	}
	pg.out.Rev = q.Rev
	return pg.out, nil
}

// pager is the state of one ListAt: it collects up to Limit+1 admitted
// objects (the one beyond the limit tells that more follow).
type pager struct {
	s   *Store
	k   *kindDesc
	q   PageQuery
	out Page
}

func (pg *pager) full() bool { return len(pg.out.Objects) > pg.q.Limit }

// scanTenants reads the page across tenants: the rest of the previous
// page's tenant, then the following tenants in name order.
func (pg *pager) scanTenants(ctx context.Context) error {
	tenant := pg.q.AfterTenant
	if tenant != "" {
		if err := pg.scanTenant(ctx, tenant, pg.q.AfterName); err != nil || pg.full() {
			return err
		}
	}
	tk := pg.s.kinds.mustLookup(apiv1.KindTenant)
	tp := pg.s.kindPrefix(tk, "")
	from, end := tp, clientv3.GetPrefixRangeEnd(tp)
	if tenant != "" {
		from = tp + tenant + "\x00"
	}
	for !pg.full() {
		resp, err := pg.s.kv.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(pg.q.Rev),
			clientv3.WithKeysOnly(), clientv3.WithLimit(pageChunkMin))
		if err != nil {
			return fmt.Errorf("list the tenants after %q at revision %d: %w", tenant, pg.q.Rev, err)
		}
		for _, kv := range resp.Kvs {
			name := strings.TrimPrefix(string(kv.Key), tp)
			if strings.Contains(name, "/") {
				continue
			}
			if err := pg.scanTenant(ctx, name, ""); err != nil || pg.full() {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return nil
}

// scanTenant reads the objects of one tenant ("" for a cluster-scoped
// kind) after name (""; from the first), whose keys are in name order.
func (pg *pager) scanTenant(ctx context.Context, tenant, after string) error {
	p := pg.s.kindPrefix(pg.k, tenant)
	if pg.k.info.Namespaced && tenant == "" {
		return nil // not a tenant's prefix
	}
	from, end := p, clientv3.GetPrefixRangeEnd(p)
	if after != "" {
		from = p + after + "\x00"
	}
	for !pg.full() {
		want := max(pg.q.Limit+1-len(pg.out.Objects), pageChunkMin)
		resp, err := pg.s.kv.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(pg.q.Rev), clientv3.WithLimit(int64(want)))
		if err != nil {
			return fmt.Errorf("list %s at revision %d: %w", p, pg.q.Rev, err)
		}
		for _, kv := range resp.Kvs {
			k, t, name, ok := pg.s.parseKey(string(kv.Key))
			if !ok || k != pg.k || t != tenant {
				continue // not an object of this kind and tenant
			}
			pg.out.Decoded++
			o, err := decodeObject(k, t, name, kv.Value, kv.ModRevision)
			if err != nil {
				pg.s.metrics.decodeErrors.Inc()
				pg.s.log.Warn("list: stored object not decoded", "key", string(kv.Key), "err", err)
				continue
			}
			if pg.q.Keep == nil || pg.q.Keep(o) {
				pg.out.Objects = append(pg.out.Objects, o)
				if pg.full() {
					return nil
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return nil
}
