package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// DatapathConfig configures the real data plane benchmark (Datapath).
// Counts left at zero take their default; a phase not listed in Phases is
// skipped.
type DatapathConfig struct {
	// Phases to run, in this order: "throughput", "attach", "firstpacket",
	// "resync" (default: all).
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
	// Tunings measures every step of the tuning table before the final
	// configuration (default true when nil).
	Tunings *bool
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

	// NetnsDir holds the named namespaces (default /var/run/netns).
	NetnsDir string
	// Progress receives a line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

// Datapath phases.
const (
	PhaseThroughput  = "throughput"
	PhaseAttach      = "attach"
	PhaseFirstPacket = "firstpacket"
	PhaseResync      = "resync"
)

func (c *DatapathConfig) setDefaults() {
	if len(c.Phases) == 0 {
		c.Phases = []string{PhaseThroughput, PhaseAttach, PhaseFirstPacket, PhaseResync}
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Rounds, 7)
	def(&c.WriteSize, 128<<10)
	def(&c.Attach, 200)
	def(&c.Peers, 100)
	def(&c.Resync, 1000)
	def(&c.ResyncVPCs, 10)
	if c.Warmup == 0 {
		c.Warmup = 200 * time.Millisecond
	}
	if c.Duration == 0 {
		c.Duration = time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 10 * time.Millisecond
	}
	if len(c.UnderlayMTUs) == 0 {
		c.UnderlayMTUs = []int{1500, 9000}
	}
	if c.Tunings == nil {
		t := true
		c.Tunings = &t
	}
	if c.Tool == "" {
		c.Tool = "go"
	}
	if c.NetnsDir == "" {
		c.NetnsDir = netnsfile.DefaultDir
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *DatapathConfig) validate() error {
	for _, p := range c.Phases {
		switch p {
		case PhaseThroughput, PhaseAttach, PhaseFirstPacket, PhaseResync:
		default:
			return fmt.Errorf("datapath: unknown phase %q", p)
		}
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
	case c.Duration < 100*time.Millisecond || c.Warmup < 0:
		return fmt.Errorf("datapath: Duration %v (want ≥ 100ms), Warmup %v", c.Duration, c.Warmup)
	}
	for _, m := range c.UnderlayMTUs {
		if m < 1280 || m > 65535 {
			return fmt.Errorf("datapath: underlay MTU %d out of range 1280..65535", m)
		}
	}
	return nil
}

// Goals of the data plane benchmark (ARCHITECTURE.md, "The numbers").
const (
	GoalOverlayRatio     = 0.90
	GoalFirstPacketMs    = 5.0
	GoalResyncMs         = 1000.0
	goalResyncLostPacket = 0
)

// DatapathReport is the result of a Datapath run.
type DatapathReport struct {
	Bench  string          `json:"bench"`
	Config DatapathEcho    `json:"config"`
	Env    DatapathEnv     `json:"env"`
	Took   string          `json:"took"`
	Goals  DatapathGoals   `json:"goals"`
	Tput   *ThroughputPart `json:"throughput,omitempty"`
	Attach *AttachPart     `json:"attach,omitempty"`
	First  *FirstPacket    `json:"firstPacket,omitempty"`
	Resync *ResyncPart     `json:"resync,omitempty"`
}

// DatapathEcho repeats the parameters of the run.
type DatapathEcho struct {
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
	OverlayRatio  float64 `json:"overlayToVethRatio"`
	FirstPacketMs float64 `json:"firstPacketP99Ms"`
	ResyncMs      float64 `json:"resyncMs"`
	ResyncLost    int     `json:"resyncLostPackets"`
}

// ThroughputPart is the throughput phase: the tuning table (each step adds
// one change to the kept ones before it, on the first underlay MTU) and the
// final configuration on every underlay MTU.
type ThroughputPart struct {
	Tool   string       `json:"tool"`
	Tuning []TputResult `json:"tuning,omitempty"`
	Final  []TputResult `json:"final"`
}

// TputResult is one configuration measured against the veth baseline in
// interleaved rounds.
type TputResult struct {
	Step        string `json:"step"`
	Why         string `json:"why,omitempty"`
	Kept        bool   `json:"kept"`
	UnderlayMTU int    `json:"underlayMTU"`
	OverlayMTU  int    `json:"overlayMTU"`
	// Medians over the rounds, in Gbit/s; Ratio is the median of the
	// rounds' overlay/veth ratios (each round measures both back to back).
	VethGbps    float64 `json:"vethGbps"`
	OverlayGbps float64 `json:"overlayGbps"`
	Ratio       float64 `json:"ratio"`
	RatioMin    float64 `json:"ratioMin"`
	RatioMax    float64 `json:"ratioMax"`
	// UnderlayGbps is TCP between the two host namespaces over the test
	// underlay alone (no overlay): the path the overlay rides on, measured
	// in the same rounds. OverlayToUnderlay is the median of the rounds'
	// overlay/underlay ratios: what the overlay itself costs.
	UnderlayGbps      float64 `json:"underlayGbps"`
	UnderlayRatio     float64 `json:"underlayToVethRatio"`
	OverlayToUnderlay float64 `json:"overlayToUnderlayRatio"`
	// Best is each path's fastest round and BestRatio the overlay's best
	// over the veth pair's: on a shared machine the fastest round is the
	// one least slowed by other work, so this estimates the ratio of the
	// paths' capacities.
	VethBest     float64 `json:"vethBestGbps"`
	UnderlayBest float64 `json:"underlayBestGbps"`
	OverlayBest  float64 `json:"overlayBestGbps"`
	BestRatio    float64 `json:"bestRatio"`
	// Every round's figures, in order.
	VethRounds     []float64 `json:"vethRounds"`
	UnderlayRounds []float64 `json:"underlayRounds"`
	OverlayRounds  []float64 `json:"overlayRounds"`
	// CPU of the sender's and receiver's threads per GB received (median,
	// ms/GB): it includes the softirq work that ran in their context, so it
	// shows the cost of the path even when other load lowers the rate.
	VethCPU    StreamCPU `json:"vethCPU"`
	OverlayCPU StreamCPU `json:"overlayCPU"`
	// Retransmits is the median per stream.
	VethRetrans    float64 `json:"vethRetransmits"`
	OverlayRetrans float64 `json:"overlayRetransmits"`
	// Machine is the whole machine's CPU split (/proc/stat, all CPUs, all
	// processes) during the streams, in percent (medians over the rounds).
	MachineVeth    CPUSplit `json:"machineDuringVeth"`
	MachineOverlay CPUSplit `json:"machineDuringOverlay"`
}

// StreamCPU is thread CPU time per GB received: user and system time of
// the sending and receiving threads. Softirq work that runs in their
// context (most of the forwarding path) is accounted as softirq time by
// this kernel, not to them: see CPUSplit for it.
type StreamCPU struct {
	SenderMsPerGB   float64 `json:"senderMsPerGB"`
	ReceiverMsPerGB float64 `json:"receiverMsPerGB"`
}

// CPUSplit is an mpstat-style split of all CPUs' time, in percent, and
// the busiest and quietest CPU's busy (not idle) share.
type CPUSplit struct {
	User     float64 `json:"user"`
	System   float64 `json:"system"`
	SoftIRQ  float64 `json:"softirq"`
	IRQ      float64 `json:"irq"`
	Idle     float64 `json:"idle"`
	Steal    float64 `json:"steal"`
	Busiest  float64 `json:"busiestCPUBusy"`
	Quietest float64 `json:"quietestCPUBusy"`
}

// AttachPart is the endpoint attach phase on one host.
type AttachPart struct {
	Endpoints int `json:"endpoints"`
	// Successive: one Set per endpoint on a fresh host, each Set with one
	// endpoint more; once with the driver's default configuration (as the
	// agent runs it: every Set re-reads every endpoint namespace) and once
	// with EndpointResync = 1m.
	Successive []SetSeries `json:"successive"`
	// Batch: one Set of all endpoints on a fresh host.
	BatchMs     float64         `json:"batchMs"`
	BatchPerSec float64         `json:"batchAttachPerSec"`
	BatchMeanMs float64         `json:"batchMeanMsPerEndpoint"`
	BatchWrites datapath.Counts `json:"batchWrites"`
	WritesPerEP float64         `json:"writesPerEndpoint"`
}

// SetSeries is a series of successive Sets, each attaching one endpoint.
type SetSeries struct {
	EndpointResync string  `json:"endpointResync"`
	PerSec         float64 `json:"attachPerSec"`
	P50Ms          float64 `json:"p50Ms"`
	P99Ms          float64 `json:"p99Ms"`
	MaxMs          float64 `json:"maxMs"`
	FirstMs        float64 `json:"firstMs"`
	LastMs         float64 `json:"lastMs"`
}

// FirstPacket is the first-packet latency phase.
type FirstPacket struct {
	Peers int `json:"peers"`
	// BothMiss: the peer's host has not learned the sender either, so the
	// request and the reply are both held for a miss.
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
	Lost   int     `json:"lost"`
	Misses int     `json:"missesAnswered"`
	// MissToLearn is the simulated controller's time from receiving a miss
	// to Learn returning.
	MissToLearnP50Ms float64 `json:"missToLearnP50Ms"`
	MissToLearnP99Ms float64 `json:"missToLearnP99Ms"`
	// WarmP50Ms is the round trip to a peer already learned, for reference.
	WarmP50Ms float64 `json:"warmP50Ms"`
}

// ResyncPart is the restart phase: a fresh driver adopts a host's state.
type ResyncPart struct {
	Endpoints int `json:"endpoints"`
	VPCs      int `json:"vpcs"`
	// BuildMs is the first driver's one Set of everything.
	BuildMs float64 `json:"buildMs"`
	// NewMs (linux.New, adopting the namespaces) + SetMs (the same desired
	// state) = ResyncMs.
	NewMs    float64         `json:"newMs"`
	SetMs    float64         `json:"setMs"`
	ResyncMs float64         `json:"resyncMs"`
	Writes   datapath.Counts `json:"writes"`
	// Ping across the restart (remote endpoint -> a local one).
	PingSent     int     `json:"pingSent"`
	PingLost     int     `json:"pingLost"`
	PingMaxRTTMs float64 `json:"pingMaxRttMs"`
}

// Datapath builds test data centres out of network namespaces
// (internal/testnet) and drives the linux datapath driver directly (no
// controller: a table answers its misses), and measures in one run:
// overlay TCP throughput against a plain veth pair, with the tuning table;
// the endpoint attach rate; the first-packet latency to never-seen peers;
// and the resync of a restarted driver with a ping running across it. Every
// namespace it makes is named with one run prefix and deleted by name when
// it returns, also on error or cancellation. It needs root.
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
		Config: DatapathEcho{Phases: cfg.Phases, Rounds: cfg.Rounds, Warmup: cfg.Warmup.String(), Duration: cfg.Duration.String(),
			UnderlayMTUs: cfg.UnderlayMTUs, Tunings: *cfg.Tunings, WriteSize: cfg.WriteSize, PinCPUs: cfg.PinCPUs,
			CongestionControl: cfg.CongestionControl,
			Attach:            cfg.Attach, Peers: cfg.Peers, Resync: cfg.Resync, ResyncVPCs: cfg.ResyncVPCs, PingInterval: cfg.PingInterval.String()},
		Env:   DatapathEnv{Kernel: kernelRelease(), CPUs: runtime.NumCPU(), LoadStart: loadAvg()},
		Goals: DatapathGoals{OverlayRatio: GoalOverlayRatio, FirstPacketMs: GoalFirstPacketMs, ResyncMs: GoalResyncMs, ResyncLost: goalResyncLostPacket},
	}
	if rep.Config.CongestionControl == "" {
		// New namespaces start with the initial namespace's algorithm.
		b, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
		rep.Config.CongestionControl = strings.TrimSpace(string(b)) + " (kernel default)"
	}
	if removed, err := testnet.Sweep(cfg.NetnsDir); err != nil {
		cfg.Logger.Warn("sweep of crashed runs failed", "err", err)
	} else if len(removed) > 0 {
		cfg.Logger.Info("swept namespaces of crashed runs", "namespaces", len(removed))
	}
	r := &dpRun{cfg: &cfg, prefix: testnet.DefaultPrefix(), status: newStatusLine(cfg.Progress, start)}
	defer r.status.stop()
	var err error
	for _, p := range cfg.Phases {
		if err = ctx.Err(); err != nil {
			break
		}
		switch p {
		case PhaseThroughput:
			rep.Tput, err = r.throughput(ctx)
		case PhaseAttach:
			rep.Attach, err = r.attach(ctx)
		case PhaseFirstPacket:
			rep.First, err = r.firstPacket(ctx)
		case PhaseResync:
			rep.Resync, err = r.resync(ctx)
		}
		if err != nil {
			err = fmt.Errorf("datapath %s: %w", p, err)
			break
		}
	}
	rep.Took = time.Since(start).Round(time.Millisecond).String()
	rep.Env.LoadEnd = loadAvg()
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

// newDriver starts a driver for host h of n: base with the host's names.
func (r *dpRun) newDriver(ctx context.Context, n *testnet.Net, h *testnet.Host, base linux.Config) (*linux.Driver, error) {
	base.HostName, base.Prefix, base.HostNetns, base.NetnsDir, base.Logger = h.Name, n.Prefix(), h.Path, n.Dir(), r.cfg.Logger
	return linux.New(ctx, base)
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

// ---- throughput ----

// tputStep is one row of the tuning table: a change on top of the kept
// steps before it.
type tputStep struct {
	name, why string
	keep      bool
	apply     func(*tputSetup)
}

// tputSetup is what a step may change.
type tputSetup struct {
	net    testnet.Options
	driver linux.Config
	after  []func(context.Context, *overlayPair) error
}

func (r *dpRun) throughput(ctx context.Context) (*ThroughputPart, error) {
	r.iperf3 = false
	if r.cfg.Tool != "go" {
		_, err := exec.LookPath("iperf3")
		r.iperf3 = err == nil
	}
	part := &ThroughputPart{Tool: "go"}
	switch {
	case r.iperf3:
		part.Tool = "iperf3"
	case r.cfg.Tool == "iperf3":
		part.Tool = "go (iperf3 not found)"
	}
	steps := tuningSteps(r.cfg.UnderlayMTUs[0])
	base := tputSetup{net: testnet.Options{Hosts: 2, MTU: r.cfg.UnderlayMTUs[0]}}
	if *r.cfg.Tunings {
		cur := base
		cur.net.BridgeNetfilter = true
		cur.driver.Untuned = true
		for i, st := range steps {
			s := cur
			s.after = slices.Clone(cur.after)
			if st.apply != nil {
				st.apply(&s)
			}
			res, err := r.measureSetup(ctx, s, fmt.Sprintf("tuning %d/%d %s", i+1, len(steps), st.name))
			if err != nil {
				return part, err
			}
			res.Step, res.Why, res.Kept = st.name, st.why, st.keep
			part.Tuning = append(part.Tuning, *res)
			r.status.printf("throughput: %-40s mtu %d: veth %.2f, underlay %.2f, overlay %.2f Gbit/s; overlay/veth %.3f (%.3f..%.3f), overlay/underlay %.3f; best rounds %.3f",
				st.name, res.UnderlayMTU, res.VethGbps, res.UnderlayGbps, res.OverlayGbps, res.Ratio, res.RatioMin, res.RatioMax, res.OverlayToUnderlay, res.BestRatio)
			if st.keep {
				cur = s
			}
		}
	}
	for _, mtu := range r.cfg.UnderlayMTUs {
		s := base
		s.net.MTU = mtu
		res, err := r.measureSetup(ctx, s, fmt.Sprintf("final mtu %d", mtu))
		if err != nil {
			return part, err
		}
		res.Step, res.Kept = "final", true
		part.Final = append(part.Final, *res)
		r.status.printf("throughput: final, underlay mtu %d: veth %.2f, underlay %.2f, overlay %.2f Gbit/s; overlay/veth %.3f (%.3f..%.3f), overlay/underlay %.3f; best rounds %.3f",
			mtu, res.VethGbps, res.UnderlayGbps, res.OverlayGbps, res.Ratio, res.RatioMin, res.RatioMax, res.OverlayToUnderlay, res.BestRatio)
	}
	return part, nil
}

// tuningSteps is the tuning table, in order, for an underlay MTU of mtu.
func tuningSteps(mtu int) []tputStep {
	steps := []tputStep{
		{name: "untuned", keep: true,
			why: "routed overlay without the driver's tunings; br_netfilter hooks on the test bridge (the kernel's default once the module is loaded)"},
		{name: "test bridge without br_netfilter", keep: true,
			why:   "the test underlay plays a physical switch, which runs no iptables on the hosts' CPUs",
			apply: func(s *tputSetup) { s.net.BridgeNetfilter = false }},
		{name: "router namespace without early demux", keep: true,
			why:   "driver tuning: a forwarding-only namespace has no sockets to demux to",
			apply: func(s *tputSetup) { s.driver.Untuned = false }},
		{name: "rp_filter off in the router namespaces", keep: false,
			why:   "experiment, not kept: strict reverse-path filtering costs a FIB lookup per packet but stops endpoints from spoofing addresses",
			apply: func(s *tputSetup) { s.after = append(s.after, rpFilterOff) }},
	}
	if mtu != 9000 {
		steps = append(steps, tputStep{name: "jumbo underlay (MTU 9000)", keep: false,
			why:   "overlay MTU 8950; measured for every underlay MTU below",
			apply: func(s *tputSetup) { s.net.MTU = 9000 }})
	}
	return append(steps, tputStep{name: "direct wire (no test bridge)", keep: false,
		why:   "not a tuning: the two hosts joined by one veth pair instead of veth+bridge+veth, to show what the simulated wire costs",
		apply: func(s *tputSetup) { s.net.Direct = true }})
}

// rpFilterOff turns reverse-path filtering off in both router namespaces.
func rpFilterOff(_ context.Context, o *overlayPair) error {
	for _, h := range o.net.Hosts() {
		path := filepath.Join(o.net.Dir(), linux.VPCNetnsName(o.net.Prefix(), h.Name, 100))
		if err := netnsfile.Do(path, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("0"), 0o644)
		}); err != nil {
			return fmt.Errorf("rp_filter off on %s: %w", h.Name, err)
		}
	}
	return nil
}

