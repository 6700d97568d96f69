package compile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// world creates two tenants whose VPCs overlap (10.0.0.0/16 each), four
// hosts, endpoints on three of them, policies and a QoS class:
//
//	h1: acme/web-1 (main/a, app=web, qos gold), acme/db-1 (main/b, app=db)
//	h2: acme/web-2 (main/a, app=web), globex/web-1 (main/a, app=web)
//	h3: globex/x (main/a), acme/o-1 (other/c)
//	h4: nothing
//
// Policies: acme/allow-web (main, app=web), acme/all (main, all),
// acme/all-other (other, all), globex/db (main, app=db). acme/other is
// default deny with a QoS aggregate; h1 and h3 have capacities.
func world(e *env) {
	h1, h3 := host("h1", "192.0.2.1"), host("h3", "192.0.2.3")
	h1.Spec.Capacity, h3.Spec.Capacity = "25Gbit", "10Gbit"
	other := vpc("acme", "other", "10.1.0.0/16")
	other.Spec.DefaultPolicy = apiv1.DefaultPolicyDeny
	other.Spec.QoS = &apiv1.VPCQoS{MaxRate: "1Gbit", MinRate: "100Mbit"}
	e.create(tenant("acme"), tenant("globex"),
		h1, host("h2", "192.0.2.2"), h3, host("h4", "192.0.2.4"),
		vpc("acme", "main", "10.0.0.0/16"), other, vpc("globex", "main", "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"), subnet("acme", "b", "main", "10.0.2.0/24"),
		subnet("acme", "c", "other", "10.1.0.0/24"), subnet("globex", "a", "main", "10.0.1.0/24"),
		qos("acme", "gold", "1Gbit", "2Gbit", 46),
		policy("acme", "main", "allow-web", map[string]string{"app": "web"}),
		policy("acme", "main", "all", nil),
		policy("acme", "other", "all-other", nil),
		policy("globex", "main", "db", map[string]string{"app": "db"}),
	)
	web1 := endpoint("acme", "web-1", "a", "h1", "app", "web")
	web1.Spec.QoSClass = "gold"
	e.create(web1, endpoint("acme", "db-1", "b", "h1", "app", "db"),
		endpoint("acme", "web-2", "a", "h2", "app", "web"), endpoint("globex", "web-1", "a", "h2", "app", "web"),
		endpoint("globex", "x", "a", "h3"), endpoint("acme", "o-1", "c", "h3"))
}

// wantEP is the view of a stored endpoint; the allocated fields (IP, MAC,
// UID, VNI, identity, generation) are read from the store, the rest is
// spelled out.
func wantEP(e *env, tenant, name, vpcName, sn, cidr, gw string, labels map[string]string, qos string) *view.Endpoint {
	ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, tenant, name)
	if ep.Status.Identity == 0 {
		e.t.Errorf("endpoint %s/%s has no identity", tenant, name)
	}
	v := get[*apiv1.VPC](e, apiv1.KindVPC, tenant, vpcName)
	return &view.Endpoint{Tenant: tenant, Name: name, UID: ep.Metadata.UID, VPC: vpcName, VNI: v.Status.VNI,
		Subnet: sn, CIDR: cidr, Gateway: gw, IP: ep.Status.IP, MAC: ep.Status.MAC, QoSClass: qos, Labels: labels,
		Identity: ep.Status.Identity, Generation: ep.Metadata.Generation}
}

// wantHost is the view of a stored host; the host ID is allocated.
func wantHost(e *env, name, ip string, capBps uint64) *view.Host {
	h := get[*apiv1.Host](e, apiv1.KindHost, "", name)
	if h.Status.HostID == 0 {
		e.t.Errorf("host %s has no host ID", name)
	}
	return &view.Host{Name: name, HostID: h.Status.HostID, UnderlayIP: ip, CapacityBps: capBps}
}

func wantVPC(e *env, tenant, name string, cidr string, subnets ...view.Subnet) *view.VPC {
	v := get[*apiv1.VPC](e, apiv1.KindVPC, tenant, name)
	return &view.VPC{Tenant: tenant, Name: name, VNI: v.Status.VNI, CIDRs: []string{cidr}, Subnets: subnets}
}

