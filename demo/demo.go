package demo

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

//go:embed two-tenants.yaml
var example []byte

// Example returns examples/two-tenants.yaml, which the demo applies (a
// test keeps the embedded copy in sync).
func Example() []byte { return append([]byte(nil), example...) }

// DefaultPrefix names everything `weft demo` makes.
const DefaultPrefix = "wftdemo"

// Config configures Run.
type Config struct {
	// Hosts is the number of hosts (default 3). The example's endpoints on
	// hosts beyond it are placed on the others.
	Hosts int
	// Datapath is the agents' --datapath: DatapathLinux (default) or
	// DatapathEBPF.
	Datapath string
	// Keep leaves everything in place on exit (for debugging).
	Keep bool
	// NoWait runs the checks, prints, cleans up and returns (an error if a
	// check failed) instead of waiting for ctx to end.
	NoWait bool
	// Binary is the weft binary run as agent (default: this executable).
	Binary string
	// Prefix names every namespace and link (default DefaultPrefix).
	Prefix string
	// APIPort and AgentPort are the controller's ports (default 7443, 7444).
	APIPort, AgentPort int
	// Out receives the progress lines, the table and the hints.
	Out io.Writer
	// Logger receives the controller's and the lab's logs (default: a
	// JSON log in the demo's directory).
	Logger *slog.Logger
}

// ErrChecks is returned (wrapped) by Run when a reachability or isolation
// check failed.
var ErrChecks = errors.New("demo: checks failed")

