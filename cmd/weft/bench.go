package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/sim/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench NAME",
		Short: "Run a benchmark (churn, program, datapath, policy, qos, cni, rollout, ha, replicastart, rolling, ...)",
		Long: `Run one of weft's benchmarks. Each starts the real parts it measures,
prints progress once a second on stderr and a final report on stdout
(-o json: one JSON object). The numbers in BENCHMARKS.md come from these.`,
	}
	cmd.AddCommand(newBenchChurnCmd(), newBenchHeartbeatsCmd(), newBenchLookupCmd(),
		newBenchColdstartCmd(), newBenchProgramCmd(), newBenchMigrateCmd(), newBenchDatapathCmd(),
		newBenchPolicyCmd(), newBenchQoSCmd(), newBenchCNICmd(), newBenchRolloutCmd(), newBenchHACmd(), newBenchReplicaStartCmd(), newBenchRollingCmd())
	return cmd
}

func newBenchHeartbeatsCmd() *cobra.Command {
	var cfg bench.HeartbeatsConfig
	cmd := reportCmd(&cobra.Command{
		Use:   "heartbeats",
		Short: "UDP heartbeat ingest vs. a raw UDP sink, and CPU at 100k hosts x 1 Hz",
		Long: `Measure the controller's heartbeat ingest (HMAC verify, replay window,
liveness table) against a raw UDP sink that only reads and counts, with the
same senders (a child process) in the same run; then the CPU the ingest uses
when every one of --hosts heartbeats at --rate; then how long a host that
stops takes to be declared Dead.`,
		Example: `  weft bench heartbeats
  weft bench heartbeats --hosts 100000 --duration 5s --rounds 3 -o json`,
	}, func(cmd *cobra.Command) (*bench.HeartbeatsReport, error) {
		cfg.Progress = cmd.ErrOrStderr()
		return bench.Heartbeats(cmd.Context(), cfg)
	}, func(w io.Writer, rep *bench.HeartbeatsReport) {
		fmt.Fprintf(w, "heartbeats: sink %.0f/s, ingest %.0f/s, ratio %.2f (goal %.2f); %.2f µs CPU per heartbeat\n",
			rep.SinkRate, rep.IngestRate, rep.IngestRatio, rep.GoalIngestRatio, rep.IngestCPUMicros)
		fmt.Fprintf(w, "  nominal %d hosts: %.0f heartbeats/s on %.3f cores (goal <= %.2f)\n", rep.Hosts, rep.NominalRate, rep.Cores, rep.GoalCores)
		fmt.Fprintf(w, "  dead host detected %.2f s after its last heartbeat (goal <= %.0f s)\n", rep.DeadDetectSecs, rep.GoalDeadDetectSecs)
	})
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 100000, "simulated hosts")
	f.Float64Var(&cfg.Rate, "rate", 1, "heartbeats per host per second in the nominal phase")
	f.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each measured phase")
	f.IntVar(&cfg.Rounds, "rounds", 3, "sink + ingest rounds (medians are reported)")
	f.IntVar(&cfg.Senders, "senders", 2, "sender goroutines")
	f.BoolVar(&cfg.InProcess, "in-process", false, "run the senders in this process instead of a child")
	return cmd
}

func newBenchLookupCmd() *cobra.Command {
	var cfg bench.LookupConfig
	cmd := reportCmd(&cobra.Command{
		Use:   "lookup",
		Short: "On-demand location lookups over UDP: rate and p50/p99 latency",
		Long: `Send signed lookup requests (VNI + IP -> host, MAC, identity, epoch) from
--clients hosts at --rate per second, open loop, to the controller's UDP
server and its locator index of --endpoints endpoints; report the rate
answered and the latency percentiles.`,
		Example: `  weft bench lookup --rate 200000
  weft bench lookup --rate 100000 --batch 16 -o json`,
	}, func(cmd *cobra.Command) (*bench.LookupReport, error) {
		cfg.Progress = cmd.ErrOrStderr()
		return bench.Lookup(cmd.Context(), cfg)
	}, func(w io.Writer, rep *bench.LookupReport) {
		fmt.Fprintf(w, "lookup: %.0f answered/s of %d/s target (%d sent, %d lost, batch %d, %d clients, %s)\n",
			rep.Rate, rep.TargetRate, rep.Sent, rep.Lost, rep.Batch, rep.Clients, rep.ClientMode)
		fmt.Fprintf(w, "  latency p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms (goal p99 <= %.1f ms at %d/s)\n",
			rep.P50Ms, rep.P99Ms, rep.P999Ms, rep.MaxMs, rep.GoalP99Ms, rep.GoalRate)
	})
	f := cmd.Flags()
	f.IntVar(&cfg.Rate, "rate", 200000, "target lookups per second")
	f.IntVar(&cfg.Batch, "batch", 1, "queries per datagram (1..16)")
	f.IntVar(&cfg.Clients, "clients", 1000, "hosts asking")
	f.IntVar(&cfg.Endpoints, "endpoints", 100000, "endpoints in the index")
	f.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of the run")
	f.BoolVar(&cfg.InProcess, "in-process", false, "run the clients in this process instead of a child")
	return cmd
}

