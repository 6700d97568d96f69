package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Txn is one caller's conditional write: if every compare holds, Ops run,
// otherwise Else runs (read ops there tell the caller why it failed).
type Txn struct {
	Compares []clientv3.Cmp
	// Ops are puts and deletes; each key at most once.
	Ops []clientv3.Op
	// Else are read ops run when a compare fails.
	Else []clientv3.Op
}

// Result is the outcome of one committed Txn.
type Result struct {
	// Succeeded reports whether the compares held and Ops were applied.
	Succeeded bool
	// Revision is the etcd revision after the batch: the revision of the
	// Txn's writes when it succeeded. Pass it to WaitForRevision to read
	// your writes from the cache.
	Revision int64
	// Then holds the responses of Ops when Succeeded.
	Then []*etcdserverpb.ResponseOp
	// Else holds the responses of Else ops when not Succeeded.
	Else []*etcdserverpb.ResponseOp
}

// Commit applies t atomically. Concurrent Commits are grouped into one etcd
// txn holding one nested txn per caller (group commit); each nested txn
// succeeds or fails on its own, and a Txn writing a key that an earlier,
// still uncommitted Txn writes is committed after it. Commit returns once
// etcd has acknowledged (made durable) the batch, with the batch's error if
// etcd failed it; or with ctx's error when ctx ends first (if the Txn was
// already sent its outcome is then unknown); or with ErrClosed.
func (s *Store) Commit(ctx context.Context, t Txn) (Result, error) {
	if !s.started.Load() {
		return Result{}, ErrNotStarted
	}
	start := time.Now()
	p, err := s.batcher.newPending(t)
	if err != nil {
		return Result{}, err
	}
	if err := s.batcher.enqueue(p); err != nil {
		return Result{}, err
	}
	select {
	case <-p.done:
		s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
		return p.res, p.err
	case <-ctx.Done():
		if s.batcher.cancel(p) {
			return Result{}, fmt.Errorf("commit: not sent: %w", ctx.Err())
		}
		select {
		case <-p.done:
			return p.res, p.err
		default:
			return Result{}, fmt.Errorf("commit: sent, outcome unknown: %w", ctx.Err())
		}
	}
}

type pendingState int

const (
	queued pendingState = iota
	sent
	cancelled
)

// pending is one Txn waiting for its batch.
type pending struct {
	txn  Txn
	keys []string // keys written
	// reads and readRanges are what the Txn's compares read. etcd evaluates
	// every compare of a batch before it applies any op, so a Txn must not
	// share a batch with one that writes what it compares (read-write
	// conflict): it would not see that write.
	reads      []string
	readRanges []keyRange
	barrier    bool // writes a key range: committed alone, in order
	size       int  // estimated request bytes
	state      pendingState
	done       chan struct{}
	res        Result
	err        error
}

// batcher queues Txns and forms batches; batchWorkers send them.
type batcher struct {
	maxOps, maxBytes int
	wake             chan struct{}

	mu              sync.Mutex
	queue           []*pending
	inflight        int
	inflightKeys    map[string]struct{}
	barrierInFlight bool
	closed          bool
}

func newBatcher(maxOps, maxBytes int) *batcher {
	return &batcher{maxOps: maxOps, maxBytes: maxBytes, wake: make(chan struct{}, 1), inflightKeys: map[string]struct{}{}}
}

// newPending checks t and collects the keys it writes.
func (b *batcher) newPending(t Txn) (*pending, error) {
	if len(t.Compares) > b.maxOps || len(t.Ops) > b.maxOps || len(t.Else) > b.maxOps {
		return nil, fmt.Errorf("commit: %d compares, %d ops, %d else ops: more than %d: %w",
			len(t.Compares), len(t.Ops), len(t.Else), b.maxOps, ErrInvalidTxn)
	}
	p := &pending{txn: t, done: make(chan struct{})}
	seen := map[string]struct{}{}
	for _, op := range t.Ops {
		if (op.IsPut() || op.IsDelete()) && len(op.RangeBytes()) == 0 {
			k := string(op.KeyBytes())
			if _, dup := seen[k]; dup {
				return nil, fmt.Errorf("commit: key %q written twice: %w", k, ErrInvalidTxn)
			}
			seen[k] = struct{}{}
		}
	}
	p.collect(t.Ops)
	p.collect(t.Else)
	for _, c := range t.Compares {
		p.size += len(c.KeyBytes()) + len(c.RangeEnd) + 16
		if len(c.RangeEnd) == 0 {
			p.reads = append(p.reads, string(c.KeyBytes()))
		} else {
			p.readRanges = append(p.readRanges, keyRange{start: string(c.KeyBytes()), end: string(c.RangeEnd)})
		}
	}
	return p, nil
}

