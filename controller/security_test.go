package controller_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/wire"
)

// secure is a replica serving its default, secure API, and what a test
// needs to talk to it.
type secure struct {
	c     *controller.Controller
	url   string // https://…/apis/weft/v1
	base  string // https://…
	admin string // the cluster-admin token of admin.config
	ca    []byte
	hc    *http.Client
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSecure starts a replica with the default (TLS, credentials) API and
// reads the admin.config it writes on its first start (a replica without a
// data dir uses admin's).
func startSecure(t *testing.T, cfg controller.Config, admin *secure) *secure {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	if cfg.APIListen == "" {
		cfg.APIListen = "127.0.0.1:0"
	}
	if cfg.AgentListen == "" {
		cfg.AgentListen = "off"
	}
	c, err := controller.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s := &secure{c: c, base: c.ServerURL(), url: c.ServerURL() + "/apis/weft/v1", ca: c.CACert(), logs: logs}
	if admin != nil {
		s.admin = admin.admin
	} else {
		path := filepath.Join(cfg.DataDir, "admin.config")
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin.config: %v (mode %v), want a file of mode 0600", err, fi.Mode())
		}
		b, _ := os.ReadFile(path)
		var conf struct {
			CurrentContext string `json:"currentContext"`
			Contexts       []struct {
				Name, Server, Token      string
				CertificateAuthorityData string `json:"certificateAuthorityData"`
			} `json:"contexts"`
		}
		if err := yaml.Unmarshal(b, &conf); err != nil || len(conf.Contexts) != 1 || conf.Contexts[0].Name != conf.CurrentContext {
			t.Fatalf("admin.config: %v: %s", err, b)
		}
		ac := conf.Contexts[0]
		caPEM, _ := base64.StdEncoding.DecodeString(ac.CertificateAuthorityData)
		if ac.Server != s.base || !bytes.Equal(caPEM, s.ca) {
			t.Fatalf("admin.config names server %s and CA %q, want %s and the cluster CA", ac.Server, caPEM, s.base)
		}
		s.admin = ac.Token
	}
	s.hc = s.client(t)
	return s
}

// client returns an HTTPS client that trusts the cluster CA and presents
// certs.
func (s *secure) client(t *testing.T, certs ...tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.ca) {
		t.Fatal("CA: no PEM")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// do sends a request with a bearer token ("" none) and returns the status
// and the body.
func (s *secure) do(t *testing.T, token, method, path, body string) (int, string) {
	t.Helper()
	return doWith(t, s.hc, token, method, s.url+path, body)
}

func doWith(t *testing.T, hc *http.Client, token, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	ct := "application/json"
	if method == http.MethodPatch {
		ct = "application/merge-patch+json"
	}
	req.Header.Set("Content-Type", ct)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// must sends a request that has to succeed with code.
func (s *secure) must(t *testing.T, token, method, path, body string, code int) string {
	t.Helper()
	got, b := s.do(t, token, method, path, body)
	if got != code {
		t.Fatalf("%s %s: %d %s, want %d", method, path, got, b, code)
	}
	return b
}

// token creates a token as the cluster admin.
func (s *secure) token(t *testing.T, role, tenant, host string) (id, secret string) {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"role": role, "tenant": tenant, "host": host})
	var out struct{ ID, Token string }
	if err := json.Unmarshal([]byte(s.must(t, s.admin, "POST", "/tokens", string(b), http.StatusCreated)), &out); err != nil {
		t.Fatal(err)
	}
	return out.ID, out.Token
}

type enrolment struct {
	HostUID, HostKey, Token, CA string
}

