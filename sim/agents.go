package sim

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/agent/restreport"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/datapath"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/rendezvous"
	"github.com/weftnet/weft/sim/udpmux"
)

// AgentsPerSourceAddr is how many agents bind their UDP sockets on one
// loopback source address (127.1.X.1).
const AgentsPerSourceAddr = 10_000

// simHandshakeTimeout is the simulated agents' Hello → Welcome bound.
const simHandshakeTimeout = time.Minute

// startWorkers is the number of goroutines that start a child's agents.
const startWorkers = 256

// AgentsPerSocket is how many agents of a child share one UDP socket (a
// udpmux.Mux, bound on the SourceAddr of its first host): their datagrams
// leave from one address, their heartbeats in batches, and the replies are
// told apart by host ID.
const AgentsPerSocket = 4096

// agentsSpec tells a child which agents to run.
type agentsSpec struct {
	Layout Layout `json:"layout"`
	// First and Count select hosts First..First+Count-1.
	First int `json:"first"`
	Count int `json:"count"`
	// Secret is the cluster key the sim derives host keys from (HostKey).
	Secret []byte `json:"secret"`
	// Replicas are the southbound addresses of every replica.
	Replicas []string `json:"replicas"`
	// APIs are the REST API addresses (host:port, plain HTTP) of the
	// replicas, in the order of Replicas: an agent reports its traces and
	// uploads its captures to its replica's (none: the agents observe
	// nothing).
	APIs              []string      `json:"apis,omitempty"`
	HeartbeatInterval time.Duration `json:"heartbeatInterval,omitempty"`
	// BackoffMin is the agents' first reconnect backoff cap (0: the agent's default).
	BackoffMin time.Duration `json:"backoffMin,omitempty"`
	// WatchPrefix: endpoints whose name starts with it are reported
	// ("applied") when they first reach their host's driver.
	WatchPrefix string `json:"watchPrefix,omitempty"`
	// WatchPolicy: security policies whose name starts with it are
	// reported ("policy", ID "tenant/name") when a rule of theirs first
	// reaches the host's driver.
	WatchPolicy string `json:"watchPolicy,omitempty"`
	// WatchLearn reports every Learn and Forget ("learned", "forgot").
	WatchLearn bool `json:"watchLearn,omitempty"`
	// CPUProfile, if set, is where a child process writes a CPU profile,
	// from "start" to "profile-stop" (or its end).
	CPUProfile string `json:"cpuProfile,omitempty"`
	// MemoryLimit, if set, is the Go runtime's soft memory limit of the
	// child process (see replicaSpec.MemoryLimit).
	MemoryLimit int64 `json:"memoryLimit,omitempty"`
	// HeapProfile, if set, is where a child process writes a heap profile
	// (and, next to it with ".memstats" appended, its runtime memory
	// statistics) after each "report" command (the last one a run sends
	// ends its hold), overwriting the previous one.
	HeapProfile string `json:"heapProfile,omitempty"`
}

// SourceAddr returns the loopback source address of host i (AgentsPerSourceAddr
// hosts per address): host i dials its config stream from it, and the UDP
// socket a group of AgentsPerSocket agents shares is bound on its first
// host's.
func SourceAddr(i int) netip.Addr {
	n := i / AgentsPerSourceAddr
	return netip.AddrFrom4([4]byte{127, 1 + byte(n>>8), byte(n), 1})
}

// ReplicaFor returns the replica (one of addrs) the agent of host streams
// to first (rendezvous.Top, as package agent orders them).
func ReplicaFor(host string, addrs []string) string { return rendezvous.Top(host, addrs) }

// simDriver is the sim driver with what the harness observes: when a Set
// installed how many endpoints, watched endpoints appearing, learns.
type simDriver struct {
	*simdp.Driver
	host   int
	em     *emitter
	prefix string
	policy string // WatchPolicy
	learn  bool

	nEP   atomic.Int64
	setAt atomic.Int64 // unix ns of the last successful Set
	local atomic.Pointer[localEP]

	mu   sync.Mutex
	seen map[string]bool
}

