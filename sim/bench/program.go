package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
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
	setDefault(&cfg.Hosts, 10_000)
	setDefault(&cfg.Endpoints, 2*cfg.Hosts)
	setDefault(&cfg.VPCs, 100)
	setDefault(&cfg.Writes, 200)
	setDefault(&cfg.WaitTimeout, 5*time.Second)
	setDefault(&cfg.Seed, 1)
	setDefault(&cfg.Settle, 5*time.Second)
	progress := progressTo(cfg.Progress)
	rep = &ProgramReport{Bench: "program", Hosts: cfg.Hosts, Endpoints: cfg.Endpoints, VPCs: cfg.VPCs, Writes: cfg.Writes,
		GoalP99Ms: GoalProgramP99Ms, CPUs: runtime.NumCPU(), LoadAvg: loadAvg()}
	defer func() {
		if err != nil {
			rep.Error = err.Error()
		}
	}()
	r, err := startSim(ctx, rep.Bench, cfg.SimConfig, func(c *sim.Config) { c.WatchPrefix = "p-" }, cfg.Settle)
	defer func() { err = errors.Join(err, r.Close()) }()
	rep.Replicas, rep.ColdstartSeconds = r.replicas, r.coldstart.Seconds()
	if err != nil {
		return rep, err
	}

	l := r.c.Layout()
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
		if _, err := r.cl.Create(ctx, ep); err != nil {
			return rep, fmt.Errorf("program: create %s: %w", id, err)
		}
		api = append(api, time.Since(t0))
		got, err := r.waitAll(ctx, cfg.WaitTimeout, map[int]bool{h: true}, func(ev sim.Event) bool { return ev.Kind == "applied" && ev.ID == id })
		if err != nil {
			return rep, err
		}
		if at, ok := got[h]; ok {
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
	rep.Controllers = r.c.Usage()
	return rep, nil
}
