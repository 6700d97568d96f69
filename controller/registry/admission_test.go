package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

func qosClass(t, name string, minRate apiv1.Bandwidth) *apiv1.QoSClass {
	return &apiv1.QoSClass{TypeMeta: tm(apiv1.KindQoSClass), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t},
		Spec: apiv1.QoSClassSpec{MinRate: minRate}}
}

func hostCap(name, ip string, capacity apiv1.Bandwidth) *apiv1.Host {
	h := host(name, ip)
	h.Spec.Capacity = capacity
	return h
}

func withClass(ep *apiv1.Endpoint, class string) *apiv1.Endpoint {
	ep.Spec.QoSClass = class
	return ep
}

// TestAdmissionRace: 50 concurrent creates of endpoints with guaranteed
// minimums on one host, through one or two replicas, that together would
// oversubscribe it: exactly as many as fit succeed, the others get 422
// naming the host, its capacity and what it has committed.
func TestAdmissionRace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		vpcMin   apiv1.Bandwidth // per-host VPC minimum
		want     int
	}{
		{"one replica", 1, "", 10},
		{"two replicas", 2, "", 10},
		{"two replicas, VPC minimum", 2, "300Mbit", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emb := startEtcd(t)
			var rs []*Registry
			for range tc.replicas {
				rs = append(rs, startRegistry(t, startStore(t, emb)))
			}
			v := vpc("acme", "main", "10.0.0.0/16")
			if tc.vpcMin != "" {
				v.Spec.QoS = &apiv1.VPCQoS{MinRate: tc.vpcMin}
			}
			mustCreate(t, rs[0], tenant("acme"), hostCap("h1", "192.0.2.1", "1Gbit"), v,
				subnet("acme", "a", "main", "10.0.1.0/24"), qosClass("acme", "gold", "100Mbit"))
			ctx := context.Background()
			for _, r := range rs[1:] {
				if err := r.st.WaitForRevision(ctx, rs[0].st.Revision()); err != nil {
					t.Fatal(err)
				}
			}
			const n = 50
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					_, errs[i] = rs[i%len(rs)].Create(ctx, withClass(endpoint("acme", fmt.Sprint("e", i), "a", "h1"), "gold"))
				})
			}
			wg.Wait()
			ok := 0
			for i, err := range errs {
				switch se, _ := err.(*apiv1.StatusError); {
				case err == nil:
					ok++
				case se == nil || se.Code != 422 || len(se.Causes) != 1 ||
					!strings.Contains(se.Causes[0].Message, "host h1 has capacity 1Gbit with 1Gbit committed"):
					t.Errorf("create e%d: %v, want 422 naming host h1, capacity 1Gbit and 1Gbit committed", i, err)
				}
			}
			if ok != tc.want {
				t.Errorf("%d creates succeeded, want %d", ok, tc.want)
			}
			if c := rs[0].committed("h1", overrides{}); c != 1e9 {
				t.Errorf("h1 has %s committed, want 1Gbit", formatRate(c))
			}
		})
	}
}