// localEP is one local endpoint and its subnet, the source of lookups.
type localEP struct {
	ID   string
	CIDR netip.Prefix
}

func (d *simDriver) Set(ctx context.Context, desired *datapath.Desired) error {
	if err := d.Driver.Set(ctx, desired); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	d.nEP.Store(int64(len(desired.Endpoints)))
	d.setAt.Store(now)
	if len(desired.Endpoints) > 0 && d.local.Load() == nil {
		e := desired.Endpoints[0]
		for _, v := range desired.VPCs {
			if v.VNI == e.VNI && len(v.Subnets) > 0 {
				d.local.Store(&localEP{ID: e.ID, CIDR: v.Subnets[0].CIDR})
			}
		}
	}
	if d.policy != "" {
		d.watchPolicies(desired, now)
	}
	if d.prefix != "" {
		d.mu.Lock()
		for i := range desired.Endpoints {
			id := desired.Endpoints[i].ID
			_, name, _ := strings.Cut(id, "/")
			if strings.HasPrefix(name, d.prefix) && !d.seen[id] {
				if d.seen == nil {
					d.seen = map[string]bool{}
				}
				d.seen[id] = true
				d.em.emit(&message{T: "applied", Host: d.host, ID: id, At: now})
			}
		}
		d.mu.Unlock()
	}
	return nil
}

// watchPolicies reports the watched policies whose rules desired holds
// for the first time.
func (d *simDriver) watchPolicies(desired *datapath.Desired, now int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range PolicyIDs(desired, d.policy) {
		if d.seen["policy "+id] {
			continue
		}
		if d.seen == nil {
			d.seen = map[string]bool{}
		}
		d.seen["policy "+id] = true
		d.em.emit(&message{T: "policy", Host: d.host, ID: id, At: now})
	}
}

