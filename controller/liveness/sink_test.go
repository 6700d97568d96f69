package liveness

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
)

// newRegistry starts embedded etcd, a store and a registry in a temp dir.
func newRegistry(t *testing.T) (*registry.Registry, *store.Store) {
	t.Helper()
	env := etcdtest.Start(t)
	return env.Registry, env.Store
}

func tm(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }

func mustCreate(t *testing.T, r *registry.Registry, objs ...apiv1.Object) {
	t.Helper()
	for _, o := range objs {
		if _, err := r.Create(context.Background(), o); err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
	}
}

// setStatus reads an object from the store, lets f change its status and
// writes it back.
func setStatus[T apiv1.Object](t *testing.T, r *registry.Registry, st *store.Store, ref apiv1.Ref, f func(T)) {
	t.Helper()
	o, ok := st.Get(ref.Kind, ref.Tenant, ref.Name)
	if !ok {
		t.Fatalf("%s not found", ref)
	}
	cp, err := apiv1.DecodeInto(mustJSON(t, o), ref.Kind)
	if err != nil {
		t.Fatal(err)
	}
	f(cp.(T))
	if _, err := r.UpdateStatus(context.Background(), cp); err != nil {
		t.Fatalf("update status of %s: %v", ref, err)
	}
}

// endpointPhases returns "name phase message" for every endpoint of tenant acme.
func endpointPhases(st *store.Store) map[string]string {
	out := map[string]string{}
	for _, o := range st.List(apiv1.KindEndpoint, "acme") {
		ep := o.(*apiv1.Endpoint)
		out[ep.Metadata.Name] = ep.Status.Phase + " " + ep.Status.Message
	}
	return out
}

func hostStatus(t *testing.T, st *store.Store, name string) apiv1.HostStatus {
	t.Helper()
	o, ok := st.Get(apiv1.KindHost, "", name)
	if !ok {
		t.Fatalf("host %s not found", name)
	}
	return o.(*apiv1.Host).Status
}