// enrol enrols host with a fresh bootstrap token.
func (s *secure) enrol(t *testing.T, host, ip string) enrolment {
	t.Helper()
	_, boot := s.token(t, "bootstrap", "", host)
	var e enrolment
	if err := json.Unmarshal([]byte(s.must(t, boot, "POST", "/enroll", `{"host":"`+host+`","underlayIP":"`+ip+`"}`, http.StatusOK)), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func obj(kind, tenant, name, spec string) string {
	md := `"name":"` + name + `"`
	if tenant != "" {
		md += `,"tenant":"` + tenant + `"`
	}
	return `{"apiVersion":"weft/v1","kind":"` + kind + `","metadata":{` + md + `},"spec":` + spec + `}`
}

// TestAnonymous: without a credential everything but the health, version
// and CA endpoints answers 401; plain HTTP is not served.
func TestAnonymous(t *testing.T) {
	s := startSecure(t, controller.Config{DataDir: t.TempDir()}, nil)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/apis/weft/v1/tenants"}, {"GET", "/apis/weft/v1/tenants/acme/vpcs"}, {"GET", "/apis/weft/v1/hosts/h1"},
		{"POST", "/apis/weft/v1/tenants"}, {"GET", "/apis/weft/v1/endpoints?watch=true"}, {"GET", "/apis/weft/v1/tokens"},
		{"POST", "/apis/weft/v1/enroll"}, {"POST", "/apis/weft/v1/certificates"}, {"GET", "/metrics"}, {"GET", "/openapi.json"},
		{"GET", "/nowhere"}, {"DELETE", "/apis/weft/v1/tenants/acme"},
	} {
		code, body := doWith(t, s.hc, "", tc.method, s.base+tc.path, "{}")
		var se apiv1.StatusError
		if code != http.StatusUnauthorized || json.Unmarshal([]byte(body), &se) != nil || se.Reason != apiv1.ReasonUnauthorized {
			t.Errorf("anonymous %s %s: %d %s, want 401 Unauthorized", tc.method, tc.path, code, body)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/version", "/apis/weft/v1/ca"} {
		if code, body := doWith(t, s.hc, "", "GET", s.base+p, ""); code != http.StatusOK {
			t.Errorf("anonymous GET %s: %d %s, want 200", p, code, body)
		}
	}
	if _, body := doWith(t, s.hc, "", "GET", s.url+"/ca", ""); body != string(s.ca) {
		t.Errorf("/ca is not the cluster CA: %q", body)
	}
	for _, bad := range []string{"weft_0011223344556677_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nonsense", s.admin + "x"} {
		if code, _ := s.do(t, bad, "GET", "/tenants", ""); code != http.StatusUnauthorized {
			t.Errorf("token %q: %d, want 401", bad, code)
		}
	}
	resp, err := http.Get("http://" + s.c.APIAddr() + "/apis/weft/v1/tenants")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP served: %s", b)
		}
	}
	s.must(t, s.admin, "GET", "/tenants", "", http.StatusOK)
}

