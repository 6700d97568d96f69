package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apiv1 "github.com/weftnet/weft/api/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/controller/compile"
	"github.com/weftnet/weft/controller/flowagg"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/controller/intent"
	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/controller/quorum"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/replicas"
	"github.com/weftnet/weft/controller/southbound/stream"
	"github.com/weftnet/weft/controller/southbound/udp"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/rendezvous"
	"github.com/weftnet/weft/wire"
)

type southboundConfig struct {
	Listen, Advertise string
	Keys              *hostkey.Keyring
	Client            *clientv3.Client
	Store             *store.Store
	Registry          *registry.Registry
	Logger            *slog.Logger
	Registerer        prometheus.Registerer
	// Quorum, if set, fences the agents off while the replica cannot write
	// (see southbound.fence).
	Quorum *quorum.Guard
	// TrackGrace replaces trackGrace (tests).
	TrackGrace time.Duration
	// Flows takes the agents' flow reports and times their Acks.
	Flows *flowagg.Aggregator
}

// southbound is everything that talks to agents: the compiler and the
// config stream (TCP), heartbeats, liveness and lookups (UDP) and replica
// membership. It uses the host keys (the Keyring) of the controller.
type southbound struct {
	addr string
	log  *slog.Logger

	keys     *hostkey.Keyring
	compiler *compile.Compiler
	sink     *stream.RegistrySink
	lns      []net.Listener // config stream, one port (SO_REUSEPORT), until the first stream server takes them
	// streamCfg configures the config stream's server; streamMu guards
	// the running one (nil while fenced).
	streamCfg stream.Config
	streamMu  sync.Mutex
	stream    *runningStream
	table     *liveness.Table
	locator   *udp.Locator
	udp       *udp.Server
	members   *replicas.Membership
	// advertise is this replica's southbound address, as agents and the
	// other replicas know it.
	advertise string
	// tracking is set once the liveness table tracks hosts.
	tracking   atomic.Bool
	trackGrace time.Duration // 0: trackGrace

	life lifecycle.Group
}

// runningStream is one config-stream server and the goroutines serving its
// listeners.
type runningStream struct {
	srv  *stream.Server
	done chan struct{} // closed when every listener's Serve returned
}