// TestRegistrySink drives a table on a fake clock whose sink is a
// RegistrySink on a real registry: host h1 dies and returns, h2 stays.
func TestRegistrySink(t *testing.T) {
	r, st := newRegistry(t)
	ctx := context.Background()
	mustCreate(t, r,
		&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "acme"}},
		&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: "h1"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.1"}},
		&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: "h2"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.2"}},
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "main", Tenant: "acme"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "a", Tenant: "acme"}, Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24"}},
	)
	// The registry allocates host IDs; a registry that does not gets them set by hand.
	ids := map[string]uint32{}
	for i, h := range []string{"h1", "h2"} {
		if id := hostStatus(t, st, h).HostID; id != 0 {
			ids[h] = id
			continue
		}
		setStatus(t, r, st, apiv1.Ref{Kind: apiv1.KindHost, Name: h}, func(o *apiv1.Host) { o.Status.HostID = uint32(i + 1) })
		ids[h] = uint32(i + 1)
	}
	h1, h2 := ids["h1"], ids["h2"]
	unknown := max(h1, h2) + 1 // no Host has it
	// On h1: ready-1, ready-2 (Ready), pending (Pending), failed (Failed),
	// lost-other (Lost for another reason). On h2: other.
	phases := map[string]string{"ready-1": apiv1.PhaseReady, "ready-2": apiv1.PhaseReady, "pending": apiv1.PhasePending,
		"failed": apiv1.PhaseFailed, "lost-other": apiv1.PhaseLost, "other": apiv1.PhaseReady}
	for name, phase := range phases {
		host := "h1"
		if name == "other" {
			host = "h2"
		}
		mustCreate(t, r, &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "acme"},
			Spec: apiv1.EndpointSpec{Subnet: "a", Host: host}})
		setStatus(t, r, st, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name}, func(o *apiv1.Endpoint) {
			o.Status.Phase = phase
			if phase == apiv1.PhaseLost {
				o.Status.Message = "evicted"
			}
		})
	}

	sink, err := NewRegistrySink(RegistrySinkConfig{Store: st, Registry: r, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	var now int64 = int64(time.Second)
	tab, err := New(Config{Capacity: int(unknown) + 1, Sink: sink, Now: func() int64 { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	sweep := sweeper(ctx, t, tab, &now)
	sweep(time.Second, h1, h2, unknown) // a host ID without a Host is skipped
	for _, h := range []string{"h1", "h2"} {
		if got := hostStatus(t, st, h); got.Liveness != apiv1.LivenessAlive || got.LastSeen == "" {
			t.Errorf("%s status after heartbeat: %+v", h, got)
		}
	}
	sweep(2*time.Second, h2)
	sweep(3*time.Second, h2)
	sweep(4*time.Second, h2) // h1 silent for 3 s: Dead
	if got := hostStatus(t, st, "h1"); got.Liveness != apiv1.LivenessDead || got.HostID != h1 ||
		got.LastSeen != tab.Time(int64(time.Second)).UTC().Format(time.RFC3339Nano) {
		t.Errorf("h1 status after its death: %+v", got)
	} else if c := apiv1.FindCondition(got.Conditions, apiv1.ConditionAlive); c == nil || c.Status != apiv1.ConditionFalse {
		t.Errorf("h1 Alive condition after its death: %+v", c)
	}
	dead := DeadMessage("h1")
	want := map[string]string{
		"ready-1": "Lost " + dead, "ready-2": "Lost " + dead, "pending": "Lost " + dead,
		"failed": "Failed ", "lost-other": "Lost evicted", "other": "Ready ",
	}
	if diff := cmp.Diff(want, endpointPhases(st)); diff != "" {
		t.Errorf("endpoints after h1 died (-want +got):\n%s", diff)
	}

	sweep(5*time.Second, h1, h2) // h1 is back
	if got := hostStatus(t, st, "h1"); got.Liveness != apiv1.LivenessAlive {
		t.Errorf("h1 liveness after return: %q", got.Liveness)
	}
	want = map[string]string{
		"ready-1": "Ready ", "ready-2": "Ready ", "pending": "Ready ",
		"failed": "Failed ", "lost-other": "Lost evicted", "other": "Ready ",
	}
	if diff := cmp.Diff(want, endpointPhases(st)); diff != "" {
		t.Errorf("endpoints after h1 returned (-want +got):\n%s", diff)
	}
	if got := hostStatus(t, st, "h2"); got.Liveness != apiv1.LivenessAlive {
		t.Errorf("h2 liveness: %q", got.Liveness)
	}
}

func TestRegistrySinkConfig(t *testing.T) {
	if _, err := NewRegistrySink(RegistrySinkConfig{}); err == nil {
		t.Error("no store and registry: no error")
	}
}

func mustJSON(t *testing.T, o apiv1.Object) []byte {
	t.Helper()
	b, err := store.EncodeObject(o)
	if err != nil {
		t.Fatal(fmt.Errorf("encode: %w", err))
	}
	return b
}

// TestRegistrySinkSpeaksFor: with several replicas, a replica that stops
// hearing from a host another replica serves neither reports it Suspect
// nor Dead, and forgets it; it still reports the hosts it speaks for, and
// any host's heartbeats (Alive).
func TestRegistrySinkSpeaksFor(t *testing.T) {
	r, st := newRegistry(t)
	ctx := context.Background()
	mustCreate(t, r,
		&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: "mine"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.1"}},
		&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: "theirs"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.2"}},
	)
	mine, theirs := hostStatus(t, st, "mine").HostID, hostStatus(t, st, "theirs").HostID
	var forgotten []uint32
	var tab *Table
	sink, err := NewRegistrySink(RegistrySinkConfig{Store: st, Registry: r,
		SpeaksFor: func(h *apiv1.Host) bool { return h.Metadata.Name == "mine" },
		Forget: func(id uint32) {
			forgotten = append(forgotten, id)
			tab.Forget(id)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var now int64 = int64(time.Second)
	tab, err = New(Config{Capacity: int(max(mine, theirs)) + 1, Sink: sink, Now: func() int64 { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	sweep := sweeper(ctx, t, tab, &now)
	sweep(time.Second, mine, theirs)
	if got := hostStatus(t, st, "theirs").Liveness; got != apiv1.LivenessAlive {
		t.Errorf("theirs after heartbeats here: %q, want Alive", got)
	}
	for s := 2; s <= 5; s++ {
		sweep(time.Duration(s) * time.Second) // both silent
	}
	if got := hostStatus(t, st, "mine").Liveness; got != apiv1.LivenessDead {
		t.Errorf("mine after 4 s of silence: %q, want Dead", got)
	}
	if got := hostStatus(t, st, "theirs").Liveness; got != apiv1.LivenessAlive {
		t.Errorf("theirs after 4 s of silence here: %q, want Alive (another replica speaks for it)", got)
	}
	if len(forgotten) != 1 || forgotten[0] != theirs {
		t.Errorf("forgotten %v, want [%d]", forgotten, theirs)
	}
	if s := tab.State(theirs); s != Unknown {
		t.Errorf("theirs in the table: %v, want Unknown (forgotten)", s)
	}
}

// TestRegistrySinkWriteFollowsOwnership: a host that moves to another
// replica between the sink's decision to report it Dead and the write is
// not written Dead: the write asks again, on the stored host.
func TestRegistrySinkWriteFollowsOwnership(t *testing.T) {
	r, st := newRegistry(t)
	ctx := context.Background()
	mustCreate(t, r, &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: "h"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.1"}})
	ref := apiv1.Ref{Kind: apiv1.KindHost, Name: "h"}
	setStatus(t, r, st, ref, func(h *apiv1.Host) { h.Status.Replica, h.Status.Liveness = "self", apiv1.LivenessAlive })
	id := hostStatus(t, st, "h").HostID
	moved := false
	sink, err := NewRegistrySink(RegistrySinkConfig{Store: st, Registry: r,
		SpeaksFor: func(h *apiv1.Host) bool {
			if !moved { // the host's agent moves to another replica right after the decision
				moved = true
				setStatus(t, r, st, ref, func(h *apiv1.Host) { h.Status.Replica = "other" })
				if err := st.WaitForRevision(ctx, st.Revision()); err != nil {
					t.Fatal(err)
				}
			}
			return h.Status.Replica == "self"
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Transitions(ctx, []Transition{{HostID: id, From: Alive, To: Dead, At: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if got := hostStatus(t, st, "h"); got.Liveness != apiv1.LivenessAlive || got.Replica != "other" {
		t.Errorf("host after the move: liveness %q replica %q, want Alive on other", got.Liveness, got.Replica)
	}
}

// TestRegistrySinkDisruption, on a real registry with the default guard:
// a single dead host among 60 has its endpoint marked Lost; 36 more going
// silent at once (62%) are written Dead (never Suspect) but none of their
// endpoints is marked; when 31 are back and the disruption is over, the
// endpoints of the 6 still dead are marked, and an endpoint Lost for
// another reason keeps its message.
func TestRegistrySinkDisruption(t *testing.T) {
	r, st := newRegistry(t)
	ctx := context.Background()
	mustCreate(t, r,
		&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "acme"}},
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "main", Tenant: "acme"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "a", Tenant: "acme"}, Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.0.0/20"}},
	)
	const n = 60
	name := func(i int) string { return fmt.Sprintf("n%02d", i) }
	ids := make([]uint32, n)
	for i := range n {
		mustCreate(t, r,
			&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: name(i)}, Spec: apiv1.HostSpec{UnderlayIP: fmt.Sprintf("192.0.2.%d", i+1)}},
			&apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name(i), Tenant: "acme"}, Spec: apiv1.EndpointSpec{Subnet: "a", Host: name(i)}},
		)
		setStatus(t, r, st, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name(i)}, func(o *apiv1.Endpoint) { o.Status.Phase = apiv1.PhaseReady })
		if ids[i] = hostStatus(t, st, name(i)).HostID; ids[i] == 0 {
			t.Fatalf("host %s has no host ID", name(i))
		}
	}
	// n31 also has an endpoint Lost for another reason.
	mustCreate(t, r, &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: "evicted", Tenant: "acme"}, Spec: apiv1.EndpointSpec{Subnet: "a", Host: name(31)}})
	setStatus(t, r, st, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "evicted"}, func(o *apiv1.Endpoint) {
		o.Status.Phase, o.Status.Message = apiv1.PhaseLost, "evicted"
	})

	prom := prometheus.NewRegistry()
	sink, err := NewRegistrySink(RegistrySinkConfig{Store: st, Registry: r, Registerer: prom})
	if err != nil {
		t.Fatal(err)
	}
	var now time.Duration
	tab, err := New(Config{Capacity: int(slices.Max(ids)) + 1, Sink: sink, Now: func() int64 { return int64(now) }})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	// run sweeps every 250 ms until until, the hosts but silent[from, to]
	// heartbeating, and flushes every 500 ms.
	run := func(until time.Duration, from, to int) {
		t.Helper()
		for now < until {
			now += 250 * time.Millisecond
			for i, id := range ids {
				if i < from || i > to {
					tab.Observe(id, int64(now), 1, 0)
				}
			}
			tab.Sweep(int64(now))
			if now%(500*time.Millisecond) == 0 {
				if err := tab.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// check compares the stored liveness and endpoint phase of every host,
	// as runs "n00-n05 Dead Lost", and the disrupted gauge.
	check := func(step string, wantDisrupted float64, want ...string) {
		t.Helper()
		var got []string
		for i := range n {
			hs := hostStatus(t, st, name(i))
			o, _ := st.Get(apiv1.KindEndpoint, "acme", name(i))
			ep := o.(*apiv1.Endpoint)
			phase := ep.Status.Phase
			if phase == apiv1.PhaseLost && ep.Status.Message != DeadMessage(name(i)) {
				phase += "(" + ep.Status.Message + ")"
			}
			line := hs.Liveness + " " + phase
			if k := len(got); k > 0 && strings.HasSuffix(got[k-1], " "+line) {
				first, _, _ := strings.Cut(got[k-1], " ")
				first, _, _ = strings.Cut(first, "-")
				got[k-1] = first + "-" + name(i) + " " + line
				continue
			}
			got = append(got, name(i)+" "+line)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: hosts and endpoints (-want +got):\n%s", step, diff)
		}
		if got := gathered(t, prom, "weft_liveness_disrupted"); got != wantDisrupted {
			t.Errorf("%s: weft_liveness_disrupted %v, want %v", step, got, wantDisrupted)
		}
	}
	run(2*time.Second, -1, -1)
	check("all alive", 0, "n00-n59 Alive Ready")
	run(6*time.Second, 0, 0)
	check("n00 dead alone", 0, "n00 Dead Lost", "n01-n59 Alive Ready")
	run(8*time.Second, 0, 36) // Suspect at 7.75 s, flushed at 8 s
	check("37 suspect", 1, "n00 Dead Lost", "n01-n59 Alive Ready")
	run(10*time.Second, 0, 36) // Dead at 8.75 s
	check("37 dead", 1, "n00 Dead Lost", "n01-n36 Dead Ready", "n37-n59 Alive Ready")
	// n00-n30 back (n00's endpoint, marked before, returns to Ready at
	// once); 6/60 not alive, so the disruption ends after the 10 s hold.
	run(12*time.Second, 31, 36)
	check("31 back", 1, "n00-n30 Alive Ready", "n31-n36 Dead Ready", "n37-n59 Alive Ready")
	run(21*time.Second, 31, 36)
	check("disruption over", 0, "n00-n30 Alive Ready", "n31-n36 Dead Lost", "n37-n59 Alive Ready")
	o, _ := st.Get(apiv1.KindEndpoint, "acme", "evicted")
	if ep := o.(*apiv1.Endpoint); ep.Status.Phase != apiv1.PhaseLost || ep.Status.Message != "evicted" {
		t.Errorf("endpoint lost for another reason: %s %q, want Lost \"evicted\"", ep.Status.Phase, ep.Status.Message)
	}
	if got := gathered(t, prom, "weft_liveness_endpoint_markings_deferred_total"); got != 36 {
		t.Errorf("weft_liveness_endpoint_markings_deferred_total %v, want 36", got)
	}
}

// gathered returns the sum of a metric family's values in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// sweeper returns a step of a test on tab with a fake clock *now: at time
// at, the hosts beats heartbeat, then tab sweeps and flushes to its sink.
func sweeper(ctx context.Context, t *testing.T, tab *Table, now *int64) func(at time.Duration, beats ...uint32) {
	return func(at time.Duration, beats ...uint32) {
		t.Helper()
		*now = int64(at)
		for _, id := range beats {
			tab.Observe(id, *now, 1, 0)
		}
		tab.Sweep(*now)
		if err := tab.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
