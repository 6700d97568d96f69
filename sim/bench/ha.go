package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/sim"
)

// The faults HA injects, one after another, each on one member.
const (
	FaultKillLeader    = "kill-leader"    // SIGKILL the replica embedding the etcd leader, then restart it
	FaultKillFollower  = "kill-follower"  // SIGKILL a follower's replica, then restart it
	FaultPauseLeader   = "pause-leader"   // SIGSTOP the leader's replica past the election timeout, then SIGCONT
	FaultPauseFollower = "pause-follower" // the same on a follower's
	// FaultPartitionLeader cuts the leader's replica off its peers (nftables
	// drops in its network namespace) until its replica refuses writes,
	// then heals; FaultPartitionFollower the same on a follower's.
	FaultPartitionLeader   = "partition-leader"
	FaultPartitionFollower = "partition-follower"
)

// HAFaults are the faults HA runs by default, in order: the long form.
var HAFaults = []string{FaultKillLeader, FaultKillFollower, FaultPauseLeader, FaultPauseFollower,
	FaultPartitionLeader, FaultPartitionFollower}

// HAShortFaults are one fault of each kind: the short form CI runs.
var HAShortFaults = []string{FaultKillLeader, FaultPauseFollower, FaultPartitionLeader}

func isPartition(fault string) bool {
	return fault == FaultPartitionLeader || fault == FaultPartitionFollower
}

// roleHAReplica runs a controller replica embedding an etcd member.
const roleHAReplica = "ha-replica"

// HAGoalUnavailable is the worst write unavailability allowed per fault.
const HAGoalUnavailable = 5 * time.Second

// haRetryPause is how long a client waits once every replica failed its
// operations in a row.
const haRetryPause = 50 * time.Millisecond

// haMinorityTimeout bounds a partition: it heals once the cut-off replica
// refused a write and Hold has passed, or after this.
const haMinorityTimeout = 30 * time.Second

// HAConfig configures the HA benchmark.
type HAConfig struct {
	// Members is the number of replicas, each embedding an etcd member of
	// one cluster (default 3).
	Members int
	// Workers are the API clients writing and reading (default 8), over
	// Keys objects (default 16).
	Workers, Keys int
	// Faults to inject, in order (default HAFaults), Rounds times
	// (default 1). Partition faults need root: with one, every replica runs
	// in a network namespace of its own (package testnet: a veth to a
	// bridge, which the bench reaches over a root link), else on loopback.
	Faults []string
	Rounds int
	// Hold is how long a fault lasts before it heals (default 3 s, above
	// the election timeout; a partition lasts until the cut-off replica
	// refused a write too); Settle is the least time after healing before
	// the next fault (default 3 s): the next one also waits until the
	// cluster is whole again (see HAFault.Recovered), so that no fault
	// lands on a cluster still recovering from the previous one, which
	// would make it a double fault.
	Hold, Settle time.Duration
	// Hosts is the number of simulated hosts (agents with the sim driver,
	// in one child process) streaming from the replicas through the
	// faults (default 0): each must hold, at the end, the view of the
	// endpoints the API lists on it, applied.
	Hosts int
	// Exec is a binary with the hidden sim.ChildCommand running
	// ChildRoles (required): the replicas run in processes of it, which
	// the faults kill and pause, and so do the simulated hosts.
	Exec string
	// Dir holds the replicas' data dirs (default: a temporary one).
	Dir string
	// Progress receives the fault timeline as it happens (nil: none).
	Progress io.Writer
	// ChildLog receives the replicas' logs (nil: discarded).
	ChildLog io.Writer
	Logger   *slog.Logger
}

// HAReport is the result of HA.
type HAReport struct {
	Members  int           `json:"members"`
	Workers  int           `json:"workers"`
	Keys     int           `json:"keys"`
	Rounds   int           `json:"rounds"`
	Duration time.Duration `json:"duration"`
	// Ops counts the operations recorded; AckedWrites the writes
	// acknowledged, UnknownWrites those whose outcome the client could not
	// know (a timeout, a killed replica, a 503), counted as maybe applied.
	Ops           int `json:"ops"`
	AckedWrites   int `json:"ackedWrites"`
	UnknownWrites int `json:"unknownWrites"`
	// Faults is the timeline, each with its worst write unavailability.
	Faults []HAFault `json:"faults"`
	// WorstUnavailable is the worst over the faults, WorstByKind the worst
	// of each kind.
	WorstUnavailable time.Duration            `json:"worstUnavailable"`
	WorstByKind      map[string]time.Duration `json:"worstByKind"`
	// LostWrites counts the keys whose last acknowledged write (with no
	// other write after or during it) is not what the final read sees.
	LostWrites int `json:"lostWrites"`
	// Linearizable is porcupine's verdict on the whole history: Ok,
	// Illegal or Unknown (timed out).
	Linearizable string `json:"linearizable"`
	// Endpoints, VPCs and Identities count what the churn beside the keys
	// left at the end, read back through the API; Duplicates what they
	// hold twice (must be 0).
	Endpoints  int          `json:"endpoints"`
	VPCs       int          `json:"vpcs"`
	Identities int          `json:"identities"`
	Duplicates HADuplicates `json:"duplicates"`
	// Hosts simulated; HostsConverged of them held, ConvergedAfter the
	// churn stopped, the endpoints the API lists on them, applied;
	// NotConverged describes one that did not. HostStreamsLost counts
	// the config streams the hosts lost (each moved to another replica).
	Hosts           int           `json:"hosts"`
	HostsConverged  int           `json:"hostsConverged"`
	ConvergedAfter  time.Duration `json:"convergedAfter"`
	NotConverged    string        `json:"notConverged,omitempty"`
	HostStreamsLost uint64        `json:"hostStreamsLost"`

	GoalUnavailable time.Duration `json:"goalUnavailable"`
	CPUs            int           `json:"cpus"`
	Load            string        `json:"load"`
}

// HADuplicates counts what more than one object holds: endpoint IPs and
// MACs, VPC VNIs, and security identities (one identity for two label
// sets of a VPC, or two identities for one).
type HADuplicates struct {
	IPs        int `json:"ips"`
	MACs       int `json:"macs"`
	VNIs       int `json:"vnis"`
	Identities int `json:"identities"`
}