func newBenchChurnCmd() *cobra.Command {
	var (
		cfg        bench.ChurnConfig
		cpuProfile string
	)
	cmd := reportCmd(&cobra.Command{
		Use:   "churn",
		Short: "Endpoint create+delete throughput over HTTP, durable in etcd",
		Long: `Start a controller with embedded etcd (unless --server is given), measure
the raw batched-etcd put rate as a baseline, then let --concurrency workers
create and delete endpoints over real HTTP for --duration. Every create and
delete is acknowledged only after etcd committed it. Reports ops/s, p50/p99
latency and the ratio to the etcd baseline measured in the same run. The API
is HTTPS with a bearer token, as by default; --insecure-http measures plain
HTTP without credentials, the baseline of that cost.`,
		Example: `  weft bench churn --duration 20s --concurrency 128
  weft bench churn --insecure-http -o json`,
	}, func(cmd *cobra.Command) (*bench.ChurnReport, error) {
		cfg.Progress = cmd.ErrOrStderr()
		stop, err := startCPUProfile(cpuProfile)
		if err != nil {
			return nil, err
		}
		defer stop()
		return bench.Churn(cmd.Context(), cfg)
	}, func(w io.Writer, rep *bench.ChurnReport) {
		fmt.Fprintf(w, "churn: %.0f endpoint ops/s over %s (%d creates + %d deletes in %s, %d workers, %d errors)\n",
			rep.OpsPerSec, rep.Transport, rep.Creates, rep.Deletes, rep.Duration, rep.Concurrency, rep.Errors)
		fmt.Fprintf(w, "  create p50 %.2f ms  p99 %.2f ms;  delete p50 %.2f ms  p99 %.2f ms\n",
			rep.CreateP50Ms, rep.CreateP99Ms, rep.DeleteP50Ms, rep.DeleteP99Ms)
		if rep.EtcdPutRate > 0 {
			fmt.Fprintf(w, "  baseline: raw etcd %.0f puts/s in %d-op txns; ratio %.2f\n", rep.EtcdPutRate, rep.EtcdOpsInTxn, rep.Ratio)
		}
		fmt.Fprintf(w, "  goal: %.0f ops/s on %d CPUs\n", rep.GoalOpsSec, rep.CPUs)
		if rep.Calibration != nil {
			fmt.Fprintf(w, "  %s\n", rep.Calibration)
		}
	})
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the measured phase")
	f.IntVar(&cfg.Concurrency, "concurrency", 128, "client workers, each with its own connection")
	f.IntVar(&cfg.Hosts, "hosts", 16, "hosts the endpoints are spread over")
	f.StringVar(&cfg.DataDir, "data-dir", "", "embedded etcd data dir (default: a temporary one)")
	f.StringVar(&cfg.Server, "server", "", "benchmark a running controller at this URL instead (no etcd baseline)")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "serve the API over plain HTTP without credentials (the baseline of the default, HTTPS with a token)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (controller and clients) to this file")
	return cmd
}

