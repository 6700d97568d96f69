package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/controller"
)

// secureController runs a controller as `weft controller` does (HTTPS,
// credentials required; with the southbound if agents) and returns it
// with the path of the admin.config it wrote.
func secureController(t *testing.T, agents bool) (*controller.Controller, string) {
	t.Helper()
	dir := t.TempDir()
	agentListen := "off"
	if agents {
		agentListen = "127.0.0.1:0"
	}
	c, err := controller.New(controller.Config{DataDir: dir, APIListen: "127.0.0.1:0", AgentListen: agentListen, Version: clientVersion().Version})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close the controller: %v", err)
		}
	})
	return c, filepath.Join(dir, "admin.config")
}

// adminClient is a client of the context of the admin.config at path.
func adminClient(t *testing.T, path string) *client.Client {
	t.Helper()
	s, err := clientconfig.LoadSettings(path)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := s.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// eventually runs f until it returns "" or d passes; then it fails with
// f's last message.
func eventually(t *testing.T, d time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLoginTokensCerts drives the credential commands against a real
// controller: the admin context the controller wrote creates a tenant
// token, `weft login` saves it as a context after checking it, the token
// sees its tenant only and cannot write, `weft token list` shows it and
// `weft token revoke` makes the controller refuse it; a client
// certificate from `weft cert create` works as a context's credential.
func TestLoginTokensCerts(t *testing.T) {
	ctl, adminConfig := secureController(t, false)
	admin := &harness{t: t, env: map[string]string{clientconfig.EnvPath: adminConfig}}
	admin.ok("apply", "-f", "testdata/network.yaml", "-f", "testdata/beta.json")
	dir := t.TempDir()
	ca := writeFile(t, filepath.Join(dir, "ca.pem"), ctl.CACert())

	var tok struct{ ID, Token, Role, Tenant, Description string }
	if err := json.Unmarshal([]byte(admin.ok("token", "create", "--role", "tenant-viewer", "--tenant", "acme", "--description", "ci", "-o", "json")), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.ID == "" || !strings.HasPrefix(tok.Token, "weft_"+tok.ID+"_") || tok.Role != "tenant-viewer" || tok.Tenant != "acme" {
		t.Fatalf("token create -o json = %+v", tok)
	}
	tokFile := writeFile(t, filepath.Join(dir, "acme.token"), []byte(tok.Token+"\n"))

	userConfig := filepath.Join(dir, "user", "config")
	user := &harness{t: t, env: map[string]string{clientconfig.EnvPath: userConfig}}
	login := func(args ...string) result {
		return user.run(append([]string{"login", "--server", ctl.ServerURL()}, args...)...)
	}
	checkResult(t, login("--ca-file", ca, "--token-file", tokFile, "--tenant", "acme", "--context", "acme"), 0,
		fmt.Sprintf("Logged in to %s; context \"acme\" written to %s and made current.\n", ctl.ServerURL(), userConfig), "")

	// The viewer reads its tenant, nothing of beta, and cannot write.
	if out := user.ok("get", "vpcs"); !strings.Contains(out, "main") {
		t.Errorf("weft get vpcs as acme's viewer:\n%s", out)
	}
	if out := user.ok("get", "vpcs", "--all-tenants"); strings.Contains(out, "beta") || !strings.Contains(out, "acme") {
		t.Errorf("weft get vpcs --all-tenants as acme's viewer shows another tenant or not its own:\n%s", out)
	}
	if r := user.run("delete", "vpc", "main"); r.code != 1 || !strings.Contains(r.stderr, "its role may not do this") {
		t.Errorf("delete as a viewer: %+v, want a 403 with a hint", r)
	}

	if out := admin.ok("token", "list"); !strings.Contains(out, tok.ID) || !strings.Contains(out, "tenant-viewer") || !strings.Contains(out, "ci") {
		t.Errorf("token list lacks the new token:\n%s", out)
	}
	if r := user.run("token", "list"); r.code != 1 || !strings.Contains(r.stderr, "its role may not do this") {
		t.Errorf("token list as a viewer: %+v, want 403", r)
	}

	// A client certificate as a context's credential.
	crt, key := filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key")
	admin.ok("cert", "create", "alice", "--role", "tenant-admin", "--tenant", "acme", "--cert-file", crt, "--key-file", key)
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, want mode 0600", err)
	}
	user.ok("config", "set-context", "alice", "--server", ctl.ServerURL(), "--ca-file", ca, "--client-certificate", crt, "--client-key", key, "--tenant", "acme")
	if out := user.ok("--context", "alice", "get", "subnets"); !strings.Contains(out, "a ") {
		t.Errorf("get subnets with alice's certificate:\n%s", out)
	}

	// A revoked token is refused.
	checkResult(t, admin.run("token", "revoke", tok.ID), 0, "token "+tok.ID+" revoked\n", "")
	eventually(t, 5*time.Second, func() string {
		r := user.run("--context", "acme", "get", "vpcs")
		if r.code == 1 && strings.Contains(r.stderr, "the controller did not accept this command's credential") {
			return ""
		}
		return fmt.Sprintf("get with a revoked token: %+v", r)
	})
	if r := login("--ca-file", ca, "--token-file", tokFile); r.code != 1 || !strings.Contains(r.stderr, "does not accept this credential") {
		t.Errorf("login with a revoked token: %+v", r)
	}

	// A wrong CA: another controller's.
	other, _ := secureController(t, false)
	wrongCA := writeFile(t, filepath.Join(dir, "other.pem"), other.CACert())
	adminTok := strings.TrimSpace(admin.ok("token", "create", "--role", "cluster-admin"))
	adminTokFile := writeFile(t, filepath.Join(dir, "admin.token"), []byte(adminTok))
	r := login("--ca-file", wrongCA, "--token-file", adminTokFile)
	if want := "its certificate is not signed by the CA this client trusts"; r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, ctl.ServerURL()) {
		t.Errorf("login with the wrong CA: %+v, want an error naming the server and saying %q", r, want)
	}
	if _, err := os.Stat(userConfig); err != nil {
		t.Fatal(err)
	}
	if out := user.ok("config", "get-contexts"); strings.Contains(out, "default") {
		t.Errorf("a failed login wrote a context:\n%s", out)
	}
	// Without a CA the system's roots do not know the weft CA either.
	user.ok("config", "set-context", "no-ca", "--server", ctl.ServerURL(), "--token-file", adminTokFile)
	if r := user.run("--context", "no-ca", "get", "tenants"); r.code != 1 || !strings.Contains(r.stderr, "not signed by the CA this client trusts") {
		t.Errorf("get without a CA: %+v", r)
	}
	checkResult(t, login("--ca-file", ca, "--token-file", adminTokFile), 0,
		fmt.Sprintf("Logged in to %s; context \"default\" written to %s and made current.\n", ctl.ServerURL(), userConfig), "")
}

// TestGetPages lists more objects than a page through the CLI.
func TestGetPages(t *testing.T) {
	_, adminConfig := secureController(t, false)
	admin := &harness{t: t, env: map[string]string{clientconfig.EnvPath: adminConfig}}
	var docs []string
	const n = 23
	for i := range n {
		docs = append(docs, fmt.Sprintf(`{"apiVersion": "weft/v1", "kind": "Tenant", "metadata": {"name": "t%02d"}}`, i))
	}
	if r := admin.runIn(t.Context(), strings.Join(docs, "\n"), "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %+v", r)
	}
	// The controller pages at the size asked for.
	cl := adminClient(t, adminConfig)
	resp, err := cl.Raw(t.Context(), http.MethodGet, "/apis/weft/v1/tenants?limit=5", nil)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Metadata struct{ Continue string }
		Items    []json.RawMessage
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || len(page.Items) != 5 || page.Metadata.Continue == "" {
		t.Fatalf("a page of 5: %v, %d items, continue %q", err, len(page.Items), page.Metadata.Continue)
	}
	for _, chunk := range []string{"5", "7", "500", "0"} {
		t.Run("chunk "+chunk, func(t *testing.T) {
			out := admin.ok("get", "tenants", "--chunk-size", chunk)
			rows := strings.Split(strings.TrimSpace(out), "\n")[1:]
			if len(rows) != n {
				t.Fatalf("%d rows, want %d:\n%s", len(rows), n, out)
			}
			for i, r := range rows {
				if want := fmt.Sprintf("t%02d ", i); !strings.HasPrefix(r, want) {
					t.Errorf("row %d = %q, want %q first", i, r, want)
				}
			}
		})
	}
}

