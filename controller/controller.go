// Package controller assembles one weft controller replica: the etcd
// store (embedded single node, or an external cluster), the registry that
// validates, allocates and commits objects, the cluster's trust roots and
// credentials, and the REST API (HTTPS with authentication by default).
//
// The packages below it hold the parts: store (etcd, group commit, cache
// and index), alloc (VNIs and addresses), registry (the write path),
// secrets (the cluster key, sealed secrets, the CA), auth (tokens, roles),
// hostkey (agents' keys and enrolment), intent (AppIntents compiled into
// the objects they own) and rest (the HTTP API).
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/flowagg"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/controller/intent"
	"github.com/weftnet/weft/controller/observe"
	"github.com/weftnet/weft/controller/quorum"
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
	// EtcdCACert, EtcdCert and EtcdKey are PEM files for TLS with the
	// external cluster (https:// endpoints): the CA of its members'
	// certificates, and this replica's client certificate and key.
	// EtcdUser and EtcdPassword log in to etcd's authentication.
	EtcdCACert, EtcdCert, EtcdKey string
	EtcdUser, EtcdPassword        string
	// EtcdPeerListen makes the embedded etcd one member of a cluster of
	// several (embedded HA): the member's peer URL (https://IP:PORT),
	// listened on and advertised. Peers and TCP clients use TLS with
	// certificates of an etcd CA derived from the cluster key, so every
	// member needs the same ClusterKeyFile. EtcdName names the member
	// (required with it). EtcdClientListen, if set, also serves etcd
	// clients on TCP (https://IP:PORT): replicas with EtcdEndpoints, weft
	// etcd, weft backup.
	EtcdPeerListen, EtcdName, EtcdClientListen string
	// EtcdInitialCluster lists a new cluster's members, "name=peerURL,..."
	// (etcd's --initial-cluster; default: this member alone). EtcdExisting
	// starts a member added to a running cluster ('weft etcd member add')
	// instead of a new cluster. Both are ignored once DataDir holds the
	// member's data.
	EtcdInitialCluster string
	EtcdExisting       bool
	// EtcdJoin is the client URL (or URLs, comma-separated) of a running
	// member: the replica adds its member to that cluster, as a learner
	// that promotes itself once in sync, and starts it.
	EtcdJoin string
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

	// ClusterKeyFile is the cluster key (package secrets), which seals the
	// secrets kept in etcd (default DATA-DIR/cluster.key); a missing file
	// is created. Every replica of one etcd cluster needs the same file.
	ClusterKeyFile string
	// TLSCertFile and TLSKeyFile are the API's serving certificate; without
	// them the replica issues itself one from the cluster CA for its listen
	// address, loopback, its host name and TLSSANs. ClientCAFile adds CAs
	// (PEM) whose client certificates are accepted besides the cluster
	// CA's.
	TLSCertFile, TLSKeyFile, ClientCAFile string
	TLSSANs                               []string
	// InsecureHTTP serves the API over plain HTTP and lets requests without
	// a credential act as a cluster admin: for labs and tests only (it is
	// logged as a warning). Credentials that are presented are still
	// checked.
	InsecureHTTP bool
	// MetricsListen, if set, also serves /metrics without a credential on
	// this address (keep it on loopback).
	MetricsListen string

	// trackGrace replaces the time hosts get to reach a replica before
	// their silence counts (tests: export_test.go).
	trackGrace time.Duration
}

// Validate reports missing or conflicting settings.
func (c *Config) Validate() error {
	switch {
	case c.DataDir == "" && len(c.EtcdEndpoints) == 0:
		return errors.New("controller: need a data dir for the embedded etcd or etcd endpoints")
	case c.DataDir == "" && c.ClusterKeyFile == "":
		return errors.New("controller: need a cluster key file (the one of the cluster's other replicas) or a data dir to keep one in")
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errors.New("controller: give both a TLS certificate and its key, or neither")
	case c.InsecureHTTP && (c.TLSCertFile != "" || c.ClientCAFile != ""):
		return errors.New("controller: TLS files given with InsecureHTTP")
	}
	return errors.Join(c.validateEtcd(), c.validateMember())
}

