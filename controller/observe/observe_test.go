package observe_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/observe"
	"github.com/weftnet/weft/internal/etcdtest"
)

// TestMain checks that the controllers, stores and etcds the tests close
// leave no goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// byHeader authenticates a request by its X-Test-Identity header:
// "role/tenant/host"; no header is no credential.
type byHeader struct{}

func (byHeader) Authenticate(r *http.Request) (*auth.Identity, error) {
	h := r.Header.Get("X-Test-Identity")
	if h == "" {
		return nil, nil
	}
	f := strings.Split(h, "/")
	return &auth.Identity{Subject: h, Role: f[0], Tenant: f[1], Host: f[2]}, nil
}

// start runs an observe controller over a store with acme's web-1 on h1
// and web-2 on h2, and zeta's web-1 on h1.
func start(t *testing.T, insecure bool) (*etcdtest.Env, *observe.Controller) {
	t.Helper()
	e := etcdtest.Start(t)
	ctx := context.Background()
	for _, o := range []apiv1.Object{
		etcdtest.Host("h1", "192.0.2.11"), etcdtest.Host("h2", "192.0.2.12"), etcdtest.Host("h3", "192.0.2.13"),
		etcdtest.Tenant("acme"), etcdtest.Tenant("zeta"),
		etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"),
		etcdtest.VPC("zeta", "main", "10.0.0.0/16"), etcdtest.Subnet("zeta", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("acme", "web-1", "a", "h1"), etcdtest.Endpoint("acme", "web-2", "a", "h2"),
		etcdtest.Endpoint("zeta", "web-1", "a", "h1"),
	} {
		if _, err := e.Registry.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	c, err := observe.New(observe.Config{Store: e.Store, Writer: e.Registry, Dir: t.TempDir(), Advertise: "http://127.0.0.1:1",
		Authenticator: byHeader{}, Insecure: insecure})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return e, c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
	}
}

// TestAuthorization: who may post a trace's report and read a capture's
// pcapng. A tenant reads its own captures only; an agent reports only a
// trace its host takes part in, as that host; to an agent other traces
// and captures do not exist; with no credential a secure controller
// answers 401.
func TestAuthorization(t *testing.T) {
	e, c := start(t, false)
	ctx := context.Background()
	tr := &apiv1.Trace{TypeMeta: etcdtest.TypeMeta(apiv1.KindTrace), Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "t"},
		Spec: apiv1.TraceSpec{From: "web-1", To: "web-2"}}
	cp := &apiv1.Capture{TypeMeta: etcdtest.TypeMeta(apiv1.KindCapture), Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "c"},
		Spec: apiv1.CaptureSpec{Endpoint: "web-1"}}
	for _, o := range []apiv1.Object{tr, cp} {
		if _, err := e.Registry.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// Resolved: the trace's hosts are h1 and h2.
	waitFor(t, "the trace arming", func() bool {
		o, ok := e.Store.Get(apiv1.KindTrace, "acme", "t")
		return ok && o.(*apiv1.Trace).Status.Phase == apiv1.PhaseArming
	})
	report := func(host string) string {
		o, _ := e.Store.Get(apiv1.KindTrace, "acme", "t")
		return `{"uid":"` + o.GetObjectMeta().UID + `","host":"` + host + `","armed":true}`
	}
	h := c.Handler()
	for _, tc := range []struct {
		name, method, path, who, body string
		want                          int
	}{
		{"no credential", "GET", "/apis/weft/v1/tenants/acme/captures/c/pcapng", "", "", http.StatusUnauthorized},
		{"other tenant reads", "GET", "/apis/weft/v1/tenants/acme/captures/c/pcapng", "tenant-admin/zeta/", "", http.StatusForbidden},
		{"no such capture", "GET", "/apis/weft/v1/tenants/acme/captures/nope/pcapng", "tenant-viewer/acme/", "", http.StatusNotFound},
		{"agent reads", "GET", "/apis/weft/v1/tenants/acme/captures/c/pcapng", "agent//h1", "", http.StatusNotFound},
		{"tenant reports", "POST", "/apis/weft/v1/tenants/acme/traces/t/report", "tenant-admin/acme/", report("h1"), http.StatusForbidden},
		{"agent of another host", "POST", "/apis/weft/v1/tenants/acme/traces/t/report", "agent//h3", report("h3"), http.StatusNotFound},
		{"agent as another host", "POST", "/apis/weft/v1/tenants/acme/traces/t/report", "agent//h1", report("h2"), http.StatusForbidden},
		{"agent of a host of the trace", "POST", "/apis/weft/v1/tenants/acme/traces/t/report", "agent//h2", report("h2"), http.StatusNoContent},
		{"agent uploads for another host", "POST", "/apis/weft/v1/tenants/acme/captures/c/upload?host=h1", "agent//h2", "", http.StatusNotFound},
		{"agent of a host without the tenant", "POST", "/apis/weft/v1/tenants/acme/captures/c/upload?host=h3", "agent//h3", "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.who != "" {
				r.Header.Set("X-Test-Identity", tc.who)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("%s %s as %q: %d %s, want %d", tc.method, tc.path, tc.who, w.Code, w.Body, tc.want)
			}
		})
	}
}

// TestExpiry: a Trace and a Capture are deleted when their TTL runs out.
func TestExpiry(t *testing.T) {
	e, _ := start(t, true)
	ctx := context.Background()
	for _, o := range []apiv1.Object{
		&apiv1.Trace{TypeMeta: etcdtest.TypeMeta(apiv1.KindTrace), Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "t"},
			Spec: apiv1.TraceSpec{From: "web-1", To: "web-2", TTL: "1s"}},
		&apiv1.Capture{TypeMeta: etcdtest.TypeMeta(apiv1.KindCapture), Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "c"},
			Spec: apiv1.CaptureSpec{Endpoint: "web-1", TTL: "1s"}},
		&apiv1.Capture{TypeMeta: etcdtest.TypeMeta(apiv1.KindCapture), Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "keep"},
			Spec: apiv1.CaptureSpec{Endpoint: "web-1"}},
	} {
		if _, err := e.Registry.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the trace and the capture expired", func() bool {
		_, tok := e.Store.Get(apiv1.KindTrace, "acme", "t")
		_, cok := e.Store.Get(apiv1.KindCapture, "acme", "c")
		return !tok && !cok
	})
	if _, ok := e.Store.Get(apiv1.KindCapture, "acme", "keep"); !ok {
		t.Error("a capture of the default TTL expired too")
	}
}
