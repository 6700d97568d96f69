package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/apitest"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, apitest.LeakOptions()...) }

// fakeAuth stands in for the controller's authentication until it lands:
// it checks login tokens (web.Authenticator) and, in front of the API,
// refuses requests without one of its tokens (401) and tenant roles'
// requests for hosts (403), as the real API will.
type fakeAuth struct {
	mu     sync.Mutex
	tokens map[string]web.Identity
	seen   []string // Authorization headers the API received
}

func newFakeAuth() *fakeAuth {
	return &fakeAuth{tokens: map[string]web.Identity{
		"weft_admin_secret":  {Subject: "admin", Role: "cluster-admin"},
		"weft_viewer_secret": {Subject: "viewer", Role: "tenant-viewer", Tenant: "acme"},
	}}
}

func (f *fakeAuth) Authenticate(_ context.Context, token string) (web.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.tokens[token]
	if !ok {
		return web.Identity{}, errors.New("unknown token")
	}
	return id, nil
}

func (f *fakeAuth) grant(token string, id web.Identity) {
	f.mu.Lock()
	f.tokens[token] = id
	f.mu.Unlock()
}

func (f *fakeAuth) revoke(token string) {
	f.mu.Lock()
	delete(f.tokens, token)
	f.mu.Unlock()
}

func (f *fakeAuth) authorizations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func (f *fakeAuth) guard(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		f.mu.Lock()
		f.seen = append(f.seen, authz)
		id, ok := f.tokens[strings.TrimPrefix(authz, "Bearer ")]
		f.mu.Unlock()
		switch {
		case !ok:
			writeError(w, apiv1.NewStatus(http.StatusUnauthorized, "Unauthorized", "no valid credential"))
		case id.Role != "cluster-admin" && strings.HasPrefix(r.URL.Path, "/apis/weft/v1/hosts"):
			writeError(w, apiv1.NewStatus(http.StatusForbidden, "Forbidden", "hosts are for cluster administrators"))
		default:
			api.ServeHTTP(w, r)
		}
	})
}

func writeError(w http.ResponseWriter, se *apiv1.StatusError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(se.Code)
	_ = json.NewEncoder(w).Encode(se)
}

// env is a controller's HTTP surface for a test: the real REST API over an
// embedded etcd, the UI, mounted as the controller mounts them.
type env struct {
	URL    string
	Env    *etcdtest.Env
	Client *client.Client // straight to the API (not through the UI)
	Auth   *fakeAuth      // nil without authentication

	transport http.RoundTripper
}

type envOptions struct {
	auth bool
	tls  bool
	// front, if set, wraps the API (fixtures of APIs that do not exist yet).
	front func(http.Handler) http.Handler
}

func startEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{Env: etcdtest.Start(t)}
	api, err := rest.NewHandler(rest.Config{Backend: e.Env.Registry, Version: "test", Insecure: true}) // the fake guard authenticates
	if err != nil {
		t.Fatal(err)
	}
	if o.front != nil {
		api = o.front(api)
	}
	cfg := web.Config{API: api, Hosts: e.Env.Registry}
	if o.auth {
		e.Auth = newFakeAuth()
		cfg.API = e.Auth.guard(api)
		cfg.Auth = e.Auth
	}
	ui, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle(web.Prefix, ui)
	mux.Handle("GET /{$}", http.RedirectHandler(web.Prefix, http.StatusFound))
	ts := httptest.NewUnstartedServer(mux)
	// Requests (watches) end with the test.
	ctx, cancel := context.WithCancel(context.Background())
	ts.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	if o.tls {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(func() {
		cancel()
		ts.Close()
	})
	e.URL, e.transport = ts.URL, ts.Client().Transport
	if e.Client, err = client.New(ts.URL, client.WithHTTPClient(ts.Client())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Client.Close() })
	return e
}

// browser is an HTTP client with a cookie jar: what a browser does with
// the session cookie, without the browser.
func (e *env) browser(t testing.TB) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: e.transport, Timeout: 30 * time.Second}
}

// do sends a request and returns the status code and body.
func do(t testing.TB, c *http.Client, method, url string, body string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

// login logs c in with token and returns the session's CSRF token.
func (e *env) login(t testing.TB, c *http.Client, token string) string {
	t.Helper()
	code, body, _ := do(t, c, "POST", e.URL+"/ui/login", `{"token":"`+token+`"}`, map[string]string{"Content-Type": "application/json"})
	if code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}
	var info struct{ CSRF string }
	if err := json.Unmarshal([]byte(body), &info); err != nil || info.CSRF == "" {
		t.Fatalf("login answered %s (%v)", body, err)
	}
	return info.CSRF
}

// create creates objects through the API, as a cluster administrator.
func (e *env) create(t testing.TB, objs ...apiv1.Object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, o := range objs {
		if _, err := e.Env.Registry.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
	}
}

// putHosts writes hosts, status included, straight into etcd (as their
// agents and the liveness tracker would have, without running them) and
// waits until the store has them (100,000 take about 10 s, over a minute
// on a loaded machine).
func (e *env) putHosts(t testing.TB, hosts []*apiv1.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const perTxn = 2000
	var (
		g   errgroup.Group
		mu  sync.Mutex
		rev int64
	)
	g.SetLimit(4)
	for i := 0; i < len(hosts); i += perTxn {
		chunk := hosts[i:min(i+perTxn, len(hosts))]
		g.Go(func() error {
			ops := make([]clientv3.Op, len(chunk))
			for j, h := range chunk {
				b, err := store.EncodeObject(h)
				if err != nil {
					return err
				}
				ops[j] = clientv3.OpPut(e.Env.Store.ObjectKey(apiv1.RefOf(h)), string(b))
			}
			// Puts are idempotent: a txn that timed out on a loaded
			// machine is sent again.
			res, err := e.Env.Client.Txn(ctx).Then(ops...).Commit()
			for try := 0; err != nil && errors.Is(err, rpctypes.ErrTimeout) && try < 3; try++ {
				res, err = e.Env.Client.Txn(ctx).Then(ops...).Commit()
			}
			if err != nil {
				return err
			}
			mu.Lock()
			rev = max(rev, res.Header.Revision)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := e.Env.Store.WaitForRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
}

// host builds a Host with a liveness state and a replica.
func host(name, ip, liveness, replica string) *apiv1.Host {
	h := etcdtest.Host(name, ip)
	h.Status = apiv1.HostStatus{Liveness: liveness, Replica: replica}
	return h
}