// keyRange is [start, end) in etcd's sense: end "\x00" means every key >= start.
type keyRange struct{ start, end string }

func (r keyRange) contains(k string) bool {
	return k >= r.start && (r.end == "\x00" || k < r.end)
}

// batchReads is what the compares of a forming batch read.
type batchReads struct {
	keys   map[string]struct{}
	ranges []keyRange
}

func (br *batchReads) add(p *pending) {
	if len(p.reads) > 0 {
		br.keys = addAll(br.keys, p.reads)
	}
	br.ranges = append(br.ranges, p.readRanges...)
}

// writesRead reports whether any of keys is read by the batch's compares.
func (br *batchReads) writesRead(keys []string) bool {
	if hitsAny(keys, br.keys) {
		return true
	}
	for _, r := range br.ranges {
		for _, k := range keys {
			if r.contains(k) {
				return true
			}
		}
	}
	return false
}

// readsWritten reports whether p's compares read a key the batch writes.
func readsWritten(p *pending, written map[string]struct{}) bool {
	if hitsAny(p.reads, written) {
		return true
	}
	for _, r := range p.readRanges {
		for k := range written {
			if r.contains(k) {
				return true
			}
		}
	}
	return false
}

// collect adds the writes of ops (recursively) to p.
func (p *pending) collect(ops []clientv3.Op) {
	for _, op := range ops {
		p.size += len(op.KeyBytes()) + len(op.RangeBytes()) + len(op.ValueBytes()) + 16
		switch {
		case op.IsPut() || (op.IsDelete() && len(op.RangeBytes()) == 0):
			p.keys = append(p.keys, string(op.KeyBytes()))
		case op.IsDelete():
			p.barrier = true
		case op.IsTxn():
			cmps, thenOps, elseOps := op.Txn()
			for _, c := range cmps {
				p.size += len(c.KeyBytes()) + len(c.RangeEnd) + 16
			}
			p.collect(thenOps)
			p.collect(elseOps)
		}
	}
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *batcher) enqueue(p *pending) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("commit: %w", ErrClosed)
	}
	b.queue = append(b.queue, p)
	b.mu.Unlock()
	b.signal()
	return nil
}

// cancel withdraws p if it has not been sent.
func (b *batcher) cancel(p *pending) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.state != queued {
		return false
	}
	p.state = cancelled
	return true
}

// close fails every queued Txn with ErrClosed; workers stop on the Store's context.
func (b *batcher) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, p := range b.queue {
		if p.state == queued {
			p.state = cancelled
			p.err = fmt.Errorf("commit: %w", ErrClosed)
			close(p.done)
		}
	}
	b.queue = nil
}

// next blocks until it can form a batch, or ctx ends (nil).
func (b *batcher) next(ctx context.Context) []*pending {
	for {
		b.mu.Lock()
		batch := b.form()
		more := len(b.queue) > 0
		b.mu.Unlock()
		if len(batch) > 0 {
			if more {
				b.signal() // another worker may form the next batch
			}
			return batch
		}
		select {
		case <-b.wake:
		case <-ctx.Done():
			return nil
		}
	}
}

