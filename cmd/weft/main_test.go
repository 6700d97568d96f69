package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/internal/apitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, apitest.LeakOptions()...) }

// later is how far ahead of the controller's clock the CLI's runs, so that
// every AGE reads 90m (a test takes well under a minute).
const later = 90 * time.Minute

// harness runs the CLI against the real API (handler, registry, etcd),
// which reports the version `weft controller` of this build would.
type harness struct {
	t   *testing.T
	srv *apitest.Server
	url string
	env map[string]string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := apitest.Start(t, apitest.Options{Version: clientVersion().Version})
	// The test API is plain HTTP: a context allows it.
	cfg := clientconfig.New(filepath.Join(t.TempDir(), "config"))
	cfg.SetContext(clientconfig.Context{Name: "test", Server: srv.URL, InsecureHTTP: true})
	cfg.CurrentContext = "test"
	if err := cfg.Save(); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: srv, url: srv.URL, env: map[string]string{clientconfig.EnvPath: cfg.Path()}}
}

// stored returns an object as the controller stores it.
func (h *harness) stored(kind, tenant, name string) apiv1.Object {
	h.t.Helper()
	o, err := h.srv.Env.Registry.Get(h.t.Context(), apiv1.Ref{Kind: apiv1.MustKind(kind).Kind, Tenant: tenant, Name: name})
	if err != nil {
		h.t.Fatal(err)
	}
	return o
}

// revision is the store's revision: the resourceVersion of a list.
func (h *harness) revision() string { return strconv.FormatInt(h.srv.Env.Registry.Revision(), 10) }

// result is what one CLI run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

func (h *harness) run(args ...string) result { return h.runIn(h.t.Context(), "", args...) }

func (h *harness) runIn(ctx context.Context, stdin string, args ...string) result {
	var out, errOut bytes.Buffer
	code := runEnv(ctx, args, &out, &errOut, h.envWith(stdin))
	return result{out.String(), errOut.String(), code}
}

func (h *harness) envWith(stdin string) env {
	return env{
		getenv: func(k string) string { return h.env[k] },
		stdin:  strings.NewReader(stdin),
		now:    func() time.Time { return time.Now().Add(later) },
	}
}

