package store

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Event types.
const (
	EventAdded    = "ADDED"
	EventModified = "MODIFIED"
	EventDeleted  = "DELETED"
)

// Event is one change of one object.
type Event struct {
	// Type is EventAdded, EventModified or EventDeleted.
	Type string
	// Object is the new state, or the last state of a deleted object. Its
	// resourceVersion is its ModRevision; use Revision to resume a watch.
	// Shared: do not modify.
	Object apiv1.Object
	// Old is the state before the event: nil for EventAdded, the same as
	// Object for EventDeleted.
	Old apiv1.Object
	// Revision is the etcd revision of the change. Events of one revision
	// are delivered together; after a relist the collapsed changes all carry
	// the relist revision.
	Revision int64
}

// Filter returns ev as a watcher of the objects that match admits sees it
// (a watch with a label or field selector, or of what a credential may
// see), as Kubernetes does: a change that makes an object match is
// EventAdded, one that makes it stop matching is EventDeleted carrying
// its last matching state (Old), and changes of an object that matches
// neither before nor after are dropped (ok false). A modification whose
// old state is unknown (Old nil) counts as an addition if it matches.
func (ev Event) Filter(match func(apiv1.Object) bool) (out Event, ok bool) {
	now := match(ev.Object)
	if ev.Type != EventModified {
		return ev, now // an addition, or a deletion of its last state
	}
	was := ev.Old != nil && match(ev.Old)
	switch {
	case now && was:
		return ev, true
	case now:
		return Event{Type: EventAdded, Object: ev.Object, Revision: ev.Revision}, true
	case was:
		return Event{Type: EventDeleted, Object: ev.Old, Old: ev.Old, Revision: ev.Revision}, true
	}
	return ev, false
}

// Watch streams the events of one kind ("" for all kinds) and one tenant
// ("" for all tenants) that happen after revision fromRev; fromRev 0 means
// from now (use the revision returned by ListSelector to list and then
// watch without a gap). Recent history is replayed from memory, older
// history from etcd; history older than etcd's compaction gives an error
// wrapping ErrCompacted.
//
// The channel closes when ctx ends, when the Store closes, or when the
// subscriber falls more than Config.SubscriberBacklog events behind (a
// replay counts too: a watch from far back must be read promptly). The
// last received Revision is then complete: watching again from it loses
// and duplicates nothing.
func (s *Store) Watch(ctx context.Context, kind, tenant string, fromRev int64) (<-chan Event, error) {
	if !s.started.Load() {
		return nil, ErrNotStarted
	}
	var k *kindDesc
	if kind != "" {
		var ok bool
		if k, ok = s.kinds.lookup(kind); !ok {
			return nil, fmt.Errorf("watch: unknown kind %q", kind)
		}
		if !k.info.Namespaced {
			tenant = ""
		}
	}
	if fromRev < 0 {
		return nil, fmt.Errorf("watch %s: negative revision %d", kindName(k), fromRev)
	}
	sub := &subscriber{
		kind:    k,
		tenant:  tenant,
		backlog: s.cfg.SubscriberBacklog,
		wake:    make(chan struct{}, 1),
		out:     make(chan Event),
		dropped: s.metrics.dropped,
	}
	c := s.cache
	var early []Event // history older than the ring, from etcd
	from := fromRev
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("watch %s: %w", kindName(k), ErrClosed)
		}
		if from == 0 {
			from = c.rev
		}
		if from >= c.ring.start {
			sub.after = from
			sub.queue = append(early, c.replay(from, sub)...)
			sub.undelivered.Store(int64(len(sub.queue)))
			sub.wake <- struct{}{} // deliver the replay first
			// Under c.mu: Close marks the cache closed before it waits.
			if !s.life.Go(func(context.Context) { s.serve(ctx, sub) }) {
				c.mu.Unlock()
				return nil, fmt.Errorf("watch %s: %w", kindName(k), ErrClosed)
			}
			c.subs[sub] = struct{}{}
			c.mu.Unlock()
			break
		}
		target := c.ring.start
		c.mu.Unlock()
		// The ring lost (from, target]: read it from etcd, then retry with
		// the ring (which may have moved on meanwhile).
		evs, err := s.history(ctx, sub, from, target)
		if err != nil {
			return nil, err
		}
		early = append(early, evs...)
		from = target
	}
	return sub.out, nil
}

func kindName(k *kindDesc) string {
	if k == nil {
		return "all kinds"
	}
	return k.info.Plural
}