// startCPUProfile starts a CPU profile into path ("" = none) and returns
// the function that stops it.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// simBenchCmd completes cmd, a simulation benchmark: the flags every one
// has, its child processes run by this binary, and its report (reportCmd).
func simBenchCmd[R any](cmd *cobra.Command, c *bench.SimConfig, run func(context.Context) (*R, error), text func(io.Writer, *R)) *cobra.Command {
	reportCmd(cmd, func(cmd *cobra.Command) (*R, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the weft binary for child processes: %w", err)
		}
		// The children's warnings and errors go with the progress lines.
		c.Exec, c.Progress, c.ChildLog = exe, cmd.ErrOrStderr(), cmd.ErrOrStderr()
		return run(cmd.Context())
	}, text)
	f := cmd.Flags()
	f.IntVar(&c.Hosts, "hosts", 10000, "simulated hosts (agents)")
	f.IntVar(&c.Endpoints, "endpoints", 100000, "endpoints spread over the hosts")
	f.IntVar(&c.VPCs, "vpcs", 1000, "VPCs")
	f.IntVar(&c.Replicas, "replicas", 0, "controller replicas (default: from --hosts)")
	f.IntVar(&c.Procs, "procs", 0, "agent processes (default: from --hosts)")
	f.StringVar(&c.DataDir, "data-dir", "", "embedded etcd data dir (default: a temporary one)")
	f.StringVar(&c.CPUProfileDir, "cpuprofile-dir", "", "write CPU profiles of every replica and agent process, and the agent processes' heap profiles, here")
	f.DurationVar(&c.Timeout, "timeout", 10*time.Minute, "bound on the wait for all agents to be programmed")
	return cmd
}

func newBenchColdstartCmd() *cobra.Command {
	var cfg bench.ColdstartConfig
	cmd := simBenchCmd(&cobra.Command{
		Use:   "coldstart",
		Short: "All simulated hosts connect at once after a power loss: time until all are programmed",
		Long: `Load the state (--hosts, --endpoints, --vpcs, --policies) into etcd, start
the controller replicas, then start every simulated agent at once (sim
datapath, real protocol over loopback, child processes under the open-file
limit) and measure the time until every agent has applied its view (with
the compiled policies of its endpoints), and the replicas' RSS and CPU.`,
		Example: `  weft bench coldstart --hosts 10000 --endpoints 100000 --vpcs 1000
  weft bench coldstart --hosts 10000 --endpoints 100000 --vpcs 1000 --policies 10000`,
	}, &cfg.SimConfig, func(ctx context.Context) (*bench.ColdstartReport, error) {
		return bench.Coldstart(ctx, cfg)
	}, func(w io.Writer, rep *bench.ColdstartReport) {
		fmt.Fprintf(w, "coldstart: %d hosts, %d endpoints, %d VPCs, %d replicas, %d agent procs: %d/%d programmed in %.3f s (goal %.0f s)\n",
			rep.Hosts, rep.Endpoints, rep.VPCs, rep.Replicas, rep.AgentProcs, rep.Programmed, rep.Hosts, rep.ProgrammedSeconds, rep.GoalSeconds)
		fmt.Fprintf(w, "  setup %.1f s, replica start %.1f s, longest agent-process start %.1f s, heartbeat loss %.4f (kernel drops at the replicas' sockets per heartbeat sent), load %s\n",
			rep.SetupSeconds, rep.ReplicaStartSeconds, rep.AgentStartSeconds, rep.HeartbeatLoss, rep.LoadAvg)
		if rep.Calibration != nil {
			fmt.Fprintf(w, "  %s\n", rep.Calibration)
		}
		if rep.Policies > 0 {
			fmt.Fprintf(w, "  %d policies, %d security identities\n", rep.Policies, rep.Identities)
		}
		for _, c := range rep.Controllers {
			b, _ := json.Marshal(c)
			fmt.Fprintf(w, "  replica %s\n", b)
		}
	})
	cmd.Flags().IntVar(&cfg.Policies, "policies", 0, policiesUsage)
	return cmd
}

func newBenchProgramCmd() *cobra.Command {
	var cfg bench.ProgramConfig
	cmd := simBenchCmd(&cobra.Command{
		Use:     "program",
		Short:   "API write -> target agent has programmed it, with many hosts connected: p50/p99",
		Example: `  weft bench program --hosts 10000 --writes 300`,
	}, &cfg.SimConfig, func(ctx context.Context) (*bench.ProgramReport, error) {
		return bench.Program(ctx, cfg)
	}, func(w io.Writer, rep *bench.ProgramReport) {
		fmt.Fprintf(w, "program: %d hosts, %d writes, %d applied, %d lost: p50 %.3f ms, p99 %.3f ms, max %.3f ms (goal p99 <= %.0f ms); API p50 %.3f ms p99 %.3f ms; load %s\n",
			rep.Hosts, rep.Writes, rep.Applied, rep.Lost, rep.P50Ms, rep.P99Ms, rep.MaxMs, rep.GoalP99Ms, rep.APIP50Ms, rep.APIP99Ms, rep.LoadAvg)
	})
	cmd.Flags().IntVar(&cfg.Writes, "writes", 200, "endpoints created one at a time")
	return cmd
}

