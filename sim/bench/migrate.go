package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/sim"
)

// MigrateConfig configures the migration benchmark.
type MigrateConfig struct {
	SimConfig
	// Moves is the number of endpoints moved, one at a time (default 100).
	Moves int
	// Interested is the number of hosts that look up each moved endpoint
	// before it moves (default 10).
	Interested int
	// WaitTimeout bounds the wait for the lookups and for every interested
	// host to learn the new location (default 5 s).
	WaitTimeout time.Duration
	// Settle is how long to wait after all agents are programmed before
	// the first write, so that the cold start's own writes (every host's
	// status) drain first (default 5 s; negative: none).
	Settle time.Duration
	// Seed picks the endpoints and hosts (default 1).
	Seed uint64
}

// MigrateReport is the result of a migration run.
type MigrateReport struct {
	Bench      string `json:"bench"`
	Hosts      int    `json:"hosts"`
	Endpoints  int    `json:"endpoints"`
	VPCs       int    `json:"vpcs"`
	Replicas   int    `json:"replicas"`
	Moves      int    `json:"moves"`
	Interested int    `json:"interestedPerMove"`
	// Registered is the number of (host, endpoint) interests made by real
	// UDP lookups that were answered before the move.
	Registered int `json:"registered"`
	// Unanswered lookups (no location learned within WaitTimeout) leave
	// their host out of the move's wait.
	Unanswered int `json:"unanswered"`
	// Per move: from before the REST update of spec.host to the last
	// interested host's driver holding the new location (or forgetting
	// the old one). A move whose hosts did not all learn within WaitTimeout
	// is counted in Incomplete and left out of the percentiles.
	P50Ms      float64 `json:"p50Ms"`
	P99Ms      float64 `json:"p99Ms"`
	MaxMs      float64 `json:"maxMs"`
	Incomplete int     `json:"incomplete"`
	// Per (host, move) pair.
	HostP50Ms        float64            `json:"hostP50Ms"`
	HostP99Ms        float64            `json:"hostP99Ms"`
	ColdstartSeconds float64            `json:"coldstartSeconds"`
	Controllers      []sim.ReplicaUsage `json:"controllers"`
	GoalP99Ms        float64            `json:"goalP99Ms"`
	CPUs             int                `json:"cpus"`
	LoadAvg          string             `json:"loadAvg"`
	Error            string             `json:"error,omitempty"`
}

