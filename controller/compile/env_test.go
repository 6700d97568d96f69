package compile

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's embedded server and client keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// env is embedded etcd, a store, a registry and a compiler.
type env struct {
	t   *testing.T
	cli *clientv3.Client
	st  *store.Store
	reg *registry.Registry
	c   *Compiler

	mu         sync.Mutex
	recomputes map[string]int
}

type envOpts struct {
	compile func(*Config)
	store   func(*store.Config)
	// beforeStart runs with the world created but the compiler not started.
	beforeStart func(*env)
	// onRecompute runs after each recompute, on the goroutine that made it.
	onRecompute func(host string)
}

// newEnv starts everything but the compiler, runs setup, then starts the
// compiler (so that setup objects are compiled by Start).
func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcd := etcdtest.Start(t, etcdtest.Options{Store: o.store})
	st, reg := etcd.Store, etcd.Registry
	e := &env{t: t, cli: etcd.Client, st: st, reg: reg, recomputes: map[string]int{}}
	if o.beforeStart != nil {
		o.beforeStart(e)
	}
	ccfg := Config{Store: st}
	if o.compile != nil {
		o.compile(&ccfg)
	}
	c, err := New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	c.onRecompute = func(h string) {
		e.mu.Lock()
		e.recomputes[h]++
		e.mu.Unlock()
		if o.onRecompute != nil {
			o.onRecompute(h)
		}
	}
	e.c = c
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Compile the views of the hosts that exist, as their agents
	// connecting would; recomputes count from here.
	for _, o := range st.List(apiv1.KindHost, "") {
		if c.Version(o.GetObjectMeta().Name) == 0 {
			t.Fatal("compiler closed")
		}
	}
	e.takeRecomputes()
	return e
}

// takeRecomputes returns and resets the recompute counts.
func (e *env) takeRecomputes() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := maps.Clone(e.recomputes)
	clear(e.recomputes)
	return out
}

// do runs one write and, if the compiler runs, waits until it is compiled.
// Writes are sequential, so the store's revision after the write (the
// registry returns once the cache has applied it) is the write's own.
// (Delete returns the deleted object with its old resourceVersion.)
func (e *env) do(write func(ctx context.Context) (apiv1.Object, error)) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := write(ctx); err != nil {
		e.t.Fatal(err)
	}
	if e.c != nil {
		if err := e.c.WaitForRevision(ctx, e.st.Revision()); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) create(objs ...apiv1.Object) {
	e.t.Helper()
	for _, o := range objs {
		e.do(func(ctx context.Context) (apiv1.Object, error) { return e.reg.Create(ctx, o) })
	}
}

func (e *env) update(o apiv1.Object) {
	e.t.Helper()
	e.do(func(ctx context.Context) (apiv1.Object, error) { return e.reg.Update(ctx, o) })
}

// put stores o as it is, status included, as the registry's status
// writes do.
func (e *env) put(o apiv1.Object) {
	e.t.Helper()
	e.do(func(ctx context.Context) (apiv1.Object, error) {
		b, err := store.EncodeObject(o)
		if err != nil {
			return nil, err
		}
		res, err := e.st.Commit(ctx, store.Txn{Ops: []clientv3.Op{clientv3.OpPut(e.st.ObjectKey(apiv1.RefOf(o)), string(b))}})
		if err != nil {
			return nil, err
		}
		return o, e.st.WaitForRevision(ctx, res.Revision) // in the cache, as a registry write is
	})
}

func (e *env) delete(kind, tenant, name string) {
	e.t.Helper()
	e.do(func(ctx context.Context) (apiv1.Object, error) {
		return e.reg.Delete(ctx, apiv1.Ref{Kind: kind, Tenant: tenant, Name: name})
	})
}

// get returns a copy of a stored object, for updates.
func get[T apiv1.Object](e *env, kind, tenant, name string) T {
	e.t.Helper()
	o, ok := e.st.Get(kind, tenant, name)
	if !ok {
		e.t.Fatalf("%s %s/%s not found", kind, tenant, name)
	}
	b, err := store.EncodeObject(o)
	if err != nil {
		e.t.Fatal(err)
	}
	cp, err := apiv1.DecodeInto(b, kind)
	if err != nil {
		e.t.Fatal(err)
	}
	return cp.(T)
}

// snapshot returns host's whole view, decoded, by key.
func (e *env) snapshot(host string) map[wire.ResourceKey]any {
	e.t.Helper()
	d, err := e.c.Delta(host, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	if !d.Snapshot {
		e.t.Fatalf("Delta(%s, 0) is not a snapshot", host)
	}
	return decodeAll(e.t, d.Upserts)
}

func decodeAll(t *testing.T, rs []wire.Resource) map[wire.ResourceKey]any {
	t.Helper()
	out := map[wire.ResourceKey]any{}
	for _, r := range rs {
		v, err := view.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		out[r.Key] = v
	}
	return out
}

// step is one write of a dependency test: the hosts it must recompute,
// once each, and those whose views it must change (sorted).
type step struct {
	name                string
	do                  func()
	recomputed, changed []string
}

// steps runs each step as a subtest and checks which of hosts it
// recomputed and changed (a view never goes back in version).
func (e *env) steps(t *testing.T, hosts []string, steps []step) {
	versions := func() map[string]uint64 {
		m := map[string]uint64{}
		for _, h := range hosts {
			m[h] = e.c.Version(h)
		}
		return m
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			e.takeRecomputes()
			before := versions()
			s.do()
			want := map[string]int{}
			for _, h := range s.recomputed {
				want[h] = 1
			}
			if diff := cmp.Diff(want, e.takeRecomputes()); diff != "" {
				t.Errorf("recomputed hosts (-want +got):\n%s", diff)
			}
			after := versions()
			var changed []string
			for _, h := range hosts {
				if after[h] != before[h] {
					changed = append(changed, h)
				}
				if after[h] < before[h] {
					t.Errorf("%s went back from version %d to %d", h, before[h], after[h])
				}
			}
			slices.Sort(changed)
			if diff := cmp.Diff(s.changed, changed); diff != "" {
				t.Errorf("changed views (-want +got):\n%s", diff)
			}
		})
	}
}

// ---- objects ----

// Object builders shared with the other controller packages' tests.
var (
	tm       = etcdtest.TypeMeta
	tenant   = etcdtest.Tenant
	host     = etcdtest.Host
	vpc      = etcdtest.VPC
	subnet   = etcdtest.Subnet
	endpoint = etcdtest.Endpoint
)

// policy returns a policy of VPC t/vpc selecting match, with one ingress
// rule: TCP port 80 from anyone.
func policy(t, vpc, name string, match map[string]string) *apiv1.SecurityPolicy {
	return &apiv1.SecurityPolicy{TypeMeta: tm(apiv1.KindSecurityPolicy), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t},
		Spec: apiv1.SecurityPolicySpec{
			VPC:      vpc,
			Selector: apiv1.LabelSelector{MatchLabels: match},
			Ingress:  []apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 80}}}},
		}}
}

func qos(t, name string, minRate, maxRate apiv1.Bandwidth, dscp int) *apiv1.QoSClass {
	return &apiv1.QoSClass{TypeMeta: tm(apiv1.KindQoSClass), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t},
		Spec: apiv1.QoSClassSpec{MinRate: minRate, MaxRate: maxRate, DSCP: dscp}}
}
