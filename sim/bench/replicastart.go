package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/sim"
)

// The shapes of a replica start.
const (
	// ShapeEmbedded: the replica embeds the etcd that holds the data (its
	// data dir is the loaded one).
	ShapeEmbedded = "embedded"
	// ShapeClient: the replica is a client of an etcd serving the data in
	// another process (over its unix socket).
	ShapeClient = "client"
)

// GoalReplicaStart is the goal for a replica's start at 1,000,000
// endpoints: from process start to serving.
const GoalReplicaStart = 10 * time.Second

// roleEtcdServer runs an embedded etcd on a data dir, for replicas that
// are its clients.
const roleEtcdServer = "etcd-server"

// ReplicaStartConfig configures ReplicaStart.
type ReplicaStartConfig struct {
	// Endpoints loaded (default 1,000,000), over Hosts hosts (default
	// Endpoints/10) and VPCs VPCs (default Endpoints/100): the cold start's
	// layout (sim.Layout).
	Endpoints, Hosts, VPCs int
	// Starts is how many times a replica starts in each shape (default 3).
	Starts int
	// Shapes to measure, in order (default embedded, client).
	Shapes []string
	// Writers load the state (default 64).
	Writers int
	// Exec is a binary with the hidden sim.ChildCommand running ChildRoles
	// (required): each replica, and the etcd of the client shape, runs in
	// a process of it.
	Exec string
	// Dir holds the loaded data (default: a temporary directory, removed
	// at the end).
	Dir string
	// StartTimeout bounds one start (default 5 minutes).
	StartTimeout time.Duration
	// CPUProfiles, if set, is a directory each replica writes a CPU
	// profile of its start to (from its first line of work until its
	// controller serves), SHAPE-N.pprof.
	CPUProfiles string
	// NoCalibration skips the calibration (tests).
	NoCalibration bool
	// Progress receives the load's progress and a line per start (nil:
	// none); ChildLog the child processes' logs (nil: discarded).
	Progress, ChildLog io.Writer
	Logger             *slog.Logger
}

