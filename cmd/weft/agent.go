package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/restreport"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/wire"
)

// agentOptions are the flags of `weft agent`.
type agentOptions struct {
	controllers    string
	host           string
	underlayIP     string
	underlayDev    string
	datapath       string
	udp            string
	keyFile        string
	clusterKeyFile string
	api            string
	stateDir       string
	logLevel       string
	metricsListen  string
	netnsPrefix    string
}

func newAgentCmd() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the weft agent of one host (programs its data plane)",
		Long: `Run the weft agent of one host.

The agent connects to a controller replica's config stream (--controller),
authenticates with the host's key (--key-file, from 'weft host-key'), receives
the host's view (its endpoints, their VPCs, policies, QoS) and programs the
data plane (--datapath linux: namespaces and kernel routing; ebpf: tc
programs and BPF maps; or sim: in memory, for tests). It heartbeats
and looks up remote endpoints on demand over UDP (--udp; default: the same
host:port as the first --controller).

The last applied view is kept in --state-dir: an agent restarted while the
controller is unreachable programs it at once and keeps forwarding
(headless); when it stops, the data plane stays as it is.

With --api the agent registers its Host through the REST API if none exists
yet, and reports each endpoint's network namespace and phase.`,
		Example: `  weft agent --controller 10.0.0.1:7444 --host h1 --underlay-ip 192.0.2.11 \
      --key-file /etc/weft/h1.key --api http://10.0.0.1:7443

  # several replicas; the agent picks one by consistent hashing of --host
  weft agent --controller 10.0.0.1:7444,10.0.0.2:7444 --host h1 --key-file h1.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.controllers, "controller", "", "config-stream address (host:port) of the controller; comma-separated for several replicas (required)")
	f.StringVar(&o.host, "host", "", "this host's name: the name of its Host object (required)")
	f.StringVar(&o.underlayIP, "underlay-ip", "", "this host's underlay address (registered with --api; the controller's Host record wins)")
	f.StringVar(&o.underlayDev, "underlay-dev", "", "interface holding the underlay address (default: found from --underlay-ip)")
	f.StringVar(&o.datapath, "datapath", "linux", "data plane driver: linux, ebpf or sim")
	f.StringVar(&o.udp, "udp", "", "controller UDP address for heartbeats and lookups (default: the first --controller address; the controller serves UDP on the same port)")
	f.StringVar(&o.keyFile, "key-file", "", "file holding the host's key, 64 hex digits (from `weft host-key`)")
	f.StringVar(&o.clusterKeyFile, "cluster-key-file", "", "lab/demo alternative to --key-file: the controller's cluster key (DATA-DIR/cluster.key); the host key is derived from it")
	f.StringVar(&o.api, "api", "", "URL of the controller's REST API, to register the Host and report endpoint status (optional)")
	f.StringVar(&o.stateDir, "state-dir", "", "directory of the persisted view (default /var/lib/weft/agent-HOST)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "address to serve Prometheus /metrics on (default: none)")
	f.StringVar(&o.netnsPrefix, "netns-prefix", "", "prefix of the namespaces the linux and ebpf datapaths make (default wft)")
	return cmd
}

// run runs the agent until ctx ends.
func (o *agentOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return usageErrorf("%v", err)
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	cfg.Logger = log
	cfg.AgentVersion = clientVersion().Version
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Registerer = reg

	if o.api != "" {
		c, err := client.New(o.api)
		if err != nil {
			return usageErrorf("--api: %v", err)
		}
		defer c.Close()
		cfg.Reporter = restreport.New(c)
	}

	drv, err := o.driver(ctx, cfg, log)
	if err != nil {
		return err
	}
	// Closing the driver leaves the data plane in place (headless).
	defer drv.Close()
	cfg.Driver = drv

	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		a.Close()
		return err
	}
	defer a.Close()

	if o.metricsListen != "" {
		stop, err := serveMetrics(o.metricsListen, reg, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	state := "waiting for the controller"
	if v := a.ViewVersion(); v > 0 {
		state = fmt.Sprintf("programmed view version %d from %s, headless until a controller answers", v, cfg.StateDir)
	}
	fmt.Fprintf(stdout, "weft agent %s (%s datapath): %s; controller %s (Ctrl-C to stop)\n",
		cfg.Host, o.datapath, state, strings.Join(cfg.StreamAddrs, ","))
	<-ctx.Done()
	return a.Close()
}

// config builds the agent configuration from the flags (without Driver,
// Logger and Reporter).
func (o *agentOptions) config() (agent.Config, error) {
	var cfg agent.Config
	if o.host == "" {
		return cfg, usageErrorf("--host is required")
	}
	if o.controllers == "" {
		return cfg, usageErrorf("--controller is required")
	}
	for _, c := range strings.Split(o.controllers, ",") {
		c = strings.TrimSpace(c)
		if _, _, err := net.SplitHostPort(c); err != nil {
			return cfg, usageErrorf("--controller %q: want host:port: %v", c, err)
		}
		cfg.StreamAddrs = append(cfg.StreamAddrs, c)
	}
	cfg.UDPAddr = o.udp
	if cfg.UDPAddr == "" {
		// The controller serves UDP on the same host:port as the stream:
		// follow whichever replica the stream is connected to.
		cfg.UDPAddr = cfg.StreamAddrs[0]
		cfg.UDPFollowsStream = true
	} else if _, _, err := net.SplitHostPort(cfg.UDPAddr); err != nil {
		return cfg, usageErrorf("--udp %q: want host:port: %v", cfg.UDPAddr, err)
	}
	switch {
	case o.keyFile != "" && o.clusterKeyFile != "":
		return cfg, usageErrorf("give --key-file or --cluster-key-file, not both")
	case o.keyFile != "":
		key, err := readKeyFile(o.keyFile)
		if err != nil {
			return cfg, err
		}
		cfg.Key = key
	case o.clusterKeyFile != "":
		secret, err := hostkey.ReadFile(o.clusterKeyFile)
		if err != nil {
			return cfg, fmt.Errorf("--cluster-key-file: %w", err)
		}
		cfg.Key = hostkey.Derive(secret, o.host)
	default:
		return cfg, usageErrorf("--key-file (or, for a lab, --cluster-key-file) is required")
	}
	if o.underlayIP != "" {
		ip, err := netip.ParseAddr(o.underlayIP)
		if err != nil || ip.Zone() != "" {
			return cfg, usageErrorf("--underlay-ip %q is not an IP address", o.underlayIP)
		}
		cfg.UnderlayIP = ip
	}
	cfg.UnderlayDev = o.underlayDev
	if cfg.UnderlayDev == "" && cfg.UnderlayIP.IsValid() && o.datapath != "sim" {
		cfg.UnderlayDev = interfaceWith(cfg.UnderlayIP)
	}
	cfg.Host = o.host
	cfg.StateDir = o.stateDir
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join("/var/lib/weft", "agent-"+o.host)
	}
	switch o.datapath {
	case "linux", "ebpf", "sim":
	default:
		return cfg, usageErrorf("--datapath %q: want linux, ebpf or sim", o.datapath)
	}
	return cfg, nil
}

// driver makes the data plane driver.
func (o *agentOptions) driver(ctx context.Context, cfg agent.Config, log *slog.Logger) (datapath.Driver, error) {
	switch o.datapath {
	case "sim":
		return sim.New(sim.Config{MissBuffer: 1024}), nil
	case "ebpf":
		d, err := ebpf.New(ctx, ebpf.Config{HostName: cfg.Host, Prefix: o.netnsPrefix, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("start the ebpf datapath: %w", err)
		}
		return d, nil
	}
	d, err := linux.New(ctx, linux.Config{HostName: cfg.Host, Prefix: o.netnsPrefix, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("start the linux datapath: %w", err)
	}
	return d, nil
}

// readKeyFile reads a host key: 64 hex digits, surrounding space ignored.
func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != wire.KeySize {
		return nil, fmt.Errorf("--key-file %s: want %d hex digits (a %d-byte key)", path, 2*wire.KeySize, wire.KeySize)
	}
	return key, nil
}

// interfaceWith returns the name of the interface holding ip, or "".
func interfaceWith(ip netip.Addr) string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == ip {
					return ifc.Name
				}
			}
		}
	}
	return ""
}

// serveMetrics serves /metrics on addr until stop is called.
func serveMetrics(addr string, g prometheus.Gatherer, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}
