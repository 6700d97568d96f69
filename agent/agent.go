package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/agent/learn"
	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/rendezvous"
	"github.com/weftnet/weft/wire"
)

// Agent is one host's agent. Build it with New, run it with Start, stop it
// with Close.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	driver   datapath.Driver
	dgKey    atomic.Pointer[datagramKey] // of the latest config-stream session; nil before the first
	seq      *wire.Sequence
	counters counters

	hostID    atomic.Uint32
	connected atomic.Bool
	// redial cuts the config stream's reconnect backoff short: lookups went
	// unanswered while the stream was down (redialLookups).
	redial signal
	// lastStreamErr is the error text that ended the latest config-stream
	// session or attempt (LastStreamError).
	lastStreamErr atomic.Value
	version       atomic.Uint64 // mirror of view.Version for lock-free reads

	// setMu serializes programming: Driver.Set, adopting a view, persisting.
	// Lock order: setMu, then mu, then learnMu.
	setMu  sync.Mutex
	stream *wire.Conn // the config stream's connection, nil between sessions; setMu
	told   string     // the programming error the controller last heard ("": none); setMu

	mu        sync.Mutex // guards the fields below
	view      *state.View
	desired   *datapath.Desired // translated from view (nil before any view)
	applied   uint64            // version of the view last programmed without error
	persisted uint64            // version of the view on disk
	setErr    error             // error of the last Set (nil after a success)
	replicas  []string          // controller replicas, from Config then Welcome
	reports   []EndpointReport  // latest endpoint reports, for the reporter loop
	tracer    *tracer           // traces and captures (nil: the driver or reporter cannot, or none yet)
	// canObserve: the driver and reporter can observe (set by Start);
	// with ObserveOnDemand the tracer waits for a view with a trace or
	// a capture.
	canObserve bool

	learnMu    sync.Mutex
	cache      *learn.Cache
	flushAt    time.Time // when queued lookups leave (zero: none queued); learnMu
	sweepAt    time.Time // when the cache is swept next (zero: not scheduled); learnMu
	sweepEvery time.Duration
	learnTimer *funcTimer // fires at the earliest of flushAt, sweepAt, the next retry

	// reconcileKick asks for a retry of a failed Set soon; it fires the
	// reconciler every ReconcileInterval otherwise.
	reconcileKick *funcTimer
	reconAttempt  atomic.Int64 // reconcile failures in a row
	reportKick    signal

	member Membership                     // in Config.Transport; set by Start
	udpDst atomic.Pointer[netip.AddrPort] // the controller's UDP address

	// life guards Start and Close; lifeMu makes a Close that comes while
	// Start runs wait for it.
	life       lifecycle.Group
	lifeMu     sync.Mutex
	wg         sync.WaitGroup // runs of the timers
	startTime  time.Time
	collectors []prometheus.Collector
	obs        *observer // traffic counting and flow export
}