// Total is the sum of the duplicates.
func (d HADuplicates) Total() int { return d.IPs + d.MACs + d.VNIs + d.Identities }

// HAFault is one fault of the timeline; times are from the run's start.
type HAFault struct {
	Round  int           `json:"round"`
	Kind   string        `json:"kind"`
	Member string        `json:"member"`
	At     time.Duration `json:"at"`
	Healed time.Duration `json:"healed"`
	// Unavailable is the longest time without an acknowledged write from
	// the fault until the next one (or the end); UnavailableFrom is when
	// (since the run's start) that longest time began.
	Unavailable     time.Duration `json:"unavailable"`
	UnavailableFrom time.Duration `json:"unavailableFrom"`
	// MinorityRefused, of a partition, is how long after the cut the
	// cut-off replica refused a write with 503 and said so on /readyz (0:
	// not before the partition healed); MinorityReason is the write's
	// error.
	MinorityRefused time.Duration `json:"minorityRefused,omitempty"`
	MinorityReason  string        `json:"minorityReason,omitempty"`
	// CutOffSessions, of a partition with simulated hosts, counts the
	// agents streaming from the cut-off replica at the cut; Rehomed is how
	// long after the cut it had none left and every host was connected (0:
	// not before the partition healed).
	CutOffSessions int           `json:"cutOffSessions,omitempty"`
	Rehomed        time.Duration `json:"rehomed,omitempty"`
	// HostsConnected counts the simulated hosts with a config stream up
	// when the fault healed.
	HostsConnected int `json:"hostsConnected,omitempty"`
	// Recovered is how long after the heal the cluster was whole again:
	// every member following one leader and having applied the entries
	// that leader has committed (but for haCaughtUpSlack), every replica
	// ready.
	Recovered time.Duration `json:"recovered"`
}

// Failures lists what the run must not show: a lost acknowledged write, a
// history that is not linearizable, a duplicate, a cut-off replica that
// did not refuse writes, a host that did not converge. The write
// unavailability goal is reported, not a failure.
func (rep *HAReport) Failures() []string {
	var out []string
	if rep.LostWrites > 0 {
		out = append(out, fmt.Sprintf("%d acknowledged writes lost", rep.LostWrites))
	}
	if rep.Linearizable != string(porcupine.Ok) {
		out = append(out, fmt.Sprintf("history of %d operations: linearizability %s", rep.Ops, rep.Linearizable))
	}
	if d := rep.Duplicates; d.Total() > 0 {
		out = append(out, fmt.Sprintf("duplicates: %d IPs, %d MACs, %d VNIs, %d identities", d.IPs, d.MACs, d.VNIs, d.Identities))
	}
	for _, f := range rep.Faults {
		if isPartition(f.Kind) && f.MinorityRefused == 0 {
			out = append(out, fmt.Sprintf("%s (round %d): %s, cut off, did not refuse writes with 503 within %s", f.Kind, f.Round, f.Member, haMinorityTimeout))
		}
		if f.CutOffSessions > 0 && f.Rehomed == 0 {
			out = append(out, fmt.Sprintf("%s (round %d): the %d agents of %s, cut off, did not move to another replica within %s", f.Kind, f.Round, f.CutOffSessions, f.Member, haMinorityTimeout))
		}
	}
	if rep.HostsConverged < rep.Hosts {
		out = append(out, fmt.Sprintf("%d of %d hosts converged (%s)", rep.HostsConverged, rep.Hosts, rep.NotConverged))
	}
	return out
}

