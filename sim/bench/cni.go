package bench

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/agent/cniserver"
	"github.com/weftnet/weft/agent/restreport"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// Goals of the CNI benchmark (ARCHITECTURE.md: CNI attach with a warm pool).
const (
	GoalCNIAttachesPerSec = 1000.0
	GoalCNIP99Ms          = 10.0
)

// CNIConfig configures the CNI attach benchmark.
type CNIConfig struct {
	// Plugin is the weft-cni binary ("": weft-cni next to this
	// executable, else on PATH).
	Plugin string
	// Attaches is the number of containers attached per series (default
	// 200); Concurrency the ADDs in flight in the concurrent series
	// (default 32).
	Attaches, Concurrency int
	// Pool is the warm pool's size in the pooled runs (default Attaches:
	// a pool sized for the burst).
	Pool int
	// NetnsDir holds the named namespaces (default /var/run/netns).
	NetnsDir string
	// Progress receives a line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

// CNIReport is the result of a CNI benchmark run.
type CNIReport struct {
	Bench  string      `json:"bench"`
	Took   string      `json:"took"`
	Env    DatapathEnv `json:"env"`
	Plugin string      `json:"plugin"`
	// PluginStatic says the plugin is statically linked, as release
	// builds are (CGO_ENABLED=0); a dynamically linked one takes about
	// 1.6 times as long to start (the loader and the C library).
	PluginStatic bool `json:"pluginStatic"`
	// Series are, without the pool and then with it, the successive ADDs
	// (one at a time) and the concurrent ones.
	Series []CNISeries `json:"series"`
	// Exec is the plugin's own cost, the floor of every ADD: the plugin
	// run for VERSION (which it answers without the agent), Attaches
	// times one after the other.
	Exec CNIExec `json:"exec"`
	// PoolRatio is the attach rate with the pool over the rate without it,
	// successive and concurrent.
	PoolRatio struct {
		Successive float64 `json:"successive"`
		Concurrent float64 `json:"concurrent"`
	} `json:"poolRatio"`
	Goals struct {
		AttachesPerSec float64 `json:"attachesPerSec"`
		P99Ms          float64 `json:"p99Ms"`
	} `json:"goals"`
}

// CNISeries is one series of ADDs, each timed from the plugin's exec to
// its result: the interface configured in the container's namespace, the
// endpoint programmed and written Ready.
type CNISeries struct {
	Pool        bool    `json:"pool"`
	Concurrency int     `json:"concurrency"`
	Attaches    int     `json:"attaches"`
	PerSec      float64 `json:"attachesPerSec"`
	P50Ms       float64 `json:"p50Ms"`
	P99Ms       float64 `json:"p99Ms"`
	MaxMs       float64 `json:"maxMs"`
	// FromPool is how many ADDs the pool served.
	FromPool int `json:"fromPool"`
}

// CNIExec is the time from the plugin's exec to its exit, for a call it
// answers alone.
type CNIExec struct {
	Runs   int     `json:"runs"`
	PerSec float64 `json:"perSec"`
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
}

func (c *CNIConfig) setDefaults() {
	setDefault(&c.Attaches, 200)
	setDefault(&c.Concurrency, 32)
	setDefault(&c.Pool, c.Attaches)
	setDefault(&c.NetnsDir, netnsfile.DefaultDir)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// CNI measures container attaches through the weft-cni plugin on one
// host of a test net, with a controller (embedded etcd, plain HTTP, no
// credentials) and the host's agent in this process on the linux driver:
// successive ADDs and Concurrency at a time, without the warm pool and
// with it, each on a fresh lab. The container namespaces are made before
// each series, as a runtime makes them before it calls the plugin. It
// needs root and removes every namespace it made.
func CNI(ctx context.Context, cfg CNIConfig) (*CNIReport, error) {
	cfg.setDefaults()
	if os.Geteuid() != 0 {
		return nil, errors.New("cni: needs root (creates network namespaces)")
	}
	plugin, err := findPlugin(cfg.Plugin)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &CNIReport{Bench: "cni", Plugin: plugin, Env: DatapathEnv{Kernel: kernelRelease(), CPUs: runtime.NumCPU(), LoadStart: loadAvg1()}}
	rep.Goals.AttachesPerSec, rep.Goals.P99Ms = GoalCNIAttachesPerSec, GoalCNIP99Ms
	r := newDPRun(&DatapathConfig{NetnsDir: cfg.NetnsDir, Logger: cfg.Logger, Progress: cfg.Progress}, "cni", start)
	defer r.status.Close()
	if rep.PluginStatic, err = staticELF(plugin); err != nil {
		return rep, fmt.Errorf("cni: plugin %s: %w", plugin, err)
	}
	if !rep.PluginStatic {
		r.status.printf("cni: %s is dynamically linked: it takes about 1.6 times as long to start as a release build (build it with CGO_ENABLED=0)", plugin)
	}
	if rep.Exec, err = execFloor(ctx, plugin, cfg.Attaches); err != nil {
		return rep, err
	}
	r.status.printf("cni: the plugin alone (VERSION), %d runs: %.1f/s, p50 %.2f ms, p99 %.2f ms", rep.Exec.Runs, rep.Exec.PerSec, rep.Exec.P50Ms, rep.Exec.P99Ms)
	for _, pool := range []int{0, cfg.Pool} {
		series, err := r.cniLab(ctx, &cfg, plugin, pool)
		rep.Series = append(rep.Series, series...)
		if err != nil {
			return rep, err
		}
	}
	if s := rep.Series; len(s) == 4 {
		rep.PoolRatio.Successive = round3(s[2].PerSec / s[0].PerSec)
		rep.PoolRatio.Concurrent = round3(s[3].PerSec / s[1].PerSec)
	}
	rep.Took = time.Since(start).Round(time.Millisecond).String()
	rep.Env.LoadEnd = loadAvg1()
	return rep, nil
}

// execFloor runs the plugin for VERSION n times, one after the other.
func execFloor(ctx context.Context, plugin string, n int) (CNIExec, error) {
	took := make([]time.Duration, n)
	conf := []byte(`{"cniVersion":"1.1.0","name":"bench","type":"weft-cni"}`)
	t0 := time.Now()
	for i := range took {
		cmd := exec.CommandContext(ctx, plugin)
		cmd.Env = []string{"CNI_COMMAND=VERSION", "CNI_PATH=" + filepath.Dir(plugin)}
		cmd.Stdin = bytes.NewReader(conf)
		start := time.Now()
		if out, err := cmd.Output(); err != nil {
			return CNIExec{}, fmt.Errorf("cni: %s VERSION: %w: %s", plugin, err, out)
		}
		took[i] = time.Since(start)
	}
	return CNIExec{Runs: n, PerSec: round3(float64(n) / time.Since(t0).Seconds()),
		P50Ms: percentileMs(took, 50), P99Ms: percentileMs(took, 99)}, nil
}

// findPlugin returns the weft-cni binary to run.
func findPlugin(p string) (string, error) {
	if p != "" {
		return filepath.Abs(p)
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "weft-cni"); fileExists(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath("weft-cni")
	if err != nil {
		return "", fmt.Errorf("cni: the weft-cni plugin is neither next to this binary nor on PATH (go build ./cmd/weft-cni, or --plugin): %w", err)
	}
	return p, nil
}

// staticELF says the ELF executable at path is statically linked (it has
// no program interpreter).
func staticELF(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// cniLab runs the two series on a fresh lab whose agent keeps a pool of
// pool endpoints (0: none).
func (r *dpRun) cniLab(ctx context.Context, cfg *CNIConfig, plugin string, pool int) ([]CNISeries, error) {
	l, err := r.newCNILab(ctx, cfg, pool)
	if err != nil {
		return nil, err
	}
	defer l.close()
	var out []CNISeries
	for i, conc := range []int{1, cfg.Concurrency} {
		// A pool refills between series, as between bursts of containers.
		if err := l.settle(ctx, pool); err != nil {
			return out, err
		}
		s, err := l.series(ctx, plugin, fmt.Sprintf("s%d", i), cfg.Attaches, conc)
		if err != nil {
			return out, err
		}
		s.Pool = pool > 0
		out = append(out, *s)
		r.status.printf("cni: pool %-3v %3d ADDs, %2d at a time: %7.1f attaches/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d from the pool)",
			s.Pool, s.Attaches, s.Concurrency, s.PerSec, s.P50Ms, s.P99Ms, s.MaxMs, s.FromPool)
		if err := l.delAll(ctx, plugin, fmt.Sprintf("s%d", i), cfg.Attaches); err != nil {
			return out, err
		}
	}
	return out, nil
}

// cniLab is a controller, one test host and its agent with a CNI server.
type cniLab struct {
	r      *dpRun
	net    *testnet.Net
	dir    string
	ctl    *controller.Controller
	cl     *client.Client
	drv    *linux.Driver
	agent  *agent.Agent
	srv    *cniserver.Server
	socket string
	closed []func()
}

func (r *dpRun) newCNILab(ctx context.Context, cfg *CNIConfig, pool int) (l *cniLab, err error) {
	l = &cniLab{r: r}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.net, err = r.newNet(testnet.Options{Hosts: 1}); err != nil {
		return l, err
	}
	l.closed = append(l.closed, func() { r.closeNet(l.net) })
	if l.dir, err = os.MkdirTemp("", "weft-bench-cni-"); err != nil {
		return l, err
	}
	l.closed = append(l.closed, func() { os.RemoveAll(l.dir) })
	r.status.set("cni: starting a controller")
	l.ctl, err = controller.New(controller.Config{DataDir: filepath.Join(l.dir, "etcd"), APIListen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
		Logger: cfg.Logger, InsecureHTTP: true})
	if err != nil {
		return l, err
	}
	if err := l.ctl.Start(ctx); err != nil {
		return l, err
	}
	l.closed = append(l.closed, func() { l.ctl.Close() })
	if l.cl, err = client.New("http://"+l.ctl.APIAddr(), client.WithTimeout(30*time.Second)); err != nil {
		return l, err
	}
	l.closed = append(l.closed, func() { l.cl.Close() })
	h := l.net.Host(0)
	for _, o := range []apiv1.Object{
		&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "bench"}},
		&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: h.Name}, Spec: apiv1.HostSpec{UnderlayIP: h.UnderlayIP.String()}},
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "main", Tenant: "bench"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.30.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "pods", Tenant: "bench"}, Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.30.0.0/16"}},
	} {
		if _, err := l.cl.Create(ctx, o); err != nil {
			return l, fmt.Errorf("create %s: %w", apiv1.RefOf(o), err)
		}
	}
	if l.drv, err = r.newDriver(ctx, l.net, h, linux.Config{}); err != nil {
		return l, err
	}
	l.closed = append(l.closed, func() { l.drv.Close() })
	key, err := enrol(ctx, l.cl, h.Name)
	if err != nil {
		return l, err
	}
	tap := cniserver.NewTap(restreport.New(l.cl))
	l.agent, err = agent.New(agent.Config{Host: h.Name, StreamAddrs: []string{l.ctl.AgentAddr()}, UDPAddr: l.ctl.AgentAddr(),
		Key: key, Driver: l.drv, UnderlayIP: h.UnderlayIP, UnderlayDev: h.UnderlayDev, Reporter: tap, IfName: cniserver.IfName,
		Backoff: backoff.Policy{Min: 10 * time.Millisecond, Max: time.Second}, Logger: cfg.Logger})
	if err != nil {
		return l, err
	}
	if err := l.agent.Start(ctx); err != nil {
		return l, err
	}
	l.closed = append(l.closed, func() { l.agent.Close() })
	l.socket = filepath.Join(l.dir, "cni.sock")
	l.srv, err = cniserver.New(cniserver.Config{Socket: l.socket, Host: h.Name, API: l.cl, Tap: tap, Agent: l.agent,
		Default: cniserver.Selection{Tenant: "bench", Subnet: "pods"}, Pool: cniserver.PoolConfig{Max: pool, Min: pool}, Logger: cfg.Logger})
	if err != nil {
		return l, err
	}
	if err := l.srv.Start(ctx); err != nil {
		return l, err
	}
	l.closed = append(l.closed, func() { l.srv.Close() })
	return l, nil
}

