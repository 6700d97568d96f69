package rest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/internal/etcdtest"
)

// conventionsEnv serves the API over etcd with credentials: a cluster
// admin, an admin and a viewer of tenant acme. acme has VPC main, subnet
// a and endpoints web-1 (app=web, on h1) and db-1 (app=db, on h2).
type conventionsEnv struct {
	env *etcdtest.Env
	api string
	// tokens by role: "admin", "acme-admin", "acme-viewer".
	tokens map[string]string
	logs   *lockedBuffer // the server's log, JSON lines
}

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startConventions(t *testing.T) *conventionsEnv {
	t.Helper()
	return startConventionsWith(t, nil)
}

// startConventionsWith is startConventions with the API's backend made by
// wrap from the registry (nil: the registry itself), and a credential of
// the agent of host h1 ("h1-agent").
func startConventionsWith(t *testing.T, wrap func(rest.Backend) rest.Backend) *conventionsEnv {
	t.Helper()
	env := etcdtest.Start(t)
	ctx := context.Background()
	for _, o := range []apiv1.Object{etcdtest.Tenant("acme"), etcdtest.Tenant("beta"), etcdtest.Host("h1", "192.0.2.1"), etcdtest.Host("h2", "192.0.2.2"),
		etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("acme", "web-1", "a", "h1", "app", "web"), etcdtest.Endpoint("acme", "db-1", "a", "h2", "app", "db")} {
		if _, err := env.Registry.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	tokens, err := auth.NewTokens(auth.TokensConfig{Store: env.Store})
	if err != nil {
		t.Fatal(err)
	}
	if err := tokens.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tokens.Close() })
	e := &conventionsEnv{env: env, tokens: map[string]string{}, logs: &lockedBuffer{}}
	for name, s := range map[string]auth.Scope{"admin": {Role: auth.RoleClusterAdmin},
		"acme-admin": {Role: auth.RoleTenantAdmin, Tenant: "acme"}, "acme-viewer": {Role: auth.RoleTenantViewer, Tenant: "acme"},
		"h1-agent": {Role: auth.RoleAgent, Host: "h1"}} {
		nt, err := tokens.Create(ctx, auth.TokenRequest{Scope: s})
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[name] = nt.Secret
	}
	var backend rest.Backend = env.Registry
	if wrap != nil {
		backend = wrap(backend)
	}
	h, err := rest.NewHandler(rest.Config{Backend: backend, Authenticator: auth.NewAuthenticator(tokens, env.Store), Lookup: env.Store,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	e.api = srv.URL + "/apis/weft/v1"
	return e
}

// do sends a request as who ("" for no credential).
func (e *conventionsEnv) do(t *testing.T, who, method, path, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.api+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+e.tokens[who])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return response{resp.StatusCode, b.String()}
}

// watch opens a watch as the cluster admin and returns its next event,
// as "TYPE name labels phase" of the object it carries.
func (e *conventionsEnv) watch(t *testing.T, path string) func() string {
	t.Helper()
	return e.watchAs(t, "admin", path)
}

// watchAs is watch with the credential of who.
func (e *conventionsEnv) watchAs(t *testing.T, who, path string) func() string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", e.api+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[who])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch %s: %d", path, resp.StatusCode)
	}
	lines := bufio.NewScanner(resp.Body)
	return func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("watch ended: %v", lines.Err())
		}
		var ev event
		var o struct {
			Metadata apiv1.ObjectMeta `json:"metadata"`
			Status   struct {
				Phase string `json:"phase"`
			} `json:"status"`
		}
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil || json.Unmarshal(ev.Object, &o) != nil {
			t.Fatalf("watch line %q: %v", lines.Text(), err)
		}
		return ev.Type + " " + o.Metadata.Name + " " + strings.Join(labelList(o.Metadata.Labels), ",") + " " + o.Status.Phase
	}
}

func labelList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// names returns the names of a list response's items.
func names(t *testing.T, r response) []string {
	t.Helper()
	var l struct {
		Items []struct {
			Metadata apiv1.ObjectMeta `json:"metadata"`
		} `json:"items"`
	}
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &l) != nil {
		t.Fatalf("list: %d %s", r.code, r.body)
	}
	var out []string
	for _, i := range l.Items {
		out = append(out, i.Metadata.Name)
	}
	return out
}

