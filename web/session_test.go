package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/web"
)

func TestLogin(t *testing.T) {
	e := startEnv(t, envOptions{auth: true})
	jsonCT := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		name string
		body string
		hdr  map[string]string
		want int
	}{
		{"good token", `{"token":"weft_admin_secret"}`, jsonCT, http.StatusOK},
		{"unknown token", `{"token":"weft_nobody_secret"}`, jsonCT, http.StatusUnauthorized},
		{"no token", `{}`, jsonCT, http.StatusBadRequest},
		{"not JSON", `{"token":`, jsonCT, http.StatusBadRequest},
		{"form post (cross-site forms can send these)", `token=weft_admin_secret`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusForbidden},
		{"from another site", `{"token":"weft_admin_secret"}`, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"fetch from another site", `{"token":"weft_admin_secret"}`, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.browser(t)
			code, body, hdr := do(t, c, "POST", e.URL+"/ui/login", tc.body, tc.hdr)
			if code != tc.want {
				t.Fatalf("login: %d %s, want %d", code, body, tc.want)
			}
			cookie := hdr.Get("Set-Cookie")
			if tc.want != http.StatusOK {
				if cookie != "" {
					t.Fatalf("refused login set a cookie: %s", cookie)
				}
				return
			}
			for _, attr := range []string{"weft_session=", "Path=/ui/", "HttpOnly", "SameSite=Strict"} {
				if !strings.Contains(cookie, attr) {
					t.Errorf("cookie %q lacks %s", cookie, attr)
				}
			}
			if strings.Contains(cookie, "Secure") {
				t.Errorf("cookie %q is Secure over plain HTTP: the browser would drop it", cookie)
			}
			if strings.Contains(body, "weft_admin_secret") {
				t.Errorf("the token came back to the browser: %s", body)
			}
			if code, body, _ := do(t, c, "GET", e.URL+"/ui/session", "", nil); code != http.StatusOK || !strings.Contains(body, `"role":"cluster-admin"`) {
				t.Errorf("session: %d %s", code, body)
			}
		})
	}
}

func TestLoginOverTLSSetsSecureCookie(t *testing.T) {
	e := startEnv(t, envOptions{auth: true, tls: true})
	code, body, hdr := do(t, e.browser(t), "POST", e.URL+"/ui/login", `{"token":"weft_admin_secret"}`, map[string]string{"Content-Type": "application/json"})
	if code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}
	if c := hdr.Get("Set-Cookie"); !strings.Contains(c, "; Secure") {
		t.Fatalf("cookie over TLS is not Secure: %s", c)
	}
}

// TestCSRF: a session's API calls are forwarded with its token; those that
// change state need the session's CSRF token, and nothing passes without
// a session.
func TestCSRF(t *testing.T) {
	e := startEnv(t, envOptions{auth: true})
	c := e.browser(t)
	csrf := e.login(t, c, "weft_admin_secret")
	tenant := func(name string) string {
		return `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"` + name + `"}}`
	}
	for _, tc := range []struct {
		name   string
		client *http.Client
		method string
		body   string
		hdr    map[string]string
		want   int
	}{
		{"read", c, "GET", "", nil, http.StatusOK},
		{"write without the header", c, "POST", tenant("a"), nil, http.StatusForbidden},
		{"write with a wrong token", c, "POST", tenant("a"), map[string]string{"X-Weft-CSRF": "guess"}, http.StatusForbidden},
		{"write with the token from another site", c, "POST", tenant("a"), map[string]string{"X-Weft-CSRF": csrf, "Origin": "http://evil.example"}, http.StatusForbidden},
		{"write with the token", c, "POST", tenant("b"), map[string]string{"X-Weft-CSRF": csrf}, http.StatusCreated},
		{"delete without the header", c, "DELETE", "", nil, http.StatusForbidden},
		{"no session", e.browser(t), "GET", "", nil, http.StatusUnauthorized},
		{"no session, with a bearer token of its own", e.browser(t), "GET", "", map[string]string{"Authorization": "Bearer weft_admin_secret"}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := e.URL + "/ui/apis/weft/v1/tenants"
			if tc.method == "DELETE" {
				url += "/b"
			}
			code, body, _ := do(t, tc.client, tc.method, url, tc.body, tc.hdr)
			if code != tc.want {
				t.Fatalf("%s: %d %s, want %d", tc.method, code, body, tc.want)
			}
		})
	}
	if _, err := e.Env.Registry.Get(context.Background(), apiv1.Ref{Kind: apiv1.KindTenant, Name: "a"}); err == nil {
		t.Error("a write refused for CSRF reached the API")
	}
	for _, a := range e.Auth.authorizations() {
		if a != "Bearer weft_admin_secret" {
			t.Errorf("the API got Authorization %q, want the session's token", a)
		}
	}
}

