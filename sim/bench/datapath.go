package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// DatapathConfig configures the real data plane benchmark (Datapath).
// Counts left at zero take their default; a phase not listed in Phases is
// skipped.
type DatapathConfig struct {
	// Datapaths are the drivers measured in the run, each phase running
	// them side by side (default: linux): DatapathLinux, DatapathEBPF.
	Datapaths []string
	// Phases to run, in this order: "throughput", "latency", "attach",
	// "firstpacket", "resync" (default: all).
	Phases []string

	// Throughput: each configuration is measured in Rounds rounds; a round
	// runs one stream over the plain veth pair, one over the bare underlay
	// (host to host) and one over the overlay, each round starting with
	// another of them, each for Warmup + Duration (defaults 7 rounds,
	// 200ms + 1s). The machine is shared: short interleaved rounds expose
	// the three paths to the same background load.
	Rounds           int
	Warmup, Duration time.Duration
	// UnderlayMTUs of the test net measured with the final configuration
	// (default 1500 and 9000); the tuning table uses the first.
	UnderlayMTUs []int
	// Tunings measures every step of the linux driver's tuning table
	// before the final configuration (default true when nil; only when
	// linux is among the Datapaths).
	Tunings *bool
	// LatencyDuration is how long each round of the latency phase
	// exchanges requests on each path (default 500ms); the phase runs
	// Rounds rounds.
	LatencyDuration time.Duration
	// WriteSize of the sender's writes (default 128 KiB).
	WriteSize int
	// Tool is "go" (default: a blocking-socket sender and receiver of this
	// process on locked threads), "iperf3", or "auto" (iperf3 when it is on
	// PATH). When iperf3 is asked for but missing, the Go one is used; the
	// report says which ran.
	Tool string
	// PinCPUs pins the sender to CPU 0 and the receiver to CPU 1 (default:
	// the scheduler places them).
	PinCPUs bool
	// CongestionControl is set as net.ipv4.tcp_congestion_control in the
	// sending and receiving namespaces of every path (default: what new
	// namespaces get, the kernel's default; only algorithms listed in
	// tcp_allowed_congestion_control may be set outside the initial
	// namespace).
	CongestionControl string

	// Attach is the number of endpoints attached on one host, one more per
	// Set and then all in one Set (default 200).
	Attach int
	// Peers is the number of never-seen peers probed for the first-packet
	// latency (default 100).
	Peers int
	// Resync is the number of local endpoints a restarted driver adopts,
	// spread over ResyncVPCs VPCs (defaults 1,000 and 10); PingInterval is
	// the continuous ping's period across the restart (default 10ms).
	Resync, ResyncVPCs int
	PingInterval       time.Duration

	// EBPFFlowSampling is the ebpf driver's flow sampling
	// (ebpf.Config.FlowSampling, weft agent --flow-sampling; 0: none). With
	// more than one value the throughput and latency phases measure the
	// ebpf driver once per value, side by side in the same rounds, which
	// shows what sampling costs; the other phases use the first value.
	// Default: DefaultFlowSampling, what the agent runs with. The linux
	// driver is measured without its flow hooks.
	EBPFFlowSampling []uint32
	// EBPFUnderlayXDP measures, in the throughput and latency phases, the
	// ebpf driver once more with an XDP program that passes every packet
	// (XDP_PASS) on both hosts' underlay devices, side by side in the same
	// rounds: the least any XDP program there costs (the veth runs in NAPI
	// mode with one attached), where one decapsulating the VXLAN traffic
	// would run.
	EBPFUnderlayXDP bool

	// NetnsDir holds the named namespaces (default /var/run/netns).
	NetnsDir string
	// Progress receives a line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

// Datapath phases.
const (
	PhaseThroughput  = "throughput"
	PhaseLatency     = "latency"
	PhaseAttach      = "attach"
	PhaseFirstPacket = "firstpacket"
	PhaseResync      = "resync"
)

// DefaultFlowSampling is weft agent's --flow-sampling default: every flow
// is counted.
const DefaultFlowSampling = 1

// The drivers the benchmark measures.
const (
	DatapathLinux = "linux"
	DatapathEBPF  = "ebpf"
)

func (c *DatapathConfig) setDefaults() {
	if len(c.Datapaths) == 0 {
		c.Datapaths = []string{DatapathLinux}
	}
	if len(c.Phases) == 0 {
		c.Phases = []string{PhaseThroughput, PhaseLatency, PhaseAttach, PhaseFirstPacket, PhaseResync}
	}
	setDefault(&c.Rounds, 7)
	setDefault(&c.WriteSize, 128<<10)
	setDefault(&c.Attach, 200)
	setDefault(&c.Peers, 100)
	setDefault(&c.Resync, 1000)
	setDefault(&c.ResyncVPCs, 10)
	setDefault(&c.Warmup, 200*time.Millisecond)
	setDefault(&c.Duration, time.Second)
	setDefault(&c.LatencyDuration, 500*time.Millisecond)
	setDefault(&c.PingInterval, 10*time.Millisecond)
	if len(c.UnderlayMTUs) == 0 {
		c.UnderlayMTUs = []int{1500, 9000}
	}
	setDefault(&c.Tunings, new(true))
	setDefault(&c.Tool, "go")
	if len(c.EBPFFlowSampling) == 0 {
		c.EBPFFlowSampling = []uint32{DefaultFlowSampling}
	}
	setDefault(&c.NetnsDir, netnsfile.DefaultDir)
	setDefault(&c.Logger, slog.New(slog.DiscardHandler))
}

func (c *DatapathConfig) validate() error {
	for _, p := range c.Phases {
		switch p {
		case PhaseThroughput, PhaseLatency, PhaseAttach, PhaseFirstPacket, PhaseResync:
		default:
			return fmt.Errorf("datapath: unknown phase %q", p)
		}
	}
	seen := map[string]bool{}
	for _, dp := range c.Datapaths {
		if dp != DatapathLinux && dp != DatapathEBPF || seen[dp] {
			return fmt.Errorf("datapath: datapaths %v: want linux and/or ebpf, each once", c.Datapaths)
		}
		seen[dp] = true
	}
	switch {
	case c.Rounds < 1 || c.Attach < 1 || c.Peers < 1 || c.Resync < 1 || c.ResyncVPCs < 1:
		return fmt.Errorf("datapath: Rounds %d, Attach %d, Peers %d, Resync %d, ResyncVPCs %d: want ≥ 1",
			c.Rounds, c.Attach, c.Peers, c.Resync, c.ResyncVPCs)
	case c.Attach > 60000 || c.Resync > 60000 || c.Peers > 60000:
		return errors.New("datapath: at most 60,000 endpoints per phase")
	case c.ResyncVPCs > c.Resync || c.ResyncVPCs > 1000:
		return fmt.Errorf("datapath: %d VPCs for %d endpoints: want at most one VPC per endpoint and 1,000 VPCs", c.ResyncVPCs, c.Resync)
	case c.Tool != "go" && c.Tool != "iperf3" && c.Tool != "auto":
		return fmt.Errorf("datapath: Tool %q: want go, iperf3 or auto", c.Tool)
	case c.Duration < 100*time.Millisecond || c.Warmup < 0 || c.LatencyDuration < 10*time.Millisecond:
		return fmt.Errorf("datapath: Duration %v (want ≥ 100ms), Warmup %v, LatencyDuration %v (want ≥ 10ms)", c.Duration, c.Warmup, c.LatencyDuration)
	}
	if len(c.EBPFFlowSampling) > 4 {
		return fmt.Errorf("datapath: %d flow sampling settings: at most 4", len(c.EBPFFlowSampling))
	}
	for i, v := range c.EBPFFlowSampling {
		if slices.Contains(c.EBPFFlowSampling[:i], v) {
			return fmt.Errorf("datapath: flow sampling %v: each value once", c.EBPFFlowSampling)
		}
	}
	for _, m := range c.UnderlayMTUs {
		if m < 1280 || m > 65535 {
			return fmt.Errorf("datapath: underlay MTU %d out of range 1280..65535", m)
		}
	}
	return nil
}

// Goals of the data plane benchmark (ARCHITECTURE.md, "The numbers"; the
// ebpf driver's from its issue).
const (
	GoalOverlayRatio      = 0.90
	GoalEBPFOverlayRatio  = 0.95
	GoalFirstPacketMs     = 5.0
	GoalEBPFFirstPacketMs = 1.0
	GoalResyncMs          = 1000.0
	goalResyncLostPacket  = 0
)

// DatapathReport is the result of a Datapath run.
// Every phase reports each driver (its Datapath field) measured in the
// same run.
type DatapathReport struct {
	Bench   string          `json:"bench"`
	Config  DatapathEcho    `json:"config"`
	Env     DatapathEnv     `json:"env"`
	Took    string          `json:"took"`
	Goals   DatapathGoals   `json:"goals"`
	Tput    *ThroughputPart `json:"throughput,omitempty"`
	Latency *LatencyPart    `json:"latency,omitempty"`
	Attach  []AttachPart    `json:"attach,omitempty"`
	First   []FirstPacket   `json:"firstPacket,omitempty"`
	Resync  []ResyncPart    `json:"resync,omitempty"`
}

// DatapathEcho repeats the parameters of the run.
type DatapathEcho struct {
	Datapaths    []string `json:"datapaths"`
	Phases       []string `json:"phases"`
	Rounds       int      `json:"rounds"`
	Warmup       string   `json:"warmup"`
	Duration     string   `json:"duration"`
	UnderlayMTUs []int    `json:"underlayMTUs"`
	Tunings      bool     `json:"tunings"`
	WriteSize    int      `json:"writeSize"`
	PinCPUs      bool     `json:"pinCPUs"`
	// CongestionControl is the TCP congestion control the streams used.
	CongestionControl string `json:"congestionControl"`
	Attach            int    `json:"attach"`
	Peers             int    `json:"peers"`
	Resync            int    `json:"resync"`
	ResyncVPCs        int    `json:"resyncVPCs"`
	PingInterval      string `json:"pingInterval"`
	LatencyDuration   string `json:"latencyDuration"`
	// EBPFFlowSampling is the ebpf driver's flow sampling, one value per
	// variant measured.
	EBPFFlowSampling []uint32 `json:"ebpfFlowSampling"`
	// EBPFUnderlayXDP says the ebpf driver was measured once more with an
	// XDP_PASS program on the underlay devices.
	EBPFUnderlayXDP bool `json:"ebpfUnderlayXDP,omitempty"`
}

// DatapathEnv describes the machine the run was on.
type DatapathEnv struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	// LoadAvg is /proc/loadavg's 1-minute figure at the start and the end:
	// the machine is shared, so other work competes for the same cores.
	LoadStart float64 `json:"loadAvgStart"`
	LoadEnd   float64 `json:"loadAvgEnd"`
}

