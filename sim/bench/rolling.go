package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/sim"
)

// rollingHostsPerProcess bounds the simulated hosts of one agents process
// (a config stream and a UDP socket each, 20,000 open files at most).
const rollingHostsPerProcess = 5000

// rollingTenant is the tenant of the rolling benchmark's endpoints; its
// VPC k (one subnet each) holds endpoints [k*rollingPerVPC, (k+1)*rollingPerVPC).
const (
	rollingTenant = "roll"
	rollingPerVPC = 60_000
)

// RollingConfig configures Rolling.
type RollingConfig struct {
	// Members is the number of replicas, each embedding an etcd member of
	// one cluster (default 3).
	Members int
	// Hosts simulated hosts (default 10,000; agents with the sim driver,
	// enrolled through the API, up to rollingHostsPerProcess in each
	// child process) with EndpointsPerHost endpoints each (default 2).
	Hosts, EndpointsPerHost int
	// Exec is a binary with the hidden sim.ChildCommand running ChildRoles
	// (required): the simulated hosts run in processes of it, and so does
	// every replica of this build.
	Exec string
	// FromBinary, if set, is an older weft binary: the replicas start as
	// `FromBinary controller ...` processes and each is restarted into
	// this build (a rolling upgrade). Empty: a rolling restart of this
	// build.
	FromBinary string
	// Settle is the least time between two steps (default 2 s).
	Settle time.Duration
	// StepTimeout bounds a step (default 5 minutes).
	StepTimeout time.Duration
	// Dir holds the replicas' data dirs (default: a temporary one).
	Dir string
	// Progress receives the timeline (nil: none); ChildLog the children's
	// and the replicas' logs (nil: discarded).
	Progress, ChildLog io.Writer
	Logger             *slog.Logger
}

