package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
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
	"github.com/weftnet/weft/sim"
)

// The faults HA injects, one after another, each on one member.
const (
	FaultKillLeader    = "kill-leader"    // SIGKILL the replica embedding the etcd leader, then restart it
	FaultKillFollower  = "kill-follower"  // SIGKILL a follower's replica, then restart it
	FaultPauseLeader   = "pause-leader"   // SIGSTOP the leader's replica past the election timeout, then SIGCONT
	FaultPauseFollower = "pause-follower" // the same on a follower's
)

// HAFaults are the faults HA runs by default, in order.
var HAFaults = []string{FaultKillLeader, FaultKillFollower, FaultPauseLeader, FaultPauseFollower}

// roleHAReplica runs a controller replica embedding an etcd member.
const roleHAReplica = "ha-replica"

// HAGoalUnavailable is the worst write unavailability allowed per fault.
const HAGoalUnavailable = 5 * time.Second

// HAConfig configures the HA benchmark.
type HAConfig struct {
	// Members is the number of replicas, each embedding an etcd member of
	// one cluster (default 3).
	Members int
	// Workers are the API clients writing and reading (default 8), over
	// Keys objects (default 16).
	Workers, Keys int
	// Faults to inject, in order (default HAFaults).
	Faults []string
	// Hold is how long a fault lasts before it heals (default 3 s, above
	// the election timeout); Settle is the time after healing before the
	// next fault (default 3 s).
	Hold, Settle time.Duration
	// Exec is a binary with the hidden sim.ChildCommand running
	// ChildRoles (required): the replicas run in processes of it, which
	// the faults kill and pause.
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
	Duration time.Duration `json:"duration"`
	// Ops counts the operations recorded; AckedWrites the writes
	// acknowledged, UnknownWrites those whose outcome the client could not
	// know (a timeout, a killed replica), counted as maybe applied.
	Ops           int `json:"ops"`
	AckedWrites   int `json:"ackedWrites"`
	UnknownWrites int `json:"unknownWrites"`
	// Faults is the timeline, each with its worst write unavailability.
	Faults []HAFault `json:"faults"`
	// WorstUnavailable is the worst over the faults.
	WorstUnavailable time.Duration `json:"worstUnavailable"`
	// LostWrites counts the keys whose last acknowledged write (with no
	// other write after or during it) is not what the final read sees.
	LostWrites int `json:"lostWrites"`
	// Linearizable is porcupine's verdict on the whole history: Ok,
	// Illegal or Unknown (timed out).
	Linearizable string `json:"linearizable"`
	// Endpoints counts the endpoints left at the end (created and deleted
	// beside the keys' churn); DuplicateAddresses the IPs and MACs held by
	// more than one of them (must be 0).
	Endpoints          int           `json:"endpoints"`
	DuplicateAddresses int           `json:"duplicateAddresses"`
	GoalUnavailable    time.Duration `json:"goalUnavailable"`
	CPUs               int           `json:"cpus"`
	Load               string        `json:"load"`
}

// HAFault is one fault of the timeline; times are from the run's start.
type HAFault struct {
	Kind   string        `json:"kind"`
	Member string        `json:"member"`
	At     time.Duration `json:"at"`
	Healed time.Duration `json:"healed"`
	// Unavailable is the longest time without an acknowledged write from
	// the fault until the next one (or the end).
	Unavailable time.Duration `json:"unavailable"`
}

func (c *HAConfig) setDefaults() {
	c.Members = cmp.Or(c.Members, 3)
	c.Workers = cmp.Or(c.Workers, 8)
	c.Keys = cmp.Or(c.Keys, 16)
	if c.Faults == nil {
		c.Faults = HAFaults
	}
	c.Hold = cmp.Or(c.Hold, 3*time.Second)
	c.Settle = cmp.Or(c.Settle, 3*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the configuration.
func (c *HAConfig) Validate() error {
	switch {
	case c.Exec == "":
		return errors.New("bench: ha: the replicas' binary (Exec) is required")
	case c.Members < 3:
		return fmt.Errorf("bench: ha: %d members: a fault needs at least 3 to keep a quorum", c.Members)
	case c.Workers < 1 || c.Keys < 1:
		return fmt.Errorf("bench: ha: %d workers over %d keys", c.Workers, c.Keys)
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
}

// runHAReplica runs a replica until its parent ends it (or kills it).
func runHAReplica(ctx context.Context, c sim.ChildIO) error {
	var spec haReplicaSpec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return fmt.Errorf("ha replica: spec: %w", err)
	}
	ctl, err := controller.New(controller.Config{DataDir: spec.DataDir, ClusterKeyFile: spec.ClusterKeyFile,
		EtcdName: spec.Name, EtcdPeerListen: spec.PeerURL, EtcdClientListen: spec.ClientURL, EtcdInitialCluster: spec.InitialCluster,
		APIListen: spec.API, AgentListen: "off", InsecureHTTP: true, Logger: c.Logger})
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := ctl.Start(startCtx); err != nil {
		return err
	}
	c.Emit(childMsg{T: "ready"})
	<-ctx.Done()
	return ctl.Close()
}

// haMember is a replica of the run.
type haMember struct {
	spec  haReplicaSpec
	child *sim.Child
}

// haRun is one run of HA.
type haRun struct {
	cfg     HAConfig
	start   time.Time
	members []*haMember
	etcd    *clientv3.Client

	mu      sync.Mutex
	ops     []porcupine.Operation
	acks    []time.Duration // of acknowledged writes
	nextVal atomic.Int64

	endpoints, dups int // at the end
}

// HA runs a cluster of replicas embedding a 3-member etcd cluster under
// API churn (creates, updates, deletes and reads of Keys objects by
// Workers clients, each moving to another replica when its own fails, and
// endpoints created and deleted beside them, whose addresses must stay
// unique),
// injects the faults one after another, and reports each fault's worst
// write unavailability, the acknowledged writes lost and porcupine's
// verdict on the linearizability of the recorded history.
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
	if err := r.startCluster(ctx, dir); err != nil {
		return nil, err
	}
	if err := r.createKeys(ctx); err != nil {
		return nil, err
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
	duration := time.Since(r.start)
	final, err := r.finalReads(ctx)
	if err != nil {
		return nil, err
	}
	return r.report(faults, final, duration), nil
}

func (r *haRun) logf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "%7.2fs  "+format+"\n", append([]any{time.Since(r.start).Seconds()}, args...)...)
	}
}