// PolicyIDs returns the policies ("tenant/name", distinct) whose name
// starts with prefix and that have a rule in desired (a rule's name is
// "tenant/policy ingress[i]" or "... egress[i]").
func PolicyIDs(desired *datapath.Desired, prefix string) []string {
	var ids []string
	for i := range desired.Endpoints {
		p := desired.Endpoints[i].Policy
		if p == nil {
			continue
		}
		for _, rs := range [][]datapath.Rule{p.Ingress, p.Egress} {
			for _, r := range rs {
				id, _, _ := strings.Cut(r.Name, " ")
				if _, name, _ := strings.Cut(id, "/"); strings.HasPrefix(name, prefix) && !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
		}
	}
	return ids
}

func (d *simDriver) Learn(ctx context.Context, rs []datapath.Remote) error {
	err := d.Driver.Learn(ctx, rs)
	if d.learn {
		now := time.Now().UnixNano()
		for _, r := range rs {
			d.em.emit(&message{T: "learned", Host: d.host, VNI: r.VNI, IP: r.IP.String(), Underlay: r.HostUnderlay.String(), At: now})
		}
	}
	return err
}

func (d *simDriver) Forget(ctx context.Context, keys []datapath.RemoteKey) error {
	err := d.Driver.Forget(ctx, keys)
	if d.learn {
		now := time.Now().UnixNano()
		for _, k := range keys {
			d.em.emit(&message{T: "forgot", Host: d.host, VNI: k.VNI, IP: k.IP.String(), At: now})
		}
	}
	return err
}

// reporters are the trace and capture reporters of one agents process,
// one per replica API (a Reporter over a client of that API).
type reporters struct {
	replicas  []string // southbound addresses, in the order of byReplica
	byReplica []*restreport.Reporter
	clients   []*client.Client
}

// observationReporters makes the reporters of spec.APIs. The replicas
// serve their API over plain HTTP on loopback without credentials (a lab
// harness): the agents present none.
func observationReporters(spec agentsSpec) (*reporters, error) {
	r := &reporters{replicas: spec.Replicas}
	if len(spec.APIs) == 0 {
		return r, nil
	}
	if len(spec.APIs) != len(spec.Replicas) {
		return nil, fmt.Errorf("agents spec: %d API addresses for %d replicas", len(spec.APIs), len(spec.Replicas))
	}
	for _, api := range spec.APIs {
		c, err := client.New("http://"+api, client.WithMaxIdleConnsPerHost(64))
		if err != nil {
			for _, c := range r.clients {
				c.Close()
			}
			return nil, fmt.Errorf("API client of %s: %w", api, err)
		}
		r.clients = append(r.clients, c)
		r.byReplica = append(r.byReplica, restreport.New(c))
	}
	return r, nil
}

// of returns the reporter of host's replica (nil: none, an
// agent.ObservationReporter that is nil).
func (r *reporters) of(host string) agent.ObservationReporter {
	if len(r.byReplica) == 0 {
		return nil
	}
	return r.byReplica[slices.Index(r.replicas, ReplicaFor(host, r.replicas))]
}

// runAgents builds spec.Count agents, reports "ready", starts them all on
// the command "start" and reports counters every second until ctx ends.
// Commands: "start"; "arrive CROSSING" (a traced probe from a host of
// another process, JSON); "resolve HOST SRC-ID DST-IP" (a packet from a local
// endpoint, through the driver: a miss becomes a lookup); "lookups N" (N
// packets from random programmed agents to random addresses of their
// subnet).
func runAgents(ctx context.Context, spec agentsSpec, cmds <-chan string, em *emitter, logger *slog.Logger) (err error) {
	l := spec.Layout
	if err := l.Validate(); err != nil {
		return err
	}
	if spec.MemoryLimit > 0 {
		debug.SetMemoryLimit(spec.MemoryLimit)
	}
	// The CPU profile runs from "start" to "profile-stop" (or the end).
	var prof profileWindow
	defer prof.stop()
	drivers := make([]*simDriver, spec.Count)
	agents := make([]*agent.Agent, spec.Count)
	expected := make([]int64, spec.Count)
	var bo backoff.Policy
	if spec.BackoffMin > 0 {
		bo = backoff.Policy{Min: spec.BackoffMin, Max: max(spec.BackoffMin, agent.DefaultBackoffMax)}
	}
	// The sockets, one per AgentsPerSocket agents, started now and closed
	// after the agents.
	var muxes []*udpmux.Mux
	defer func() {
		for _, m := range muxes {
			_ = m.Close()
		}
	}()
	for i := 0; i < spec.Count; i += AgentsPerSocket {
		m, err := udpmux.New(udpmux.Config{
			Listen: netip.AddrPortFrom(SourceAddr(spec.First+i), 0).String(), Logger: logger,
		})
		if err == nil {
			err = m.Start(ctx)
		}
		if err != nil {
			return fmt.Errorf("UDP socket of agents %d..: %w", spec.First+i, err)
		}
		muxes = append(muxes, m)
	}
	// The agents of this process share one simulated underlay (a traced
	// probe crosses from one host's driver to another's; one for a host
	// of another process goes to the parent, which hands it to that
	// process: "crossing", then "arrive") and, per replica, one reporter
	// of traces and captures.
	underlay := &simdp.Underlay{Elsewhere: func(c simdp.Crossing) { em.emit(&message{T: "crossing", Crossing: &c}) }}
	observations, err := observationReporters(spec)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range observations.clients {
			c.Close()
		}
	}()
	// The agents of this process share the translations of the policies
	// they hold (most policies are held by several hosts).
	policies := agent.NewPolicyCache(0)
	for i := range spec.Count {
		h := spec.First + i
		name := HostName(h)
		// The agent takes misses from the driver's callback (no channel),
		// and Sets only what its translation normalized: the driver keeps
		// the agent's desired state rather than a copy.
		d := &simDriver{Driver: simdp.New(simdp.Config{Normalized: true, Underlay: underlay}), host: h, em: em,
			prefix: spec.WatchPrefix, policy: spec.WatchPolicy, learn: spec.WatchLearn}
		a, err := agent.New(agent.Config{
			Host: name, StreamAddrs: spec.Replicas, UDPAddr: ReplicaFor(name, spec.Replicas),
			// Datagram keys are per session: heartbeats and lookups go to
			// the replica of the session, also after a failover.
			UDPFollowsStream: true,
			Transport:        muxes[i/AgentsPerSocket],
			// Spread over 127.0.0.0/8: one source address has ~28,000
			// ephemeral ports, and connect() slows down long before
			// they run out.
			StreamSource: SourceAddr(h),
			// A real agent has its host's CPU to itself; these share two
			// cores with 100,000 others and the replicas, and one that
			// gives up after the default 15 s only queues again.
			HandshakeTimeout: simHandshakeTimeout,
			Key:              HostKey(spec.Secret, name), Driver: d, UnderlayIP: HostUnderlay(h),
			HeartbeatInterval: spec.HeartbeatInterval, Backoff: bo, Logger: logger,
			// Traces and captures as a real agent reports them, with no
			// goroutine or buffer for them until a view holds one.
			Observations: observations.of(name), ObserveOnDemand: true,
			PolicyCache: policies,
		})
		if err != nil {
			return fmt.Errorf("agent %s: %w", name, err)
		}
		drivers[i], agents[i], expected[i] = d, a, int64(l.HostEndpoints(h))
	}
	isStarted := make([]bool, spec.Count)
	defer func() {
		// Close every started agent, 64 at a time.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i, a := range agents {
			if !isStarted[i] {
				continue
			}
			sem <- struct{}{}
			wg.Go(func() { _ = a.Close(); <-sem })
		}
		wg.Wait()
		for _, d := range drivers {
			_ = d.Close()
		}
	}()
	em.emit(&message{T: "ready", Agents: spec.Count})

	// Wait for "start".
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-cmds:
			if !ok {
				return nil
			}
			waiting = c != "start"
		}
	}
	if spec.CPUProfile != "" {
		if err := prof.start(spec.CPUProfile); err != nil {
			return err
		}
	}
	// Start them from many goroutines: once thousands of agents run, one
	// starting loop would get a tiny share of the scheduler. The counters
	// are reported meanwhile: at 100,000 agents a process takes ~14 s to
	// start its share, and its first agents are programmed long before.
	startedAt := time.Now().UnixNano()
	var (
		next     atomic.Int64
		startErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	// Before the deferred close of the started agents (LIFO): isStarted
	// is complete once the starters are done.
	defer wg.Wait()
	for range min(startWorkers, spec.Count) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= spec.Count {
					return
				}
				if err := agents[i].Start(ctx); err != nil {
					errOnce.Do(func() { startErr = fmt.Errorf("start agent %s: %w", HostName(spec.First+i), err) })
					return
				}
				isStarted[i] = true
			}
		})
	}
	startDone := make(chan struct{})
	go func() { wg.Wait(); close(startDone) }()

	programmedAt := make([]int64, spec.Count)
	var programmed int
	var lastProgrammed int64
	check := func() {
		for i, a := range agents {
			if programmedAt[i] != 0 || !a.Connected() {
				continue
			}
			d := drivers[i]
			v := a.ViewVersion()
			if v == 0 || a.AppliedVersion() != v || d.nEP.Load() != expected[i] {
				continue
			}
			programmedAt[i] = d.setAt.Load()
			lastProgrammed = max(lastProgrammed, programmedAt[i])
			programmed++
		}
	}
	report := func(seq string) {
		m := message{T: "stats", Seq: seq, Agents: spec.Count, Programmed: programmed, StartedAt: startedAt, LastProgrammedAt: lastProgrammed}
		for _, a := range agents {
			if a.Connected() {
				m.Connected++
			}
			s := a.Stats()
			m.HeartbeatsSent += s.HeartbeatsSent
			m.HeartbeatAcks += s.HeartbeatAcks
			m.LookupQueries += s.LookupQueries
			m.AnswersFound += s.AnswersFound
			m.AnswersMissing += s.AnswersMissing
			m.Invalidations += s.Invalidations
			m.StreamLost += s.StreamLost
			m.StreamFailed += s.StreamFailed
			m.StreamRefused += s.StreamRefused
		}
		// A sample: the latest error of the first agent that has one.
		for _, a := range agents {
			if e := a.LastStreamError(); e != "" {
				m.LastStreamErr = e
				break
			}
		}
		em.emit(&m)
	}
	rng := rand.New(rand.NewPCG(uint64(startedAt), uint64(spec.First)))
	checkT := time.NewTicker(20 * time.Millisecond)
	defer checkT.Stop()
	reportT := time.NewTicker(time.Second)
	defer reportT.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-startDone:
			startDone = nil
			if startErr != nil {
				return startErr
			}
			em.emit(&message{T: "started", StartedAt: startedAt, At: time.Now().UnixNano()})
		case <-checkT.C:
			if programmed < spec.Count {
				check()
			}
		case <-reportT.C:
			report("")
		case c, ok := <-cmds:
			if !ok {
				return nil
			}
			if seq, ok := strings.CutPrefix(c, "report "); ok {
				check()
				report(seq)
				if spec.HeapProfile != "" {
					if err := writeHeapProfile(spec.HeapProfile, spec.Count, "agent"); err != nil {
						em.emit(&message{T: "error", Err: err.Error()})
					}
				}
				continue
			}
			if c == "profile-stop" {
				prof.stop()
				continue
			}
			if err := agentsCommand(c, spec, drivers, underlay, rng); err != nil {
				em.emit(&message{T: "error", Err: err.Error()})
			}
		}
	}
}