func (c *RollingConfig) setDefaults() {
	c.Members = cmp.Or(c.Members, 3)
	c.Hosts = cmp.Or(c.Hosts, 10_000)
	c.EndpointsPerHost = cmp.Or(c.EndpointsPerHost, 2)
	c.Settle = cmp.Or(c.Settle, 2*time.Second)
	c.StepTimeout = cmp.Or(c.StepTimeout, 5*time.Minute)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the configuration.
func (c *RollingConfig) Validate() error {
	switch {
	case c.Exec == "":
		return errors.New("bench: rolling: the agents' binary (Exec) is required")
	case c.Members < 3:
		return fmt.Errorf("bench: rolling: %d members: a restart needs at least 3 to keep a quorum", c.Members)
	case c.Hosts < 1 || c.EndpointsPerHost < 1:
		return fmt.Errorf("bench: rolling: %d hosts with %d endpoints each: want at least 1 of each", c.Hosts, c.EndpointsPerHost)
	case c.Hosts > (c.Members-1)*18_000:
		// While one replica restarts, the others hold every agent's
		// config stream (20,000 open files per process at most).
		return fmt.Errorf("bench: rolling: %d hosts on %d members: at most %d (18,000 streams on each member still up)", c.Hosts, c.Members, (c.Members-1)*18_000)
	case c.Hosts*c.EndpointsPerHost > 256*rollingPerVPC:
		return fmt.Errorf("bench: rolling: %d endpoints: at most %d", c.Hosts*c.EndpointsPerHost, 256*rollingPerVPC)
	}
	if c.FromBinary != "" {
		if _, err := os.Stat(c.FromBinary); err != nil {
			return fmt.Errorf("bench: rolling: --from-binary: %w", err)
		}
	}
	return nil
}

// RollingReport is the result of Rolling.
type RollingReport struct {
	Bench     string `json:"bench"`
	Members   int    `json:"members"`
	Hosts     int    `json:"hosts"`
	Endpoints int    `json:"endpoints"`
	// From is the first generation's binary (FromBinary) and its
	// `version` output; empty for a rolling restart of this build.
	From        string `json:"from,omitempty"`
	FromVersion string `json:"fromVersion,omitempty"`
	// Setup is the time from the replicas' start until every host was
	// programmed and every endpoint Ready.
	Setup time.Duration `json:"setup"`
	Steps []RollingStep `json:"steps"`
	// WorstStep is the longest step (stop to re-homed).
	WorstStep time.Duration `json:"worstStep"`
	// HostsWritten counts the hosts whose datapath was written after
	// their initial programming (must be 0), DatapathWrites the writes,
	// WriteSample one such host's.
	HostsWritten   int    `json:"hostsWritten"`
	DatapathWrites uint64 `json:"datapathWrites"`
	WriteSample    string `json:"writeSample,omitempty"`
	// LostEndpoints counts the endpoints seen Lost, at any check after a
	// step or at the end (must be 0); LostSample names one.
	LostEndpoints int    `json:"lostEndpoints"`
	LostSample    string `json:"lostSample,omitempty"`
	// DeadHosts counts the hosts seen Dead at a check (must be 0).
	DeadHosts int `json:"deadHosts"`
	// EndpointsRewritten counts the endpoints whose stored object changed
	// during the roll (their resourceVersion).
	EndpointsRewritten int `json:"endpointsRewritten"`
	// Snapshots counts the full views the replicas sent during the roll
	// (an agent that failed over with a delta gets none); InitialSnapshots
	// those sent before it (one per host at least: the first views).
	Snapshots        int `json:"snapshots"`
	InitialSnapshots int `json:"initialSnapshots"`
	// StreamConnects are the hosts' welcomed sessions after the initial
	// ones (their moves); StreamFailed their attempts without a Welcome.
	StreamConnects uint64 `json:"streamConnects"`
	StreamFailed   uint64 `json:"streamFailed"`
	// CrossReads counts the objects written through one replica and read
	// through another after each step (of both generations mid-roll);
	// CrossReadFailures those not read back.
	CrossReads        int    `json:"crossReads"`
	CrossReadFailures int    `json:"crossReadFailures"`
	CrossReadSample   string `json:"crossReadSample,omitempty"`
	CPUs              int    `json:"cpus"`
	Load              string `json:"load"`
}

// RollingStep is one replica's restart.
type RollingStep struct {
	Member string `json:"member"`
	// Stopped is how long the replica took to exit after it was told to
	// stop; Ready when its successor answered /readyz 200; Rehomed when
	// every host was connected again and the etcd cluster whole; all
	// from the stop.
	Stopped time.Duration `json:"stopped"`
	Ready   time.Duration `json:"ready"`
	Rehomed time.Duration `json:"rehomed"`
	// Sessions is how many agents streamed from the replica at the stop.
	Sessions int `json:"sessions"`
	// Snapshots the replicas sent during the step.
	Snapshots int `json:"snapshots"`
	// Lost and Dead are the endpoints Lost and hosts Dead after the step.
	Lost int `json:"lost"`
	Dead int `json:"dead"`
}

// Failures lists what the run must not show.
func (rep *RollingReport) Failures() []string {
	var out []string
	if rep.HostsWritten > 0 {
		out = append(out, fmt.Sprintf("%d hosts reprogrammed (%d datapath writes; %s)", rep.HostsWritten, rep.DatapathWrites, rep.WriteSample))
	}
	if rep.LostEndpoints > 0 {
		out = append(out, fmt.Sprintf("%d endpoints marked Lost (%s)", rep.LostEndpoints, rep.LostSample))
	}
	if rep.DeadHosts > 0 {
		out = append(out, fmt.Sprintf("%d hosts marked Dead", rep.DeadHosts))
	}
	if rep.Snapshots > 0 {
		out = append(out, fmt.Sprintf("%d full snapshots sent to agents that failed over (want deltas)", rep.Snapshots))
	}
	if rep.CrossReadFailures > 0 {
		out = append(out, fmt.Sprintf("%d of %d objects not readable through another replica (%s)", rep.CrossReadFailures, rep.CrossReads, rep.CrossReadSample))
	}
	return out
}

// rollMember is a replica of the run: a child of Exec (this build) or,
// before its restart with FromBinary, a `controller` process of it.
type rollMember struct {
	spec  haReplicaSpec
	child *sim.Child
	proc  *exec.Cmd
	exit  chan struct{} // closed when proc has exited
	old   bool
}

// rollRun is one run of Rolling.
type rollRun struct {
	cfg     RollingConfig
	start   time.Time
	members []*rollMember
	etcd    *clientv3.Client
	groups  []*haHosts
	hc      *http.Client
	// rv is every endpoint's resourceVersion once all were Ready.
	rv map[string]string
	// lost and dead: the endpoints and hosts seen Lost or Dead.
	lost, dead map[string]bool
}

// Rolling starts Members replicas embedding a 3-member etcd cluster, with
// Hosts simulated hosts streaming from them and EndpointsPerHost
// endpoints each, waits until every host is programmed and every endpoint
// Ready (the agents report through the replicas' APIs), then restarts each replica in turn (stop, start, wait until it is
// ready, every host connected and the cluster whole) — into this build
// from FromBinary's when set — and reports each step's times, the
// datapath writes after the initial programming (must be 0), the
// endpoints marked Lost (must be 0), the full snapshots sent instead of
// deltas and the objects one replica wrote that another could not read.
func Rolling(ctx context.Context, cfg RollingConfig) (*RollingReport, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "weft-bench-rolling-")
		if err != nil {
			return nil, fmt.Errorf("bench: rolling: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	r := &rollRun{cfg: cfg, start: time.Now(), lost: map[string]bool{}, dead: map[string]bool{},
		hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}}
	defer r.close()
	rep := &RollingReport{Bench: "rolling", Members: cfg.Members, Hosts: cfg.Hosts, Endpoints: cfg.Hosts * cfg.EndpointsPerHost,
		From: cfg.FromBinary, CPUs: runtime.NumCPU()}
	if cfg.FromBinary != "" {
		// What the old binary says of itself (best effort: old builds may
		// not know --client).
		out, _ := exec.CommandContext(ctx, cfg.FromBinary, "version", "--client").Output()
		rep.FromVersion = strings.TrimSpace(string(out))
		r.logf("from %s: %s", cfg.FromBinary, rep.FromVersion)
	}
	if err := r.startCluster(ctx, dir); err != nil {
		return rep, err
	}
	if err := r.setup(ctx); err != nil {
		return rep, err
	}
	rep.Setup = time.Since(r.start)
	r.logf("setup: %d hosts programmed, %d endpoints Ready", cfg.Hosts, rep.Endpoints)
	var (
		before hostsSummary
		err    error
	)
	for _, g := range r.groups {
		if _, err := g.ask(ctx, "mark"); err != nil {
			return rep, err
		}
		s, err := g.ask(ctx, "summary")
		if err != nil {
			return rep, err
		}
		before.add(*s.Summary)
	}
	// Every host got its first view as a snapshot: the counter is read.
	if rep.InitialSnapshots, _, err = r.snapshotsSent(ctx, -1); err != nil {
		return rep, err
	}
	if rep.InitialSnapshots < cfg.Hosts {
		return rep, fmt.Errorf("bench: rolling: the replicas say they sent %d snapshots to %d hosts (weft_stream_deltas_total{type=\"snapshot\"} not read?)", rep.InitialSnapshots, cfg.Hosts)
	}
	for i := range r.members {
		if err := sleepCtx(ctx, cfg.Settle); err != nil {
			return rep, err
		}
		st, err := r.step(ctx, i, rep)
		rep.Steps = append(rep.Steps, st)
		if err != nil {
			return rep, err
		}
		rep.WorstStep = max(rep.WorstStep, st.Rehomed)
		rep.Snapshots += st.Snapshots
	}
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return rep, err
	}
	var after hostsSummary
	for _, g := range r.groups {
		s, err := g.ask(ctx, "summary")
		if err != nil {
			return rep, err
		}
		after.add(*s.Summary)
	}
	rep.HostsWritten, rep.DatapathWrites, rep.WriteSample = after.Written, after.Writes, after.WriteSample
	rep.StreamConnects, rep.StreamFailed = after.StreamConnects-before.StreamConnects, after.StreamFailed-before.StreamFailed
	var rewritten int
	rewritten, err = r.checkObjects(ctx)
	if err != nil {
		return rep, err
	}
	rep.EndpointsRewritten = rewritten
	rep.LostEndpoints, rep.DeadHosts = len(r.lost), len(r.dead)
	for id := range r.lost {
		rep.LostSample = id
		break
	}
	rep.Load = loadAvg()
	r.logf("roll done: worst step %s; hosts written %d (%d writes), endpoints Lost %d, hosts Dead %d, snapshots %d, endpoints rewritten %d",
		rep.WorstStep.Round(time.Millisecond), rep.HostsWritten, rep.DatapathWrites, rep.LostEndpoints, rep.DeadHosts, rep.Snapshots, rep.EndpointsRewritten)
	return rep, nil
}