// TestAdmissionCompare: two replicas decide at once that their creates
// fit on a host with room for one: etcd commits one, and the other,
// decided again, is refused.
func TestAdmissionCompare(t *testing.T) {
	emb := startEtcd(t)
	rs := []*Registry{startRegistry(t, startStore(t, emb)), startRegistry(t, startStore(t, emb))}
	mustCreate(t, rs[0], tenant("acme"), hostCap("h1", "192.0.2.1", "150Mbit"), vpc("acme", "main", "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"), qosClass("acme", "gold", "100Mbit"),
		endpoint("acme", "bare", "a", "h1")) // allocates the identity that both creates reuse
	ctx := context.Background()
	if err := rs[1].st.WaitForRevision(ctx, rs[0].st.Revision()); err != nil {
		t.Fatal(err)
	}
	var both sync.WaitGroup // both replicas have decided once
	both.Add(2)
	for _, r := range rs {
		var once sync.Once
		r.hooks.planned = func() { once.Do(func() { both.Done(); both.Wait() }) }
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range rs {
		ep := withClass(endpoint("acme", fmt.Sprint("e", i), "a", "h1"), "gold")
		ep.Spec.IP = fmt.Sprint("10.0.1.", 10+i) // no address race: only admission decides between them
		wg.Go(func() { _, errs[i] = r.Create(ctx, ep) })
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || apiv1.ReasonOf(errors.Join(errs...)) != apiv1.ReasonInvalid {
		t.Errorf("creates: %v, want one success and one Invalid", errs)
	}
}

// TestAdmission: every write that raises what a host has committed is
// checked against its capacity, the others are not.
func TestAdmission(t *testing.T) {
	r, _ := newRegistry(t)
	mustCreate(t, r, tenant("acme"), hostCap("h1", "192.0.2.1", "1Gbit"), hostCap("h2", "192.0.2.2", "300Mbit"),
		host("h3", "192.0.2.3"), vpc("acme", "main", "10.0.0.0/16"), subnet("acme", "a", "main", "10.0.1.0/24"),
		qosClass("acme", "gold", "200Mbit"), qosClass("acme", "plain", ""))
	ctx := context.Background()
	create := func(name, h, class string) func() (apiv1.Object, error) {
		return func() (apiv1.Object, error) {
			return r.Create(ctx, withClass(endpoint("acme", name, "a", h), class))
		}
	}
	update := func(o apiv1.Object) func() (apiv1.Object, error) {
		return func() (apiv1.Object, error) { return r.Update(ctx, o) }
	}
	vpcMin := func(minRate apiv1.Bandwidth) apiv1.Object {
		v := vpc("acme", "main", "10.0.0.0/16")
		v.Spec.QoS = &apiv1.VPCQoS{MinRate: minRate}
		return v
	}
	for _, st := range []struct {
		name    string
		do      func() (apiv1.Object, error)
		wantErr string // "field: message", "" for success
	}{
		{name: "host without capacity", do: create("x", "h3", "gold"),
			wantErr: "spec.host: host h3 has no capacity (spec.capacity) with 0 committed: it admits no guaranteed minimum (200Mbit)"},
		{name: "fits", do: create("e1", "h2", "gold")},
		{name: "does not fit", do: create("e2", "h2", "gold"),
			wantErr: "spec.host: host h2 has capacity 300Mbit with 200Mbit committed: 200Mbit more guaranteed minimum does not fit"},
		{name: "no minimum", do: create("e2", "h2", "plain")},
		{name: "class change", do: update(withClass(endpoint("acme", "e2", "a", "h2"), "gold")),
			wantErr: "spec.qosClass: host h2 has capacity 300Mbit with 200Mbit committed: 200Mbit more guaranteed minimum does not fit"},
		{name: "on another host", do: create("e3", "h1", "gold")},
		{name: "migration", do: update(withClass(endpoint("acme", "e3", "a", "h2"), "gold")),
			wantErr: "spec.host: host h2 has capacity 300Mbit with 200Mbit committed: 200Mbit more guaranteed minimum does not fit"},
		{name: "class minimum raised, fits", do: update(qosClass("acme", "gold", "250Mbit"))},
		{name: "class minimum raised too far", do: update(qosClass("acme", "gold", "400Mbit")),
			wantErr: "spec.minRate: host h2 has capacity 300Mbit with 250Mbit committed: 150Mbit more guaranteed minimum does not fit"},
		{name: "VPC minimum", do: update(vpcMin("100Mbit")),
			wantErr: "spec.qos.minRate: host h2 has capacity 300Mbit with 250Mbit committed: 100Mbit more guaranteed minimum does not fit"},
		{name: "capacity lowered too far", do: update(hostCap("h1", "192.0.2.1", "100Mbit")),
			wantErr: "spec.capacity: host h1 has 250Mbit of guaranteed minimums committed, more than a capacity of 100Mbit"},
		{name: "capacity lowered, fits", do: update(hostCap("h1", "192.0.2.1", "500Mbit"))},
		{name: "VPC minimum, fits", do: update(vpcMin("50Mbit"))},
		{name: "a delete frees", do: func() (apiv1.Object, error) {
			return r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "e1"})
		}},
		{name: "then it fits", do: create("e4", "h2", "gold")},
	} {
		_, err := st.do()
		got := ""
		if se, ok := err.(*apiv1.StatusError); ok && se.Code == 422 && len(se.Causes) == 1 {
			got = se.Causes[0].Error()
		} else if err != nil {
			got = err.Error()
		}
		if diff := cmp.Diff(st.wantErr, got); diff != "" {
			t.Errorf("%s: error (-want +got):\n%s", st.name, diff)
		}
	}
	if c := r.committed("h2", overrides{}); c != 300e6 {
		t.Errorf("h2 has %s committed, want 300Mbit (e4 and the VPC's 50Mbit)", formatRate(c))
	}
}

