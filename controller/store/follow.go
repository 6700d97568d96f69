package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Source is what Follow reads; *Store implements it.
type Source interface {
	Watch(ctx context.Context, kind, tenant string, fromRev int64) (<-chan Event, error)
	ListSelector(kind, tenant string, match func(labels map[string]string) bool) ([]apiv1.Object, int64)
}

// FollowConfig configures Follow.
type FollowConfig struct {
	// Name names the follower in logs and in the metrics' "follower" label.
	Name string
	// Kind and Tenant select the events as for Watch ("" for all).
	Kind, Tenant string
	// From is the revision of the list the consumer's state was built
	// from: the events after it are delivered. 0 starts with OnReset.
	From int64
	// OnEvents receives the events in revision order, in batches of those
	// waiting; the slice is reused once it returns.
	OnEvents func(evs []Event)
	// OnReset replaces the consumer's state with objs, every object of
	// Kind and Tenant at revision rev, when the events after the last one
	// delivered are gone (compacted); the events after rev follow. With
	// Kind "" objs is nil: read the Store, which reflects rev or later, and
	// expect the events after rev to repeat some of what it holds.
	OnReset func(objs []apiv1.Object, rev int64)
	// Logger (default: discard).
	Logger *slog.Logger
}

// followBatch bounds the events handed to OnEvents at once.
const followBatch = 10_000

// Follow keeps a consumer in step with src until ctx ends. It watches
// from cfg.From and hands the events to cfg.OnEvents. When the watch
// closes (a subscriber too slow for the store, see Watch) it watches
// again from the last revision delivered, at once if the watch delivered
// anything; when that history is compacted it relists and calls
// cfg.OnReset; other failures are retried after a jittered exponential
// backoff (backoffMin to backoffMax, reset by progress). The callbacks run
// on the calling goroutine, one at a time. Follow returns nil when ctx
// ends and an error wrapping ErrClosed when src closes. A Store counts its
// followers in its metrics (weft_store_follow_*).
func Follow(ctx context.Context, src Source, cfg FollowConfig) error {
	var batch []Event
	watch := func(ctx context.Context, from int64) (int64, error) {
		ch, err := src.Watch(ctx, cfg.Kind, cfg.Tenant, from)
		if err != nil {
			return from, err
		}
		for open := true; open; {
			if batch, open = receive(ctx, ch, batch[:0]); len(batch) > 0 {
				cfg.OnEvents(batch)
				from = batch[len(batch)-1].Revision
			}
		}
		return from, nil
	}
	reset := func(context.Context) (int64, error) {
		objs, rev := src.ListSelector(cfg.Kind, cfg.Tenant, nil) // Kind "": none, and the revision
		cfg.OnReset(objs, rev)
		return rev, nil
	}
	var m *metrics
	if s, ok := src.(*Store); ok {
		m = s.metrics
	}
	return follow(ctx, cfg.Name, cfg.Logger, m, cfg.From, watch, reset)
}

// receive appends to batch the next event of ch and those waiting after
// it, up to followBatch; open is false once ch is closed or ctx ended.
func receive(ctx context.Context, ch <-chan Event, batch []Event) (_ []Event, open bool) {
	select {
	case <-ctx.Done():
		return batch, false
	case ev, ok := <-ch:
		for ok {
			if batch = append(batch, ev); len(batch) == followBatch {
				return batch, true
			}
			select {
			case ev, ok = <-ch:
			default:
				return batch, true
			}
		}
		return batch, false
	}
}

// KeysConfig configures FollowKeys; its fields are FollowConfig's for
// raw etcd keys under Prefix.
type KeysConfig struct {
	Name     string
	Prefix   string
	From     int64
	OnEvents func(evs []*clientv3.Event) // the events of one watch response
	OnReset  func(kvs []*mvccpb.KeyValue, rev int64)
	Logger   *slog.Logger // default: the Store's
}

// FollowKeys is Follow for raw etcd keys (not objects), read with the
// Store's client. Its watch fails over to another member when its own
// loses the cluster leader.
func (s *Store) FollowKeys(ctx context.Context, cfg KeysConfig) error {
	watch := func(ctx context.Context, from int64) (int64, error) {
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(from+1))
		for resp := range wch {
			if resp.CompactRevision != 0 {
				return from, fmt.Errorf("watch %s from revision %d: compacted at %d: %w", cfg.Prefix, from, resp.CompactRevision, ErrCompacted)
			}
			if err := resp.Err(); err != nil {
				return from, fmt.Errorf("watch %s from revision %d: %w", cfg.Prefix, from, err)
			}
			if n := len(resp.Events); n > 0 {
				cfg.OnEvents(resp.Events)
				from = resp.Events[n-1].Kv.ModRevision
			}
		}
		return from, nil
	}
	reset := func(ctx context.Context) (int64, error) {
		resp, err := s.cli.Get(ctx, cfg.Prefix, clientv3.WithPrefix())
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", cfg.Prefix, err)
		}
		cfg.OnReset(resp.Kvs, resp.Header.Revision)
		return resp.Header.Revision, nil
	}
	return follow(ctx, cfg.Name, cmp.Or(cfg.Logger, s.log), s.metrics, cfg.From, watch, reset)
}

// follow is the loop of Follow and FollowKeys. watch delivers the events
// after a revision until the watch ends and returns the last revision it
// delivered; reset hands the consumer the current state and returns its
// revision. m may be nil.
func follow(ctx context.Context, name string, log *slog.Logger, m *metrics, from int64,
	watch func(ctx context.Context, from int64) (int64, error),
	reset func(ctx context.Context) (int64, error)) error {
	log = cmp.Or(log, slog.New(slog.DiscardHandler)).With("follower", name)
	count := func(what int) {
		if m != nil {
			m.follow[what].WithLabelValues(name).Inc()
		}
	}
	var b backoff
	relist := from == 0
	for {
		var err error
		progress := false
		if relist {
			var rev int64
			count(followReset) // before the consumer sees it
			if rev, err = reset(ctx); err == nil {
				from, relist, progress = rev, false, true
			}
		} else {
			var last int64
			last, err = watch(ctx, from)
			progress, from = last > from, last
			if err == nil && ctx.Err() == nil {
				count(followRewatch)
				log.Info("watch closed: resuming", "revision", from)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, ErrClosed):
			return fmt.Errorf("follow %s: %w", name, err)
		case errors.Is(err, ErrCompacted):
			relist = true
			log.Warn("history to resume from is compacted: relisting", "revision", from)
		case err != nil:
			count(followError)
			log.Warn("follow failed, retrying", "revision", from, "err", err)
		}
		if progress {
			b.reset()
			continue
		}
		t := time.NewTimer(b.next())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// Bounds of the retry delays of follow and of the cache's own watch.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 5 * time.Second
)

// backoff is a jittered exponential delay: each next is at most twice the
// last, from backoffMin up to backoffMax, drawn from [d/2, d). The zero
// value is ready.
type backoff struct{ cur time.Duration }

func (b *backoff) next() time.Duration {
	b.cur = min(max(2*b.cur, backoffMin), backoffMax)
	return b.cur/2 + rand.N(b.cur/2)
}

func (b *backoff) reset() { b.cur = 0 }
