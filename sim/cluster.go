package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/internal/lifecycle"
)

// Config configures a simulation.
type Config struct {
	// Hosts, Endpoints and VPCs size the state, Policies adds security
	// policies and endpoint labels to it (see Layout).
	Hosts, Endpoints, VPCs, Policies int
	// Replicas is the number of controller replicas (default: one per
	// MaxAgentsPerReplica hosts; always 1 without Exec).
	Replicas int
	// Procs is the number of agent child processes (default: one per
	// MaxAgentsPerProc hosts; 1 in-process group without Exec).
	Procs int
	// Exec is the weft binary whose hidden subcommand ChildCommand runs
	// replicas and agents in child processes; "" runs everything in this
	// process (small runs and tests: one process holds at most 20,000
	// files, one per agent, its stream, plus one per agent connection on
	// the controller; the agents' UDP sockets are shared, AgentsPerSocket
	// agents each).
	Exec string
	// DataDir holds the embedded etcd (default: a temporary directory,
	// removed at Close).
	DataDir string
	// Writers is the number of concurrent writers of the bulk load
	// (default 512).
	Writers int
	// HeartbeatInterval of the agents (default 1 s).
	HeartbeatInterval time.Duration
	// BackoffMin is the cap of the agents' first (random) connect delay
	// (default: the agent's, 1 s: a power restore spreads over it).
	BackoffMin time.Duration
	// WatchPrefix, WatchPolicy and WatchLearn turn on the events the
	// benchmarks wait for (Events).
	WatchPrefix string
	WatchPolicy string
	WatchLearn  bool
	// CPUProfileDir, if set, gets a CPU profile of every child process
	// (controller-N.pprof, agents-N.pprof) from the agents' start until
	// Close, and, of every agents child, a
	// heap profile and memory statistics taken at its last counter snapshot
	// (agents-N.heap.pprof, agents-N.heap.pprof.memstats).
	CPUProfileDir string
	// Progress receives progress lines (nil: none).
	Progress io.Writer
	// ChildLog receives the children's logs, warnings and errors (default:
	// discarded; the last 8 KiB of a child process's stderr are kept for
	// the error if it fails); Debug raises their level to info. Agent
	// processes write to it only with Debug: 100,000 agents retrying under
	// overload write hundreds of megabytes of warnings.
	ChildLog io.Writer
	Debug    bool
	Logger   *slog.Logger
}

// Limits that size the default process counts.
const (
	MaxAgentsPerProc    = 16_000
	MaxAgentsPerReplica = 17_000
)

func (c *Config) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
		if c.Exec != "" {
			c.Replicas = (c.Hosts + MaxAgentsPerReplica - 1) / MaxAgentsPerReplica
		}
	}
	if c.Procs == 0 {
		c.Procs = 1
		if c.Exec != "" {
			c.Procs = (c.Hosts + MaxAgentsPerProc - 1) / MaxAgentsPerProc
		}
	}
	if c.Writers == 0 {
		c.Writers = 512
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ChildLog == nil {
		c.ChildLog = io.Discard
	}
}

// Validate reports impossible settings.
func (c *Config) Validate() error {
	l := Layout{Hosts: c.Hosts, Endpoints: c.Endpoints, VPCs: c.VPCs, Policies: c.Policies}
	if err := l.Validate(); err != nil {
		return err
	}
	switch {
	case c.Replicas < 1 || c.Procs < 1:
		return fmt.Errorf("sim: %d replicas, %d procs: want at least 1 each", c.Replicas, c.Procs)
	case c.Exec == "" && (c.Replicas > 1 || c.Procs > 1):
		return errors.New("sim: several replicas or agent processes need Exec (a weft binary)")
	case c.Exec == "" && c.Hosts > 9_000:
		return fmt.Errorf("sim: %d hosts in one process would exceed its 20,000 open files: set Exec", c.Hosts)
	case c.Exec != "" && (c.Hosts+c.Procs-1)/c.Procs > 18_500:
		return fmt.Errorf("sim: %d hosts over %d processes: more than 18,500 agents (18,500 streams) in one", c.Hosts, c.Procs)
	case c.Exec != "" && (c.Hosts+c.Replicas-1)/c.Replicas > 18_500:
		return fmt.Errorf("sim: %d hosts over %d replicas: more than 18,500 agent connections on one (20,000 files)", c.Hosts, c.Replicas)
	}
	return nil
}