// wantPolicy is the view of a policy made by policy().
func wantPolicy(tenant, vpc, name string, applies ...string) *view.Policy {
	return &view.Policy{Tenant: tenant, Name: name, VPC: vpc, IngressIsolated: true,
		Ingress: []view.Rule{{Name: tenant + "/" + name + " ingress[0]", AllPeers: true, Ports: []view.Port{tcp80}}},
		Applies: applies}
}

var tcp80 = view.Port{Protocol: 6, First: 80, Last: 80, ICMPType: -1, ICMPCode: -1}

func byKey(t *testing.T, vs ...any) map[wire.ResourceKey]any {
	t.Helper()
	out := map[wire.ResourceKey]any{}
	for _, v := range vs {
		k, err := view.Key(v)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

func TestViewContents(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world})
	web := map[string]string{"app": "web"}
	snA := view.Subnet{Name: "a", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1"}
	snB := view.Subnet{Name: "b", CIDR: "10.0.2.0/24", Gateway: "10.0.2.1"}
	acmeMain := wantVPC(e, "acme", "main", "10.0.0.0/16", snA, snB)
	globexMain := wantVPC(e, "globex", "main", "10.0.0.0/16", snA)
	tests := []struct {
		host string
		want []any
	}{
		{"h1", []any{
			wantHost(e, "h1", "192.0.2.1", 25e9),
			wantEP(e, "acme", "web-1", "main", "a", "10.0.1.0/24", "10.0.1.1", web, "gold"),
			wantEP(e, "acme", "db-1", "main", "b", "10.0.2.0/24", "10.0.2.1", map[string]string{"app": "db"}, ""),
			acmeMain,
			wantPolicy("acme", "main", "allow-web", "acme/web-1"),
			wantPolicy("acme", "main", "all", "acme/db-1", "acme/web-1"),
			&view.QoS{Tenant: "acme", Name: "gold", MinRateBps: 1e9, MaxRateBps: 2e9, Priority: 4, DSCP: 46},
		}},
		{"h2", []any{
			wantHost(e, "h2", "192.0.2.2", 0),
			wantEP(e, "acme", "web-2", "main", "a", "10.0.1.0/24", "10.0.1.1", web, ""),
			wantEP(e, "globex", "web-1", "main", "a", "10.0.1.0/24", "10.0.1.1", web, ""),
			acmeMain, globexMain,
			wantPolicy("acme", "main", "allow-web", "acme/web-2"),
			wantPolicy("acme", "main", "all", "acme/web-2"),
		}},
		{"h3", []any{
			wantHost(e, "h3", "192.0.2.3", 10e9),
			wantEP(e, "globex", "x", "main", "a", "10.0.1.0/24", "10.0.1.1", nil, ""),
			wantEP(e, "acme", "o-1", "other", "c", "10.1.0.0/24", "10.1.0.1", nil, ""),
			globexMain,
			func() *view.VPC {
				v := wantVPC(e, "acme", "other", "10.1.0.0/16", view.Subnet{Name: "c", CIDR: "10.1.0.0/24", Gateway: "10.1.0.1"})
				v.DefaultDeny, v.MaxRateBps, v.MinRateBps = true, 1e9, 1e8
				return v
			}(),
			wantPolicy("acme", "other", "all-other", "acme/o-1"),
		}},
		{"h4", []any{wantHost(e, "h4", "192.0.2.4", 0)}},
		{"no-such-host", nil},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			if diff := cmp.Diff(byKey(t, tt.want...), e.snapshot(tt.host)); diff != "" {
				t.Errorf("view of %s (-want +got):\n%s", tt.host, diff)
			}
		})
	}
}

