package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SyncReadTimeout bounds one quorum read of the revision that Syncs share:
// without a quorum it fails its waiters then, rather than when each one's
// context ends.
const SyncReadTimeout = 5 * time.Second

// Sync waits until the cache has applied every write etcd committed before
// the call: it takes etcd's revision from a linearizable read (one the
// leader confirms with a quorum) that starts after the call, and waits for
// the cache to reach it. A cache read after Sync is linearizable: it sees
// every write acknowledged before Sync began, through whichever replica or
// member.
//
// Concurrent Syncs share reads, as etcd's own linearizable reads share one
// ReadIndex round: one read is in flight at a time, and every Sync that
// arrives meanwhile waits for the next one, which serves them all. A Sync
// thus costs at most two reads' time, and N concurrent Syncs about two
// reads, not N. Without a quorum Sync fails after SyncReadTimeout (or when
// ctx ends).
func (s *Store) Sync(ctx context.Context) error {
	if !s.started.Load() {
		return ErrNotStarted
	}
	r, err := s.syncs.join()
	if err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("store: sync: read the current revision: %w", ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("store: sync: %w", r.err)
	}
	if err := s.WaitForRevision(ctx, r.rev); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	return nil
}

// syncRound is one quorum read of the revision and the Syncs it serves.
type syncRound struct {
	done    chan struct{} // closed when rev or err is set
	rev     int64
	err     error
	waiters int // Syncs that joined (guarded by syncReads.mu)
}

// syncReads shares quorum reads between concurrent Syncs (see Sync).
type syncReads struct {
	wake chan struct{} // the reader has a round to serve

	mu     sync.Mutex
	next   *syncRound // the round the next read serves; nil: nobody waits
	closed bool
}

func newSyncReads() *syncReads { return &syncReads{wake: make(chan struct{}, 1)} }

// join returns the round a Sync arriving now waits for: its read starts
// later.
func (sr *syncReads) join() (*syncRound, error) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.closed {
		return nil, ErrClosed
	}
	if sr.next == nil {
		sr.next = &syncRound{done: make(chan struct{})}
		select {
		case sr.wake <- struct{}{}:
		default:
		}
	}
	sr.next.waiters++
	return sr.next, nil
}

// take returns the round to read for now, nil if nobody waits.
func (sr *syncReads) take() *syncRound {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	r := sr.next
	sr.next = nil
	return r
}

// close fails the waiting round and every later join with ErrClosed.
func (sr *syncReads) close() {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	sr.closed = true
	if r := sr.next; r != nil {
		r.err = ErrClosed
		close(r.done)
		sr.next = nil
	}
}

// syncReader serves the rounds of Syncs one read at a time until ctx ends.
func (s *Store) syncReader(ctx context.Context) {
	defer s.syncs.close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.syncs.wake:
		}
		for r := s.syncs.take(); r != nil; r = s.syncs.take() {
			r.rev, r.err = s.readRevision(ctx)
			close(r.done)
		}
	}
}

// readRevision reads etcd's current revision with a linearizable read.
func (s *Store) readRevision(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, SyncReadTimeout)
	defer cancel()
	s.metrics.syncReads.Inc()
	if h := s.hooks.syncRead; h != nil {
		h()
	}
	resp, err := s.kv.Get(ctx, s.prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read the current revision: %w", err)
	}
	return resp.Header.Revision, nil
}