func (c *HAConfig) setDefaults() {
	c.Members = cmp.Or(c.Members, 3)
	c.Workers = cmp.Or(c.Workers, 8)
	c.Keys = cmp.Or(c.Keys, 16)
	if c.Faults == nil {
		c.Faults = HAFaults
	}
	c.Rounds = cmp.Or(c.Rounds, 1)
	c.Hold = cmp.Or(c.Hold, 3*time.Second)
	c.Settle = cmp.Or(c.Settle, 3*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// netns reports whether the replicas run in network namespaces (a
// partition fault needs them).
func (c *HAConfig) netns() bool { return slices.ContainsFunc(c.Faults, isPartition) }

// Validate checks the configuration.
func (c *HAConfig) Validate() error {
	switch {
	case c.Exec == "":
		return errors.New("bench: ha: the replicas' binary (Exec) is required")
	case c.Members < 3:
		return fmt.Errorf("bench: ha: %d members: a fault needs at least 3 to keep a quorum", c.Members)
	case c.Workers < 1 || c.Keys < 1 || c.Rounds < 1:
		return fmt.Errorf("bench: ha: %d workers over %d keys, %d rounds", c.Workers, c.Keys, c.Rounds)
	case c.Hosts < 0 || c.Hosts > haMaxHosts:
		return fmt.Errorf("bench: ha: %d hosts: want 0..%d (one process of agents)", c.Hosts, haMaxHosts)
	case c.netns() && os.Geteuid() != 0:
		return errors.New("bench: ha: partition faults need root (network namespaces and nftables): run as root or choose --faults without them")
	}
	for _, f := range c.Faults {
		if !slices.Contains(HAFaults, f) {
			return fmt.Errorf("bench: ha: unknown fault %q (want one of %s)", f, strings.Join(HAFaults, ", "))
		}
	}
	return nil
}

// haReplicaSpec is the spec of a replica child.
type haReplicaSpec struct {
	DataDir, ClusterKeyFile, Name, PeerURL, ClientURL, InitialCluster, API string
	// Agent is the southbound address ("off": none).
	Agent string
	// EtcdEndpoints, if set, makes the replica a client of that etcd
	// instead of embedding one (Name, PeerURL, ClientURL and
	// InitialCluster empty).
	EtcdEndpoints []string `json:",omitempty"`
	// CPUProfile, if set, is a file the replica writes a CPU profile of
	// its start to (from before its controller is made until it serves).
	CPUProfile string `json:",omitempty"`
}

// runHAReplica runs a replica until its parent ends it (or kills it).
func runHAReplica(ctx context.Context, c sim.ChildIO) error {
	var spec haReplicaSpec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return fmt.Errorf("ha replica: spec: %w", err)
	}
	stopProfile := func() {}
	if spec.CPUProfile != "" {
		f, err := os.Create(spec.CPUProfile)
		if err != nil {
			return fmt.Errorf("ha replica: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("ha replica: %w", err)
		}
		var once sync.Once
		stopProfile = func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }
		defer stopProfile()
	}
	ctl, err := controller.New(controller.Config{DataDir: spec.DataDir, ClusterKeyFile: spec.ClusterKeyFile, EtcdEndpoints: spec.EtcdEndpoints,
		EtcdName: spec.Name, EtcdPeerListen: spec.PeerURL, EtcdClientListen: spec.ClientURL, EtcdInitialCluster: spec.InitialCluster,
		APIListen: spec.API, AgentListen: spec.Agent, InsecureHTTP: true, Logger: c.Logger})
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := ctl.Start(startCtx); err != nil {
		return err
	}
	stopProfile()
	c.Emit(childMsg{T: "ready"})
	<-ctx.Done()
	return ctl.Close()
}

// haMember is a replica of the run; ns is its network namespace (nil on
// loopback).
type haMember struct {
	spec  haReplicaSpec
	ns    *testnet.Host
	child *sim.Child
}

// haRun is one run of HA.
type haRun struct {
	cfg     HAConfig
	start   time.Time
	net     *haNet // nil: the replicas run on loopback
	members []*haMember
	etcd    *clientv3.Client
	hosts   *haHosts // nil without Hosts

	mu      sync.Mutex
	ops     []porcupine.Operation
	acks    []time.Duration // of acknowledged writes
	nextVal atomic.Int64
}

// HA runs a cluster of replicas embedding a 3-member etcd cluster under
// API churn (creates, updates, deletes and reads of Keys objects by
// Workers clients, each moving to another replica when its own fails, and
// beside them VPCs and labelled endpoints created and deleted, whose VNIs,
// addresses and security identities must stay unique) with Hosts
// simulated hosts streaming from the replicas, injects the faults one
// after another, Rounds times, and reports each fault's worst write
// unavailability, the acknowledged writes lost, porcupine's verdict on the
// linearizability of the recorded history, the duplicates and whether
// every host converged.
func HA(ctx context.Context, cfg HAConfig) (*HAReport, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "weft-bench-ha-")
		if err != nil {
			return nil, fmt.Errorf("bench: ha: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	r := &haRun{cfg: cfg}
	defer r.close()
	if cfg.netns() {
		var err error
		if r.net, err = newHANet(cfg.Members); err != nil {
			return nil, err
		}
	}
	if err := r.startCluster(ctx, dir); err != nil {
		return nil, err
	}
	if err := r.createKeys(ctx); err != nil {
		return nil, err
	}
	if cfg.Hosts > 0 {
		var err error
		if r.hosts, err = r.startHosts(ctx); err != nil {
			return nil, err
		}
	}

	r.start = time.Now()
	workCtx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Go(func() { r.work(workCtx, w) })
	}
	faults, err := r.inject(ctx)
	stopWork()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	stopped := time.Now()
	duration := stopped.Sub(r.start)
	final, err := r.finalReads(ctx)
	if err != nil {
		return nil, err
	}
	rep := r.report(faults, final, duration)
	if err := r.readBack(ctx, rep); err != nil {
		return rep, err
	}
	if r.hosts != nil {
		if err := r.converge(ctx, rep, stopped); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// logf prints a line of the timeline, at its time since the churn began
// (before: none).
func (r *haRun) logf(format string, args ...any) {
	switch {
	case r.cfg.Progress == nil:
	case r.start.IsZero():
		fmt.Fprintf(r.cfg.Progress, "          "+format+"\n", args...)
	default:
		fmt.Fprintf(r.cfg.Progress, "%7.2fs  "+format+"\n", append([]any{time.Since(r.start).Seconds()}, args...)...)
	}
}

// startCluster starts the replicas together (each waits for a quorum):
// on loopback, or each in its namespace, with its etcd peer URL on the
// namespaces' underlay and its API, southbound and etcd client URL on the
// control subnet that the bench reaches.
func (r *haRun) startCluster(ctx context.Context, dir string) error {
	key := filepath.Join(dir, "cluster.key")
	if err := secrets.WriteKeyFile(key, secrets.NewKey()); err != nil {
		return fmt.Errorf("bench: ha: %w", err)
	}
	var initial, clientURLs []string
	for i := range r.cfg.Members {
		s := haReplicaSpec{DataDir: filepath.Join(dir, fmt.Sprintf("m%d", i)), ClusterKeyFile: key, Name: fmt.Sprintf("m%d", i), Agent: "off"}
		m := &haMember{}
		if r.net != nil {
			m.ns = r.net.net.Host(i)
			ctl := m.ns.ControlIP.String()
			s.PeerURL, s.ClientURL, s.API = "https://"+net.JoinHostPort(m.ns.UnderlayIP.String(), "2380"),
				"https://"+net.JoinHostPort(ctl, "2379"), net.JoinHostPort(ctl, "7443")
			if r.cfg.Hosts > 0 {
				s.Agent = net.JoinHostPort(ctl, "7444")
			}
		} else {
			ports := []*string{&s.PeerURL, &s.ClientURL, &s.API}
			if r.cfg.Hosts > 0 {
				ports = append(ports, &s.Agent)
			}
			for _, p := range ports {
				var err error
				if *p, err = freeLoopback(); err != nil {
					return err
				}
			}
			s.PeerURL, s.ClientURL = "https://"+s.PeerURL, "https://"+s.ClientURL
		}
		m.spec = s
		initial, clientURLs = append(initial, s.Name+"="+s.PeerURL), append(clientURLs, s.ClientURL)
		r.members = append(r.members, m)
	}
	errs := make([]error, len(r.members))
	var wg sync.WaitGroup
	for i, m := range r.members {
		m.spec.InitialCluster = strings.Join(initial, ",")
		wg.Go(func() { errs[i] = r.startMember(ctx, m) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	cc, err := controller.EtcdClientConfig(controller.Config{EtcdEndpoints: clientURLs, ClusterKeyFile: key})
	if err != nil {
		return fmt.Errorf("bench: ha: %w", err)
	}
	r.etcd, err = clientv3.New(cc)
	if err != nil {
		return fmt.Errorf("bench: ha: etcd client: %w", err)
	}
	return nil
}

// startMember starts (or restarts) a member's replica, in its namespace if
// it has one, and waits until it serves.
func (r *haRun) startMember(ctx context.Context, m *haMember) error {
	start := func() error {
		c, err := sim.StartChild(ctx, sim.ChildConfig{Name: "replica " + m.spec.Name, Exe: r.cfg.Exec, Role: roleHAReplica, Spec: m.spec, Log: prefixLines(r.cfg.ChildLog, m.spec.Name+": ")})
		m.child = c
		return err
	}
	var err error
	if m.ns != nil {
		err = m.ns.Do(start) // a process started on a thread in the namespace runs in it
	} else {
		err = start()
	}
	if err != nil {
		return err
	}
	c := m.child
	if _, err := c.Await(ctx, "ready", 3*time.Minute); err != nil {
		return fmt.Errorf("bench: ha: %w", err)
	}
	go func() { // drain until the child ends
		for range c.Messages() {
		}
	}()
	return nil
}

func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: ha: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// close stops the hosts, then the replicas, then removes the namespaces.
func (r *haRun) close() {
	if r.hosts != nil {
		_ = r.hosts.close()
	}
	if r.etcd != nil {
		r.etcd.Close()
	}
	for _, m := range r.members {
		if m.child != nil {
			_ = syscall.Kill(m.child.PID(), syscall.SIGCONT)
			_ = m.child.Close()
		}
	}
	if r.net != nil {
		if err := r.net.close(); err != nil {
			r.cfg.Logger.Warn("ha: remove the network namespaces", "err", err)
		}
	}
}

// haKey is the name of key k's object: a Tenant whose label v holds the
// value written.
func haKey(k int) string { return fmt.Sprintf("ha-k%d", k) }

const haLabel = "v"

func haTenant(k int, v int64) *apiv1.Tenant {
	return &apiv1.Tenant{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTenant},
		Metadata: apiv1.ObjectMeta{Name: haKey(k), Labels: map[string]string{haLabel: strconv.FormatInt(v, 10)}}}
}

// createKeys creates every key with value 0, the model's initial state.
func (r *haRun) createKeys(ctx context.Context) error {
	api, err := client.New("http://"+r.members[0].spec.API, client.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	defer api.Close()
	for k := range r.cfg.Keys {
		if _, err := api.Create(ctx, haTenant(k, 0)); err != nil {
			return fmt.Errorf("bench: ha: create %s: %w", haKey(k), err)
		}
	}
	meta := func(kind, name string) (apiv1.TypeMeta, apiv1.ObjectMeta) {
		tenant := haTenantName
		if kind == apiv1.KindTenant || kind == apiv1.KindHost {
			tenant = ""
		}
		return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind}, apiv1.ObjectMeta{Name: name, Tenant: tenant}
	}
	var (
		t apiv1.Tenant
		h apiv1.Host
		v apiv1.VPC
		n apiv1.Subnet
	)
	t.TypeMeta, t.Metadata = meta(apiv1.KindTenant, haTenantName)
	h.TypeMeta, h.Metadata = meta(apiv1.KindHost, haHost)
	h.Spec.UnderlayIP = "192.0.2.10"
	v.TypeMeta, v.Metadata = meta(apiv1.KindVPC, haVPC)
	v.Spec.CIDRs = []string{"10.0.0.0/16"}
	n.TypeMeta, n.Metadata = meta(apiv1.KindSubnet, haSubnet)
	n.Spec = apiv1.SubnetSpec{VPC: haVPC, CIDR: "10.0.0.0/16"}
	for _, o := range []apiv1.Object{&t, &h, &v, &n} {
		if _, err := api.Create(ctx, o); err != nil {
			return fmt.Errorf("bench: ha: create %s: %w", apiv1.RefOf(o), err)
		}
	}
	return nil
}

// The network of the endpoints' churn.
const (
	haTenantName = "ha"
	haHost       = "ha-h0" // the endpoints' host without simulated hosts
	haSubnet     = "a"
	haVPC        = "main"
	// haApps is how many values the endpoints' label app takes: label
	// sets, so security identities, of VPC main.
	haApps = 6
)

// endpointOp creates an endpoint of worker w, labelled with one of haApps
// apps, on a random simulated host (haHost without them), or deletes one
// of its own; the outcome is not modelled, only the endpoints left are
// checked at the end.
func (r *haRun) endpointOp(ctx context.Context, api *client.Client, w int, rng *rand.Rand, own *[]string, seq *int) error {
	if len(*own) > 0 && rng.IntN(2) == 0 {
		return deleteOwn(ctx, api, apiv1.KindEndpoint, rng, own)
	}
	*seq++
	name := fmt.Sprintf("ep-%d-%d", w, *seq)
	host := haHost
	if r.hosts != nil {
		host = r.hosts.names[rng.IntN(len(r.hosts.names))]
	}
	ep := &apiv1.Endpoint{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{Name: name, Tenant: haTenantName, Labels: map[string]string{"app": fmt.Sprintf("a%d", rng.IntN(haApps))}},
		Spec:     apiv1.EndpointSpec{Subnet: haSubnet, Host: host}}
	*own = append(*own, name) // maybe created, even on an error
	_, err := api.Create(ctx, ep)
	return err
}

// vpcOp creates a VPC of worker w (a VNI to allocate) or deletes one of
// its own.
func vpcOp(ctx context.Context, api *client.Client, w int, rng *rand.Rand, own *[]string, seq *int) error {
	if len(*own) > 0 && rng.IntN(2) == 0 {
		return deleteOwn(ctx, api, apiv1.KindVPC, rng, own)
	}
	*seq++
	name := fmt.Sprintf("v-%d-%d", w, *seq)
	v := &apiv1.VPC{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindVPC},
		Metadata: apiv1.ObjectMeta{Name: name, Tenant: haTenantName}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}}
	*own = append(*own, name)
	_, err := api.Create(ctx, v)
	return err
}

// deleteOwn deletes a random one of own, and forgets it once it is gone.
func deleteOwn(ctx context.Context, api *client.Client, kind string, rng *rand.Rand, own *[]string) error {
	i := rng.IntN(len(*own))
	_, err := api.Delete(ctx, kind, haTenantName, (*own)[i])
	if err == nil || apiv1.ReasonOf(err) == apiv1.ReasonNotFound {
		*own = slices.Delete(*own, i, i+1)
	}
	return err
}

// readBack lists the churn's endpoints and VPCs and counts what they hold
// twice into rep.
func (r *haRun) readBack(ctx context.Context, rep *HAReport) error {
	api, err := client.New("http://"+r.members[0].spec.API, client.WithTimeout(30*time.Second))
	if err != nil {
		return err
	}
	defer api.Close()
	eps, _, err := api.List(ctx, apiv1.KindEndpoint, haTenantName, "")
	if err != nil {
		return fmt.Errorf("bench: ha: list endpoints: %w", err)
	}
	vpcs, _, err := api.List(ctx, apiv1.KindVPC, haTenantName, "")
	if err != nil {
		return fmt.Errorf("bench: ha: list VPCs: %w", err)
	}
	rep.Endpoints, rep.VPCs = len(eps), len(vpcs)
	rep.Identities, rep.Duplicates, err = haDuplicates(eps, vpcs)
	return err
}

// haDuplicates counts the IPs and MACs held by more than one endpoint, the
// VNIs by more than one VPC, and the security identities of a VPC held by
// more than one label set or label sets with more than one identity; and
// the distinct identities. An endpoint without an address or identity, or
// a VPC without a VNI, is an error: the API acknowledged it allocated.
func haDuplicates(eps, vpcs []apiv1.Object) (identities int, d HADuplicates, err error) {
	count := func(m map[string]int) int {
		n := 0
		for _, v := range m {
			n += max(v-1, 0)
		}
		return n
	}
	ips, macs, vnis := map[string]int{}, map[string]int{}, map[string]int{}
	// Per VPC (an endpoint's subnet names it within its tenant, one subnet
	// per VPC here): the identities of each label set and the label sets
	// of each identity.
	type vpcID struct {
		vpc string
		id  uint32
	}
	idsOf, setsOf := map[string]map[uint32]bool{}, map[vpcID]map[string]bool{}
	for _, o := range eps {
		ep := o.(*apiv1.Endpoint)
		st := ep.Status
		if st.IP == "" || st.MAC == "" || st.Identity == 0 {
			return 0, d, fmt.Errorf("bench: ha: endpoint %s has no address or identity (ip %q, mac %q, identity %d)", ep.Metadata.Name, st.IP, st.MAC, st.Identity)
		}
		ips[st.IP]++
		macs[st.MAC]++
		vpc := ep.Metadata.Tenant + "/" + ep.Spec.Subnet
		set := vpc + " " + labelSet(ep.Metadata.Labels)
		id := vpcID{vpc, st.Identity}
		if idsOf[set] == nil {
			idsOf[set] = map[uint32]bool{}
		}
		if setsOf[id] == nil {
			setsOf[id] = map[string]bool{}
		}
		idsOf[set][st.Identity], setsOf[id][set] = true, true
	}
	for _, o := range vpcs {
		v := o.(*apiv1.VPC)
		if v.Status.VNI == 0 {
			return 0, d, fmt.Errorf("bench: ha: VPC %s has no VNI", v.Metadata.Name)
		}
		vnis[strconv.FormatUint(uint64(v.Status.VNI), 10)]++
	}
	d = HADuplicates{IPs: count(ips), MACs: count(macs), VNIs: count(vnis)}
	for _, ids := range idsOf {
		d.Identities += len(ids) - 1
	}
	for _, sets := range setsOf {
		d.Identities += len(sets) - 1
	}
	return len(setsOf), d, nil
}

// labelSet is a canonical text of labels.
func labelSet(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s,", k, labels[k])
	}
	return b.String()
}

// The operations of the history.
type haOpKind uint8

const (
	haGet haOpKind = iota
	haCreate
	haUpdate
	haDelete
)

// haInput is an operation's input; haOutput its result.
type haInput struct {
	Key   int
	Kind  haOpKind
	Value int64
}

// haOutput: Unknown for a write whose outcome is unknown (maybe
// applied), else the reason ("" for success) and, of a get, the value
// read (-1 absent).
type haOutput struct {
	Unknown bool
	Reason  string
	Value   int64
}

// work runs one client until ctx ends.
func (r *haRun) work(ctx context.Context, w int) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	at := w % len(r.members)
	apis := make([]*client.Client, len(r.members))
	for i, m := range r.members {
		api, err := client.New("http://"+m.spec.API, client.WithTimeout(2*time.Second))
		if err != nil {
			return
		}
		defer api.Close()
		apis[i] = api
	}
	var (
		ownEPs, ownVPCs []string
		seq             int
		failed          int // operations failed in a row, each on the next replica
	)
	// next moves to the next replica after a failure; once every replica
	// failed in a row (all refuse writes at once with 503 while no member
	// has a leader, an election), it waits a little before the next round.
	next := func() {
		at = (at + 1) % len(apis)
		if failed++; failed%len(apis) == 0 {
			_ = sleepCtx(ctx, haRetryPause)
		}
	}
	for ctx.Err() == nil {
		// Beside the keys: endpoints (addresses, identities) and VPCs
		// (VNIs), a tenth of the operations each.
		if p := rng.IntN(10); p < 2 {
			var err error
			if p == 0 {
				err = r.endpointOp(ctx, apis[at], w, rng, &ownEPs, &seq)
			} else {
				err = vpcOp(ctx, apis[at], w, rng, &ownVPCs, &seq)
			}
			if reason := apiv1.ReasonOf(err); err != nil && (reason == "" || reason == apiv1.ReasonUnavailable) {
				next()
			} else {
				failed = 0
			}
			continue
		}
		in := haInput{Key: rng.IntN(r.cfg.Keys)}
		switch p := rng.IntN(100); {
		case p < 40:
			in.Kind = haGet
		case p < 70:
			in.Kind = haUpdate
		case p < 85:
			in.Kind = haCreate
		default:
			in.Kind = haDelete
		}
		if in.Kind == haCreate || in.Kind == haUpdate {
			in.Value = r.nextVal.Add(1)
		}
		call := time.Since(r.start)
		out, err := r.do(ctx, apis[at], in)
		ret := time.Since(r.start)
		if err != nil { // a timeout, a killed replica, a 503, the end of the run: maybe applied
			next()
			if in.Kind == haGet {
				continue // a failed read tells nothing
			}
			out, ret = haOutput{Unknown: true}, math.MaxInt64
		} else {
			failed = 0
		}
		r.mu.Lock()
		r.ops = append(r.ops, porcupine.Operation{ClientId: w, Input: in, Call: int64(call), Output: out, Return: int64(ret)})
		if in.Kind != haGet && err == nil && out.Reason == "" {
			r.acks = append(r.acks, ret)
		}
		r.mu.Unlock()
	}
}

// do runs one operation; err is set when its outcome is unknown.
func (r *haRun) do(ctx context.Context, api *client.Client, in haInput) (haOutput, error) {
	var (
		obj apiv1.Object
		err error
	)
	switch in.Kind {
	case haGet:
		obj, err = api.Get(ctx, apiv1.KindTenant, "", haKey(in.Key))
	case haCreate:
		_, err = api.Create(ctx, haTenant(in.Key, in.Value))
	case haUpdate:
		_, err = api.Update(ctx, haTenant(in.Key, in.Value))
	case haDelete:
		_, err = api.Delete(ctx, apiv1.KindTenant, "", haKey(in.Key))
	}
	switch reason := apiv1.ReasonOf(err); {
	case err == nil:
		out := haOutput{Value: -1}
		if obj != nil {
			v, perr := strconv.ParseInt(obj.GetObjectMeta().Labels[haLabel], 10, 64)
			if perr != nil {
				return haOutput{}, fmt.Errorf("bench: ha: %s: label %w", haKey(in.Key), perr)
			}
			out.Value = v
		}
		return out, nil
	case reason == apiv1.ReasonNotFound && in.Kind == haGet:
		return haOutput{Value: -1}, nil
	case reason == apiv1.ReasonNotFound, reason == apiv1.ReasonAlreadyExists, reason == apiv1.ReasonConflict:
		return haOutput{Reason: reason}, nil
	default:
		return haOutput{}, err
	}
}

// haModel is a register per key: its value, -1 when the object is absent.
var haModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(haInput).Key
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(by))
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(int64), input.(haInput), output.(haOutput)
		present := s != -1
		// applied is the state after the write succeeds; possible whether it can.
		var applied int64
		var possible bool
		switch in.Kind {
		case haGet:
			return out.Value == s, s
		case haCreate:
			applied, possible = in.Value, !present
		case haUpdate:
			applied, possible = in.Value, present
		case haDelete:
			applied, possible = -1, present
		}
		switch {
		case out.Unknown:
			if possible {
				return true, applied
			}
			return true, s
		case out.Reason == "":
			return possible, applied
		case out.Reason == apiv1.ReasonNotFound:
			return !present, s
		case out.Reason == apiv1.ReasonAlreadyExists:
			return present, s
		default: // Conflict: a stale read of the object, nothing written
			return true, s
		}
	},
	DescribeOperation: func(input, output any) string { return fmt.Sprintf("%+v -> %+v", input, output) },
}

