package intent_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/intent"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/apitest"
	"github.com/weftnet/weft/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, apitest.LeakOptions()...) }

// replica is one controller replica's store, registry and intent controller.
type replica struct {
	st  *store.Store
	reg *registry.Registry
	ctl *intent.Controller
}

// world is a real etcd with a tenant, a host, a VPC, a subnet and two
// endpoints (shop-1 app=shop, db-1 app=db), and a replica on it.
type world struct {
	t   *testing.T
	env *etcdtest.Env
	replica
}

func newWorld(t *testing.T) *world {
	env := etcdtest.Start(t)
	w := &world{t: t, env: env, replica: replica{st: env.Store, reg: env.Registry}}
	h1 := etcdtest.Host("h1", "192.0.2.1")
	h1.Spec.Capacity = "1Gbit" // guaranteed minimums are admitted against it
	for _, o := range []apiv1.Object{
		etcdtest.Tenant("acme"), h1, etcdtest.VPC("acme", "main", "10.0.0.0/16"),
		etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("acme", "shop-1", "a", "h1", "app", "shop"), etcdtest.Endpoint("acme", "db-1", "a", "h1", "app", "db"),
	} {
		w.create(t, o)
	}
	w.ctl = startController(t, env.Store, env.Registry)
	return w
}

func startController(t *testing.T, st *store.Store, reg *registry.Registry) *intent.Controller {
	t.Helper()
	c, err := intent.New(intent.Config{Store: st, Writer: reg, RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// addReplica starts a second store, registry and controller on the same
// etcd, with a client of its own.
func (w *world) addReplica() *replica {
	t := w.t
	cli, err := clientv3.New(clientv3.Config{Endpoints: w.env.Client.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	st, err := store.New(store.Config{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := registry.New(registry.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return &replica{st: st, reg: reg, ctl: startController(t, st, reg)}
}

func (w *world) create(t *testing.T, o apiv1.Object) apiv1.Object {
	t.Helper()
	out, err := w.reg.Create(t.Context(), o)
	if err != nil {
		t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
	}
	return out
}

func (w *world) update(t *testing.T, o apiv1.Object) {
	t.Helper()
	if _, err := w.reg.Update(t.Context(), o); err != nil {
		t.Fatalf("update %s: %v", apiv1.RefOf(o), err)
	}
}

func (w *world) delete(t *testing.T, kind, name string) {
	t.Helper()
	if _, err := w.reg.Delete(t.Context(), apiv1.Ref{Kind: kind, Tenant: "acme", Name: name}); err != nil {
		t.Fatalf("delete %s %s: %v", kind, name, err)
	}
}

// get returns a copy of a stored object of acme, or nil.
func get[T apiv1.Object](st *store.Store, kind, name string) T {
	var zero T
	o, ok := st.Get(kind, "acme", name)
	if !ok {
		return zero
	}
	b, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	c, err := apiv1.DecodeInto(b, kind)
	if err != nil {
		panic(err)
	}
	return c.(T)
}

// appIntent returns a new AppIntent acme/name selecting app=shop in VPC
// main.
func appIntent(name string, edit func(s *apiv1.AppIntentSpec)) *apiv1.AppIntent {
	in := &apiv1.AppIntent{TypeMeta: etcdtest.TypeMeta(apiv1.KindAppIntent), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "acme"},
		Spec: apiv1.AppIntentSpec{VPC: "main", Selector: apiv1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}}}}
	if edit != nil {
		edit(&in.Spec)
	}
	return in
}

func talksToDB(s *apiv1.AppIntentSpec) {
	s.TalksTo = []apiv1.IntentDestination{{PolicyPeer: apiv1.PolicyPeer{Selector: appDB}, Ports: []apiv1.PolicyPort{{Port: 5432}}}}
}

func waitFor(t *testing.T, what string, cond func() bool, explain func() string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s; %s", what, explain())
		}
	}
}

// state is what a test checks of an intent: its status, and the owned
// objects that exist, as "kind/name" → spec and owner references.
type state struct {
	Status apiv1.AppIntentStatus
	Owned  map[string]string
}

func stateOf(st *store.Store, name string) state {
	s := state{Owned: map[string]string{}}
	if in := get[*apiv1.AppIntent](st, apiv1.KindAppIntent, name); in != nil {
		s.Status = in.Status
	}
	for _, kind := range []string{apiv1.KindSecurityPolicy, apiv1.KindQoSClass} {
		if o, ok := st.Get(kind, "acme", intent.Name(name)); ok {
			s.Owned[kind] = ownedString(o)
		}
	}
	return s
}

func ownedString(o apiv1.Object) string {
	var spec any
	switch o := o.(type) {
	case *apiv1.SecurityPolicy:
		spec = o.Spec
	case *apiv1.QoSClass:
		spec = o.Spec
	}
	b, err := json.Marshal(map[string]any{"spec": spec, "owners": o.GetObjectMeta().OwnerReferences})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// want is the state an intent in step has: its status names the objects
// Compile makes of it, which exist as compiled, and lists unmet.
func want(st *store.Store, name string, unmet ...string) state {
	in := get[*apiv1.AppIntent](st, apiv1.KindAppIntent, name)
	s := state{Owned: map[string]string{}, Status: apiv1.AppIntentStatus{ObservedGeneration: in.Metadata.Generation, Unmet: unmet}}
	for _, o := range intent.Compile(in) {
		kind := o.GetTypeMeta().Kind
		s.Owned[kind] = ownedString(o)
		s.Status.Objects = append(s.Status.Objects, apiv1.LocalObjectReference{Kind: kind, Name: intent.Name(name)})
	}
	return s
}

// settle waits until intent name is in step on every replica (see want)
// and each replica's controller has nothing left to do.
func (w *world) settle(t *testing.T, name string, replicas []*replica, unmet ...string) {
	t.Helper()
	for _, r := range replicas {
		waitFor(t, "intent "+name+" in step", func() bool {
			return cmp.Equal(want(r.st, name, unmet...), stateOf(r.st, name)) && r.ctl.Idle(r.st.Revision())
		}, func() string { return cmp.Diff(want(r.st, name, unmet...), stateOf(r.st, name)) })
	}
}

// gone waits until the objects of a deleted intent are gone.
func (w *world) gone(t *testing.T, name string, replicas []*replica) {
	t.Helper()
	for _, r := range replicas {
		waitFor(t, "objects of intent "+name+" deleted", func() bool {
			return len(stateOf(r.st, name).Owned) == 0
		}, func() string { return cmp.Diff(state{Owned: map[string]string{}}, stateOf(r.st, name)) })
	}
}

// TestLifecycle: an intent's objects follow every change of the intent,
// are restored after hand edits and deletes, and go with the intent.
func TestLifecycle(t *testing.T) {
	w := newWorld(t)
	one := []*replica{&w.replica}
	in := w.create(t, appIntent("shop", func(s *apiv1.AppIntentSpec) {
		talksToDB(s)
		s.Exposes = []apiv1.IntentExposure{{Ports: []apiv1.PolicyPort{{Port: 443}}}}
		s.Bandwidth = &apiv1.IntentBandwidth{Max: "1Gbit"}
		s.Latency = apiv1.LatencyLow
	})).(*apiv1.AppIntent)
	w.settle(t, "shop", one)
	p := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-shop")
	if got := p.Metadata.OwnerReferences; !cmp.Equal(got, []apiv1.OwnerReference{{Kind: "AppIntent", Name: "shop", UID: in.Metadata.UID}}) {
		t.Errorf("owner references %+v, want the intent's kind, name and uid %s", got, in.Metadata.UID)
	}

	t.Run("intent updated", func(t *testing.T) {
		in := get[*apiv1.AppIntent](w.st, apiv1.KindAppIntent, "shop")
		in.Spec.Bandwidth, in.Spec.Latency = nil, apiv1.LatencyNormal
		in.Spec.TalksTo[0].Ports[0].Port = 5433
		w.update(t, in)
		w.settle(t, "shop", one)
		if s := stateOf(w.st, "shop"); s.Status.ObservedGeneration != 2 || len(s.Owned) != 1 {
			t.Errorf("after the update: %+v, want generation 2 and the policy alone", s)
		}
	})
	t.Run("policy edited by hand", func(t *testing.T) {
		p := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-shop")
		p.Spec.Egress = append(p.Spec.Egress, apiv1.PolicyRule{})
		p.Metadata.Labels = map[string]string{"note": "mine"}
		w.update(t, p)
		w.settle(t, "shop", one)
		if got := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-shop").Metadata.Labels; got["note"] != "mine" {
			t.Errorf("labels %v: the user's labels should stay", got)
		}
	})
	t.Run("owner reference dropped by hand", func(t *testing.T) {
		p := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-shop")
		p.Metadata.OwnerReferences = nil
		w.update(t, p)
		if got := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-shop"); got.Metadata.OwnerReferences != nil {
			t.Fatalf("the registry kept the owner references of an update without them: %+v", got.Metadata.OwnerReferences)
		}
		w.settle(t, "shop", one)
	})
	t.Run("policy deleted by hand", func(t *testing.T) {
		w.delete(t, apiv1.KindSecurityPolicy, "appintent-shop")
		w.settle(t, "shop", one)
	})
	t.Run("intent deleted", func(t *testing.T) {
		w.delete(t, apiv1.KindAppIntent, "shop")
		w.gone(t, "shop", one)
	})
}

// TestAdopt: an object of an intent's generated name that names no owner
// (made by hand) is taken over, not replaced.
func TestAdopt(t *testing.T) {
	w := newWorld(t)
	orphan := w.create(t, &apiv1.SecurityPolicy{TypeMeta: etcdtest.TypeMeta(apiv1.KindSecurityPolicy),
		Metadata: apiv1.ObjectMeta{Name: "appintent-shop", Tenant: "acme"}, Spec: apiv1.SecurityPolicySpec{VPC: "main"}})
	w.create(t, appIntent("shop", talksToDB))
	w.settle(t, "shop", []*replica{&w.replica})
	if got := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-shop"); got.Metadata.UID != orphan.GetObjectMeta().UID {
		t.Errorf("the policy was replaced (uid %s, was %s), not adopted", got.Metadata.UID, orphan.GetObjectMeta().UID)
	}
}

// TestRestartReconcile: what changed while no controller ran is caught up
// when one starts: the objects of an intent deleted meanwhile go, a hand
// edit is undone, an intent created meanwhile gets its objects, one
// deleted and created again keeps them.
func TestRestartReconcile(t *testing.T) {
	w := newWorld(t)
	one := []*replica{&w.replica}
	for _, name := range []string{"gone", "kept", "again"} {
		w.create(t, appIntent(name, talksToDB))
		w.settle(t, name, one)
	}
	if err := w.ctl.Close(); err != nil {
		t.Fatal(err)
	}
	w.delete(t, apiv1.KindAppIntent, "gone")
	p := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-kept")
	p.Spec.Egress = nil
	w.update(t, p)
	w.create(t, appIntent("new", func(s *apiv1.AppIntentSpec) { s.Latency = apiv1.LatencyLow }))
	before := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-again")
	w.delete(t, apiv1.KindAppIntent, "again")
	w.create(t, appIntent("again", talksToDB))
	if s := stateOf(w.st, "gone"); len(s.Owned) != 1 {
		t.Fatalf("with no controller running, the deleted intent's objects are %v, want its policy still", s.Owned)
	}

	w.ctl = startController(t, w.st, w.reg)
	w.gone(t, "gone", one)
	w.settle(t, "kept", one)
	w.settle(t, "new", one)
	// The objects of an intent deleted and created again pass to the new one.
	w.settle(t, "again", one)
	if p := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-again"); p.Metadata.UID != before.Metadata.UID {
		t.Errorf("the policy of the re-created intent was replaced (uid %s, was %s), not passed on", p.Metadata.UID, before.Metadata.UID)
	}
}