// TestTenantIsolation: tenant acme's credentials see and change nothing of
// tenant globex, and no response or error of theirs carries globex's data;
// the viewer cannot write; the tenant admin cannot touch the privileged
// fields; the agent of h1 reaches nothing of h2.
func TestTenantIsolation(t *testing.T) {
	s := startSecure(t, controller.Config{DataDir: t.TempDir()}, nil)
	a := s.admin
	for _, c := range []struct{ path, body string }{
		{"/tenants", obj("Tenant", "", "acme", `{}`)},
		{"/tenants", obj("Tenant", "", "globex", `{"description":"gx-secret"}`)},
		{"/hosts", obj("Host", "", "h1", `{"underlayIP":"192.0.2.1"}`)},
		{"/hosts", obj("Host", "", "h2", `{"underlayIP":"192.0.2.2"}`)},
		{"/tenants/acme/vpcs", obj("VPC", "", "main", `{"cidrs":["10.0.0.0/16"]}`)},
		{"/tenants/acme/subnets", obj("Subnet", "", "a", `{"vpc":"main","cidr":"10.0.1.0/24"}`)},
		{"/tenants/acme/endpoints", obj("Endpoint", "", "web", `{"subnet":"a","host":"h1"}`)},
		{"/tenants/acme/endpoints", obj("Endpoint", "", "db", `{"subnet":"a","host":"h2"}`)},
		{"/tenants/globex/vpcs", obj("VPC", "", "gx-vpc", `{"cidrs":["10.77.0.0/16"]}`)},
		{"/tenants/globex/subnets", obj("Subnet", "", "gx-sub", `{"vpc":"gx-vpc","cidr":"10.77.1.0/24"}`)},
		{"/tenants/globex/endpoints", obj("Endpoint", "", "gx-web", `{"subnet":"gx-sub","host":"h2"}`)},
	} {
		s.must(t, a, "POST", c.path, c.body, http.StatusCreated)
	}
	_, ta := s.token(t, "tenant-admin", "acme", "")
	_, tv := s.token(t, "tenant-viewer", "acme", "")
	ag := s.enrol(t, "h1", "192.0.2.1").Token
	ep := func(name, host, netns, labels string) string {
		spec := `{"subnet":"a","host":"` + host + `"`
		if netns != "" {
			spec += `,"netns":"` + netns + `"`
		}
		return `{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"` + name + `","labels":{` + labels + `}},"spec":` + spec + `}}`
	}
	// Globex's data, of which nothing may reach acme's credentials.
	secrets := []string{"globex", "gx-", "10.77."}
	for _, tc := range []struct {
		name, token, method, path, body string
		want                            []int
	}{
		{"list another tenant", ta, "GET", "/tenants/globex/vpcs", "", []int{403}},
		{"get another tenant's object", ta, "GET", "/tenants/globex/vpcs/gx-vpc", "", []int{403}},
		{"get another tenant's missing object", ta, "GET", "/tenants/globex/vpcs/nope", "", []int{403}},
		{"watch another tenant", ta, "GET", "/tenants/globex/endpoints?watch=true", "", []int{403}},
		{"create in another tenant", ta, "POST", "/tenants/globex/vpcs", obj("VPC", "", "x", `{"cidrs":["10.9.0.0/16"]}`), []int{403}},
		{"update in another tenant", ta, "PUT", "/tenants/globex/vpcs/gx-vpc", obj("VPC", "", "gx-vpc", `{"cidrs":["10.77.0.0/16"]}`), []int{403}},
		{"delete in another tenant", ta, "DELETE", "/tenants/globex/endpoints/gx-web", "", []int{403}},
		{"status in another tenant", ta, "PATCH", "/tenants/globex/endpoints/gx-web/status", `{"status":{"phase":"Failed"}}`, []int{403}},
		{"read another Tenant", ta, "GET", "/tenants/globex", "", []int{403}},
		{"viewer reads another tenant", tv, "GET", "/tenants/globex/endpoints/gx-web", "", []int{403}},
		{"list hosts", ta, "GET", "/hosts", "", []int{403}},
		{"tokens", ta, "GET", "/tokens", "", []int{403}},
		{"viewer creates", tv, "POST", "/tenants/acme/vpcs", obj("VPC", "", "v2", `{"cidrs":["10.5.0.0/16"]}`), []int{403}},
		{"viewer updates", tv, "PUT", "/tenants/acme/vpcs/main", obj("VPC", "", "main", `{"cidrs":["10.0.0.0/16"]}`), []int{403}},
		{"viewer deletes", tv, "DELETE", "/tenants/acme/endpoints/web", "", []int{403}},
		{"viewer reads", tv, "GET", "/tenants/acme/endpoints/web", "", []int{200}},
		{"admin sets netns", ta, "POST", "/tenants/acme/endpoints", ep("x", "h1", "/proc/1/ns/net", ""), []int{403}},
		{"admin changes netns", ta, "PUT", "/tenants/acme/endpoints/web", ep("web", "h1", "/proc/1/ns/net", ""), []int{403}},
		{"admin moves an endpoint", ta, "PUT", "/tenants/acme/endpoints/web", ep("web", "h2", "", ""), []int{403}},
		{"admin relabels an endpoint", ta, "PUT", "/tenants/acme/endpoints/web", ep("web", "h1", "", `"app":"web"`), []int{200}},
		{"admin places an endpoint", ta, "POST", "/tenants/acme/endpoints", ep("new", "h1", "", ""), []int{201}},
		{"admin creates a host", ta, "POST", "/hosts", obj("Host", "", "h9", `{"underlayIP":"192.0.2.9"}`), []int{403}},
		{"admin changes a host", ta, "PUT", "/hosts/h1", obj("Host", "", "h1", `{"underlayIP":"203.0.113.1"}`), []int{403}},
		{"admin writes a host's status", ta, "PATCH", "/hosts/h1/status", `{"status":{"liveness":"Dead"}}`, []int{403}},
		{"admin writes an endpoint's status", ta, "PATCH", "/tenants/acme/endpoints/web/status", `{"status":{"phase":"Ready"}}`, []int{403}},
		{"admin writes its Tenant", ta, "PUT", "/tenants/acme", obj("Tenant", "", "acme", `{"quota":{"endpoints":1000000}}`), []int{403}},
		{"agent reads its host", ag, "GET", "/hosts/h1", "", []int{200}},
		{"agent reads another host", ag, "GET", "/hosts/h2", "", []int{403}},
		{"agent writes its host's status", ag, "PATCH", "/hosts/h1/status", `{"status":{"agentVersion":"test"}}`, []int{200}},
		{"agent writes another host's status", ag, "PATCH", "/hosts/h2/status", `{"status":{"liveness":"Dead"}}`, []int{403}},
		{"agent changes its host", ag, "PUT", "/hosts/h1", obj("Host", "", "h1", `{"underlayIP":"203.0.113.1"}`), []int{403}},
		{"agent reads an endpoint of its host", ag, "GET", "/tenants/acme/endpoints/web", "", []int{200}},
		{"agent reads an endpoint of another host", ag, "GET", "/tenants/acme/endpoints/db", "", []int{404}},
		{"agent writes the status of another host's endpoint", ag, "PATCH", "/tenants/globex/endpoints/gx-web/status", `{"status":{"phase":"Failed"}}`, []int{404}},
		{"agent deletes another host's endpoint", ag, "DELETE", "/tenants/acme/endpoints/db", "", []int{404}},
		{"agent creates on another host", ag, "POST", "/tenants/acme/endpoints", ep("cni", "h2", "/run/netns/x", ""), []int{403}},
		{"agent moves an endpoint", ag, "PUT", "/tenants/acme/endpoints/web", ep("web", "h2", "", ""), []int{403}},
		{"agent reads a tenant without endpoints on its host", ag, "GET", "/tenants/globex/vpcs", "", []int{403}},
		{"agent writes its endpoint's status", ag, "PATCH", "/tenants/acme/endpoints/web/status", `{"status":{"phase":"Ready"}}`, []int{200}},
		{"agent creates on its host with netns", ag, "POST", "/tenants/acme/endpoints", ep("cni", "h1", "/run/netns/x", ""), []int{201}},
		{"agent reads its tenants' VPCs", ag, "GET", "/tenants/acme/vpcs/main", "", []int{200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := s.do(t, tc.token, tc.method, tc.path, tc.body)
			ok := false
			for _, w := range tc.want {
				ok = ok || code == w
			}
			if !ok {
				t.Fatalf("%d %s, want %v", code, body, tc.want)
			}
			for _, sec := range secrets {
				if tc.token != ag && strings.Contains(body, sec) {
					t.Errorf("the answer carries %q: %s", sec, body)
				}
			}
		})
	}
	if code, _ := doWith(t, s.hc, ta, "GET", s.base+"/metrics", ""); code != http.StatusForbidden {
		t.Errorf("tenant admin reads /metrics: %d, want 403", code)
	}
	// Lists across tenants (and hosts) are narrowed.
	for _, tc := range []struct {
		token, path string
		want        []string
	}{
		{ta, "/endpoints", []string{"acme/cni", "acme/db", "acme/new", "acme/web"}},
		{tv, "/vpcs", []string{"acme/main"}},
		{ta, "/tenants", []string{"/acme"}},
		{ag, "/endpoints", []string{"acme/cni", "acme/new", "acme/web"}},
		{ag, "/hosts", []string{"/h1"}},
		{ag, "/vpcs", []string{"acme/main"}},
	} {
		body := s.must(t, tc.token, "GET", tc.path, "", http.StatusOK)
		var list struct {
			Items []struct{ Metadata apiv1.ObjectMeta } `json:"items"`
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, it := range list.Items {
			got = append(got, it.Metadata.Tenant+"/"+it.Metadata.Name)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("GET %s: %v, want %v", tc.path, got, tc.want)
		}
		if tc.token != ag {
			for _, sec := range secrets {
				if strings.Contains(body, sec) {
					t.Errorf("GET %s carries %q: %s", tc.path, sec, body)
				}
			}
		}
	}

	// A watch across tenants carries acme's events only: globex's
	// endpoint, created first, never shows.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/endpoints?watch=true", nil)
	req.Header.Set("Authorization", "Bearer "+ta)
	resp, err := s.hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %v %v", err, resp)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	for range 4 { // the initial ADDED events of acme's endpoints
		if !lines.Scan() {
			t.Fatal("watch ended")
		}
	}
	s.must(t, a, "POST", "/tenants/globex/endpoints", obj("Endpoint", "", "gx-late", `{"subnet":"gx-sub","host":"h1"}`), http.StatusCreated)
	s.must(t, a, "DELETE", "/tenants/globex/endpoints/gx-late", "", http.StatusOK)
	s.must(t, a, "POST", "/tenants/acme/endpoints", obj("Endpoint", "", "late", `{"subnet":"a","host":"h1"}`), http.StatusCreated)
	if !lines.Scan() {
		t.Fatal("watch ended")
	}
	if l := lines.Text(); !strings.Contains(l, `"name":"late"`) || strings.Contains(l, "gx-") || strings.Contains(l, "globex") {
		t.Errorf("next watch event %s, want acme's endpoint late", l)
	}

	// One audit line per write, naming the credential.
	if logs := s.logs.String(); !strings.Contains(logs, `"subsystem":"audit"`) ||
		!strings.Contains(logs, `"role":"tenant-admin","tenant":"acme","host":"","verb":"create","object":"endpoint/acme/new","code":201`) ||
		!strings.Contains(logs, `"role":"tenant-viewer","tenant":"acme","host":"","verb":"delete","object":"endpoint/acme/web","code":403`) {
		t.Errorf("audit log lacks the writes; log:\n%s", logs)
	}
}