// TestIncremental runs a sequence of writes and checks, for each, which
// hosts were recomputed and which views got a new version.
func TestIncremental(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world})
	hosts := []string{"h1", "h2", "h3", "h4"}
	steps := []step{
		{"endpoint label on h1", func() {
			ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "db-1")
			ep.Metadata.Labels["tier"] = "1"
			e.update(ep)
		}, []string{"h1"}, []string{"h1"}},
		{"endpoint created on h3", func() { e.create(endpoint("acme", "web-3", "a", "h3", "app", "web")) },
			[]string{"h3"}, []string{"h3"}},
		{"migration h2 to h4", func() {
			ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-2")
			ep.Spec.Host = "h4"
			e.update(ep)
		}, []string{"h2", "h4"}, []string{"h2", "h4"}},
		{"subnet added to acme/main", func() { e.create(subnet("acme", "d", "main", "10.0.3.0/24")) },
			// acme/main endpoints: web-1, db-1 (h1), web-3 (h3), web-2 (now h4).
			[]string{"h1", "h3", "h4"}, []string{"h1", "h3", "h4"}},
		{"vpc globex/main grows", func() {
			v := get[*apiv1.VPC](e, apiv1.KindVPC, "globex", "main")
			v.Spec.CIDRs = append(v.Spec.CIDRs, "10.9.0.0/16")
			e.update(v)
		}, []string{"h2", "h3"}, []string{"h2", "h3"}},
		{"globex policy selecting nothing: no recompute", func() {
			e.create(policy("globex", "main", "none", map[string]string{"app": "nope"}))
		}, nil, nil},
		{"globex policy selecting web: the hosts of what it selects", func() {
			e.create(policy("globex", "main", "web", map[string]string{"app": "web"}))
		}, []string{"h2"}, []string{"h2"}},
		{"qos gold changes", func() {
			q := get[*apiv1.QoSClass](e, apiv1.KindQoSClass, "acme", "gold")
			q.Spec.DSCP = 10
			e.update(q)
		}, []string{"h1"}, []string{"h1"}},
		{"host label (not in the view): no recompute", func() {
			h := get[*apiv1.Host](e, apiv1.KindHost, "", "h4")
			h.Metadata.Labels = map[string]string{"rack": "r1"}
			e.update(h)
		}, nil, nil},
		{"tenant change touches nothing", func() {
			tn := get[*apiv1.Tenant](e, apiv1.KindTenant, "", "acme")
			tn.Spec.Description = "x"
			e.update(tn)
		}, nil, nil},
		{"endpoint status only (phase, message): no recompute", func() {
			ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-3")
			ep.Status.Phase, ep.Status.Message = apiv1.PhaseFailed, "veth: no such device"
			e.put(ep)
		}, nil, nil},
		{"endpoint deleted on h1", func() { e.delete(apiv1.KindEndpoint, "acme", "db-1") },
			[]string{"h1"}, []string{"h1"}},
	}
	e.steps(t, hosts, steps)
}

// applyDelta applies d to a view held as key → data.
func applyDelta(t *testing.T, held map[wire.ResourceKey]string, d wire.Delta) map[wire.ResourceKey]string {
	t.Helper()
	out := map[wire.ResourceKey]string{}
	if !d.Snapshot {
		for k, v := range held {
			out[k] = v
		}
	}
	for _, k := range d.Deletes {
		delete(out, k)
	}
	for _, r := range d.Upserts {
		data := r.Bytes()
		out[r.Key] = string(data)
		// The delta vouches that its data is compact JSON: the encoder
		// copies it unchecked.
		var c bytes.Buffer
		if err := json.Compact(&c, data); !d.CompactData || err != nil || !bytes.Equal(c.Bytes(), data) {
			t.Errorf("%s: data %q is not compact JSON (%v) or the delta does not say so (CompactData %v)", r.Key, data, err, d.CompactData)
		}
	}
	return out
}

func keysOf(d wire.Delta) (upserts, deletes []string) {
	for _, r := range d.Upserts {
		upserts = append(upserts, r.Key.String())
	}
	for _, k := range d.Deletes {
		deletes = append(deletes, k.String())
	}
	return upserts, deletes
}