func newBenchRolloutCmd() *cobra.Command {
	var cfg bench.RolloutConfig
	cmd := simBenchCmd(&cobra.Command{
		Use:   "rollout",
		Short: "Endpoints created concurrently through the API on many hosts: rate until all are programmed, p99 create -> programmed",
		Long: `Connect --hosts simulated agents, then create --creates endpoints through the
REST API, --concurrency at a time, spread evenly over the hosts, and measure
until every one is programmed on its host (its agent's datapath Set holds
it; goal >= 3,000 endpoints/s at 1,000 hosts), with each endpoint's
create -> programmed latency.`,
		Example: `  weft bench rollout --hosts 1000 --endpoints 1000 --vpcs 100 --creates 30000
  weft bench rollout --hosts 100 --endpoints 100 --vpcs 10 --creates 2000`,
	}, &cfg.SimConfig, func(ctx context.Context) (*bench.RolloutReport, error) {
		return bench.Rollout(ctx, cfg)
	}, func(w io.Writer, rep *bench.RolloutReport) {
		fmt.Fprintf(w, "rollout: %d hosts, %d replicas, %d creates (%d at a time): %d programmed in %.3f s, %.0f endpoints/s (goal %.0f); %d lost\n",
			rep.Hosts, rep.Replicas, rep.Creates, rep.Concurrency, rep.Programmed, rep.Seconds, rep.PerSec, rep.GoalPerSec, rep.Lost)
		fmt.Fprintf(w, "  create -> programmed p50 %.3f ms, p99 %.3f ms, max %.3f ms; API creates %.0f/s, p50 %.3f ms, p99 %.3f ms; load %s -> %s\n",
			rep.P50Ms, rep.P99Ms, rep.MaxMs, rep.APIPerSec, rep.APIP50Ms, rep.APIP99Ms, rep.LoadAvg, rep.LoadAvgEnd)
	})
	cmd.Flags().IntVar(&cfg.Creates, "creates", 10000, "endpoints created")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", 64, "API creates in flight")
	f := cmd.Flags()
	cfg.Hosts, cfg.Endpoints, cfg.VPCs = 1000, 1000, 100
	f.Lookup("hosts").DefValue, f.Lookup("endpoints").DefValue, f.Lookup("vpcs").DefValue = "1000", "1000", "100"
	return cmd
}

func newBenchMigrateCmd() *cobra.Command {
	var cfg bench.MigrateConfig
	cmd := simBenchCmd(&cobra.Command{
		Use:     "migrate",
		Short:   "Move endpoints that other hosts looked up: time until every interested host has the new location",
		Example: `  weft bench migrate --hosts 10000 --moves 200 --interested 10`,
	}, &cfg.SimConfig, func(ctx context.Context) (*bench.MigrateReport, error) {
		return bench.Migrate(ctx, cfg)
	}, func(w io.Writer, rep *bench.MigrateReport) {
		fmt.Fprintf(w, "migrate: %d hosts, %d moves x %d interested (%d registered, %d unanswered, %d incomplete): p50 %.3f ms, p99 %.3f ms, max %.3f ms (goal p99 <= %.0f ms)\n",
			rep.Hosts, rep.Moves, rep.Interested, rep.Registered, rep.Unanswered, rep.Incomplete, rep.P50Ms, rep.P99Ms, rep.MaxMs, rep.GoalP99Ms)
	})
	cmd.Flags().IntVar(&cfg.Moves, "moves", 100, "endpoints moved one at a time")
	cmd.Flags().IntVar(&cfg.Interested, "interested", 10, "hosts that look up each moved endpoint first")
	return cmd
}

