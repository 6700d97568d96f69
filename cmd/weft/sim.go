package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/sim"
	"github.com/weftnet/weft/sim/bench"
)

// newSimCmd is `weft sim`: a controller and N simulated agents speaking
// the real protocol over loopback.
func newSimCmd() *cobra.Command {
	var (
		cfg        sim.RunConfig
		inProcess  bool
		childDebug bool
	)
	cmd := reportCmd(&cobra.Command{
		Use:   "sim",
		Short: "Run a scale simulation: a controller and N simulated hosts over loopback",
		Long: `Bulk-load --endpoints endpoints in --vpcs VPCs on --hosts hosts (and
--policies security policies) into an embedded etcd, start --replicas
controller replicas on it, then start one real agent per host (own TCP
stream, own UDP socket, host key and host ID, sim datapath) in --procs
child processes, all at once. Progress goes to
stderr every second; the final report (time from the agents' start to all
programmed, heartbeat loss (datagrams the kernel dropped at the
replicas' southbound sockets per heartbeat sent), lookups answered, each replica's RSS and CPU
seconds) to stdout. Everything stops and is removed at the end or on Ctrl-C.

The simulated hosts answer traces and captures as real ones do: while
the run holds, point 'weft trace' and 'weft capture' at the API address
the progress lines show (replica 0's: --server http://ADDR
--insecure-http). A probe crosses from one simulated host to another
(through this process when they are in different agent processes) and
each host's agent reports the hops its datapath saw; a capture returns the
synthesized packets of the tenant's endpoints as one pcapng. Tenants are
t0, t1, ... (100 VPCs each), VPCs v0, v1, ..., endpoints e0, e1, ...`,
		Example: `  weft sim --hosts 1000 --endpoints 10000 --vpcs 100
  weft sim --hosts 50000 --endpoints 500000 --vpcs 5000 --lookups 20000 -o json

  # trace and capture while it holds (the API address is in the progress)
  weft sim --hosts 10 --endpoints 40 --vpcs 1 --hold 10m
  weft trace --server http://127.0.0.1:PORT --insecure-http --tenant t0 --from e0 --to e1 --proto tcp --dport 80
  weft capture --server http://127.0.0.1:PORT --insecure-http --tenant t0 --vpc v0 --duration 10s -w v0.pcapng`,
	}, func(cmd *cobra.Command) (*sim.Report, error) {
		cfg.Progress = cmd.ErrOrStderr()
		if !inProcess {
			exe, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("sim: find the weft binary for child processes: %w", err)
			}
			cfg.Exec = exe
		}
		if childDebug {
			cfg.ChildLog, cfg.Debug = cmd.ErrOrStderr(), true
		}
		return sim.Run(cmd.Context(), cfg)
	}, printSimReport)
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 1000, "simulated hosts (one agent each)")
	f.IntVar(&cfg.Endpoints, "endpoints", 10000, "endpoints, spread over hosts and VPCs")
	f.IntVar(&cfg.VPCs, "vpcs", 100, "VPCs (100 per tenant)")
	f.IntVar(&cfg.Policies, "policies", 0, policiesUsage)
	f.IntVar(&cfg.Replicas, "replicas", 0, fmt.Sprintf("controller replicas (default: one per %d hosts)", sim.MaxAgentsPerReplica))
	f.IntVar(&cfg.Procs, "procs", 0, fmt.Sprintf("agent child processes (default: one per %d hosts)", sim.MaxAgentsPerProc))
	f.IntVar(&cfg.Writers, "writers", 512, "concurrent writers of the bulk load")
	f.IntVar(&cfg.LookupRate, "lookups", 0, "packets per second to random addresses (UDP lookups) during --hold")
	f.DurationVar(&cfg.Hold, "hold", 5*time.Second, "keep running after all are programmed, to measure heartbeats and lookups")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "give up waiting for all agents to be programmed after this")
	f.DurationVar(&cfg.BackoffMin, "backoff", 0, "cap of each agent's random delay before its first connect (default: the agent's, 1s)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "embedded etcd data dir (default: a temporary one, removed at the end)")
	f.StringVar(&cfg.CPUProfileDir, "cpuprofile-dir", "", "write a CPU profile of each controller replica (controller-N.pprof) into this directory")
	f.BoolVar(&inProcess, "in-process", false, "run everything in this process (small runs only: 20,000 open files)")
	f.BoolVar(&childDebug, "debug", false, "show the controller replicas' and agents' logs (info and above)")
	return cmd
}

// newSimChildCmd is the hidden subcommand weft re-executes itself with to
// run a child process: a controller replica or a group of agents of a
// simulation, or a benchmark's load generator (see package sim).
func newSimChildCmd() *cobra.Command {
	return &cobra.Command{
		Use:    sim.ChildCommand,
		Short:  "Run a child process of weft sim or weft bench (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sim.RunChild(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), bench.ChildRoles())
		},
	}
}

// policiesUsage is the help of --policies of weft sim and weft bench coldstart.
const policiesUsage = "security policies, spread over the VPCs, each selecting one app label of the endpoints there (about as many identities)"

func printSimReport(w io.Writer, r *sim.Report) {
	fmt.Fprintf(w, "sim: %d hosts, %d endpoints, %d VPCs; %d controller replica(s), %d agent process(es)\n",
		r.Hosts, r.Endpoints, r.VPCs, r.Replicas, r.AgentProcs)
	if r.Policies > 0 {
		fmt.Fprintf(w, "  policies                 %d, %d security identities\n", r.Policies, r.Identities)
	}
	fmt.Fprintf(w, "  setup (bulk load)        %.3f s\n", r.SetupSeconds)
	fmt.Fprintf(w, "  replicas started         %.3f s\n", r.ReplicaStartSeconds)
	fmt.Fprintf(w, "  all programmed           %.3f s after the agents started (%d/%d programmed, %d connected)\n",
		r.ProgrammedSeconds, r.Programmed, r.Hosts, r.Connected)
	fmt.Fprintf(w, "  heartbeats (%.1f s hold) %d sent, %d processed, loss %.4f (%d datagrams dropped by the kernel at the replicas' sockets; %d bytes queued there when the hold began)\n",
		r.HoldSeconds, r.HeartbeatsSent, r.HeartbeatsProcessed, r.HeartbeatLoss, r.ReplicaSocketDrops, r.ReplicaQueuedBytes)
	fmt.Fprintf(w, "  lookups                  %d queries; answered %d found + %d not found; %d answers applied\n",
		r.LookupQueries, r.LookupsFound, r.LookupsNotFound, r.AgentAnswersApplied)
	fmt.Fprintln(w, "  replica  pid      RSS MiB  CPU s")
	for _, u := range r.Controllers {
		note := ""
		if u.InProcess {
			note = "  (in-process: includes the harness and agents)"
		}
		fmt.Fprintf(w, "  %-7d  %-7d  %7.0f  %6.1f%s\n", u.Index, u.PID, float64(u.RSSBytes)/(1<<20), u.CPUSeconds, note)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
}