// logf prints a line of the timeline.
func (r *rollRun) logf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "rolling [%6.1fs] "+format+"\n", append([]any{time.Since(r.start).Seconds()}, args...)...)
	}
}

// startCluster starts the replicas together on loopback (each waits for
// a quorum) and an etcd client of the cluster.
func (r *rollRun) startCluster(ctx context.Context, dir string) error {
	key := filepath.Join(dir, "cluster.key")
	if err := secrets.WriteKeyFile(key, secrets.NewKey()); err != nil {
		return fmt.Errorf("bench: rolling: %w", err)
	}
	var initial, clientURLs []string
	for i := range r.cfg.Members {
		s := haReplicaSpec{DataDir: filepath.Join(dir, fmt.Sprintf("m%d", i)), ClusterKeyFile: key, Name: fmt.Sprintf("m%d", i)}
		for _, p := range []*string{&s.PeerURL, &s.ClientURL, &s.API, &s.Agent} {
			var err error
			if *p, err = freeLoopback(); err != nil {
				return err
			}
		}
		s.PeerURL, s.ClientURL = "https://"+s.PeerURL, "https://"+s.ClientURL
		initial, clientURLs = append(initial, s.Name+"="+s.PeerURL), append(clientURLs, s.ClientURL)
		r.members = append(r.members, &rollMember{spec: s})
	}
	errs := make([]error, len(r.members))
	var wg sync.WaitGroup
	for i, m := range r.members {
		m.spec.InitialCluster = strings.Join(initial, ",")
		wg.Go(func() { errs[i] = r.startMember(ctx, m, r.cfg.FromBinary != "") })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	cc, err := controller.EtcdClientConfig(controller.Config{EtcdEndpoints: clientURLs, ClusterKeyFile: key})
	if err != nil {
		return fmt.Errorf("bench: rolling: %w", err)
	}
	if r.etcd, err = clientv3.New(cc); err != nil {
		return fmt.Errorf("bench: rolling: etcd client: %w", err)
	}
	r.logf("%d replicas ready (%s)", len(r.members), map[bool]string{true: "from " + r.cfg.FromBinary, false: "this build"}[r.cfg.FromBinary != ""])
	return nil
}

// startMember starts a member's replica, of FromBinary if old, and waits
// until it answers /readyz with 200.
func (r *rollRun) startMember(ctx context.Context, m *rollMember, old bool) error {
	m.old, m.child, m.proc = old, nil, nil
	if old {
		s := m.spec
		cmd := exec.Command(r.cfg.FromBinary, "controller", "--data-dir", s.DataDir, "--cluster-key-file", s.ClusterKeyFile,
			"--etcd-name", s.Name, "--etcd-peer-listen", s.PeerURL, "--etcd-client-listen", s.ClientURL,
			"--etcd-initial-cluster", s.InitialCluster, "--api-listen", s.API, "--agent-listen", s.Agent,
			"--metrics-listen", "", "--insecure-http", "--log-level", "warn")
		log := prefixLines(r.childLog(), s.Name+": ")
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("bench: rolling: start %s from %s: %w", s.Name, r.cfg.FromBinary, err)
		}
		m.proc, m.exit = cmd, make(chan struct{})
		go func() { _ = cmd.Wait(); close(m.exit) }()
	} else {
		c, err := sim.StartChild(ctx, sim.ChildConfig{Name: "replica " + m.spec.Name, Exe: r.cfg.Exec, Role: roleHAReplica, Spec: m.spec, Log: prefixLines(r.cfg.ChildLog, m.spec.Name+": ")})
		if err != nil {
			return fmt.Errorf("bench: rolling: %w", err)
		}
		m.child, m.exit = c, make(chan struct{})
		go func() { // drain until the child ends
			for range c.Messages() {
			}
			close(m.exit)
		}()
	}
	deadline := time.Now().Add(r.cfg.StepTimeout)
	for readyz(ctx, r.hc, m.spec.API) != http.StatusOK {
		select {
		case <-m.exit:
			return fmt.Errorf("bench: rolling: replica %s ended before it was ready (its log: ChildLog)", m.spec.Name)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: rolling: replica %s not ready within %s", m.spec.Name, r.cfg.StepTimeout)
		}
	}
	return nil
}