func (c *ReplicaStartConfig) setDefaults() {
	setDefault(&c.Endpoints, 1_000_000)
	setDefault(&c.Hosts, max(c.Endpoints/10, 1))
	setDefault(&c.VPCs, max(c.Endpoints/100, 1))
	setDefault(&c.Starts, 3)
	setDefault(&c.Writers, 64)
	setDefault(&c.StartTimeout, 5*time.Minute)
	if c.Shapes == nil {
		c.Shapes = []string{ShapeEmbedded, ShapeClient}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the configuration.
func (c *ReplicaStartConfig) Validate() error {
	switch {
	case c.Exec == "":
		return errors.New("bench: replicastart: the replicas' binary (Exec) is required")
	case c.Starts < 1:
		return fmt.Errorf("bench: replicastart: %d starts: want at least 1", c.Starts)
	case len(c.Shapes) == 0:
		return errors.New("bench: replicastart: no shape to measure")
	}
	for _, s := range c.Shapes {
		if s != ShapeEmbedded && s != ShapeClient {
			return fmt.Errorf("bench: replicastart: unknown shape %q (want %s or %s)", s, ShapeEmbedded, ShapeClient)
		}
	}
	if err := (sim.Layout{Hosts: c.Hosts, Endpoints: c.Endpoints, VPCs: c.VPCs}).Validate(); err != nil {
		return fmt.Errorf("bench: replicastart: %w", err)
	}
	return nil
}

// ReplicaStartReport is the result of ReplicaStart.
type ReplicaStartReport struct {
	Bench     string `json:"bench"`
	Endpoints int    `json:"endpoints"`
	Hosts     int    `json:"hosts"`
	VPCs      int    `json:"vpcs"`
	// Objects loaded, in LoadTime.
	Objects  int           `json:"objects"`
	LoadTime time.Duration `json:"loadTime"`
	// Starts are every start, in order; Shapes the summary per shape.
	Starts []ReplicaStartRun            `json:"starts"`
	Shapes map[string]ReplicaStartShape `json:"shapes"`
	// EtcdRSS is the client shape's etcd process's RSS after the starts.
	EtcdRSS int64         `json:"etcdRSS,omitempty"`
	Goal    time.Duration `json:"goal"`
	CPUs    int           `json:"cpus"`
	// LoadAvg is /proc/loadavg when the starts began (the machine is
	// shared).
	LoadAvg     string       `json:"loadAvg"`
	Calibration *Calibration `json:"calibration,omitempty"`
}

// ReplicaStartRun is one start of a replica process.
type ReplicaStartRun struct {
	Shape string `json:"shape"`
	// Ready is the time from the process's start until /readyz answered
	// 200; Serving until, after that, a first list (the endpoints of
	// tenant t0) was answered.
	Ready   time.Duration `json:"ready"`
	Serving time.Duration `json:"serving"`
	// Listed is the number of objects that list returned.
	Listed int `json:"listed"`
	// CPU is the process's user+system CPU time and RSS its resident
	// memory when it served.
	CPU     time.Duration `json:"cpu"`
	RSS     int64         `json:"rss"`
	LoadAvg string        `json:"loadAvg"`
}

// ReplicaStartShape summarises the starts of one shape.
type ReplicaStartShape struct {
	Starts int `json:"starts"`
	// Best, Median and Worst of Serving.
	Best   time.Duration `json:"best"`
	Median time.Duration `json:"median"`
	Worst  time.Duration `json:"worst"`
	// MaxRSS and MaxCPU over the starts.
	MaxRSS int64         `json:"maxRSS"`
	MaxCPU time.Duration `json:"maxCPU"`
}

// ReplicaStart loads the cold start's state (Endpoints endpoints over
// Hosts hosts and VPCs VPCs, through the registry, as a simulation does)
// into an etcd data dir once, then starts a controller replica process
// Starts times in each shape (embedding the etcd that holds the data; a
// client of an etcd serving it in another process), and reports for each
// the time from the process's start to serving (/readyz 200, then a first
// list answered), and its CPU time and RSS then.
func ReplicaStart(ctx context.Context, cfg ReplicaStartConfig) (*ReplicaStartReport, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep := &ReplicaStartReport{Bench: "replicastart", Endpoints: cfg.Endpoints, Hosts: cfg.Hosts, VPCs: cfg.VPCs,
		Shapes: map[string]ReplicaStartShape{}, Goal: GoalReplicaStart, CPUs: runtime.NumCPU()}
	progress := progressTo(cfg.Progress)
	if !cfg.NoCalibration {
		cal, err := Calibrate(ctx)
		if err != nil {
			return nil, err
		}
		rep.Calibration = &cal
		progress("%s", cal)
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "weft-bench-replicastart-")
		if err != nil {
			return nil, fmt.Errorf("bench: replicastart: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	data := filepath.Join(dir, "data")
	lr, err := sim.Load(ctx, sim.LoadConfig{Dir: data, Layout: sim.Layout{Hosts: cfg.Hosts, Endpoints: cfg.Endpoints, VPCs: cfg.VPCs},
		Writers: cfg.Writers, Progress: cfg.Progress, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("bench: replicastart: %w", err)
	}
	rep.Objects, rep.LoadTime = lr.Objects, lr.Duration
	progress("replicastart: loaded %d objects in %s", lr.Objects, lr.Duration.Round(time.Millisecond))
	runtime.GC() // the load's garbage is not the replicas' concern
	rep.LoadAvg = loadAvg()
	for _, shape := range cfg.Shapes {
		runs, etcdRSS, err := startShape(ctx, cfg, shape, dir, data, lr.ClusterKeyFile, progress)
		rep.Starts = append(rep.Starts, runs...)
		rep.EtcdRSS = max(rep.EtcdRSS, etcdRSS)
		if err != nil {
			return rep, err
		}
		rep.Shapes[shape] = summariseStarts(runs)
	}
	return rep, nil
}

// startShape starts a replica cfg.Starts times in one shape.
func startShape(ctx context.Context, cfg ReplicaStartConfig, shape, dir, data, keyFile string, progress func(string, ...any)) (runs []ReplicaStartRun, etcdRSS int64, err error) {
	spec := haReplicaSpec{DataDir: data, ClusterKeyFile: keyFile, Agent: "off"}
	var etcd *sim.Child
	if shape == ShapeClient {
		etcd, err = sim.StartChild(ctx, sim.ChildConfig{Name: "etcd", Exe: cfg.Exec, Role: roleEtcdServer, Spec: etcdServerSpec{Dir: data}, Log: cfg.ChildLog})
		if err != nil {
			return nil, 0, fmt.Errorf("bench: replicastart: %w", err)
		}
		defer func() { err = errors.Join(err, etcd.Close()) }()
		cm, err := etcd.Await(ctx, "ready", cfg.StartTimeout)
		var m childMsg
		if err == nil {
			err = cm.Decode(&m)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("bench: replicastart: %w", err)
		}
		go func() { // drain until the child ends
			for range etcd.Messages() {
			}
		}()
		spec.DataDir = filepath.Join(dir, "client")
		spec.EtcdEndpoints = []string{m.Line}
	}
	for i := range cfg.Starts {
		if spec.API, err = freeLoopback(); err != nil {
			return runs, 0, err
		}
		if cfg.CPUProfiles != "" {
			spec.CPUProfile = filepath.Join(cfg.CPUProfiles, fmt.Sprintf("%s-%d.pprof", shape, i+1))
		}
		run, err := startOnce(ctx, cfg, spec)
		run.Shape = shape
		if err != nil {
			return runs, 0, fmt.Errorf("bench: replicastart: %s start %d: %w", shape, i+1, err)
		}
		runs = append(runs, run)
		progress("replicastart: %s start %d/%d: ready %s, serving %s (%d endpoints listed); CPU %s, RSS %.2f GiB; load %s",
			shape, i+1, cfg.Starts, run.Ready.Round(time.Millisecond), run.Serving.Round(time.Millisecond), run.Listed,
			run.CPU.Round(10*time.Millisecond), float64(run.RSS)/(1<<30), run.LoadAvg)
	}
	if etcd != nil {
		etcdRSS, _, _ = sim.ProcessUsage(etcd.PID())
	}
	return runs, etcdRSS, nil
}

// startOnce starts a replica process, waits until it serves, measures it
// and ends it.
func startOnce(ctx context.Context, cfg ReplicaStartConfig, spec haReplicaSpec) (run ReplicaStartRun, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	run.LoadAvg = loadAvg()
	t0 := time.Now()
	c, err := sim.StartChild(ctx, sim.ChildConfig{Name: "replica", Exe: cfg.Exec, Role: roleHAReplica, Spec: spec, Log: cfg.ChildLog})
	if err != nil {
		return run, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	go func() { // drain until the child ends
		for range c.Messages() {
		}
	}()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	for readyz(ctx, hc, spec.API) != http.StatusOK {
		select {
		case <-c.Done():
			return run, fmt.Errorf("the replica ended before it served: %w", c.Err())
		case <-ctx.Done():
			return run, fmt.Errorf("the replica did not serve within %s: %w", cfg.StartTimeout, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	run.Ready = time.Since(t0)
	api, err := client.New("http://"+spec.API, client.WithTimeout(time.Minute))
	if err != nil {
		return run, err
	}
	defer api.Close()
	eps, _, err := api.List(ctx, apiv1.KindEndpoint, sim.TenantName(0), "")
	if err != nil {
		return run, fmt.Errorf("first list: %w", err)
	}
	run.Serving, run.Listed = time.Since(t0), len(eps)
	if run.RSS, run.CPU, err = sim.ProcessUsage(c.PID()); err != nil {
		return run, err
	}
	return run, nil
}

// summariseStarts returns the best, median and worst serving time of runs
// (at least one) and their largest RSS and CPU time.
func summariseStarts(runs []ReplicaStartRun) ReplicaStartShape {
	ds := make([]time.Duration, len(runs))
	s := ReplicaStartShape{Starts: len(runs)}
	for i, r := range runs {
		ds[i] = r.Serving
		s.MaxRSS, s.MaxCPU = max(s.MaxRSS, r.RSS), max(s.MaxCPU, r.CPU)
	}
	slices.Sort(ds)
	s.Best, s.Median, s.Worst = ds[0], ds[len(ds)/2], ds[len(ds)-1]
	return s
}

// etcdServerSpec is the spec of an etcd-server child.
type etcdServerSpec struct {
	Dir string `json:"dir"`
}

// runEtcdServer serves an embedded etcd on spec.Dir (its unix socket,
// Dir/etcd.sock) until its parent ends it.
func runEtcdServer(ctx context.Context, c sim.ChildIO) (err error) {
	var spec etcdServerSpec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return fmt.Errorf("etcd server: spec: %w", err)
	}
	e, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: spec.Dir, Logger: c.Logger})
	if err != nil {
		return fmt.Errorf("etcd server: %w", err)
	}
	defer func() { err = errors.Join(err, e.Close()) }()
	c.Emit(childMsg{T: "ready", Line: e.Endpoints()[0]})
	<-ctx.Done()
	return nil
}
