package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/client/clientconfig"
)

const testCAPEM = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"

// configHarness is a CLI run with an empty configuration file.
func configHarness(t *testing.T) (*harness, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "weft", "config")
	return &harness{t: t, env: map[string]string{clientconfig.EnvPath: path}}, path
}

func TestConfigCommands(t *testing.T) {
	h, path := configHarness(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	tok := filepath.Join(dir, "acme.token")
	for f, data := range map[string]string{ca: testCAPEM, tok: "weft_0011aabb_secret\n"} {
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	checkResult(t, h.run("config", "get-contexts"), 0, "", "No contexts in "+path+" (write one with 'weft login' or 'weft config set-context').\n")
	checkResult(t, h.run("config", "set-context", "acme", "--server", "https://10.0.0.1:7443", "--ca-file", ca, "--token-file", tok, "--tenant", "acme"), 0,
		`Context "acme" written to `+path+".\n", "")
	checkResult(t, h.run("config", "set-context", "lab", "--server", "http://127.0.0.1:7443", "--insecure-http"), 0,
		`Context "lab" written to `+path+".\n", "")
	// A change keeps the fields not given.
	h.ok("config", "set-context", "acme", "--tenant", "beta")
	checkResult(t, h.run("config", "get-contexts"), 0, lines(
		"CURRENT   NAME   SERVER                  TENANT   CREDENTIAL",
		"*         acme   https://10.0.0.1:7443   beta     token file "+tok,
		"          lab    http://127.0.0.1:7443   <none>   <none>",
	), "")
	checkResult(t, h.run("config", "use-context", "lab"), 0, "Switched to context \"lab\".\n", "")
	checkResult(t, h.run("config", "use-context", "nope"), 1, "",
		`error: clientconfig: no context "nope" in `+path+" (it has acme, lab)\n")
	checkResult(t, h.run("config", "view"), 0, lines(
		"apiVersion: weft/v1",
		"contexts:",
		"- certificateAuthorityData: DATA+OMITTED",
		"  name: acme",
		"  server: https://10.0.0.1:7443",
		"  tenant: beta",
		"  tokenFile: "+tok,
		"- insecureHTTP: true",
		"  name: lab",
		"  server: http://127.0.0.1:7443",
		"currentContext: lab",
		"kind: Config",
	), "")
	if out := h.ok("config", "view", "--raw", "-o", "json"); !strings.Contains(out, clientconfig.EncodeCA([]byte(testCAPEM))) {
		t.Errorf("config view --raw lacks the CA data:\n%s", out)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad CA", []string{"config", "set-context", "x", "--ca-file", tok}, "no PEM certificate"},
		{"missing token file", []string{"config", "set-context", "x", "--token-file", tok + ".nope"}, "no such file"},
		{"half a certificate", []string{"config", "set-context", "x", "--client-certificate", ca}, "together"},
		{"no name", []string{"config", "use-context"}, "want NAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := h.run(tc.args...); r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("weft %v = %+v, want exit 1 and %q", tc.args, r, tc.want)
			}
		})
	}
}

// TestConfigPrecedence: flags beat the environment, which beats the
// context.
func TestConfigPrecedence(t *testing.T) {
	h := newHarness(t)
	h.seed()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	cfg, err := clientconfig.Load(h.env[clientconfig.EnvPath])
	if err != nil {
		t.Fatal(err)
	}
	x, _ := cfg.Context("test")
	x.Tenant = "acme"
	cfg.SetContext(x)
	cfg.SetContext(clientconfig.Context{Name: "dead", Server: dead, Tenant: "beta", InsecureHTTP: true})
	if err := cfg.Save(); err != nil {
		t.Fatal(err)
	}
	tenantOf := func(args ...string) string {
		t.Helper()
		r := h.run(append(args, "get", "vpc", "main", "-o", "json")...)
		if r.code != 0 {
			return "error: " + r.stderr
		}
		var v struct {
			Metadata struct{ Tenant string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatal(err)
		}
		return v.Metadata.Tenant
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // tenant, or a part of the error
	}{
		{name: "context", want: "acme"},
		{name: "env beats context", env: map[string]string{"WEFT_TENANT": "beta"}, want: "beta"},
		{name: "flag beats env", env: map[string]string{"WEFT_TENANT": "beta"}, args: []string{"--tenant", "acme"}, want: "acme"},
		{name: "--context", args: []string{"--context", "dead"}, want: "cannot reach the weft controller at " + dead},
		{name: "server env beats context", env: map[string]string{"WEFT_SERVER": dead}, want: "cannot reach the weft controller at " + dead},
		{name: "server flag beats env", env: map[string]string{"WEFT_SERVER": dead}, args: []string{"--server", h.url}, want: "acme"},
		{name: "server flag beats --context", args: []string{"--context", "dead", "--server", h.url}, want: "beta"},
		{name: "missing context", args: []string{"--context", "nope"}, want: `no context "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				h.env[k] = v
				defer delete(h.env, k)
			}
			got := tenantOf(tc.args...)
			if strings.HasPrefix(got, "error: ") {
				if !strings.Contains(got, tc.want) {
					t.Errorf("got %q, want an error containing %q", got, tc.want)
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("tenant (-want +got):\n%s", diff)
			}
		})
	}
}
