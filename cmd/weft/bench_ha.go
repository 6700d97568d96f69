package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/sim/bench"
)

func newBenchHACmd() *cobra.Command {
	var (
		cfg    bench.HAConfig
		faults string
	)
	cmd := reportCmd(&cobra.Command{
		Use:   "ha",
		Short: "Faults on a 3-member embedded etcd cluster under API churn: unavailability, lost writes, linearizability",
		Long: `Start --members controller replicas, each in a process of its own embedding a
member of one etcd cluster (TLS peers), let --workers API clients create,
update, delete and read --keys objects through them, and create and delete
endpoints beside them (a client moves to another replica when its own fails),
and inject the faults one after another:
kill-leader (SIGKILL the etcd leader's replica, restart it after --hold),
kill-follower (the same on a follower), pause-leader (SIGSTOP the leader's
replica for --hold, past the election timeout, then SIGCONT), pause-follower
(the same on a follower).

The report gives each fault's worst write unavailability (the longest time
without an acknowledged write, goal 5 s), the acknowledged writes lost (the
last write of a key not read back at the end; must be 0) and porcupine's
verdict on the linearizability of the whole recorded history (must be Ok),
and the IPs and MACs held by more than one endpoint at the end (must be 0).
The command fails when a write was lost, the history is not linearizable or
an address is held twice.`,
		Example: `  weft bench ha
  weft bench ha --faults kill-leader --hold 5s -o json`,
	}, func(cmd *cobra.Command) (*bench.HAReport, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the weft binary for the replicas: %w", err)
		}
		cfg.Exec, cfg.Progress = exe, cmd.ErrOrStderr()
		if faults != "" {
			cfg.Faults = splitCSV(faults)
		}
		rep, err := bench.HA(cmd.Context(), cfg)
		if err == nil && (rep.LostWrites > 0 || rep.Linearizable != "Ok" || rep.DuplicateAddresses > 0) {
			err = fmt.Errorf("bench ha: %d acknowledged writes lost, linearizability %s, %d duplicate addresses", rep.LostWrites, rep.Linearizable, rep.DuplicateAddresses)
		}
		return rep, err
	}, func(w io.Writer, rep *bench.HAReport) {
		fmt.Fprintf(w, "ha: %d members, %d workers over %d keys for %s: %d operations, %d writes acknowledged, %d of unknown outcome\n",
			rep.Members, rep.Workers, rep.Keys, rep.Duration.Round(time.Millisecond), rep.Ops, rep.AckedWrites, rep.UnknownWrites)
		for _, f := range rep.Faults {
			fmt.Fprintf(w, "  %-14s %-4s at %7.2fs, healed %7.2fs: worst write unavailability %s\n",
				f.Kind, f.Member, f.At.Seconds(), f.Healed.Seconds(), f.Unavailable.Round(time.Millisecond))
		}
		verdict := "met"
		if rep.WorstUnavailable > rep.GoalUnavailable {
			verdict = "missed"
		}
		fmt.Fprintf(w, "  worst %s (goal ≤ %s: %s); lost acknowledged writes %d; linearizable (porcupine): %s; %d endpoints, %d duplicate addresses\n",
			rep.WorstUnavailable.Round(time.Millisecond), rep.GoalUnavailable, verdict, rep.LostWrites, rep.Linearizable, rep.Endpoints, rep.DuplicateAddresses)
		fmt.Fprintf(w, "  %d CPUs, load %s\n", rep.CPUs, rep.Load)
	})
	f := cmd.Flags()
	f.IntVar(&cfg.Members, "members", 3, "replicas, each embedding an etcd member")
	f.IntVar(&cfg.Workers, "workers", 8, "API clients")
	f.IntVar(&cfg.Keys, "keys", 16, "objects the clients write and read")
	f.StringVar(&faults, "faults", "", "comma-separated faults, in order (default "+strings.Join(bench.HAFaults, ",")+")")
	f.DurationVar(&cfg.Hold, "hold", 3*time.Second, "how long a fault lasts before it heals")
	f.DurationVar(&cfg.Settle, "settle", 3*time.Second, "time after healing before the next fault")
	f.StringVar(&cfg.Dir, "data-dir", "", "directory of the replicas' data dirs (default: a temporary one)")
	return cmd
}