func TestPatchObject(t *testing.T) {
	e := startConventions(t)
	const ep = "/tenants/acme/endpoints/web-1"
	for _, tc := range []struct {
		name, who, path, ctype, body string
		wantCode                     int
		wantReason, wantMsg          string
		check                        func(t *testing.T, o *apiv1.Endpoint)
	}{
		{name: "merge patch of labels and annotations", who: "acme-admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"metadata":{"labels":{"tier":"front"},"annotations":{"argocd.argoproj.io/sync-wave":"1"}}}`, wantCode: 200,
			check: func(t *testing.T, o *apiv1.Endpoint) {
				want := map[string]string{"app": "web", "tier": "front"}
				if d := cmp.Diff(want, o.Metadata.Labels); d != "" || o.Metadata.Annotations["argocd.argoproj.io/sync-wave"] != "1" || o.Metadata.Generation != 2 {
					t.Errorf("labels (-want +got):\n%s annotations %v generation %d", d, o.Metadata.Annotations, o.Metadata.Generation)
				}
			}},
		{name: "JSON patch with a test", who: "acme-admin", path: ep, ctype: apiv1.JSONPatchType,
			body: `[{"op":"test","path":"/metadata/labels/app","value":"web"},{"op":"replace","path":"/metadata/labels/app","value":"front"},{"op":"remove","path":"/metadata/labels/tier"}]`, wantCode: 200,
			check: func(t *testing.T, o *apiv1.Endpoint) {
				if d := cmp.Diff(map[string]string{"app": "front"}, o.Metadata.Labels); d != "" || o.Metadata.Generation != 3 {
					t.Errorf("labels after the JSON patch (-want +got):\n%s generation %d", d, o.Metadata.Generation)
				}
			}},
		{name: "JSON patch whose test fails", who: "acme-admin", path: ep, ctype: apiv1.JSONPatchType,
			body:     `[{"op":"test","path":"/metadata/labels/app","value":"web"},{"op":"replace","path":"/metadata/labels/app","value":"web"}]`,
			wantCode: 422, wantReason: apiv1.ReasonInvalid, wantMsg: `the value is \"front\", not \"web\"`},
		{name: "a field the credential may not change", who: "acme-admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"spec":{"host":"h2"}}`, wantCode: 403, wantReason: apiv1.ReasonForbidden, wantMsg: "spec.host"},
		{name: "the cluster admin may", who: "admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"spec":{"host":"h2"}}`, wantCode: 200,
			check: func(t *testing.T, o *apiv1.Endpoint) {
				if o.Spec.Host != "h2" || o.Status.Host != "h2" || o.Status.Phase != apiv1.PhasePending {
					t.Errorf("after the move: %+v %+v", o.Spec, o.Status)
				}
			}},
		{name: "status in a patch is ignored", who: "acme-admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"status":{"phase":"Ready"}}`, wantCode: 200,
			check: func(t *testing.T, o *apiv1.Endpoint) {
				if o.Status.Phase != apiv1.PhasePending {
					t.Errorf("phase %s, want Pending kept", o.Status.Phase)
				}
			}},
		{name: "a patch that fails validation", who: "acme-admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"spec":{"subnet":"b"}}`, wantCode: 422, wantReason: apiv1.ReasonInvalid},
		{name: "an unknown field", who: "acme-admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"spec":{"hots":"h1"}}`, wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: "spec.hots"},
		{name: "a rename", who: "acme-admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"metadata":{"name":"web-2"}}`, wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: "cannot change"},
		{name: "a stale resourceVersion in the patch", who: "acme-admin", path: ep, ctype: apiv1.MergePatchType,
			body: `{"metadata":{"resourceVersion":"1","labels":{"x":"y"}}}`, wantCode: 409, wantReason: apiv1.ReasonConflict},
		{name: "strategic merge patch", who: "acme-admin", path: ep, ctype: "application/strategic-merge-patch+json",
			body: `{}`, wantCode: 415, wantReason: apiv1.ReasonUnsupportedMedia},
		{name: "a viewer may not", who: "acme-viewer", path: ep, ctype: apiv1.MergePatchType,
			body: `{"metadata":{"labels":{"x":"y"}}}`, wantCode: 403, wantReason: apiv1.ReasonForbidden},
		{name: "nor another tenant's admin", who: "acme-admin", path: "/tenants/beta/vpcs/x", ctype: apiv1.MergePatchType,
			body: `{}`, wantCode: 403, wantReason: apiv1.ReasonForbidden},
		{name: "nor anyone without a credential", path: ep, ctype: apiv1.MergePatchType, body: `{}`, wantCode: 401, wantReason: apiv1.ReasonUnauthorized},
		{name: "a missing object", who: "acme-admin", path: "/tenants/acme/endpoints/nope", ctype: apiv1.MergePatchType,
			body: `{}`, wantCode: 404, wantReason: apiv1.ReasonNotFound},
		{name: "apply creates", who: "acme-admin", path: "/tenants/acme/endpoints/app-1", ctype: apiv1.ApplyPatchType,
			body: "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: app-1, labels: {app: shop}}\nspec: {subnet: a, host: h1}\n", wantCode: 201,
			check: func(t *testing.T, o *apiv1.Endpoint) {
				if o.Metadata.Tenant != "acme" || o.Metadata.Labels["app"] != "shop" || o.Status.IP == "" {
					t.Errorf("applied: %+v %+v", o.Metadata, o.Status)
				}
			}},
		{name: "apply merges, keeping what others set", who: "acme-admin", path: "/tenants/acme/endpoints/app-1", ctype: apiv1.ApplyPatchType,
			body: `{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"app-1","tenant":"acme","labels":{"tier":"1"},"annotations":{"a":"b"}},"spec":{"subnet":"a","host":"h1"}}`, wantCode: 200,
			check: func(t *testing.T, o *apiv1.Endpoint) {
				if o.Metadata.Labels["app"] != "shop" || o.Metadata.Labels["tier"] != "1" || o.Metadata.Annotations["a"] != "b" || o.Spec.Host != "h1" {
					t.Errorf("applied: %+v %+v", o.Metadata, o.Spec)
				}
			}},
		{name: "apply of another name", who: "acme-admin", path: "/tenants/acme/endpoints/app-1", ctype: apiv1.ApplyPatchType,
			body: "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: app-2}\nspec: {subnet: a, host: h1}\n", wantCode: 400, wantReason: apiv1.ReasonBadRequest},
		{name: "apply of another tenant's object", who: "acme-admin", path: "/tenants/beta/endpoints/x", ctype: apiv1.ApplyPatchType,
			body: "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: x}\nspec: {subnet: a, host: h1}\n", wantCode: 403, wantReason: apiv1.ReasonForbidden},
		{name: "apply may create only what the credential may", who: "acme-viewer", path: "/tenants/acme/endpoints/app-3", ctype: apiv1.ApplyPatchType,
			body: "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: app-3}\nspec: {subnet: a, host: h1}\n", wantCode: 403, wantReason: apiv1.ReasonForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.who, "PATCH", tc.path, tc.ctype, tc.body)
			if r.code != tc.wantCode {
				t.Fatalf("got %d %s, want %d", r.code, r.body, tc.wantCode)
			}
			if tc.wantReason != "" {
				if se := statusOf(t, r); se.Reason != tc.wantReason || !strings.Contains(r.body, tc.wantMsg) {
					t.Fatalf("got %s %q, want %s with %q", se.Reason, se.Message, tc.wantReason, tc.wantMsg)
				}
				return
			}
			var o apiv1.Endpoint
			if err := json.Unmarshal([]byte(r.body), &o); err != nil {
				t.Fatal(err)
			}
			tc.check(t, &o)
			stored, err := e.env.Registry.Get(context.Background(), apiv1.RefOf(&o))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(&o, stored.(*apiv1.Endpoint)); d != "" {
				t.Errorf("answer and stored object differ (-answer +stored):\n%s", d)
			}
		})
	}
}

// TestDryRunWrites: ?dryRun=All on every write answers as the write would
// and stores nothing.
func TestDryRunWrites(t *testing.T) {
	e := startConventions(t)
	const js = "application/json"
	// The objects of acme as stored (the revision moves with the
	// tokens' bookkeeping, so it does not tell).
	stored := func() []string {
		var out []string
		for _, kind := range []string{apiv1.KindVPC, apiv1.KindSubnet, apiv1.KindEndpoint} {
			objs, _ := e.env.Registry.List(context.Background(), kind, "acme", apiv1.LabelSelector{})
			for _, o := range objs {
				out = append(out, apiv1.RefOf(o).String()+"@"+o.GetObjectMeta().ResourceVersion)
			}
		}
		return out
	}
	before := stored()
	for _, tc := range []struct {
		name, method, path, ctype, body string
		wantCode                        int
		wantReason                      string
	}{
		{"create", "POST", "/tenants/acme/endpoints", js, `{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"new"},"spec":{"subnet":"a","host":"h1"}}`, 201, ""},
		{"create, invalid", "POST", "/tenants/acme/endpoints", js, `{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"new"},"spec":{"subnet":"nope","host":"h1"}}`, 422, apiv1.ReasonInvalid},
		{"update", "PUT", "/tenants/acme/vpcs/main", js, `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main"},"spec":{"cidrs":["10.0.0.0/16","10.1.0.0/16"]}}`, 200, ""},
		{"patch", "PATCH", "/tenants/acme/endpoints/web-1", apiv1.MergePatchType, `{"metadata":{"labels":{"app":"x"}}}`, 200, ""},
		{"apply", "PATCH", "/tenants/acme/endpoints/app", apiv1.ApplyPatchType, "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: app}\nspec: {subnet: a, host: h1}\n", 201, ""},
		{"delete", "DELETE", "/tenants/acme/endpoints/db-1", "", "", 200, ""},
		{"delete, in use", "DELETE", "/tenants/acme/subnets/a", "", "", 409, apiv1.ReasonConflict},
		{"status", "PATCH", "/tenants/acme/endpoints/web-1/status", apiv1.MergePatchType, `{"status":{"phase":"Ready"}}`, 400, apiv1.ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			who := "acme-admin"
			if strings.HasSuffix(tc.path, "/status") {
				who = "admin" // a tenant admin may not write a status at all
			}
			r := e.do(t, who, tc.method, tc.path+"?dryRun=All", tc.ctype, tc.body)
			if r.code != tc.wantCode {
				t.Fatalf("got %d %s, want %d", r.code, r.body, tc.wantCode)
			}
			if tc.wantReason != "" && statusOf(t, r).Reason != tc.wantReason {
				t.Fatalf("got %s, want %s", r.body, tc.wantReason)
			}
		})
	}
	if r := e.do(t, "acme-admin", "DELETE", "/tenants/acme/endpoints/db-1?dryRun=true", "", ""); r.code != 400 || !strings.Contains(r.body, "the only dry run is All") {
		t.Errorf("dryRun=true: %d %s", r.code, r.body)
	}
	// A dry run is authorized as the write: what a credential may not do
	// it may not try either, field by field for a patch.
	for _, tc := range []struct {
		name, who, method, path, ctype, body string
		wantCode                             int
	}{
		{"a field the credential may not change", "acme-admin", "PATCH", "/tenants/acme/endpoints/web-1", apiv1.MergePatchType, `{"spec":{"host":"h2"}}`, 403},
		{"a viewer's patch", "acme-viewer", "PATCH", "/tenants/acme/endpoints/web-1", apiv1.MergePatchType, `{"metadata":{"labels":{"app":"x"}}}`, 403},
		{"a viewer's delete", "acme-viewer", "DELETE", "/tenants/acme/endpoints/db-1", "", "", 403},
		{"another tenant's create", "acme-admin", "POST", "/tenants/beta/vpcs", js, `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"x"},"spec":{"cidrs":["10.0.0.0/16"]}}`, 403},
		{"another tenant's apply", "acme-admin", "PATCH", "/tenants/beta/vpcs/x", apiv1.ApplyPatchType, "apiVersion: weft/v1\nkind: VPC\nmetadata: {name: x}\nspec: {cidrs: [10.0.0.0/16]}\n", 403},
		{"no credential", "", "POST", "/tenants/acme/endpoints", js, `{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"new"},"spec":{"subnet":"a","host":"h1"}}`, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := e.do(t, tc.who, tc.method, tc.path+"?dryRun=All", tc.ctype, tc.body); r.code != tc.wantCode {
				t.Errorf("got %d %s, want %d", r.code, r.body, tc.wantCode)
			}
		})
	}
	if d := cmp.Diff(before, stored()); d != "" {
		t.Errorf("dry runs wrote (-before +after):\n%s", d)
	}
	// Each request left an audit line that says it was a dry run.
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var line struct {
			Subsystem string `json:"subsystem"`
			Verb      string `json:"verb"`
			Object    string `json:"object"`
			DryRun    bool   `json:"dryRun"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil || line.Subsystem != "audit" {
			continue
		}
		n++
		if !line.DryRun {
			t.Errorf("the audit line of a dry run does not say so: %s", l)
		}
	}
	if n != 15 {
		t.Errorf("%d audit lines, want one per request (15); log:\n%s", n, e.logs.String())
	}
}

// TestFieldSelectorTenants: a field selector narrows what a credential may
// see and never widens it: a tenant's credential that asks for another
// tenant's objects by field, across tenants or on a watch, gets none of
// them.
func TestFieldSelectorTenants(t *testing.T) {
	e := startConventions(t)
	ctx := context.Background()
	// beta uses the same names and addresses as acme, on the same host.
	for _, o := range []apiv1.Object{etcdtest.VPC("beta", "main", "10.0.0.0/16"), etcdtest.Subnet("beta", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("beta", "web-1", "a", "h1", "app", "web")} {
		if _, err := e.env.Registry.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, who, path string
		wantCode        int
		want            []string // tenant/name
	}{
		{"the cluster admin sees both", "admin", "/endpoints?fieldSelector=spec.host%3Dh1", 200, []string{"acme/web-1", "beta/web-1"}},
		{"by host, across tenants", "acme-viewer", "/endpoints?fieldSelector=spec.host%3Dh1", 200, []string{"acme/web-1"}},
		{"by phase, across tenants", "acme-viewer", "/endpoints?fieldSelector=status.phase%3DPending", 200, []string{"acme/db-1", "acme/web-1"}},
		{"by the other tenant", "acme-viewer", "/endpoints?fieldSelector=metadata.tenant%3Dbeta", 200, nil},
		{"by the other tenant, in its own", "acme-admin", "/tenants/acme/endpoints?fieldSelector=metadata.tenant%3Dbeta", 200, nil},
		{"subnets by VPC", "acme-viewer", "/subnets?fieldSelector=spec.vpc%3Dmain", 200, []string{"acme/a"}},
		{"the other tenant by name", "acme-viewer", "/tenants?fieldSelector=metadata.name%3Dbeta", 200, nil},
		{"its own tenant by name", "acme-viewer", "/tenants?fieldSelector=metadata.name%3Dacme", 200, []string{"/acme"}},
		{"in the other tenant's path", "acme-admin", "/tenants/beta/endpoints?fieldSelector=spec.host%3Dh1", 403, nil},
		{"without a credential", "", "/endpoints?fieldSelector=spec.host%3Dh1", 401, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, tc.who, "GET", tc.path, "", "")
			if r.code != tc.wantCode {
				t.Fatalf("got %d %s, want %d", r.code, r.body, tc.wantCode)
			}
			if r.code != 200 {
				return
			}
			var l struct {
				Items []struct {
					Metadata apiv1.ObjectMeta `json:"metadata"`
				} `json:"items"`
			}
			if err := json.Unmarshal([]byte(r.body), &l); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, i := range l.Items {
				got = append(got, i.Metadata.Tenant+"/"+i.Metadata.Name)
			}
			if !cmp.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	// A watch across tenants by field: beta's endpoints on h1 never come.
	next := e.watchAs(t, "acme-viewer", "/endpoints?watch=true&fieldSelector=spec.host%3Dh1")
	if got := next(); got != "ADDED web-1 app=web Pending" {
		t.Fatalf("initial: %s", got)
	}
	for _, o := range []apiv1.Object{etcdtest.Endpoint("beta", "leak", "a", "h1", "app", "web"), etcdtest.Endpoint("acme", "new", "a", "h1", "app", "web")} {
		if _, err := e.env.Registry.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if got := next(); got != "ADDED new app=web Pending" {
		t.Errorf("after beta's endpoint leak and acme's new on h1: %s, want acme's new", got)
	}
}

func TestFieldSelector(t *testing.T) {
	e := startConventions(t)
	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"by host, all tenants", "/endpoints?fieldSelector=spec.host%3Dh1", []string{"web-1"}},
		{"by host and label", "/tenants/acme/endpoints?fieldSelector=spec.host%3Dh2&labelSelector=app%3Dweb", nil},
		{"by phase", "/tenants/acme/endpoints?fieldSelector=status.phase%3DPending", []string{"db-1", "web-1"}},
		{"by subnet, not phase", "/tenants/acme/endpoints?fieldSelector=spec.subnet%3Da,status.phase!%3DPending", nil},
		{"by name, paged", "/tenants/acme/endpoints?fieldSelector=metadata.name%3Ddb-1&limit=1", []string{"db-1"}},
		{"hosts by name", "/hosts?fieldSelector=metadata.name%3Dh2", []string{"h2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := names(t, e.do(t, "admin", "GET", tc.path, "", "")); !cmp.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	r := e.do(t, "admin", "GET", "/tenants/acme/endpoints?fieldSelector=spec.ip%3D1", "", "")
	if se := statusOf(t, r); r.code != 400 || !strings.Contains(se.Message, "it can by metadata.name, metadata.tenant, spec.host, spec.subnet, status.phase") {
		t.Errorf("unknown field: %d %s", r.code, r.body)
	}

	// A watch by field: an endpoint that becomes Ready comes in, one that
	// moves to another host goes out.
	next := e.watch(t, "/tenants/acme/endpoints?watch=true&fieldSelector=spec.host%3Dh1,status.phase%3DReady")
	ctx := context.Background()
	ref := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web-1"}
	for _, name := range []string{"db-1", "web-1"} {
		if _, err := e.env.Registry.MergePatchStatus(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name}, []byte(`{"status":{"phase":"Ready"}}`)); err != nil {
			t.Fatal(err)
		}
	}
	if got := next(); got != "ADDED web-1 app=web Ready" {
		t.Errorf("web-1 became Ready on h1: %s", got)
	}
	if _, err := e.env.Registry.MergePatchStatus(ctx, ref, []byte(`{"status":{"message":"x"}}`)); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "MODIFIED web-1 app=web Ready" {
		t.Errorf("web-1 changed: %s", got)
	}
	ep := etcdtest.Endpoint("acme", "web-1", "a", "h2", "app", "web")
	if _, err := e.env.Registry.Update(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "DELETED web-1 app=web Ready" {
		t.Errorf("web-1 moved to h2: %s (want its last state on h1)", got)
	}
}

// TestWatchRelabel: a label-selector watch sees an object relabelled into
// the selector as ADDED and out of it as DELETED, with the state that
// matched.
func TestWatchRelabel(t *testing.T) {
	e := startConventions(t)
	next := e.watch(t, "/tenants/acme/endpoints?watch=true&labelSelector=app%3Dweb")
	if got := next(); got != "ADDED web-1 app=web Pending" {
		t.Fatalf("initial: %s", got)
	}
	ctx := context.Background()
	for _, step := range []struct {
		name, app, want string
	}{
		{"db-1", "web", "ADDED db-1 app=web Pending"},
		{"db-1", "db", "DELETED db-1 app=web Pending"},
		{"web-1", "shop", "DELETED web-1 app=web Pending"},
		{"web-1", "web", "ADDED web-1 app=web Pending"},
	} {
		host := map[string]string{"db-1": "h2", "web-1": "h1"}[step.name]
		if _, err := e.env.Registry.Update(ctx, etcdtest.Endpoint("acme", step.name, "a", host, "app", step.app)); err != nil {
			t.Fatal(err)
		}
		if got := next(); got != step.want {
			t.Errorf("%s relabelled app=%s: %s, want %s", step.name, step.app, got, step.want)
		}
	}
}