func newBenchDatapathCmd() *cobra.Command {
	var (
		cfg          bench.DatapathConfig
		ebpfSampling []uint
	)
	cmd := reportCmd(&cobra.Command{
		Use:   "datapath",
		Short: "Real data plane (root): overlay vs veth throughput and latency, attach rate, first packet, resync; linux and ebpf drivers",
		Long: `Build two hosts in network namespaces with the data plane drivers of
--datapath (no controller: misses are answered from a table) and measure, in
the same run, the drivers side by side: TCP throughput endpoint to endpoint
across hosts over each driver's VXLAN overlay against a plain veth pair and
the bare underlay (interleaved rounds, underlay MTU 1500 and 9000; the
sender's and receiver's CPU per GB; the linux driver's tuning table), TCP
request/response latency over the same paths, endpoint attach rate and
latency, the first packet to a never-seen peer, and a driver restart's
resync of 1,000 endpoints with a ping running. Needs root; removes every
namespace (and every BPF pin) it made.`,
		Example: `  sudo weft bench datapath
  sudo weft bench datapath --datapath linux,ebpf --rounds 15
  sudo weft bench datapath --rounds 3 -o json`,
	}, func(cmd *cobra.Command) (*bench.DatapathReport, error) {
		cfg.Progress = cmd.ErrOrStderr()
		for _, v := range ebpfSampling {
			if v > math.MaxUint32 {
				return nil, usageErrorf("--ebpf-flow-sampling %d: out of range", v)
			}
			cfg.EBPFFlowSampling = append(cfg.EBPFFlowSampling, uint32(v))
		}
		return bench.Datapath(cmd.Context(), cfg)
	}, datapathText)
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Datapaths, "datapath", nil, "drivers to measure, side by side: linux, ebpf, or linux,ebpf (default linux)")
	f.IntVar(&cfg.Rounds, "rounds", 0, "interleaved throughput and latency rounds (default 7)")
	f.StringVar(&cfg.Tool, "tool", "", "throughput sender: go (default), iperf3, or auto")
	f.UintSliceVar(&ebpfSampling, "ebpf-flow-sampling", nil, "the ebpf driver's flow sampling, as weft agent --flow-sampling (0: none); several values measure it once per value in the same rounds (default: the agent's)")
	f.Lookup("ebpf-flow-sampling").DefValue = "[1]"
	f.BoolVar(&cfg.EBPFUnderlayXDP, "ebpf-underlay-xdp", false, "also measure the ebpf driver with an XDP program that passes every packet on both hosts' underlay devices, in the same rounds (what any XDP program there costs; see the ebpf driver's package doc)")
	return cmd
}

// datapathText prints a data plane report as a table per phase, a line per
// driver.
func datapathText(w io.Writer, rep *bench.DatapathReport) {
	fmt.Fprintf(w, "datapath: %v, took %s; load %.2f -> %.2f on %d CPUs (kernel %s)\n",
		rep.Config.Datapaths, rep.Took, rep.Env.LoadStart, rep.Env.LoadEnd, rep.Env.CPUs, rep.Env.Kernel)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	goal := func(dp string, linux, ebpf float64) float64 {
		if dp == bench.DatapathEBPF {
			return ebpf
		}
		return linux
	}
	if t := rep.Tput; t != nil {
		fmt.Fprintf(tw, "throughput (%s, %d rounds)\tMTU\tveth Gbit/s\toverlay Gbit/s\toverlay/veth median (range)\tgoal\tCPU ms/GB sender, receiver (veth)\n", t.Tool, rep.Config.Rounds)
		for _, r := range t.Final {
			fmt.Fprintf(tw, "  %s\t%d\t%.2f\t%.2f\t%.3f (%.3f..%.3f)\t>= %.2f\t%.0f, %.0f (%.0f, %.0f)\n", r.Name(), r.UnderlayMTU, r.VethGbps, r.OverlayGbps,
				r.Ratio, r.RatioMin, r.RatioMax, goal(r.Datapath, rep.Goals.OverlayRatio, rep.Goals.EBPFOverlayRatio),
				r.OverlayCPU.SenderMsPerGB, r.OverlayCPU.ReceiverMsPerGB, r.VethCPU.SenderMsPerGB, r.VethCPU.ReceiverMsPerGB)
		}
	}
	if l := rep.Latency; l != nil {
		fmt.Fprintf(tw, "TCP request/response (%d rounds of %s)\ttransactions\tp50 µs\tp99 µs\tper s\n", l.Rounds, l.Duration)
		for _, p := range l.Paths {
			fmt.Fprintf(tw, "  %s\t%d\t%.1f\t%.1f\t%.0f\n", p.Path, p.Transactions, p.P50Us, p.P99Us, p.PerSec)
		}
	}
	for _, a := range rep.Attach {
		fmt.Fprintf(tw, "attach %d endpoints\t%s\t", a.Endpoints, a.Datapath)
		for _, s := range a.Successive {
			fmt.Fprintf(tw, "successive%s %.1f/s (p50 %.2f, p99 %.2f ms); ", strings.TrimSuffix(" resync "+s.EndpointResync, " resync "), s.PerSec, s.P50Ms, s.P99Ms)
		}
		fmt.Fprintf(tw, "one Set %.1f/s, %.1f writes each\n", a.BatchPerSec, a.WritesPerEP)
	}
	for _, f := range rep.First {
		fmt.Fprintf(tw, "first packet, %d peers\t%s\tp50 %.3f ms, p99 %.3f ms (goal <= %.0f ms), max %.3f ms, %d lost\n", f.Peers, f.Datapath,
			f.P50Ms, f.P99Ms, goal(f.Datapath, rep.Goals.FirstPacketMs, rep.Goals.EBPFFirstPacketMs), f.MaxMs, f.Lost)
	}
	for _, r := range rep.Resync {
		fmt.Fprintf(tw, "resync %d endpoints\t%s\tNew %.0f ms + Set %.0f ms, %d writes; ping %d sent, %d lost\n", r.Endpoints, r.Datapath,
			r.NewMs, r.SetMs, r.Writes.Total(), r.PingSent, r.PingLost)
	}
	tw.Flush()
}

