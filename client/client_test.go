package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/internal/apitest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, apitest.LeakOptions()...) }

// ---- fixtures ----

func tenant(name string) *apiv1.Tenant {
	o := apiv1.MustKind(apiv1.KindTenant).New().(*apiv1.Tenant)
	o.Metadata.Name = name
	return o
}

func host(name, ip string) *apiv1.Host {
	o := apiv1.MustKind(apiv1.KindHost).New().(*apiv1.Host)
	o.Metadata.Name = name
	o.Spec.UnderlayIP = ip
	return o
}

func vpc(tenant, name string, labels map[string]string, cidrs ...string) *apiv1.VPC {
	o := apiv1.MustKind(apiv1.KindVPC).New().(*apiv1.VPC)
	o.Metadata = apiv1.ObjectMeta{Name: name, Tenant: tenant, Labels: labels}
	o.Spec.CIDRs = cidrs
	return o
}

func subnet(tenant, name, vpc, cidr string) *apiv1.Subnet {
	o := apiv1.MustKind(apiv1.KindSubnet).New().(*apiv1.Subnet)
	o.Metadata = apiv1.ObjectMeta{Name: name, Tenant: tenant}
	o.Spec = apiv1.SubnetSpec{VPC: vpc, CIDR: cidr}
	return o
}

func endpoint(tenant, name, subnet, host string) *apiv1.Endpoint {
	o := apiv1.MustKind(apiv1.KindEndpoint).New().(*apiv1.Endpoint)
	o.Metadata = apiv1.ObjectMeta{Name: name, Tenant: tenant}
	o.Spec = apiv1.EndpointSpec{Subnet: subnet, Host: host}
	return o
}

// newClient starts the API (real handler, registry and etcd) and returns
// its client.
func newClient(t *testing.T, opts ...apitest.Options) (*client.Client, *apitest.Server) {
	t.Helper()
	srv := apitest.Start(t, opts...)
	return srv.Client, srv
}

func mustCreate(t *testing.T, c *client.Client, objs ...apiv1.Object) {
	t.Helper()
	for _, o := range objs {
		if _, err := c.Create(t.Context(), o); err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
	}
}

func refs(objs []apiv1.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = apiv1.RefOf(o).String()
	}
	return out
}

func statusOf(t *testing.T, err error) *apiv1.StatusError {
	t.Helper()
	var se *apiv1.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *v1.StatusError", err, err)
	}
	return se
}