// hello opens a config stream with the key of host and reports whether the
// replica welcomes it.
func hello(t *testing.T, addr, host string, key []byte) bool {
	t.Helper()
	wc := openSession(t, addr, host, key)
	if wc != nil {
		wc.Close()
	}
	return wc != nil
}

// openSession opens a config stream with the key of host: the connection,
// sealed, once the replica welcomed it; nil if it refused it.
func openSession(t *testing.T, addr, host string, key []byte) *wire.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wc := wire.NewConn(nc, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nonce, _ := wire.NewNonce()
	w, _, err := wc.Handshake(ctx, &wire.Hello{Host: host, Nonce: nonce, Time: time.Now().Unix()}, key)
	if err != nil || w.Error != "" {
		wc.Close()
		return nil
	}
	return wc
}

// TestRevocationOnTwoReplicas: a revoked token, and a deleted Host's agent
// token and key, are refused by both replicas of one etcd within a
// second; a Host created again under the name revives neither.
func TestRevocationOnTwoReplicas(t *testing.T) {
	a := startSecure(t, controller.Config{DataDir: t.TempDir(), AgentListen: "127.0.0.1:0"}, nil)
	cli, err := a.c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	b := startSecure(t, controller.Config{EtcdEndpoints: cli.Endpoints(), ClusterKeyFile: a.c.ClusterKeyFile(), AgentListen: "127.0.0.1:0"}, a)
	replicas := []*secure{a, b}
	// status is a GET of h1 with token. 404: the token still works on
	// the replica but h1 is gone (its deletion and its credentials' are
	// one transaction, which the replica's cache and its token table apply
	// one after the other).
	status := func(r *secure, token string) int {
		code, body := r.do(t, token, "GET", "/hosts/h1", "")
		if code != http.StatusOK && code != http.StatusUnauthorized && code != http.StatusForbidden && code != http.StatusNotFound {
			t.Fatalf("%d %s", code, body)
		}
		return code
	}
	works := func(r *secure, token string) bool { return status(r, token) == http.StatusOK }
	// refusedWithin waits until every replica refuses; it must take less
	// than a second from since.
	refusedWithin := func(what string, since time.Time, refused func(r *secure) bool) {
		t.Helper()
		for _, r := range replicas {
			for !refused(r) {
				if time.Since(since) > 5*time.Second {
					t.Fatalf("%s: still accepted by %s after 5s", what, r.base)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		d := time.Since(since)
		if d > time.Second {
			t.Errorf("%s: refused by every replica after %v, want within 1s", what, d)
		}
		t.Logf("%s: refused by both replicas %v after the write was acknowledged", what, d.Round(time.Millisecond))
	}
	a.must(t, a.admin, "POST", "/hosts", obj("Host", "", "h0", `{"underlayIP":"192.0.2.100"}`), http.StatusCreated)
	id, viewer := a.token(t, "cluster-admin", "", "")
	waitFor(t, "the new token on replica B", func() bool { code, _ := b.do(t, viewer, "GET", "/hosts", ""); return code == http.StatusOK })
	// A watch opened with the token ends when it is revoked.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.url+"/hosts?watch=true", nil)
	req.Header.Set("Authorization", "Bearer "+viewer)
	resp, err := b.hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %v %v", err, resp)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() { // h0
		t.Fatal("watch ended")
	}
	t0 := time.Now()
	a.must(t, a.admin, "DELETE", "/tokens/"+id, "", http.StatusOK)
	refusedWithin("revoked token", t0, func(r *secure) bool {
		code, _ := r.do(t, viewer, "GET", "/hosts", "")
		return code == http.StatusUnauthorized
	})
	for lines.Scan() {
		if l := lines.Text(); !strings.Contains(l, `"type":"ERROR"`) || !strings.Contains(l, "Unauthorized") {
			t.Errorf("the revoked token's watch went on: %s", l)
		}
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("the revoked token's watch ended %v after the revocation, want within a second or so", d)
	}

	e := a.enrol(t, "h1", "192.0.2.1")
	key, err := secrets.ParseKey(e.HostKey)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent token and key on both replicas", func() bool {
		return works(a, e.Token) && works(b, e.Token) && hello(t, a.c.AgentAddr(), "h1", key) && hello(t, b.c.AgentAddr(), "h1", key)
	})
	// A session open on each replica is cut when the Host goes.
	var cut [2]atomic.Bool
	var readers sync.WaitGroup
	defer readers.Wait()
	for i, r := range replicas {
		wc := openSession(t, r.c.AgentAddr(), "h1", key)
		if wc == nil {
			t.Fatalf("%s refused h1", r.base)
		}
		defer wc.Close()
		readers.Go(func() {
			for {
				if _, err := wc.ReadMessage(context.Background()); err != nil {
					cut[i].Store(true)
					return
				}
			}
		})
	}
	t0 = time.Now()
	a.must(t, a.admin, "DELETE", "/hosts/h1", "", http.StatusOK)
	refusedWithin("deleted host's agent token", t0, func(r *secure) bool { return status(r, e.Token) == http.StatusUnauthorized })
	refusedWithin("deleted host's key", t0, func(r *secure) bool { return !hello(t, r.c.AgentAddr(), "h1", key) })
	refusedWithin("deleted host's open sessions", t0, func(r *secure) bool {
		i := slices.Index(replicas, r)
		return cut[i].Load()
	})

	a.must(t, a.admin, "POST", "/hosts", obj("Host", "", "h1", `{"underlayIP":"192.0.2.1"}`), http.StatusCreated)
	waitFor(t, "the new h1 on replica B", func() bool { code, _ := b.do(t, b.admin, "GET", "/hosts/h1", ""); return code == http.StatusOK })
	for _, r := range replicas {
		if works(r, e.Token) || hello(t, r.c.AgentAddr(), "h1", key) {
			t.Errorf("%s: the deleted h1's credentials work for the new h1", r.base)
		}
	}
}