// Controller is one running replica.
type Controller struct {
	cfg Config
	log *slog.Logger

	reg      *prometheus.Registry
	embedded *store.Embedded
	cli      *clientv3.Client
	store    *store.Store
	quorum   *quorum.Guard
	registry *registry.Registry
	creds    *credentials
	intents  *intent.Controller
	observe  *observe.Controller
	flows    *flowagg.Aggregator
	http     *http.Server
	ln       net.Listener
	metrics  *http.Server
	metricLn net.Listener
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
	if cfg.ClusterKeyFile == "" && cfg.DataDir != "" {
		cfg.ClusterKeyFile = filepath.Join(cfg.DataDir, "cluster.key")
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
		ecfg := store.EmbedConfig{Dir: c.cfg.DataDir, Logger: c.cfg.Logger}
		if c.cfg.member() {
			if ecfg.Member, err = c.memberConfig(ctx); err != nil {
				return err
			}
		}
		c.embedded, err = store.StartEmbedded(ctx, ecfg)
		if err != nil {
			return fmt.Errorf("start embedded etcd in %s: %w", c.cfg.DataDir, err)
		}
		c.cli, err = c.embedded.Client()
	} else {
		var ec clientv3.Config
		if ec, err = etcdClientConfig(c.cfg); err != nil {
			return err
		}
		c.cli, err = clientv3.New(ec)
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
		scfg.KV = c.embedded.KV() // no gRPC hop for the store's writes
	}
	c.store, err = store.New(scfg)
	if err != nil {
		return fmt.Errorf("new store: %w", err)
	}
	if err = c.store.Start(ctx); err != nil {
		return fmt.Errorf("start store: %w", err)
	}
	c.quorum, err = quorum.New(quorum.Config{Client: c.cli, Key: c.store.Key("ca/cert"), Logger: c.cfg.Logger, Registerer: c.reg})
	if err != nil {
		return err
	}
	if err = c.quorum.Start(ctx); err != nil {
		return err
	}
	if c.creds, err = startCredentials(ctx, c.cfg, c.store); err != nil {
		return err
	}
	c.registry, err = registry.New(registry.Config{Store: c.store, Logger: c.cfg.Logger,
		HostDeleteOps: hostkey.DeleteOps(c.store, c.creds.tokens)})
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
	c.flows, err = flowagg.New(flowagg.Config{Store: c.store, Logger: c.cfg.Logger, Registerer: c.reg})
	if err != nil {
		return fmt.Errorf("new flow aggregator: %w", err)
	}
	if err = c.flows.Start(ctx); err != nil {
		return fmt.Errorf("start flow aggregator: %w", err)
	}
	if c.cfg.AgentListen != "off" {
		c.south, err = startSouthbound(ctx, southboundConfig{
			Listen: c.cfg.AgentListen, Advertise: c.cfg.AdvertiseAgent, Keys: c.creds.keys,
			Client: c.cli, Store: c.store, Registry: c.registry, Logger: c.cfg.Logger, Registerer: c.reg, Quorum: c.quorum,
			TrackGrace: c.cfg.trackGrace, Flows: c.flows,
		})
		if err != nil {
			return err
		}
	}
	authn := auth.NewAuthenticator(c.creds.tokens, c.store)
	h, err := rest.NewHandler(rest.Config{
		Backend: writeGate{Backend: c.registry, guard: c.quorum}, Ready: c.quorum.Err, Logger: c.cfg.Logger, Registerer: c.reg, Gatherer: c.gatherer(), Version: c.cfg.Version,
		Authenticator: authn, Lookup: c.store, Insecure: c.cfg.InsecureHTTP,
		Tokens: c.creds.tokens, CA: c.creds.ca,
		Enroller: hostkey.NewEnroller(hostkey.EnrollerConfig{Store: c.store, Registry: c.registry, Tokens: c.creds.tokens,
			Keyring: c.creds.keys, Sealer: c.creds.sealer, CA: c.creds.ca.CertPEM()}),
		Flows: c.flows.Query,
	})
	if err != nil {
		return fmt.Errorf("new API handler: %w", err)
	}
	c.ln, err = net.Listen("tcp", c.cfg.APIListen)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w", c.cfg.APIListen, err)
	}
	if err = c.startObserve(ctx, authn); err != nil {
		return err
	}
	// The API: the REST handler and, beside it, the traces' and captures'
	// paths (reports, uploads, pcapng downloads); the web UI forwards to
	// both.
	api := http.NewServeMux()
	api.Handle("/", h)
	c.observe.Mount(api)
	var login web.Authenticator // an insecure API needs no login
	if !c.cfg.InsecureHTTP {
		login = webLogin{authn}
	}
	ui, err := web.New(web.Config{API: api, Hosts: c.registry, Auth: login, Logger: c.cfg.Logger})
	if err != nil {
		return fmt.Errorf("new web UI: %w", err)
	}
	ln := c.ln
	if c.cfg.InsecureHTTP {
		c.log.Warn("serving the API over plain HTTP without requiring credentials (InsecureHTTP): for labs and tests only", "api", c.APIAddr())
	} else {
		tc, err := c.creds.serverTLS(c.cfg, c.ln.Addr())
		if err != nil {
			return err
		}
		ln = tls.NewListener(c.ln, tc)
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle(web.Prefix, ui)
	mux.Handle("GET /{$}", http.RedirectHandler(web.Prefix, http.StatusFound))
	c.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(c.cfg.Logger.With("subsystem", "http").Handler(), slog.LevelDebug)}
	c.life.Go(func(context.Context) {
		c.serveErr = c.http.Serve(ln)
		close(c.served)
	})
	if c.cfg.MetricsListen != "" {
		if err = c.serveMetrics(); err != nil {
			return err
		}
	}
	if c.cfg.DataDir != "" {
		if err = c.creds.writeAdminConfig(ctx, filepath.Join(c.cfg.DataDir, "admin.config"), c.serverURL()); err != nil {
			return err
		}
	}
	c.log.Info("controller started", "api", c.APIAddr(), "agents", c.AgentAddr(), "etcd", endpoints, "embedded", c.embedded != nil)
	return nil
}