// agentsCommand runs one command line of the parent.
func agentsCommand(c string, spec agentsSpec, drivers []*simDriver, underlay *simdp.Underlay, rng *rand.Rand) error {
	if js, ok := strings.CutPrefix(c, "arrive "); ok {
		var cr simdp.Crossing
		if err := json.Unmarshal([]byte(js), &cr); err != nil {
			return fmt.Errorf("arrive: %w", err)
		}
		if !underlay.Arrive(cr) {
			return fmt.Errorf("arrive: no host at %s in this child", cr.To)
		}
		return nil
	}
	f := strings.Fields(c)
	switch {
	case len(f) == 4 && f[0] == "resolve":
		h, err := strconv.Atoi(f[1])
		if err != nil || h < spec.First || h >= spec.First+spec.Count {
			return fmt.Errorf("resolve: host %q is not in this child", f[1])
		}
		dst, err := netip.ParseAddr(f[3])
		if err != nil {
			return fmt.Errorf("resolve: %w", err)
		}
		if _, err := drivers[h-spec.First].Resolve(f[2], dst); err != nil {
			return fmt.Errorf("resolve on %s: %w", HostName(h), err)
		}
		return nil
	case len(f) == 2 && f[0] == "lookups":
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return fmt.Errorf("lookups: %w", err)
		}
		for range n {
			d := drivers[rng.IntN(len(drivers))]
			e := d.local.Load()
			if e == nil {
				continue
			}
			dst := randomAddr(e.CIDR, rng)
			if _, err := d.Resolve(e.ID, dst); err != nil && !errors.Is(err, simdp.ErrUnknownEndpoint) {
				return fmt.Errorf("lookups on %s: %w", HostName(d.host), err)
			}
		}
		return nil
	case c == "start":
		return nil
	}
	return fmt.Errorf("unknown command %q", c)
}

// randomAddr returns a random address inside an IPv4 prefix.
func randomAddr(p netip.Prefix, rng *rand.Rand) netip.Addr {
	a := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	if !p.Addr().Is4() || host <= 1 {
		return p.Addr()
	}
	base := binary.BigEndian.Uint32(a[:])
	off := 1 + rng.Uint32N(uint32(1)<<host-2)
	binary.BigEndian.PutUint32(a[:], base+off)
	return netip.AddrFrom4(a)
}

// agentsMemoryLimit is the soft memory limit of an agent process: twice
// times its agents' live heap (~31 KB each with their config streams),
// plus 128 MiB.
func agentsMemoryLimit(agents int) int64 { return (int64(agents)*31_000 + 128<<20) * 2 }
