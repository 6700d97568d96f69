package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
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
			continue
		}
		return snap, rev, err
	}
}

func (s *Store) listOnce(ctx context.Context) ([]change, int64, error) {
	key := s.prefix + "v1/"
	end := clientv3.GetPrefixRangeEnd(key)
	var (
		rev  int64
		snap []change
	)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, key, opts...)
		if err != nil {
			s.cache.discard(snap)
			return nil, 0, fmt.Errorf("list %sv1/ at revision %d: %w", s.prefix, rev, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		page := len(snap)
		for _, kv := range resp.Kvs {
			if ch, ok := s.decodeChange(kv, false); ok {
				snap = append(snap, ch)
			}
		}
		// Endpoints become records page by page: a million decoded
		// objects would take several times the memory of the cache.
		s.cache.prepare(snap[page:])
		if !resp.More || len(resp.Kvs) == 0 {
			return snap, rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
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
