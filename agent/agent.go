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
	"github.com/weftnet/weft/rendezvous"
	"github.com/weftnet/weft/wire"
)

// Agent is one host's agent. Build it with New, run it with Start, stop it
// with Close.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	driver   datapath.Driver
	key      wire.Key // cfg.Key prepared for sealing datagrams
	seq      *wire.Sequence
	counters counters

	hostID    atomic.Uint32
	connected atomic.Bool
	// lastStreamErr is the error text that ended the latest config-stream
	// session or attempt (LastStreamError).
	lastStreamErr atomic.Value
	version       atomic.Uint64 // mirror of view.Version for lock-free reads

	// setMu serializes programming: Driver.Set, adopting a view, persisting.
	// Lock order: setMu, then mu, then learnMu.
	setMu sync.Mutex

	mu        sync.Mutex // guards the fields below
	view      *state.View
	desired   *datapath.Desired // translated from view (nil before any view)
	applied   uint64            // version of the view last programmed without error
	persisted uint64            // version of the view on disk
	setErr    error             // error of the last Set (nil after a success)
	replicas  []string          // controller replicas, from Config then Welcome
	reports   []EndpointReport  // latest endpoint reports, for the reporter loop

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

	mux     *UDPMux                        // the UDP socket: Config.UDPMux or a private one
	ownMux  bool                           // the mux is private: Close closes it
	hbEntry *hbEntry                       // in mux's heartbeat schedule; mux.hbMu
	joined  bool                           // a member of mux; mux.mu
	udpDst  atomic.Pointer[netip.AddrPort] // the controller's UDP address

	lifeMu     sync.Mutex
	started    bool
	closed     bool
	runCtx     context.Context // of the loops and timers, set by Start
	cancel     context.CancelFunc
	stopOnce   sync.Once
	wg         sync.WaitGroup
	startTime  time.Time
	collectors []prometheus.Collector
}

// New validates cfg and returns an agent that is not started.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Key = slices.Clone(cfg.Key)
	cfg.StreamAddrs = slices.Clone(cfg.StreamAddrs)
	key, err := wire.NewKey(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
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
		key:        key,
		seq:        wire.NewSequence(time.Now()),
		view:       state.New(cfg.Host),
		replicas:   cfg.StreamAddrs,
		cache:      cache,
		sweepEvery: min(max(cfg.LearnTTL/8, 10*time.Millisecond), time.Second),
	}
	if cfg.Reporter != nil {
		a.reportKick = make(signal, 1)
	}
	a.learnTimer = &funcTimer{f: a.learnTick, wg: &a.wg}
	a.reconcileKick = &funcTimer{f: a.reconcileTick, wg: &a.wg, kickDelay: func() time.Duration {
		return a.cfg.Backoff.Delay(int(a.reconAttempt.Load()), nil)
	}}
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
// reporter. The agent runs until ctx is done or Close is called. Start
// fails only for local problems (the UDP socket); a controller that cannot
// be reached is retried in the background.
func (a *Agent) Start(ctx context.Context) (err error) {
	a.lifeMu.Lock()
	defer a.lifeMu.Unlock()
	switch {
	case a.closed:
		return errors.New("agent: start after close")
	case a.started:
		return errors.New("agent: already started")
	}
	a.startTime = time.Now()

	dst, err := net.ResolveUDPAddr("udp", a.cfg.UDPAddr)
	if err != nil {
		return fmt.Errorf("agent: resolve controller UDP address %q: %w", a.cfg.UDPAddr, err)
	}
	dstAP := dst.AddrPort()
	a.setUDPTarget(dstAP)
	runCtx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	if a.mux = a.cfg.UDPMux; a.mux == nil {
		if a.mux, err = a.privateMux(runCtx, dstAP); err != nil {
			return err
		}
		a.ownMux = true
		defer func() {
			if err != nil {
				a.mux.Close()
			}
		}()
	}

	a.loadPersisted(ctx)

	a.runCtx, a.cancel = runCtx, cancel
	a.started = true
	a.mux.join(a)
	a.startLearning(runCtx)
	a.reconcileKick.reset(a.cfg.ReconcileInterval)
	context.AfterFunc(runCtx, a.shutdown)
	a.wg.Go(func() { a.streamLoop(runCtx) })
	if a.cfg.Reporter != nil {
		a.wg.Go(func() { a.reportLoop(runCtx) })
	}
	if a.log.Enabled(ctx, slog.LevelInfo) {
		a.log.Info("agent started", "controllers", a.cfg.StreamAddrs, "udp", a.udpTarget().String(),
			"local_udp", a.mux.LocalAddr().String(), "view_version", a.version.Load())
	}
	return nil
}

// privateMux binds the agent's own UDP socket, for datagrams to dst, and
// runs a mux of one member on it.
func (a *Agent) privateMux(ctx context.Context, dst netip.AddrPort) (*UDPMux, error) {
	network := "udp4"
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		network = "udp6"
	}
	var laddr *net.UDPAddr
	if a.cfg.UDPListen != "" {
		var err error
		if laddr, err = net.ResolveUDPAddr(network, a.cfg.UDPListen); err != nil {
			return nil, fmt.Errorf("agent: resolve UDP listen address %q: %w", a.cfg.UDPListen, err)
		}
	}
	conn, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("agent: bind UDP socket: %w", err)
	}
	// One member: no batching, heartbeats exactly on time.
	m, err := newUDPMux(UDPMuxConfig{MaxHeartbeatBatch: 1, Logger: a.log})
	if err == nil {
		m.owner = a
		err = m.start(ctx, conn)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return m, nil
}

// shutdown stops what runs outside the agent's goroutines: the timers, the
// membership of the mux (a private mux is closed), the driver's miss
// callback. It runs once, when the run context ends; Close waits for it.
func (a *Agent) shutdown() {
	a.stopOnce.Do(func() {
		a.learnTimer.stop()
		a.reconcileKick.stop()
		if n, ok := a.driver.(missNotifier); ok {
			n.NotifyMisses(nil)
		}
		a.mux.leave(a)
		if a.ownMux {
			a.mux.Close()
		}
	})
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
		a.hostID.Store(v.HostID) // before Start joins the mux
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
	a.lifeMu.Lock()
	defer a.lifeMu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	if a.started {
		a.cancel()
		a.shutdown()
		a.wg.Wait()
	}
	for _, c := range a.collectors {
		a.cfg.Registerer.Unregister(c)
	}
	a.connected.Store(false)
	a.log.Info("agent stopped", "view_version", a.version.Load())
	return nil
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

// LocalUDPAddr returns the address of the agent's UDP socket (after Start).
func (a *Agent) LocalUDPAddr() net.Addr {
	a.lifeMu.Lock()
	defer a.lifeMu.Unlock()
	if a.mux == nil {
		return nil
	}
	return a.mux.LocalAddr()
}

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
	if a.mux != nil { // set by Start before any loop runs
		a.mux.setID(a, old, id)
	}
	return true
}

// setUDPTarget changes where heartbeats and lookups go.
func (a *Agent) setUDPTarget(ap netip.AddrPort) { a.udpDst.Store(&ap) }