// overlayPair is the overlay of a throughput measurement: two hosts, one
// endpoint each, learned both ways, and the veth pair to compare with.
type overlayPair struct {
	net     *testnet.Net
	drivers []*linux.Driver
	eps     []datapath.EndpointStatus
	ips     []netip.Addr
	veth    *testnet.VethPair
	mtu     int
}

func (o *overlayPair) close() {
	for _, d := range o.drivers {
		d.Close()
	}
}

func (r *dpRun) buildPair(ctx context.Context, s tputSetup) (*overlayPair, error) {
	n, err := r.newNet(s.net)
	if err != nil {
		return nil, err
	}
	o := &overlayPair{net: n, mtu: s.net.MTU - datapath.VXLANOverhead}
	ok := false
	defer func() {
		if !ok {
			o.close()
			r.closeNet(n)
		}
	}()
	vpc := benchVPC(100, 0)
	var eps []datapath.Endpoint
	for i, h := range n.Hosts() {
		d, err := r.newDriver(ctx, n, h, s.driver)
		if err != nil {
			return nil, err
		}
		o.drivers = append(o.drivers, d)
		ep := benchEndpoint(fmt.Sprintf("bench/tp%d", i), vpc.VNI, 0, i)
		eps = append(eps, ep)
		if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{ep}}); err != nil {
			return nil, err
		}
		st, _ := d.Status(ep.ID)
		o.eps = append(o.eps, st)
		o.ips = append(o.ips, ep.IP)
	}
	for i, d := range o.drivers {
		j := 1 - i
		if err := d.Learn(ctx, []datapath.Remote{{VNI: vpc.VNI, IP: eps[j].IP, MAC: eps[j].MAC, HostUnderlay: n.Host(j).UnderlayIP, Epoch: 1}}); err != nil {
			return nil, err
		}
	}
	if o.veth, err = n.AddVethPair("vp", netip.MustParsePrefix("10.255.0.1/24"), netip.MustParsePrefix("10.255.0.2/24"), 0); err != nil {
		return nil, err
	}
	for _, f := range s.after {
		if err := f(ctx, o); err != nil {
			return nil, err
		}
	}
	if cc := r.cfg.CongestionControl; cc != "" {
		for _, ns := range []string{o.eps[0].Netns, o.eps[1].Netns, o.veth.APath, o.veth.BPath, n.Host(0).Path, n.Host(1).Path} {
			if err := netnsfile.Do(ns, func() error {
				return os.WriteFile("/proc/sys/net/ipv4/tcp_congestion_control", []byte(cc), 0o644)
			}); err != nil {
				return nil, fmt.Errorf("congestion control %q: %w", cc, err)
			}
		}
	}
	// Every path answers before anything is measured.
	h0, h1 := n.Host(0), n.Host(1)
	for _, p := range []struct {
		from string
		to   netip.Addr
	}{{o.eps[0].Netns, o.ips[1]}, {o.veth.APath, o.veth.B.Addr()}, {h0.Path, h1.UnderlayIP}} {
		if err := pathCheck(ctx, p.from, p.to); err != nil {
			return nil, err
		}
	}
	ok = true
	return o, nil
}

