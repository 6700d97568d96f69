package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/sim/bench"
)

func newBenchRollingCmd() *cobra.Command {
	var (
		cfg     bench.RollingConfig
		logFile string
	)
	cmd := reportCmd(&cobra.Command{
		Use:   "rolling",
		Short: "Rolling restart (or upgrade, --from-binary) of 3 embedded-HA replicas with 10,000 simulated hosts: no host reprogrammed, no endpoint Lost",
		Long: `Start --members controller replicas, each in a process of its own embedding
a member of one etcd cluster (TLS peers), enrol --hosts simulated hosts
through their API and create --endpoints-per-host endpoints on each, start
the hosts (real agents with the sim driver, up to 5,000 in each child
process, reporting their endpoints' status through the replicas' APIs) and
wait until every host holds its applied view and every endpoint is Ready. Then restart the replicas one after another: stop one
(SIGTERM to a 'weft controller' process, the end of its input to a replica
of this build), start it again from this build on the same data dir, and
wait until it is ready, every host is connected holding its applied view
and the etcd cluster is whole (every member following one leader, caught
up), then write an object through every replica and read it back through
every other one.

With --from-binary PATH the replicas start as 'PATH controller ...' (an
older weft) and each is restarted into this build: a rolling upgrade, with
replicas of both builds serving the same stored objects mid-roll. The old
binary needs 'weft controller' with --etcd-peer-listen, --etcd-client-listen
and --etcd-initial-cluster. To build one from an older commit:

  git worktree add /tmp/weft-old COMMIT
  (cd /tmp/weft-old && go build -o /tmp/weft-old/weft ./cmd/weft)
  weft bench rolling --from-binary /tmp/weft-old/weft
  git worktree remove /tmp/weft-old

The report gives each step's times (stopped, successor ready, hosts
re-homed) and the worst step, and fails unless: no host's datapath was
written after its initial programming (the sim driver counts every
write), no endpoint was seen Lost and no host Dead (checked after every
step and at the end), the replicas sent no full snapshot to an agent that
failed over (each must resume from its version with a delta), and every
object written through one replica was read back through the others. It
also counts the endpoints whose stored object changed during the roll (an
agent's report written again after a move).`,
		Example: `  weft bench rolling                                    # 10,000 hosts, rolling restart
  weft bench rolling --from-binary /tmp/weft-old/weft   # rolling upgrade
  weft bench rolling --hosts 200 -o json                # the CI smoke size`,
	}, func(cmd *cobra.Command) (*bench.RollingReport, error) {
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
		rep, err := bench.Rolling(cmd.Context(), cfg)
		if err == nil {
			if fails := rep.Failures(); len(fails) > 0 {
				err = errors.New("bench rolling: " + strings.Join(fails, "; "))
			}
		}
		return rep, err
	}, func(w io.Writer, rep *bench.RollingReport) {
		kind := "restart of this build"
		if rep.From != "" {
			kind = fmt.Sprintf("upgrade from %s (%s)", rep.From, rep.FromVersion)
		}
		fmt.Fprintf(w, "rolling: %s; %d members, %d hosts, %d endpoints; setup %s\n",
			kind, rep.Members, rep.Hosts, rep.Endpoints, rep.Setup.Round(time.Millisecond))
		for _, s := range rep.Steps {
			fmt.Fprintf(w, "  %-4s %5d agents: stopped %8s, ready %8s, re-homed %8s; %d snapshots, %d Lost, %d Dead\n",
				s.Member, s.Sessions, s.Stopped.Round(time.Millisecond), s.Ready.Round(time.Millisecond), s.Rehomed.Round(time.Millisecond),
				s.Snapshots, s.Lost, s.Dead)
		}
		fmt.Fprintf(w, "  worst step %s; hosts reprogrammed %d (%d datapath writes); endpoints Lost %d; hosts Dead %d\n",
			rep.WorstStep.Round(time.Millisecond), rep.HostsWritten, rep.DatapathWrites, rep.LostEndpoints, rep.DeadHosts)
		fmt.Fprintf(w, "  full snapshots sent %d (%d before the roll, the hosts' first views); agent sessions after the initial ones %d (%d attempts failed); endpoints rewritten %d\n",
			rep.Snapshots, rep.InitialSnapshots, rep.StreamConnects, rep.StreamFailed, rep.EndpointsRewritten)
		fmt.Fprintf(w, "  objects read through another replica: %d of %d\n", rep.CrossReads-rep.CrossReadFailures, rep.CrossReads)
		fmt.Fprintf(w, "  %d CPUs, load %s\n", rep.CPUs, rep.Load)
	})
	f := cmd.Flags()
	f.IntVar(&cfg.Members, "members", 3, "replicas, each embedding an etcd member")
	f.IntVar(&cfg.Hosts, "hosts", 10000, "simulated hosts")
	f.IntVar(&cfg.EndpointsPerHost, "endpoints-per-host", 2, "endpoints on each host")
	f.StringVar(&cfg.FromBinary, "from-binary", "", "an older weft binary: start the replicas from it and restart each into this build (a rolling upgrade)")
	f.DurationVar(&cfg.Settle, "settle", 2*time.Second, "least time between two steps")
	f.DurationVar(&cfg.StepTimeout, "step-timeout", 5*time.Minute, "bound of one step (and of the setup's wait)")
	f.StringVar(&logFile, "log", "", "file the replicas' and the simulated hosts' logs go to (default: discarded)")
	f.StringVar(&cfg.Dir, "data-dir", "", "directory of the replicas' data dirs (default: a temporary one)")
	return cmd
}

// lockedWriter serialises the writes of several children's log copiers
// to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