// TestEnrollOnce: a bootstrap token enrols its own host, once.
func TestEnrollOnce(t *testing.T) {
	s := startSecure(t, controller.Config{DataDir: t.TempDir()}, nil)
	_, boot := s.token(t, "bootstrap", "", "h1")
	s.must(t, boot, "POST", "/enroll", `{"host":"h2","underlayIP":"192.0.2.2"}`, http.StatusForbidden)
	s.must(t, boot, "GET", "/hosts/h1", "", http.StatusForbidden)
	var e enrolment
	if err := json.Unmarshal([]byte(s.must(t, boot, "POST", "/enroll", `{"host":"h1","underlayIP":"192.0.2.1"}`, http.StatusOK)), &e); err != nil {
		t.Fatal(err)
	}
	if len(e.HostKey) != 64 || e.CA != string(s.ca) || !strings.HasPrefix(e.Token, "weft_") {
		t.Errorf("enrolment %+v", e)
	}
	s.must(t, boot, "POST", "/enroll", `{"host":"h1","underlayIP":"192.0.2.1"}`, http.StatusUnauthorized)
	body := s.must(t, s.admin, "GET", "/hosts/h1", "", http.StatusOK)
	if !strings.Contains(body, `"uid":"`+e.HostUID+`"`) || !strings.Contains(body, "192.0.2.1") {
		t.Errorf("enrolled Host: %s", body)
	}
	var list struct {
		Items []struct{ Role, Host, HostUID string }
	}
	if err := json.Unmarshal([]byte(s.must(t, s.admin, "GET", "/tokens", "", http.StatusOK)), &list); err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, tok := range list.Items {
		roles[tok.Role]++
		if tok.Role == "agent" && (tok.Host != "h1" || tok.HostUID != e.HostUID) {
			t.Errorf("agent token %+v, want bound to h1 %s", tok, e.HostUID)
		}
	}
	if roles["bootstrap"] != 0 || roles["agent"] != 1 {
		t.Errorf("tokens after enrolment: %v, want one agent token and no bootstrap token", roles)
	}
}