// form takes the next batch off the queue, in queue order: up to maxOps
// Txns, about maxBytes, none writing a key that a Txn in flight, in the
// batch or skipped before it writes (etcd rejects a txn writing a key
// twice, and a skipped Txn must commit before later ones on its keys).
// b.mu must be held.
func (b *batcher) form() []*pending {
	if b.closed || b.barrierInFlight || len(b.queue) == 0 {
		return nil
	}
	scanLimit := 4 * b.maxOps // bounds the work when the head is blocked
	var (
		batch         []*pending
		inBatch, skip map[string]struct{}
		reads         batchReads
		size          int
		rest          []*pending
		i             int
	)
	for ; i < len(b.queue); i++ {
		p := b.queue[i]
		if p.state == cancelled {
			continue
		}
		if len(batch) == b.maxOps || len(batch) > 0 && size+p.size > b.maxBytes || i >= scanLimit {
			break
		}
		if p.barrier {
			if len(batch) == 0 && len(rest) == 0 && b.inflight == 0 {
				batch = append(batch, p)
				i++
			}
			break
		}
		if hitsAny(p.keys, inBatch, skip, b.inflightKeys) || reads.writesRead(p.keys) || readsWritten(p, inBatch) {
			skip = addAll(skip, p.keys)
			rest = append(rest, p)
			continue
		}
		batch = append(batch, p)
		inBatch = addAll(inBatch, p.keys)
		reads.add(p)
		size += p.size
	}
	b.queue = append(rest, b.queue[i:]...)
	if len(batch) == 0 {
		return nil
	}
	b.inflight++
	for _, p := range batch {
		p.state = sent
		for _, k := range p.keys {
			b.inflightKeys[k] = struct{}{}
		}
	}
	b.barrierInFlight = batch[0].barrier
	return batch
}

// finish releases a sent batch's keys.
func (b *batcher) finish(batch []*pending) {
	b.mu.Lock()
	b.inflight--
	for _, p := range batch {
		for _, k := range p.keys {
			delete(b.inflightKeys, k)
		}
	}
	if batch[0].barrier {
		b.barrierInFlight = false
	}
	b.mu.Unlock()
	b.signal()
}

func hitsAny(keys []string, sets ...map[string]struct{}) bool {
	for _, k := range keys {
		for _, s := range sets {
			if _, ok := s[k]; ok {
				return true
			}
		}
	}
	return false
}

func addAll(s map[string]struct{}, keys []string) map[string]struct{} {
	if s == nil {
		s = make(map[string]struct{}, len(keys))
	}
	for _, k := range keys {
		s[k] = struct{}{}
	}
	return s
}

// batchWorker sends batches until the Store closes.
func (s *Store) batchWorker() {
	for {
		batch := s.batcher.next(s.ctx)
		if batch == nil {
			return
		}
		s.sendBatch(batch)
		s.batcher.finish(batch)
	}
}

// sendBatch commits a batch as one etcd txn and hands every caller its result.
func (s *Store) sendBatch(batch []*pending) {
	if h := s.hooks.beforeSend; h != nil {
		h(len(batch))
	}
	ops := make([]clientv3.Op, len(batch))
	for i, p := range batch {
		ops[i] = clientv3.OpTxn(p.txn.Compares, p.txn.Ops, p.txn.Else)
	}
	start := time.Now()
	resp, err := s.kv.Txn(s.ctx).Then(ops...).Commit()
	s.metrics.batchSent(len(batch), time.Since(start))
	if err != nil && len(batch) > 1 && isRequestError(err) {
		// One Txn can make etcd reject the whole batch (too large, too many
		// ops): send them one by one so that only the culprit fails.
		s.log.Warn("etcd rejected a batch, sending its txns one by one", "txns", len(batch), "err", err)
		for _, p := range batch {
			s.sendBatch([]*pending{p})
		}
		return
	}
	if err != nil {
		if s.ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		err = fmt.Errorf("commit batch of %d txns: %w", len(batch), err)
		for _, p := range batch {
			p.err = err
			close(p.done)
		}
		return
	}
	rev := resp.Header.Revision
	wrote := false
	for i, p := range batch {
		r := resp.Responses[i].GetResponseTxn()
		p.res = Result{Succeeded: r.Succeeded, Revision: rev}
		if r.Succeeded {
			p.res.Then = r.Responses
			wrote = wrote || len(p.txn.Ops) > 0
		} else {
			p.res.Else = r.Responses
		}
		close(p.done)
	}
	if wrote {
		s.metrics.committed(rev)
	}
}

// isRequestError reports an error etcd gives for the request itself, not
// for the state of the cluster.
func isRequestError(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.InvalidArgument
	}
	return status.Code(err) == codes.ResourceExhausted // over the client's send limit
}
