package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/sim/bench"
)

func newBenchHACmd() *cobra.Command {
	var (
		cfg     bench.HAConfig
		faults  string
		logFile string
	)
	cmd := reportCmd(&cobra.Command{
		Use:   "ha",
		Short: "Faults on a 3-member embedded etcd cluster under API churn: unavailability, lost writes, linearizability, duplicates, hosts",
		Long: `Start --members controller replicas, each in a process of its own embedding a
member of one etcd cluster (TLS peers), let --workers API clients create,
update, delete and read --keys objects through them, and create and delete
VPCs and labelled endpoints beside them (a client moves to another replica
when its own fails), with --hosts simulated hosts (real agents with the sim
driver, in a child process, enrolled through the API) streaming from the
replicas, and inject the faults one after another, --rounds times:
kill-leader (SIGKILL the etcd leader's replica, restart it after --hold),
kill-follower (the same on a follower), pause-leader (SIGSTOP the leader's
replica for --hold, past the election timeout, then SIGCONT), pause-follower
(the same on a follower), partition-leader (cut the leader's member off its
peers with nftables drops in its network namespace until its replica
refuses a write with 503 and says so on /readyz, and --hold has passed,
then heal), partition-follower (the same on a follower).

Partition faults need root: with one, every replica runs in a network
namespace of its own, its etcd peer URL on an underlay bridge and its API,
southbound and etcd client URL on a control subnet (198.18.0.0/15) that
this process reaches over a veth; everything is removed at the end, also
on failure.

The report gives each fault's worst write unavailability (the longest time
without an acknowledged write, goal 5 s) and the worst per kind, the
acknowledged writes lost (the last write of a key not read back at the end;
must be 0), porcupine's verdict on the linearizability of the whole recorded
history (must be Ok), the IPs, MACs, VNIs and security identities held
twice at the end (must be 0), how long a cut-off replica took to refuse
writes, and whether every host converged (holds, applied, a view of exactly
the endpoints the API lists on it). The command fails when any of these
does not hold.

The short form (what CI's test runs) is one fault of each kind; the long
form for a release is every fault, several rounds, 1,000 hosts.`,
		Example: `  weft bench ha --faults ` + strings.Join(bench.HAShortFaults, ",") + `     # short form
  weft bench ha --rounds 3 --hosts 1000                               # long form
  weft bench ha --faults kill-leader,pause-leader --hold 5s -o json    # without root`,
	}, func(cmd *cobra.Command) (*bench.HAReport, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the weft binary for the replicas: %w", err)
		}
		cfg.Exec, cfg.Progress = exe, cmd.ErrOrStderr()
		if logFile != "" {
			f, err := os.Create(logFile)
			if err != nil {
				return nil, fmt.Errorf("--log: %w", err)
			}
			defer f.Close()
			cfg.ChildLog = &lockedWriter{w: f}
		}
		if faults != "" {
			cfg.Faults = splitCSV(faults)
		}
		rep, err := bench.HA(cmd.Context(), cfg)
		if err == nil {
			if fails := rep.Failures(); len(fails) > 0 {
				err = errors.New("bench ha: " + strings.Join(fails, "; "))
			}
		}
		return rep, err
	}, func(w io.Writer, rep *bench.HAReport) {
		fmt.Fprintf(w, "ha: %d members, %d workers over %d keys, %d simulated hosts, %d round(s) in %s: %d operations, %d writes acknowledged, %d of unknown outcome\n",
			rep.Members, rep.Workers, rep.Keys, rep.Hosts, rep.Rounds, rep.Duration.Round(time.Millisecond), rep.Ops, rep.AckedWrites, rep.UnknownWrites)
		for _, f := range rep.Faults {
			fmt.Fprintf(w, "  %d %-18s %-4s at %7.2fs, healed %7.2fs: worst write unavailability %s",
				f.Round, f.Kind, f.Member, f.At.Seconds(), f.Healed.Seconds(), f.Unavailable.Round(time.Millisecond))
			if f.MinorityRefused > 0 {
				fmt.Fprintf(w, "; cut-off replica refused writes after %s", f.MinorityRefused.Round(time.Millisecond))
			}
			if f.CutOffSessions > 0 {
				fmt.Fprintf(w, ", its %d agents moved after %s", f.CutOffSessions, f.Rehomed.Round(time.Millisecond))
			}
			if rep.Hosts > 0 {
				fmt.Fprintf(w, "; %d hosts connected", f.HostsConnected)
			}
			fmt.Fprintln(w)
		}
		kinds := make([]string, 0, len(rep.WorstByKind))
		for k := range rep.WorstByKind {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "  worst %-18s %s\n", k, rep.WorstByKind[k].Round(time.Millisecond))
		}
		verdict := "met"
		if rep.WorstUnavailable > rep.GoalUnavailable {
			verdict = "missed"
		}
		d := rep.Duplicates
		fmt.Fprintf(w, "  worst %s (goal ≤ %s: %s); lost acknowledged writes %d; linearizable (porcupine): %s\n",
			rep.WorstUnavailable.Round(time.Millisecond), rep.GoalUnavailable, verdict, rep.LostWrites, rep.Linearizable)
		fmt.Fprintf(w, "  %d endpoints, %d VPCs, %d identities: duplicate IPs %d, MACs %d, VNIs %d, identities %d\n",
			rep.Endpoints, rep.VPCs, rep.Identities, d.IPs, d.MACs, d.VNIs, d.Identities)
		if rep.Hosts > 0 {
			fmt.Fprintf(w, "  hosts converged %d/%d, %s after the churn stopped; %d config streams lost (re-homed)\n",
				rep.HostsConverged, rep.Hosts, rep.ConvergedAfter.Round(time.Millisecond), rep.HostStreamsLost)
		}
		fmt.Fprintf(w, "  %d CPUs, load %s\n", rep.CPUs, rep.Load)
	})
	f := cmd.Flags()
	f.IntVar(&cfg.Members, "members", 3, "replicas, each embedding an etcd member")
	f.IntVar(&cfg.Workers, "workers", 8, "API clients")
	f.IntVar(&cfg.Keys, "keys", 16, "objects the clients write and read")
	f.StringVar(&faults, "faults", "", "comma-separated faults, in order (default "+strings.Join(bench.HAFaults, ",")+")")
	f.IntVar(&cfg.Rounds, "rounds", 1, "times the faults are injected")
	f.IntVar(&cfg.Hosts, "hosts", 0, "simulated hosts streaming from the replicas (the long form: 1000)")
	f.DurationVar(&cfg.Hold, "hold", 3*time.Second, "how long a fault lasts before it heals")
	f.DurationVar(&cfg.Settle, "settle", 3*time.Second, "time after healing before the next fault")
	f.StringVar(&logFile, "log", "", "file the replicas' and the simulated hosts' logs go to (default: discarded)")
	f.StringVar(&cfg.Dir, "data-dir", "", "directory of the replicas' data dirs (default: a temporary one)")
	return cmd
}
