package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// listPageSize is the number of keys per range request of a list.
const listPageSize = 5000

// list reads every object under the prefix at one revision, page by page.
// The changes it returns are prepared (see cache.prepare).
func (s *Store) list(ctx context.Context) ([]change, int64, error) {
	for attempt := 1; ; attempt++ {
		snap, rev, err := s.listOnce(ctx)
		// The pinned revision can be compacted between two pages: start over.
		if errors.Is(err, rpctypes.ErrCompacted) && attempt < 5 {
			s.log.Info("list revision compacted: listing again", "revision", rev, "attempt", attempt)
			continue
		}
		return snap, rev, err
	}
}

// listOnce lists the prefix at one revision in time linear in the number
// of keys. etcd walks its whole index range [key, end) for every range
// request, limited or not, to count the keys it holds: paging through a
// million keys with [last key, end of prefix) and a limit walks the rest
// of the prefix for each page, quadratic in the keys (seconds per replica
// start at a million endpoints). So only the first request, which is all
// of a small list, spans the prefix; the rest is cut into ranges of about
// a page each (see listPlan), and each range is read alone. The ranges
// are read and decoded by several workers at once, and become records in
// key order.
func (s *Store) listOnce(ctx context.Context) (snap []change, rev int64, err error) {
	start := s.prefix + "v1/"
	end := clientv3.GetPrefixRangeEnd(start)
	defer func() {
		if err != nil {
			s.cache.discard(snap)
			snap = nil
		}
	}()
	resp, err := s.kv.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(int64(s.listPage)))
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", start, err)
	}
	rev = resp.Header.Revision
	// resp.Count is the number of keys in the list: the snapshot's size,
	// give or take the keys that are not objects.
	snap = s.decodePage(resp.Kvs, make([]change, 0, min(resp.Count, 1<<24)))
	s.cache.prepare(snap)
	if h := s.hooks.listPage; h != nil {
		h(rev, 0)
	}
	if !resp.More || len(resp.Kvs) == 0 {
		return snap, rev, nil
	}
	from := string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	plan, err := s.listPlan(ctx, from, end, rev)
	if err != nil {
		return snap, rev, err
	}
	snap, err = s.listRanges(ctx, plan, rev, snap)
	return snap, rev, err
}

// listRange is a key range of a list that one worker reads: in one
// request, or, if paged, page by page (it holds at most listPagedMax
// pages).
type listRange struct {
	from, to string
	paged    bool
}

// listPagedMax is the most pages of a range read page by page: each
// page's request walks the rest of the range, at most listPagedMax/2+1
// times its keys in all.
const listPagedMax = 4

// maxTenantHints is the most tenants whose names cut a list's ranges.
const maxTenantHints = 4096

// listPlan cuts [from, end) at rev into ranges of at most listPagedMax
// pages. It cuts at the kinds' prefixes and, inside a kind with more keys
// than that, at the prefixes of the tenants that Tenant objects name (a
// hint only: keys of other tenants fall in some range all the same);
// count-only requests, which walk etcd's index but read no values, size
// the ranges. A range still too large takes a fence post every page from
// a keys-only read of its keys (listFences). Every request walks only its
// own range: linear in the keys in all.
func (s *Store) listPlan(ctx context.Context, from, end string, rev int64) ([]listRange, error) {
	tenants, err := s.listTenants(ctx, rev)
	if err != nil {
		return nil, err
	}
	var kindBounds []string
	for _, k := range s.kinds.all {
		kindBounds = append(kindBounds, s.kindPrefix(k, ""))
	}
	var plan []listRange
	// cut adds the ranges of [lo, hi), cut at bounds first if it is too
	// large and bounds is not nil.
	var cut func(lo, hi string, bounds func(lo, hi string) []string) error
	cut = func(lo, hi string, bounds func(lo, hi string) []string) error {
		resp, err := s.kv.Get(ctx, lo, clientv3.WithRange(hi), clientv3.WithRev(rev), clientv3.WithCountOnly())
		if err != nil {
			return fmt.Errorf("count the keys of [%s, %s) at revision %d: %w", lo, hi, rev, err)
		}
		page := int64(s.listPage)
		switch n := resp.Count; {
		case n == 0:
		case n <= page:
			plan = append(plan, listRange{from: lo, to: hi})
		case n <= listPagedMax*page:
			plan = append(plan, listRange{from: lo, to: hi, paged: true})
		case bounds != nil && len(bounds(lo, hi)) > 2:
			b := bounds(lo, hi)
			for i := range len(b) - 1 {
				if err := cut(b[i], b[i+1], nil); err != nil {
					return err
				}
			}
		default:
			fences, err := s.listFences(ctx, lo, hi, rev)
			if err != nil {
				return err
			}
			for i := range len(fences) - 1 {
				plan = append(plan, listRange{from: fences[i], to: fences[i+1]})
			}
		}
		return nil
	}
	tenantBounds := func(lo, hi string) []string {
		var b []string
		if k := s.kindOf(lo); k != nil && k.info.Namespaced {
			for _, t := range tenants {
				b = append(b, s.kindPrefix(k, t))
			}
		}
		return within(lo, hi, b)
	}
	b := within(from, end, kindBounds)
	for i := range len(b) - 1 {
		if err := cut(b[i], b[i+1], tenantBounds); err != nil {
			return nil, err
		}
	}
	return plan, nil
}