func TestDeltaSinceVersion(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world})
	type held struct {
		ver  uint64
		view map[wire.ResourceKey]string
	}
	hold := func() held {
		d, err := e.c.Delta("h1", 0)
		if err != nil {
			t.Fatal(err)
		}
		return held{d.ToVersion, applyDelta(t, nil, d)}
	}
	var history []held
	history = append(history, hold())

	ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-1")
	ep.Metadata.Labels["v"] = "2"
	e.update(ep)
	history = append(history, hold())
	e.delete(apiv1.KindEndpoint, "acme", "db-1")
	history = append(history, hold())
	e.create(endpoint("acme", "new", "a", "h1", "app", "web"))
	e.create(policy("acme", "main", "new-only", map[string]string{"app": "nope"})) // selects nothing: no change
	history = append(history, hold())

	t.Run("exact changes since the first version", func(t *testing.T) {
		d, err := e.c.Delta("h1", history[0].ver)
		if err != nil {
			t.Fatal(err)
		}
		up, del := keysOf(d)
		wantUp := []string{"endpoint/acme/new", "endpoint/acme/web-1", "policy/acme/all", "policy/acme/allow-web"}
		if diff := cmp.Diff(wantUp, up); diff != "" {
			t.Errorf("upserts (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"endpoint/acme/db-1"}, del); diff != "" {
			t.Errorf("deletes (-want +got):\n%s", diff)
		}
		if d.Snapshot || d.FromVersion != history[0].ver || d.ToVersion != e.c.Version("h1") {
			t.Errorf("delta %d→%d snapshot=%v, want %d→%d", d.FromVersion, d.ToVersion, d.Snapshot, history[0].ver, e.c.Version("h1"))
		}
	})
	t.Run("exact changes since the delete", func(t *testing.T) {
		d, err := e.c.Delta("h1", history[2].ver)
		if err != nil {
			t.Fatal(err)
		}
		up, del := keysOf(d)
		if diff := cmp.Diff([]string{"endpoint/acme/new", "policy/acme/all", "policy/acme/allow-web"}, up); diff != "" {
			t.Errorf("upserts (-want +got):\n%s", diff)
		}
		if len(del) != 0 {
			t.Errorf("deletes %v, want none", del)
		}
	})
	now := hold()
	for i, h := range history {
		t.Run(fmt.Sprintf("held version #%d converges", i), func(t *testing.T) {
			d, err := e.c.Delta("h1", h.ver)
			if err != nil {
				t.Fatal(err)
			}
			if d.Snapshot {
				t.Fatalf("version %d (#%d): snapshot, want a delta", h.ver, i)
			}
			if diff := cmp.Diff(now.view, applyDelta(t, h.view, d)); diff != "" {
				t.Errorf("version %d (#%d) + delta (-want +got):\n%s", h.ver, i, diff)
			}
		})
	}
	t.Run("current version gives an empty delta", func(t *testing.T) {
		d, err := e.c.Delta("h1", now.ver)
		if err != nil {
			t.Fatal(err)
		}
		if d.Snapshot || d.FromVersion != now.ver || d.ToVersion != now.ver || len(d.Upserts)+len(d.Deletes) != 0 {
			t.Errorf("got %+v, want an empty delta at %d", d, now.ver)
		}
	})
}

func TestSnapshotCases(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world, compile: func(c *Config) { c.TombstoneHorizon = 2 }})
	v0 := e.c.Version("h1")
	for _, n := range []string{"a1", "a2", "a3"} {
		e.create(endpoint("acme", n, "a", "h1"))
	}
	vAdded := e.c.Version("h1")
	e.delete(apiv1.KindEndpoint, "acme", "a1")
	vDel1 := e.c.Version("h1")
	e.delete(apiv1.KindEndpoint, "acme", "a2")
	e.delete(apiv1.KindEndpoint, "acme", "a3") // the a1 tombstone is now beyond the horizon of 2
	cur := e.c.Version("h1")
	otherEpoch := makeVersion(EpochOf(cur)%MaxEpoch+1, cur&counterMask)
	tests := []struct {
		name         string
		from         uint64
		wantSnapshot bool
	}{
		{"zero", 0, true},
		{"before the pruned tombstone", v0, true},
		{"just before the pruned tombstone", vAdded, true},
		{"at the pruned tombstone", vDel1, false},
		{"current", cur, false},
		{"future version", cur + 1, true},
		{"far future", cur + 1<<40, true},
		{"previous incarnation", otherEpoch, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.c.Delta("h1", tt.from)
			if err != nil {
				t.Fatal(err)
			}
			if d.Snapshot != tt.wantSnapshot {
				t.Fatalf("Delta(h1, %d).Snapshot = %v, want %v", tt.from, d.Snapshot, tt.wantSnapshot)
			}
			if d.ToVersion != cur {
				t.Errorf("ToVersion %d, want %d", d.ToVersion, cur)
			}
			if d.Snapshot && (d.FromVersion != 0 || len(d.Deletes) != 0 || len(d.Upserts) != len(e.snapshot("h1"))) {
				t.Errorf("snapshot from %d with %d upserts and %d deletes", d.FromVersion, len(d.Upserts), len(d.Deletes))
			}
		})
	}
	t.Run("delta at the pruned tombstone lists the later deletes", func(t *testing.T) {
		d, _ := e.c.Delta("h1", vDel1)
		_, del := keysOf(d)
		if diff := cmp.Diff([]string{"endpoint/acme/a2", "endpoint/acme/a3"}, del); diff != "" {
			t.Errorf("deletes (-want +got):\n%s", diff)
		}
	})
}

