package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/weftnet/weft/controller"
)

// replicaSpec tells a child which controller replica to run.
type replicaSpec struct {
	Index int `json:"index"`
	// DataDir: the embedded etcd's data dir (replica 0); ignored with EtcdEndpoints.
	DataDir       string   `json:"dataDir,omitempty"`
	EtcdEndpoints []string `json:"etcdEndpoints,omitempty"`
	// ClusterKeyFile is the cluster's key (made by the load).
	ClusterKeyFile string `json:"clusterKeyFile,omitempty"`
	// CPUProfile, if set, is where the replica writes a CPU profile (a
	// child process only) from the command "profile-start" (sent when the
	// agents start) to "profile-stop" (sent before the cluster stops), so
	// that neither the initial load nor the teardown is in it.
	CPUProfile string `json:"cpuProfile,omitempty"`
	InProcess  bool   `json:"inProcess,omitempty"`
	// Hosts is this replica's share of the hosts (for per-host memory
	// statistics).
	Hosts int `json:"hosts,omitempty"`
	// MemoryLimit, if set, is the Go runtime's soft memory limit for a
	// child process (debug.SetMemoryLimit): the garbage collector works
	// harder near it instead of letting the heap double during the
	// initial list (see memoryLimit).
	MemoryLimit int64 `json:"memoryLimit,omitempty"`
}

