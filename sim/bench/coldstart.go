package bench

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/weftnet/weft/sim"
)

// SimConfig is what the simulation benchmarks (coldstart, program,
// migrate) share: the size of the state and how the simulation is spread
// over processes.
type SimConfig struct {
	// Hosts, Endpoints and VPCs size the state (package sim's Layout).
	Hosts, Endpoints, VPCs int
	// Replicas and Procs: controller replicas and agent processes (default:
	// sim's, from Hosts).
	Replicas, Procs int
	// Exec is the weft binary that runs replicas and agents in child
	// processes (its hidden subcommand sim.ChildCommand); "" runs them all
	// in this process, which caps Hosts at about 9,000 (20,000 open files).
	Exec string
	// DataDir for the embedded etcd (default: a temporary directory).
	DataDir string
	// CPUProfileDir, if set, gets a CPU profile of every replica process.
	CPUProfileDir string
	// BackoffMin caps each agent's random delay before its first connect
	// (default: the agent's, 1 s).
	BackoffMin time.Duration
	// Timeout bounds the wait for all agents to be programmed (default 10 min).
	Timeout time.Duration
	// Progress receives progress lines (nil: none); ChildLog the child
	// processes' warnings (nil: discarded).
	Progress io.Writer
	ChildLog io.Writer
	Logger   *slog.Logger
}

func (c SimConfig) simConfig() sim.Config {
	return sim.Config{Hosts: c.Hosts, Endpoints: c.Endpoints, VPCs: c.VPCs, Replicas: c.Replicas, Procs: c.Procs,
		Exec: c.Exec, DataDir: c.DataDir, CPUProfileDir: c.CPUProfileDir, BackoffMin: c.BackoffMin,
		Progress: c.Progress, ChildLog: c.ChildLog, Logger: c.Logger}
}

// Goals of the simulation benchmarks (ARCHITECTURE.md, "The numbers").
const (
	GoalColdstartSeconds = 10.0
	GoalColdstartRSS     = 4 << 30
	GoalProgramP99Ms     = 50.0
	GoalMigrateP99Ms     = 100.0
)

// ColdstartConfig configures the cold-start benchmark.
type ColdstartConfig struct {
	SimConfig
}

// ColdstartReport is the result of a cold-start run.
type ColdstartReport struct {
	Bench string `json:"bench"`
	sim.Report
	GoalSeconds  float64 `json:"goalSeconds"`
	GoalRSSBytes int64   `json:"goalRSSBytes"`
	CPUs         int     `json:"cpus"`
	// LoadAvg is /proc/loadavg when the run started (the machine is shared).
	LoadAvg string `json:"loadAvg"`
}

// Coldstart loads the state for Hosts hosts, Endpoints endpoints and VPCs
// VPCs, starts the controller replicas on it, then starts every agent at
// once and measures the time until all are programmed, and each replica's
// RSS and CPU time. Defaults: 1,000 hosts, 10 endpoints per host, 100 VPCs.
func Coldstart(ctx context.Context, cfg ColdstartConfig) (*ColdstartReport, error) {
	if cfg.Hosts == 0 {
		cfg.Hosts = 1000
	}
	if cfg.Endpoints == 0 {
		cfg.Endpoints = 10 * cfg.Hosts
	}
	if cfg.VPCs == 0 {
		cfg.VPCs = 100
	}
	rep := &ColdstartReport{Bench: "coldstart", GoalSeconds: GoalColdstartSeconds, GoalRSSBytes: GoalColdstartRSS,
		CPUs: runtime.NumCPU(), LoadAvg: simLoadAvg()}
	r, err := sim.Run(ctx, sim.RunConfig{Config: cfg.simConfig(), Timeout: cfg.Timeout, Hold: time.Second})
	if r != nil {
		rep.Report = *r
	}
	if r == nil && err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

// simLoadAvg returns the first three fields of /proc/loadavg ("" if unreadable).
func simLoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