// inject runs the faults one after another, Rounds times.
func (r *haRun) inject(ctx context.Context) ([]HAFault, error) {
	r.logf("churn started: %d workers over %d keys, %d members, %d simulated hosts", r.cfg.Workers, r.cfg.Keys, len(r.members), r.cfg.Hosts)
	if err := sleepCtx(ctx, r.cfg.Settle); err != nil {
		return nil, err
	}
	if err := r.awaitWhole(ctx); err != nil {
		return nil, err
	}
	var faults []HAFault
	for round := 1; round <= r.cfg.Rounds; round++ {
		for _, kind := range r.cfg.Faults {
			f, err := r.fault(ctx, round, kind)
			if err != nil {
				return faults, err
			}
			healed := time.Now()
			rerr := r.awaitWhole(ctx)
			f.Recovered = time.Since(healed)
			faults = append(faults, f)
			if rerr != nil {
				return faults, rerr
			}
			r.logf("%s: cluster whole again %.2fs after the heal", kind, f.Recovered.Seconds())
			if err := sleepCtx(ctx, r.cfg.Settle-time.Since(healed)); err != nil {
				return faults, err
			}
		}
	}
	return faults, nil
}

// haRecoverTimeout bounds the wait for the cluster to be whole again after
// a fault.
const haRecoverTimeout = time.Minute