func newBenchPolicyCmd() *cobra.Command {
	var (
		cfg    bench.PolicyConfig
		phases []string
	)
	cmd := simBenchCmd(&cobra.Command{
		Use:   "policy",
		Short: "Security policy: per-packet cost against the rule count; policy change -> enforced on every host (root for the kernel phases)",
		Long: `Measure in one run, by phase:
  rulecost  TCP request/response and connection rates between two endpoints on
            two hosts (linux driver, network namespaces) with 10 to 100,000 rules
            in their VPC, in interleaved rounds: median, range, and the ratio of
            the most rules to the fewest (goal >= 0.95)
  kernel    a controller and agents on the linux driver with --kernel-endpoints
            endpoints: a policy created through the API -> enforced on every host
            with an endpoint it selects (p50/p99; goal p99 <= 100 ms)
  sim       the same with --hosts simulated hosts on the sim driver (the
            machinery of 'weft bench program')
The rulecost and kernel phases need root and remove every namespace they make.`,
		Example: `  sudo weft bench policy
  sudo weft bench policy --phases rulecost --rounds 15
  weft bench policy --phases sim --hosts 10000 --changes 100`,
	}, &cfg.SimConfig, func(ctx context.Context) (*bench.PolicyReport, error) {
		cfg.Phases = phases
		return bench.Policy(ctx, cfg)
	}, func(w io.Writer, rep *bench.PolicyReport) {
		fmt.Fprintf(w, "policy: took %s; load %.2f -> %.2f on %d CPUs (kernel %s)\n", rep.Took, rep.Env.LoadStart, rep.Env.LoadEnd, rep.Env.CPUs, rep.Env.Kernel)
		if rc := rep.RuleCost; rc != nil {
			for _, c := range rc.Counts {
				fmt.Fprintf(w, "  rulecost %7d rules: request/response %8.0f/s (%.0f..%.0f), connections %7.0f/s (%.0f..%.0f)\n",
					c.Rules, c.RRPerSec, c.RRMin, c.RRMax, c.CRRPerSec, c.CRRMin, c.CRRMax)
			}
			fmt.Fprintf(w, "  rulecost most/fewest rules, %d rounds of %s: request/response %.3f (%.3f..%.3f), connections %.3f (%.3f..%.3f) (goal >= %.2f)\n",
				rc.Rounds, rc.Duration, rc.RRRatio, rc.RRRatioMin, rc.RRRatioMax, rc.CRRRatio, rc.CRRRatioMin, rc.CRRRatioMax, rep.Goals.RuleCostRatio)
		}
		for _, p := range []struct {
			name string
			part *bench.PolicyChangePart
		}{{"kernel", rep.Kernel}, {"sim", rep.Sim}} {
			if c := p.part; c != nil {
				fmt.Fprintf(w, "  %s: %d hosts, %d endpoints, %d changes reaching %.1f hosts each (%d incomplete): enforced on all p50 %.3f ms, p99 %.3f ms, max %.3f ms; per host p99 %.3f ms; API p99 %.3f ms (goal p99 <= %.0f ms)\n",
					p.name, c.Hosts, c.Endpoints, c.Changes, c.AffectedHosts, c.Incomplete, c.P50Ms, c.P99Ms, c.MaxMs, c.HostP99Ms, c.APIP99Ms, rep.Goals.ChangeP99Ms)
			}
		}
	})
	f := cmd.Flags()
	f.StringSliceVar(&phases, "phases", nil, "phases to run: rulecost, kernel, sim (default all)")
	f.IntSliceVar(&cfg.RuleCounts, "rule-counts", nil, "rules per VPC of the rulecost phase (default 10,1000,10000,100000)")
	f.IntVar(&cfg.Rounds, "rounds", 0, "interleaved rounds of the rulecost phase (default 15)")
	f.DurationVar(&cfg.Duration, "duration", 0, "measuring time per rule count, mode and round (default 1s)")
	f.IntVar(&cfg.KernelHosts, "kernel-hosts", 0, "hosts of the kernel phase (default 2)")
	f.IntVar(&cfg.KernelEndpoints, "kernel-endpoints", 0, "endpoints of the kernel phase, in VPCs of 100 (default 1000)")
	f.DurationVar(&cfg.KernelResync, "endpoint-resync", 0, "the linux driver's EndpointResync in the kernel phase (0: the driver's default, as weft agent; negative: every Set)")
	f.IntVar(&cfg.Changes, "changes", 0, "policies created one at a time in the kernel and sim phases (default 50)")
	// The sim phase's sizes default to 'weft bench program''s: 2
	// endpoints per host in 100 VPCs (Policy fills in zeros).
	cfg.Endpoints, cfg.VPCs = 0, 0
	f.Lookup("endpoints").DefValue, f.Lookup("vpcs").DefValue = "2 per host", "100"
	return cmd
}