func (l *cniLab) close() {
	for i := len(l.closed) - 1; i >= 0; i-- {
		l.closed[i]()
	}
	l.closed = nil
}

// conf is the network configuration the plugin gets.
func (l *cniLab) conf() []byte {
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "bench", "type": "weft-cni", "agentSocket": l.socket})
	return b
}

// settle waits until the agent's pool holds its size (pool > 0).
func (l *cniLab) settle(ctx context.Context, pool int) error {
	if pool == 0 {
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ready := l.srv.PoolReady()
		if ready >= pool {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cni: the warm pool holds %d of %d endpoints after 2 minutes", ready, pool)
		}
		l.r.status.set("cni: warm pool %d/%d", ready, pool)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// exec runs the plugin for one command on container id and returns its
// output and how long it took from its start to its exit.
func (l *cniLab) exec(ctx context.Context, plugin, command, id, netns string) ([]byte, time.Duration, error) {
	cmd := exec.CommandContext(ctx, plugin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netns, "CNI_IFNAME=eth0",
		"CNI_PATH=" + filepath.Dir(plugin)}
	cmd.Stdin = bytes.NewReader(l.conf())
	var out bytes.Buffer
	cmd.Stdout = &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	err := cmd.Wait()
	dt := time.Since(t0)
	if err != nil {
		return out.Bytes(), dt, fmt.Errorf("%s %s: %w: %s", command, id, err, out.String())
	}
	return out.Bytes(), dt, nil
}

// series attaches n containers, conc at a time.
func (l *cniLab) series(ctx context.Context, plugin, name string, n, conc int) (*CNISeries, error) {
	ns := make([]string, n)
	for i := range ns {
		l.r.status.set("cni: making container namespaces %d/%d", i, n)
		p, err := l.net.AddNetns(fmt.Sprintf("%s-%d", name, i))
		if err != nil {
			return nil, err
		}
		ns[i] = p
	}
	before := l.srv.PoolServed()
	took := make([]time.Duration, n)
	var mu sync.Mutex
	done := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	t0 := time.Now()
	for i := range n {
		g.Go(func() error {
			_, dt, err := l.exec(gctx, plugin, "ADD", fmt.Sprintf("%s-%d", name, i), ns[i])
			took[i] = dt
			mu.Lock()
			done++
			l.r.status.set("cni: %d/%d ADDs, %d at a time", done, n, conc)
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	wall := time.Since(t0)
	return &CNISeries{Concurrency: conc, Attaches: n, PerSec: round3(float64(n) / wall.Seconds()),
		P50Ms: percentileMs(took, 50), P99Ms: percentileMs(took, 99), MaxMs: percentileMs(took, 100),
		FromPool: l.srv.PoolServed() - before}, nil
}

// delAll detaches the containers of a series and removes their namespaces.
func (l *cniLab) delAll(ctx context.Context, plugin, name string, n int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error {
			id := fmt.Sprintf("%s-%d", name, i)
			_, _, err := l.exec(gctx, plugin, "DEL", id, filepath.Join(l.net.Dir(), l.net.Prefix()+"-"+id))
			return err
		})
	}
	l.r.status.set("cni: DEL of %d containers", n)
	return g.Wait()
}