// startCluster starts the replicas together (each waits for a quorum).
func (r *haRun) startCluster(ctx context.Context, dir string) error {
	key := filepath.Join(dir, "cluster.key")
	if err := secrets.WriteKeyFile(key, secrets.NewKey()); err != nil {
		return fmt.Errorf("bench: ha: %w", err)
	}
	var initial, clientURLs []string
	for i := range r.cfg.Members {
		s := haReplicaSpec{DataDir: filepath.Join(dir, fmt.Sprintf("m%d", i)), ClusterKeyFile: key, Name: fmt.Sprintf("m%d", i)}
		var err error
		for _, p := range []*string{&s.PeerURL, &s.ClientURL, &s.API} {
			if *p, err = freeLoopback(); err != nil {
				return err
			}
		}
		s.PeerURL, s.ClientURL = "https://"+s.PeerURL, "https://"+s.ClientURL
		initial, clientURLs = append(initial, s.Name+"="+s.PeerURL), append(clientURLs, s.ClientURL)
		r.members = append(r.members, &haMember{spec: s})
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

// startMember starts (or restarts) a member's replica and waits until it
// serves.
func (r *haRun) startMember(ctx context.Context, m *haMember) error {
	c, err := sim.StartChild(ctx, sim.ChildConfig{Name: "replica " + m.spec.Name, Exe: r.cfg.Exec, Role: roleHAReplica, Spec: m.spec, Log: r.cfg.ChildLog})
	if err != nil {
		return err
	}
	m.child = c
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

func (r *haRun) close() {
	if r.etcd != nil {
		r.etcd.Close()
	}
	for _, m := range r.members {
		if m.child != nil {
			_ = syscall.Kill(m.child.PID(), syscall.SIGCONT)
			_ = m.child.Close()
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
	v.TypeMeta, v.Metadata = meta(apiv1.KindVPC, "main")
	v.Spec.CIDRs = []string{"10.0.0.0/16"}
	n.TypeMeta, n.Metadata = meta(apiv1.KindSubnet, haSubnet)
	n.Spec = apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.0.0/16"}
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
	haHost       = "ha-h0"
	haSubnet     = "a"
)

// endpointOp creates an endpoint of worker w or deletes one of its own;
// the outcome is not modelled, only the addresses of those left are
// checked at the end.
func endpointOp(ctx context.Context, api *client.Client, w int, rng *rand.Rand, own *[]string, seq *int) error {
	if len(*own) > 0 && rng.IntN(2) == 0 {
		i := rng.IntN(len(*own))
		name := (*own)[i]
		_, err := api.Delete(ctx, apiv1.KindEndpoint, haTenantName, name)
		if err == nil || apiv1.ReasonOf(err) == apiv1.ReasonNotFound {
			*own = slices.Delete(*own, i, i+1)
		}
		return err
	}
	*seq++
	name := fmt.Sprintf("ep-%d-%d", w, *seq)
	ep := &apiv1.Endpoint{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{Name: name, Tenant: haTenantName}, Spec: apiv1.EndpointSpec{Subnet: haSubnet, Host: haHost}}
	*own = append(*own, name) // maybe created, even on an error
	_, err := api.Create(ctx, ep)
	return err
}

// duplicateAddresses lists the endpoints and counts the IPs and MACs held
// by more than one.
func duplicateAddresses(ctx context.Context, api *client.Client) (endpoints, dups int, err error) {
	objs, _, err := api.List(ctx, apiv1.KindEndpoint, haTenantName, "")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: ha: list endpoints: %w", err)
	}
	seen := map[string]int{}
	for _, o := range objs {
		ep := o.(*apiv1.Endpoint)
		if ep.Status.IP == "" || ep.Status.MAC == "" {
			return 0, 0, fmt.Errorf("bench: ha: endpoint %s has no address", ep.Metadata.Name)
		}
		seen["ip "+ep.Status.IP]++
		seen["mac "+ep.Status.MAC]++
	}
	for _, n := range seen {
		if n > 1 {
			dups += n - 1
		}
	}
	return len(objs), dups, nil
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
		own []string
		seq int
	)
	for ctx.Err() == nil {
		if rng.IntN(5) == 0 {
			if err := endpointOp(ctx, apis[at], w, rng, &own, &seq); err != nil && apiv1.ReasonOf(err) == "" {
				at = (at + 1) % len(apis)
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
		if err != nil { // a timeout, a killed replica, the end of the run: maybe applied
			at = (at + 1) % len(apis)
			if in.Kind == haGet {
				continue // a failed read tells nothing
			}
			out, ret = haOutput{Unknown: true}, math.MaxInt64
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

// inject runs the faults one after another.
func (r *haRun) inject(ctx context.Context) ([]HAFault, error) {
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	r.logf("churn started: %d workers over %d keys, %d members", r.cfg.Workers, r.cfg.Keys, len(r.members))
	if err := sleep(r.cfg.Settle); err != nil {
		return nil, err
	}
	var faults []HAFault
	for _, kind := range r.cfg.Faults {
		leader, err := r.leader(ctx)
		if err != nil {
			return faults, err
		}
		m := r.members[leader]
		if kind == FaultKillFollower || kind == FaultPauseFollower {
			m = r.members[(leader+1)%len(r.members)]
		}
		f := HAFault{Kind: kind, Member: m.spec.Name, At: time.Since(r.start)}
		pid := m.child.PID()
		switch kind {
		case FaultKillLeader, FaultKillFollower:
			r.logf("%s: SIGKILL %s (pid %d)", kind, m.spec.Name, pid)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return faults, fmt.Errorf("bench: ha: kill %s: %w", m.spec.Name, err)
			}
			_ = m.child.Close() // reaps it; its exit error is the kill
			if err := sleep(r.cfg.Hold); err != nil {
				return faults, err
			}
			r.logf("%s: restart %s", kind, m.spec.Name)
			if err := r.startMember(ctx, m); err != nil {
				return faults, err
			}
		case FaultPauseLeader, FaultPauseFollower:
			r.logf("%s: SIGSTOP %s (pid %d)", kind, m.spec.Name, pid)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				return faults, fmt.Errorf("bench: ha: pause %s: %w", m.spec.Name, err)
			}
			if err := sleep(r.cfg.Hold); err != nil {
				_ = syscall.Kill(pid, syscall.SIGCONT)
				return faults, err
			}
			r.logf("%s: SIGCONT %s", kind, m.spec.Name)
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				return faults, fmt.Errorf("bench: ha: resume %s: %w", m.spec.Name, err)
			}
		}
		f.Healed = time.Since(r.start)
		r.logf("%s: healed", kind)
		faults = append(faults, f)
		if err := sleep(r.cfg.Settle); err != nil {
			return faults, err
		}
	}
	return faults, nil
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
	for k := range r.cfg.Keys {
		in := haInput{Key: k, Kind: haGet}
		call := time.Since(r.start)
		out, err := r.do(ctx, api, in)
		if err != nil {
			return nil, fmt.Errorf("bench: ha: final read of %s: %w", haKey(k), err)
		}
		r.ops = append(r.ops, porcupine.Operation{ClientId: r.cfg.Workers, Input: in, Call: int64(call), Output: out, Return: int64(time.Since(r.start))})
		final[k] = out.Value
	}
	// The gets above brought the replica's cache up to date.
	r.endpoints, r.dups, err = duplicateAddresses(ctx, api)
	return final, err
}

func (r *haRun) report(faults []HAFault, final map[int]int64, duration time.Duration) *HAReport {
	rep := &HAReport{Members: len(r.members), Workers: r.cfg.Workers, Keys: r.cfg.Keys, Duration: duration, Ops: len(r.ops),
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
		faults[i].Unavailable = worstGap(r.acks, faults[i].At, end)
		rep.WorstUnavailable = max(rep.WorstUnavailable, faults[i].Unavailable)
	}
	rep.Faults = faults
	rep.Endpoints, rep.DuplicateAddresses = r.endpoints, r.dups
	rep.LostWrites = lostWrites(r.ops, final)
	rep.Linearizable = string(porcupine.CheckOperationsTimeout(haModel, r.ops, 2*time.Minute))
	return rep
}

// worstGap is the longest time in [from, to] without an acknowledgement
// in acks (sorted).
func worstGap(acks []time.Duration, from, to time.Duration) time.Duration {
	var worst time.Duration
	last := from
	for _, a := range acks {
		if a < from {
			continue
		}
		if a > to {
			break
		}
		worst, last = max(worst, a-last), a
	}
	return max(worst, to-last)
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