// kindOf returns the kind whose prefix key starts with, if any.
func (s *Store) kindOf(key string) *kindDesc {
	rest, ok := strings.CutPrefix(key, s.prefix+"v1/")
	if !ok {
		return nil
	}
	plural, _, ok := strings.Cut(rest, "/")
	if !ok {
		return nil
	}
	return s.kinds.byPlural[plural]
}

// within returns lo, the bounds strictly between lo and hi in order, and hi.
func within(lo, hi string, bounds []string) []string {
	out := []string{lo}
	for _, b := range bounds {
		if b > lo && b < hi {
			out = append(out, b)
		}
	}
	slices.Sort(out[1:])
	return append(out, hi)
}

// listTenants returns the names of the Tenant objects at rev, or none if
// there are more than maxTenantHints.
func (s *Store) listTenants(ctx context.Context, rev int64) ([]string, error) {
	p := s.kindPrefix(s.kinds.mustLookup(apiv1.KindTenant), "")
	resp, err := s.kv.Get(ctx, p, clientv3.WithRange(clientv3.GetPrefixRangeEnd(p)), clientv3.WithRev(rev),
		clientv3.WithKeysOnly(), clientv3.WithLimit(maxTenantHints))
	if err != nil {
		return nil, fmt.Errorf("list the tenants at revision %d: %w", rev, err)
	}
	if resp.More {
		return nil, nil
	}
	names := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if name := strings.TrimPrefix(string(kv.Key), p); name != "" && !strings.Contains(name, "/") {
			names = append(names, name)
		}
	}
	return names, nil
}

// listFences returns the bounds of the pages of [from, to) at rev: every
// page-th key of the range, then to. It reads the keys without their
// values, in one range request.
func (s *Store) listFences(ctx context.Context, from, to string, rev int64) ([]string, error) {
	resp, err := s.kv.Get(ctx, from, clientv3.WithRange(to), clientv3.WithRev(rev), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list the keys of [%s, %s) at revision %d: %w", from, to, rev, err)
	}
	page := s.listPage
	bounds := make([]string, 0, len(resp.Kvs)/page+2)
	for i := 0; i < len(resp.Kvs); i += page {
		bounds = append(bounds, string(resp.Kvs[i].Key))
	}
	return append(bounds, to), nil
}

// listRanges reads the ranges of a plan at rev and appends their changes,
// prepared, to snap in key order. Several ranges are read and decoded at
// once; at most two more than there are workers wait to be prepared.
func (s *Store) listRanges(ctx context.Context, plan []listRange, rev int64, snap []change) ([]change, error) {
	n := len(plan)
	if n == 0 {
		return snap, nil
	}
	type result struct {
		chs []change
		err error
	}
	workers := min(max(runtime.GOMAXPROCS(0), 2), 8, n)
	results := make([]chan result, n)
	for i := range results {
		results[i] = make(chan result, 1)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// A worker takes a token before it takes the next range, and the
	// token is returned once the range is prepared: the ranges in memory
	// are bounded, and the next range to prepare is always taken.
	tokens := make(chan struct{}, workers+2)
	var next atomic.Int64
	for range workers {
		wg.Go(func() {
			for {
				select {
				case tokens <- struct{}{}:
				case <-ctx.Done():
					return
				}
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				chs, err := s.readRange(ctx, plan[i], rev)
				results[i] <- result{chs, err}
			}
		})
	}
	for i := range n {
		var r result
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return snap, fmt.Errorf("list at revision %d: %w", rev, ctx.Err())
		}
		if r.err != nil {
			return snap, r.err
		}
		s.cache.prepare(r.chs)
		snap = append(snap, r.chs...)
		<-tokens
		if h := s.hooks.listPage; h != nil {
			h(rev, i+1)
		}
	}
	return snap, nil
}

