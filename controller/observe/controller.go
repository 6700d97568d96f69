package observe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/observe/capture"
)

// Writer writes statuses and deletes expired objects: the registry.
type Writer interface {
	PatchStatus(ctx context.Context, ref apiv1.Ref, patch func(next apiv1.Object) bool) (apiv1.Object, error)
	Delete(ctx context.Context, ref apiv1.Ref, opts ...apiv1.WriteOption) (apiv1.Object, error)
}

// Authenticator tells who a request is (nil: no credential); the REST
// API's (auth.Authenticator) plugs in here.
type Authenticator interface {
	Authenticate(r *http.Request) (*auth.Identity, error)
}

// Config configures a Controller.
type Config struct {
	// Store is the replica's started store; Writer its registry.
	Store  *store.Store
	Writer Writer
	// Dir holds the captures' packets this replica collects.
	Dir string
	// Advertise is this replica's API address as other replicas reach it
	// ("http://host:port"): a capture's collector.
	Advertise string
	// Compiler compiles capture filters.
	Compiler capture.Compiler
	// Authenticator authenticates the handler's requests; Insecure lets
	// requests without a credential act as cluster admins, as the REST
	// API does. With neither, every request is refused.
	Authenticator Authenticator
	Insecure      bool
	// Transport reaches other replicas (default http.DefaultTransport).
	Transport http.RoundTripper
	Logger    *slog.Logger
	// Tick is how often time-based transitions are looked for (default
	// 100ms); ProbeTimeout how long a released probe may take to reach its
	// end (default 3s); ArmTimeout how long hosts may take to arm (default
	// 10s).
	Tick, ProbeTimeout, ArmTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Tick == 0 {
		c.Tick = 100 * time.Millisecond
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = 3 * time.Second
	}
	if c.ArmTimeout == 0 {
		c.ArmTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport
	}
}

// Validate reports missing settings.
func (c *Config) Validate() error {
	if c.Store == nil || c.Writer == nil || c.Dir == "" {
		return errors.New("observe: Store, Writer and Dir are required")
	}
	return nil
}

// Controller runs traces and captures on one replica. See the package
// documentation.
type Controller struct {
	cfg  Config
	st   *store.Store
	w    Writer
	log  *slog.Logger
	life lifecycle.Group
	wake chan struct{}

	mu       sync.Mutex
	sessions map[string]*session // captures this replica collects, by key
}

// New checks the configuration.
func New(cfg Config) (*Controller, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, st: cfg.Store, w: cfg.Writer, log: cfg.Logger.With("subsystem", "observe"),
		wake: make(chan struct{}, 1), sessions: map[string]*session{}}, nil
}

// Start follows the Trace and Capture objects and runs until Close.
func (c *Controller) Start(context.Context) error {
	if _, err := c.life.Start(); err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	for _, kind := range []string{apiv1.KindTrace, apiv1.KindCapture} {
		c.life.Go(func(ctx context.Context) {
			_ = store.Follow(ctx, c.st, store.FollowConfig{Name: "observe-" + kind, Kind: kind, Logger: c.log,
				OnEvents: func([]store.Event) { c.poke() }, OnReset: func([]apiv1.Object, int64) { c.poke() }})
		})
	}
	c.life.Go(c.run)
	return nil
}

// Close stops the controller, ends the captures it collects (their files
// stay until the objects expire) and waits.
func (c *Controller) Close() error {
	return c.life.Close(func() error {
		c.mu.Lock()
		ss := make([]*session, 0, len(c.sessions))
		for _, s := range c.sessions {
			ss = append(ss, s)
		}
		c.mu.Unlock()
		for _, s := range ss {
			s.end("")
		}
		return nil
	})
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Controller) run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		c.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
	}
}