// tputPath is one of the three paths measured in each round.
type tputPath struct {
	name     string
	from, to string
	dst      netip.AddrPort
	gbps     []float64
	cpu      []StreamCPU
	retrans  []float64
	split    []CPUSplit
}

// pathCheck pings dst from the namespace at from, up to three times.
func pathCheck(ctx context.Context, from string, dst netip.Addr) error {
	var err error
	for range 3 {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = testnet.Ping(pctx, from, dst)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("path check: %w", err)
	}
	return nil
}

func (r *dpRun) measureSetup(ctx context.Context, s tputSetup, label string) (*TputResult, error) {
	o, err := r.buildPair(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	defer r.closeNet(o.net)
	defer o.close()
	h0, h1 := o.net.Host(0), o.net.Host(1)
	paths := []*tputPath{
		{name: "veth", from: o.veth.APath, to: o.veth.BPath, dst: netip.AddrPortFrom(o.veth.B.Addr(), 5201)},
		{name: "underlay", from: h0.Path, to: h1.Path, dst: netip.AddrPortFrom(h1.UnderlayIP, 5201)},
		{name: "overlay", from: o.eps[0].Netns, to: o.eps[1].Netns, dst: netip.AddrPortFrom(o.ips[1], 5201)},
	}
	for round := range r.cfg.Rounds {
		// Each round starts with another path, so that none is always
		// measured right after the same one.
		for k := range paths {
			p := paths[(round+k)%len(paths)]
			r.status.set("throughput: %s: round %d/%d: %s", label, round+1, r.cfg.Rounds, p.name)
			before := readCPUStat()
			sr, err := r.stream(ctx, p.from, p.to, p.dst)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", label, p.name, err)
			}
			split := readCPUStat().since(before)
			c := StreamCPU{}
			if gb := float64(sr.Bytes) / 1e9; gb > 0 && sr.SenderCPU > 0 {
				c = StreamCPU{SenderMsPerGB: msOf(sr.SenderCPU) / gb, ReceiverMsPerGB: msOf(sr.ReceiverCPU) / gb}
			}
			p.gbps = append(p.gbps, round3(sr.Gbps()))
			p.cpu, p.retrans, p.split = append(p.cpu, c), append(p.retrans, float64(sr.Retransmits)), append(p.split, split)
		}
		r.status.set("throughput: %s: round %d/%d: veth %.2f, underlay %.2f, overlay %.2f Gbit/s", label, round+1, r.cfg.Rounds,
			paths[0].gbps[round], paths[1].gbps[round], paths[2].gbps[round])
	}
	v, u, ov := paths[0], paths[1], paths[2]
	ratios := roundRatios(ov.gbps, v.gbps)
	res := &TputResult{UnderlayMTU: s.net.MTU, OverlayMTU: o.mtu,
		VethGbps: round3(dpMedian(v.gbps)), UnderlayGbps: round3(dpMedian(u.gbps)), OverlayGbps: round3(dpMedian(ov.gbps)),
		Ratio: round3(dpMedian(ratios)), RatioMin: round3(slices.Min(ratios)), RatioMax: round3(slices.Max(ratios)),
		UnderlayRatio:     round3(dpMedian(roundRatios(u.gbps, v.gbps))),
		OverlayToUnderlay: round3(dpMedian(roundRatios(ov.gbps, u.gbps))),
		VethBest:          slices.Max(v.gbps), UnderlayBest: slices.Max(u.gbps), OverlayBest: slices.Max(ov.gbps),
		VethRounds: v.gbps, UnderlayRounds: u.gbps, OverlayRounds: ov.gbps,
		VethCPU: medianCPU(v.cpu), OverlayCPU: medianCPU(ov.cpu),
		VethRetrans: dpMedian(v.retrans), OverlayRetrans: dpMedian(ov.retrans),
		MachineVeth: medianSplit(v.split), MachineOverlay: medianSplit(ov.split)}
	if res.VethBest > 0 {
		res.BestRatio = round3(res.OverlayBest / res.VethBest)
	}
	return res, nil
}

