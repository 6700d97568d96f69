package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/sim"
)

// ProgramConfig configures the programming-latency benchmark.
type ProgramConfig struct {
	SimConfig
	// Writes is the number of endpoints created, one at a time (default 200).
	Writes int
	// WaitTimeout bounds the wait for one endpoint to be applied (default 5 s);
	// a write not applied by then counts as lost.
	WaitTimeout time.Duration
	// Settle is how long to wait after all agents are programmed before
	// the first write, so that the cold start's own writes (every host's
	// status) drain first (default 5 s; negative: none).
	Settle time.Duration
	// Seed picks the target hosts (default 1).
	Seed uint64
}

// ProgramReport is the result of a programming-latency run.
type ProgramReport struct {
	Bench     string `json:"bench"`
	Hosts     int    `json:"hosts"`
	Endpoints int    `json:"endpoints"`
	VPCs      int    `json:"vpcs"`
	Replicas  int    `json:"replicas"`
	Writes    int    `json:"writes"`
	Applied   int    `json:"applied"`
	Lost      int    `json:"lost"`
	// Write → applied: from before the REST create to the target agent's
	// Driver.Set that holds the endpoint (wall clocks of two processes on
	// one machine).
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
	// APIP50Ms and APIP99Ms are the REST create's own latency (durable in etcd).
	APIP50Ms         float64            `json:"apiP50Ms"`
	APIP99Ms         float64            `json:"apiP99Ms"`
	ColdstartSeconds float64            `json:"coldstartSeconds"`
	Controllers      []sim.ReplicaUsage `json:"controllers"`
	GoalP99Ms        float64            `json:"goalP99Ms"`
	CPUs             int                `json:"cpus"`
	LoadAvg          string             `json:"loadAvg"`
	Error            string             `json:"error,omitempty"`
}

// Program connects Hosts agents (default 10,000), then creates Writes
// endpoints through the REST API one at a time, each on a random host, and
// measures API write → the target agent applied the view holding it.
func Program(ctx context.Context, cfg ProgramConfig) (rep *ProgramReport, err error) {
	if cfg.Hosts == 0 {
		cfg.Hosts = 10_000
	}
	if cfg.Endpoints == 0 {
		cfg.Endpoints = 2 * cfg.Hosts
	}
	if cfg.VPCs == 0 {
		cfg.VPCs = 100
	}
	if cfg.Writes == 0 {
		cfg.Writes = 200
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = 5 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Settle == 0 {
		cfg.Settle = 5 * time.Second
	}
	progress := simProgress(cfg.Progress)
	rep = &ProgramReport{Bench: "program", Hosts: cfg.Hosts, Endpoints: cfg.Endpoints, VPCs: cfg.VPCs, Writes: cfg.Writes,
		GoalP99Ms: GoalProgramP99Ms, CPUs: runtime.NumCPU(), LoadAvg: simLoadAvg()}
	defer func() {
		if err != nil {
			rep.Error = err.Error()
		}
	}()
	scfg := cfg.simConfig()
	scfg.WatchPrefix = "p-"
	c, err := sim.Start(ctx, scfg)
	if err != nil {
		return rep, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	rep.Replicas = len(c.Replicas())
	if _, err := c.StartAgents(ctx); err != nil {
		return rep, err
	}
	d, err := c.WaitProgrammed(ctx, cfg.Timeout)
	if err != nil {
		return rep, err
	}
	rep.ColdstartSeconds = d.Seconds()
	if cfg.Settle > 0 {
		progress("%s: all programmed after %.3fs; settling for %s", rep.Bench, d.Seconds(), cfg.Settle)
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(cfg.Settle):
		}
	}
	cl, err := client.New("http://"+c.APIAddr(), client.WithTimeout(30*time.Second))
	if err != nil {
		return rep, fmt.Errorf("program: %w", err)
	}
	defer cl.Close()

	l := c.Layout()
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	var lat, api []time.Duration
	progress("program: creating %d endpoints one at a time on random hosts of %d", cfg.Writes, cfg.Hosts)
	last := time.Now()
	for i := range cfg.Writes {
		h := rng.IntN(cfg.Hosts)
		k := rng.IntN(cfg.VPCs)
		tenant, _, _ := l.VPC(k)
		name := fmt.Sprintf("p-%d", i)
		ep := &apiv1.Endpoint{
			TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
			Metadata: apiv1.ObjectMeta{Name: name, Tenant: tenant},
			Spec:     apiv1.EndpointSpec{Subnet: sim.SubnetName(k), Host: sim.HostName(h)},
		}
		id := tenant + "/" + name
		t0 := time.Now()
		if _, err := cl.Create(ctx, ep); err != nil {
			return rep, fmt.Errorf("program: create %s: %w", id, err)
		}
		api = append(api, time.Since(t0))
		at, ok, err := simWaitEvent(ctx, c, cfg.WaitTimeout, func(ev sim.Event) bool { return ev.Kind == "applied" && ev.ID == id && ev.Host == h })
		if err != nil {
			return rep, err
		}
		if ok {
			lat = append(lat, at.Sub(t0))
		} else {
			rep.Lost++
		}
		if time.Since(last) >= time.Second {
			last = time.Now()
			progress("program: %d/%d written, %d applied, %d lost", i+1, cfg.Writes, len(lat), rep.Lost)
		}
	}
	rep.Applied = len(lat)
	rep.P50Ms, rep.P99Ms, rep.MaxMs = percentileMs(lat, 50), percentileMs(lat, 99), percentileMs(lat, 100)
	rep.APIP50Ms, rep.APIP99Ms = percentileMs(api, 50), percentileMs(api, 99)
	rep.Controllers = c.Usage()
	return rep, nil
}

// simWaitEvent waits up to timeout for an event that match accepts and
// returns its time; other events are dropped.
func simWaitEvent(ctx context.Context, c *sim.Cluster, timeout time.Duration, match func(sim.Event) bool) (time.Time, bool, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, false, ctx.Err()
		case <-t.C:
			return time.Time{}, false, nil
		case ev := <-c.Events():
			if match(ev) {
				return ev.At, true, nil
			}
		}
	}
}

// simProgress returns a function printing progress lines to w (nil: none).
func simProgress(w interface{ Write([]byte) (int, error) }) func(string, ...any) {
	return func(format string, a ...any) {
		if w != nil {
			fmt.Fprintf(w, format+"\n", a...)
		}
	}
}
