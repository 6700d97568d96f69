package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/testnet"
)

// QoSConfig configures the QoS overhead benchmark (QoS).
type QoSConfig struct {
	// Rounds of the two configurations (default 15), each stream
	// Warmup + Duration (defaults 200ms + 1s), each round starting with
	// the other one.
	Rounds           int
	Warmup, Duration time.Duration
	// CapacityBps is the hosts' uplink capacity with the QoS tree
	// (default 10 Gbit/s, more than the path carries).
	CapacityBps uint64
	// Tool is "go" (default), "iperf3" or "auto", as for Datapath.
	Tool string
	// PinCPUs pins the sender to CPU 0 and the receiver to CPU 1.
	PinCPUs bool
	// NetnsDir holds the named namespaces (default /var/run/netns).
	NetnsDir string
	Progress io.Writer
	Logger   *slog.Logger
}

// GoalQoSRatio is the goal of the uncapped endpoint's throughput with the
// QoS tree installed over without it (issue 11).
const GoalQoSRatio = 0.95

// QoSReport is the result of a QoS run.
type QoSReport struct {
	Bench  string      `json:"bench"`
	Env    DatapathEnv `json:"env"`
	Took   string      `json:"took"`
	Tool   string      `json:"tool"`
	Rounds int         `json:"rounds"`
	// Tree says what is installed in the "with" configuration.
	Tree string `json:"tree"`
	// Medians over the rounds and their ranges, in Gbit/s.
	WithGbps      float64   `json:"withGbps"`
	WithMin       float64   `json:"withMin"`
	WithMax       float64   `json:"withMax"`
	WithoutGbps   float64   `json:"withoutGbps"`
	WithoutMin    float64   `json:"withoutMin"`
	WithoutMax    float64   `json:"withoutMax"`
	WithRounds    []float64 `json:"withRounds"`
	WithoutRounds []float64 `json:"withoutRounds"`
	// Ratio is the median of the rounds' with/without ratios (each round
	// measures both back to back), with its range.
	Ratio    float64 `json:"ratio"`
	RatioMin float64 `json:"ratioMin"`
	RatioMax float64 `json:"ratioMax"`
	Goal     float64 `json:"goal"`
}

// QoS measures what the QoS machinery costs an endpoint that has no QoS
// of its own: one TCP stream between two endpoints on two hosts (the
// linux driver, no controller), in interleaved rounds with the QoS tree
// installed (the hosts' uplinks shaped to their capacity, and in the same
// VPC on each host an endpoint with a capped, guaranteed, prioritized and
// DSCP-marked class, so that the uplink's HTB, the host's marking table
// and the VPC's shaping devices exist) and without it, switched by Set
// between the streams. It needs root.
func QoS(ctx context.Context, cfg QoSConfig) (*QoSReport, error) {
	setDefault(&cfg.Rounds, 15)
	setDefault(&cfg.CapacityBps, 10_000_000_000)
	if cfg.Rounds < 1 {
		return nil, fmt.Errorf("qos: %d rounds: want ≥ 1", cfg.Rounds)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("qos: needs root (creates network namespaces, veths and VXLAN devices)")
	}
	start := time.Now()
	dcfg := &DatapathConfig{Warmup: cfg.Warmup, Duration: cfg.Duration, Tool: cfg.Tool, PinCPUs: cfg.PinCPUs,
		NetnsDir: cfg.NetnsDir, Progress: cfg.Progress, Logger: cfg.Logger}
	dcfg.setDefaults()
	if err := dcfg.validate(); err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	r := newDPRun(dcfg, "qos", start)
	defer r.status.Close()
	if r.cfg.Tool != "go" {
		_, err := exec.LookPath("iperf3")
		r.iperf3 = err == nil
	}
	q := &datapath.QoS{MaxRateBps: 1_000_000_000, MinRateBps: 100_000_000, Priority: 1, DSCP: 46}
	rep := &QoSReport{Bench: "qos", Env: DatapathEnv{Kernel: kernelRelease(), CPUs: runtime.NumCPU(), LoadStart: loadAvg1()},
		Tool: "go", Rounds: cfg.Rounds, Goal: GoalQoSRatio,
		Tree: fmt.Sprintf("uplinks shaped to %d bit/s; on each host a neighbour in the VPC with max %d, min %d bit/s, priority %d, DSCP %d",
			cfg.CapacityBps, q.MaxRateBps, q.MinRateBps, q.Priority, q.DSCP)}
	if r.iperf3 {
		rep.Tool = "iperf3"
	}
	o, err := r.buildPair(ctx, tputSetup{net: testnet.Options{Hosts: 2}})
	if err != nil {
		return rep, err
	}
	defer r.closeNet(o.net)
	defer o.close()

	vpc := benchVPC(100, 0) // buildPair's
	without := make([]*datapath.Desired, 2)
	with := make([]*datapath.Desired, 2)
	for i, h := range o.net.Hosts() {
		ep := benchEndpoint(fmt.Sprintf("bench/tp%d", i), vpc.VNI, 0, i)
		without[i] = &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{ep}}
		capped := benchEndpoint(fmt.Sprintf("bench/q%d", i), vpc.VNI, 0, 100+i)
		capped.QoS = q
		host := hostOf(h)
		host.CapacityBps = cfg.CapacityBps
		with[i] = &datapath.Desired{Host: host, VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{ep, capped}}
	}
	set := func(ds []*datapath.Desired) error {
		for i, d := range o.drivers {
			if err := d.Set(ctx, ds[i]); err != nil {
				return err
			}
		}
		return nil
	}
	dst := netip.AddrPortFrom(o.ips[1], 5201)
	configs := []struct {
		name   string
		ds     []*datapath.Desired
		rounds *[]float64
	}{{"with", with, &rep.WithRounds}, {"without", without, &rep.WithoutRounds}}
	for round := range cfg.Rounds {
		for k := range configs {
			c := configs[(round+k)%len(configs)]
			r.status.set("qos: round %d/%d: %s the QoS tree", round+1, cfg.Rounds, c.name)
			if err := set(c.ds); err != nil {
				return rep, fmt.Errorf("qos: set %s the tree: %w", c.name, err)
			}
			if err := pathCheck(ctx, o.eps[0].Netns, o.ips[1]); err != nil {
				return rep, fmt.Errorf("qos: %s the tree: %w", c.name, err)
			}
			sr, err := r.stream(ctx, o.eps[0].Netns, o.eps[1].Netns, dst)
			if err != nil {
				return rep, fmt.Errorf("qos: %s the tree: %w", c.name, err)
			}
			*c.rounds = append(*c.rounds, round3(sr.Gbps()))
		}
	}
	rep.WithGbps, rep.WithMin, rep.WithMax = spreadOf(rep.WithRounds)
	rep.WithoutGbps, rep.WithoutMin, rep.WithoutMax = spreadOf(rep.WithoutRounds)
	rep.Ratio, rep.RatioMin, rep.RatioMax = spreadOf(roundRatios(rep.WithRounds, rep.WithoutRounds))
	r.status.printf("qos: %d rounds: with the tree %.2f Gbit/s (%.2f..%.2f), without %.2f (%.2f..%.2f); ratio %.3f (%.3f..%.3f) (goal ≥ %.2f)",
		cfg.Rounds, rep.WithGbps, rep.WithMin, rep.WithMax, rep.WithoutGbps, rep.WithoutMin, rep.WithoutMax, rep.Ratio, rep.RatioMin, rep.RatioMax, GoalQoSRatio)
	rep.Took = time.Since(start).Round(time.Millisecond).String()
	rep.Env.LoadEnd = loadAvg1()
	return rep, nil
}
