package rest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/internal/etcdtest"
)

// FuzzRequest sends requests of any path and query, as a cluster admin, a
// tenant admin or nobody, to the real API over etcd: none fails inside
// (500) and every answer under /apis is JSON.
func FuzzRequest(f *testing.F) {
	env := etcdtest.Start(f)
	ctx := context.Background()
	if _, err := env.Registry.Create(ctx, etcdtest.Tenant("acme")); err != nil {
		f.Fatal(err)
	}
	if _, err := env.Registry.Create(ctx, etcdtest.VPC("acme", "main", "10.0.0.0/16")); err != nil {
		f.Fatal(err)
	}
	tokens, err := auth.NewTokens(auth.TokensConfig{Store: env.Store})
	if err != nil {
		f.Fatal(err)
	}
	if err := tokens.Start(ctx); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tokens.Close() })
	var creds []string
	for _, s := range []auth.Scope{{Role: auth.RoleClusterAdmin}, {Role: auth.RoleTenantAdmin, Tenant: "acme"}} {
		nt, err := tokens.Create(ctx, auth.TokenRequest{Scope: s})
		if err != nil {
			f.Fatal(err)
		}
		creds = append(creds, nt.Secret)
	}
	creds = append(creds, "")
	h, err := rest.NewHandler(rest.Config{Backend: env.Registry, Authenticator: auth.NewAuthenticator(tokens, env.Store),
		Lookup: env.Store, Tokens: tokens, MaxPage: 3})
	if err != nil {
		f.Fatal(err)
	}
	methods := []string{"GET", "GET", "DELETE", "POST", "PUT", "PATCH", "HEAD"}
	for _, seed := range []struct{ path, query string }{
		{"/apis/weft/v1/tenants", "limit=1"},
		{"/apis/weft/v1/tenants/acme/vpcs", "watch=true&resourceVersion=1"},
		{"/apis/weft/v1/vpcs", "labelSelector=a+in+(b,c)&continue=eyJyZXYiOjEsIm5hbWUiOiJhIn0"},
		{"/apis/weft/v1/tenants/acme/vpcs/main/status", ""},
		{"/apis/weft/v1/tokens/0011", ""},
		{"/apis/weft/v1/hosts/../tenants", "limit=99999999999999999999"},
	} {
		f.Add(uint8(0), uint8(0), seed.path, seed.query)
		f.Add(uint8(1), uint8(2), seed.path, seed.query)
	}
	f.Fuzz(func(t *testing.T, who, method uint8, path, query string) {
		if !strings.HasPrefix(path, "/") {
			return
		}
		rctx, cancel := context.WithCancel(context.Background())
		cancel() // a watch answers its initial events and ends
		r := (&http.Request{Method: methods[int(method)%len(methods)], URL: &url.URL{Path: path, RawQuery: query},
			Header: http.Header{}, Body: http.NoBody, Host: "weft"}).WithContext(rctx)
		if c := creds[int(who)%len(creds)]; c != "" {
			r.Header.Set("Authorization", "Bearer "+c)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s?%s: %d %s", r.Method, path, query, w.Code, w.Body)
		}
		// (Redirects are the mux's, to the cleaned path; a watch with
		// nothing to report says nothing.)
		redirect := w.Code >= 300 && w.Code < 400
		if strings.HasPrefix(path, "/apis/") && !redirect && r.Method != "HEAD" && path != "/apis/weft/v1/ca" && w.Body.Len() > 0 {
			line, _ := bufio.NewReader(w.Body).ReadBytes('\n')
			if !json.Valid(line) {
				t.Fatalf("%s %s?%s: %d, not JSON: %q", r.Method, path, query, w.Code, line)
			}
		}
	})
}
