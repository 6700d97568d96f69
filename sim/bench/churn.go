package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/store"
)

// ChurnConfig configures the endpoint churn benchmark.
type ChurnConfig struct {
	// Duration of the measured phase (default 10s).
	Duration time.Duration
	// Concurrency is the number of client workers, each with its own
	// keep-alive connection (default 128).
	Concurrency int
	// Hosts the endpoints are spread over (default 16).
	Hosts int
	// DataDir for the embedded etcd (default: a temporary directory, removed afterwards).
	DataDir string
	// Server, if set, benchmarks a running controller instead of starting one;
	// the etcd baseline is then skipped.
	Server string
	// BaselineOpsPerTxn and BaselineConcurrency shape the raw batched-etcd
	// put baseline (default 50 ops/txn, 8 writers).
	BaselineOpsPerTxn, BaselineConcurrency int
	// InsecureHTTP runs the controller's API over plain HTTP without
	// credentials, the baseline of the default: HTTPS with a bearer token.
	InsecureHTTP bool
	// Progress receives one line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

// ChurnReport is the result of a churn run.
type ChurnReport struct {
	Bench        string  `json:"bench"`
	Duration     string  `json:"duration"`
	Concurrency  int     `json:"concurrency"`
	Transport    string  `json:"transport"` // "https+token" or "http"
	Creates      int64   `json:"creates"`
	Deletes      int64   `json:"deletes"`
	Errors       int64   `json:"errors"`
	OpsPerSec    float64 `json:"opsPerSec"`
	CreateP50Ms  float64 `json:"createP50Ms"`
	CreateP99Ms  float64 `json:"createP99Ms"`
	DeleteP50Ms  float64 `json:"deleteP50Ms"`
	DeleteP99Ms  float64 `json:"deleteP99Ms"`
	EtcdPutRate  float64 `json:"etcdBatchedPutsPerSec,omitempty"`
	EtcdOpsInTxn int     `json:"etcdOpsPerTxn,omitempty"`
	Ratio        float64 `json:"ratioToEtcdBatchedPuts,omitempty"`
	GoalOpsSec   float64 `json:"goalOpsPerSec"`
	CPUs         int     `json:"cpus"`
	FirstError   string  `json:"firstError,omitempty"`
	// Calibration is this machine's measure, taken before the run.
	Calibration *Calibration `json:"calibration,omitempty"`
}

func (c *ChurnConfig) setDefaults() {
	setDefault(&c.Duration, 10*time.Second)
	setDefault(&c.Concurrency, 128)
	setDefault(&c.Hosts, 16)
	setDefault(&c.BaselineOpsPerTxn, 50)
	setDefault(&c.BaselineConcurrency, 8)
	setDefault(&c.Logger, slog.New(slog.DiscardHandler))
}

// Churn measures durable endpoint create+delete throughput over real HTTP.
// Each worker creates an endpoint, then deletes it, and repeats; every
// acknowledged create and delete has been committed (fsynced) by etcd.
func Churn(ctx context.Context, cfg ChurnConfig) (*ChurnReport, error) {
	cfg.setDefaults()
	progress := progressTo(cfg.Progress)
	rep := &ChurnReport{Bench: "churn", Concurrency: cfg.Concurrency, GoalOpsSec: 20000, CPUs: runtime.NumCPU(), Transport: "https+token"}
	if cfg.InsecureHTTP {
		rep.Transport = "http"
	}
	cal, err := Calibrate(ctx)
	if err != nil {
		return nil, err
	}
	rep.Calibration = &cal
	progress("%s", cal)
	opts := []client.Option{client.WithMaxIdleConnsPerHost(cfg.Concurrency * 2), client.WithTimeout(30 * time.Second)}
	server := cfg.Server
	if server == "" {
		dir := cfg.DataDir
		if dir == "" {
			d, err := os.MkdirTemp("", "weft-bench-churn-")
			if err != nil {
				return nil, fmt.Errorf("churn: temp dir: %w", err)
			}
			defer os.RemoveAll(d)
			dir = d
		}
		c, err := controller.New(controller.Config{DataDir: dir, APIListen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
			Logger: cfg.Logger, InsecureHTTP: cfg.InsecureHTTP})
		if err != nil {
			return nil, err
		}
		progress("starting controller with embedded etcd in %s", dir)
		if err := c.Start(ctx); err != nil {
			return nil, fmt.Errorf("churn: start controller: %w", err)
		}
		defer c.Close()
		server = c.ServerURL()
		// The cluster-admin context the controller wrote: its CA and token.
		s, err := clientconfig.LoadSettings(filepath.Join(dir, "admin.config"))
		if err != nil {
			return nil, fmt.Errorf("churn: %w", err)
		}
		opts = append(opts, s.ClientOptions()...)

		progress("baseline: raw etcd puts in %d-op transactions, %d writers, %s", cfg.BaselineOpsPerTxn, cfg.BaselineConcurrency, cfg.Duration/2)
		cli, err := c.EtcdClient()
		if err != nil {
			return nil, err
		}
		rate, err := store.MeasurePutRate(ctx, cli, "/bench-baseline/", cfg.Duration/2, cfg.BaselineOpsPerTxn, cfg.BaselineConcurrency)
		if err != nil {
			return nil, fmt.Errorf("churn: etcd baseline: %w", err)
		}
		rep.EtcdPutRate, rep.EtcdOpsInTxn = rate, cfg.BaselineOpsPerTxn
		progress("baseline: %.0f puts/s", rate)
	}
	cl, err := client.New(server, opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := churnSetup(ctx, cl, cfg.Hosts); err != nil {
		return nil, err
	}

	var creates, deletes, errs atomic.Int64
	var firstErr atomic.Value
	lat := make([]latencies, cfg.Concurrency)
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	progress("churn: %d workers creating and deleting endpoints for %s", cfg.Concurrency, cfg.Duration)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			host := fmt.Sprintf("bench-h%d", w%cfg.Hosts)
			for i := 0; runCtx.Err() == nil; i++ {
				name := fmt.Sprintf("ep-%d-%d", w, i)
				ep := &apiv1.Endpoint{
					TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
					Metadata: apiv1.ObjectMeta{Name: name, Tenant: "bench", Labels: map[string]string{"worker": fmt.Sprint(w)}},
					Spec:     apiv1.EndpointSpec{Subnet: "s", Host: host},
				}
				t0 := time.Now()
				if _, err := cl.Create(runCtx, ep); err != nil {
					if runCtx.Err() == nil {
						errs.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				t1 := time.Now()
				lat[w].create = append(lat[w].create, t1.Sub(t0))
				creates.Add(1)
				// The delete is always completed, also after the deadline, so
				// the run leaves nothing behind.
				if _, err := cl.Delete(context.WithoutCancel(runCtx), apiv1.KindEndpoint, "bench", name); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				if runCtx.Err() == nil {
					lat[w].delete = append(lat[w].delete, time.Since(t1))
					deletes.Add(1)
				}
			}
		}(w)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastOps int64
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
			ops := creates.Load() + deletes.Load()
			progress("  %4.0fs  %7d ops/s  (%d creates, %d deletes, %d errors)", time.Since(start).Seconds(), ops-lastOps, creates.Load(), deletes.Load(), errs.Load())
			lastOps = ops
		}
	}
	elapsed := time.Since(start)
	if elapsed > cfg.Duration {
		elapsed = cfg.Duration
	}
	rep.Duration = elapsed.Round(time.Millisecond).String()
	rep.Creates, rep.Deletes, rep.Errors = creates.Load(), deletes.Load(), errs.Load()
	rep.OpsPerSec = float64(rep.Creates+rep.Deletes) / elapsed.Seconds()
	var all latencies
	for _, l := range lat {
		all.create = append(all.create, l.create...)
		all.delete = append(all.delete, l.delete...)
	}
	rep.CreateP50Ms, rep.CreateP99Ms = percentileMs(all.create, 50), percentileMs(all.create, 99)
	rep.DeleteP50Ms, rep.DeleteP99Ms = percentileMs(all.delete, 50), percentileMs(all.delete, 99)
	if rep.EtcdPutRate > 0 {
		rep.Ratio = rep.OpsPerSec / rep.EtcdPutRate
	}
	if v, ok := firstErr.Load().(string); ok {
		rep.FirstError = v
	}
	if rep.Creates == 0 {
		return rep, errors.New("churn: no endpoint was created: " + rep.FirstError)
	}
	return rep, nil
}

type latencies struct{ create, delete []time.Duration }

// churnSetup applies the tenant, VPC, subnet and hosts the run needs.
func churnSetup(ctx context.Context, cl *client.Client, hosts int) error {
	objs := []apiv1.Object{
		&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "bench"}},
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "v", Tenant: "bench"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/8"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "s", Tenant: "bench"}, Spec: apiv1.SubnetSpec{VPC: "v", CIDR: "10.0.0.0/12"}},
	}
	for i := 0; i < hosts; i++ {
		objs = append(objs, &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("bench-h%d", i)},
			Spec: apiv1.HostSpec{UnderlayIP: fmt.Sprintf("192.0.2.%d", 10+i%200)}})
	}
	for _, o := range objs {
		if _, _, err := cl.Apply(ctx, o); err != nil {
			return fmt.Errorf("churn: apply %s: %w", apiv1.RefOf(o), err)
		}
	}
	return nil
}

func tm(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }
