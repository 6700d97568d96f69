package compile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// Errors of the compiler.
var (
	// ErrNotStarted is returned by Delta before Start has compiled every
	// view: an empty snapshot would wipe the agent's configuration.
	ErrNotStarted = errors.New("compile: not started")
	// ErrClosed is returned by calls on a closed Compiler.
	ErrClosed = errors.New("compile: closed")
)

// DefaultTombstoneHorizon is the default Config.TombstoneHorizon.
const DefaultTombstoneHorizon = 4096

// adoptBatch bounds the views compiled together on first use (they are
// built in parallel).
const adoptBatch = 4096

// Config configures a Compiler.
type Config struct {
	// Store is the started store whose cache the views are compiled from (required).
	Store *store.Store
	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the compiler's metrics; nil means not registered.
	Registerer prometheus.Registerer
	// TombstoneHorizon is how many versions of a host's view keep the
	// tombstones of deleted resources, and the most tombstones a view
	// keeps (default DefaultTombstoneHorizon). An agent further behind
	// gets a snapshot.
	TombstoneHorizon int
	// Epoch goes in the high bits of every version, 1..MaxEpoch. Every
	// replica following the same etcd cluster must use the same one
	// (EpochFromClusterID) so that their versions, which are etcd
	// revisions, compare. 0 picks a random one (a compiler alone).
	Epoch uint32
	// Linger is how long a view nobody subscribes to is kept after its last
	// use (default DefaultLinger): an agent that reconnects within it
	// resumes with a true delta; later, with an empty delta if its view
	// hash still matches, else a snapshot.
	Linger time.Duration
	// ClassOf, if set, names the QoS class an endpoint uses ("" for none)
	// in place of its spec.qosClass: the controller sets the AppIntent
	// rule (intent.ClassOf), under which an endpoint that names no class
	// uses the class of an AppIntent that selects it. It may depend only
	// on the endpoint, its subnet's VPC and its tenant's AppIntents (an
	// AppIntent change recomputes the hosts of the endpoints in its VPC
	// that its old or new selector matches), must only read l, and is
	// called by parallel builds.
	ClassOf func(l apiv1.Lookup, ep *apiv1.Endpoint) string
}

// DefaultLinger is the default Config.Linger.
const DefaultLinger = 2 * time.Minute

// Validate reports a missing or impossible setting.
func (c *Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("Store is required"))
	}
	if c.TombstoneHorizon < 0 {
		errs = append(errs, fmt.Errorf("TombstoneHorizon %d is negative", c.TombstoneHorizon))
	}
	if c.Linger < 0 {
		errs = append(errs, fmt.Errorf("Linger %v is negative", c.Linger))
	}
	if c.Epoch > MaxEpoch {
		errs = append(errs, fmt.Errorf("Epoch %d above %d", c.Epoch, MaxEpoch))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("compile config: %w", err)
	}
	return nil
}

// Compiler compiles the desired state into one view per host and keeps the
// views current, incrementally. See the package documentation.
type Compiler struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	m     *metrics
	epoch uint32

	mu    sync.RWMutex
	hosts map[string]*hostView // compiled views, and views waiting to be
	// adopt receives hosts whose views must be compiled (by run).
	adopt chan string

	// runMu is held while store events are applied, views adopted or
	// swept; it guards the reverse indexes below and the contents of
	// the VPC indexes (see vpcIndex).
	runMu       sync.Mutex
	dirty       map[string]struct{} // hosts an event batch touched
	deps        map[string]deps
	vpcHosts    map[tn]map[string]struct{}
	policyHosts map[tn]map[string]struct{}
	qosHosts    map[tn]map[string]struct{}

	// idx holds the VPC indexes of the VPCs compiled views hold.
	idxMu sync.Mutex
	idx   map[tn]*vpcIndex
	// tenantPolicies, during a buildAll, holds the policies of each tenant
	// an index was made for, by VPC: a cold start makes the index of every
	// VPC, and listing the tenant's policies for each (a tenant's
	// policies, its VPCs times over) dominated the builds.
	tenantPolicies map[string]map[string][]*apiv1.SecurityPolicy

	// vpcCache holds encoded VPC resources, shared by every view.
	vpcMu    sync.Mutex
	vpcCache map[tn]wire.Resource
	// workers is the number of parallel builds of buildAll.
	workers int

	revMu sync.Mutex
	rev   int64         // store revision of the last event applied
	revCh chan struct{} // closed and replaced when rev advances

	ready chan struct{} // closed once Start has run
	life  lifecycle.Group
	ctx   context.Context // the lifetime: ends at Close

	// onRecompute, if set (tests), is called after every host recompute.
	onRecompute func(host string)
}

