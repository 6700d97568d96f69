package sim

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
)

// loadConfig configures a bulk load.
type loadConfig struct {
	Dir      string
	Layout   Layout
	Writers  int
	Progress func(format string, a ...any)
	Logger   *slog.Logger
}

// loadResult is what a bulk load made.
type loadResult struct {
	// Secret is the cluster key (in ClusterKeyFile): the sim derives the
	// hosts' keys from it (HostKey) and stores them as enrolment would.
	Secret         []byte
	ClusterKeyFile string
	Duration       time.Duration
	Objects        int
	// Identities is the number of security identities the endpoints got
	// (counted only with policies).
	Identities int
}

// load starts the embedded etcd on cfg.Dir, creates every object of the
// layout through the registry with cfg.Writers concurrent writers (the
// store groups their transactions), makes the cluster key and stores every
// host's key (as enrolment would), and stops etcd again, so that the
// controller replicas start on the loaded state.
func load(ctx context.Context, cfg loadConfig) (res loadResult, err error) {
	start := time.Now()
	emb, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: cfg.Dir, Logger: cfg.Logger})
	if err != nil {
		return res, fmt.Errorf("sim load: start etcd in %s: %w", cfg.Dir, err)
	}
	defer func() { err = errors.Join(err, emb.Close()) }()
	cli, err := emb.Client()
	if err != nil {
		return res, fmt.Errorf("sim load: etcd client: %w", err)
	}
	defer func() { err = errors.Join(err, cli.Close()) }()
	st, err := store.New(store.Config{Client: cli, Logger: cfg.Logger})
	if err != nil {
		return res, fmt.Errorf("sim load: %w", err)
	}
	if err := st.Start(ctx); err != nil {
		return res, fmt.Errorf("sim load: start store: %w", err)
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	reg, err := registry.New(registry.Config{Store: st, Logger: cfg.Logger})
	if err != nil {
		return res, fmt.Errorf("sim load: %w", err)
	}
	if err := reg.Start(ctx); err != nil {
		return res, fmt.Errorf("sim load: start registry: %w", err)
	}
	defer func() { err = errors.Join(err, reg.Close()) }()
	res.ClusterKeyFile = filepath.Join(cfg.Dir, "cluster.key")
	if res.Secret, _, err = secrets.LoadOrCreateKeyFile(res.ClusterKeyFile); err != nil {
		return res, fmt.Errorf("sim load: %w", err)
	}
	sealer, err := secrets.NewSealer(res.Secret)
	if err != nil {
		return res, fmt.Errorf("sim load: %w", err)
	}

	l := cfg.Layout
	tm := func(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }
	type phase struct {
		name string
		n    int
		obj  func(i int) apiv1.Object
	}
	phases := []phase{
		{"tenants", l.Tenants(), func(i int) apiv1.Object {
			return &apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: TenantName(i)}}
		}},
		{"vpcs", l.VPCs, func(k int) apiv1.Object {
			t, name, cidr := l.VPC(k)
			return &apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t}, Spec: apiv1.VPCSpec{CIDRs: []string{cidr}}}
		}},
		{"subnets", l.VPCs, func(k int) apiv1.Object {
			t, name, cidr := l.VPC(k)
			return &apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: SubnetName(k), Tenant: t},
				Spec: apiv1.SubnetSpec{VPC: name, CIDR: cidr}}
		}},
		{"hosts", l.Hosts, func(i int) apiv1.Object {
			return &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: HostName(i)},
				Spec: apiv1.HostSpec{UnderlayIP: HostUnderlay(i).String()}}
		}},
		{"endpoints", l.Endpoints, func(e int) apiv1.Object {
			k := l.EndpointVPC(e)
			t, _, _ := l.VPC(k)
			ep := &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: EndpointName(e), Tenant: t},
				Spec: apiv1.EndpointSpec{Subnet: SubnetName(k), Host: HostName(l.EndpointHost(e))}}
			if a := l.EndpointApp(e); a >= 0 {
				ep.Metadata.Labels = map[string]string{"app": AppName(a)}
			}
			return ep
		}},
	}
	if l.Policies > 0 {
		phases = append(phases, phase{"policies", l.Policies, func(p int) apiv1.Object { return policy(l, p) }})
	}
	for _, ph := range phases {
		t0 := time.Now()
		if err := createAll(ctx, reg, ph.n, cfg.Writers, ph.obj, func(done int) {
			cfg.Progress("setup: %s %d/%d (%.0f/s)", ph.name, done, ph.n, float64(done)/time.Since(t0).Seconds())
		}); err != nil {
			return res, fmt.Errorf("sim load %s: %w", ph.name, err)
		}
		res.Objects += ph.n
		cfg.Progress("setup: %d %s in %s", ph.n, ph.name, time.Since(t0).Round(time.Millisecond))
		if ph.name == "hosts" {
			if err := putHostKeys(ctx, st, sealer, res.Secret, cfg.Writers); err != nil {
				return res, err
			}
		}
	}
	if l.Policies > 0 {
		res.Identities = countIdentities(st)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// policy returns policy p of l: in its VPC, for the endpoints of its app,
// it allows TCP 8080 from the next app and ICMP from the whole VPC in, and
// TCP 5432 and UDP 53 to the app after that out.
func policy(l Layout, p int) *apiv1.SecurityPolicy {
	t, vpc, _ := l.VPC(l.PolicyVPC(p))
	a, apps := l.PolicyApp(p), l.Apps()
	app := func(j int) *apiv1.LabelSelector {
		return &apiv1.LabelSelector{MatchLabels: map[string]string{"app": AppName(j % apps)}}
	}
	return &apiv1.SecurityPolicy{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindSecurityPolicy},
		Metadata: apiv1.ObjectMeta{Name: PolicyName(p), Tenant: t},
		Spec: apiv1.SecurityPolicySpec{VPC: vpc, Selector: *app(a),
			Ingress: []apiv1.PolicyRule{
				{Peers: []apiv1.PolicyPeer{{Selector: app(a + 1)}}, Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 8080}}},
				{Peers: []apiv1.PolicyPeer{{Selector: &apiv1.LabelSelector{}}}, Ports: []apiv1.PolicyPort{{Protocol: "ICMP"}}},
			},
			Egress: []apiv1.PolicyRule{
				{Peers: []apiv1.PolicyPeer{{Selector: app(a + 2)}}, Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 5432}, {Protocol: "UDP", Port: 53}}},
			}}}
}