// roundRatios divides a by b round by round.
func roundRatios(a, b []float64) []float64 {
	out := []float64{}
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	if len(out) == 0 {
		out = append(out, 0)
	}
	return out
}

func (r *dpRun) stream(ctx context.Context, from, to string, dst netip.AddrPort) (testnet.StreamResult, error) {
	sc, rc := -1, -1
	if r.cfg.PinCPUs && runtime.NumCPU() > 1 {
		sc, rc = 0, 1
	}
	if !r.iperf3 {
		return testnet.Stream(ctx, testnet.StreamOptions{From: from, To: to, Addr: dst, Warmup: r.cfg.Warmup,
			Duration: r.cfg.Duration, WriteSize: r.cfg.WriteSize, SenderCPU: sc, ReceiverCPU: rc})
	}
	return iperf3Stream(ctx, from, to, dst, r.cfg, sc, rc)
}

// iperf3Stream runs one iperf3 client/server pair (server in to, client in
// from) and returns the receiver's rate over the measured time.
func iperf3Stream(ctx context.Context, from, to string, dst netip.AddrPort, cfg *DatapathConfig, sc, rc int) (testnet.StreamResult, error) {
	port := strconv.Itoa(int(dst.Port()))
	sargs := []string{"-s", "-1", "-p", port, "-B", dst.Addr().String()}
	if rc >= 0 {
		sargs = append(sargs, "-A", strconv.Itoa(rc))
	}
	srv := exec.CommandContext(ctx, "iperf3", sargs...)
	if err := netnsfile.Do(to, srv.Start); err != nil {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}()
	secs := int((cfg.Duration + time.Second - 1) / time.Second)
	omit := int((cfg.Warmup + time.Second - 1) / time.Second)
	cargs := []string{"-c", dst.Addr().String(), "-p", port, "-t", strconv.Itoa(secs), "-O", strconv.Itoa(omit), "-J",
		"-l", strconv.Itoa(cfg.WriteSize)}
	if sc >= 0 {
		cargs = append(cargs, "-A", strconv.Itoa(sc))
	}
	var out []byte
	var err error
	for attempt := range 20 { // the server needs a moment to listen
		err = netnsfile.Do(from, func() error {
			var err error
			out, err = exec.CommandContext(ctx, "iperf3", cargs...).Output()
			return err
		})
		if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "connect") {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	if err != nil {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 client: %w: %s", err, out)
	}
	var j struct {
		End struct {
			Sent struct {
				Bytes       float64 `json:"bytes"`
				Seconds     float64 `json:"seconds"`
				Retransmits uint32  `json:"retransmits"`
			} `json:"sum_sent"`
			Recv struct {
				Bytes   float64 `json:"bytes"`
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 output: %w", err)
	}
	e := j.End
	if e.Recv.Bytes == 0 || e.Recv.Seconds == 0 {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 reported no data received: %.300s", out)
	}
	el := time.Duration(e.Recv.Seconds * float64(time.Second))
	return testnet.StreamResult{Bytes: uint64(e.Recv.Bytes), Elapsed: el, Retransmits: e.Sent.Retransmits,
		SenderCPU:   time.Duration(e.CPU.Host / 100 * float64(el)),
		ReceiverCPU: time.Duration(e.CPU.Remote / 100 * float64(el))}, nil
}

// ---- attach ----

func (r *dpRun) attach(ctx context.Context) (*AttachPart, error) {
	part := &AttachPart{Endpoints: r.cfg.Attach}
	vpc := benchVPC(200, 1)
	eps := make([]datapath.Endpoint, r.cfg.Attach)
	for i := range eps {
		eps[i] = benchEndpoint(fmt.Sprintf("bench/a%d", i), vpc.VNI, 1, i)
	}
	for _, resync := range []time.Duration{0, time.Minute} {
		s, err := r.attachSuccessive(ctx, vpc, eps, resync)
		if err != nil {
			return part, err
		}
		part.Successive = append(part.Successive, *s)
		r.status.printf("attach: %d successive Sets (EndpointResync %v): %.1f endpoints/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms (first %.2f, last %.2f)",
			len(eps), resync, s.PerSec, s.P50Ms, s.P99Ms, s.MaxMs, s.FirstMs, s.LastMs)
	}

	// One Set of all on a fresh host.
	n, err := r.newNet(testnet.Options{Hosts: 1})
	if err != nil {
		return part, err
	}
	defer r.closeNet(n)
	h := n.Host(0)
	d, err := r.newDriver(ctx, n, h, linux.Config{})
	if err != nil {
		return part, err
	}
	defer d.Close()
	if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}}); err != nil {
		return part, err
	}
	r.status.set("attach: one Set of %d endpoints", len(eps))
	before := d.Counts()
	t0 := time.Now()
	if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: eps}); err != nil {
		return part, fmt.Errorf("batch set: %w", err)
	}
	dt := time.Since(t0)
	part.BatchWrites = d.Counts().Sub(before)
	part.WritesPerEP = round3(float64(part.BatchWrites.Total()) / float64(len(eps)))
	part.BatchMs = msOf(dt)
	part.BatchPerSec = round3(float64(len(eps)) / dt.Seconds())
	part.BatchMeanMs = round3(part.BatchMs / float64(len(eps)))
	r.status.printf("attach: one Set of %d endpoints: %.0f ms, %.1f endpoints/s, %.1f writes each",
		len(eps), part.BatchMs, part.BatchPerSec, part.WritesPerEP)
	return part, nil
}