// readRange reads and decodes the objects of a range at rev.
func (s *Store) readRange(ctx context.Context, r listRange, rev int64) ([]change, error) {
	var chs []change
	key := r.from
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(r.to), clientv3.WithRev(rev)}
		if r.paged {
			opts = append(opts, clientv3.WithLimit(int64(s.listPage)))
		}
		resp, err := s.kv.Get(ctx, key, opts...)
		if err != nil {
			return nil, fmt.Errorf("list [%s, %s) at revision %d: %w", key, r.to, rev, err)
		}
		if chs == nil {
			chs = make([]change, 0, resp.Count)
		}
		chs = s.decodePage(resp.Kvs, chs)
		if !resp.More || len(resp.Kvs) == 0 {
			return chs, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// decodePage appends the changes of a page's keys to chs.
func (s *Store) decodePage(kvs []*mvccpb.KeyValue, chs []change) []change {
	for _, kv := range kvs {
		if ch, ok := s.decodeChange(kv, false); ok {
			chs = append(chs, ch)
		}
	}
	return chs
}

// decodeChange turns a stored key-value (or a deleted one) into a change;
// ok is false for keys that are not objects. An undecodable value is
// logged and treated as a delete: the cache never serves what it cannot read.
func (s *Store) decodeChange(kv *mvccpb.KeyValue, deleted bool) (change, bool) {
	k, tenant, name, ok := s.parseKey(string(kv.Key))
	if !ok {
		return change{}, false
	}
	ch := change{kind: k, tenant: tenant, name: name, createRev: kv.CreateRevision, rev: kv.ModRevision}
	if deleted {
		return ch, true
	}
	obj, err := decodeObject(k, tenant, name, kv.Value, kv.ModRevision)
	if err != nil {
		s.metrics.decodeErrors.Inc()
		s.log.Error("ignore undecodable object", "key", string(kv.Key), "revision", kv.ModRevision, "err", err)
		return ch, true
	}
	ch.obj = obj
	return ch, true
}

// syncLoop keeps the cache current with follow's policy: it watches the
// prefix from the cache revision, watches again when the watch breaks and
// relists when etcd has compacted revisions the cache has not seen.
func (s *Store) syncLoop(ctx context.Context) {
	_ = follow(ctx, "cache", s.log, nil, s.Revision(),
		func(_ context.Context, from int64) (int64, error) {
			err := s.watchOnce(from)
			return s.Revision(), err
		},
		func(context.Context) (int64, error) {
			err := s.relist()
			return s.Revision(), err
		})
}

// relist replaces the cache with a fresh list and publishes the difference.
func (s *Store) relist() error {
	snap, rev, err := s.list(s.ctx)
	if err != nil {
		return fmt.Errorf("relist: %w", err)
	}
	n := s.cache.replace(snap, rev)
	s.metrics.relists.Inc()
	s.log.Info("store relisted", "revision", rev, "objects", len(snap), "events", n)
	return nil
}

// watchOnce applies the prefix's events after fromRev until the watch
// breaks.
func (s *Store) watchOnce(fromRev int64) error {
	// A stream of its own (the metadata names it), so that progress
	// requests do not reach other watches sharing the client, and one that
	// fails when the member loses its leader.
	base := clientv3.WithRequireLeader(metadata.AppendToOutgoingContext(s.ctx, "weft-store-watch", "cache"))
	wctx, cancel := context.WithCancel(base)
	defer cancel()
	s.watchMu.Lock()
	s.watchCancel = cancel
	s.watchMu.Unlock()
	if h := s.hooks.beforeWatch; h != nil {
		h(fromRev)
	}
	wch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(fromRev+1), clientv3.WithProgressNotify())
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch %s (started at revision %d): channel closed: %w", s.prefix, fromRev+1, cmpErr(wctx.Err(), errors.New("no reason given")))
			}
			if resp.CompactRevision != 0 {
				return fmt.Errorf("watch %s (started at revision %d): compacted at %d: %w", s.prefix, fromRev+1, resp.CompactRevision, ErrCompacted)
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch %s (started at revision %d): %w", s.prefix, fromRev+1, err)
			}
			if resp.IsProgressNotify() {
				s.cache.progress(resp.Header.Revision)
				continue
			}
			s.applyWatch(resp.Events)
		case <-s.progressReq:
			if err := s.cli.RequestProgress(wctx); err != nil {
				s.log.Debug("store watch progress request failed", "err", err)
			}
		}
	}
}

// breakWatch cancels the current etcd watch, as a network failure would (tests).
func (s *Store) breakWatch() {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watchCancel != nil {
		s.watchCancel()
	}
}

// applyWatch decodes one watch response's events and applies them.
func (s *Store) applyWatch(events []*clientv3.Event) {
	if len(events) == 0 {
		return
	}
	changes := make([]change, 0, len(events))
	for _, ev := range events {
		if ch, ok := s.decodeChange(ev.Kv, ev.Type == mvccpb.DELETE); ok {
			changes = append(changes, ch)
		}
	}
	s.cache.apply(changes, events[len(events)-1].Kv.ModRevision)
}

// progress moves the cache to rev: etcd reported every event up to it.
func (c *cache) progress(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(rev)
}