// DatapathGoals are the goals the figures are compared with.
type DatapathGoals struct {
	OverlayRatio      float64 `json:"overlayToVethRatio"`
	EBPFOverlayRatio  float64 `json:"ebpfOverlayToVethRatio"`
	FirstPacketMs     float64 `json:"firstPacketP99Ms"`
	EBPFFirstPacketMs float64 `json:"ebpfFirstPacketP99Ms"`
	ResyncMs          float64 `json:"resyncMs"`
	ResyncLost        int     `json:"resyncLostPackets"`
}

// Datapath builds test data centres out of network namespaces
// (internal/testnet) and drives the datapath drivers of cfg.Datapaths
// directly (no controller: a table answers their misses), and measures in
// one run, the drivers side by side: overlay TCP throughput against a
// plain veth pair (with the linux driver's tuning table), the CPU it
// takes and TCP request/response latency; the endpoint attach rate; the
// first-packet latency to never-seen peers; and the resync of a restarted
// driver with a ping running across it. Every namespace it makes is named
// with one run prefix and deleted by name when it returns, also on error
// or cancellation (with its drivers' pins). It needs root.
func Datapath(ctx context.Context, cfg DatapathConfig) (*DatapathReport, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("datapath: needs root (creates network namespaces, veths and VXLAN devices)")
	}
	start := time.Now()
	rep := &DatapathReport{Bench: "datapath",
		Config: DatapathEcho{Datapaths: cfg.Datapaths, Phases: cfg.Phases, Rounds: cfg.Rounds, LatencyDuration: cfg.LatencyDuration.String(), Warmup: cfg.Warmup.String(), Duration: cfg.Duration.String(),
			UnderlayMTUs: cfg.UnderlayMTUs, Tunings: *cfg.Tunings, WriteSize: cfg.WriteSize, PinCPUs: cfg.PinCPUs,
			CongestionControl: cfg.CongestionControl,
			Attach:            cfg.Attach, Peers: cfg.Peers, Resync: cfg.Resync, ResyncVPCs: cfg.ResyncVPCs, PingInterval: cfg.PingInterval.String(),
			EBPFUnderlayXDP: cfg.EBPFUnderlayXDP},
		Env: DatapathEnv{Kernel: kernelRelease(), CPUs: runtime.NumCPU(), LoadStart: loadAvg1()},
		Goals: DatapathGoals{OverlayRatio: GoalOverlayRatio, EBPFOverlayRatio: GoalEBPFOverlayRatio, FirstPacketMs: GoalFirstPacketMs,
			EBPFFirstPacketMs: GoalEBPFFirstPacketMs, ResyncMs: GoalResyncMs, ResyncLost: goalResyncLostPacket},
	}
	if rep.Config.CongestionControl == "" {
		// New namespaces start with the initial namespace's algorithm.
		b, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
		rep.Config.CongestionControl = strings.TrimSpace(string(b)) + " (kernel default)"
	}
	r := newDPRun(&cfg, "datapath", start)
	defer r.status.Close()
	var err error
	for _, p := range cfg.Phases {
		if err = ctx.Err(); err != nil {
			break
		}
		switch p {
		case PhaseThroughput:
			rep.Tput, err = r.throughput(ctx)
		case PhaseLatency:
			rep.Latency, err = r.latency(ctx)
		}
		for _, dp := range cfg.Datapaths {
			if err != nil || ctx.Err() != nil {
				break
			}
			switch p {
			case PhaseAttach:
				var a *AttachPart
				if a, err = r.attach(ctx, dp); a != nil {
					rep.Attach = append(rep.Attach, *a)
				}
			case PhaseFirstPacket:
				var f *FirstPacket
				if f, err = r.firstPacket(ctx, dp); f != nil {
					rep.First = append(rep.First, *f)
				}
			case PhaseResync:
				var rs *ResyncPart
				if rs, err = r.resync(ctx, dp); rs != nil {
					rep.Resync = append(rep.Resync, *rs)
				}
			}
		}
		if err != nil {
			err = fmt.Errorf("datapath %s: %w", p, err)
			break
		}
	}
	rep.Took = time.Since(start).Round(time.Millisecond).String()
	rep.Env.LoadEnd = loadAvg1()
	return rep, err
}