// ok runs args and fails the test unless they succeed; it returns stdout.
func (h *harness) ok(args ...string) string {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.t.Fatalf("weft %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// seed applies the test network.
func (h *harness) seed() {
	h.t.Helper()
	h.ok("apply", "-f", "testdata/network.yaml", "-f", "testdata/beta.json")
}

// lines joins lines with a trailing newline, for golden output.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// checkResult compares a run with what is expected of it.
func checkResult(t *testing.T, got result, wantCode int, wantStdout, wantStderr string) {
	t.Helper()
	if got.code != wantCode {
		t.Errorf("exit code %d, want %d (stderr: %q)", got.code, wantCode, got.stderr)
	}
	if diff := cmp.Diff(wantStdout, got.stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantStderr, got.stderr); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

func TestRunRealEntry(t *testing.T) {
	// run() reads the process environment; --server overrides it.
	h := newHarness(t)
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"--server", h.url, "--insecure-http", "get", "tenants", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `"kind": "List"`) {
		t.Errorf("stdout %q is not a List", out.String())
	}
}

func TestEnvironment(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.env["WEFT_TENANT"] = "beta"
	checkResult(t, h.run("get", "vpc", "main"), 0, lines(
		"NAME   CIDRS         VNI    AGE",
		"main   10.0.0.0/16   4097   90m",
	), "")
	// --server beats WEFT_SERVER.
	h.env["WEFT_SERVER"] = "http://127.0.0.1:1"
	if r := h.run("--server", h.url, "get", "tenants"); r.code != 0 {
		t.Errorf("--server did not override WEFT_SERVER: %+v", r)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	h := &harness{t: t}
	r := h.run("--server", dead, "--insecure-http", "apply", "-f", "testdata/network.yaml")
	warning := "warning: --insecure-http: talking to " + dead + " in clear text, without authenticating it\n"
	if r.code != 1 || !strings.HasPrefix(r.stderr, warning+"error: ") ||
		!strings.Contains(r.stderr, "cannot reach the weft controller at "+dead) ||
		!strings.Contains(r.stderr, "is `weft controller` running?") {
		t.Errorf("got %+v, want exit 1 and an error naming %s", r, dead)
	}
	// It stops at the first object rather than repeating the error for every one.
	if n := strings.Count(r.stderr, "cannot reach"); n != 1 {
		t.Errorf("the error is printed %d times, want once:\n%s", n, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	h := newHarness(t)
	h.seed()
	for _, tc := range []struct {
		name string
		args []string
		want string // stderr
	}{
		{"unknown kind", []string{"get", "gadgets"},
			"error: unknown kind \"gadgets\" (known kinds: tenants, hosts, qosclasses, vpcs, subnets, securitypolicies, appintents, endpoints, traces, captures; singular and short names work too)\n"},
		{"get NAME without tenant", []string{"get", "ep", "web-1"},
			"error: endpoint is tenant-scoped: pass -n/--tenant TENANT (or set WEFT_TENANT, or a tenant in the context)\n"},
		{"describe without tenant", []string{"describe", "subnet", "a"},
			"error: subnet is tenant-scoped: pass -n/--tenant TENANT (or set WEFT_TENANT, or a tenant in the context)\n"},
		{"delete without tenant", []string{"delete", "vpc", "main"},
			"error: vpc is tenant-scoped: pass -n/--tenant TENANT (or set WEFT_TENANT, or a tenant in the context)\n"},
		{"all tenants with NAME", []string{"get", "vpc", "main", "--all-tenants"},
			"error: --all-tenants cannot be used with a NAME: pass --tenant\n"},
		{"bad output", []string{"get", "vpcs", "-o", "xml"},
			"error: -o \"xml\": want table, wide, json, yaml, name or jsonpath=TEMPLATE\n"},
		{"bad jsonpath", []string{"get", "vpcs", "-o", "jsonpath={..name}"},
			"error: -o: jsonpath \"{..name}\": recursive descent (..) is not supported: " + jpSupported + "\n"},
		{"bad field selector", []string{"get", "vpcs", "--field-selector", "spec.host=h1"},
			"error: --field-selector: \"spec.host=h1\": VPC cannot be selected by field \"spec.host\" (it can by metadata.name, metadata.tenant)\n"},
		{"names and a selector", []string{"get", "vpcs", "main", "-l", "a=b", "-n", "acme"},
			"error: -l and --field-selector cannot be used with NAMEs\n"},
		{"mixed argument forms", []string{"get", "vpc/main", "subnet"},
			"error: \"subnet\": want KIND/NAME (every argument so, or KIND NAME...)\n"},
		{"bad request timeout", []string{"get", "vpcs", "--request-timeout", "soon"},
			"error: --request-timeout \"soon\": want a duration such as 30s or 1m, or 0 for none\n"},
		{"watch of two kinds", []string{"get", "vpcs,subnets", "-w"},
			"error: -w takes one kind, and -o table, wide, json or yaml\n"},
		{"wait without --for", []string{"wait", "vpc/main"},
			"error: required flag(s) \"for\" not set\n"},
		{"wait for what", []string{"wait", "--for=ready", "vpc/main"},
			"error: --for \"ready\": want condition=TYPE[=STATUS] or delete\n"},
		{"wait for nothing", []string{"wait", "--for=delete", "vpcs"},
			"error: no objects named: give NAMEs, -l SELECTOR, --field-selector or --all\n"},
		{"delete nothing", []string{"delete", "vpcs"},
			"error: no objects named: give NAMEs, -l SELECTOR, --field-selector or --all\n"},
		{"bad dry run", []string{"delete", "vpc", "main", "--dry-run=client"},
			"error: --dry-run \"client\": want none or server (the controller checks, nothing is stored)\n"},
		{"bad selector", []string{"get", "vpcs", "-l", "a in ("},
			"error: -l: parse label selector \"a in (\": want ')' to close the values of \"a\"\n"},
		{"no kind", []string{"get"},
			"error: weft get: want KIND[,KIND...] [NAME...] or KIND/NAME..., got 0 argument(s)\nRun 'weft get --help' for usage.\n"},
		{"unknown flag", []string{"get", "vpcs", "--frobnicate"},
			"error: unknown flag: --frobnicate\nRun 'weft get --help' for usage.\n"},
		{"apply without -f", []string{"apply"},
			"error: no input: give -f FILE, -f DIR or -f -\nRun 'weft apply --help' for usage.\n"},
		{"delete both forms", []string{"delete", "vpc", "main", "-f", "x.yaml"},
			"error: give either KIND NAME or -f, not both\nRun 'weft delete --help' for usage.\n"},
		{"missing file", []string{"apply", "-f", "testdata/nope.yaml"},
			"error: read testdata/nope.yaml: no such file or directory\n"},
		{"not found", []string{"get", "ep", "nope", "--tenant", "acme"},
			"error: endpoint/acme/nope not found\n"},
		{"rolling on two members", []string{"bench", "rolling", "--members", "2"},
			"error: bench: rolling: 2 members: a restart needs at least 3 to keep a quorum\n"},
		{"rolling from a missing binary", []string{"bench", "rolling", "--from-binary", "testdata/nope"},
			"error: bench: rolling: --from-binary: stat testdata/nope: no such file or directory\n"},
		{"replicastart in an unknown shape", []string{"bench", "replicastart", "--shapes", "external"},
			"error: bench: replicastart: unknown shape \"external\" (want embedded or client)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(tc.args...)
			if r.code != 1 {
				t.Errorf("exit code %d, want 1", r.code)
			}
			if diff := cmp.Diff(tc.want, r.stderr); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	h := &harness{t: t} // no controller needed
	for _, cmd := range []string{"apply", "get", "describe", "delete", "version"} {
		t.Run(cmd, func(t *testing.T) {
			r := h.run(cmd, "--help")
			if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "weft "+cmd) ||
				!strings.Contains(r.stdout, "--server") {
				t.Errorf("weft %s --help: exit %d, want usage with examples and global flags:\n%s%s", cmd, r.code, r.stdout, r.stderr)
			}
		})
	}
	r := h.run("--help")
	for _, want := range []string{"controller", "bench", "apply", "get", "describe", "delete", "version", "WEFT_SERVER", "--all-tenants"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("weft --help does not mention %q:\n%s", want, r.stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	h := newHarness(t)
	out := h.ok("version")
	if !strings.HasPrefix(out, "Client: weft ") || !strings.Contains(out, "Server: "+clientVersion().Version+" ("+h.url+")") {
		t.Errorf("weft version:\n%s", out)
	}
	if out := h.ok("version", "--client", "--server", "http://127.0.0.1:1"); strings.Contains(out, "Server") {
		t.Errorf("weft version --client contacted the server:\n%s", out)
	}
	if out := h.ok("version", "-o", "json"); !strings.Contains(out, `"server": {`) || !strings.Contains(out, `"goVersion"`) {
		t.Errorf("weft version -o json:\n%s", out)
	}
	if r := h.run("version", "--server", "http://127.0.0.1:1"); r.code != 1 || !strings.Contains(r.stderr, "cannot reach") {
		t.Errorf("weft version with no controller: %+v, want exit 1", r)
	}
}

// TestSubcommandFlagsCoexist guards the root's persistent flags against
// subcommands (weft bench, owned elsewhere) that define local flags with
// the same names: cobra must let the local flag win, not panic.
func TestSubcommandFlagsCoexist(t *testing.T) {
	a := &app{env: env{getenv: func(string) string { return "" }, stdin: strings.NewReader(""), now: time.Now}}
	root := a.newRootCmd()
	var server, output string
	sub := &cobra.Command{Use: "sub", RunE: func(*cobra.Command, []string) error { return nil }}
	sub.Flags().StringVar(&server, "server", "", "")
	sub.Flags().StringVarP(&output, "output", "o", "table", "")
	root.AddCommand(sub)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"sub", "--server", "x", "-o", "json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if server != "x" || output != "json" {
		t.Errorf("local flags got server=%q output=%q", server, output)
	}
}

// syncBuffer is a concurrency-safe buffer whose content can be awaited.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor blocks until the buffer contains s or ctx ends.
func (b *syncBuffer) waitFor(ctx context.Context, s string) bool {
	for {
		b.mu.Lock()
		found, ch := strings.Contains(b.buf.String(), s), b.changed
		b.mu.Unlock()
		if found {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