// startSouthbound starts the southbound parts in dependency order; on
// error it closes what it started.
func startSouthbound(ctx context.Context, cfg southboundConfig) (sb *southbound, err error) {
	sb = &southbound{log: cfg.Logger.With("subsystem", "southbound"), trackGrace: cfg.TrackGrace}
	started := sb // a failing return sets sb to nil before this runs
	defer func() {
		if err != nil {
			_ = started.Close()
			sb = nil
		}
	}()
	sb.keys = cfg.Keys
	// Every replica of one etcd cluster numbers views alike: the epoch
	// comes from the cluster ID, the rest of a version is a revision.
	probe, err := cfg.Client.Get(ctx, cfg.Store.Key("ca/cert"), clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("read the etcd cluster ID: %w", err)
	}
	sb.compiler, err = compile.New(compile.Config{
		Store: cfg.Store, Logger: cfg.Logger, Registerer: cfg.Registerer,
		Epoch: compile.EpochFromClusterID(probe.Header.ClusterId),
		// An endpoint without a class of its own uses the class of the
		// AppIntent that selects it (the one rule, shared with the intent
		// controller).
		ClassOf: intent.ClassOf,
	})
	if err != nil {
		return nil, err
	}
	if err = sb.compiler.Start(ctx); err != nil {
		return nil, fmt.Errorf("start compiler: %w", err)
	}
	sb.lns, err = listenStream(ctx, cfg.Listen, streamListeners)
	if err != nil {
		return nil, err
	}
	sb.addr = sb.lns[0].Addr().String()
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = sb.addr
	}
	sb.advertise = advertise
	sb.members, err = replicas.New(replicas.Config{
		Store: cfg.Store, Prefix: cfg.Store.Key("replicas/"), OwnerPrefix: cfg.Store.Key("owners/"), Self: advertise, Logger: cfg.Logger,
		OnChange: func([]string) {
			if sb.tracking.Load() {
				sb.trackHosts(cfg.Store)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if err = sb.members.Start(ctx); err != nil {
		return nil, err
	}
	sb.sink, err = stream.NewRegistrySink(stream.RegistrySinkConfig{
		Registry: cfg.Registry, Replica: advertise, Owns: sb.speaksFor, Logger: cfg.Logger, Registerer: cfg.Registerer,
	})
	if err != nil {
		return nil, err
	}
	if err = sb.sink.Start(ctx); err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		lost := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "weft_replicas_leases_lost_total",
			Help: "Times this replica lost its membership lease (etcd unreachable or overloaded past the TTL) and registered again.",
		}, func() float64 { return float64(sb.members.LeasesLost()) })
		if err = cfg.Registerer.Register(lost); err != nil {
			return nil, fmt.Errorf("register replica metrics: %w", err)
		}
	}
	sb.streamCfg = stream.Config{
		Compiler: sb.compiler,
		Keys:     sb.keys.ByName,
		HostID:   sb.keys.HostID,
		Status:   cfg.Flows.WrapStatus(sb.sink),
		Logger:   cfg.Logger, Registerer: reregisterer{cfg.Registerer},
		Replicas: sb.members.Members, MaxSessions: sessionLimit(),
	}
	if err = sb.serveStream(sb.lns); err != nil {
		return nil, err
	}
	sb.lns = nil // the stream server owns them
	// A host whose key is deleted or replaced loses its sessions at once.
	sb.keys.OnChange(func(hosts []string) {
		sb.streamMu.Lock()
		defer sb.streamMu.Unlock()
		if sb.stream != nil {
			sb.stream.srv.KeysChanged(hosts)
		}
	})
	if cfg.Quorum != nil {
		sb.life.Go(func(ctx context.Context) { sb.fence(ctx, cfg.Quorum) })
	}

	livenessSink, err := liveness.NewRegistrySink(liveness.RegistrySinkConfig{
		Store: cfg.Store, Registry: cfg.Registry, Logger: cfg.Logger,
		SpeaksFor: sb.speaksFor,
		Forget:    func(id uint32) { sb.table.Forget(id) },
		// Liveness goes out with the stream's status fields: one write
		// per host coming back, not one per writer. (The table closes
		// before the sink, so its last flush is written.)
		Hosts:      sb.sink,
		Registerer: cfg.Registerer,
	})
	if err != nil {
		return nil, err
	}
	sb.table, err = liveness.New(liveness.Config{Sink: livenessSink, Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	if err = sb.table.Start(ctx); err != nil {
		return nil, err
	}
	// Expect a heartbeat from every host this replica speaks for, so that
	// one that died while no controller ran is reported Dead instead of
	// staying as it was; again whenever the replica set changes. Each gets
	// trackGrace first to reconnect.
	sb.trackHosts(cfg.Store)
	sb.tracking.Store(true)
	sb.locator, err = udp.NewLocator(udp.LocatorConfig{Store: cfg.Store, Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	if err = sb.locator.Start(ctx); err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(sb.addr)
	host, _, _ := net.SplitHostPort(cfg.Listen)
	sb.udp, err = udp.New(udp.Config{
		// Datagrams are authenticated with the keys of the hosts' latest
		// sessions with this replica.
		Addr: net.JoinHostPort(host, port), Keys: wire.KeyringFunc(sb.datagramKey), Liveness: sb.table, Locator: sb.locator, Flows: cfg.Flows,
		Logger: cfg.Logger, Registerer: cfg.Registerer,
	})
	if err != nil {
		return nil, err
	}
	if err = sb.udp.Start(ctx); err != nil {
		return nil, fmt.Errorf("udp on port %s: %w", port, err)
	}
	return sb, nil
}

// Close stops everything in reverse order; idempotent.
func (sb *southbound) Close() error { return sb.life.Close(sb.stop) }

// serveStream starts a config-stream server on lns.
func (sb *southbound) serveStream(lns []net.Listener) error {
	srv, err := stream.New(sb.streamCfg)
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return err
	}
	rs := &runningStream{srv: srv, done: make(chan struct{})}
	var serving sync.WaitGroup
	for _, ln := range lns {
		serving.Go(func() { _ = srv.Serve(context.Background(), ln) })
	}
	go func() {
		defer close(rs.done)
		serving.Wait()
	}()
	sb.streamMu.Lock()
	sb.stream = rs
	sb.streamMu.Unlock()
	return nil
}

// datagramKey is the datagram key of a host's latest session with the
// running config-stream server; none while the stream is fenced.
func (sb *southbound) datagramKey(hostID uint32) ([]byte, bool) {
	sb.streamMu.Lock()
	defer sb.streamMu.Unlock()
	if sb.stream == nil {
		return nil, false
	}
	return sb.stream.srv.Key(hostID)
}

// closeStream closes the running config-stream server, its listeners and
// sessions, and waits for it. With a reason, the agents are first told to
// move to another replica (stream.Server.Move), which they do at once.
func (sb *southbound) closeStream(ctx context.Context, reason string) error {
	sb.streamMu.Lock()
	rs := sb.stream
	sb.stream = nil
	sb.streamMu.Unlock()
	if rs == nil {
		return nil
	}
	if reason != "" {
		rs.srv.Move(ctx, reason)
	}
	err := rs.srv.Close()
	<-rs.done
	return err
}

// fenceAfter is how long a replica that cannot reach an etcd quorum keeps
// its agents before it fences them off: past a leader election, which the
// quorum guard itself waits out (quorum.DefaultLostAfter).
const fenceAfter = 3 * time.Second

// fence closes the config stream (its sessions and its port) while the
// replica has had no etcd quorum for fenceAfter: its agents cannot learn of
// changes through a replica cut off from etcd, and find a healthy replica
// in their rendezvous order (this one refuses connections meanwhile). They
// are told to move first, so that they do at once rather than after their
// reconnect backoff, which may have grown through earlier faults. It
// serves again, on the same port, once the quorum is back. A replica whose
// etcd is only out of space keeps its agents: their views are still right.
// So does one whose etcd does not answer at all (quorum.ErrUnresponsive):
// a saturated etcd looks like that, and moving every replica's agents at
// once would load it further (a 100,000-host cold start never converged).
// Only a member that answers without a leader proves a cut.
func (sb *southbound) fence(ctx context.Context, g *quorum.Guard) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var lostSince time.Time
	fenced := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := g.Err()
		switch {
		case errors.Is(err, quorum.ErrNoQuorum) && !errors.Is(err, quorum.ErrUnresponsive):
			if lostSince.IsZero() {
				lostSince = time.Now()
			}
			if !fenced && time.Since(lostSince) >= fenceAfter {
				sb.log.Warn("no etcd quorum: closing the config stream so that agents move to a healthy replica", "err", err)
				_ = sb.closeStream(ctx, fmt.Sprintf("this replica lost its etcd quorum: %v", err))
				fenced = true
			}
		case err == nil:
			lostSince = time.Time{}
			if !fenced {
				continue
			}
			lns, lerr := listenStream(ctx, sb.addr, streamListeners)
			if lerr == nil {
				lerr = sb.serveStream(lns)
			}
			if lerr != nil {
				sb.log.Warn("etcd quorum back, but the config stream cannot serve again yet; retrying", "err", lerr)
				continue
			}
			sb.log.Info("etcd quorum back: serving agents again", "addr", sb.addr)
			fenced = false
		}
	}
}

// reregisterer registers a collector in place of one already registered
// under the same descriptors: the config stream's server registers its
// metrics anew each time the replica stops fencing its agents off (its
// counters start again from zero then).
type reregisterer struct{ prometheus.Registerer }

func (r reregisterer) Register(c prometheus.Collector) error {
	if r.Registerer == nil {
		return nil
	}
	err := r.Registerer.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		r.Registerer.Unregister(are.ExistingCollector)
		return r.Registerer.Register(c)
	}
	return err
}

