package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/sim"
)

// GoalRolloutPerSec is ARCHITECTURE.md's rollout goal: endpoints from API
// create to programmed on their host, per second, at 1,000 hosts.
const GoalRolloutPerSec = 3000.0

// RolloutConfig configures the rollout benchmark.
type RolloutConfig struct {
	SimConfig
	// Creates is the number of endpoints rolled out (default 10,000),
	// Concurrency the API creates in flight (default 64).
	Creates, Concurrency int
	// WaitTimeout bounds the wait for the last endpoint to be programmed
	// after the last create (default 60 s).
	WaitTimeout time.Duration
	// Settle: see ProgramConfig (default 5 s).
	Settle time.Duration
}

// RolloutReport is the result of a rollout run.
type RolloutReport struct {
	Bench       string `json:"bench"`
	Hosts       int    `json:"hosts"`
	Replicas    int    `json:"replicas"`
	Creates     int    `json:"creates"`
	Concurrency int    `json:"concurrency"`
	// Programmed endpoints reached their host's driver; Lost did not
	// within WaitTimeout after the last create.
	Programmed int `json:"programmed"`
	Lost       int `json:"lost"`
	// Seconds is from the first create to the last endpoint programmed;
	// PerSec is Programmed over it. APIPerSec is the creates acknowledged
	// (durable in etcd) per second of the create phase.
	Seconds   float64 `json:"seconds"`
	PerSec    float64 `json:"perSec"`
	APIPerSec float64 `json:"apiPerSec"`
	// Create → programmed on its host, per endpoint (wall clocks of two
	// processes on one machine).
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
	// The REST create's own latency.
	APIP50Ms         float64 `json:"apiP50Ms"`
	APIP99Ms         float64 `json:"apiP99Ms"`
	ColdstartSeconds float64 `json:"coldstartSeconds"`
	GoalPerSec       float64 `json:"goalPerSec"`
	CPUs             int     `json:"cpus"`
	LoadAvg          string  `json:"loadAvg"`
	LoadAvgEnd       string  `json:"loadAvgEnd"`
	Error            string  `json:"error,omitempty"`
}

// rolloutPrefix names the rolled-out endpoints (the agents report them).
const rolloutPrefix = "r-"