// reconcile moves every Trace and Capture on: a new one is resolved or
// compiled, a running one that timed out completes, an expired one is
// deleted with its data. Every write is a status patch that re-checks
// the phase it starts from, so replicas racing do each step once.
func (c *Controller) reconcile(ctx context.Context) {
	now := c.cfg.Now()
	for _, o := range c.st.List(apiv1.KindTrace, "") {
		tr := o.(*apiv1.Trace)
		if c.expired(ctx, tr, now) {
			continue
		}
		switch tr.Status.Phase {
		case "":
			c.patch(ctx, tr, func(s *apiv1.TraceStatus) bool {
				if s.Phase != "" {
					return false
				}
				*s = c.resolve(tr, now)
				return true
			})
		case apiv1.PhaseArming:
			if created, err := apiv1.ParseTime(tr.Metadata.CreationTimestamp); err == nil && now.Sub(created) > c.cfg.ArmTimeout {
				c.patch(ctx, tr, func(s *apiv1.TraceStatus) bool {
					if s.Phase != apiv1.PhaseArming {
						return false
					}
					s.Phase, s.Message = apiv1.PhaseFailed, fmt.Sprintf("hosts %v did not get ready in %s (armed: %v)", s.Hosts, c.cfg.ArmTimeout, s.Armed)
					return true
				})
			}
		case apiv1.PhaseRunning:
			if until, ok := c.traceDeadline(tr); ok && now.After(until) {
				c.patch(ctx, tr, func(s *apiv1.TraceStatus) bool {
					if s.Phase != apiv1.PhaseRunning {
						return false
					}
					timeOut(s)
					return true
				})
			}
		}
	}
	for _, o := range c.st.List(apiv1.KindCapture, "") {
		cp := o.(*apiv1.Capture)
		if c.expired(ctx, cp, now) {
			continue
		}
		switch cp.Status.Phase {
		case "":
			c.startCapture(ctx, cp, now)
		case apiv1.PhaseRunning:
			c.tickCapture(ctx, cp, now)
		}
	}
	c.sweepSessions(ctx)
}

// expired deletes o once its TTL has passed, and reports whether it did
// or should have.
func (c *Controller) expired(ctx context.Context, o apiv1.Object, now time.Time) bool {
	ttl, _ := apiv1.TTLOf(o)
	created, err := apiv1.ParseTime(o.GetObjectMeta().CreationTimestamp)
	if err != nil || now.Sub(created) < ttl {
		return false
	}
	if _, err := c.w.Delete(ctx, apiv1.RefOf(o)); err != nil && !apiv1.IsNotFound(err) {
		c.log.Warn("delete expired object", "ref", apiv1.RefOf(o).String(), "err", err)
	} else {
		c.log.Info("expired object deleted", "ref", apiv1.RefOf(o).String())
	}
	return true
}

// patch writes a Trace's status through f (which reports whether it
// changed anything), on the stored object of the same UID.
func (c *Controller) patch(ctx context.Context, tr *apiv1.Trace, f func(*apiv1.TraceStatus) bool) {
	_, err := c.w.PatchStatus(ctx, apiv1.RefOf(tr), func(next apiv1.Object) bool {
		n := next.(*apiv1.Trace)
		if n.Metadata.UID != tr.Metadata.UID {
			return false
		}
		s := cloneTraceStatus(n.Status)
		if !f(&s) {
			return false
		}
		n.Status = s
		return true
	})
	if err != nil && !apiv1.IsNotFound(err) {
		c.log.Warn("write trace status", "ref", apiv1.RefOf(tr).String(), "err", err)
	}
}

func cloneTraceStatus(s apiv1.TraceStatus) apiv1.TraceStatus {
	s.Hops, s.Hosts, s.Armed = slices.Clone(s.Hops), slices.Clone(s.Hosts), slices.Clone(s.Armed)
	return s
}

// random16 returns a random number in 1..65535.
func random16() uint16 {
	var b [2]byte
	for {
		_, _ = rand.Read(b[:])
		if n := binary.BigEndian.Uint16(b[:]); n != 0 {
			return n
		}
	}
}

// captureFile is where this replica keeps a capture's packets.
func (c *Controller) captureFile(cp *apiv1.Capture) string {
	return filepath.Join(c.cfg.Dir, cp.Metadata.Tenant, cp.Metadata.Name+"-"+cp.Metadata.UID+".pcapng")
}
