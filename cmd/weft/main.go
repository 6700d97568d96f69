// Command weft is the single binary of weft: the controller, the agent and
// the operator CLI (apply, get, describe, delete) that talks to the
// controller's REST API.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the weft command line args and returns the exit code: 0 on
// success, 1 on any error (printed to stderr as "error: ...").
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, stdout, stderr, env{getenv: os.Getenv, stdin: os.Stdin, now: time.Now})
}

// env is what the CLI takes from its process; tests supply their own.
type env struct {
	getenv func(string) string // WEFT_SERVER, WEFT_TENANT, WEFT_CONFIG, HOME
	stdin  io.Reader           // `-f -`
	now    func() time.Time    // ages in tables
}

func runEnv(ctx context.Context, args []string, stdout, stderr io.Writer, e env) int {
	a := &app{env: e, stdout: stdout, stderr: stderr}
	defer a.close()
	root := a.newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(e.stdin)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				printError(stderr, ee.err)
			}
			return ee.code
		}
		printError(stderr, err)
		return 1
	}
	return 0
}

// exitError ends a command with an exit code other than 1 (printing err
// unless nil): `weft diff` exits 1 when it found differences, 2 on errors.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// app holds the global flags and the lazily made API client of one run.
type app struct {
	env            env
	stdout, stderr io.Writer

	flagServer   string // --server
	flagTenant   string // --tenant
	allTenants   bool
	context      string // --context
	insecureHTTP bool   // --insecure-http
	pageSize     int    // --chunk-size of get
	timeout      string // --request-timeout

	server string // resolved: --server, else $WEFT_SERVER, else the context's
	tenant string // resolved: --tenant, else $WEFT_TENANT, else the context's

	settings    *clientconfig.Settings // resolved by resolve
	settingsErr error                  // why the settings could not be resolved
	cl          *client.Client
}

func (a *app) close() {
	if a.cl != nil {
		_ = a.cl.Close()
	}
}

// configFile loads the configuration file ($WEFT_CONFIG or
// ~/.config/weft/config; empty if there is none).
func (a *app) configFile() (*clientconfig.Config, error) {
	path, err := clientconfig.DefaultPath(a.env.getenv)
	if err != nil {
		return clientconfig.New(""), nil // no file to read: no contexts
	}
	return clientconfig.Load(path)
}

// resolve settles the server, tenant and credential of this run: flags,
// then the environment, then the context of the configuration file. It
// runs before every command; an error is reported only by the commands
// that use the API (client, tenantFor).
func (a *app) resolve() {
	a.server, a.tenant = a.flagServer, a.flagTenant
	if a.server == "" {
		a.server = a.env.getenv("WEFT_SERVER")
	}
	if a.tenant == "" {
		a.tenant = a.env.getenv("WEFT_TENANT")
	}
	cfg, err := a.configFile()
	if err == nil {
		a.settings, err = cfg.Resolve(clientconfig.Overrides{Context: a.context, Server: a.server, Tenant: a.tenant, InsecureHTTP: a.insecureHTTP})
	}
	if err != nil {
		a.settingsErr = usageErrorf("%v", err)
		return
	}
	a.server, a.tenant = a.settings.Server, a.settings.Tenant
}

// client returns the API client of the resolved settings, making it on
// first use.
func (a *app) client() (*client.Client, error) {
	if a.settingsErr != nil {
		return nil, a.settingsErr
	}
	if a.cl == nil {
		if a.settings == nil {
			a.resolve() // commands run without the root (tests)
			if a.settingsErr != nil {
				return nil, a.settingsErr
			}
		}
		timeout, err := parseRequestTimeout(a.timeout)
		if err != nil {
			return nil, err
		}
		cl, err := a.settings.NewClient(client.WithPageSize(a.pageSize), client.WithTimeout(timeout))
		if err != nil {
			return nil, usageErrorf("--server: %v", err)
		}
		if a.insecureHTTP && strings.HasPrefix(a.settings.Server, "http://") {
			fmt.Fprintf(a.stderr, "warning: --insecure-http: talking to %s in clear text, without authenticating it\n", a.settings.Server)
		}
		a.cl = cl
	}
	return a.cl, nil
}

