package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/weftnet/weft/client"
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

// simRun is a simulation whose agents are all programmed, and a client of
// its API: what the program and migrate benchmarks measure on.
type simRun struct {
	c  *sim.Cluster
	cl *client.Client
	// Replicas and Coldstart are known once the replicas started and once
	// every agent was programmed.
	replicas  int
	coldstart time.Duration
}

// startSim starts the simulation of cfg (set adds the events the benchmark
// waits for), starts every agent, waits until all are programmed, then for
// settle (so that the cold start's own writes drain first) and opens an
// API client. The run it returns holds what was reached also with an
// error; its Close stops everything.
func startSim(ctx context.Context, name string, cfg SimConfig, set func(*sim.Config), settle time.Duration) (*simRun, error) {
	setDefault(&cfg.Timeout, 10*time.Minute)
	scfg := cfg.simConfig()
	set(&scfg)
	r := &simRun{}
	var err error
	if r.c, err = sim.New(scfg); err != nil {
		return r, err
	}
	if err := r.c.Start(ctx); err != nil {
		return r, err
	}
	r.replicas = len(r.c.Replicas())
	if _, err := r.c.StartAgents(ctx); err != nil {
		return r, err
	}
	if r.coldstart, err = r.c.WaitProgrammed(ctx, cfg.Timeout); err != nil {
		return r, err
	}
	if settle > 0 {
		progressTo(cfg.Progress)("%s: all programmed after %.3fs; settling for %s", name, r.coldstart.Seconds(), settle)
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(settle):
		}
	}
	if r.cl, err = client.New("http://"+r.c.APIAddr(), client.WithTimeout(30*time.Second)); err != nil {
		return r, fmt.Errorf("%s: %w", name, err)
	}
	return r, nil
}

// Close stops the simulation.
func (r *simRun) Close() error {
	var err error
	if r.cl != nil {
		err = r.cl.Close()
	}
	if r.c != nil {
		err = errors.Join(err, r.c.Close())
	}
	return err
}

// waitAll waits up to timeout until an event that match accepts came from
// every host in waiting (waitEvents of the simulation's events).
func (r *simRun) waitAll(ctx context.Context, timeout time.Duration, waiting map[int]bool, match func(sim.Event) bool) (map[int]time.Time, error) {
	return waitEvents(ctx, r.c.Events(), timeout, waiting, match)
}

// waitEvents waits up to timeout until an event of events that match
// accepts came from every host in waiting, deleting each host as it does,
// and returns the time of each host's event; the hosts left in waiting
// timed out.
func waitEvents(ctx context.Context, events <-chan sim.Event, timeout time.Duration, waiting map[int]bool, match func(sim.Event) bool) (map[int]time.Time, error) {
	got := make(map[int]time.Time, len(waiting))
	t := time.NewTimer(timeout)
	defer t.Stop()
	for len(waiting) > 0 {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-t.C:
			return got, nil
		case ev := <-events:
			if waiting[ev.Host] && match(ev) {
				got[ev.Host] = ev.At
				delete(waiting, ev.Host)
			}
		}
	}
	return got, nil
}