// Rollout connects Hosts simulated agents (default 1,000), then creates
// Creates endpoints through the REST API, Concurrency at a time, spread
// evenly over the hosts and the VPCs, and measures until every one is
// programmed on its host: the agent's Driver.Set that first holds it, after
// which the agent reports it Ready (simulated agents write no status, so
// the measure ends at programmed).
func Rollout(ctx context.Context, cfg RolloutConfig) (rep *RolloutReport, err error) {
	setDefault(&cfg.Hosts, 1000)
	setDefault(&cfg.Endpoints, cfg.Hosts)
	setDefault(&cfg.VPCs, 100)
	setDefault(&cfg.Creates, 10_000)
	setDefault(&cfg.Concurrency, 64)
	setDefault(&cfg.WaitTimeout, 60*time.Second)
	setDefault(&cfg.Settle, 5*time.Second)
	progress := progressTo(cfg.Progress)
	rep = &RolloutReport{Bench: "rollout", Hosts: cfg.Hosts, Creates: cfg.Creates, Concurrency: cfg.Concurrency,
		GoalPerSec: GoalRolloutPerSec, CPUs: runtime.NumCPU(), LoadAvg: loadAvg()}
	defer func() {
		rep.LoadAvgEnd = loadAvg()
		if err != nil {
			rep.Error = err.Error()
		}
	}()
	r, err := startSim(ctx, rep.Bench, cfg.SimConfig, func(c *sim.Config) { c.WatchPrefix = rolloutPrefix }, cfg.Settle)
	defer func() { err = errors.Join(err, r.Close()) }()
	rep.Replicas, rep.ColdstartSeconds = r.replicas, r.coldstart.Seconds()
	if err != nil {
		return rep, err
	}

	l := r.c.Layout()
	type timing struct{ created, acked, programmed time.Time }
	times := make([]timing, cfg.Creates)
	index := make(map[string]int, cfg.Creates) // by endpoint ID
	ids := make([]string, cfg.Creates)
	for i := range cfg.Creates {
		tenant, _, _ := l.VPC(i % cfg.VPCs)
		ids[i] = fmt.Sprintf("%s/%s%d", tenant, rolloutPrefix, i)
		index[ids[i]] = i
	}
	var mu sync.Mutex
	var programmed atomic.Int64
	allDone := make(chan struct{})
	collect, stopCollect := context.WithCancel(ctx)
	defer stopCollect()
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for {
			select {
			case <-collect.Done():
				return
			case ev := <-r.c.Events():
				if ev.Kind != "applied" || !strings.Contains(ev.ID, "/"+rolloutPrefix) {
					continue
				}
				i, ok := index[ev.ID]
				if !ok {
					continue
				}
				mu.Lock()
				first := times[i].programmed.IsZero()
				if first {
					times[i].programmed = ev.At
				}
				mu.Unlock()
				if first && programmed.Add(1) == int64(cfg.Creates) {
					close(allDone)
				}
			}
		}
	}()

	progress("rollout: creating %d endpoints on %d hosts, %d at a time", cfg.Creates, cfg.Hosts, cfg.Concurrency)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Concurrency)
	var acked atomic.Int64
	start := time.Now()
	last := start
	for i := range cfg.Creates {
		k := i % cfg.VPCs
		tenant, _, _ := l.VPC(k)
		g.Go(func() error {
			ep := &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint),
				Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("%s%d", rolloutPrefix, i), Tenant: tenant},
				Spec:     apiv1.EndpointSpec{Subnet: sim.SubnetName(k), Host: sim.HostName(i % cfg.Hosts)}}
			t0 := time.Now()
			if _, err := r.cl.Create(gctx, ep); err != nil {
				return fmt.Errorf("rollout: create %s: %w", ids[i], err)
			}
			t1 := time.Now()
			mu.Lock()
			times[i].created, times[i].acked = t0, t1
			mu.Unlock()
			acked.Add(1)
			return nil
		})
		if time.Since(last) >= time.Second {
			last = time.Now()
			progress("rollout: %d created, %d programmed", acked.Load(), programmed.Load())
		}
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}
	createEnd := time.Now()
	rep.APIPerSec = round3(float64(cfg.Creates) / createEnd.Sub(start).Seconds())
	progress("rollout: %d created in %.3f s (%.0f/s); waiting for the rest to be programmed", cfg.Creates, createEnd.Sub(start).Seconds(), rep.APIPerSec)
	t := time.NewTimer(cfg.WaitTimeout)
	defer t.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-allDone:
			break wait
		case <-t.C:
			break wait
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-tick.C:
			progress("rollout: %d/%d programmed", programmed.Load(), cfg.Creates)
		}
	}
	stopCollect()
	<-collected

	var lat, api []time.Duration
	var end time.Time
	for _, tt := range times {
		api = append(api, tt.acked.Sub(tt.created))
		if tt.programmed.IsZero() {
			rep.Lost++
			continue
		}
		lat = append(lat, tt.programmed.Sub(tt.created))
		if tt.programmed.After(end) {
			end = tt.programmed
		}
	}
	rep.Programmed = len(lat)
	if rep.Programmed > 0 {
		rep.Seconds = round3(end.Sub(start).Seconds())
		rep.PerSec = round3(float64(rep.Programmed) / end.Sub(start).Seconds())
	}
	rep.P50Ms, rep.P99Ms, rep.MaxMs = percentileMs(lat, 50), percentileMs(lat, 99), percentileMs(lat, 100)
	rep.APIP50Ms, rep.APIP99Ms = percentileMs(api, 50), percentileMs(api, 99)
	return rep, nil
}