// history returns sub's events in (from, to] read from an etcd watch.
func (s *Store) history(ctx context.Context, sub *subscriber, from, to int64) ([]Event, error) {
	k := sub.kind
	// A stream of its own, so that progress requests reach this watch only.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx,
		"weft-store-history", strconv.FormatInt(time.Now().UnixNano(), 36)))
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	prefix := s.kindPrefix(k, sub.tenant)
	wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from+1),
		clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	tick := time.NewTicker(progressDelay)
	defer tick.Stop()
	var evs []Event
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return nil, fmt.Errorf("watch %s from revision %d: history: %w", kindName(k), from, cmpErr(ctx.Err(), s.ctx.Err()))
			}
			if resp.CompactRevision != 0 {
				return nil, fmt.Errorf("watch %s from revision %d (compacted at %d): %w", kindName(k), from, resp.CompactRevision, ErrCompacted)
			}
			if err := resp.Err(); err != nil {
				return nil, fmt.Errorf("watch %s from revision %d: history: %w", kindName(k), from, err)
			}
			if resp.IsProgressNotify() && resp.Header.Revision >= to {
				return evs, nil
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision > to {
					return evs, nil
				}
				if e, ok := s.historyEvent(ev); ok && sub.wants(&e) {
					evs = append(evs, e)
				}
			}
		case <-tick.C:
			// Sent until one arrives: etcd ignores progress requests while the
			// watch is still catching up.
			_ = s.cli.RequestProgress(wctx)
		case <-wctx.Done():
			return nil, fmt.Errorf("watch %s from revision %d: history: %w", kindName(k), from, cmpErr(ctx.Err(), ErrClosed))
		}
	}
}

func cmpErr(err, alt error) error {
	if err != nil {
		return err
	}
	if alt != nil {
		return alt
	}
	return ErrClosed
}

// historyEvent converts an etcd event read with its previous value.
func (s *Store) historyEvent(ev *clientv3.Event) (Event, bool) {
	k, tenant, name, ok := s.parseKey(string(ev.Kv.Key))
	if !ok {
		return Event{}, false
	}
	var prev apiv1.Object
	if ev.PrevKv != nil {
		var err error
		if prev, err = decodeObject(k, tenant, name, ev.PrevKv.Value, ev.PrevKv.ModRevision); err != nil {
			s.log.Warn("skip undecodable previous value in watch history", "key", string(ev.Kv.Key), "err", err)
			prev = nil
		}
	}
	if ev.Type == mvccpb.DELETE {
		if prev == nil { // previous value unavailable: a bare object still names what went
			prev = k.info.New()
			m := prev.GetObjectMeta()
			m.Name, m.Tenant = name, tenant
		}
		return Event{Type: EventDeleted, Object: prev, Old: prev, Revision: ev.Kv.ModRevision}, true
	}
	obj, err := decodeObject(k, tenant, name, ev.Kv.Value, ev.Kv.ModRevision)
	if err != nil {
		s.log.Warn("skip undecodable value in watch history", "key", string(ev.Kv.Key), "err", err)
		return Event{}, false
	}
	if ev.IsCreate() {
		return Event{Type: EventAdded, Object: obj, Revision: ev.Kv.ModRevision}, true
	}
	return Event{Type: EventModified, Object: obj, Old: prev, Revision: ev.Kv.ModRevision}, true
}

// ---- subscribers ----

// subscriber is one Watch: the cache appends to queue (never blocking),
// serve forwards the queue to out.
type subscriber struct {
	kind    *kindDesc // nil: all kinds
	tenant  string
	after   int64 // deliver only events after this revision
	backlog int
	wake    chan struct{}
	out     chan Event
	dropped interface{ Inc() }

	mu    sync.Mutex
	queue []Event
	// undelivered counts the events queued or taken by serve but not yet
	// received from out.
	undelivered atomic.Int64
	// gone is set when the subscriber fell too far behind; it gets no new
	// events, and its channel closes once what was queued is delivered.
	gone atomic.Bool
}

// matches reports whether sub gets ev from the cache.
func (sub *subscriber) matches(ev *Event) bool {
	return ev.Revision > sub.after && sub.wants(ev)
}

// wants reports whether ev is of sub's kind and tenant.
func (sub *subscriber) wants(ev *Event) bool {
	return sub.wantsOf(ev.Object.GetTypeMeta().Kind, ev.Object.GetObjectMeta().Tenant)
}