// Replica describes one controller replica.
type Replica struct {
	Index int    `json:"index"`
	PID   int    `json:"pid"`
	API   string `json:"api"`
	Agent string `json:"agent"`
	// InProcess: the replica runs in the harness's own process, so its
	// RSS and CPU include the harness and the agents.
	InProcess bool `json:"inProcess,omitempty"`
}

// Cluster is a simulation: replicas (after Start) and agents (after
// StartAgents). New → Start(ctx) → StartAgents(ctx) → Close.
type Cluster struct {
	cfg    Config
	layout Layout
	life   lifecycle.Group
	// restoreBacklog puts netdev_max_backlog back (raiseBacklog); nil
	// before setup.
	restoreBacklog func()
	log            *slog.Logger
	prog           func(string, ...any)
	tmpDir         string

	secret   []byte
	keyFile  string
	replicas []Replica
	etcd     []string
	repChild []*Child // the replicas' children, in order
	groups   []*agentGroup
	events   chan Event

	// SetupDuration is the bulk load; ReplicaStartDuration the replicas' start.
	SetupDuration        time.Duration
	ReplicaStartDuration time.Duration
	// Identities is the number of security identities the load allocated
	// (counted only with Policies).
	Identities int

	agentsStart time.Time
	snapMu      sync.Mutex // serializes Snapshot
	seq         int
}

// agentGroup is one agents child and its latest counters.
type agentGroup struct {
	c         *Child
	first, n  int
	mu        sync.Mutex
	stats     message
	ready     chan struct{}
	readyOnce sync.Once
	lastErr   string
	seqs      chan string   // Seq of on-demand stats
	startTook time.Duration // how long the child took to start its agents
}

// Event is something an agent observed that a benchmark waits for.
type Event struct {
	// Kind is "applied" (a watched endpoint reached its host's driver),
	// "policy" (the rules of a watched policy did), "learned"
	// (Driver.Learn of a location) or "forgot" (Driver.Forget).
	Kind string
	Host int
	// ID is the endpoint ("tenant/name") of "applied", the policy of
	// "policy".
	ID string
	// VNI, IP and Underlay are the location of "learned" and "forgot".
	VNI      uint32
	IP       string
	Underlay string
	// At is when the agent's driver saw it (wall clock of the agent's process).
	At time.Time
}

// New checks cfg and returns a cluster to Start.
func New(cfg Config) (*Cluster, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Cluster{cfg: cfg, layout: Layout{Hosts: cfg.Hosts, Endpoints: cfg.Endpoints, VPCs: cfg.VPCs, Policies: cfg.Policies},
		log: cfg.Logger.With("subsystem", "sim"), prog: progressTo(cfg.Progress), events: make(chan Event, 1<<16)}, nil
}