// gatherer is what /metrics serves: the replica's registry and, with an
// embedded etcd, etcd's own metrics, which etcd registers with the
// default registry (its families are the etcd_ and grpc_server_ ones;
// the default registry's Go and process collectors would repeat the
// replica's).
func (c *Controller) gatherer() prometheus.Gatherer {
	if c.embedded == nil {
		return c.reg
	}
	return prometheus.Gatherers{c.reg, prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := prometheus.DefaultGatherer.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			if n := mf.GetName(); strings.HasPrefix(n, "etcd_") || strings.HasPrefix(n, "grpc_server_") {
				out = append(out, mf)
			}
		}
		return out, err
	})}
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
	if c.metrics != nil {
		errs = append(errs, c.metrics.Close())
	}
	if c.http == nil && c.ln != nil { // Start failed before serving
		errs = append(errs, c.ln.Close())
	}
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
	if c.flows != nil {
		errs = append(errs, c.flows.Close())
	}
	if c.intents != nil {
		errs = append(errs, c.intents.Close())
	}
	if c.registry != nil {
		errs = append(errs, c.registry.Close())
	}
	if c.creds != nil {
		errs = append(errs, c.creds.Close())
	}
	if c.quorum != nil {
		errs = append(errs, c.quorum.Close())
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

// ServerURL returns the API's base URL (https://ADDR, or http:// with
// InsecureHTTP), with a loopback address if it listens on all of them.
func (c *Controller) ServerURL() string { return c.serverURL() }

func (c *Controller) serverURL() string {
	scheme := "https://"
	if c.cfg.InsecureHTTP {
		scheme = "http://"
	}
	a, ok := c.ln.Addr().(*net.TCPAddr)
	if !ok {
		return scheme + c.ln.Addr().String()
	}
	ip := a.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return scheme + net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

// CACert returns the cluster CA's certificate (PEM), which clients trust.
func (c *Controller) CACert() []byte { return c.creds.ca.CertPEM() }

// ClusterKeyFile returns the path of the cluster key file in use (for the
// cluster's other replicas and for tools that provision hosts directly).
func (c *Controller) ClusterKeyFile() string { return c.cfg.ClusterKeyFile }

// serveMetrics serves /metrics on MetricsListen without a credential.
func (c *Controller) serveMetrics() error {
	ln, err := net.Listen("tcp", c.cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", c.cfg.MetricsListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.gatherer(), promhttp.HandlerOpts{}))
	c.metrics, c.metricLn = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln
	c.life.Go(func(context.Context) { _ = c.metrics.Serve(ln) })
	return nil
}

// MetricsAddr returns the address of the credential-free /metrics
// listener, "" without one.
func (c *Controller) MetricsAddr() string {
	if c.metricLn == nil {
		return ""
	}
	return c.metricLn.Addr().String()
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
func (c *Controller) startObserve(ctx context.Context, authn *auth.Authenticator) error {
	dir := filepath.Join(c.cfg.DataDir, "captures")
	if c.cfg.DataDir == "" {
		dir = filepath.Join(os.TempDir(), "weft-captures-"+strconv.Itoa(os.Getpid()))
	}
	var err error
	c.observe, err = observe.New(observe.Config{
		Store: c.store, Writer: c.registry, Dir: dir, Advertise: c.serverURL(), Logger: c.cfg.Logger,
		Authenticator: authn, Insecure: c.cfg.InsecureHTTP, // Forwarded uploads and downloads reach the collector's API.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.creds.ca.Pool(), MinVersion: tls.VersionTLS12}},
	})
	if err != nil {
		return fmt.Errorf("new observe controller: %w", err)
	}
	if err := c.observe.Start(ctx); err != nil {
		return fmt.Errorf("start observe controller: %w", err)
	}
	return nil
}