// TestLogout: after logout, and after the token is revoked, the session
// cookie opens nothing.
func TestLogout(t *testing.T) {
	e := startEnv(t, envOptions{auth: true})
	api := e.URL + "/ui/apis/weft/v1/tenants"
	t.Run("logout", func(t *testing.T) {
		c := e.browser(t)
		csrf := e.login(t, c, "weft_admin_secret")
		if code, body, _ := do(t, c, "POST", e.URL+"/ui/logout", "", nil); code != http.StatusForbidden {
			t.Fatalf("logout without CSRF token: %d %s", code, body)
		}
		if code, body, _ := do(t, c, "POST", e.URL+"/ui/logout", "", map[string]string{"X-Weft-CSRF": csrf}); code != http.StatusOK {
			t.Fatalf("logout: %d %s", code, body)
		}
		if code, _, _ := do(t, c, "GET", api, "", nil); code != http.StatusUnauthorized {
			t.Fatalf("API after logout: %d, want 401", code)
		}
	})
	t.Run("revoked token", func(t *testing.T) {
		e.Auth.grant("weft_short_secret", web.Identity{Subject: "short", Role: "cluster-admin"})
		c := e.browser(t)
		e.login(t, c, "weft_short_secret")
		e.Auth.revoke("weft_short_secret")
		if code, _, _ := do(t, c, "GET", api, "", nil); code != http.StatusUnauthorized {
			t.Fatalf("API with a revoked token: %d, want 401", code)
		}
	})
}

// TestControllerServesUI: the controller mounts the UI under /ui/ and
// sends / there; without authentication the UI needs no login.
func TestControllerServesUI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := controller.New(controller.Config{DataDir: t.TempDir(), APIListen: "127.0.0.1:0", AgentListen: "off", InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := "http://" + c.APIAddr()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if code, _, hdr := do(t, noRedirect, "GET", base+"/", "", nil); code != http.StatusFound || hdr.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q, want 302 to /ui/", code, hdr.Get("Location"))
	}
	for _, tc := range []struct{ path, want string }{
		{"/ui/", "<title>weft</title>"},
		{"/ui/static/app.js", "use strict"},
		{"/ui/session", `"authRequired":false`},
		{"/ui/apis/weft/v1/tenants", `"kind":"List"`},
		{"/ui/view/hostmap", `"by":"state"`},
		{"/healthz", "ok"},
	} {
		code, body, hdr := do(t, http.DefaultClient, "GET", base+tc.path, "", nil)
		if code != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %d %.200s, want %q", tc.path, code, body, tc.want)
		}
		if strings.HasPrefix(tc.path, "/ui/") && !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: no Content-Security-Policy", tc.path)
		}
	}
	if code, body, _ := do(t, http.DefaultClient, "POST", base+"/ui/apis/weft/v1/tenants", `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"}}`, nil); code != http.StatusForbidden {
		t.Errorf("write without the CSRF header, no authentication: %d %s, want 403", code, body)
	}
}