// New returns a Compiler; call Start to compile the views.
func New(cfg Config) (*Compiler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TombstoneHorizon == 0 {
		cfg.TombstoneHorizon = DefaultTombstoneHorizon
	}
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	epoch := cfg.Epoch
	if epoch == 0 {
		var err error
		if epoch, err = randomEpoch(); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Compiler{
		cfg:         cfg,
		st:          cfg.Store,
		log:         cfg.Logger.With("subsystem", "compile"),
		m:           m,
		epoch:       epoch,
		hosts:       map[string]*hostView{},
		adopt:       make(chan string, adoptBatch),
		dirty:       map[string]struct{}{},
		deps:        map[string]deps{},
		vpcHosts:    map[tn]map[string]struct{}{},
		policyHosts: map[tn]map[string]struct{}{},
		qosHosts:    map[tn]map[string]struct{}{},
		idx:         map[tn]*vpcIndex{},
		vpcCache:    map[tn]wire.Resource{},
		workers:     runtime.GOMAXPROCS(0),
		revCh:       make(chan struct{}),
		ready:       make(chan struct{}),
	}
	c.ctx = c.life.Context()
	return c, nil
}

// Start records the store revision the views will be compiled at, then
// follows the store's events until Close. Views are compiled when first
// asked for (see the package documentation).
func (c *Compiler) Start(context.Context) error {
	if _, err := c.life.Start(); err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	rev := c.st.Revision()
	c.setRev(rev)
	c.log.Info("compiler following the store", "revision", rev, "epoch", c.epoch)
	c.life.Go(func(ctx context.Context) {
		_ = store.Follow(ctx, c.st, store.FollowConfig{Name: "compile", From: rev,
			OnEvents: c.apply, OnReset: c.reset, Logger: c.log})
	})
	c.life.Go(c.run)
	close(c.ready)
	return nil
}

// Close stops following the store and waits for the compiler's
// goroutines. It is idempotent.
func (c *Compiler) Close() error { return c.life.Close() }

// Ready is closed once Start has run; until then Delta fails with
// ErrNotStarted.
func (c *Compiler) Ready() <-chan struct{} { return c.ready }

// Epoch returns the epoch carried in the high bits of every version this
// compiler hands out (wire.Welcome.Epoch).
func (c *Compiler) Epoch() uint64 { return uint64(c.epoch) }

// Delta returns what moves an agent holding version from of host's view to
// the current version: every resource changed after from and every delete
// after from, coalesced into one delta however many changes there were. It
// is a snapshot (Snapshot set, FromVersion 0, every resource, no deletes)
// when from is 0, from another epoch, from the future, or older than the
// history the view keeps. If from is current the delta is empty
// (FromVersion == ToVersion). Upserts and Deletes are sorted by key; the
// resources' Data is shared and must not be modified. ViewHash is the hash
// of the whole view at ToVersion. The first call for a host compiles its
// view.
func (c *Compiler) Delta(host string, from uint64) (wire.Delta, error) {
	return c.Resume(context.Background(), host, from, nil)
}

// resumeWait bounds how long Resume waits for this compiler to catch up
// with the revision of a version another replica made.
const resumeWait = 2 * time.Second

// Resume is Delta for an agent that connects holding version from, whose
// resources hash to hash (wire.ViewHash; nil if unknown). A version made by
// another replica at a revision this compiler has not applied yet is
// waited for (a short while). When the view has no history back to from
// but the hashes match, the answer is an empty delta to the current
// version instead of a snapshot; when from is newer than the view's last
// change and the hashes differ, a snapshot.
func (c *Compiler) Resume(ctx context.Context, host string, from uint64, hash []byte) (wire.Delta, error) {
	select {
	case <-c.ready:
	default:
		return wire.Delta{}, ErrNotStarted
	}
	if EpochOf(from) == c.epoch && int64(from&counterMask) > c.Revision() {
		wctx, cancel := context.WithTimeout(ctx, resumeWait)
		_ = c.WaitForRevision(wctx, int64(from&counterMask)) // still behind: a snapshot
		cancel()
	}
	hv, err := c.compiled(ctx, host)
	if err != nil {
		return wire.Delta{}, err
	}
	return hv.delta(from, hash, c.epoch, makeVersion(c.epoch, uint64(c.Revision()))), nil
}

// Version returns the current version of host's view, compiling it first
// if needed (0 if the compiler is closed meanwhile).
func (c *Compiler) Version(host string) uint64 {
	select {
	case <-c.ready:
	default:
		return c.viewFor(host).version()
	}
	hv, err := c.compiled(context.Background(), host)
	if err != nil {
		return 0
	}
	return hv.version()
}

// Subscribe returns a channel that receives a value (non-blocking, buffer
// of one) whenever host's view changes, and a func that cancels the
// subscription. The host need not exist yet. A view is kept while someone
// subscribes to it, and for Config.Linger after.
func (c *Compiler) Subscribe(host string) (notify <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	ask := false
	hv := c.viewFor(host, func(hv *hostView) {
		hv.subs[ch] = struct{}{}
		hv.idleSince = time.Time{}
		if !hv.requested {
			hv.requested, ask = true, true
		}
	})
	if ask {
		// Compile the view now if the queue has room; else the next
		// Delta or Version asks again.
		select {
		case c.adopt <- host:
		default:
			c.unask(hv)
		}
	}
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			hv.mu.Lock()
			delete(hv.subs, ch)
			if len(hv.subs) == 0 {
				hv.idleSince = time.Now()
			}
			hv.mu.Unlock()
		})
	}
}