// attachSuccessive attaches eps on a fresh host one Set at a time, each
// Set with one endpoint more than the one before.
func (r *dpRun) attachSuccessive(ctx context.Context, vpc datapath.VPC, eps []datapath.Endpoint, resync time.Duration) (*SetSeries, error) {
	n, err := r.newNet(testnet.Options{Hosts: 1})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	h := n.Host(0)
	d, err := r.newDriver(ctx, n, h, linux.Config{EndpointResync: resync})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}}); err != nil {
		return nil, err
	}
	took := make([]time.Duration, 0, len(eps))
	var total time.Duration
	for i := range eps {
		r.status.set("attach: successive Set %d/%d (EndpointResync %v)", i+1, len(eps), resync)
		t0 := time.Now()
		if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: eps[:i+1]}); err != nil {
			return nil, fmt.Errorf("successive set %d: %w", i+1, err)
		}
		dt := time.Since(t0)
		took = append(took, dt)
		total += dt
	}
	return &SetSeries{EndpointResync: resync.String(), PerSec: round3(float64(len(eps)) / total.Seconds()),
		P50Ms: pctMs(took, 50), P99Ms: pctMs(took, 99), MaxMs: pctMs(took, 100),
		FirstMs: msOf(took[0]), LastMs: msOf(took[len(took)-1])}, nil
}