// wantsOf reports whether sub gets the events of an object of kind and tenant.
func (sub *subscriber) wantsOf(kind, tenant string) bool {
	if sub.kind != nil && kind != sub.kind.info.Kind {
		return false
	}
	return sub.tenant == "" || tenant == sub.tenant
}

// offer queues the matching events; called with the cache lock held, with
// events in revision order. A subscriber gets whole revisions: when the
// next one would take it past its backlog it is dropped instead. One
// revision larger than the backlog is let through when nothing is pending.
func (sub *subscriber) offer(evs []Event) {
	if sub.gone.Load() {
		return
	}
	var mine []Event
	for i := range evs {
		if sub.matches(&evs[i]) {
			mine = append(mine, evs[i])
		}
	}
	if len(mine) == 0 {
		return
	}
	sub.mu.Lock()
	for len(mine) > 0 {
		n := 1
		for n < len(mine) && mine[n].Revision == mine[0].Revision {
			n++
		}
		if u := sub.undelivered.Load(); u > 0 && u+int64(n) > int64(sub.backlog) {
			// What is queued is still delivered: whole revisions, at most
			// the backlog, then the channel closes.
			sub.gone.Store(true)
			sub.dropped.Inc()
			break
		}
		sub.queue = append(sub.queue, mine[:n]...)
		sub.undelivered.Add(int64(n))
		mine = mine[n:]
	}
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// serve forwards sub's events to its channel until ctx ends, the Store
// closes or the subscriber is dropped.
func (s *Store) serve(ctx context.Context, sub *subscriber) {
	defer close(sub.out)
	defer func() {
		s.cache.mu.Lock()
		delete(s.cache.subs, sub)
		s.cache.mu.Unlock()
	}()
	for {
		select {
		case <-sub.wake:
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		}
		for {
			sub.mu.Lock()
			batch := sub.queue
			sub.queue = nil
			gone := sub.gone.Load()
			sub.mu.Unlock()
			if len(batch) == 0 {
				if gone {
					return
				}
				break
			}
			for _, ev := range batch {
				select {
				case sub.out <- ev:
					sub.undelivered.Add(-1)
				case <-ctx.Done():
					return
				case <-s.ctx.Done():
					return
				}
			}
		}
	}
}

// publish appends events to the ring, which takes over their references,
// and offers them to every subscriber. c.mu must be held for writing.
func (c *cache) publish(evs []ringEvent) {
	if len(evs) == 0 {
		return
	}
	if len(c.subs) > 0 {
		// Built once for every subscriber, if one wants it.
		out := make([]Event, 0, len(evs))
		for i := range evs {
			kind, tenant := c.kindTenant(&evs[i])
			for sub := range c.subs {
				if sub.wantsOf(kind, tenant) {
					out = append(out, c.event(&evs[i]))
					break
				}
			}
		}
		for sub := range c.subs {
			sub.offer(out)
		}
	}
	for i := range evs {
		evs[i].decoded = nil
	}
	c.ring.append(evs, c.release)
}

// replay returns the events of the ring after revision from that sub
// wants. c.mu must be held.
func (c *cache) replay(from int64, sub *subscriber) []Event {
	var evs []Event
	c.ring.since(from, func(ev *ringEvent) {
		if sub.wantsOf(c.kindTenant(ev)) {
			evs = append(evs, c.event(ev))
		}
	})
	return evs
}

// closeSubscribers marks the cache closed; serve goroutines end on the
// Store's context.
func (c *cache) closeSubscribers() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// ring holds the most recent events in revision order. Every event after
// revision start is in it.
type ring struct {
	buf   []ringEvent
	head  int // oldest
	n     int
	start int64
}

func (r *ring) at(i int) *ringEvent { return &r.buf[(r.head+i)%len(r.buf)] }

// append adds evs; release is called with each event that leaves the ring.
func (r *ring) append(evs []ringEvent, release func(*ringEvent)) {
	for i := range evs {
		ev := &evs[i]
		if len(r.buf) == 0 {
			r.start = ev.rev
			release(ev)
			continue
		}
		if r.n < len(r.buf) {
			*r.at(r.n) = *ev
			r.n++
			continue
		}
		oldest := &r.buf[r.head]
		r.start = oldest.rev
		release(oldest)
		*oldest = *ev
		r.head = (r.head + 1) % len(r.buf)
	}
}

// since calls visit with the events after rev, in order.
func (r *ring) since(rev int64, visit func(*ringEvent)) {
	i := sort.Search(r.n, func(i int) bool { return r.at(i).rev > rev })
	for ; i < r.n; i++ {
		visit(r.at(i))
	}
}