func TestMigrationMovesEndpoint(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world})
	v2, v3 := e.c.Version("h2"), e.c.Version("h3")
	ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-2")
	ep.Spec.Host = "h3"
	e.update(ep)
	key := wire.ResourceKey{Type: view.TypeEndpoint, ID: "acme/web-2"}

	d2, _ := e.c.Delta("h2", v2)
	if !slices.Contains(d2.Deletes, key) {
		t.Errorf("h2 delta deletes %v, want %v among them", d2.Deletes, key)
	}
	// acme/main had only web-2 on h2, and acme's policies select nothing left there.
	_, del := keysOf(d2)
	if diff := cmp.Diff([]string{"endpoint/acme/web-2", "policy/acme/all", "policy/acme/allow-web", "vpc/acme/main"}, del); diff != "" {
		t.Errorf("h2 deletes (-want +got):\n%s", diff)
	}
	d3, _ := e.c.Delta("h3", v3)
	up, _ := keysOf(d3)
	if diff := cmp.Diff([]string{"endpoint/acme/web-2", "policy/acme/all", "policy/acme/allow-web", "vpc/acme/main"}, up); diff != "" {
		t.Errorf("h3 upserts (-want +got):\n%s", diff)
	}
	if _, ok := e.snapshot("h2")[key]; ok {
		t.Error("h2 still holds the endpoint")
	}
	if _, ok := e.snapshot("h3")[key]; !ok {
		t.Error("h3 does not hold the endpoint")
	}
}

func TestSubscribe(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world})
	n1, cancel1 := e.c.Subscribe("h1")
	defer cancel1()
	n3, cancel3 := e.c.Subscribe("h3")
	defer cancel3()
	nNew, cancelNew := e.c.Subscribe("h9") // no such host yet
	defer cancelNew()
	drain := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	drain(n1)
	drain(n3)

	e.create(endpoint("acme", "z", "a", "h1"))
	if !drain(n1) {
		t.Error("h1 not poked by a change of its view")
	}
	if drain(n3) {
		t.Error("h3 poked by a change of h1's view")
	}
	// Many changes, one pending poke: the channel never blocks the compiler.
	for _, n := range []string{"z1", "z2", "z3"} {
		e.create(endpoint("acme", n, "a", "h1"))
	}
	if !drain(n1) || drain(n1) {
		t.Error("want exactly one pending poke after several changes")
	}
	before := e.c.Version("h9")
	e.create(host("h9", "192.0.2.9"))
	if !drain(nNew) {
		t.Error("a subscriber of a host that did not exist is not poked when it appears")
	}
	if e.c.Version("h9") <= before {
		t.Errorf("h9 version %d, want above %d", e.c.Version("h9"), before)
	}
}