// Migrate connects Hosts agents (default 1,000), then Moves times: picks
// an endpoint, makes Interested hosts with endpoints in its VPC send a
// packet to it through their driver (a miss, then a UDP lookup that
// registers their interest at the controller), waits until all learned
// its location, moves it to another host with a REST update of spec.host
// and measures until every interested host's driver learned the new
// location (or forgot the old one).
func Migrate(ctx context.Context, cfg MigrateConfig) (rep *MigrateReport, err error) {
	setDefault(&cfg.Hosts, 1000)
	setDefault(&cfg.Endpoints, 10*cfg.Hosts)
	setDefault(&cfg.VPCs, 100)
	setDefault(&cfg.Moves, 100)
	setDefault(&cfg.Interested, 10)
	setDefault(&cfg.WaitTimeout, 5*time.Second)
	setDefault(&cfg.Seed, 1)
	setDefault(&cfg.Settle, 5*time.Second)
	progress := progressTo(cfg.Progress)
	rep = &MigrateReport{Bench: "migrate", Hosts: cfg.Hosts, Endpoints: cfg.Endpoints, VPCs: cfg.VPCs, Moves: cfg.Moves,
		Interested: cfg.Interested, GoalP99Ms: GoalMigrateP99Ms, CPUs: runtime.NumCPU(), LoadAvg: loadAvg()}
	defer func() {
		if err != nil {
			rep.Error = err.Error()
		}
	}()
	if cfg.Endpoints < 2*cfg.VPCs {
		return rep, fmt.Errorf("migrate: %d endpoints over %d VPCs: want at least 2 per VPC", cfg.Endpoints, cfg.VPCs)
	}
	r, err := startSim(ctx, rep.Bench, cfg.SimConfig, func(c *sim.Config) { c.WatchLearn = true }, cfg.Settle)
	defer func() { err = errors.Join(err, r.Close()) }()
	rep.Replicas, rep.ColdstartSeconds = r.replicas, r.coldstart.Seconds()
	if err != nil {
		return rep, err
	}

	l := r.c.Layout()
	byVPC := make([][]int32, cfg.VPCs)
	for e := range cfg.Endpoints {
		v := l.EndpointVPC(e)
		byVPC[v] = append(byVPC[v], int32(e))
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	moved := map[int]bool{}
	var perMove, perHost []time.Duration
	last := time.Now()
	progress("migrate: %d moves, %d interested hosts each", cfg.Moves, cfg.Interested)
	for m := range cfg.Moves {
		// The endpoint to move, not moved before.
		e := rng.IntN(cfg.Endpoints)
		for moved[e] {
			e = rng.IntN(cfg.Endpoints)
		}
		moved[e] = true
		v, from := l.EndpointVPC(e), l.EndpointHost(e)
		tenant, _, _ := l.VPC(v)
		obj, err := r.cl.Get(ctx, apiv1.KindEndpoint, tenant, sim.EndpointName(e))
		if err != nil {
			return rep, fmt.Errorf("migrate: get endpoint %d: %w", e, err)
		}
		ep, ok := obj.(*apiv1.Endpoint)
		if !ok || ep.Status.IP == "" {
			return rep, fmt.Errorf("migrate: endpoint %s has no address", l.EndpointID(e))
		}
		ip, vni := ep.Status.IP, ep.Status.VNI

		// Interested hosts: sources in the same VPC on other hosts.
		hosts := map[int]bool{}
		srcs := byVPC[v]
		for _, i := range rng.Perm(len(srcs)) {
			if len(hosts) == cfg.Interested {
				break
			}
			s := int(srcs[i])
			h := l.EndpointHost(s)
			if h == from || hosts[h] {
				continue
			}
			hosts[h] = true
			if err := r.c.Resolve(h, l.EndpointID(s), ip); err != nil {
				return rep, err
			}
		}
		oldUnderlay := sim.HostUnderlay(from).String()
		waiting := maps.Clone(hosts)
		if _, err := r.waitAll(ctx, cfg.WaitTimeout, waiting, func(ev sim.Event) bool {
			return ev.Kind == "learned" && ev.VNI == vni && ev.IP == ip && ev.Underlay == oldUnderlay
		}); err != nil {
			return rep, err
		}
		// Only hosts whose lookup was answered are interested.
		for h := range waiting {
			delete(hosts, h)
		}
		rep.Registered += len(hosts)
		rep.Unanswered += len(waiting)

		// The move: to a host that is neither the old one nor interested.
		to := rng.IntN(cfg.Hosts)
		for to == from || hosts[to] {
			to = rng.IntN(cfg.Hosts)
		}
		newUnderlay := sim.HostUnderlay(to).String()
		ep.Spec.Host = sim.HostName(to)
		waiting = maps.Clone(hosts)
		t0 := time.Now()
		if _, err := r.cl.Update(ctx, ep); err != nil {
			return rep, fmt.Errorf("migrate: move %s to %s: %w", l.EndpointID(e), ep.Spec.Host, err)
		}
		got, err := r.waitAll(ctx, cfg.WaitTimeout, waiting, func(ev sim.Event) bool {
			return ev.VNI == vni && ev.IP == ip && (ev.Kind == "learned" && ev.Underlay == newUnderlay || ev.Kind == "forgot")
		})
		if err != nil {
			return rep, err
		}
		var worst time.Duration
		for _, at := range got {
			d := at.Sub(t0)
			perHost = append(perHost, d)
			worst = max(worst, d)
		}
		switch {
		case len(hosts) == 0:
			// No interest registered: nothing to measure.
		case len(waiting) > 0:
			rep.Incomplete++
		default:
			perMove = append(perMove, worst)
		}
		if time.Since(last) >= time.Second || m == cfg.Moves-1 {
			last = time.Now()
			progress("migrate: %d/%d moves, %d complete, %d incomplete", m+1, cfg.Moves, len(perMove), rep.Incomplete)
		}
	}
	rep.P50Ms, rep.P99Ms, rep.MaxMs = percentileMs(perMove, 50), percentileMs(perMove, 99), percentileMs(perMove, 100)
	rep.HostP50Ms, rep.HostP99Ms = percentileMs(perHost, 50), percentileMs(perHost, 99)
	rep.Controllers = r.c.Usage()
	return rep, nil
}