// ---- tests ----

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name, server, want, wantErr string
	}{
		{name: "plain", server: "http://127.0.0.1:7443", want: "http://127.0.0.1:7443"},
		{name: "no scheme", server: "127.0.0.1:7443", want: "https://127.0.0.1:7443"},
		{name: "trailing slash", server: "https://weft.example/", want: "https://weft.example"},
		{name: "path prefix", server: "http://h:1/weft/", want: "http://h:1/weft"},
		{name: "empty", server: " ", wantErr: "empty server URL"},
		{name: "bad scheme", server: "ftp://h", wantErr: "scheme must be http or https"},
		{name: "query", server: "http://h/?a=b", wantErr: "query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(tc.server)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New(%q) error = %v, want one containing %q", tc.server, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if diff := cmp.Diff(tc.want, c.Server()); diff != "" {
				t.Errorf("Server() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCreateGetListDelete(t *testing.T) {
	c, _ := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"), tenant("beta"), host("h1", "192.0.2.11"))

	created, err := c.Create(ctx, vpc("acme", "main", map[string]string{"env": "prod"}, "10.0.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	cm := created.GetObjectMeta()
	if cm.ResourceVersion == "" || cm.UID == "" || cm.CreationTimestamp == "" || created.(*apiv1.VPC).Status.VNI == 0 {
		t.Errorf("created object lacks controller-set fields: %+v", created)
	}
	mustCreate(t, c, vpc("acme", "dev", map[string]string{"env": "dev"}, "10.1.0.0/16"),
		vpc("beta", "main", nil, "10.0.0.0/16")) // overlapping CIDRs across tenants are fine

	got, err := c.Get(ctx, "vpc", "acme", "main")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(created, got); diff != "" {
		t.Errorf("Get differs from Create's result (-create +get):\n%s", diff)
	}
	if _, err := c.Get(ctx, "hosts", "ignored-for-cluster-kinds", "h1"); err != nil {
		t.Errorf("Get host: %v", err)
	}

	for _, tc := range []struct {
		name, kind, tenant, selector string
		want                         []string
	}{
		{name: "one tenant", kind: "vpcs", tenant: "acme", want: []string{"vpc/acme/dev", "vpc/acme/main"}},
		{name: "all tenants", kind: "VPC", want: []string{"vpc/acme/dev", "vpc/acme/main", "vpc/beta/main"}},
		{name: "selector", kind: "vpc", selector: "env in (prod,staging)", want: []string{"vpc/acme/main"}},
		{name: "cluster-scoped", kind: "tenants", want: []string{"tenant/acme", "tenant/beta"}},
		{name: "empty", kind: "subnets", tenant: "acme", want: []string{}},
	} {
		t.Run("list "+tc.name, func(t *testing.T) {
			objs, rv, err := c.List(ctx, tc.kind, tc.tenant, tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			if rv == "" {
				t.Error("list has no resourceVersion")
			}
			if diff := cmp.Diff(tc.want, refs(objs)); diff != "" {
				t.Errorf("List (-want +got):\n%s", diff)
			}
		})
	}

	deleted, err := c.Delete(ctx, "vpc", "acme", "dev")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("vpc/acme/dev", apiv1.RefOf(deleted).String()); diff != "" {
		t.Errorf("Delete returned (-want +got):\n%s", diff)
	}
	if _, err := c.Get(ctx, "vpc", "acme", "dev"); !apiv1.IsNotFound(err) {
		t.Errorf("Get after Delete: err = %v, want NotFound", err)
	}
}

func TestUpdateConflict(t *testing.T) {
	c, _ := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"))
	v1, err := c.Create(ctx, vpc("acme", "main", nil, "10.0.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}

	upd := v1.(*apiv1.VPC)
	upd.Metadata.Labels = map[string]string{"a": "1"}
	v2, err := c.Update(ctx, upd)
	if err != nil {
		t.Fatalf("update with the current resourceVersion: %v", err)
	}
	if v2.GetObjectMeta().ResourceVersion == v1.GetObjectMeta().ResourceVersion {
		t.Error("resourceVersion did not change on update")
	}
	if got := v2.(*apiv1.VPC).Status.VNI; got != v1.(*apiv1.VPC).Status.VNI || got == 0 {
		t.Errorf("status.vni = %d after update, want it kept (%d)", got, v1.(*apiv1.VPC).Status.VNI)
	}

	// upd still carries v1's resourceVersion: stale now.
	upd.Metadata.ResourceVersion = v1.GetObjectMeta().ResourceVersion
	_, err = c.Update(ctx, upd)
	if se := statusOf(t, err); se.Code != http.StatusConflict || !apiv1.IsConflict(err) {
		t.Errorf("stale update: %+v, want a 409 Conflict", se)
	}

	// No resourceVersion: last write wins.
	upd.Metadata.ResourceVersion = ""
	if _, err := c.Update(ctx, upd); err != nil {
		t.Errorf("update without resourceVersion: %v", err)
	}
}

func TestErrors(t *testing.T) {
	c, _ := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"), host("h1", "192.0.2.11"), vpc("acme", "main", nil, "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"))

	for _, tc := range []struct {
		name       string
		call       func() error
		wantCode   int
		wantReason string
		wantFields []string // causes' fields
		wantDeps   []string
	}{
		{
			name: "invalid",
			call: func() error {
				_, err := c.Create(ctx, vpc("acme", "bad", nil, "10.0.0.0/16", "10.0.128.0/17"))
				return err
			},
			wantCode: 422, wantReason: apiv1.ReasonInvalid, wantFields: []string{"spec.cidrs[1]"},
		},
		{
			name:     "unknown tenant",
			call:     func() error { _, err := c.Create(ctx, vpc("nope", "x", nil, "10.0.0.0/16")); return err },
			wantCode: 422, wantReason: apiv1.ReasonInvalid, wantFields: []string{"metadata.tenant"},
		},
		{
			name:     "not found",
			call:     func() error { _, err := c.Get(ctx, "endpoint", "acme", "nope"); return err },
			wantCode: 404, wantReason: apiv1.ReasonNotFound,
		},
		{
			name:     "already exists",
			call:     func() error { _, err := c.Create(ctx, tenant("acme")); return err },
			wantCode: 409, wantReason: apiv1.ReasonAlreadyExists,
		},
		{
			name:     "dependents",
			call:     func() error { _, err := c.Delete(ctx, "vpc", "acme", "main"); return err },
			wantCode: 409, wantReason: apiv1.ReasonConflict, wantDeps: []string{"subnet/acme/a"},
		},
		{
			name:     "bad selector",
			call:     func() error { _, _, err := c.List(ctx, "vpc", "", "a in ("); return err },
			wantCode: 400, wantReason: apiv1.ReasonBadRequest,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			se := statusOf(t, tc.call())
			var fields []string
			for _, c := range se.Causes {
				fields = append(fields, c.Field)
			}
			if diff := cmp.Diff(tc.wantCode, se.Code); diff != "" {
				t.Errorf("code (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantReason, se.Reason); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantFields, fields); diff != "" {
				t.Errorf("cause fields (-want +got):\n%s\n%v", diff, se)
			}
			if diff := cmp.Diff(tc.wantDeps, se.Dependents); diff != "" {
				t.Errorf("dependents (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClientSideErrors(t *testing.T) {
	c, srv := newClient(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"get without tenant", func() error { _, err := c.Get(ctx, "ep", "", "x"); return err }, "endpoint is tenant-scoped"},
		{"unknown kind", func() error { _, _, err := c.List(ctx, "gadgets", "", ""); return err }, `unknown kind "gadgets"`},
		{"no name", func() error { _, err := c.Create(ctx, tenant("")); return err }, "metadata.name is empty"},
		{"create without tenant", func() error { _, err := c.Create(ctx, vpc("", "x", nil)); return err }, "tenant-scoped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if got := srv.Requests(); len(got) != 0 {
		t.Errorf("client-side errors sent requests: %v", got)
	}
}

func TestNonJSONErrorBody(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer ts.Close()
	c, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Get(t.Context(), "tenant", "", "acme")
	se := statusOf(t, err)
	if se.Code != http.StatusBadGateway || se.Reason != apiv1.ReasonInternal || !strings.Contains(se.Message, "bad gateway") {
		t.Errorf("got %+v, want code 502, reason InternalError, the body in the message", se)
	}
}

func TestUnreachable(t *testing.T) {
	// A port that was just free: nothing listens on it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	c, err := client.New("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Get(t.Context(), "tenant", "", "acme")
	if err == nil {
		t.Fatal("Get from a dead server succeeded")
	}
	for _, want := range []string{"cannot reach the weft controller at http://" + addr, "is `weft controller` running?"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || ue.Server != "http://"+addr {
		t.Errorf("error %v is not an UnreachableError for %s", err, addr)
	}
	if apiv1.ReasonOf(err) != "" {
		t.Errorf("transport error has a StatusError reason %q", apiv1.ReasonOf(err))
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer ts.Close()
	defer close(release)
	c, err := client.New(ts.URL, client.WithTimeout(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Get(t.Context(), "tenant", "", "acme")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer within") {
		t.Errorf("error = %v, want a timeout naming the limit", err)
	}
}

func TestRaw(t *testing.T) {
	c, _ := newClient(t)
	resp, err := c.Raw(t.Context(), http.MethodGet, "healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", resp.StatusCode, body)
	}
}

func TestStatus(t *testing.T) {
	c, srv := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"), host("h1", "192.0.2.11"), vpc("acme", "main", nil, "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"), endpoint("acme", "web", "a", "h1"))
	created, err := c.Get(ctx, "ep", "acme", "web")
	if err != nil {
		t.Fatal(err)
	}
	alloc := created.(*apiv1.Endpoint).Status // ip, mac, host, vni, phase Pending
	withPhase := func(netns, phase, msg string) apiv1.EndpointStatus {
		s := alloc
		s.Netns, s.Phase, s.Message = netns, phase, msg
		return s
	}

	for _, step := range []struct {
		name  string
		write func() (apiv1.Object, error)
		want  apiv1.EndpointStatus
		ready string // the reason of the derived Ready condition
	}{
		{"patch sets the named fields", func() (apiv1.Object, error) {
			return c.PatchStatus(ctx, "endpoints", "acme", "web", map[string]string{"phase": "Failed", "message": "veth: EEXIST"})
		}, withPhase("", "Failed", "veth: EEXIST"), "Failed"},
		{"patch keeps the others and null removes", func() (apiv1.Object, error) {
			return c.PatchStatus(ctx, "ep", "acme", "web", map[string]any{"netns": "/run/netns/x", "phase": "Ready", "message": nil})
		}, withPhase("/run/netns/x", "Ready", ""), "Programming"},
		{"update replaces the whole status but the allocations", func() (apiv1.Object, error) {
			ep := endpoint("acme", "web", "a", "h1")
			ep.Status = apiv1.EndpointStatus{IP: "10.0.1.99", Phase: "Lost"}
			return c.UpdateStatus(ctx, ep)
		}, withPhase("", "Lost", ""), "Lost"},
	} {
		got, err := step.write()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		stored, err := srv.Env.Registry.Get(ctx, apiv1.RefOf(got))
		if err != nil {
			t.Fatal(err)
		}
		for what, o := range map[string]apiv1.Object{"returned": got, "stored": stored} {
			st := o.(*apiv1.Endpoint).Status
			if diff := cmp.Diff(step.want, st, cmpopts.IgnoreFields(apiv1.EndpointStatus{}, "Conditions")); diff != "" {
				t.Errorf("%s: %s status (-want +got):\n%s", step.name, what, diff)
			}
			if c := apiv1.FindCondition(st.Conditions, apiv1.ConditionReady); c == nil || c.Reason != step.ready {
				t.Errorf("%s: %s Ready condition %+v, want reason %s", step.name, what, c, step.ready)
			}
		}
	}

	for _, tc := range []struct {
		name       string
		call       func() error
		wantReason string
		wantMsg    string
	}{
		{"unknown field", func() error {
			_, err := c.PatchStatus(ctx, "ep", "acme", "web", map[string]string{"phse": "Ready"})
			return err
		}, apiv1.ReasonBadRequest, `unknown field "status.phse"`},
		{"missing object", func() error {
			_, err := c.PatchStatus(ctx, "hosts", "", "nope", map[string]string{"liveness": "Alive"})
			return err
		}, apiv1.ReasonNotFound, "host/nope not found"},
		{"kind without status", func() error {
			_, err := c.PatchStatus(ctx, "tenants", "", "acme", map[string]string{"x": "y"})
			return err
		}, apiv1.ReasonBadRequest, "Tenant has no status"},
		{"no tenant (client-side)", func() error {
			_, err := c.PatchStatus(ctx, "ep", "", "web", nil)
			return err
		}, "", "endpoint is tenant-scoped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || apiv1.ReasonOf(err) != tc.wantReason || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %v (reason %q), want reason %q and %q", err, apiv1.ReasonOf(err), tc.wantReason, tc.wantMsg)
			}
		})
	}
}