// TestTwoReplicas: two replicas reconcile every intent at once; they end
// in step, without writing an owned object twice, and then write nothing
// more.
func TestTwoReplicas(t *testing.T) {
	w := newWorld(t)
	b := w.addReplica()
	both := []*replica{&w.replica, b}
	names := []string{"i0", "i1", "i2", "i3", "i4", "i5"}
	for i, name := range names {
		regs := []*registry.Registry{w.reg, b.reg}
		w.create(t, etcdtest.Endpoint("acme", name+"-1", "a", "h1", "app", name))
		if _, err := regs[i%2].Create(t.Context(), appIntent(name, func(s *apiv1.AppIntentSpec) {
			talksToDB(s)
			s.Bandwidth = &apiv1.IntentBandwidth{Max: "1G"}
			s.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": name}}
		})); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		w.settle(t, name, both)
	}
	for _, name := range names {
		for _, kind := range []string{apiv1.KindSecurityPolicy, apiv1.KindQoSClass} {
			if g := get[apiv1.Object](w.st, kind, intent.Name(name)).GetObjectMeta().Generation; g != 1 {
				t.Errorf("%s %s has generation %d: the replicas wrote it more than once", kind, intent.Name(name), g)
			}
		}
	}

	// Hand edits, an update and a delete, each through the other replica.
	p := get[*apiv1.SecurityPolicy](b.st, apiv1.KindSecurityPolicy, "appintent-i0")
	p.Spec.Egress = nil
	if _, err := b.reg.Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	w.delete(t, apiv1.KindQoSClass, "appintent-i1")
	in := get[*apiv1.AppIntent](b.st, apiv1.KindAppIntent, "i2")
	in.Spec.Bandwidth.Max = "2G"
	if _, err := b.reg.Update(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	if _, err := b.reg.Delete(t.Context(), apiv1.Ref{Kind: apiv1.KindAppIntent, Tenant: "acme", Name: "i3"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"i0", "i1", "i2"} {
		w.settle(t, name, both)
	}
	w.gone(t, "i3", both)

	// Settled means quiet: an unrelated write is the last write.
	rev := func() int64 {
		resp, err := w.env.Client.Get(t.Context(), "quiet")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	quiet := w.create(t, etcdtest.Tenant("quiet"))
	last, err := strconv.ParseInt(quiet.GetObjectMeta().ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range both {
		waitFor(t, "replica idle", func() bool { return r.ctl.Idle(last) }, func() string { return "" })
	}
	if got := rev(); got != last {
		t.Errorf("etcd is at revision %d after the last write at %d: a replica kept writing", got, last)
	}
}

// TestUnmet: the needs an intent's objects cannot meet are in its status,
// and leave it when the cause goes.
func TestUnmet(t *testing.T) {
	w := newWorld(t)
	one := []*replica{&w.replica}

	t.Run("selects nothing", func(t *testing.T) {
		w.create(t, appIntent("nothing", func(s *apiv1.AppIntentSpec) {
			talksToDB(s)
			s.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "none"}}
		}))
		w.settle(t, "nothing", one, "selector: selects no endpoint of VPC main")
		w.create(t, etcdtest.Endpoint("acme", "none-1", "a", "h1", "app", "none"))
		w.settle(t, "nothing", one)
	})

	t.Run("name taken", func(t *testing.T) {
		vpc := get[*apiv1.VPC](w.st, apiv1.KindVPC, "main")
		theirs := &apiv1.SecurityPolicy{TypeMeta: etcdtest.TypeMeta(apiv1.KindSecurityPolicy), Metadata: apiv1.ObjectMeta{
			Name: "appintent-taken", Tenant: "acme", OwnerReferences: []apiv1.OwnerReference{{Kind: "VPC", Name: "main", UID: vpc.Metadata.UID}},
		}, Spec: apiv1.SecurityPolicySpec{VPC: "main"}}
		w.create(t, theirs)
		w.create(t, appIntent("taken", talksToDB))
		unmet := "talksTo: SecurityPolicy appintent-taken is taken: it belongs to VPC main"
		waitFor(t, "taken reported", func() bool {
			s := stateOf(w.st, "taken")
			return s.Status.ObservedGeneration == 1 && cmp.Equal(s.Status.Unmet, []string{unmet}) && s.Status.Objects == nil
		}, func() string { return cmp.Diff([]string{unmet}, stateOf(w.st, "taken").Status.Unmet) })
		if got := get[*apiv1.SecurityPolicy](w.st, apiv1.KindSecurityPolicy, "appintent-taken"); got.Metadata.Generation != 1 {
			t.Errorf("the other owner's policy was written (generation %d)", got.Metadata.Generation)
		}
		w.delete(t, apiv1.KindSecurityPolicy, "appintent-taken")
		w.settle(t, "taken", one)
	})

	t.Run("refused by the registry", func(t *testing.T) {
		long := strings.Repeat("x", 60) // appintent-xxx… is longer than a name may be
		w.create(t, appIntent(long, talksToDB))
		waitFor(t, "refusal reported", func() bool {
			s := stateOf(w.st, long).Status
			return s.ObservedGeneration == 1 && len(s.Unmet) == 1 &&
				strings.HasPrefix(s.Unmet[0], "talksTo: SecurityPolicy appintent-xxx") && strings.Contains(s.Unmet[0], "metadata.name")
		}, func() string { return cmp.Diff(nil, stateOf(w.st, long).Status) })
	})

	t.Run("endpoints with another class", func(t *testing.T) {
		w.create(t, &apiv1.QoSClass{TypeMeta: etcdtest.TypeMeta(apiv1.KindQoSClass), Metadata: apiv1.ObjectMeta{Name: "gold", Tenant: "acme"}})
		own := etcdtest.Endpoint("acme", "vip-1", "a", "h1", "app", "vip")
		own.Spec.QoSClass = "gold"
		w.create(t, own)
		w.create(t, etcdtest.Endpoint("acme", "vip-2", "a", "h1", "app", "vip", "tier", "first"))
		w.create(t, etcdtest.Endpoint("acme", "vip-3", "a", "h1", "app", "vip"))
		w.create(t, appIntent("a-first", func(s *apiv1.AppIntentSpec) {
			s.Latency = apiv1.LatencyLow
			s.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"tier": "first"}}
		}))
		w.create(t, appIntent("vip", func(s *apiv1.AppIntentSpec) {
			s.Bandwidth = &apiv1.IntentBandwidth{Min: "10M"}
			s.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "vip"}}
		}))
		w.settle(t, "vip", one,
			"bandwidth: the intent's class does not apply to endpoints with their own qosClass: vip-1",
			"bandwidth: the class of AppIntent a-first (the first by name that selects them) applies instead to: vip-2")
		w.delete(t, apiv1.KindEndpoint, "vip-1")
		w.delete(t, apiv1.KindEndpoint, "vip-2")
		w.settle(t, "vip", one)
	})

	t.Run("over the host's capacity", func(t *testing.T) {
		w.create(t, etcdtest.Endpoint("acme", "big-1", "a", "h1", "app", "big"))
		w.create(t, appIntent("big", func(s *apiv1.AppIntentSpec) {
			s.Bandwidth = &apiv1.IntentBandwidth{Min: "2Gbit"}
			s.Selector = apiv1.LabelSelector{MatchLabels: map[string]string{"app": "big"}}
		}))
		waitFor(t, "admission's refusal reported", func() bool {
			s := stateOf(w.st, "big").Status
			return s.ObservedGeneration == 1 && len(s.Objects) == 0 && len(s.Unmet) == 1 &&
				strings.HasPrefix(s.Unmet[0], "bandwidth: QoSClass appintent-big: ") &&
				strings.Contains(s.Unmet[0], "spec.minRate: host h1 has capacity 1Gbit with ") &&
				strings.HasSuffix(s.Unmet[0], "committed: 2Gbit more guaranteed minimum does not fit")
		}, func() string { return fmt.Sprintf("%+v", stateOf(w.st, "big").Status) })
		in := get[*apiv1.AppIntent](w.st, apiv1.KindAppIntent, "big")
		in.Spec.Bandwidth.Min = "100M"
		w.update(t, in)
		w.settle(t, "big", one)
	})

	t.Run("class still named by an endpoint", func(t *testing.T) {
		w.create(t, appIntent("pinned", func(s *apiv1.AppIntentSpec) { s.Latency = apiv1.LatencyLow }))
		w.settle(t, "pinned", one)
		pin := etcdtest.Endpoint("acme", "pin-1", "a", "h1")
		pin.Spec.QoSClass = "appintent-pinned"
		w.create(t, pin)
		in := get[*apiv1.AppIntent](w.st, apiv1.KindAppIntent, "pinned")
		in.Spec.Latency = apiv1.LatencyNormal
		talksToDB(&in.Spec)
		w.update(t, in)
		waitFor(t, "class kept and reported", func() bool {
			s := stateOf(w.st, "pinned").Status
			return s.ObservedGeneration == 2 && len(s.Unmet) == 1 &&
				strings.HasPrefix(s.Unmet[0], "bandwidth, latency: QoSClass appintent-pinned is no longer needed but cannot be deleted")
		}, func() string { return cmp.Diff(nil, stateOf(w.st, "pinned").Status) })
		w.delete(t, apiv1.KindEndpoint, "pin-1")
		w.settle(t, "pinned", one)
	})
}