// TestAdmissionIntents: an endpoint without a class of its own commits
// the minimum of its AppIntent's class (intent.ClassOf, as the compiler
// programs it), so the writes that give that class to more endpoints or
// raise it are admitted like class changes: the class's create (as the
// intent controller writes it) and raise, a wider intent selector, an
// endpoint created or relabelled into the selection.
func TestAdmissionIntents(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	labelled := func(name, app string) *apiv1.Endpoint {
		ep := endpoint("acme", name, "a", "h1")
		ep.Metadata.Labels = map[string]string{"app": app}
		return ep
	}
	web := func(sel map[string]string) *apiv1.AppIntent {
		in := intent("acme", "web", "main")
		in.Spec.Selector = apiv1.LabelSelector{MatchLabels: sel}
		in.Spec.Bandwidth = &apiv1.IntentBandwidth{Min: "100Mbit"}
		return in
	}
	class := "appintent-web" // intent.Name("web")
	mustCreate(t, r, tenant("acme"), hostCap("h1", "192.0.2.1", "300Mbit"), vpc("acme", "main", "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"), labelled("e1", "web"), labelled("e2", "web"), labelled("e3", "db"))
	create := func(o apiv1.Object) func() (apiv1.Object, error) {
		return func() (apiv1.Object, error) { return r.Create(ctx, o) }
	}
	update := func(o apiv1.Object) func() (apiv1.Object, error) {
		return func() (apiv1.Object, error) { return r.Update(ctx, o) }
	}
	for _, st := range []struct {
		name      string
		do        func() (apiv1.Object, error)
		wantErr   string // "field: message", "" for success
		committed uint64 // h1's after the step
	}{
		{name: "intent before its class", do: create(web(map[string]string{"app": "web"}))},
		{name: "the class, fits", do: create(qosClass("acme", class, "100Mbit")), committed: 200e6},
		{name: "the class raised too far", do: update(qosClass("acme", class, "200Mbit")), committed: 200e6,
			wantErr: "spec.minRate: host h1 has capacity 300Mbit with 200Mbit committed: 200Mbit more guaranteed minimum does not fit"},
		{name: "an endpoint relabelled into the selection, fits", do: update(labelled("e3", "web")), committed: 300e6},
		{name: "an endpoint created in the selection", do: create(labelled("e4", "web")), committed: 300e6,
			wantErr: "spec.host: host h1 has capacity 300Mbit with 300Mbit committed: 100Mbit more guaranteed minimum does not fit"},
		{name: "an endpoint outside it", do: create(labelled("e4", "batch")), committed: 300e6},
		{name: "the selector widened", do: update(web(nil)), committed: 300e6,
			wantErr: "spec.selector: host h1 has capacity 300Mbit with 300Mbit committed: 100Mbit more guaranteed minimum does not fit"},
		{name: "relabelled into it", do: update(labelled("e4", "web")), committed: 300e6,
			wantErr: "metadata.labels: host h1 has capacity 300Mbit with 300Mbit committed: 100Mbit more guaranteed minimum does not fit"},
		{name: "a class without minimum", do: create(qosClass("acme", "plain", "")), committed: 300e6},
		{name: "its own class wins over the intent's", do: update(withClass(labelled("e1", "web"), "plain")), committed: 200e6},
		{name: "an endpoint relabelled out frees", do: update(labelled("e3", "db")), committed: 100e6},
		{name: "then the selector widens", do: update(web(nil)), committed: 300e6},
	} {
		_, err := st.do()
		got := ""
		if se, ok := err.(*apiv1.StatusError); ok && se.Code == 422 && len(se.Causes) == 1 {
			got = se.Causes[0].Error()
		} else if err != nil {
			got = err.Error()
		}
		if diff := cmp.Diff(st.wantErr, got); diff != "" {
			t.Errorf("%s: error (-want +got):\n%s", st.name, diff)
		}
		if c := r.committed("h1", overrides{}); c != st.committed {
			t.Errorf("%s: h1 has %s committed, want %s", st.name, formatRate(c), formatRate(st.committed))
		}
	}
}