// TestClientCertificates: a certificate from the cluster CA authenticates
// with its role and scope; one from another CA does not get through TLS.
func TestClientCertificates(t *testing.T) {
	s := startSecure(t, controller.Config{DataDir: t.TempDir()}, nil)
	s.must(t, s.admin, "POST", "/tenants", obj("Tenant", "", "acme", `{}`), http.StatusCreated)
	s.must(t, s.admin, "POST", "/hosts", obj("Host", "", "h1", `{"underlayIP":"192.0.2.1"}`), http.StatusCreated)
	issue := func(cn, role, tenant, host string) tls.Certificate {
		t.Helper()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
		csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		b, _ := json.Marshal(map[string]string{"csr": string(csr), "role": role, "tenant": tenant, "host": host, "ttl": "1h"})
		var out struct{ Certificate, CA string }
		if err := json.Unmarshal([]byte(s.must(t, s.admin, "POST", "/certificates", string(b), http.StatusCreated)), &out); err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode([]byte(out.Certificate))
		return tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}
	}
	viewer := s.client(t, issue("alice", "tenant-viewer", "acme", ""))
	if code, body := doWith(t, viewer, "", "GET", s.url+"/tenants/acme/vpcs", ""); code != http.StatusOK {
		t.Errorf("viewer certificate reads its tenant: %d %s", code, body)
	}
	if code, _ := doWith(t, viewer, "", "POST", s.url+"/tenants/acme/vpcs", obj("VPC", "", "v", `{"cidrs":["10.0.0.0/16"]}`)); code != http.StatusForbidden {
		t.Errorf("viewer certificate writes: %d, want 403", code)
	}
	agent := s.client(t, issue("h1", "agent", "", "h1"))
	if code, body := doWith(t, agent, "", "GET", s.url+"/hosts/h1", ""); code != http.StatusOK {
		t.Errorf("agent certificate reads its host: %d %s", code, body)
	}
	s.must(t, s.admin, "DELETE", "/hosts/h1", "", http.StatusOK)
	s.must(t, s.admin, "POST", "/hosts", obj("Host", "", "h1", `{"underlayIP":"192.0.2.1"}`), http.StatusCreated)
	if code, _ := doWith(t, agent, "", "GET", s.url+"/hosts/h1", ""); code != http.StatusUnauthorized {
		t.Errorf("agent certificate of a deleted Host: %d, want 401", code)
	}
	// A certificate of a CA the cluster does not know fails the handshake
	// (sent even though the server does not ask for its CA).
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mallory"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &otherKey.PublicKey, otherKey)
	req, _ := http.NewRequest("GET", s.url+"/tenants", nil)
	foreign := s.client(t)
	foreign.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: otherKey}, nil
	}
	if resp, err := foreign.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("a foreign client certificate got through: %s", resp.Status)
	}
}