func (r reregisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (sb *southbound) stop() error {
	var errs []error
	closeIf := func(c interface{ Close() error }, ok bool) {
		if ok {
			errs = append(errs, c.Close())
		}
	}
	closeIf(sb.udp, sb.udp != nil)
	closeIf(sb.locator, sb.locator != nil)
	closeIf(sb.table, sb.table != nil)
	sb.keys.OnChange(nil)
	errs = append(errs, sb.closeStream(context.Background(), ""))
	for _, ln := range sb.lns {
		errs = append(errs, ln.Close())
	}
	closeIf(sb.members, sb.members != nil)
	closeIf(sb.sink, sb.sink != nil)
	closeIf(sb.compiler, sb.compiler != nil)
	for i, e := range errs {
		if errors.Is(e, stream.ErrServerClosed) || errors.Is(e, net.ErrClosed) {
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// streamListeners is how many listening sockets share the config stream's
// port. Each has its own accept queue (net.core.somaxconn, 4096 here), so
// a power restore, when every agent connects within a second or two, does
// not overflow one queue: dropped SYNs are retried by the agents' kernels
// only after 1 s, then 3 s.
const streamListeners = 8

// listenStream opens n TCP listeners on addr with SO_REUSEPORT; the kernel
// spreads incoming connections over them.
func listenStream(ctx context.Context, addr string, n int) ([]net.Listener, error) {
	// SO_REUSEPORT would let a second controller started by mistake on the
	// same port share it silently: a plain bind first fails if anybody
	// holds the port (and picks it when addr says port 0).
	probe, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for agents on %s: %w", addr, err)
	}
	addr = probe.Addr().String()
	if err := probe.Close(); err != nil {
		return nil, fmt.Errorf("listen for agents on %s: %w", addr, err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	var lns []net.Listener
	for i := range n {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen for agents on %s (socket %d of %d): %w", addr, i+1, n, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// speaksFor reports whether this replica owns h's liveness, that is,
// reports it Suspect or Dead when it stops hearing from it: if h's agent
// last streamed from this replica; else, if the replica it streamed from
// is neither live nor an owner any more (gone for the owner TTL,
// replicas.DefaultOwnerTTL), if this replica comes first in h's
// rendezvous order over the live members, where h's agent goes first too.
// A host whose agent never connected is nobody's: there is nothing to
// correct. So a replica that starts long before its peers, or outlives
// them, leaves their hosts alone.
func (sb *southbound) speaksFor(h *apiv1.Host) bool {
	switch r := h.Status.Replica; {
	case r == sb.advertise:
		return true
	case r == "" || sb.members.Present(r):
		return false
	}
	return rendezvous.Top(h.Metadata.Name, sb.members.Members()) == sb.advertise
}

// trackGrace is how long a host that a replica starts to track (at start,
// or when the replica set changes) has to reach it before its silence
// counts: agents reconnect with a random backoff of up to 30 s
// (agent.DefaultBackoffMax). Without it, a controller restart, or a
// replica that takes a while to load a million endpoints, declares every
// host Dead and rewrites all their endpoints (Lost) before the agents are
// back.
const trackGrace = 45 * time.Second

// grace is the configured track grace (trackGrace unless a test sets it).
func (sb *southbound) grace() time.Duration { return cmp.Or(sb.trackGrace, trackGrace) }

// trackHosts declares to the liveness table every known host this replica
// speaks for, and drops the others it does not hear from: when a replica
// joins, the hosts that now rank it first leave the others.
func (sb *southbound) trackHosts(st *store.Store) {
	// Tracking starts trackGrace ahead: a host counts as silent only from
	// then on.
	now := sb.table.Now() + int64(sb.grace())
	for _, o := range st.List(apiv1.KindHost, "") {
		h := o.(*apiv1.Host)
		switch id := h.Status.HostID; {
		case id == 0:
		case sb.speaksFor(h):
			sb.table.Track(id, now)
		case sb.table.State(id) != liveness.Alive:
			sb.table.Forget(id)
		}
	}
}

// sessionLimit is the most config-stream sessions a replica takes: its
// open-file limit less 1,024 files for etcd, the listeners, UDP and the API
// (0, no limit, if the limit is unknown or small).
func sessionLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur <= 4096 || r.Cur > 1<<30 {
		return 0
	}
	return int(r.Cur) - 1024
}
