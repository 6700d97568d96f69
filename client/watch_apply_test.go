package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/apitest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// next reads one event, failing the test if the stream closed.
func next(t *testing.T, ch <-chan client.WatchEvent) client.WatchEvent {
	t.Helper()
	ev, ok := <-ch
	if !ok {
		t.Fatal("watch channel closed early")
	}
	return ev
}

func eventString(ev client.WatchEvent) string {
	if ev.Type == client.Error {
		return fmt.Sprintf("ERROR %s", apiv1.ReasonOf(ev.Err))
	}
	return fmt.Sprintf("%s %s %v", ev.Type, apiv1.RefOf(ev.Object), ev.Object.GetObjectMeta().Labels)
}

func TestWatch(t *testing.T) {
	c, _ := newClient(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	mustCreate(t, c, tenant("acme"), tenant("beta"), vpc("acme", "a", nil, "10.0.0.0/16"))

	events, err := c.Watch(ctx, "vpcs", "acme", "", "")
	if err != nil {
		t.Fatal(err)
	}
	got := []string{eventString(next(t, events))} // the existing object, as ADDED

	b := vpc("acme", "b", nil, "10.1.0.0/16")
	mustCreate(t, c, vpc("beta", "other", nil, "10.0.0.0/16"), b) // beta is not watched
	b.Metadata.Labels = map[string]string{"x": "1"}
	if _, err := c.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "vpc", "acme", "a"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		got = append(got, eventString(next(t, events)))
	}
	want := []string{
		"ADDED vpc/acme/a map[]",
		"ADDED vpc/acme/b map[]",
		"MODIFIED vpc/acme/b map[x:1]",
		"DELETED vpc/acme/a map[]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	cancel()
	for ev := range events { // drains, then closes
		t.Logf("event after cancel: %s", eventString(ev))
	}
}

func TestWatchFromResourceVersion(t *testing.T) {
	c, _ := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"), vpc("acme", "a", map[string]string{"app": "web"}, "10.0.0.0/16"))
	_, rv, err := c.List(ctx, "vpc", "", "app=web")
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the list: one matches the selector, one does not.
	mustCreate(t, c, vpc("acme", "b", map[string]string{"app": "db"}, "10.1.0.0/16"),
		vpc("acme", "c", map[string]string{"app": "web"}, "10.2.0.0/16"))

	events, err := c.Watch(ctx, "vpc", "", "app=web", rv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("ADDED vpc/acme/c map[app:web]", eventString(next(t, events))); diff != "" {
		t.Errorf("first event after the list (-want +got):\n%s", diff)
	}
}

func TestWatchErrors(t *testing.T) {
	t.Run("gone", func(t *testing.T) {
		// The store keeps one event in memory: older history is read from
		// etcd, which compacted it.
		c, srv := newClient(t, apitest.Options{Store: func(c *store.Config) { c.RingSize = 1 }})
		mustCreate(t, c, tenant("acme"), tenant("beta"))
		if _, err := srv.Env.Client.Compact(t.Context(), srv.Env.Registry.Revision(), clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		_, err := c.Watch(t.Context(), "tenants", "", "", "1")
		if se := statusOf(t, err); se.Code != http.StatusGone || se.Reason != apiv1.ReasonGone {
			t.Errorf("watch from a compacted revision: %+v, want 410 Gone", se)
		}
	})
	t.Run("error event", func(t *testing.T) {
		c, srv := newClient(t)
		mustCreate(t, c, tenant("acme"))
		events, err := c.Watch(t.Context(), "tenants", "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		next(t, events) // ADDED acme
		// The store drops its watches (as it drops a slow one): the server
		// says so in an ERROR event and ends the stream.
		srv.Env.Store.Close()
		ev := next(t, events)
		if ev.Type != client.Error || ev.Object != nil || !strings.Contains(ev.Err.Error(), "watch closed by the server") || apiv1.ReasonOf(ev.Err) != apiv1.ReasonGone {
			t.Errorf("got %+v, want an ERROR event carrying the StatusError", ev)
		}
		for ev := range events {
			t.Errorf("event after the ERROR: %s", eventString(ev))
		}
	})
	t.Run("stream ends", func(t *testing.T) {
		// A stream that ends cleanly closes the channel, with no ERROR.
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"type":"ADDED","object":{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"}}}`)
		}))
		defer ts.Close()
		c, err := client.New(ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		events, err := c.Watch(t.Context(), "tenants", "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for ev := range events {
			got = append(got, eventString(ev))
		}
		if diff := cmp.Diff([]string{"ADDED tenant/a map[]"}, got); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"type":"ADDED","object":{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"}}}`)
			fmt.Fprintln(w, `{"type":"ADDED","object":`)
		}))
		defer ts.Close()
		c, err := client.New(ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		events, err := c.Watch(t.Context(), "tenants", "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for ev := range events {
			got = append(got, ev.Type)
		}
		if diff := cmp.Diff([]string{client.Added, client.Error}, got); diff != "" {
			t.Errorf("event types (-want +got):\n%s", diff)
		}
	})
}

func TestApply(t *testing.T) {
	c, srv := newClient(t)
	mustCreate(t, c, tenant("acme"), vpc("acme", "main", nil, "10.0.0.0/16"))

	// The subnet has no gateway: the controller defaults it, and a second
	// apply of the same file must still be "unchanged".
	sn := subnet("acme", "a", "main", "10.0.1.0/24")
	steps := []struct {
		name   string
		edit   func()
		want   string
		writes int // PUT/POST requests the step may send
	}{
		{name: "create", edit: func() {}, want: client.Created, writes: 1},
		{name: "same again", edit: func() {}, want: client.Unchanged, writes: 0},
		{name: "explicit default", edit: func() { sn.Spec.Gateway = "10.0.1.1" }, want: client.Unchanged, writes: 0},
		{name: "new label", edit: func() { sn.Metadata.Labels = map[string]string{"zone": "z1"} }, want: client.Configured, writes: 1},
		{name: "label kept", edit: func() {}, want: client.Unchanged, writes: 0},
		{name: "empty labels vs none", edit: func() { sn.Metadata.Labels = map[string]string{} }, want: client.Configured, writes: 1},
		{name: "gone labels", edit: func() { sn.Metadata.Labels = nil }, want: client.Unchanged, writes: 0},
	}
	for _, st := range steps {
		st.edit()
		obj := applyStep(t, c, srv, st.name, sn, st.want, st.writes)
		if diff := cmp.Diff(sn.Metadata.Labels, obj.GetObjectMeta().Labels, cmpEmptyMaps); diff != "" {
			t.Errorf("%s: stored labels (-want +got):\n%s", st.name, diff)
		}
	}
	if sn.Metadata.ResourceVersion != "" || sn.Metadata.UID != "" {
		t.Errorf("Apply modified its argument: %+v", sn.Metadata)
	}
}

// TestApplyPolicy: a policy applied without spec.vpc in a tenant with one
// VPC is stored with it and re-applies as unchanged, and annotations and
// owner references are applied like labels (without a new generation).
func TestApplyPolicy(t *testing.T) {
	c, srv := newClient(t)
	mustCreate(t, c, tenant("acme"), vpc("acme", "main", nil, "10.0.0.0/16"))
	p := apiv1.MustKind(apiv1.KindSecurityPolicy).New().(*apiv1.SecurityPolicy)
	p.Metadata = apiv1.ObjectMeta{Name: "web", Tenant: "acme"}
	p.Spec.Ingress = []apiv1.PolicyRule{{Ports: []apiv1.PolicyPort{{Port: 80}}}}
	steps := []struct {
		name    string
		edit    func()
		want    string
		writes  int
		wantGen int64
	}{
		{"create", func() {}, client.Created, 1, 1},
		{"same again", func() {}, client.Unchanged, 0, 1},
		{"explicit vpc", func() { p.Spec.VPC = "main" }, client.Unchanged, 0, 1},
		{"vpc left out again", func() { p.Spec.VPC = "" }, client.Unchanged, 0, 1},
		{"annotation", func() { p.Metadata.Annotations = map[string]string{"note": "x"} }, client.Configured, 1, 1},
		{"annotation kept", func() {}, client.Unchanged, 0, 1},
		{"owner", func() {
			p.Metadata.OwnerReferences = []apiv1.OwnerReference{{Kind: apiv1.KindAppIntent, Name: "shop", UID: "u1"}}
		}, client.Configured, 1, 1},
		{"annotation gone", func() { p.Metadata.Annotations = nil }, client.Configured, 1, 1},
		{"spec change", func() { p.Spec.Ingress[0].Ports[0].Port = 81 }, client.Configured, 1, 2},
	}
	for _, st := range steps {
		st.edit()
		stored := applyStep(t, c, srv, st.name, p, st.want, st.writes).(*apiv1.SecurityPolicy)
		if stored.Spec.VPC != "main" || stored.Metadata.Generation != st.wantGen {
			t.Errorf("%s: stored spec.vpc %q generation %d, want main and %d", st.name, stored.Spec.VPC, stored.Metadata.Generation, st.wantGen)
		}
		if diff := cmp.Diff(p.Metadata.Annotations, stored.Metadata.Annotations, cmpEmptyMaps); diff != "" {
			t.Errorf("%s: stored annotations (-want +got):\n%s", st.name, diff)
		}
		if diff := cmp.Diff(p.Metadata.OwnerReferences, stored.Metadata.OwnerReferences); diff != "" {
			t.Errorf("%s: stored owner references (-want +got):\n%s", st.name, diff)
		}
	}
}

// applyStep applies obj and checks the result and how many writes it
// sent; it returns the stored object.
func applyStep(t *testing.T, c *client.Client, srv *apitest.Server, step string, obj apiv1.Object, want string, writes int) apiv1.Object {
	t.Helper()
	before := len(srv.Writes())
	got, stored, err := c.Apply(t.Context(), obj)
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	if got != want {
		t.Errorf("%s: Apply = %q, want %q", step, got, want)
	}
	if n := len(srv.Writes()) - before; n != writes {
		t.Errorf("%s: %d writes, want %d", step, n, writes)
	}
	return stored
}

var cmpEmptyMaps = cmp.Comparer(func(a, b map[string]string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return cmp.Equal(a, b)
})

func TestApplyRetriesLostRace(t *testing.T) {
	c, srv := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"), vpc("acme", "main", nil, "10.0.0.0/16"))

	// Another writer changes the VPC between Apply's GET and its first PUT.
	var raced atomic.Bool
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && raced.CompareAndSwap(false, true) {
			if _, err := srv.Env.Registry.Update(r.Context(), vpc("acme", "main", map[string]string{"by": "other"}, "10.0.0.0/16")); err != nil {
				t.Errorf("the other writer: %v", err)
			}
		}
		return false
	})
	want := vpc("acme", "main", map[string]string{"by": "apply"}, "10.0.0.0/16")
	result, obj, err := c.Apply(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if result != client.Configured || obj.GetObjectMeta().Labels["by"] != "apply" {
		t.Errorf("Apply = %q %v, want configured with by=apply", result, obj.GetObjectMeta().Labels)
	}
	var puts int
	for _, r := range srv.Writes() {
		if strings.HasPrefix(r, "PUT ") {
			puts++
		}
	}
	if puts != 2 {
		t.Errorf("%d PUTs, want 2 (one refused, one retried): %v", puts, srv.Writes())
	}
}

func TestApplyDoesNotRetryPermanentConflict(t *testing.T) {
	// A controller that refuses every update with a Conflict that is not a
	// stale resourceVersion (the object does not change between attempts).
	c, srv := newClient(t)
	var puts atomic.Int32
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		puts.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprint(w, `{"code":409,"reason":"Conflict","message":"address 10.0.1.5 is taken"}`)
		return true
	})
	mustCreate(t, c, tenant("acme"))

	tn := tenant("acme")
	tn.Spec.Description = "changed"
	_, _, err := c.Apply(t.Context(), tn)
	if !apiv1.IsConflict(err) || !strings.Contains(err.Error(), "address 10.0.1.5 is taken") {
		t.Errorf("Apply error = %v, want the controller's Conflict", err)
	}
	if n := puts.Load(); n != 1 {
		t.Errorf("%d PUTs, want 1", n)
	}
}