func (r *rollRun) childLog() io.Writer {
	if r.cfg.ChildLog == nil {
		return io.Discard
	}
	return r.cfg.ChildLog
}

// stop stops a member's replica gracefully (SIGTERM to a
// `controller` process, the end of its input to a child), killing it
// after 30 s.
func (m *rollMember) stop() error {
	if m.child != nil {
		return m.child.Close()
	}
	if m.proc == nil {
		return nil
	}
	_ = m.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exit:
	case <-time.After(30 * time.Second):
		_ = m.proc.Process.Kill()
		<-m.exit
	}
	return nil
}

// close stops the hosts, then the replicas.
func (r *rollRun) close() {
	for _, g := range r.groups {
		_ = g.close()
	}
	if r.etcd != nil {
		r.etcd.Close()
	}
	for _, m := range r.members {
		_ = m.stop()
	}
}

// setup creates the tenant, VPCs and subnets, enrols the hosts and
// creates their endpoints through the replicas' APIs, starts the hosts'
// agents, which report their endpoints' status through the replicas' APIs
// as real agents do, and waits until every host is programmed and every
// endpoint Ready; then it records every endpoint's resourceVersion.
func (r *rollRun) setup(ctx context.Context) error {
	apis := make([]*client.Client, len(r.members))
	for i, m := range r.members {
		api, err := client.New("http://"+m.spec.API, client.WithTimeout(30*time.Second))
		if err != nil {
			return err
		}
		defer api.Close()
		apis[i] = api
	}
	eps := r.cfg.Hosts * r.cfg.EndpointsPerHost
	objs := []apiv1.Object{&apiv1.Tenant{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTenant}, Metadata: apiv1.ObjectMeta{Name: rollingTenant}}}
	for k := range (eps + rollingPerVPC - 1) / rollingPerVPC {
		cidr := fmt.Sprintf("10.%d.0.0/16", k)
		objs = append(objs,
			&apiv1.VPC{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindVPC}, Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("v%d", k), Tenant: rollingTenant},
				Spec: apiv1.VPCSpec{CIDRs: []string{cidr}}},
			&apiv1.Subnet{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindSubnet}, Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("s%d", k), Tenant: rollingTenant},
				Spec: apiv1.SubnetSpec{VPC: fmt.Sprintf("v%d", k), CIDR: cidr}})
	}
	for _, o := range objs {
		if _, err := apis[0].Create(ctx, o); err != nil {
			return fmt.Errorf("bench: rolling: create %s: %w", apiv1.RefOf(o), err)
		}
	}
	hosts := make([]haHostSpec, r.cfg.Hosts)
	t0 := time.Now()
	// Through one replica: replicas that allocate host IDs and address
	// blocks at once conflict, and enrolment gives up after a few tries.
	err := parallel(ctx, 16, r.cfg.Hosts, func(n int) { r.logf("setup: %d/%d hosts enrolled", n, r.cfg.Hosts) }, func(_, i int) error {
		name, ip := fmt.Sprintf("rh%d", i), sim.HostUnderlay(i)
		e, err := apis[0].Enroll(ctx, client.EnrollRequest{Host: name, UnderlayIP: ip.String()})
		if err != nil {
			return fmt.Errorf("bench: rolling: enrol %s: %w", name, err)
		}
		key, err := secrets.ParseKey(e.HostKey)
		if err != nil {
			return fmt.Errorf("bench: rolling: key of %s: %w", name, err)
		}
		hosts[i] = haHostSpec{Name: name, Key: key, Underlay: ip, Endpoints: r.cfg.EndpointsPerHost}
		return nil
	})
	if err != nil {
		return err
	}
	r.logf("setup: %d hosts enrolled in %s", r.cfg.Hosts, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	err = parallel(ctx, 32, eps, func(n int) { r.logf("setup: %d/%d endpoints created", n, eps) }, func(_, e int) error {
		h, k := e%r.cfg.Hosts, e/rollingPerVPC
		ep := &apiv1.Endpoint{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
			Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("re%d", e), Tenant: rollingTenant},
			Spec:     apiv1.EndpointSpec{Subnet: fmt.Sprintf("s%d", k), Host: hosts[h].Name}}
		if _, err := apis[0].Create(ctx, ep); err != nil {
			return fmt.Errorf("bench: rolling: create endpoint %s: %w", ep.Metadata.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.logf("setup: %d endpoints created in %s", eps, time.Since(t0).Round(time.Millisecond))
	var agentAddrs, apiAddrs []string
	for _, m := range r.members {
		agentAddrs, apiAddrs = append(agentAddrs, m.spec.Agent), append(apiAddrs, m.spec.API)
	}
	for first := 0; first < len(hosts); first += rollingHostsPerProcess {
		spec := haAgentsSpec{Replicas: agentAddrs, APIs: apiAddrs, Hosts: hosts[first:min(first+rollingHostsPerProcess, len(hosts))]}
		c, err := sim.StartChild(ctx, sim.ChildConfig{Name: fmt.Sprintf("simulated hosts %d-", first), Exe: r.cfg.Exec, Role: roleHAAgents, Spec: spec, Log: prefixLines(r.cfg.ChildLog, "hosts: ")})
		if err != nil {
			return fmt.Errorf("bench: rolling: %w", err)
		}
		g := &haHosts{child: c, states: make(chan []haHostState, 1), replies: make(chan haAgentsMsg, 1), done: make(chan struct{})}
		r.groups = append(r.groups, g)
		if _, err := c.Await(ctx, "ready", 5*time.Minute); err != nil {
			return fmt.Errorf("bench: rolling: %w", err)
		}
		go g.read()
	}
	deadline := time.Now().Add(r.cfg.StepTimeout + time.Duration(r.cfg.Hosts)*10*time.Millisecond)
	for {
		var sum hostsSummary
		for _, g := range r.groups {
			s, err := g.ask(ctx, "summary")
			if err != nil {
				return err
			}
			sum.add(*s.Summary)
		}
		ready, err := r.endpointsReady(ctx)
		if err != nil {
			return err
		}
		r.logf("setup: %d/%d hosts connected, %d programmed; %d/%d endpoints Ready", sum.Connected, r.cfg.Hosts, sum.Programmed, ready, eps)
		if sum.Programmed == r.cfg.Hosts && ready == eps {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: rolling: %d of %d hosts programmed, %d of %d endpoints Ready after %s", sum.Programmed, r.cfg.Hosts, ready, eps, time.Since(r.start).Round(time.Second))
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
	// The endpoints' resourceVersions once every host has reported.
	if err := sleepCtx(ctx, r.cfg.Settle); err != nil {
		return err
	}
	list, err := r.listEndpoints(ctx)
	if err != nil {
		return err
	}
	r.rv = map[string]string{}
	for _, o := range list {
		m := o.GetObjectMeta()
		r.rv[m.Name] = m.ResourceVersion
	}
	return nil
}

// parallel runs f(worker, i) for i in 0..n-1 on workers goroutines,
// calling tick with the count done once a second, and returns the first
// error.
func parallel(ctx context.Context, workers, n int, tick func(done int), f func(w, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for w := range min(workers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(w, i); err != nil {
					cancel(err)
					return
				}
				done.Add(1)
			}
		})
	}
	stop := make(chan struct{})
	var tw sync.WaitGroup
	tw.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				tick(int(done.Load()))
			}
		}
	})
	wg.Wait()
	close(stop)
	tw.Wait()
	return context.Cause(ctx)
}