// ---- first packet ----

// missAnswerer plays the controller: it answers a driver's misses with
// Learn from a table, at once.
type missAnswerer struct {
	mu      sync.Mutex
	table   map[datapath.RemoteKey]datapath.Remote
	took    []time.Duration
	unknown int
	errs    []error
	wg      sync.WaitGroup
}

func (a *missAnswerer) serve(ctx context.Context, d datapath.Driver) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-d.Misses():
				if !ok {
					return
				}
				t0 := time.Now()
				a.mu.Lock()
				rm, found := a.table[datapath.RemoteKey(m)]
				a.mu.Unlock()
				if !found {
					a.mu.Lock()
					a.unknown++
					a.mu.Unlock()
					continue
				}
				err := d.Learn(ctx, []datapath.Remote{rm})
				dt := time.Since(t0)
				a.mu.Lock()
				a.took = append(a.took, dt)
				if err != nil && ctx.Err() == nil {
					a.errs = append(a.errs, err)
				}
				a.mu.Unlock()
			}
		}
	}()
}

func (r *dpRun) firstPacket(ctx context.Context) (*FirstPacket, error) {
	part := &FirstPacket{Peers: r.cfg.Peers}
	n, err := r.newNet(testnet.Options{Hosts: 2})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	vpc := benchVPC(300, 2)
	src := benchEndpoint("bench/src", vpc.VNI, 2, 0)
	peers := make([]datapath.Endpoint, r.cfg.Peers)
	for i := range peers {
		peers[i] = benchEndpoint(fmt.Sprintf("bench/p%d", i), vpc.VNI, 2, 1+i)
	}
	ans := &missAnswerer{table: map[datapath.RemoteKey]datapath.Remote{}}
	ans.table[datapath.RemoteKey{VNI: vpc.VNI, IP: src.IP}] = datapath.Remote{VNI: vpc.VNI, IP: src.IP, MAC: src.MAC, HostUnderlay: n.Host(0).UnderlayIP, Epoch: 1}
	for _, p := range peers {
		ans.table[datapath.RemoteKey{VNI: vpc.VNI, IP: p.IP}] = datapath.Remote{VNI: vpc.VNI, IP: p.IP, MAC: p.MAC, HostUnderlay: n.Host(1).UnderlayIP, Epoch: 1}
	}
	actx, cancel := context.WithCancel(ctx)
	var ds []*linux.Driver
	defer func() {
		cancel()
		for _, d := range ds {
			d.Close()
		}
		ans.wg.Wait()
	}()
	for i, h := range n.Hosts() {
		d, err := r.newDriver(ctx, n, h, linux.Config{})
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		want := &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{src}}
		if i == 1 {
			want.Endpoints = peers
		}
		r.status.set("firstpacket: attaching %d endpoints on %s", len(want.Endpoints), h.Name)
		if err := d.Set(ctx, want); err != nil {
			return nil, err
		}
		ans.serve(actx, d)
	}
	st, _ := ds[0].Status(src.ID)
	var first, warm []time.Duration
	srcKey := []datapath.RemoteKey{{VNI: vpc.VNI, IP: src.IP}}
	for i, p := range peers {
		r.status.set("firstpacket: peer %d/%d", i+1, len(peers))
		// The peer's host forgets the sender, so the reply misses too.
		if err := ds[1].Forget(ctx, srcKey); err != nil {
			return nil, err
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		rtt, err := testnet.Ping(pctx, st.Netns, p.IP)
		pcancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			part.Lost++
			continue
		}
		first = append(first, rtt)
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		if rtt, err := testnet.Ping(wctx, st.Netns, p.IP); err == nil {
			warm = append(warm, rtt)
		}
		wcancel()
	}
	ans.mu.Lock()
	part.Misses = len(ans.took)
	part.MissToLearnP50Ms, part.MissToLearnP99Ms = pctMs(ans.took, 50), pctMs(ans.took, 99)
	lerr := errors.Join(ans.errs...)
	ans.mu.Unlock()
	part.P50Ms, part.P99Ms, part.MaxMs = pctMs(first, 50), pctMs(first, 99), pctMs(first, 100)
	part.WarmP50Ms = pctMs(warm, 50)
	r.status.printf("firstpacket: %d never-seen peers: p50 %.3f ms, p99 %.3f ms, max %.3f ms, %d lost (warm p50 %.3f ms; %d misses answered)",
		len(peers), part.P50Ms, part.P99Ms, part.MaxMs, part.Lost, part.WarmP50Ms, part.Misses)
	if lerr != nil {
		return part, fmt.Errorf("learn: %w", lerr)
	}
	return part, nil
}

