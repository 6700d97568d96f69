package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/sim/bench"
)

func newBenchReplicaStartCmd() *cobra.Command {
	var (
		cfg    bench.ReplicaStartConfig
		shapes string
	)
	cmd := reportCmd(&cobra.Command{
		Use:   "replicastart",
		Short: "Time from a controller replica's process start to serving, at 1,000,000 stored endpoints",
		Long: `Load --endpoints endpoints over --hosts hosts and --vpcs VPCs (the cold
start's layout, created through the registry with the controller's
validation and allocation) into an etcd data dir once, printing progress,
then start a controller replica process --starts times in each shape:

  embedded  the replica embeds the etcd holding the data (its data dir is
            the loaded one), as a single-replica controller restarts;
  client    the replica is a client of an etcd that serves the data from
            another process (started once, before the starts).

Each start is timed from the process's start until /readyz answers 200
(ready) and then until a first list (the endpoints of tenant t0) is
answered (serving), with the process's CPU time and RSS at that moment.
The report gives every start, the best, median and worst per shape against
the goal (10 s at 1,000,000 endpoints), the calibration line measured
first in the same run and the load average of the machine.`,
		Example: `  weft bench replicastart                         # 1,000,000 endpoints, 3 starts per shape
  weft bench replicastart --endpoints 100000 --starts 1 -o json
  weft bench replicastart --shapes client --data-dir /var/tmp/rs`,
	}, func(cmd *cobra.Command) (*bench.ReplicaStartReport, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the weft binary for the replicas: %w", err)
		}
		cfg.Exec, cfg.Progress = exe, cmd.ErrOrStderr()
		if shapes != "" {
			cfg.Shapes = splitCSV(shapes)
		}
		return bench.ReplicaStart(cmd.Context(), cfg)
	}, func(w io.Writer, rep *bench.ReplicaStartReport) {
		fmt.Fprintf(w, "replicastart: %d endpoints, %d hosts, %d VPCs (%d objects loaded in %s)\n",
			rep.Endpoints, rep.Hosts, rep.VPCs, rep.Objects, rep.LoadTime.Round(time.Millisecond))
		for _, r := range rep.Starts {
			fmt.Fprintf(w, "  %-8s ready %8s  serving %8s  CPU %7s  RSS %6.2f GiB  load %s\n", r.Shape,
				r.Ready.Round(time.Millisecond), r.Serving.Round(time.Millisecond), r.CPU.Round(10*time.Millisecond), float64(r.RSS)/(1<<30), r.LoadAvg)
		}
		for _, shape := range []string{bench.ShapeEmbedded, bench.ShapeClient} {
			s, ok := rep.Shapes[shape]
			if !ok {
				continue
			}
			verdict := "met"
			if s.Median > rep.Goal {
				verdict = "missed"
			}
			fmt.Fprintf(w, "  %-8s serving best %s, median %s, worst %s over %d starts (goal ≤ %s: %s); max RSS %.2f GiB, max CPU %s\n",
				shape, s.Best.Round(time.Millisecond), s.Median.Round(time.Millisecond), s.Worst.Round(time.Millisecond), s.Starts,
				rep.Goal, verdict, float64(s.MaxRSS)/(1<<30), s.MaxCPU.Round(10*time.Millisecond))
		}
		if rep.EtcdRSS > 0 {
			fmt.Fprintf(w, "  the client shape's etcd process: RSS %.2f GiB\n", float64(rep.EtcdRSS)/(1<<30))
		}
		if rep.Calibration != nil {
			fmt.Fprintf(w, "  %s\n", rep.Calibration)
		}
		fmt.Fprintf(w, "  %d CPUs, load %s when the starts began\n", rep.CPUs, rep.LoadAvg)
	})
	f := cmd.Flags()
	f.IntVar(&cfg.Endpoints, "endpoints", 1_000_000, "endpoints loaded")
	f.IntVar(&cfg.Hosts, "hosts", 0, "hosts the endpoints are on (default endpoints/10)")
	f.IntVar(&cfg.VPCs, "vpcs", 0, "VPCs (default endpoints/100)")
	f.IntVar(&cfg.Starts, "starts", 3, "starts per shape")
	f.StringVar(&shapes, "shapes", "", "comma-separated shapes, in order: embedded, client (default both)")
	f.IntVar(&cfg.Writers, "writers", 64, "concurrent writers of the load")
	f.StringVar(&cfg.Dir, "data-dir", "", "directory of the loaded data (default: a temporary one, removed at the end)")
	f.DurationVar(&cfg.StartTimeout, "start-timeout", 5*time.Minute, "bound of one start")
	f.StringVar(&cfg.CPUProfiles, "cpuprofile-dir", "", "directory where each replica writes a CPU profile of its start, SHAPE-N.pprof (go tool pprof)")
	return cmd
}