// awaitWhole waits until every member follows one leader and has applied
// the entries that leader has committed (but for haCaughtUpSlack), and
// every replica says it is ready (it reaches its quorum). A member that
// healed (restarted, resumed, reconnected) may still be far behind: a
// fault on one of the others then leaves a majority that cannot commit
// until it has caught up.
func (r *haRun) awaitWhole(ctx context.Context) error {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(haRecoverTimeout)
	for {
		why := r.whole(ctx, hc)
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: ha: the cluster is not whole %s after a fault: %s", haRecoverTimeout, why)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// haCaughtUpSlack is how many committed entries a member may not have
// applied yet and count as caught up (a few heartbeats' worth of churn).
const haCaughtUpSlack = 256

// membersCaughtUp says why the etcd members of specs are not one caught-up
// cluster ("" if they are): every member following one leader and within
// haCaughtUpSlack of the leader's committed index.
func membersCaughtUp(ctx context.Context, etcd *clientv3.Client, specs []haReplicaSpec) string {
	leaders := map[uint64]bool{}
	applied := make([]uint64, len(specs))
	var commit uint64 // the leader's
	for i, spec := range specs {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := etcd.Status(sctx, spec.ClientURL)
		cancel()
		switch {
		case err != nil:
			return fmt.Sprintf("%s: status: %v", spec.Name, err)
		case st.Leader == 0:
			return spec.Name + " has no leader"
		}
		leaders[st.Leader] = true
		applied[i] = st.RaftAppliedIndex
		if st.Leader == st.Header.MemberId {
			commit = st.RaftIndex
		}
	}
	if len(leaders) != 1 || commit == 0 {
		return fmt.Sprintf("the members follow %d leaders", len(leaders))
	}
	for i, a := range applied {
		if a+haCaughtUpSlack < commit {
			return fmt.Sprintf("%s applied index %d of %d", specs[i].Name, a, commit)
		}
	}
	return ""
}

// whole says why the cluster is not whole ("" if it is; see awaitWhole).
func (r *haRun) whole(ctx context.Context, hc *http.Client) string {
	specs := make([]haReplicaSpec, len(r.members))
	for i, m := range r.members {
		specs[i] = m.spec
	}
	if why := membersCaughtUp(ctx, r.etcd, specs); why != "" {
		return why
	}
	for _, m := range r.members {
		if !ready(ctx, hc, m.spec.API) {
			return m.spec.Name + " not ready"
		}
	}
	return ""
}

// fault injects one fault on the leader's member or a follower's, and
// heals it.
func (r *haRun) fault(ctx context.Context, round int, kind string) (HAFault, error) {
	leader, err := r.leader(ctx)
	if err != nil {
		return HAFault{}, err
	}
	i := leader
	if kind == FaultKillFollower || kind == FaultPauseFollower || kind == FaultPartitionFollower {
		i = (leader + 1) % len(r.members)
	}
	m := r.members[i]
	f := HAFault{Round: round, Kind: kind, Member: m.spec.Name, At: time.Since(r.start)}
	pid := m.child.PID()
	switch kind {
	case FaultKillLeader, FaultKillFollower:
		r.logf("%s: SIGKILL %s (pid %d)", kind, m.spec.Name, pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return f, fmt.Errorf("bench: ha: kill %s: %w", m.spec.Name, err)
		}
		_ = m.child.Close() // reaps it; its exit error is the kill
		if err := sleepCtx(ctx, r.cfg.Hold); err != nil {
			return f, err
		}
		r.logf("%s: restart %s", kind, m.spec.Name)
		if err := r.startMember(ctx, m); err != nil {
			return f, err
		}
	case FaultPauseLeader, FaultPauseFollower:
		r.logf("%s: SIGSTOP %s (pid %d)", kind, m.spec.Name, pid)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return f, fmt.Errorf("bench: ha: pause %s: %w", m.spec.Name, err)
		}
		if err := sleepCtx(ctx, r.cfg.Hold); err != nil {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			return f, err
		}
		r.logf("%s: SIGCONT %s", kind, m.spec.Name)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			return f, fmt.Errorf("bench: ha: resume %s: %w", m.spec.Name, err)
		}
	case FaultPartitionLeader, FaultPartitionFollower:
		r.logf("%s: cut %s off its peers (nftables drops in its namespace)", kind, m.spec.Name)
		if err := r.net.partition(i); err != nil {
			return f, err
		}
		err = r.awaitMinority(ctx, m, &f)
		if f.MinorityRefused > 0 {
			r.logf("%s: %s refused a write with 503 and said so on /readyz %.2fs after the cut: %s", kind, m.spec.Name, f.MinorityRefused.Seconds(), f.MinorityReason)
		} else {
			r.logf("%s: %s did not refuse writes within %s", kind, m.spec.Name, haMinorityTimeout)
		}
		if f.CutOffSessions > 0 {
			r.logf("%s: the %d agents of %s moved to other replicas %.2fs after the cut (0: not)", kind, f.CutOffSessions, m.spec.Name, f.Rehomed.Seconds())
		}
		r.logf("%s: heal %s", kind, m.spec.Name)
		if herr := r.net.heal(i); herr != nil || err != nil {
			return f, errors.Join(err, herr)
		}
	}
	f.Healed = time.Since(r.start)
	if r.hosts != nil {
		f.HostsConnected = r.hosts.connected()
		r.logf("%s: healed; %d of %d hosts connected", kind, f.HostsConnected, r.cfg.Hosts)
	} else {
		r.logf("%s: healed", kind)
	}
	return f, nil
}