// api returns a client of a ready replica's API (the first ready one).
func (r *rollRun) api(ctx context.Context) (*client.Client, error) {
	for _, m := range r.members {
		if readyz(ctx, r.hc, m.spec.API) == http.StatusOK {
			return client.New("http://"+m.spec.API, client.WithTimeout(time.Minute))
		}
	}
	return nil, errors.New("bench: rolling: no replica ready")
}

// listEndpoints lists the run's endpoints through a ready replica.
func (r *rollRun) listEndpoints(ctx context.Context) ([]apiv1.Object, error) {
	api, err := r.api(ctx)
	if err != nil {
		return nil, err
	}
	defer api.Close()
	list, _, err := api.List(ctx, apiv1.KindEndpoint, rollingTenant, "")
	if err != nil {
		return nil, fmt.Errorf("bench: rolling: list endpoints: %w", err)
	}
	return list, nil
}

// endpointsReady counts the Ready endpoints.
func (r *rollRun) endpointsReady(ctx context.Context) (int, error) {
	list, err := r.listEndpoints(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range list {
		if o.(*apiv1.Endpoint).Status.Phase == apiv1.PhaseReady {
			n++
		}
	}
	return n, nil
}

// checkObjects records the endpoints Lost and the hosts Dead now, and
// returns how many endpoints changed since the setup.
func (r *rollRun) checkObjects(ctx context.Context) (rewritten int, err error) {
	list, err := r.listEndpoints(ctx)
	if err != nil {
		return 0, err
	}
	for _, o := range list {
		ep := o.(*apiv1.Endpoint)
		if ep.Status.Phase == apiv1.PhaseLost {
			r.lost[ep.Metadata.Name] = true
		}
		if r.rv[ep.Metadata.Name] != ep.Metadata.ResourceVersion {
			rewritten++
		}
	}
	api, err := r.api(ctx)
	if err != nil {
		return rewritten, err
	}
	defer api.Close()
	hosts, _, err := api.List(ctx, apiv1.KindHost, "", "")
	if err != nil {
		return rewritten, fmt.Errorf("bench: rolling: list hosts: %w", err)
	}
	for _, o := range hosts {
		if h := o.(*apiv1.Host); h.Status.Liveness == apiv1.LivenessDead {
			r.dead[h.Metadata.Name] = true
		}
	}
	return rewritten, nil
}

// snapshotsSent sums the full views every running replica has sent
// (weft_stream_deltas_total{type="snapshot"}), and returns member i's.
func (r *rollRun) snapshotsSent(ctx context.Context, i int) (total, own int, err error) {
	for j, m := range r.members {
		n, err := metricValue(ctx, r.hc, m.spec.API, `weft_stream_deltas_total{type="snapshot"}`)
		if err != nil {
			return 0, 0, err
		}
		total += int(n)
		if j == i {
			own = int(n)
		}
	}
	return total, own, nil
}

// step restarts member i (into this build) and waits until it is ready,
// every host connected and the cluster whole.
func (r *rollRun) step(ctx context.Context, i int, rep *RollingReport) (RollingStep, error) {
	m := r.members[i]
	st := RollingStep{Member: m.spec.Name}
	sessions, err := streamSessions(ctx, r.hc, m.spec.API)
	if err != nil {
		return st, err
	}
	st.Sessions = sessions
	total, own, err := r.snapshotsSent(ctx, i)
	if err != nil {
		return st, err
	}
	from := map[bool]string{true: "old build", false: "this build"}[m.old]
	r.logf("step %s: stop (%s, %d agents streaming from it)", m.spec.Name, from, sessions)
	t0 := time.Now()
	if err := m.stop(); err != nil {
		r.logf("step %s: its exit: %v", m.spec.Name, err)
	}
	st.Stopped = time.Since(t0)
	if err := r.startMember(ctx, m, false); err != nil {
		return st, err
	}
	st.Ready = time.Since(t0)
	r.logf("step %s: stopped after %s, this build ready after %s", m.spec.Name, st.Stopped.Round(time.Millisecond), st.Ready.Round(time.Millisecond))
	deadline := t0.Add(r.cfg.StepTimeout)
	for {
		var sum hostsSummary
		for _, g := range r.groups {
			s, err := g.ask(ctx, "summary")
			if err != nil {
				return st, err
			}
			sum.add(*s.Summary)
		}
		why := ""
		if sum.Programmed < r.cfg.Hosts {
			why = fmt.Sprintf("%d of %d hosts connected and programmed", sum.Programmed, r.cfg.Hosts)
		} else {
			why = r.whole(ctx)
		}
		if why == "" {
			break
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("bench: rolling: step %s: not done within %s: %s", m.spec.Name, r.cfg.StepTimeout, why)
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return st, err
		}
	}
	st.Rehomed = time.Since(t0)
	after, _, err := r.snapshotsSent(ctx, i)
	if err != nil {
		return st, err
	}
	st.Snapshots = after - (total - own)
	if err := r.crossRead(ctx, i, rep); err != nil {
		return st, err
	}
	lost0, dead0 := len(r.lost), len(r.dead)
	if _, err := r.checkObjects(ctx); err != nil {
		return st, err
	}
	st.Lost, st.Dead = len(r.lost)-lost0, len(r.dead)-dead0
	r.logf("step %s: every host connected and the cluster whole after %s; %d snapshots sent; %d endpoints Lost, %d hosts Dead",
		m.spec.Name, st.Rehomed.Round(time.Millisecond), st.Snapshots, st.Lost, st.Dead)
	return st, nil
}

// whole says why the cluster is not whole ("" if it is): every member
// following one leader and caught up, every replica ready.
func (r *rollRun) whole(ctx context.Context) string {
	specs := make([]haReplicaSpec, len(r.members))
	for i, m := range r.members {
		specs[i] = m.spec
	}
	if why := membersCaughtUp(ctx, r.etcd, specs); why != "" {
		return why
	}
	for _, m := range r.members {
		if readyz(ctx, r.hc, m.spec.API) != http.StatusOK {
			return m.spec.Name + " not ready"
		}
	}
	return ""
}

// crossRead writes an object through every replica (of either build
// mid-roll) and reads each back through every other one.
func (r *rollRun) crossRead(ctx context.Context, step int, rep *RollingReport) error {
	apis := make([]*client.Client, len(r.members))
	for i, m := range r.members {
		api, err := client.New("http://"+m.spec.API, client.WithTimeout(10*time.Second))
		if err != nil {
			return err
		}
		defer api.Close()
		apis[i] = api
	}
	for i, m := range r.members {
		name := fmt.Sprintf("roll-probe-%d-%s", step, m.spec.Name)
		t := &apiv1.Tenant{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTenant},
			Metadata: apiv1.ObjectMeta{Name: name, Labels: map[string]string{"written-by": m.spec.Name, "step": strconv.Itoa(step)}}}
		if _, err := apis[i].Create(ctx, t); err != nil {
			rep.CrossReadFailures++
			rep.CrossReadSample = fmt.Sprintf("create %s through %s: %v", name, m.spec.Name, err)
			continue
		}
		for j, o := range r.members {
			if j == i {
				continue
			}
			rep.CrossReads++
			var got apiv1.Object
			var err error
			for try := 0; try < 50; try++ { // the other replica's index follows etcd's watch
				if got, err = apis[j].Get(ctx, apiv1.KindTenant, "", name); err == nil {
					break
				}
				if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
					return err
				}
			}
			if err != nil || got.GetObjectMeta().Labels["written-by"] != m.spec.Name {
				rep.CrossReadFailures++
				rep.CrossReadSample = fmt.Sprintf("%s written through %s, read through %s: %v", name, m.spec.Name, o.spec.Name, err)
			}
		}
	}
	return nil
}

// metricValue reads one series (name and labels, as /metrics prints it)
// from the replica's /metrics; 0 if absent.
func metricValue(ctx context.Context, hc *http.Client, api, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: metrics of %s: %w", api, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("bench: metrics of %s: %s: %w", api, series, err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("bench: metrics of %s: %w", api, err)
	}
	return 0, nil
}
