package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
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
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/replicas"
	"github.com/weftnet/weft/controller/southbound/stream"
	"github.com/weftnet/weft/controller/southbound/udp"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/rendezvous"
)

type southboundConfig struct {
	Listen, Advertise string
	Keys              *hostkey.Keyring
	Client            *clientv3.Client
	Store             *store.Store
	Registry          *registry.Registry
	Logger            *slog.Logger
	Registerer        prometheus.Registerer
	// Flows takes the agents' flow reports and times their Acks.
	Flows *flowagg.Aggregator
}

// southbound is everything that talks to agents: the compiler and the
// config stream (TCP), heartbeats, liveness and lookups (UDP) and replica
// membership. It uses the host keys (the Keyring) of the controller.
type southbound struct {
	addr string

	keys     *hostkey.Keyring
	compiler *compile.Compiler
	sink     *stream.RegistrySink
	stream   *stream.Server
	lns      []net.Listener // config stream, one port (SO_REUSEPORT)
	table    *liveness.Table
	locator  *udp.Locator
	udp      *udp.Server
	members  *replicas.Membership
	// advertise is this replica's southbound address, as agents and the
	// other replicas know it.
	advertise string
	// tracking is set once the liveness table tracks hosts.
	tracking atomic.Bool

	serveDone chan struct{}
	life      lifecycle.Group
}

// startSouthbound starts the southbound parts in dependency order; on
// error it closes what it started.
func startSouthbound(ctx context.Context, cfg southboundConfig) (sb *southbound, err error) {
	sb = &southbound{serveDone: make(chan struct{})}
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
	sb.sink, err = stream.NewRegistrySink(stream.RegistrySinkConfig{
		Registry: cfg.Registry, Replica: advertise, Logger: cfg.Logger, Registerer: cfg.Registerer,
	})
	if err != nil {
		return nil, err
	}
	if err = sb.sink.Start(ctx); err != nil {
		return nil, err
	}
	sb.members, err = replicas.New(replicas.Config{
		Store: cfg.Store, Prefix: cfg.Store.Key("replicas/"), Self: advertise, Logger: cfg.Logger,
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
	if cfg.Registerer != nil {
		lost := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "weft_replicas_leases_lost_total",
			Help: "Times this replica lost its membership lease (etcd unreachable or overloaded past the TTL) and registered again.",
		}, func() float64 { return float64(sb.members.LeasesLost()) })
		if err = cfg.Registerer.Register(lost); err != nil {
			return nil, fmt.Errorf("register replica metrics: %w", err)
		}
	}
	sb.stream, err = stream.New(stream.Config{
		Compiler: sb.compiler,
		Keys:     sb.keys.ByName,
		HostID:   sb.keys.HostID,
		Status:   cfg.Flows.WrapStatus(sb.sink),
		Logger:   cfg.Logger, Registerer: cfg.Registerer,
		Replicas: sb.members.Members, MaxSessions: sessionLimit(),
	})
	if err != nil {
		return nil, err
	}
	var serving sync.WaitGroup
	for _, ln := range sb.lns {
		serving.Go(func() { _ = sb.stream.Serve(context.Background(), ln) })
	}
	go func() {
		defer close(sb.serveDone)
		serving.Wait()
	}()

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
		Addr: net.JoinHostPort(host, port), Keys: sb.keys, Liveness: sb.table, Locator: sb.locator, Flows: cfg.Flows,
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
	if sb.stream != nil {
		errs = append(errs, sb.stream.Close())
		<-sb.serveDone
	} else {
		for _, ln := range sb.lns {
			errs = append(errs, ln.Close())
		}
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

// speaksFor reports whether this replica reports h's liveness when it
// stops hearing from it: if h's agent last connected here; else, if the
// replica it connected to is no longer a member (or none), if this replica
// comes first in h's rendezvous order over the members, where h's agent
// goes first too.
func (sb *southbound) speaksFor(h *apiv1.Host) bool {
	r := h.Status.Replica
	if r == sb.advertise {
		return true
	}
	members := sb.members.Members()
	if r != "" && slices.Contains(members, r) {
		return false
	}
	return rendezvous.Top(h.Metadata.Name, members) == sb.advertise
}

// trackGrace is how long a host that a replica starts to track (at start,
// or when the replica set changes) has to reach it before its silence
// counts: agents reconnect with a random backoff of up to 30 s
// (agent.DefaultBackoffMax). Without it, a controller restart, or a
// replica that takes a while to load a million endpoints, declares every
// host Dead and rewrites all their endpoints (Lost) before the agents are
// back.
const trackGrace = 45 * time.Second

// trackHosts declares to the liveness table every known host this replica
// speaks for, and drops the others it does not hear from: when a replica
// joins, the hosts that now rank it first leave the others.
func (sb *southbound) trackHosts(st *store.Store) {
	// Tracking starts trackGrace ahead: a host counts as silent only from
	// then on.
	now := sb.table.Now() + int64(trackGrace)
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