// Start bulk-loads the state and starts the replicas; ctx bounds the
// start. Close stops what it started, also after it failed.
func (c *Cluster) Start(ctx context.Context) error {
	if _, err := c.life.Start(); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	cfg := c.cfg
	if cfg.CPUProfileDir != "" {
		// The children create their profiles there: a missing directory
		// would fail each of them (an agents child before it is ready).
		if err := os.MkdirAll(cfg.CPUProfileDir, 0o755); err != nil {
			return fmt.Errorf("sim: profile dir: %w", err)
		}
	}
	dir := cfg.DataDir
	if dir == "" {
		var err error
		if c.tmpDir, err = os.MkdirTemp("", "weft-sim-"); err != nil {
			return fmt.Errorf("sim: temp dir: %w", err)
		}
		dir = filepath.Join(c.tmpDir, "etcd")
	}
	c.prog("setup: loading %d tenants, %d VPCs, %d hosts, %d endpoints, %d policies into etcd in %s (%d writers)",
		c.layout.Tenants(), cfg.VPCs, cfg.Hosts, cfg.Endpoints, cfg.Policies, dir, cfg.Writers)
	res, err := load(ctx, loadConfig{Dir: dir, Layout: c.layout, Writers: cfg.Writers, Progress: c.prog, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	c.secret, c.keyFile, c.SetupDuration, c.Identities = res.Secret, res.ClusterKeyFile, res.Duration, res.Identities
	c.prog("setup: %d objects loaded in %s", res.Objects, res.Duration.Round(time.Millisecond))
	if cfg.Policies > 0 {
		c.prog("setup: the endpoints have %d security identities", res.Identities)
	}
	// The load cached every object in this process; give that memory back
	// now, before the replicas and agents need it (the runtime would return
	// it only gradually).
	debug.FreeOSMemory()

	// Replica 0 first (it serves etcd), then the others together.
	t0 := time.Now()
	c.restoreBacklog = raiseBacklog(cfg.Hosts, c.prog)
	hr := headroom(cfg.Hosts, cfg.Endpoints, cfg.Replicas, cfg.Procs, memAvailable())
	c.prog("setup: replicas' memory limits at %.2f× their live estimates", hr)
	startReplica := func(i int) (*Child, error) {
		spec := replicaSpec{Index: i, InProcess: cfg.Exec == "", ClusterKeyFile: c.keyFile,
			MemoryLimit: memoryLimit(i, cfg.Hosts, cfg.Endpoints, cfg.Replicas, hr),
			Hosts:       (cfg.Hosts + cfg.Replicas - 1) / max(cfg.Replicas, 1)}
		if i == 0 {
			spec.DataDir = dir
		} else {
			spec.EtcdEndpoints = c.etcd
		}
		if cfg.CPUProfileDir != "" {
			spec.CPUProfile = filepath.Join(cfg.CPUProfileDir, fmt.Sprintf("controller-%d.pprof", i))
		}
		ch, err := StartChild(ctx, ChildConfig{Name: fmt.Sprintf("replica %d", i), Exe: cfg.Exec,
			Role: roleReplica, Spec: spec, Debug: cfg.Debug, Log: cfg.ChildLog})
		if err != nil {
			return nil, err
		}
		c.repChild = append(c.repChild, ch)
		return ch, nil
	}
	ready := func(i int, ch *Child) error {
		cm, err := ch.Await(ctx, "ready", 10*time.Minute)
		var m message
		if err == nil {
			err = cm.Decode(&m)
		}
		if err != nil {
			return fmt.Errorf("sim: replica %d: %w", i, err)
		}
		if i == 0 {
			c.etcd = m.Etcd
		}
		c.replicas = append(c.replicas, Replica{Index: i, PID: m.PID, API: m.API, Agent: m.Agent, InProcess: cfg.Exec == ""})
		c.life.Go(func(context.Context) {
			for range ch.Messages() {
			}
		})
		c.prog("setup: replica %d up (pid %d, api %s, agents %s) after %s", i, m.PID, m.API, m.Agent, time.Since(t0).Round(time.Millisecond))
		return nil
	}
	ch0, err := startReplica(0)
	if err != nil {
		return err
	}
	if err := ready(0, ch0); err != nil {
		return err
	}
	var rest []*Child
	for i := 1; i < cfg.Replicas; i++ {
		ch, err := startReplica(i)
		if err != nil {
			return err
		}
		rest = append(rest, ch)
	}
	for i, ch := range rest {
		if err := ready(i+1, ch); err != nil {
			return err
		}
	}
	c.ReplicaStartDuration = time.Since(t0)
	return nil
}

// Replicas returns the controller replicas.
func (c *Cluster) Replicas() []Replica { return append([]Replica(nil), c.replicas...) }

// APIAddr returns the first replica's API address (host:port).
func (c *Cluster) APIAddr() string { return c.replicas[0].API }

// Layout returns the run's layout.
func (c *Cluster) Layout() Layout { return c.layout }

// Events returns the channel of agent events (Config.WatchPrefix,
// Config.WatchLearn). The benchmark must drain it; when it is full, events
// are dropped.
func (c *Cluster) Events() <-chan Event { return c.events }

// StartAgents builds every agent (in Procs groups), then starts them all at
// once and returns the time it did.
func (c *Cluster) StartAgents(ctx context.Context) (time.Time, error) {
	addrs := make([]string, len(c.replicas))
	apis := make([]string, len(c.replicas))
	for i, r := range c.replicas {
		addrs[i], apis[i] = r.Agent, r.API
	}
	per := (c.cfg.Hosts + c.cfg.Procs - 1) / c.cfg.Procs
	for first := 0; first < c.cfg.Hosts; first += per {
		n := min(per, c.cfg.Hosts-first)
		spec := agentsSpec{Layout: c.layout, First: first, Count: n, Secret: c.secret, Replicas: addrs, APIs: apis,
			HeartbeatInterval: c.cfg.HeartbeatInterval, BackoffMin: c.cfg.BackoffMin,
			WatchPrefix: c.cfg.WatchPrefix, WatchPolicy: c.cfg.WatchPolicy, WatchLearn: c.cfg.WatchLearn}
		if c.cfg.Exec != "" {
			spec.MemoryLimit = agentsMemoryLimit(n)
		}
		if c.cfg.CPUProfileDir != "" && c.cfg.Exec != "" {
			spec.CPUProfile = filepath.Join(c.cfg.CPUProfileDir, fmt.Sprintf("agents-%d.pprof", len(c.groups)))
			spec.HeapProfile = filepath.Join(c.cfg.CPUProfileDir, fmt.Sprintf("agents-%d.heap.pprof", len(c.groups)))
		}
		agentLog := io.Discard
		if c.cfg.Debug {
			agentLog = c.cfg.ChildLog
		}
		ch, err := StartChild(ctx, ChildConfig{Name: fmt.Sprintf("agents %d..%d", first, first+n-1), Exe: c.cfg.Exec,
			Role: roleAgents, Spec: spec, Debug: c.cfg.Debug, Log: agentLog})
		if err != nil {
			return time.Time{}, err
		}
		g := &agentGroup{c: ch, first: first, n: n, ready: make(chan struct{}), seqs: make(chan string, 16)}
		c.groups = append(c.groups, g)
		c.life.Go(func(context.Context) { c.follow(g) })
	}
	c.prog("agents: building %d agents in %d group(s)", c.cfg.Hosts, len(c.groups))
	for _, g := range c.groups {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-g.ready:
		}
		g.mu.Lock()
		lastErr := g.lastErr
		g.mu.Unlock()
		if lastErr != "" {
			return time.Time{}, fmt.Errorf("sim: %s: %s", g.c.Name(), lastErr)
		}
	}
	if c.cfg.CPUProfileDir != "" {
		for _, rc := range c.repChild {
			if err := rc.Send("profile-start"); err != nil {
				return time.Time{}, err
			}
		}
	}
	c.agentsStart = time.Now()
	for _, g := range c.groups {
		if err := g.c.Send("start"); err != nil {
			return time.Time{}, err
		}
	}
	c.prog("agents: start sent to %d agents", c.cfg.Hosts)
	return c.agentsStart, nil
}

// follow reads one agents child's messages.
func (c *Cluster) follow(g *agentGroup) {
	defer g.readyOnce.Do(func() {
		g.mu.Lock()
		g.lastErr = "ended before ready"
		g.mu.Unlock()
		close(g.ready)
	})
	for cm := range g.c.Messages() {
		var m message
		if cm.Decode(&m) != nil {
			continue
		}
		switch m.T {
		case "ready":
			g.readyOnce.Do(func() { close(g.ready) })
		case "started":
			g.mu.Lock()
			g.startTook = time.Duration(m.At - m.StartedAt)
			g.mu.Unlock()
			c.prog("agents: %s started its %d agents in %s", g.c.Name(), g.n, time.Duration(m.At-m.StartedAt).Round(time.Millisecond))
		case "stats":
			g.mu.Lock()
			g.stats = m
			g.mu.Unlock()
			if m.Seq != "" {
				select {
				case g.seqs <- m.Seq:
				default:
				}
			}
		case "error":
			g.mu.Lock()
			g.lastErr = m.Err
			g.mu.Unlock()
			c.log.Warn("agents child error", "child", g.c.Name(), "err", m.Err)
		case "crossing":
			if m.Crossing != nil {
				c.relay(m.Crossing)
			}
		case "applied", "policy", "learned", "forgot":
			ev := Event{Kind: m.T, Host: m.Host, ID: m.ID, VNI: m.VNI, IP: m.IP, Underlay: m.Underlay, At: time.Unix(0, m.At)}
			select {
			case c.events <- ev:
			default:
			}
		}
	}
}

// relay hands a traced probe that left a host of one agents process to
// the process of its destination host (none: it reaches nobody, as a
// packet to an unknown underlay address).
func (c *Cluster) relay(cr *simdp.Crossing) {
	h := underlayHost(cr.To)
	for _, g := range c.groups {
		if h < g.first || h >= g.first+g.n {
			continue
		}
		b, err := json.Marshal(cr)
		if err == nil {
			err = g.c.Send("arrive " + string(b))
		}
		if err != nil {
			c.log.Warn("traced probe not relayed", "child", g.c.Name(), "to", cr.To, "err", err)
		}
		return
	}
}

// Stats are the agents' counters summed over every group.
type Stats struct {
	Agents         int    `json:"agents"`
	Connected      int    `json:"connected"`
	Programmed     int    `json:"programmed"`
	HeartbeatsSent uint64 `json:"heartbeatsSent"`
	HeartbeatAcks  uint64 `json:"heartbeatAcks"`
	LookupQueries  uint64 `json:"lookupQueries"`
	AnswersFound   uint64 `json:"answersFound"`
	AnswersMissing uint64 `json:"answersMissing"`
	Invalidations  uint64 `json:"invalidations"`
	// StreamLost, StreamFailed and StreamRefused sum the agents' config
	// stream ends (agent.Stats); LastStreamError is one group's sample of
	// the latest error.
	StreamLost      uint64 `json:"streamLost"`
	StreamFailed    uint64 `json:"streamFailed"`
	StreamRefused   uint64 `json:"streamRefused"`
	LastStreamError string `json:"lastStreamError,omitempty"`
	// LastProgrammed is when the last agent programmed so far was
	// programmed (zero before any).
	LastProgrammed time.Time `json:"-"`
}

// AgentStartDuration is the longest time a group took to start its
// agents (Agent.Start of each: binding its UDP socket, starting its loops);
// the simulator's own cost, included in the time to all programmed.
func (c *Cluster) AgentStartDuration() time.Duration {
	var d time.Duration
	for _, g := range c.groups {
		g.mu.Lock()
		d = max(d, g.startTook)
		g.mu.Unlock()
	}
	return d
}

// Stats returns the latest counters (each group reports once a second).
func (c *Cluster) Stats() Stats {
	var s Stats
	var last int64
	for _, g := range c.groups {
		g.mu.Lock()
		m := g.stats
		g.mu.Unlock()
		s.Agents += g.n
		s.Connected += m.Connected
		s.Programmed += m.Programmed
		s.HeartbeatsSent += m.HeartbeatsSent
		s.HeartbeatAcks += m.HeartbeatAcks
		s.LookupQueries += m.LookupQueries
		s.AnswersFound += m.AnswersFound
		s.AnswersMissing += m.AnswersMissing
		s.Invalidations += m.Invalidations
		s.StreamLost += m.StreamLost
		s.StreamFailed += m.StreamFailed
		s.StreamRefused += m.StreamRefused
		if m.LastStreamErr != "" {
			s.LastStreamError = m.LastStreamErr
		}
		last = max(last, m.LastProgrammedAt)
	}
	if last > 0 {
		s.LastProgrammed = time.Unix(0, last)
	}
	return s
}

// Snapshot is the agents' counters (fresh from every group) followed by
// the replicas' southbound counters.
type Snapshot struct {
	Agents Stats
	// ControllerHeartbeats, LookupsFound and LookupsNotFound sum the
	// replicas' counters (heartbeats processed, lookup queries answered).
	ControllerHeartbeats float64
	LookupsFound         float64
	LookupsNotFound      float64
	Invalidations        float64
	// AgentsAt and ControllersAt are when the two kinds of counters were
	// read (the middle of each reading): the agents' and the replicas'
	// counters are not read at one instant, so rates over two snapshots
	// divide each by its own interval.
	AgentsAt, ControllersAt time.Time
	// ReplicaUDP is the kernel's account of the replicas' southbound UDP
	// sockets: datagrams dropped for a full receive buffer, bytes queued.
	ReplicaUDP udpSockets
}

// replicaSockets reads the kernel's UDP tables for the replicas'
// southbound ports (the replicas and the harness share the network
// namespace).
func (c *Cluster) replicaSockets() (udpSockets, error) {
	ports := map[uint16]bool{}
	for _, r := range c.replicas {
		ap, err := netip.ParseAddrPort(r.Agent)
		if err != nil {
			return udpSockets{}, fmt.Errorf("sim: replica %d's agent address %q: %w", r.Index, r.Agent, err)
		}
		ports[ap.Port()] = true
	}
	var sum udpSockets
	for _, path := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		f, err := os.Open(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // no IPv6
			}
			return sum, fmt.Errorf("sim: %w", err)
		}
		s, err := readUDPSockets(f, ports)
		f.Close()
		if err != nil {
			return sum, fmt.Errorf("sim: %s: %w", path, err)
		}
		sum.Drops += s.Drops
		sum.Queued += s.Queued
	}
	return sum, nil
}