// parseRequestTimeout reads --request-timeout: a duration ("30s", "1m")
// or a number of seconds; 0 waits as long as it takes.
func parseRequestTimeout(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usageErrorf("--request-timeout %q: want a duration such as 30s or 1m, or 0 for none", s)
	}
	return d, nil
}

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "weft",
		Short: "weft: an SDN control plane for multi-tenant virtual networks",
		Long: `weft runs the SDN control plane (controller, agent) and is the operator's CLI
for its REST API.

The CLI commands (apply, get, describe, delete, ...) talk to the controller
of the current context of the configuration file ($WEFT_CONFIG, else
~/.config/weft/config; see 'weft config' and 'weft login'), which also gives
the CA that signs the controller's certificate and the credential (a token or
a client certificate); --context picks another context. --server or
$WEFT_SERVER overrides the context's controller (default ` + client.DefaultServer + `).
Plain http:// needs --insecure-http.

Objects of tenant-scoped kinds (vpc, subnet, endpoint, securitypolicy,
qosclass, appintent) belong to a tenant: pick it with -n/--tenant or
$WEFT_TENANT (else the context's tenant); -A/--all-tenants lists across
tenants. Tenants and hosts are cluster-scoped.

'weft completion bash|zsh|fish|powershell' prints a shell completion script
that completes commands, flags, kinds, and object and tenant names (asked of
the controller).`,
		Example: `  weft controller --data-dir /var/lib/weft
  weft apply -f network.yaml
  weft get vpcs -n acme
  weft get endpoints -A -o yaml
  weft describe vpc main -n acme
  weft wait --for=condition=Ready endpoint/web-1 -n acme
  weft delete -f network.yaml
  source <(weft completion bash)`,
		SilenceUsage:     true,
		SilenceErrors:    true,
		PersistentPreRun: func(*cobra.Command, []string) { a.resolve() },
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.flagServer, "server", "", "URL of the weft controller's API (env WEFT_SERVER; default: the context's, else "+client.DefaultServer+")")
	pf.StringVarP(&a.flagTenant, "tenant", "n", "", "tenant of tenant-scoped kinds (env WEFT_TENANT; default: the context's)")
	pf.BoolVarP(&a.allTenants, "all-tenants", "A", false, "list tenant-scoped kinds across all tenants (overrides --tenant)")
	pf.StringVar(&a.timeout, "request-timeout", client.DefaultTimeout.String(), "how long to wait for each API request (a duration, or seconds; 0: no limit)")
	_ = root.RegisterFlagCompletionFunc("tenant", a.completeTenants)
	pf.StringVar(&a.context, "context", "", "context of the configuration file to use (default: its current context; env WEFT_CONFIG names the file)")
	pf.BoolVar(&a.insecureHTTP, "insecure-http", false, "allow a plain http:// controller: no TLS, credentials in clear text (labs only)")

	root.AddCommand(
		newControllerCmd(),
		newAgentCmd(),
		newDemoCmd(),
		newSimCmd(),
		newSimChildCmd(),
		newBenchCmd(),
		a.newApplyCmd(),
		a.newGetCmd(),
		a.newDescribeCmd(),
		a.newDeleteCmd(),
		a.newDiffCmd(),
		a.newWaitCmd(),
		a.newFlowsCmd(),
		a.newTraceCmd(),
		a.newCaptureCmd(),
		a.newVersionCmd(),
		a.newConfigCmd(),
		a.newLoginCmd(),
		a.newTokenCmd(),
		a.newCertCmd(),
		newEtcdCmd(),
		newBackupCmd(),
		newRestoreCmd(),
	)
	return root
}

// ---- errors ----

// usageError is a mistake in the command line; printError adds a pointer
// to --help.
type usageError struct {
	cmd string // command path, e.g. "weft get"; may be empty
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...)}
}

// printError writes err to w as "error: <message>", then the field causes
// and dependents of an API error one per line. Joined errors print one
// "error:" line each.
func printError(w io.Writer, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printError(w, e)
		}
		return
	}
	msg := err.Error()
	var se *apiv1.StatusError
	if errors.As(err, &se) && strings.HasSuffix(msg, se.Error()) {
		// Print the causes on their own lines rather than joined by "; ".
		msg = strings.TrimSuffix(msg, se.Error()) + se.Message
	} else {
		se = nil
	}
	fmt.Fprintf(w, "error: %s\n", strings.ReplaceAll(msg, "\n", "\n  "))
	if se != nil {
		for _, c := range se.Causes {
			fmt.Fprintf(w, "  %s: %s\n", c.Field, c.Message)
		}
		for _, d := range se.Dependents {
			fmt.Fprintf(w, "  depended on by %s\n", d)
		}
		switch se.Reason {
		case apiv1.ReasonUnauthorized:
			fmt.Fprintf(w, "  the controller did not accept this command's credential (none, wrong, expired or revoked): see 'weft config get-contexts' and 'weft login'\n")
		case apiv1.ReasonForbidden:
			fmt.Fprintf(w, "  the credential is valid, but its role may not do this\n")
		}
	}
	var ue *usageError
	if errors.As(err, &ue) && ue.cmd != "" {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", ue.cmd)
	}
}