// ---- resync ----

func (r *dpRun) resync(ctx context.Context) (*ResyncPart, error) {
	part := &ResyncPart{Endpoints: r.cfg.Resync, VPCs: r.cfg.ResyncVPCs}
	n, err := r.newNet(testnet.Options{Hosts: 2})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	h0, h1 := n.Host(0), n.Host(1)
	want := &datapath.Desired{Host: hostOf(h0)}
	for v := range r.cfg.ResyncVPCs {
		want.VPCs = append(want.VPCs, benchVPC(uint32(1000+v), byte(10+v%240)))
	}
	for i := range r.cfg.Resync {
		v := i % r.cfg.ResyncVPCs
		want.Endpoints = append(want.Endpoints, benchEndpoint(fmt.Sprintf("bench/r%d", i), uint32(1000+v), byte(10+v%240), i/r.cfg.ResyncVPCs))
	}
	// The ping target is endpoint 0 (VPC 1000); its peer lives on h1.
	target := want.Endpoints[0]
	peer := benchEndpoint("bench/peer", target.VNI, byte(10), r.cfg.Resync) // above every local index
	d0, err := r.newDriver(ctx, n, h0, linux.Config{})
	if err != nil {
		return nil, err
	}
	d1, err := r.newDriver(ctx, n, h1, linux.Config{})
	if err != nil {
		d0.Close()
		return nil, err
	}
	var drivers = []*linux.Driver{d0, d1}
	defer func() {
		for _, d := range drivers {
			d.Close()
		}
	}()
	r.status.set("resync: attaching %d endpoints in %d VPCs", r.cfg.Resync, r.cfg.ResyncVPCs)
	t0 := time.Now()
	if err := d0.Set(ctx, want); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	part.BuildMs = msOf(time.Since(t0))
	r.status.printf("resync: %d endpoints in %d VPCs attached in one Set in %.0f ms", r.cfg.Resync, r.cfg.ResyncVPCs, part.BuildMs)
	if err := d1.Set(ctx, &datapath.Desired{Host: hostOf(h1), VPCs: want.VPCs[:1], Endpoints: []datapath.Endpoint{peer}}); err != nil {
		return nil, err
	}
	if err := d0.Learn(ctx, []datapath.Remote{{VNI: peer.VNI, IP: peer.IP, MAC: peer.MAC, HostUnderlay: h1.UnderlayIP, Epoch: 1}}); err != nil {
		return nil, err
	}
	if err := d1.Learn(ctx, []datapath.Remote{{VNI: target.VNI, IP: target.IP, MAC: target.MAC, HostUnderlay: h0.UnderlayIP, Epoch: 1}}); err != nil {
		return nil, err
	}
	pst, _ := d1.Status(peer.ID)
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = testnet.Ping(pctx, pst.Netns, target.IP)
	pcancel()
	if err != nil {
		return nil, fmt.Errorf("path check: %w", err)
	}
	pinger, err := testnet.StartPinger(pst.Netns, target.IP, r.cfg.PingInterval)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = pinger.Stop(0)
		}
	}()
	time.Sleep(100 * time.Millisecond)

	// The restart: the old driver goes, a new one adopts and converges.
	r.status.set("resync: restarting the driver of %s", h0.Name)
	d0.Close()
	t0 = time.Now()
	nd, err := r.newDriver(ctx, n, h0, linux.Config{})
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	drivers[0] = nd
	tNew := time.Since(t0)
	t1 := time.Now()
	before := nd.Counts()
	if err := nd.Set(ctx, want); err != nil {
		return nil, fmt.Errorf("resync set: %w", err)
	}
	tSet := time.Since(t1)
	part.Writes = nd.Counts().Sub(before)
	part.NewMs, part.SetMs, part.ResyncMs = msOf(tNew), msOf(tSet), msOf(tNew+tSet)
	time.Sleep(200 * time.Millisecond)
	stopped = true
	ps, perr := pinger.Stop(200 * time.Millisecond)
	part.PingSent, part.PingLost, part.PingMaxRTTMs = ps.Sent, len(ps.Lost), msOf(ps.MaxRTT)
	r.status.printf("resync: %d endpoints: New %.0f ms + Set %.0f ms = %.0f ms, %d writes; ping across it: %d sent, %d lost",
		r.cfg.Resync, part.NewMs, part.SetMs, part.ResyncMs, part.Writes.Total(), part.PingSent, part.PingLost)
	return part, perr
}