// TestMetricsListener: /metrics needs a cluster admin on the API port and
// nothing on the metrics listener.
func TestMetricsListener(t *testing.T) {
	s := startSecure(t, controller.Config{DataDir: t.TempDir(), MetricsListen: "127.0.0.1:0"}, nil)
	if code, body := doWith(t, s.hc, s.admin, "GET", s.base+"/metrics", ""); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics as admin: %d", code)
	}
	resp, err := http.Get("http://" + s.c.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "weft_api_requests_total") {
		t.Errorf("metrics listener: %s", resp.Status)
	}
}

// TestWebLogin: on a secure controller the web UI asks for a login with a
// token the API accepts, and calls the API with it.
func TestWebLogin(t *testing.T) {
	s := startSecure(t, controller.Config{DataDir: t.TempDir()}, nil)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := s.client(t)
	hc.Jar = jar
	if code, _ := doWith(t, hc, "", "GET", s.base+"/ui/apis/weft/v1/tenants", ""); code != http.StatusUnauthorized {
		t.Errorf("the UI's API without a login: %d, want 401", code)
	}
	if code, _ := doWith(t, hc, "", "POST", s.base+"/ui/login", `{"token":"weft_0011223344556677_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`); code != http.StatusUnauthorized {
		t.Errorf("login with an unknown token: %d, want 401", code)
	}
	_, viewer := s.token(t, "tenant-viewer", "acme", "")
	if code, body := doWith(t, hc, "", "POST", s.base+"/ui/login", `{"token":"`+viewer+`"}`); code != http.StatusOK || !strings.Contains(body, `"tenant-viewer"`) {
		t.Fatalf("login: %d %s", code, body)
	}
	if code, body := doWith(t, hc, "", "GET", s.base+"/ui/apis/weft/v1/tenants/acme/vpcs", ""); code != http.StatusOK {
		t.Errorf("the UI's API as the viewer: %d %s", code, body)
	}
	if code, _ := doWith(t, hc, "", "GET", s.base+"/ui/apis/weft/v1/hosts", ""); code != http.StatusForbidden {
		t.Errorf("the UI's API lists hosts for a viewer: %d, want 403", code)
	}
}