// ---- shared argument handling ----

// lookupKind resolves a KIND argument (kind, plural or short name).
func lookupKind(name string) (apiv1.KindInfo, error) {
	if k, ok := apiv1.LookupKind(name); ok {
		return k, nil
	}
	var known []string
	for _, k := range apiv1.Kinds() {
		known = append(known, k.Plural)
	}
	return apiv1.KindInfo{}, usageErrorf("unknown kind %q (known kinds: %s; singular and short names work too)", name, strings.Join(known, ", "))
}

// tenantFor returns the tenant to address one object of kind k by name:
// "" for cluster-scoped kinds, else --tenant, which is then required.
func (a *app) tenantFor(k apiv1.KindInfo) (string, error) {
	if !k.Namespaced {
		return "", nil
	}
	if a.tenant == "" {
		if a.settingsErr != nil {
			return "", a.settingsErr
		}
		return "", usageErrorf("%s is tenant-scoped: pass -n/--tenant TENANT (or set WEFT_TENANT, or a tenant in the context)", strings.ToLower(k.Kind))
	}
	return a.tenant, nil
}

// listTenant returns the tenant to list kind k in: "" means all tenants
// (cluster-scoped kinds, --all-tenants, or no tenant from --tenant,
// $WEFT_TENANT or the current context).
func (a *app) listTenant(k apiv1.KindInfo) string {
	if !k.Namespaced || a.allTenants {
		return ""
	}
	return a.tenant
}

// args validators that report usage errors.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%s: want %s, got %d argument(s)", cmd.CommandPath(), what, len(args))}
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs { return rangeArgs(n, int(^uint(0)>>1), what) }

func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("%s: want %s, got %d argument(s)", cmd.CommandPath(), what, len(args))}
		}
		return nil
	}
}

// ---- version ----

// versionInfo is what `weft version` reports of a binary.
type versionInfo = buildinfo.Info

func clientVersion() versionInfo { return buildinfo.Read() }

func (a *app) newVersionCmd() *cobra.Command {
	var (
		clientOnly bool
		output     string
	)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of weft and of the controller",
		Long: `Print the version of this weft binary and, unless --client is given, the
version the controller at --server reports (GET /version). An unreachable
controller is an error.`,
		Example: `  weft version
  weft version --client
  weft version -o json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != formatTable && output != formatJSON && output != formatYAML {
				return usageErrorf("-o %q: want text, json or yaml", output)
			}
			out := struct {
				Client versionInfo     `json:"client"`
				Server json.RawMessage `json:"server,omitempty"`
			}{Client: clientVersion()}
			var serverErr error
			if !clientOnly {
				out.Server, serverErr = a.serverVersion(cmd.Context())
			}
			switch output {
			case formatJSON, formatYAML:
				data, err := marshalValue(out, output)
				if err != nil {
					return fmt.Errorf("version: %w", err)
				}
				_, _ = a.stdout.Write(data)
			default:
				fmt.Fprintf(a.stdout, "Client: weft %s\n", out.Client)
				if out.Server != nil {
					var s struct {
						Version string `json:"version"`
					}
					if json.Unmarshal(out.Server, &s) != nil || s.Version == "" {
						s.Version = string(out.Server)
					}
					fmt.Fprintf(a.stdout, "Server: %s (%s)\n", s.Version, a.server)
				}
			}
			return serverErr
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client version; do not contact the controller")
	cmd.Flags().StringVarP(&output, "output", "o", formatTable, "output format: text (table), json or yaml")
	return cmd
}

// serverVersion fetches GET /version; a body that is not JSON is returned
// as a JSON string.
func (a *app) serverVersion(ctx context.Context) (json.RawMessage, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.Raw(ctx, http.MethodGet, "/version", nil)
	if err != nil {
		return nil, fmt.Errorf("server version: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("server version: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("server version: GET %s/version: HTTP %d: %s", a.server, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if json.Valid(body) {
		return json.RawMessage(body), nil
	}
	s, _ := json.Marshal(strings.TrimSpace(string(body)))
	return s, nil
}