// ---- helpers ----

// statusLine prints the current status once a second, and phase results
// as they come.
type statusLine struct {
	w     io.Writer
	start time.Time
	mu    sync.Mutex
	cur   string
	done  chan struct{}
	wg    sync.WaitGroup
}

func newStatusLine(w io.Writer, start time.Time) *statusLine {
	s := &statusLine{w: w, start: start, done: make(chan struct{})}
	if w == nil {
		return s
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.mu.Lock()
				if s.cur != "" {
					fmt.Fprintf(s.w, "datapath [%3.0fs] %s\n", time.Since(s.start).Seconds(), s.cur)
				}
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *statusLine) set(format string, a ...any) {
	s.mu.Lock()
	s.cur = fmt.Sprintf(format, a...)
	s.mu.Unlock()
}

func (s *statusLine) printf(format string, a ...any) {
	if s.w == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "datapath [%3.0fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, a...))
}

func (s *statusLine) stop() {
	close(s.done)
	s.wg.Wait()
}

// cpuStat is /proc/stat's "cpu" lines, in ticks: the aggregate first, then
// each CPU (user, nice, system, idle, iowait, irq, softirq, steal).
type cpuStat [][8]uint64

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	var out cpuStat
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		var v [8]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		out = append(out, v)
	}
	return out
}

func (c cpuStat) since(b cpuStat) CPUSplit {
	if len(c) == 0 || len(c) != len(b) {
		return CPUSplit{}
	}
	delta := func(i int) (d [8]uint64, total float64) {
		for k := range d {
			d[k] = c[i][k] - b[i][k]
			total += float64(d[k])
		}
		return d, total
	}
	d, total := delta(0)
	if total == 0 {
		return CPUSplit{}
	}
	p := func(x uint64) float64 { return round3(100 * float64(x) / total) }
	out := CPUSplit{User: p(d[0] + d[1]), System: p(d[2]), Idle: p(d[3] + d[4]), IRQ: p(d[5]), SoftIRQ: p(d[6]), Steal: p(d[7])}
	out.Quietest = 100
	for i := 1; i < len(c); i++ {
		d, t := delta(i)
		if t == 0 {
			continue
		}
		busy := round3(100 * (1 - float64(d[3]+d[4])/t))
		out.Busiest, out.Quietest = max(out.Busiest, busy), min(out.Quietest, busy)
	}
	return out
}

func medianSplit(s []CPUSplit) CPUSplit {
	col := func(f func(CPUSplit) float64) float64 {
		v := make([]float64, len(s))
		for i, x := range s {
			v[i] = f(x)
		}
		return round3(dpMedian(v))
	}
	return CPUSplit{User: col(func(c CPUSplit) float64 { return c.User }), System: col(func(c CPUSplit) float64 { return c.System }),
		SoftIRQ: col(func(c CPUSplit) float64 { return c.SoftIRQ }), IRQ: col(func(c CPUSplit) float64 { return c.IRQ }),
		Idle: col(func(c CPUSplit) float64 { return c.Idle }), Steal: col(func(c CPUSplit) float64 { return c.Steal }),
		Busiest: col(func(c CPUSplit) float64 { return c.Busiest }), Quietest: col(func(c CPUSplit) float64 { return c.Quietest })}
}

func medianCPU(s []StreamCPU) StreamCPU {
	snd := make([]float64, len(s))
	rcv := make([]float64, len(s))
	for i, x := range s {
		snd[i], rcv[i] = x.SenderMsPerGB, x.ReceiverMsPerGB
	}
	return StreamCPU{SenderMsPerGB: round3(dpMedian(snd)), ReceiverMsPerGB: round3(dpMedian(rcv))}
}

func dpMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pctMs is the p-th percentile (nearest rank) of d in milliseconds.
func pctMs(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	i = max(0, min(i, len(s)-1))
	return msOf(s[i])
}

func msOf(d time.Duration) float64 { return round3(float64(d) / 1e6) }

func round3(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 3, 64), 64)
	return v
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