// runReplica runs one controller replica until ctx ends, reporting
// "ready" with its addresses once it serves.
func runReplica(ctx context.Context, spec replicaSpec, cmds <-chan string, em *emitter, logger *slog.Logger) (err error) {
	if spec.MemoryLimit > 0 && !spec.InProcess {
		debug.SetMemoryLimit(spec.MemoryLimit)
	}
	var prof profileWindow
	defer prof.stop()
	c, err := controller.New(controller.Config{
		DataDir: spec.DataDir, EtcdEndpoints: spec.EtcdEndpoints, ClusterKeyFile: spec.ClusterKeyFile,
		// A lab harness: its tools read the replicas' API and metrics
		// over plain HTTP on loopback.
		InsecureHTTP: true,
		APIListen:    "127.0.0.1:0", AgentListen: "127.0.0.1:0",
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
		case cmd, ok := <-cmds:
			if !ok {
				return nil
			}
			if spec.CPUProfile == "" || spec.InProcess {
				continue
			}
			switch cmd {
			case "profile-start":
				if err := prof.start(spec.CPUProfile); err != nil {
					em.emit(&message{T: "error", Err: err.Error()})
				}
			case "profile-stop":
				prof.stop()
				// And the heap as it stands, per host of the cluster.
				heap := strings.TrimSuffix(spec.CPUProfile, ".pprof") + ".heap.pprof"
				if err := writeHeapProfile(heap, max(spec.Hosts, 1), "host"); err != nil {
					em.emit(&message{T: "error", Err: err.Error()})
				}
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

// profileWindow is a CPU profile that a child starts and stops on its
// parent's commands. The zero value is not profiling; stop is idempotent.
type profileWindow struct{ stopFn func() }

func (p *profileWindow) start(path string) error {
	if p.stopFn != nil {
		return nil
	}
	stop, err := startProfile(path)
	if err != nil {
		return err
	}
	p.stopFn = stop
	return nil
}

func (p *profileWindow) stop() {
	if p.stopFn != nil {
		p.stopFn()
		p.stopFn = nil
	}
}

// writeHeapProfile writes a heap profile of this process to path and its
// runtime memory statistics, per unit (agent, host) of the n it serves, to
// path + ".memstats" (the numbers that decide a unit's memory cost: heap in
// use, goroutine stacks, goroutines).
func writeHeapProfile(path string, n int, unit string) error {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	goroutines := runtime.NumGoroutine()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	runtime.GC() // the profile shows the heap as of the last GC
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	err = pprof.WriteHeapProfile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("heap profile %s: %w", path, err)
	}
	n = max(n, 1)
	per := func(v uint64) string { return fmt.Sprintf("%d (%d/%s)", v, v/uint64(n), unit) }
	var b strings.Builder
	fmt.Fprintf(&b, "%ss %d\ngoroutines %d (%.2f/%s)\n", unit, n, goroutines, float64(goroutines)/float64(n), unit)
	for _, kv := range []struct {
		k string
		v uint64
	}{
		{"Sys", ms.Sys}, {"HeapSys", ms.HeapSys}, {"HeapInuse", ms.HeapInuse}, {"HeapAlloc", ms.HeapAlloc},
		{"HeapIdle", ms.HeapIdle}, {"HeapReleased", ms.HeapReleased}, {"StackInuse", ms.StackInuse},
		{"StackSys", ms.StackSys}, {"MSpanInuse", ms.MSpanInuse}, {"GCSys", ms.GCSys}, {"OtherSys", ms.OtherSys},
		{"NumGC", uint64(ms.NumGC)}, {"Mallocs", ms.Mallocs}, {"TotalAlloc", ms.TotalAlloc},
		{"HeapAlloc after a GC", after.HeapAlloc}, {"StackInuse after a GC", after.StackInuse},
	} {
		fmt.Fprintf(&b, "%s %s\n", kv.k, per(kv.v))
	}
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "VmHWM:") {
				var kb uint64
				if _, err := fmt.Sscanf(strings.Fields(l)[1], "%d", &kb); err == nil {
					fmt.Fprintf(&b, "%s %s\n", strings.TrimSuffix(strings.Fields(l)[0], ":"), per(kb<<10))
				}
			}
		}
	}
	if err := os.WriteFile(path+".memstats", []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	return nil
}

// replicaLive estimates the live heap of replica index (BenchmarkReplicaRSS
// and BenchmarkCompile measured ~1 KB per cached endpoint and ~8.4 KB per
// compiled view; a config-stream session, its goroutines and status about
// 17 KB), plus the embedded etcd for replica 0 (~1.85 KB per endpoint: its
// RSS at 1,000,000 endpoints was 1.83 GiB above the others'), and a fixed
// 192 MiB.
func replicaLive(index, hosts, endpoints, replicas int) int64 {
	perReplica := int64(hosts+replicas-1) / int64(max(replicas, 1))
	live := int64(endpoints)*1000 + perReplica*(8600+17_000) + 192<<20
	if index == 0 {
		live += int64(endpoints) * 1900
	}
	return live
}

// Bounds of a replica's garbage-collector headroom over its live heap: a
// cold start allocates fast, and the collector marks the whole live heap
// (a million cached endpoints) once per cycle, so headroom is CPU. A
// 50,000-host cold start took 23.0 s at 1.05 and 16.2 s at 1.5
// (BENCHMARKS.md).
const (
	minHeadroom = 1.05
	maxHeadroom = 1.5
	// memoryReserve is left to the kernel, the parent and page cache.
	memoryReserve = 3 << 29 // 1.5 GiB
	// agentBytes is what a simulated agent is expected to hold (RSS).
	agentBytes = 50_000
	// kernelBytesPerHost is the kernel memory of one agent's connection.
	kernelBytesPerHost = 16_000
)

// headroom is the factor over their live estimates that the replicas'
// memory limits get: as much as available memory allows after the agents'
// limits and a reserve, between minHeadroom and maxHeadroom.
func headroom(hosts, endpoints, replicas, procs int, available int64) float64 {
	var live int64
	for i := range replicas {
		live += replicaLive(i, hosts, endpoints, replicas)
	}
	// The agents' use, not their limits (twice that): ~46 KB per agent was
	// measured at 50,000 and 100,000 agents, plus the process's base.
	agents := int64(hosts)*agentBytes + int64(procs)*128<<20
	// And the kernel's side of every config stream: two loopback TCP
	// sockets, ~10 KB of slab and ~4 KB of buffers (measured with 9,000
	// connection pairs).
	kernel := int64(hosts) * kernelBytesPerHost
	budget := available - agents - kernel - memoryReserve
	if live <= 0 || budget <= 0 {
		return minHeadroom
	}
	return min(max(float64(budget)/float64(live), minHeadroom), maxHeadroom)
}

// memoryLimit is the soft memory limit of a replica child: its live
// estimate times the headroom.
func memoryLimit(index, hosts, endpoints, replicas int, headroom float64) int64 {
	return int64(float64(replicaLive(index, hosts, endpoints, replicas)) * headroom)
}

// memAvailable reads MemAvailable from /proc/meminfo (0 if it cannot).
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