// dpRun is one Datapath run.
type dpRun struct {
	cfg    *DatapathConfig
	prefix string
	nets   int  // test nets made so far
	iperf3 bool // the throughput streams run iperf3
	status *statusLine
}

// newDPRun starts a run of the benchmark name on cfg (with its defaults)
// after sweeping the namespaces of crashed runs.
func newDPRun(cfg *DatapathConfig, name string, start time.Time) *dpRun {
	if removed, err := testnet.Sweep(cfg.NetnsDir); err != nil {
		cfg.Logger.Warn("sweep of crashed runs failed", "err", err)
	} else if len(removed) > 0 {
		cfg.Logger.Info("swept namespaces of crashed runs", "namespaces", len(removed))
	}
	return &dpRun{cfg: cfg, prefix: testnet.DefaultPrefix(), status: newStatusLine(cfg.Progress, name, start)}
}

// newNet builds a test data centre whose namespaces all start with the
// run's prefix; cleanup is the caller's (net.Close), also when it fails.
func (r *dpRun) newNet(o testnet.Options) (*testnet.Net, error) {
	// A hex digit more per net keeps names sweepable (testnet.Sweep).
	o.Prefix = fmt.Sprintf("%s%x", r.prefix, r.nets)
	r.nets++
	o.Dir = r.cfg.NetnsDir
	n, err := testnet.Build(o)
	if err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

func (r *dpRun) closeNet(n *testnet.Net) {
	if err := n.Close(); err != nil {
		r.cfg.Logger.Warn("delete test namespaces", "prefix", n.Prefix(), "err", err)
	}
}

// newDriver starts a linux driver for host h of n: base with the host's
// names.
func (r *dpRun) newDriver(ctx context.Context, n *testnet.Net, h *testnet.Host, base linux.Config) (*linux.Driver, error) {
	base.HostName, base.Prefix, base.HostNetns, base.NetnsDir, base.Logger = h.Name, n.Prefix(), h.Path, n.Dir(), r.cfg.Logger
	return linux.New(ctx, base)
}

// dataplane is a driver the benchmark measures.
type dataplane interface {
	datapath.Driver
	datapath.Counter
	Teardown(context.Context) error
}

// newDataplane starts a driver of datapath dp for host h of n; linux is
// linux's configuration; the ebpf driver runs with the first flow
// sampling setting (DatapathConfig.EBPFFlowSampling).
func (r *dpRun) newDataplane(ctx context.Context, dp string, n *testnet.Net, h *testnet.Host, linuxCfg linux.Config) (dataplane, error) {
	return r.newVariant(ctx, variant{datapath: dp, sampling: r.cfg.EBPFFlowSampling[0]}, n, h, linuxCfg)
}

// variant is a driver as the throughput and latency phases measure it:
// the ebpf driver once per flow sampling setting.
type variant struct {
	datapath string
	sampling uint32 // ebpf.Config.FlowSampling
	// xdp attaches an XDP_PASS program to both hosts' underlay devices
	// (DatapathConfig.EBPFUnderlayXDP).
	xdp bool
	// label tells variants of one driver apart ("": the only one).
	label string
}

// variants are the drivers of the run, the ebpf driver once per flow
// sampling setting.
func (r *dpRun) variants() []variant {
	var out []variant
	for _, dp := range r.cfg.Datapaths {
		if dp != DatapathEBPF {
			out = append(out, variant{datapath: dp})
			continue
		}
		for _, s := range r.cfg.EBPFFlowSampling {
			v := variant{datapath: dp, sampling: s}
			if len(r.cfg.EBPFFlowSampling) > 1 {
				v.label = samplingLabel(s)
			}
			out = append(out, v)
		}
		if r.cfg.EBPFUnderlayXDP {
			v := variant{datapath: dp, sampling: r.cfg.EBPFFlowSampling[0], xdp: true, label: "XDP_PASS on the underlay"}
			if len(r.cfg.EBPFFlowSampling) > 1 {
				v.label += ", " + samplingLabel(v.sampling)
			}
			out = append(out, v)
		}
	}
	return out
}

// samplingLabel names a flow sampling setting.
func samplingLabel(s uint32) string {
	if s == 0 {
		return "no flow sampling"
	}
	return fmt.Sprintf("flow sampling 1 in %d", s)
}

// name is how reports call v: the driver, and its label if any.
func (v variant) name() string {
	if v.label == "" {
		return v.datapath
	}
	return v.datapath + " (" + v.label + ")"
}

// newVariant starts driver variant v for host h of n; linuxCfg is the
// linux driver's configuration, whose EndpointResync the ebpf driver
// takes too.
func (r *dpRun) newVariant(ctx context.Context, v variant, n *testnet.Net, h *testnet.Host, linuxCfg linux.Config) (dataplane, error) {
	if v.datapath == DatapathEBPF {
		return ebpf.New(ctx, ebpf.Config{HostName: h.Name, Prefix: n.Prefix(), HostNetns: h.Path, NetnsDir: n.Dir(), Logger: r.cfg.Logger,
			FlowSampling: v.sampling, EndpointResync: linuxCfg.EndpointResync})
	}
	return r.newDriver(ctx, n, h, linuxCfg)
}

// closeDataplane closes d; an ebpf driver is torn down (its programs and
// maps are pinned outside the test net), a linux one's state goes with the
// test net's namespaces.
func (r *dpRun) closeDataplane(d dataplane) {
	if _, ok := d.(*ebpf.Driver); !ok {
		d.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Teardown(ctx); err != nil {
		r.cfg.Logger.Warn("tear down an ebpf driver", "err", err)
	}
}

func hostOf(h *testnet.Host) datapath.HostConfig {
	return datapath.HostConfig{Name: h.Name, UnderlayIP: h.UnderlayIP, UnderlayDev: h.UnderlayDev}
}

// benchEndpoint is endpoint i (< 60,240) of a VPC whose subnet is
// 10.<net>.0.0/16: 10.<net>.<i/240>.<10+i%240>.
func benchEndpoint(id string, vni uint32, netByte byte, i int) datapath.Endpoint {
	ip := netip.AddrFrom4([4]byte{10, netByte, byte(i / 240), byte(10 + i%240)})
	b := ip.As4()
	return datapath.Endpoint{ID: id, VNI: vni, Subnet: "s", IP: ip,
		MAC: net.HardwareAddr{0x02, 0x00, byte(vni), b[1], b[2], b[3]}}
}

func benchVPC(vni uint32, netByte byte) datapath.VPC {
	return datapath.VPC{Tenant: "bench", Name: fmt.Sprintf("v%d", vni), VNI: vni,
		Subnets: []datapath.Subnet{{Name: "s", CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, netByte, 0, 0}), 16)}}}
}