// compiled returns host's view once the compiler has built it.
func (c *Compiler) compiled(ctx context.Context, host string) (*hostView, error) {
	ask := false
	hv := c.viewFor(host, func(hv *hostView) {
		if !hv.requested {
			hv.requested, ask = true, true
		}
		if len(hv.subs) == 0 {
			hv.idleSince = time.Now()
		}
	})
	select {
	case <-hv.built:
		return hv, nil
	default:
	}
	if ask {
		select {
		case c.adopt <- host:
		case <-ctx.Done():
			c.unask(hv)
			return nil, fmt.Errorf("compile: view of %s: %w", host, ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
	select {
	case <-hv.built:
		return hv, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("compile: view of %s: %w", host, ctx.Err())
	case <-c.ctx.Done():
		return nil, ErrClosed
	}
}

// unask lets the next caller request hv's compilation again.
func (c *Compiler) unask(hv *hostView) {
	hv.mu.Lock()
	hv.requested = false
	hv.mu.Unlock()
}

// viewFor returns host's view, creating an uncompiled one if needed; with
// is run under the view's lock while the view cannot be removed.
func (c *Compiler) viewFor(host string, with ...func(*hostView)) *hostView {
	c.mu.RLock()
	hv := c.hosts[host]
	if hv != nil && len(with) > 0 {
		hv.mu.Lock()
		for _, f := range with {
			f(hv)
		}
		hv.mu.Unlock()
	}
	c.mu.RUnlock()
	if hv != nil {
		return hv
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	hv = c.hosts[host]
	if hv == nil {
		hv = newHostView(makeVersion(c.epoch, 0))
		c.hosts[host] = hv
		c.m.views.Inc()
	}
	hv.mu.Lock()
	for _, f := range with {
		f(hv)
	}
	hv.mu.Unlock()
	return hv
}

func (c *Compiler) viewCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.hosts)
}

// Revision returns the store revision of the last event the compiler has
// applied to the views.
func (c *Compiler) Revision() int64 {
	c.revMu.Lock()
	defer c.revMu.Unlock()
	return c.rev
}

// WaitForRevision blocks until the compiler has applied an event at
// revision rev or later (e.g. the resourceVersion of an object just
// written), ctx ends or the compiler closes. rev must be the revision of a
// write of an object: other writes produce no event the compiler sees.
// With group commit one revision may hold several objects; only the
// revision of a write made alone is a precise barrier.
func (c *Compiler) WaitForRevision(ctx context.Context, rev int64) error {
	for {
		c.revMu.Lock()
		cur, ch := c.rev, c.revCh
		c.revMu.Unlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("compile: wait for revision %d (at %d): %w", rev, cur, ctx.Err())
		case <-c.ctx.Done():
			return fmt.Errorf("compile: wait for revision %d: %w", rev, ErrClosed)
		}
	}
}

func (c *Compiler) setRev(rev int64) {
	c.revMu.Lock()
	defer c.revMu.Unlock()
	if rev > c.rev {
		c.rev = rev
		close(c.revCh)
		c.revCh = make(chan struct{})
	}
}