// countIdentities returns the number of distinct security identities
// (per subnet, so per VPC) of the endpoints in st.
func countIdentities(st *store.Store) int {
	type id struct {
		subnet string
		id     uint32
	}
	seen := map[id]bool{}
	for _, o := range st.List(apiv1.KindEndpoint, "") {
		if ep, ok := o.(*apiv1.Endpoint); ok && ep.Status.Identity != 0 {
			seen[id{ep.Metadata.Tenant + "/" + ep.Spec.Subnet, ep.Status.Identity}] = true
		}
	}
	return len(seen)
}

// createAll creates objects 0..n-1 with writers concurrent writers; an
// object that already exists counts as created. tick gets the count once a
// second.
func createAll(ctx context.Context, reg *registry.Registry, n, writers int, obj func(int) apiv1.Object, tick func(int)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range min(writers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				o := obj(i)
				if _, err := reg.Create(ctx, o); err != nil {
					var se *apiv1.StatusError
					if !errors.As(err, &se) || se.Reason != apiv1.ReasonAlreadyExists {
						cancel(fmt.Errorf("create %s: %w", apiv1.RefOf(o), err))
						return
					}
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

// discardProgress is a progress function that prints nothing.
func discardProgress(string, ...any) {}

// progressTo returns a progress function printing lines to w (nil: none).
func progressTo(w io.Writer) func(string, ...any) {
	if w == nil {
		return discardProgress
	}
	var mu sync.Mutex
	return func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, format+"\n", a...)
	}
}

// HostKey is the key of a simulated host: the sim derives it from the
// cluster key, so that its agent processes need no copy of 100,000 keys.
func HostKey(clusterKey []byte, host string) []byte {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("weft sim host key\x00" + host))
	return m.Sum(nil)
}

// putHostKeys stores the key of every Host in st, sealed as enrolment
// stores it, in transactions of up to 128 keys.
func putHostKeys(ctx context.Context, st *store.Store, sealer *secrets.Sealer, clusterKey []byte, writers int) error {
	hosts := st.List(apiv1.KindHost, "")
	const per = 128
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make([]error, max(writers, 1))
	for w := range errs {
		wg.Go(func() {
			for errs[w] == nil {
				i := int(next.Add(per)) - per
				if i >= len(hosts) {
					return
				}
				var txn store.Txn
				for _, o := range hosts[i:min(i+per, len(hosts))] {
					m := o.GetObjectMeta()
					txn.Ops = append(txn.Ops, hostkey.PutOp(st, sealer, m.UID, HostKey(clusterKey, m.Name)))
				}
				if _, err := st.Commit(ctx, txn); err != nil {
					errs[w] = fmt.Errorf("sim load: host keys: %w", err)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// LoadConfig configures Load.
type LoadConfig struct {
	// Dir is the embedded etcd's data dir to load into (required); the
	// cluster key is written next to it, as Dir/cluster.key.
	Dir    string
	Layout Layout
	// Writers is the number of concurrent writers (default 64).
	Writers int
	// Progress receives a line per phase and one a second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

// LoadResult is what Load made.
type LoadResult struct {
	// ClusterKeyFile is the cluster key the hosts' keys are sealed with.
	ClusterKeyFile string
	Objects        int
	Duration       time.Duration
}

// Load bulk-loads the state of cfg.Layout into an embedded etcd in
// cfg.Dir through the registry, as a simulation's setup does, and stops
// etcd again: a controller started with Dir as its data dir (or a client
// of an etcd serving Dir) finds every object.
func Load(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if cfg.Dir == "" {
		return LoadResult{}, errors.New("sim load: a data dir is required")
	}
	if err := cfg.Layout.Validate(); err != nil {
		return LoadResult{}, fmt.Errorf("sim load: %w", err)
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	res, err := load(ctx, loadConfig{Dir: cfg.Dir, Layout: cfg.Layout, Writers: cfg.Writers, Progress: progressTo(cfg.Progress), Logger: cfg.Logger})
	return LoadResult{ClusterKeyFile: res.ClusterKeyFile, Objects: res.Objects, Duration: res.Duration}, err
}
