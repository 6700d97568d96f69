// Package controller assembles one weft controller replica: the etcd
// store (embedded single node, or an external cluster), the registry that
// validates, allocates and commits objects, and the REST API.
//
// The packages below it hold the parts: store (etcd, group commit, cache
// and index), alloc (VNIs and addresses), registry (the write path),
// intent (AppIntents compiled into the objects they own) and rest (the
// HTTP API).
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/controller/intent"
	"github.com/weftnet/weft/controller/observe"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/web"
)

// Config configures a controller replica.
type Config struct {
	// DataDir holds the embedded etcd's data; ignored with EtcdEndpoints.
	DataDir string
	// EtcdEndpoints selects an external etcd cluster instead of the embedded one.
	EtcdEndpoints []string
	// APIListen is the REST API's address (default 127.0.0.1:7443; port 0 picks one).
	APIListen string
	// AgentListen is the southbound address: the config stream on TCP and
	// heartbeats and lookups on UDP, both on this host:port (default
	// 127.0.0.1:7444; port 0 picks a free TCP port and uses the same
	// number for UDP). "off" disables the southbound (API-only replica).
	AgentListen string
	// AdvertiseAgent is the southbound address agents are told to use
	// (default: the address AgentListen bound).
	AdvertiseAgent string
	// Logger receives structured logs (default: discard).
	Logger *slog.Logger
	// Version is reported by /version.
	Version string
}

// Validate reports missing or conflicting settings.
func (c *Config) Validate() error {
	if c.DataDir == "" && len(c.EtcdEndpoints) == 0 {
		return errors.New("controller: need a data dir for the embedded etcd or etcd endpoints")
	}
	return nil
}

// Controller is one running replica.
type Controller struct {
	cfg Config
	log *slog.Logger

	reg      *prometheus.Registry
	embedded *store.Embedded
	cli      *clientv3.Client
	store    *store.Store
	registry *registry.Registry
	intents  *intent.Controller
	observe  *observe.Controller
	http     *http.Server
	ln       net.Listener
	south    *southbound

	served   chan struct{} // closed when the API server stops
	serveErr error
	life     lifecycle.Group
}

// New checks the configuration; Start brings the replica up.
func New(cfg Config) (*Controller, error) {
	if cfg.APIListen == "" {
		cfg.APIListen = "127.0.0.1:7443"
	}
	if cfg.AgentListen == "" {
		cfg.AgentListen = "127.0.0.1:7444"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("subsystem", "controller"), served: make(chan struct{})}, nil
}

// Start starts etcd (if embedded), loads the store's cache, seeds the
// allocators and begins serving the API. On error everything started is
// stopped again.
func (c *Controller) Start(ctx context.Context) (err error) {
	if _, err := c.life.Start(); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	c.reg = prometheus.NewRegistry()
	c.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	endpoints := c.cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		if err = os.MkdirAll(c.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		c.embedded, err = store.StartEmbedded(ctx, store.EmbedConfig{Dir: c.cfg.DataDir, Logger: c.cfg.Logger})
		if err != nil {
			return fmt.Errorf("start embedded etcd in %s: %w", c.cfg.DataDir, err)
		}
		c.cli, err = c.embedded.Client()
	} else {
		c.cli, err = clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	}
	if err != nil {
		return fmt.Errorf("connect to etcd: %w", err)
	}
	scfg := store.Config{Client: c.cli, Logger: c.cfg.Logger, Registerer: c.reg}
	if c.embedded != nil {
		// The embedded server accepts far larger transactions than a stock
		// etcd (store.EmbeddedMaxTxnOps): let group commit use them.
		scfg.MaxBatchOps = 1024
		scfg.MaxBatchBytes = 8 << 20
	}
	c.store, err = store.New(scfg)
	if err != nil {
		return fmt.Errorf("new store: %w", err)
	}
	if err = c.store.Start(ctx); err != nil {
		return fmt.Errorf("start store: %w", err)
	}
	c.registry, err = registry.New(registry.Config{Store: c.store, Logger: c.cfg.Logger})
	if err != nil {
		return fmt.Errorf("new registry: %w", err)
	}
	if err = c.registry.Start(ctx); err != nil {
		return fmt.Errorf("start registry: %w", err)
	}
	// Every replica runs it: its writes are idempotent and compare-guarded.
	c.intents, err = intent.New(intent.Config{Store: c.store, Writer: c.registry, Logger: c.cfg.Logger})
	if err != nil {
		return fmt.Errorf("new intent controller: %w", err)
	}
	if err = c.intents.Start(ctx); err != nil {
		return fmt.Errorf("start intent controller: %w", err)
	}
	if c.cfg.AgentListen != "off" {
		c.south, err = startSouthbound(ctx, southboundConfig{
			Listen: c.cfg.AgentListen, Advertise: c.cfg.AdvertiseAgent,
			Client: c.cli, Store: c.store, Registry: c.registry, Logger: c.cfg.Logger, Registerer: c.reg,
		})
		if err != nil {
			return err
		}
	}
	h, err := rest.NewHandler(rest.Config{
		Backend: c.registry, Logger: c.cfg.Logger, Registerer: c.reg, Gatherer: c.reg, Version: c.cfg.Version,
	})
	if err != nil {
		return fmt.Errorf("new API handler: %w", err)
	}
	ui, err := web.New(web.Config{API: h, Hosts: c.registry, Logger: c.cfg.Logger})
	if err != nil {
		return fmt.Errorf("new web UI: %w", err)
	}
	c.ln, err = net.Listen("tcp", c.cfg.APIListen)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w", c.cfg.APIListen, err)
	}
	if err = c.startObserve(ctx); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	c.observe.Mount(mux)
	mux.Handle(web.Prefix, ui)
	mux.Handle("GET /{$}", http.RedirectHandler(web.Prefix, http.StatusFound))
	c.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	c.life.Go(func(context.Context) {
		c.serveErr = c.http.Serve(c.ln)
		close(c.served)
	})
	c.log.Info("controller started", "api", c.APIAddr(), "agents", c.AgentAddr(), "etcd", endpoints, "embedded", c.embedded != nil)
	return nil
}