// awaitMinority probes the replica of m, cut off at f.At, until it
// refuses a write with 503 (ReasonUnavailable) and says it is not ready
// on /readyz, its agents (if any) moved to other replicas, and Hold has
// passed, or for haMinorityTimeout; it records in f when it refused, the
// write's error and when its agents had moved. The probes create tenants
// that no check reads.
func (r *haRun) awaitMinority(ctx context.Context, m *haMember, f *HAFault) error {
	api, err := client.New("http://"+m.spec.API, client.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	defer api.Close()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	holdEnd, deadline := time.Now().Add(r.cfg.Hold), time.Now().Add(haMinorityTimeout)
	if r.hosts != nil {
		if f.CutOffSessions, err = streamSessions(ctx, hc, m.spec.API); err != nil {
			return err
		}
	}
	for probe := 0; ; probe++ {
		if f.MinorityRefused == 0 {
			t := &apiv1.Tenant{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTenant},
				Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("ha-probe-%s-%d", m.spec.Name, probe)}}
			_, werr := api.Create(ctx, t)
			if apiv1.ReasonOf(werr) == apiv1.ReasonUnavailable && notReady(ctx, hc, m.spec.API) {
				f.MinorityRefused, f.MinorityReason = time.Since(r.start)-f.At, werr.Error()
			}
		}
		if f.CutOffSessions > 0 && f.Rehomed == 0 {
			if n, err := streamSessions(ctx, hc, m.spec.API); err == nil && n == 0 && r.hosts.connected() == r.cfg.Hosts {
				f.Rehomed = time.Since(r.start) - f.At
			}
		}
		now := time.Now()
		if (f.MinorityRefused > 0 && (f.CutOffSessions == 0 || f.Rehomed > 0) && !now.Before(holdEnd)) || now.After(deadline) {
			return nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// streamSessions reads the replica's agents with a config stream
// (weft_stream_sessions) from its /metrics.
func streamSessions(ctx context.Context, hc *http.Client, api string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("bench: ha: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: ha: metrics of %s: %w", api, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "weft_stream_sessions "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("bench: ha: metrics of %s: %w", api, err)
			}
			return int(n), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("bench: ha: metrics of %s: %w", api, err)
	}
	return 0, nil // no stream server (yet, or any more)
}

// notReady reports whether the replica at api answers /readyz with 503.
func notReady(ctx context.Context, hc *http.Client, api string) bool {
	return readyz(ctx, hc, api) == http.StatusServiceUnavailable
}

// ready reports whether the replica at api answers /readyz with 200.
func ready(ctx context.Context, hc *http.Client, api string) bool {
	return readyz(ctx, hc, api) == http.StatusOK
}

// readyz returns the status code of the replica's /readyz (0 if it did
// not answer).
func readyz(ctx context.Context, hc *http.Client, api string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/readyz", nil)
	if err != nil {
		return 0
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// sleepCtx waits for d or the end of ctx.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// leader returns the index of the member that leads etcd.
func (r *haRun) leader(ctx context.Context) (int, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		for i, m := range r.members {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := r.etcd.Status(sctx, m.spec.ClientURL)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, errors.New("bench: ha: no etcd leader within a minute")
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// finalReads reads every key once the churn has stopped, appending the
// reads to the history.
func (r *haRun) finalReads(ctx context.Context) (map[int]int64, error) {
	api, err := client.New("http://"+r.members[0].spec.API, client.WithTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	defer api.Close()
	final := map[int]int64{}
	// A replica healed from a partition refuses reads (503) until it
	// reaches its quorum again: a failed read tells nothing, try again.
	deadline := time.Now().Add(time.Minute)
	for k := range r.cfg.Keys {
		in := haInput{Key: k, Kind: haGet}
		call := time.Since(r.start)
		out, err := r.do(ctx, api, in)
		for ; err != nil && time.Now().Before(deadline); out, err = r.do(ctx, api, in) {
			if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
				return nil, err
			}
			call = time.Since(r.start)
		}
		if err != nil {
			return nil, fmt.Errorf("bench: ha: final read of %s: %w", haKey(k), err)
		}
		r.ops = append(r.ops, porcupine.Operation{ClientId: r.cfg.Workers, Input: in, Call: int64(call), Output: out, Return: int64(time.Since(r.start))})
		final[k] = out.Value
	}
	return final, nil
}

func (r *haRun) report(faults []HAFault, final map[int]int64, duration time.Duration) *HAReport {
	rep := &HAReport{Members: len(r.members), Workers: r.cfg.Workers, Keys: r.cfg.Keys, Rounds: r.cfg.Rounds, Hosts: r.cfg.Hosts,
		Duration: duration, Ops: len(r.ops), WorstByKind: map[string]time.Duration{},
		GoalUnavailable: HAGoalUnavailable, CPUs: runtime.NumCPU(), Load: loadAvg()}
	for _, op := range r.ops {
		in, out := op.Input.(haInput), op.Output.(haOutput)
		switch {
		case in.Kind == haGet:
		case out.Unknown:
			rep.UnknownWrites++
		case out.Reason == "":
			rep.AckedWrites++
		}
	}
	slices.Sort(r.acks)
	for i := range faults {
		end := duration
		if i+1 < len(faults) {
			end = faults[i+1].At
		}
		faults[i].Unavailable, faults[i].UnavailableFrom = worstGap(r.acks, faults[i].At, end)
		rep.WorstUnavailable = max(rep.WorstUnavailable, faults[i].Unavailable)
		rep.WorstByKind[faults[i].Kind] = max(rep.WorstByKind[faults[i].Kind], faults[i].Unavailable)
		f := faults[i]
		r.logf("%s (round %d, at %.2fs): no write acknowledged from %.2fs to %.2fs (%s)", f.Kind, f.Round, f.At.Seconds(),
			f.UnavailableFrom.Seconds(), (f.UnavailableFrom + f.Unavailable).Seconds(), f.Unavailable.Round(time.Millisecond))
	}
	rep.Faults = faults
	rep.LostWrites = lostWrites(r.ops, final)
	rep.Linearizable = string(porcupine.CheckOperationsTimeout(haModel, r.ops, 2*time.Minute))
	return rep
}

// worstGap is the longest time in [from, to] without an acknowledgement
// in acks (sorted), and when it began.
func worstGap(acks []time.Duration, from, to time.Duration) (worst, began time.Duration) {
	last := from
	for _, a := range acks {
		if a < from {
			continue
		}
		if a > to {
			break
		}
		if a-last > worst {
			worst, began = a-last, last
		}
		last = a
	}
	if to-last > worst {
		worst, began = to-last, last
	}
	return worst, began
}

// lostWrites counts the keys whose last acknowledged write, with no other
// write to the key during or after it, is not what the final read saw.
func lostWrites(ops []porcupine.Operation, final map[int]int64) int {
	lost := 0
	for k, got := range final {
		var last *porcupine.Operation
		for i := range ops {
			op := &ops[i]
			in, out := op.Input.(haInput), op.Output.(haOutput)
			if in.Key == k && in.Kind != haGet && !out.Unknown && out.Reason == "" && (last == nil || op.Return > last.Return) {
				last = op
			}
		}
		if last == nil {
			continue
		}
		alone := true
		for i := range ops {
			op := &ops[i]
			in, out := op.Input.(haInput), op.Output.(haOutput)
			if op != last && in.Key == k && in.Kind != haGet && (out.Unknown || out.Reason == "") && op.Return >= last.Call {
				alone = false
			}
		}
		want := last.Input.(haInput).Value
		if last.Input.(haInput).Kind == haDelete {
			want = -1
		}
		if alone && got != want {
			lost++
		}
	}
	return lost
}
