package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/weftnet/weft/controller"
)

// replicaSpec tells a child which controller replica to run.
type replicaSpec struct {
	Index int `json:"index"`
	// DataDir: the embedded etcd's data dir (replica 0); ignored with EtcdEndpoints.
	DataDir       string   `json:"dataDir,omitempty"`
	EtcdEndpoints []string `json:"etcdEndpoints,omitempty"`
	// CPUProfile, if set, is where the replica writes a CPU profile of its
	// whole life (a child process only).
	CPUProfile string `json:"cpuProfile,omitempty"`
	InProcess  bool   `json:"inProcess,omitempty"`
}

// runReplica runs one controller replica until ctx ends, reporting
// "ready" with its addresses once it serves.
func runReplica(ctx context.Context, spec replicaSpec, cmds <-chan string, em *emitter, logger *slog.Logger) (err error) {
	if spec.CPUProfile != "" && !spec.InProcess {
		stop, err := startProfile(spec.CPUProfile)
		if err != nil {
			return fmt.Errorf("replica %d: %w", spec.Index, err)
		}
		defer stop()
	}
	c, err := controller.New(controller.Config{
		DataDir: spec.DataDir, EtcdEndpoints: spec.EtcdEndpoints,
		APIListen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
		Logger: logger.With("replica", spec.Index),
	})
	if err != nil {
		return fmt.Errorf("replica %d: %w", spec.Index, err)
	}
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("replica %d: start: %w", spec.Index, err)
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	cli, err := c.EtcdClient()
	if err != nil {
		return fmt.Errorf("replica %d: %w", spec.Index, err)
	}
	em.emit(&message{T: "ready", PID: os.Getpid(), API: c.APIAddr(), Agent: c.AgentAddr(), Etcd: cli.Endpoints()})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return fmt.Errorf("replica %d: API server stopped: %w", spec.Index, c.Err())
		case _, ok := <-cmds:
			if !ok {
				return nil
			}
		}
	}
}

// startProfile writes a CPU profile of this process to path until the
// returned function is called. Only child processes profile: each runs one
// role, so one profile per process.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
