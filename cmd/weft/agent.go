package main

import (
	"context"
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
	"github.com/weftnet/weft/agent/cniserver"
	"github.com/weftnet/weft/agent/restreport"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/datapath/sim"
)

// agentOptions are the flags of `weft agent`.
type agentOptions struct {
	controllers   string
	host          string
	underlayIP    string
	underlayDev   string
	datapath      string
	udp           string
	api           string
	stateDir      string
	logLevel      string
	metricsListen string
	netnsPrefix   string
	cniSocket     string
	cniSubnet     string
	cniPool       int
	cniPoolMin    int
	flowSampling  uint32
	flowInterval  time.Duration
	ipfix         string

	bootstrapTokenFile string
	caFile             string
	caSHA256           string
	insecureHTTP       bool
}

func newAgentCmd() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the weft agent of one host (programs its data plane)",
		Long: `Run the weft agent of one host.

On its first start the agent enrols its host: it sends the one-time
bootstrap token of --bootstrap-token-file (from 'weft token create --role
bootstrap --host NAME') to the REST API at --api, trusting the CA of
--ca-file (or the CA whose SHA-256 fingerprint is --ca-sha256), and gets
the host's key, its API token and the CA, which it keeps in
STATE-DIR/credentials (mode 0600) and uses on every later start. The
controller creates the Host if none exists yet. Deleting the Host revokes
these credentials; a host enrolled again needs a new bootstrap token (and
the credentials file removed).

The agent connects to a controller replica's config stream (--controller),
authenticates with the host's key, receives the host's view (its endpoints,
their VPCs, policies, QoS) and programs the data plane (--datapath linux:
namespaces and kernel routing; ebpf: tc programs and BPF maps; or sim: in
memory, for tests). It heartbeats and looks up remote endpoints on demand
over UDP (--udp; default: the same host:port as the first --controller).

The last applied view is kept in --state-dir: an agent restarted while the
controller is unreachable programs it at once and keeps forwarding
(headless); when it stops, the data plane stays as it is.

Through the API (--api, default: the one it enrolled with) the agent
reports each endpoint's network namespace and phase.

With --cni-socket the agent serves the weft-cni plugin there: containers
attach through CNI (see package agent/cniserver), joining the subnet their
network configuration names, or --cni-subnet.`,
		Example: `  # first start: enrol with a bootstrap token
  weft agent --controller 10.0.0.1:7444 --host h1 --underlay-ip 192.0.2.11 \
      --api https://10.0.0.1:7443 --ca-file ca.pem --bootstrap-token-file h1.token

  # later starts use STATE-DIR/credentials; several replicas: the agent
  # picks one by consistent hashing of --host
  weft agent --controller 10.0.0.1:7444,10.0.0.2:7444 --host h1`,
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
	f.StringVar(&o.api, "api", "", "URL of the controller's REST API, to enrol and to report endpoint status (default: the one enrolled with)")
	f.StringVar(&o.bootstrapTokenFile, "bootstrap-token-file", "", "file holding the host's one-time bootstrap token (first start only)")
	f.StringVar(&o.caFile, "ca-file", "", "PEM file of the CA that signs the controller's API certificate (default: the CA from enrolment)")
	f.StringVar(&o.caSHA256, "ca-sha256", "", "instead of --ca-file at enrolment: the SHA-256 fingerprint of the CA, which is then fetched from --api")
	f.BoolVar(&o.insecureHTTP, "insecure-http", false, "allow a plain http:// --api (labs only: no TLS, the token in clear text)")
	f.StringVar(&o.stateDir, "state-dir", "", "directory of the persisted view and the credentials (default /var/lib/weft/agent-HOST)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "address to serve Prometheus /metrics on (default: none)")
	f.StringVar(&o.netnsPrefix, "netns-prefix", "", "prefix of the namespaces the linux and ebpf datapaths make (default wft)")
	f.StringVar(&o.cniSocket, "cni-socket", "", "serve the weft-cni plugin on this unix socket (e.g. /run/weft/cni.sock; default: no CNI)")
	f.StringVar(&o.cniSubnet, "cni-subnet", "", "TENANT/SUBNET[@VPC] that CNI attachments join when their network configuration names none")
	f.IntVar(&o.cniPool, "cni-pool", 0, "most endpoints the CNI warm pool keeps ready per selection, sized to the recent attach rate (0: no pool)")
	f.IntVar(&o.cniPoolMin, "cni-pool-min", 0, "fewest endpoints the CNI warm pool keeps ready per selection it serves")
	f.Uint32Var(&o.flowSampling, "flow-sampling", 1, "sample 1 in N flows for flow records and `weft flows` (0: no flow hooks in the data plane; raise it on busy hosts: each VPC (--datapath ebpf: each host) keeps at most 65,536 sampled flows)")
	f.DurationVar(&o.flowInterval, "flow-interval", agent.DefaultFlowInterval, "how often traffic counters are read and flows reported (negative: never)")
	f.StringVar(&o.ipfix, "ipfix-collector", "", "host:port of an IPFIX collector to export every flow record to (UDP; default: none)")
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

	creds, err := o.credentials(ctx, cfg.StateDir, stdout)
	if err != nil {
		return err
	}
	if cfg.Key, err = creds.key(); err != nil {
		return err
	}
	c, err := o.apiClient(creds)
	if err != nil {
		return err
	}
	defer c.Close()
	cfg.Reporter = restreport.New(c)
	var tap *cniserver.Tap
	if o.cniSocket != "" {
		tap = cniserver.NewTap(cfg.Reporter)
		cfg.Reporter, cfg.IfName = tap, cniserver.IfName
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
	if tap != nil {
		srv, err := o.cniServer(cfg, c, tap, a, log)
		if err != nil {
			return err
		}
		if err := srv.Start(ctx); err != nil {
			return err
		}
		defer srv.Close()
	}

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
	if err := o.checkPlainHTTP(o.api); err != nil {
		return cfg, err
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
	cfg.Flows = agent.FlowConfig{Interval: o.flowInterval, Collector: o.ipfix}
	// A view change translates only the policies it changed.
	cfg.PolicyCache = agent.NewPolicyCache(0)
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
		return sim.New(sim.Config{MissBuffer: 1024, FlowSampling: o.flowSampling}), nil
	case "ebpf":
		d, err := ebpf.New(ctx, ebpf.Config{HostName: cfg.Host, Prefix: o.netnsPrefix, Logger: log, FlowSampling: o.flowSampling})
		if err != nil {
			return nil, fmt.Errorf("start the ebpf datapath: %w", err)
		}
		return d, nil
	}
	d, err := linux.New(ctx, linux.Config{HostName: cfg.Host, Prefix: o.netnsPrefix, Logger: log, FlowSampling: o.flowSampling})
	if err != nil {
		return nil, fmt.Errorf("start the linux datapath: %w", err)
	}
	return d, nil
}

// cniServer makes the CNI server of --cni-socket.
func (o *agentOptions) cniServer(cfg agent.Config, c *client.Client, tap *cniserver.Tap, a *agent.Agent, log *slog.Logger) (*cniserver.Server, error) {
	var def cniserver.Selection
	if o.cniSubnet != "" {
		ts, vpc, _ := strings.Cut(o.cniSubnet, "@")
		var ok bool
		if def.Tenant, def.Subnet, ok = strings.Cut(ts, "/"); !ok || def.Tenant == "" || def.Subnet == "" {
			return nil, usageErrorf("--cni-subnet %q: want TENANT/SUBNET[@VPC]", o.cniSubnet)
		}
		def.VPC = vpc
	}
	return cniserver.New(cniserver.Config{Socket: o.cniSocket, Host: cfg.Host, API: c, Tap: tap, Agent: a,
		Default: def, Pool: cniserver.PoolConfig{Max: o.cniPool, Min: o.cniPoolMin}, Logger: log})
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