// TestResumesAfterWatchDropped holds the compiler while more than its
// backlog happens, so that the store drops its watch; in the compaction
// case acme/web-2 is then deleted from h2 and acme/new created there,
// unseen, and the history to resume from compacted.
func TestResumesAfterWatchDropped(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact bool
	}{
		{"dropped", false},
		{"dropped and compacted", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block := make(chan struct{})
			var armed atomic.Bool
			blocked := false
			metrics := prometheus.NewRegistry()
			e := newEnv(t, envOpts{
				beforeStart: world,
				store: func(c *store.Config) {
					c.RingSize, c.SubscriberBacklog = 4, 4
					c.Registerer = metrics
				},
				// Hold the compiler in its first recompute after Start so
				// that the store drops its watch while events pile up.
				onRecompute: func(string) {
					if armed.Load() && !blocked {
						blocked = true
						<-block
					}
				},
			})
			armed.Store(true)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var last apiv1.Object
			create := func(ep *apiv1.Endpoint) {
				t.Helper()
				o, err := e.reg.Create(ctx, ep)
				if err != nil {
					t.Fatal(err)
				}
				last = o
			}
			for i := range 20 {
				create(endpoint("acme", fmt.Sprintf("burst-%d", i), "a", "h2"))
			}
			want := 22 // web-2, globex/web-1 and the burst
			if tc.compact {
				if err := e.st.WaitForRevision(ctx, e.st.Revision()); err != nil {
					t.Fatal(err)
				}
				if _, err := e.reg.Delete(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web-2"}); err != nil {
					t.Fatal(err)
				}
				create(endpoint("acme", "new", "a", "h2"))
				for i := range 5 {
					create(endpoint("acme", fmt.Sprintf("h4-%d", i), "a", "h4"))
				}
				if _, err := e.cli.Compact(ctx, e.st.Revision()); err != nil {
					t.Fatal(err)
				}
			}
			close(block)
			rev, err := strconv.ParseInt(last.GetObjectMeta().ResourceVersion, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.c.WaitForRevision(ctx, rev); err != nil {
				t.Fatal(err)
			}
			if got := gathered(t, metrics, "weft_store_watchers_dropped_total"); got < 1 {
				t.Fatalf("store dropped %v watchers: the test did not exercise a dropped watch", got)
			}
			if tc.compact {
				if got := gathered(t, metrics, "weft_store_follow_resets_total", "follower", "compile"); got < 1 {
					t.Fatalf("%v follower resets: the test did not exercise a compacted history", got)
				}
			}
			var got []string
			for k, v := range e.snapshot("h2") {
				if k.Type == view.TypeEndpoint {
					got = append(got, v.(*view.Endpoint).Name)
				}
			}
			if len(got) != want || slices.Contains(got, "web-2") != !tc.compact || slices.Contains(got, "new") != tc.compact {
				t.Errorf("h2 holds endpoints %v: want %d, web-2 only if not deleted, new only if created", got, want)
			}
		})
	}
}