// Snapshot asks every agents group for its counters now, waits for them,
// then reads every replica's /metrics.
func (c *Cluster) Snapshot(ctx context.Context) (Snapshot, error) {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	var s Snapshot
	c.seq++
	seq := strconv.Itoa(c.seq)
	asked := time.Now()
	for _, g := range c.groups {
		if err := g.c.Send("report " + seq); err != nil {
			return s, err
		}
	}
	tm := time.NewTimer(30 * time.Second)
	defer tm.Stop()
	for _, g := range c.groups {
		for got := ""; got != seq; {
			select {
			case <-ctx.Done():
				return s, ctx.Err()
			case <-tm.C:
				return s, fmt.Errorf("sim: no counters from %s", g.c.Name())
			case got = <-g.seqs:
			}
		}
	}
	s.Agents = c.Stats()
	s.AgentsAt = asked.Add(time.Since(asked) / 2)
	// The replicas at once, so that their counters are read at about one
	// instant (one after another, a loaded replica's slow /metrics would
	// shift the others' readings).
	scraped := time.Now()
	counters := make([]controllerCounters, len(c.replicas))
	g, gctx := errgroup.WithContext(ctx)
	for i, r := range c.replicas {
		g.Go(func() error {
			var err error
			counters[i], err = scrape(gctx, r.API)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return s, err
	}
	s.ControllersAt = scraped.Add(time.Since(scraped) / 2)
	udp, err := c.replicaSockets()
	if err != nil {
		return s, err
	}
	s.ReplicaUDP = udp
	for _, cc := range counters {
		s.ControllerHeartbeats += cc.Heartbeats
		s.LookupsFound += cc.Found
		s.LookupsNotFound += cc.NotFound
		s.Invalidations += cc.Invalidations
	}
	return s, nil
}

// WaitProgrammed waits until every agent is programmed, printing progress
// every second, and returns the time from StartAgents to the last agent
// programmed. With a timeout it returns what was reached and an error.
func (c *Cluster) WaitProgrammed(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
		s := c.Stats()
		c.progressLine(s)
		if s.Programmed == c.cfg.Hosts {
			return s.LastProgrammed.Sub(c.agentsStart), nil
		}
		children := append([]*Child(nil), c.repChild...)
		for _, g := range c.groups {
			children = append(children, g.c)
		}
		for _, ch := range children {
			select {
			case <-ch.Done():
				return 0, fmt.Errorf("sim: %s ended: %w", ch.Name(), ch.Err())
			default:
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("sim: %d of %d agents programmed after %s", s.Programmed, c.cfg.Hosts, timeout)
		}
	}
}

func (c *Cluster) progressLine(s Stats) {
	var b strings.Builder
	for _, r := range c.replicas {
		u, _ := readProc(r.PID)
		fmt.Fprintf(&b, " r%d %.0fMiB/%.1fs", r.Index, float64(u.RSS)/(1<<20), u.CPU.Seconds())
	}
	if c.cfg.Exec != "" {
		var rss int64
		var cpu time.Duration
		for _, g := range c.groups {
			u, _ := readProc(g.c.PID())
			rss, cpu = rss+u.RSS, cpu+u.CPU
		}
		fmt.Fprintf(&b, " agents %.0fMiB/%.1fs", float64(rss)/(1<<20), cpu.Seconds())
	}
	c.prog("%6.1fs connected %d/%d programmed %d heartbeats %d lookups %d answered %d streams lost %d failed %d (refused %d) |%s",
		time.Since(c.agentsStart).Seconds(), s.Connected, s.Agents, s.Programmed, s.HeartbeatsSent,
		s.LookupQueries, s.AnswersFound+s.AnswersMissing, s.StreamLost, s.StreamFailed, s.StreamRefused, b.String())
	if s.StreamLost+s.StreamFailed > 0 && s.LastStreamError != "" {
		c.prog("         latest stream error (sample): %s", s.LastStreamError)
	}
}

// Resolve makes the agent of host send a packet from its local endpoint
// src to dst through its driver (a miss becomes a UDP lookup).
func (c *Cluster) Resolve(host int, src, dst string) error {
	for _, g := range c.groups {
		if host >= g.first && host < g.first+g.n {
			return g.c.Send("resolve " + strconv.Itoa(host) + " " + src + " " + dst)
		}
	}
	return fmt.Errorf("sim: no host %d", host)
}

// Lookups makes n random agents, spread over the groups, each send a
// packet to a random address of their first endpoint's subnet.
func (c *Cluster) Lookups(n int) error {
	per := (n + len(c.groups) - 1) / max(1, len(c.groups))
	for _, g := range c.groups {
		if err := g.c.Send("lookups " + strconv.Itoa(per)); err != nil {
			return err
		}
	}
	return nil
}

// Usage returns each replica's resource usage (from /proc).
func (c *Cluster) Usage() []ReplicaUsage {
	out := make([]ReplicaUsage, len(c.replicas))
	for i, r := range c.replicas {
		u, err := readProc(r.PID)
		out[i] = ReplicaUsage{Index: i, PID: r.PID, RSSBytes: u.RSS, CPUSeconds: u.CPU.Seconds(), InProcess: r.InProcess}
		if err != nil {
			out[i].Err = err.Error()
		}
	}
	return out
}

// ReplicaUsage is one replica's resource use.
type ReplicaUsage struct {
	Index      int     `json:"index"`
	PID        int     `json:"pid"`
	RSSBytes   int64   `json:"rssBytes"`
	CPUSeconds float64 `json:"cpuSeconds"`
	InProcess  bool    `json:"inProcess,omitempty"`
	Err        string  `json:"error,omitempty"`
}

// Close stops every child (agents first, then replicas), puts the
// backlog setting back and removes the temporary data dir. It is
// idempotent.
func (c *Cluster) Close() error {
	return c.life.Close(c.stopChildren, func() error {
		if c.restoreBacklog != nil {
			c.restoreBacklog()
		}
		if c.tmpDir != "" {
			return os.RemoveAll(c.tmpDir)
		}
		return nil
	})
}

func (c *Cluster) stopChildren() error {
	if c.cfg.CPUProfileDir != "" {
		// End the profiles before anything stops: a teardown is not what
		// they are for.
		for _, ch := range c.repChild {
			_ = ch.Send("profile-stop")
		}
		for _, g := range c.groups {
			_ = g.c.Send("profile-stop")
		}
	}
	// Agents first, all at once, then the replicas (the last one owns etcd).
	errs := make([]error, len(c.groups), len(c.groups)+len(c.repChild))
	var wg sync.WaitGroup
	for i, g := range c.groups {
		wg.Go(func() { errs[i] = g.c.Close() })
	}
	wg.Wait()
	for i := len(c.repChild) - 1; i >= 0; i-- {
		errs = append(errs, c.repChild[i].Close())
	}
	return errors.Join(errs...)
}