// New validates cfg and returns an agent that is not started.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Key = slices.Clone(cfg.Key)
	cfg.StreamAddrs = slices.Clone(cfg.StreamAddrs)
	cache, err := learn.New(learn.Config{
		TTL: cfg.LearnTTL, NegativeTTL: cfg.NegativeTTL, RetryTimeout: cfg.LookupTimeout, MaxTries: cfg.LookupTries,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{
		cfg:        cfg,
		log:        cfg.Logger.With("subsystem", "agent", "host", cfg.Host),
		driver:     cfg.Driver,
		seq:        wire.NewSequence(time.Now()),
		view:       state.New(cfg.Host),
		replicas:   cfg.StreamAddrs,
		redial:     make(signal, 1),
		cache:      cache,
		sweepEvery: min(max(cfg.LearnTTL/8, 10*time.Millisecond), time.Second),
	}
	if cfg.Reporter != nil {
		a.reportKick = make(signal, 1)
	}
	a.learnTimer = &funcTimer{f: a.learnTick, wg: &a.wg}
	a.reconcileKick = &funcTimer{f: a.reconcileTick, wg: &a.wg, kickDelay: func() time.Duration {
		return a.cfg.Backoff.Delay(int(a.reconAttempt.Load()), a.cfg.BackoffRand)
	}}
	a.obs = a.newObserver()
	if cfg.Registerer != nil {
		if err := a.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	return a, nil
}

// Start loads the persisted view and programs it (so that a restarted agent
// forwards even if no controller answers), binds the UDP socket and starts
// the agent's loops: config stream, heartbeats, learning, reconciler and
// reporter. ctx bounds only that startup (programming the persisted view);
// the agent runs until Close. Start fails only for local problems (the UDP
// socket); a controller that cannot be reached is retried in the
// background.
func (a *Agent) Start(ctx context.Context) error {
	if _, err := a.life.Start(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.lifeMu.Lock()
	defer a.lifeMu.Unlock()
	if a.life.Closed() {
		return fmt.Errorf("agent: %w", lifecycle.ErrClosed)
	}
	a.startTime = time.Now()
	dst, err := net.ResolveUDPAddr("udp", a.cfg.UDPAddr)
	if err != nil {
		return fmt.Errorf("agent: resolve controller UDP address %q: %w", a.cfg.UDPAddr, err)
	}
	dstAP := dst.AddrPort()
	a.setUDPTarget(dstAP)
	if a.cfg.Transport == nil {
		s, err := listenUDP(dstAP, a.cfg.UDPListen, a.log)
		if err != nil {
			return err
		}
		a.cfg.Transport = s
	}

	a.loadPersisted(ctx)
	a.startObserver()

	if err := a.startFlows(ctx); err != nil {
		return err // Close leaves the socket
	}
	a.member = a.cfg.Transport.Join(a)
	a.startLearning()
	a.reconcileKick.reset(a.cfg.ReconcileInterval)
	a.life.Go(a.streamLoop)
	if a.cfg.Reporter != nil {
		a.life.Go(a.reportLoop)
	}
	if a.log.Enabled(ctx, slog.LevelInfo) {
		a.log.Info("agent started", "controllers", a.cfg.StreamAddrs, "udp", a.udpTarget().String(),
			"local_udp", a.cfg.Transport.LocalAddr().String(), "view_version", a.version.Load())
	}
	return nil
}

// shutdown stops what runs outside the agent's goroutines: the timers (and
// waits for a run in progress), the membership of the transport (the
// agent's own socket is closed), the driver's miss callback.
func (a *Agent) shutdown() error {
	a.lifeMu.Lock()
	defer a.lifeMu.Unlock()
	a.learnTimer.stop()
	a.reconcileKick.stop()
	a.obs.stop()
	if a.member != nil {
		if n, ok := a.driver.(missNotifier); ok {
			n.NotifyMisses(nil)
		}
		a.member.Leave()
	} else if s, ok := a.cfg.Transport.(*socket); ok {
		s.Leave() // Start failed after binding the agent's own socket
	}
	a.wg.Wait()
	a.obs.close()
	return nil
}

// loadPersisted adopts and programs the view saved in StateDir, if any.
func (a *Agent) loadPersisted(ctx context.Context) {
	if a.cfg.StateDir == "" {
		return
	}
	v, err := state.Load(a.cfg.StateDir)
	switch {
	case errors.Is(err, state.ErrNoView):
		a.log.Info("no persisted view, waiting for the controller", "state_dir", a.cfg.StateDir)
		return
	case err != nil:
		a.log.Error("persisted view unreadable, starting empty", "state_dir", a.cfg.StateDir, "err", err)
		return
	case v.Host != a.cfg.Host:
		a.log.Error("persisted view belongs to another host, starting empty", "state_dir", a.cfg.StateDir, "view_host", v.Host)
		return
	}
	d, err := translate(v, &a.cfg)
	if err != nil {
		a.log.Error("persisted view invalid, starting empty", "version", v.Version, "err", err)
		return
	}
	if v.HostID != 0 {
		a.hostID.Store(v.HostID) // before Start joins the transport
	}
	a.setMu.Lock()
	defer a.setMu.Unlock()
	setErr := a.set(ctx, d)
	a.adopt(v, d, setErr)
	a.mu.Lock()
	a.persisted = v.Version
	a.mu.Unlock()
	if setErr != nil {
		a.log.Error("programming the persisted view failed; the reconciler retries", "version", v.Version, "err", setErr)
		kick(a.reconcileKick)
		return
	}
	a.log.Info("programmed the persisted view (headless until a controller answers)", "version", v.Version,
		"endpoints", len(d.Endpoints), "vpcs", len(d.VPCs))
}

// Close stops every loop and waits for them. The data plane stays
// programmed (headless forwarding); the driver is not closed. Close is
// idempotent.
func (a *Agent) Close() error {
	return a.life.Close(a.shutdown, func() error {
		for _, c := range a.collectors {
			a.cfg.Registerer.Unregister(c)
		}
		a.log.Info("agent stopped", "view_version", a.version.Load())
		return nil
	})
}

// ViewVersion returns the version of the view the agent holds (0: none).
func (a *Agent) ViewVersion() uint64 { return a.version.Load() }

// AppliedVersion returns the version of the view last programmed into the
// data plane without error.
func (a *Agent) AppliedVersion() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied
}

// Connected reports whether a config stream is up (welcomed).
func (a *Agent) Connected() bool { return a.connected.Load() }

// HostID returns the host's UDP-channel ID (0 until a Welcome or the
// persisted view gives it).
func (a *Agent) HostID() uint32 { return a.hostID.Load() }

// Replicas returns the controller replicas the agent knows, in its
// connection order.
func (a *Agent) Replicas() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return rendezvous.Order(a.cfg.Host, a.replicas)
}

// LocalUDPAddr returns the address the agent's datagrams leave from (once
// Start has returned).
func (a *Agent) LocalUDPAddr() net.Addr { return a.cfg.Transport.LocalAddr() }

// Stats returns a snapshot of the agent's counters.
func (a *Agent) Stats() Stats { return a.counters.snapshot() }

// sleep waits for d or ctx; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// udpTarget returns where heartbeats and lookups go.
func (a *Agent) udpTarget() netip.AddrPort { return *a.udpDst.Load() }

// setHostID records the host's UDP-channel ID; it reports whether it
// changed.
func (a *Agent) setHostID(id uint32) bool {
	old := a.hostID.Swap(id)
	if old == id {
		return false
	}
	if a.member != nil { // set by Start before any loop runs
		a.member.SetHostID(old, id)
	}
	return true
}

// setUDPTarget changes where heartbeats and lookups go.
func (a *Agent) setUDPTarget(ap netip.AddrPort) { a.udpDst.Store(&ap) }