// gathered returns the value of a counter or gauge in reg, summed over
// the series whose labels include labels (name, value pairs).
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}) {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// hashOf returns wire.ViewHash of a view held as key → data.
func hashOf(view map[wire.ResourceKey]string) []byte {
	var rs []wire.Resource
	for k, d := range view {
		rs = append(rs, wire.Resource{Key: k, Data: []byte(d)})
	}
	return wire.ViewHash(rs)
}

// startReplica starts a second compiler on e's store with the same epoch,
// as another controller replica following the same etcd.
func startReplica(t *testing.T, e *env, cfg Config) *Compiler {
	t.Helper()
	cfg.Store, cfg.Epoch = e.st, uint32(e.c.Epoch())
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestResumeOnAnotherReplica: an agent that moves from one replica to
// another (same etcd, same epoch) resumes from the version it holds.
func TestResumeOnAnotherReplica(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world})
	a := e.c
	d, err := a.Delta("h1", 0)
	if err != nil {
		t.Fatal(err)
	}
	held, ver := applyDelta(t, nil, d), d.ToVersion
	if !bytes.Equal(d.ViewHash, hashOf(held)) {
		t.Fatalf("snapshot ViewHash %x, want the hash of what it holds %x", d.ViewHash, hashOf(held))
	}

	// B compiles h1 now, long after A made the version the agent holds:
	// no history back to it, but the same content.
	b := startReplica(t, e, Config{})
	d, err = b.Resume(context.Background(), "h1", ver, hashOf(held))
	if err != nil {
		t.Fatal(err)
	}
	if d.Snapshot || d.FromVersion != ver || len(d.Upserts)+len(d.Deletes) != 0 {
		t.Fatalf("unchanged view on another replica: %d→%d snapshot=%v, %d upserts, want an empty delta from %d",
			d.FromVersion, d.ToVersion, d.Snapshot, len(d.Upserts), ver)
	}

	// The view changes while B follows it: B sends exactly the changes,
	// although A made the version the agent holds.
	ep := get[*apiv1.Endpoint](e, apiv1.KindEndpoint, "acme", "web-1")
	ep.Metadata.Labels["v"] = "2"
	e.update(ep)
	e.delete(apiv1.KindEndpoint, "acme", "db-1")
	if err := b.WaitForRevision(context.Background(), e.st.Revision()); err != nil {
		t.Fatal(err)
	}
	if va, vb := a.Version("h1"), b.Version("h1"); va != vb {
		t.Errorf("replicas number the same view differently: %d and %d", va, vb)
	}
	d, err = b.Resume(context.Background(), "h1", ver, hashOf(held))
	if err != nil {
		t.Fatal(err)
	}
	up, del := keysOf(d)
	if d.Snapshot || !slices.Contains(up, "endpoint/acme/web-1") || !slices.Equal(del, []string{"endpoint/acme/db-1"}) {
		t.Fatalf("changed view on another replica: snapshot=%v upserts %v deletes %v, want a delta with web-1 and the delete of db-1", d.Snapshot, up, del)
	}
	now := applyDelta(t, held, d)
	snap, err := b.Delta("h1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(applyDelta(t, nil, snap), now); diff != "" {
		t.Errorf("held + delta from B (-B's view +agent's):\n%s", diff)
	}
	if !bytes.Equal(d.ViewHash, hashOf(now)) {
		t.Errorf("delta ViewHash %x, want the hash of the view it leads to %x", d.ViewHash, hashOf(now))
	}

	// A third replica compiles h1 only after the change: it has no history
	// back to the agent's version and the content differs: a snapshot.
	c := startReplica(t, e, Config{})
	d, err = c.Resume(context.Background(), "h1", ver, hashOf(held))
	if err != nil {
		t.Fatal(err)
	}
	if !d.Snapshot {
		t.Errorf("stale view, no history: got a delta %d→%d, want a snapshot", d.FromVersion, d.ToVersion)
	}
}

// TestViewsLinger: a replica holds the views its agents use; one nobody
// used for Linger is dropped with its index entries, and compiled again on
// the next use.
func TestViewsLinger(t *testing.T) {
	e := newEnv(t, envOpts{beforeStart: world, compile: func(c *Config) { c.Linger = 200 * time.Millisecond }})
	_, cancel := e.c.Subscribe("h1")
	d, err := e.c.Delta("h2", 0)
	if err != nil {
		t.Fatal(err)
	}
	held := applyDelta(t, nil, d)
	deadline := time.Now().Add(10 * time.Second)
	for e.c.viewCount() > 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	e.c.mu.RLock()
	_, h1 := e.c.hosts["h1"]
	_, h2 := e.c.hosts["h2"]
	e.c.mu.RUnlock()
	if !h1 || h2 {
		t.Fatalf("views held: h1 %v h2 %v, want h1 (subscribed) only", h1, h2)
	}
	e.takeRecomputes()
	e.create(endpoint("globex", "late", "a", "h2"))
	if got := e.takeRecomputes(); got["h2"] != 0 {
		t.Errorf("h2 recomputed %d times after its view was dropped, want 0", got["h2"])
	}
	// Next use compiles it again; its history starts there, so the old
	// version with a stale hash gets a snapshot with the new endpoint.
	d, err = e.c.Resume(context.Background(), "h2", d.ToVersion, hashOf(held))
	if err != nil {
		t.Fatal(err)
	}
	up, _ := keysOf(d)
	if !d.Snapshot || !slices.Contains(up, "endpoint/globex/late") {
		t.Errorf("after the drop: snapshot=%v upserts %v, want a snapshot with endpoint/globex/late", d.Snapshot, up)
	}
	cancel()
	has := func(h string) bool {
		e.c.mu.RLock()
		defer e.c.mu.RUnlock()
		_, ok := e.c.hosts[h]
		return ok
	}
	for deadline = time.Now().Add(10 * time.Second); has("h1") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if has("h1") {
		t.Error("h1's view kept after its subscriber left and Linger passed")
	}
}