// APIAddr returns the address the API listens on.
func (c *Controller) APIAddr() string {
	if c.ln == nil {
		return ""
	}
	return c.ln.Addr().String()
}

// Done is closed when the API server stops serving (after Close, or on its
// own); Err then tells why.
func (c *Controller) Done() <-chan struct{} { return c.served }

// Err returns why the API server stopped; valid after Done is closed.
func (c *Controller) Err() error { return c.serveErr }

// Close stops serving and releases everything, in reverse order of Start.
// It is idempotent.
func (c *Controller) Close() error { return c.life.Close(c.stop) }

func (c *Controller) stop() error {
	var errs []error
	if c.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.http.Shutdown(ctx); err != nil {
			_ = c.http.Close()
		}
		cancel()
		<-c.served
	}
	if c.south != nil {
		errs = append(errs, c.south.Close())
	}
	if c.observe != nil {
		errs = append(errs, c.observe.Close())
	}
	if c.intents != nil {
		errs = append(errs, c.intents.Close())
	}
	if c.registry != nil {
		errs = append(errs, c.registry.Close())
	}
	if c.store != nil {
		errs = append(errs, c.store.Close())
	}
	if c.cli != nil {
		errs = append(errs, c.cli.Close())
	}
	if c.embedded != nil {
		errs = append(errs, c.embedded.Close())
	}
	return errors.Join(errs...)
}

// AgentAddr returns the southbound address agents connect to (TCP stream;
// UDP on the same port), or "" when the southbound is off.
func (c *Controller) AgentAddr() string {
	if c.south == nil {
		return ""
	}
	return c.south.addr
}

// ClusterSecret returns the secret that host keys are derived from (see
// package hostkey); tools that provision hosts (demo, sim) need it.
func (c *Controller) ClusterSecret() []byte {
	if c.south == nil {
		return nil
	}
	return append([]byte(nil), c.south.secret...)
}

// EtcdClient returns the replica's etcd client (for benchmarks and tools
// that measure etcd itself); valid between Start and Close.
func (c *Controller) EtcdClient() (*clientv3.Client, error) {
	if c.cli == nil {
		return nil, errors.New("controller: not started")
	}
	return c.cli, nil
}

// startObserve starts traces and captures (package observe); this
// replica collects captures in DataDir/captures, or a temporary directory
// with an external etcd and no DataDir.
func (c *Controller) startObserve(ctx context.Context) error {
	dir := filepath.Join(c.cfg.DataDir, "captures")
	if c.cfg.DataDir == "" {
		dir = filepath.Join(os.TempDir(), "weft-captures-"+strconv.Itoa(os.Getpid()))
	}
	var err error
	c.observe, err = observe.New(observe.Config{
		Store: c.store, Writer: c.registry, Dir: dir, Advertise: "http://" + c.ln.Addr().String(), Logger: c.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("new observe controller: %w", err)
	}
	if err := c.observe.Start(ctx); err != nil {
		return fmt.Errorf("start observe controller: %w", err)
	}
	return nil
}