func newBenchQoSCmd() *cobra.Command {
	var cfg bench.QoSConfig
	cmd := reportCmd(&cobra.Command{
		Use:   "qos",
		Short: "QoS (root): throughput of an endpoint without QoS with the QoS tree installed vs without",
		Long: `Build two hosts in network namespaces with the linux driver (no controller)
and measure one TCP stream between two endpoints that have no QoS of their
own, in interleaved rounds with the QoS tree installed (uplinks shaped, a
neighbour under a capped, guaranteed, marked class in the same VPC) and
without it. Reports the medians, ranges and the ratio (goal >= 0.95). Needs
root; removes every namespace it made.`,
		Example: `  sudo weft bench qos
  sudo weft bench qos --rounds 15 -o json`,
	}, func(cmd *cobra.Command) (*bench.QoSReport, error) {
		cfg.Progress = cmd.ErrOrStderr()
		return bench.QoS(cmd.Context(), cfg)
	}, func(w io.Writer, rep *bench.QoSReport) {
		fmt.Fprintf(w, "qos: %d rounds (%s): with the tree %.2f Gbit/s (%.2f..%.2f), without %.2f Gbit/s (%.2f..%.2f): ratio %.3f (%.3f..%.3f) (goal >= %.2f); load %.2f -> %.2f\n",
			rep.Rounds, rep.Tool, rep.WithGbps, rep.WithMin, rep.WithMax, rep.WithoutGbps, rep.WithoutMin, rep.WithoutMax,
			rep.Ratio, rep.RatioMin, rep.RatioMax, rep.Goal, rep.Env.LoadStart, rep.Env.LoadEnd)
		fmt.Fprintf(w, "  tree: %s\n", rep.Tree)
	})
	f := cmd.Flags()
	f.IntVar(&cfg.Rounds, "rounds", 0, "interleaved rounds (default 15)")
	f.DurationVar(&cfg.Duration, "duration", 0, "measured time per stream (default 1s)")
	f.StringVar(&cfg.Tool, "tool", "", "sender: go (default), iperf3, or auto")
	return cmd
}

