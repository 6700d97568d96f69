package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

func TestParseToken(t *testing.T) {
	tok, id, _ := newToken()
	if gotID, secret, err := ParseToken(tok); err != nil || gotID != id || len(secret) != secretBytes {
		t.Fatalf("ParseToken(%q) = %q, %d bytes, %v", tok, gotID, len(secret), err)
	}
	for _, bad := range []string{
		"", "weft_", tok[:len(tok)-1], tok + "A", strings.Replace(tok, "weft_", "WEFT_", 1),
		tok[:5] + strings.ToUpper(tok[5:21]) + tok[21:], // upper-case hex ID
		tok[:21] + "-" + tok[22:],                       // the separator
		tok[:len(tok)-1] + "=",                          // padding
		tok[:len(tok)-1] + "B",                          // non-zero trailing bits
	} {
		if bad == tok {
			continue
		}
		if _, _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

// FuzzParseToken: whatever parses is exactly a token as newToken writes
// them.
func FuzzParseToken(f *testing.F) {
	tok, _, _ := newToken()
	for _, s := range []string{tok, "weft_0011223344556677_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "", "weft__"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseToken(s)
		if err != nil {
			return
		}
		if again := tokenPrefix + id + "_" + b64.EncodeToString(secret); again != s {
			t.Fatalf("ParseToken(%q) = %q %x, which formats as %q", s, id, secret, again)
		}
	})
}

// startTokens starts n Tokens followers of one etcd with the clock now.
func startTokens(t *testing.T, n int, now func() time.Time) []*Tokens {
	t.Helper()
	env := etcdtest.Start(t)
	var out []*Tokens
	for range n {
		tk, err := NewTokens(TokensConfig{Store: env.Store, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tk.Close() })
		out = append(out, tk)
	}
	return out
}

// TestTokens: a token works on every follower until it is revoked or
// expires; requests that do not fit their role are refused.
func TestTokens(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tks := startTokens(t, 2, clock)
	a, b := tks[0], tks[1]
	for _, bad := range []TokenRequest{
		{Scope: Scope{Role: "root"}},
		{Scope: Scope{Role: RoleTenantAdmin}},
		{Scope: Scope{Role: RoleClusterAdmin, Tenant: "acme"}},
		{Scope: Scope{Role: RoleBootstrap}},
		{Scope: Scope{Role: RoleTenantViewer, Tenant: "a/b"}},
		{Scope: Scope{Role: RoleClusterAdmin}, TTL: "-1h"},
		{Scope: Scope{Role: RoleClusterAdmin}, TTL: "soon"},
	} {
		if _, err := a.Create(ctx, bad); apiv1.ReasonOf(err) != apiv1.ReasonBadRequest {
			t.Errorf("Create(%+v): %v, want 400", bad, err)
		}
	}
	if _, err := a.Create(ctx, TokenRequest{Scope: Scope{Role: RoleAgent, Host: "nope"}}); !apiv1.IsNotFound(err) {
		t.Errorf("agent token of a missing Host: %v, want 404", err)
	}
	forever, err := a.Create(ctx, TokenRequest{Scope: Scope{Role: RoleTenantViewer, Tenant: "acme"}, Description: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	hour, err := a.Create(ctx, TokenRequest{Scope: Scope{Role: RoleClusterAdmin}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	boot, err := a.Create(ctx, TokenRequest{Scope: Scope{Role: RoleBootstrap, Host: "h1"}})
	if err != nil || boot.Expires != now.Add(BootstrapTTL).Format(time.RFC3339) {
		t.Fatalf("bootstrap token %+v %v, want expiring after %v", boot, err, BootstrapTTL)
	}
	if id, err := a.lookup(forever.Secret); err != nil || id.Role != RoleTenantViewer || id.Tenant != "acme" || id.Subject != "token/"+forever.ID {
		t.Fatalf("lookup: %+v %v", id, err)
	}
	// The second follower sees all three (the bootstrap token was written
	// last) and accepts them.
	waitFor(t, "the tokens on the second follower", func() bool { return len(b.List()) == 3 })
	if _, err := b.lookup(hour.Secret); err != nil {
		t.Errorf("lookup on the second follower: %v", err)
	}
	for _, l := range b.List() {
		if l.ID == forever.ID && (l.Description != "ci" || l.Expires != "") {
			t.Errorf("listed %+v", l)
		}
	}
	wrong := forever.Secret[:len(forever.Secret)-2] + "AA"
	if _, err := a.lookup(wrong); err == nil {
		t.Error("a token with another secret authenticates")
	}

	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	for _, tk := range tks {
		if _, err := tk.lookup(hour.Secret); err == nil {
			t.Error("an expired token authenticates")
		}
		if _, err := tk.lookup(forever.Secret); err != nil {
			t.Errorf("a token without expiry: %v", err)
		}
	}
	// The expired ones (hour, and the bootstrap token) go from etcd.
	a.sweep(ctx)
	waitFor(t, "the expired tokens swept", func() bool { l := b.List(); return len(l) == 1 && l[0].ID == forever.ID })
	if _, err := a.Revoke(ctx, forever.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.lookup(forever.Secret); err == nil {
		t.Error("the revoking follower accepts a revoked token")
	}
	waitFor(t, "the revocation on the second follower", func() bool { _, err := b.lookup(forever.Secret); return err != nil })
	if _, err := a.Revoke(ctx, forever.ID); !apiv1.IsNotFound(err) {
		t.Errorf("revoke twice: %v, want 404", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// TestCertificateIdentity: the scope of a client certificate comes from
// its URI SAN; bootstrap and unbound agent certificates are refused.
func TestCertificateIdentity(t *testing.T) {
	tks := startTokens(t, 1, time.Now)
	lookup := &objects{hosts: map[string]string{"h1": "uid-1"}}
	authn := NewAuthenticator(tks[0], lookup)
	for _, tc := range []struct {
		name string
		uri  *url.URL
		want *Identity // nil: refused
	}{
		{"viewer", CertURI(Scope{Role: RoleTenantViewer, Tenant: "acme"}, ""), &Identity{Subject: "cert/alice", Role: RoleTenantViewer, Tenant: "acme"}},
		{"admin", CertURI(Scope{Role: RoleClusterAdmin}, ""), &Identity{Subject: "cert/alice", Role: RoleClusterAdmin}},
		{"agent", CertURI(Scope{Role: RoleAgent, Host: "h1"}, "uid-1"), &Identity{Subject: "cert/alice", Role: RoleAgent, Host: "h1", HostUID: "uid-1"}},
		{"agent of a re-created host", CertURI(Scope{Role: RoleAgent, Host: "h1"}, "uid-0"), nil},
		{"agent without a UID", CertURI(Scope{Role: RoleAgent, Host: "h1"}, ""), nil},
		{"bootstrap", CertURI(Scope{Role: RoleBootstrap, Host: "h1"}, ""), nil},
		{"unknown role", &url.URL{Scheme: "weft", Host: "role", Path: "/root"}, nil},
		{"odd path", &url.URL{Scheme: "weft", Host: "role", Path: "/tenant-admin/tenant"}, nil},
		{"other scheme", &url.URL{Scheme: "spiffe", Host: "role", Path: "/cluster-admin"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := &x509.Certificate{URIs: []*url.URL{tc.uri}}
			leaf.Subject.CommonName = "alice"
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
			got, err := authn.Authenticate(r)
			switch {
			case tc.want == nil && err == nil:
				t.Errorf("accepted as %+v", got)
			case tc.want != nil && (err != nil || *got != *tc.want):
				t.Errorf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	if id, err := authn.Authenticate(r); id != nil || err != nil {
		t.Errorf("no credential: %+v %v, want nil, nil", id, err)
	}
	r.Header.Set("Authorization", "Basic eDp5")
	if _, err := authn.Authenticate(r); err == nil {
		t.Error("basic auth accepted")
	}
}