// Run runs the demo: a controller in this process, a lab of Hosts host
// namespaces with a `weft agent --datapath <Datapath>` each, the two-tenant
// example applied, every endpoint Ready, reachability and isolation
// checked; then it waits for ctx to end (unless NoWait) and removes
// everything it made (unless Keep), also when a step fails half-way.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Hosts <= 0 {
		cfg.Hosts = 3
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.APIPort == 0 {
		cfg.APIPort = 7443
	}
	if cfg.AgentPort == 0 {
		cfg.AgentPort = 7444
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if os.Geteuid() != 0 {
		return errors.New("weft demo needs root: it creates network namespaces, veths and VXLAN devices")
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("find the weft binary: %w", err)
		}
	}
	out := cfg.Out
	step := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }

	unlock, err := lock(cfg.Prefix)
	if err != nil {
		return err
	}
	defer unlock()
	// We hold the lock, so anything with our prefix is a crashed run's.
	if err := testnet.Remove(netnsfile.DefaultDir, cfg.Prefix); err != nil {
		return fmt.Errorf("remove the leftovers of an earlier demo: %w", err)
	}

	dir, err := os.MkdirTemp("", "weft-demo-")
	if err != nil {
		return fmt.Errorf("make the demo directory: %w", err)
	}
	logFile, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("make the controller log: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewJSONHandler(logFile, nil))
	}

	var (
		lab *Lab
		ctl *controller.Controller
	)
	cleanup := func() {
		if cfg.Keep {
			fmt.Fprintf(out, "==> --keep: leaving the namespaces %s-* (programmed: endpoints still reach each other), the link %s-ctl and %s;\n", cfg.Prefix, cfg.Prefix, dir)
			fmt.Fprintf(out, "    the controller and the agents stop with this process. The next weft demo removes the namespaces and the link;\n")
			fmt.Fprintf(out, "    by hand: ip netns del each %s-hN-* first, then the others; ip link del %s-ctl; rm -r %s\n", cfg.Prefix, cfg.Prefix, dir)
			return
		}
		step("cleaning up")
		var errs []error
		if lab != nil {
			errs = append(errs, lab.Close())
		}
		if ctl != nil {
			errs = append(errs, ctl.Close())
		}
		// In case the lab was half-made.
		errs = append(errs, testnet.Remove(netnsfile.DefaultDir, cfg.Prefix))
		logFile.Close()
		errs = append(errs, os.RemoveAll(dir))
		if e := errors.Join(errs...); e != nil {
			fmt.Fprintf(out, "cleanup: %v\n", e)
			err = errors.Join(err, e)
			return
		}
		fmt.Fprintf(out, "    removed the controller, the agents, every namespace %s-*, the link %s-ctl and %s\n", cfg.Prefix, cfg.Prefix, dir)
	}
	defer cleanup()

	control, err := freeControlSubnet()
	if err != nil {
		return err
	}
	step("building a data centre of network namespaces: underlay bridge %s-ul, hosts %s-h1..h%d (underlay 192.0.2.0/24, controller link %s-ctl on %s)",
		cfg.Prefix, cfg.Prefix, cfg.Hosts, cfg.Prefix, control)
	lab, err = NewLab(LabConfig{Net: testnet.Options{Prefix: cfg.Prefix, Hosts: cfg.Hosts, Control: control, RootLink: true}, Datapath: cfg.Datapath, Logger: log})
	if err != nil {
		return err
	}
	ctlIP := lab.ControllerIP()
	apiAddr := net.JoinHostPort(ctlIP.String(), fmt.Sprint(cfg.APIPort))
	agentAddr := net.JoinHostPort(ctlIP.String(), fmt.Sprint(cfg.AgentPort))
	dataDir := filepath.Join(dir, "etcd")

	step("starting the controller (embedded etcd in %s): API https://%s, agents %s", dataDir, apiAddr, agentAddr)
	ctl, err = controller.New(controller.Config{DataDir: dataDir, APIListen: apiAddr, AgentListen: agentAddr, Logger: log, Version: "demo"})
	if err != nil {
		return err
	}
	if err := ctl.Start(ctx); err != nil {
		return fmt.Errorf("start the controller: %w", err)
	}
	// The controller wrote a cluster-admin context for its CLI users: the
	// demo is one.
	configFile := filepath.Join(dataDir, "admin.config")
	admin, err := adminSettings(configFile)
	if err != nil {
		return err
	}
	apiURL := admin.Server
	cl, err := admin.NewClient(client.WithTimeout(10 * time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, admin.CA, 0o644); err != nil {
		return fmt.Errorf("write the CA certificate: %w", err)
	}

	objs, err := exampleFor(lab.Hosts())
	if err != nil {
		return err
	}
	step("applying the two-tenant example (acme and globex, both on 10.0.0.0/16): %d objects", len(objs))
	for _, o := range objs {
		if _, _, err := cl.Apply(ctx, o); err != nil {
			return fmt.Errorf("apply %s: %w", apiv1.RefOf(o), err)
		}
	}

	for _, h := range lab.Hosts() {
		lf, err := os.Create(filepath.Join(dir, "agent-"+h.Name+".log"))
		if err != nil {
			return fmt.Errorf("make the agent log: %w", err)
		}
		defer lf.Close()
		// Enrol the host as an operator would: a one-time bootstrap token
		// and the CA for its agent.
		tokenFile, err := bootstrapToken(ctx, cl, h.Name, dir)
		if err != nil {
			return err
		}
		a, err := lab.StartAgent(h, AgentConfig{
			Binary: cfg.Binary, Controller: agentAddr, API: apiURL, BootstrapTokenFile: tokenFile, CAFile: caFile,
			StateDir: filepath.Join(dir, "agent-"+h.Name), Log: lf,
		})
		if err != nil {
			return err
		}
		step("started weft agent --datapath %s --host %s in netns %s (pid %d, log %s)", lab.Datapath(), h.Name, h.Netns, a.Pid(), lf.Name())
	}

	step("waiting for every endpoint to be Ready")
	start := time.Now()
	eps, err := waitReady(ctx, cl, len(objectsOf[*apiv1.Endpoint](objs)), 60*time.Second, func(s string) { fmt.Fprintf(out, "    %s\n", s) })
	if err != nil {
		return err
	}
	if err := waitAlive(ctx, cl, len(lab.Hosts()), 30*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(out, "    %d endpoints Ready and %d hosts Alive in %s\n", len(eps), len(lab.Hosts()), time.Since(start).Round(time.Millisecond))

	step("checking what policy allows and denies inside each tenant, isolation between them, and a rate cap")
	results, err := Check(ctx, eps, objectsOf[*apiv1.QoSClass](objs))
	if err != nil {
		return err
	}
	PrintResults(out, results)
	fmt.Fprintf(out, "    acme/db-1 and globex/wh-1 are both 10.0.2.10: in acme's VPC that address is acme/db-1, which\n"+
		"    refuses globex's port, so globex's server is never reached (and the other way round).\n")
	failed := 0
	for _, r := range results {
		if !r.OK {
			failed++
		}
	}

	if failed > 0 {
		err = fmt.Errorf("%w: %d of %d", ErrChecks, failed, len(results))
		if cfg.NoWait {
			return err
		}
		fmt.Fprintf(out, "\n%v; the lab stays up for inspection (logs in %s)\n", err, dir)
	}
	printHints(out, configFile, eps, lab, dir)
	if cfg.NoWait {
		return nil
	}
	fmt.Fprintf(out, "\nweft demo is running; press Ctrl-C to stop and clean up.\n")
	<-ctx.Done()
	fmt.Fprintln(out)
	return err
}

// lock takes an exclusive lock for the prefix, so that two demos do not
// sweep each other.
func lock(prefix string) (unlock func(), err error) {
	path := filepath.Join(os.TempDir(), "weft-demo-"+prefix+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("demo lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another weft demo (prefix %s) is running: %s is locked", prefix, path)
		}
		return nil, fmt.Errorf("demo lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// freeControlSubnet picks the first documentation subnet that no route of
// the root namespace overlaps: TEST-NET-2, then TEST-NET-3.
func freeControlSubnet() (netip.Prefix, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list routes: %w", err)
	}
	candidates := []string{"198.51.100.0/24", "203.0.113.0/24"}
next:
	for _, c := range candidates {
		p := netip.MustParsePrefix(c)
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			a, ok := netip.AddrFromSlice(r.Dst.IP)
			if ok && ones > 0 && netip.PrefixFrom(a.Unmap(), ones).Overlaps(p) {
				continue next
			}
		}
		return p, nil
	}
	return netip.Prefix{}, fmt.Errorf("the machine already routes %s: no free documentation subnet for the demo's controller link", strings.Join(candidates, " and "))
}

// exampleFor returns the example's objects adapted to the lab's hosts: one
// Host per lab host (h1..h3 as in the example, more numbered on), and
// endpoints of hosts the lab lacks moved onto the others.
func exampleFor(hosts []*testnet.Host) ([]apiv1.Object, error) {
	objs, err := apiv1.DecodeDocuments(example)
	if err != nil {
		return nil, fmt.Errorf("decode the example: %w", err)
	}
	lab := map[string]bool{}
	for _, h := range hosts {
		lab[h.Name] = true
	}
	var out []apiv1.Object
	for _, o := range objs {
		if h, ok := o.(*apiv1.Host); ok && !lab[h.Metadata.Name] {
			continue
		}
		if e, ok := o.(*apiv1.Endpoint); ok && !lab[e.Spec.Host] {
			var i int
			fmt.Sscanf(e.Spec.Host, "h%d", &i)
			e.Spec.Host = hosts[(max(i, 1)-1)%len(hosts)].Name
		}
		out = append(out, o)
	}
	var extra []apiv1.Object
	for _, h := range hosts {
		known := false
		for _, o := range out {
			if x, ok := o.(*apiv1.Host); ok && x.Metadata.Name == h.Name {
				known = true
			}
		}
		if !known {
			extra = append(extra, &apiv1.Host{
				TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindHost},
				Metadata: apiv1.ObjectMeta{Name: h.Name},
				Spec:     apiv1.HostSpec{UnderlayIP: h.UnderlayIP.String()},
			})
		}
	}
	return append(extra, out...), nil
}