func newBenchCNICmd() *cobra.Command {
	var cfg bench.CNIConfig
	var cpuProfile string
	cmd := reportCmd(&cobra.Command{
		Use:   "cni",
		Short: "CNI attach (root): weft-cni ADDs, successive and concurrent, with the warm pool and without",
		Long: `Start a controller and one host's agent with its CNI server (linux driver,
in this process) and attach containers through the weft-cni plugin, each
ADD timed from the plugin's exec to its result (the interface configured,
the endpoint programmed and written Ready): one at a time, then
--concurrency at a time; on a lab without the warm pool and on one with it.
Reports rates, p50/p99 and the pool's ratio to the baseline (goal >= 1,000
attaches/s, p99 <= 10 ms with the pool). Needs root and the weft-cni binary
(next to weft, on PATH, or --plugin); removes every namespace it made.`,
		Example: `  go build -o bin/ ./cmd/weft && CGO_ENABLED=0 go build -o bin/ ./cmd/weft-cni && sudo bin/weft bench cni
  sudo weft bench cni --attaches 500 --concurrency 32 -o json`,
	}, func(cmd *cobra.Command) (*bench.CNIReport, error) {
		cfg.Progress = cmd.ErrOrStderr()
		stop, err := startCPUProfile(cpuProfile)
		if err != nil {
			return nil, err
		}
		defer stop()
		return bench.CNI(cmd.Context(), cfg)
	}, func(w io.Writer, rep *bench.CNIReport) {
		fmt.Fprintf(w, "cni: took %s; load %.2f -> %.2f on %d CPUs (kernel %s)\n", rep.Took, rep.Env.LoadStart, rep.Env.LoadEnd, rep.Env.CPUs, rep.Env.Kernel)
		fmt.Fprintf(w, "  plugin alone (VERSION, the floor of an ADD) %4d runs:    %7.1f execs/s,    p50 %6.2f ms, p99 %6.2f ms\n",
			rep.Exec.Runs, rep.Exec.PerSec, rep.Exec.P50Ms, rep.Exec.P99Ms)
		for _, s := range rep.Series {
			fmt.Fprintf(w, "  pool %-5v %4d ADDs, %2d at a time: %7.1f attaches/s, p50 %6.2f ms, p99 %6.2f ms, max %6.2f ms (%d from the pool)\n",
				s.Pool, s.Attaches, s.Concurrency, s.PerSec, s.P50Ms, s.P99Ms, s.MaxMs, s.FromPool)
		}
		fmt.Fprintf(w, "  pool/baseline attach rate: successive %.2f, concurrent %.2f (goal >= %.0f attaches/s, p99 <= %.0f ms with the pool)\n",
			rep.PoolRatio.Successive, rep.PoolRatio.Concurrent, rep.Goals.AttachesPerSec, rep.Goals.P99Ms)
	})
	f := cmd.Flags()
	f.StringVar(&cfg.Plugin, "plugin", "", "the weft-cni binary (default: next to weft, else on PATH)")
	f.IntVar(&cfg.Attaches, "attaches", 0, "containers attached per series (default 200)")
	f.IntVar(&cfg.Concurrency, "concurrency", 0, "ADDs in flight in the concurrent series (default 32)")
	f.IntVar(&cfg.Pool, "pool", 0, "warm pool size in the pooled lab (default: --attaches)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (controller, agent and CNI server; not the plugin processes) to this file")
	return cmd
}

// reportCmd completes cmd, a command that runs a benchmark or a
// simulation: it adds -o and runs run, then prints the report run returns
// (also one of a run that failed part-way) as one JSON object or, with -o
// table, with text (nil: indented JSON).
func reportCmd[R any](cmd *cobra.Command, run func(*cobra.Command) (*R, error), text func(io.Writer, *R)) *cobra.Command {
	var output string
	usage := "report format: table or json"
	if text == nil {
		usage = "report format: table (indented JSON) or json"
		text = func(w io.Writer, rep *R) {
			b, _ := json.MarshalIndent(rep, "", "  ")
			fmt.Fprintf(w, "%s\n", b)
		}
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", usage)
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output != "table" && output != "json" && output != "" {
			return fmt.Errorf("-o %q: want table or json", output)
		}
		rep, err := run(cmd)
		if rep == nil {
			return err
		}
		if output == "json" {
			if werr := json.NewEncoder(cmd.OutOrStdout()).Encode(rep); werr != nil {
				return werr
			}
		} else {
			text(cmd.OutOrStdout(), rep)
		}
		return err
	}
	return cmd
}