// TestControllerSecurityFlags: the controller's TLS and etcd flags reach
// its configuration (its checks refuse these combinations).
func TestControllerSecurityFlags(t *testing.T) {
	h := &harness{t: t, env: map[string]string{}}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"etcd TLS to plain HTTP", []string{"--etcd-endpoints", "http://127.0.0.1:1", "--etcd-cacert", "ca.pem"}, "plain HTTP"},
		{"etcd certificate without key", []string{"--etcd-endpoints", "https://127.0.0.1:1", "--etcd-cert", "c.pem"}, "both an etcd client certificate and its key"},
		{"etcd password without user", []string{"--etcd-endpoints", "https://127.0.0.1:1", "--etcd-password", "p"}, "without a user"},
		{"etcd TLS without endpoints", []string{"--etcd-key", "k.pem", "--etcd-cert", "c.pem"}, "external etcd"},
		{"TLS certificate without key", []string{"--tls-cert", "c.pem"}, "both a TLS certificate and its key"},
		{"TLS files with plain HTTP", []string{"--insecure-http", "--client-ca", "ca.pem"}, "TLS files given with InsecureHTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(append([]string{"controller", "--data-dir", dir}, tc.args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("weft controller %v = %+v, want exit 1 and %q", tc.args, r, tc.want)
			}
		})
	}
}