// objectsOf returns the objects of one kind among objs.
func objectsOf[T apiv1.Object](objs []apiv1.Object) []T {
	var out []T
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// waitReady waits until n endpoints exist and all are Ready, and returns
// them sorted by tenant and name. progress gets a line when the count of
// Ready endpoints changes.
func waitReady(parent context.Context, cl *client.Client, n int, timeout time.Duration, progress func(string)) ([]*apiv1.Endpoint, error) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	last := -1
	for {
		objs, _, err := cl.List(ctx, apiv1.KindEndpoint, "", "")
		var eps []*apiv1.Endpoint
		ready := 0
		var pending []string
		for _, o := range objs {
			e := o.(*apiv1.Endpoint)
			eps = append(eps, e)
			if e.Status.Phase == apiv1.PhaseReady {
				ready++
			} else {
				pending = append(pending, fmt.Sprintf("%s/%s@%s %s %s", e.Metadata.Tenant, e.Metadata.Name, e.Spec.Host, e.Status.Phase, e.Status.Message))
			}
		}
		if err == nil && ready != last {
			progress(fmt.Sprintf("%d/%d endpoints Ready", ready, n))
			last = ready
		}
		if err == nil && ready == n && len(eps) == n {
			sort.Slice(eps, func(i, j int) bool { return epName(eps[i]) < epName(eps[j]) })
			return eps, nil
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return nil, fmt.Errorf("interrupted while waiting for the endpoints: %w", parent.Err())
			}
			return nil, fmt.Errorf("endpoints not Ready within %s (last error: %v): %s", timeout, err, strings.Join(pending, "; "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitAlive waits until n hosts report Alive.
func waitAlive(parent context.Context, cl *client.Client, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	for {
		objs, _, err := cl.List(ctx, apiv1.KindHost, "", "")
		var state []string
		alive := 0
		for _, o := range objs {
			h := o.(*apiv1.Host)
			state = append(state, h.Metadata.Name+"="+h.Status.Liveness)
			if h.Status.Liveness == apiv1.LivenessAlive {
				alive++
			}
		}
		if err == nil && alive == n {
			return nil
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("interrupted while waiting for the hosts: %w", parent.Err())
			}
			return fmt.Errorf("hosts not Alive within %s (last error: %v): %s", timeout, err, strings.Join(state, " "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// adminSettings reads the cluster-admin context the controller wrote.
func adminSettings(path string) (*clientconfig.Settings, error) {
	s, err := clientconfig.LoadSettings(path)
	if err != nil {
		return nil, err
	}
	if s.Token == "" || s.CA == nil {
		return nil, fmt.Errorf("%s lacks the cluster-admin token or the CA", path)
	}
	return s, nil
}

// bootstrapToken creates a bootstrap token for host and writes it to
// dir/HOST.token (mode 0600).
func bootstrapToken(ctx context.Context, cl *client.Client, host, dir string) (string, error) {
	tok, err := cl.CreateToken(ctx, client.TokenRequest{Role: "bootstrap", Host: host, Description: "weft demo"})
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, host+".token")
	if err := clientconfig.WriteFile(path, []byte(tok.Secret+"\n")); err != nil {
		return "", err
	}
	return path, nil
}

func epName(e *apiv1.Endpoint) string { return e.Metadata.Tenant + "/" + e.Metadata.Name }

func printHints(w io.Writer, configFile string, eps []*apiv1.Endpoint, lab *Lab, dir string) {
	var web, db *apiv1.Endpoint
	for _, e := range eps {
		switch epName(e) {
		case "acme/web-1":
			web = e
		case "acme/db-1":
			db = e
		}
	}
	hosts := lab.Hosts()
	last := hosts[len(hosts)-1]
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nTry, as root in another shell:\n")
	line := func(cmd, what string) { fmt.Fprintf(tw, "  %s\t# %s\n", cmd, what) }
	line("export WEFT_CONFIG="+configFile, "the demo's controller, its CA and a cluster-admin token")
	line("weft get hosts", "the agents heartbeat over UDP")
	line("weft get endpoints --all-tenants", "two tenants, the same addresses")
	line("weft get endpoints --tenant acme -o yaml", "status: ip, mac, host, netns")
	if web != nil && db != nil {
		line(fmt.Sprintf("nsenter --net=%s ping -c3 %s", web.Status.Netns, db.Status.IP), "acme/web-1 -> acme/db-1")
		line(fmt.Sprintf("nsenter --net=%s ip route", web.Status.Netns), "inside an endpoint")
	}
	if lab.Datapath() == DatapathEBPF {
		line("ip netns list | grep "+lab.Prefix()+"-", "hosts, endpoints (-e<hash>)")
		line("ls -R /sys/fs/bpf/weft/"+lab.Prefix()+"-"+hosts[0].Name, "a host's BPF maps, programs and links, pinned")
	} else {
		line("ip netns list | grep "+lab.Prefix()+"-", "hosts, VPC routers (-v<vni>), endpoints (-e<hash>)")
	}
	line(fmt.Sprintf("nsenter --net=%s ip -d link", hosts[0].Path), "a host and its underlay ul0")
	tw.Flush()
	fmt.Fprintf(w, "  # migrate acme/web-2 to %s:\n", last.Name)
	fmt.Fprintf(w, "  echo '{apiVersion: weft/v1, kind: Endpoint, metadata: {name: web-2, tenant: acme, labels: {role: web}}, spec: {subnet: web, host: %s, qosClass: gold}}' | weft apply -f -\n", last.Name)
	fmt.Fprintf(w, "Logs: %s (controller.log, agent-hN.log)\n", dir)
}
