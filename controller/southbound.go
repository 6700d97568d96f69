package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	apiv1 "github.com/weftnet/weft/api/v1"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/controller/compile"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/replicas"
	"github.com/weftnet/weft/controller/southbound/stream"
	"github.com/weftnet/weft/controller/southbound/udp"
	"github.com/weftnet/weft/controller/store"
)

type southboundConfig struct {
	Listen, Advertise string
	Client            *clientv3.Client
	Store             *store.Store
	Registry          *registry.Registry
	Logger            *slog.Logger
	Registerer        prometheus.Registerer
}

// southbound is everything that talks to agents: the compiler and the
// config stream (TCP), heartbeats, liveness and lookups (UDP), host keys
// and replica membership.
type southbound struct {
	addr   string
	secret []byte

	keys     *hostkey.Keyring
	compiler *compile.Compiler
	sink     *stream.RegistrySink
	stream   *stream.Server
	ln       net.Listener
	table    *liveness.Table
	locator  *udp.Locator
	udp      *udp.Server
	members  *replicas.Membership

	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// startSouthbound starts the southbound parts in dependency order; on
// error it closes what it started.
func startSouthbound(ctx context.Context, cfg southboundConfig) (sb *southbound, err error) {
	sb = &southbound{serveDone: make(chan struct{})}
	defer func() {
		if err != nil {
			_ = sb.Close()
			sb = nil
		}
	}()
	sb.secret, err = hostkey.LoadOrCreateSecret(ctx, cfg.Client, cfg.Store.Key("secrets/cluster"))
	if err != nil {
		return nil, err
	}
	sb.keys = hostkey.NewKeyring(sb.secret, cfg.Store, cfg.Logger)
	if err = sb.keys.Start(ctx); err != nil {
		return nil, err
	}
	// Every replica of one etcd cluster numbers views alike: the epoch
	// comes from the cluster ID, the rest of a version is a revision.
	probe, err := cfg.Client.Get(ctx, cfg.Store.Key("secrets/cluster"), clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("read the etcd cluster ID: %w", err)
	}
	sb.compiler, err = compile.New(compile.Config{
		Store: cfg.Store, Logger: cfg.Logger, Registerer: cfg.Registerer,
		Epoch: compile.EpochFromClusterID(probe.Header.ClusterId),
	})
	if err != nil {
		return nil, err
	}
	if err = sb.compiler.Start(ctx); err != nil {
		return nil, fmt.Errorf("start compiler: %w", err)
	}
	sb.sink, err = stream.NewRegistrySink(stream.RegistrySinkConfig{Registry: cfg.Registry, Logger: cfg.Logger, Registerer: cfg.Registerer})
	if err != nil {
		return nil, err
	}
	if err = sb.sink.Start(); err != nil {
		return nil, err
	}
	sb.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for agents on %s: %w", cfg.Listen, err)
	}
	sb.addr = sb.ln.Addr().String()
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = sb.addr
	}
	sb.members, err = replicas.New(replicas.Config{Client: cfg.Client, Prefix: cfg.Store.Key("replicas/"), Self: advertise, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err = sb.members.Start(ctx); err != nil {
		return nil, err
	}
	sb.stream, err = stream.New(stream.Config{
		Compiler: sb.compiler,
		Keys:     func(host string) ([]byte, bool) { return sb.keys.ByName(host), true },
		HostID:   sb.keys.HostID,
		Status:   sb.sink,
		Logger:   cfg.Logger, Registerer: cfg.Registerer,
		Replicas: sb.members.Members,
	})
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(sb.serveDone)
		_ = sb.stream.Serve(context.Background(), sb.ln)
	}()

	livenessSink, err := liveness.NewRegistrySink(liveness.RegistrySinkConfig{Store: cfg.Store, Registry: cfg.Registry, Logger: cfg.Logger})
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
	// A lone replica expects every known host to heartbeat to it: one that
	// died while no controller ran is then reported Dead instead of staying
	// as it was. With several replicas each host heartbeats to one of them,
	// so a replica tracks only the hosts it hears from.
	if m := sb.members.Members(); len(m) == 1 && m[0] == advertise {
		now := sb.table.Now()
		for _, o := range cfg.Store.List(apiv1.KindHost, "") {
			if id := o.(*apiv1.Host).Status.HostID; id != 0 {
				sb.table.Track(id, now)
			}
		}
	}
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
		Addr: net.JoinHostPort(host, port), Keys: sb.keys, Liveness: sb.table, Locator: sb.locator,
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
func (sb *southbound) Close() error {
	sb.closeOnce.Do(func() {
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
		} else if sb.ln != nil {
			errs = append(errs, sb.ln.Close())
		}
		closeIf(sb.members, sb.members != nil)
		closeIf(sb.sink, sb.sink != nil)
		closeIf(sb.compiler, sb.compiler != nil)
		closeIf(sb.keys, sb.keys != nil)
		for i, e := range errs {
			if errors.Is(e, stream.ErrServerClosed) || errors.Is(e, net.ErrClosed) {
				errs[i] = nil
			}
		}
		sb.closeErr = errors.Join(errs...)
	})
	return sb.closeErr
}
