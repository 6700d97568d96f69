package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/demo"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// The data-plane tests run the real chain: a `weft controller` process and
// one `weft agent` process per host, each inside its own namespace of a
// demo.Lab (the controller in the underlay namespace, so nothing is added
// to the root namespace), once with `--datapath linux` and once with
// `--datapath ebpf` (forEachDatapath). TestDataPlane runs the two-tenant
// example without its security policies (it checks plain connectivity)
// plus a few endpoints; TestPolicy and TestQoS their own.

// dataplaneExtra adds endpoints to the example: 10 in all, both tenants on
// all three hosts, two subnets each.
const dataplaneExtra = `
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: web-3, tenant: acme, labels: {role: web}}
spec: {subnet: web, host: h3}
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: db-2, tenant: acme, labels: {role: db}}
spec: {subnet: db, host: h1, ip: 10.0.2.20}
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: etl-3, tenant: globex, labels: {role: etl}}
spec: {subnet: etl, host: h2}
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: wh-2, tenant: globex, labels: {role: warehouse}}
spec: {subnet: warehouse, host: h3, ip: 10.0.2.30}
`

const helloPort = 7000

// migrationLossBound is the longest echo loss a migration may cause here.
const migrationLossBound = 2 * time.Second

// datapaths are the data planes the lab tests run on.
var datapaths = []string{demo.DatapathLinux, demo.DatapathEBPF}

// forEachDatapath runs fn in a subtest per data plane.
func forEachDatapath(t *testing.T, fn func(t *testing.T, datapath string)) {
	for _, dp := range datapaths {
		t.Run(dp, func(t *testing.T) { fn(t, dp) })
	}
}

// dpEnv is one lab with its controller and agents.
type dpEnv struct {
	t       *testing.T
	lab     *demo.Lab
	dataDir string
	ctlIP   string
	ctl     *nsProc
	agents  map[string]*demo.Agent
	logs    map[string]*lockedWriter
	states  map[string]string
	cl      *client.Client
	file    string // the applied YAML
	// agentArgs returns flags appended to an agent's (nil: none).
	agentArgs func(host string) []string

	mu      sync.Mutex
	servers map[string]func() // hello servers by endpoint
}

// nsProc is a process started inside a namespace.
type nsProc struct {
	cmd    *exec.Cmd
	stderr *lockedWriter
	done   chan struct{}
}

func (p *nsProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop within 20s of SIGTERM", p.cmd.Args[1])
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func startIn(t *testing.T, nsPath string, args ...string) *nsProc {
	t.Helper()
	p := &nsProc{stderr: &lockedWriter{w: &bytes.Buffer{}}, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := netnsfile.Do(nsPath, p.cmd.Start); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done })
	return p
}

// dataplaneDoc is the example without its security policies, plus
// dataplaneExtra.
func dataplaneDoc() []byte {
	var docs []string
	for _, d := range strings.Split(string(demo.Example()), "\n---\n") {
		if !strings.Contains(d, "kind: "+apiv1.KindSecurityPolicy+"\n") {
			docs = append(docs, d)
		}
	}
	return []byte(strings.Join(docs, "\n---\n") + dataplaneExtra)
}

// newDPEnv builds a lab of three hosts whose agents run datapath, starts
// its controller, applies doc and starts the agents.
func newDPEnv(t *testing.T, doc []byte, datapath string) *dpEnv {
	return newLabEnv(t, doc, datapath, 3, nil)
}

// newLabEnv is newDPEnv with hosts hosts whose agents get the flags
// agentArgs returns (nil: none) appended.
func newLabEnv(t *testing.T, doc []byte, datapath string, hosts int, agentArgs func(host string) []string) *dpEnv {
	t.Helper()
	e := newLabOf(t, doc, datapath, hosts)
	e.agentArgs = agentArgs
	for _, h := range e.lab.Hosts() {
		e.states[h.Name] = filepath.Join(t.TempDir(), h.Name)
		e.startAgent(h.Name)
	}
	return e
}

// newDPLab builds a lab of three hosts for agents running datapath, starts
// its controller and applies doc; it starts no agent.
func newDPLab(t *testing.T, doc []byte, datapath string) *dpEnv { return newLabOf(t, doc, datapath, 3) }

// newLabOf is newDPLab with hosts hosts.
func newLabOf(t *testing.T, doc []byte, datapath string, hosts int) *dpEnv {
	t.Helper()
	nettest.RequireRoot(t)
	if removed, err := testnet.Sweep(netnsfile.DefaultDir); err == nil && len(removed) > 0 {
		t.Logf("swept %d namespaces of crashed runs", len(removed))
	}
	prefix := testnet.DefaultPrefix()
	lab, err := demo.NewLab(demo.LabConfig{Net: testnet.Options{Prefix: prefix, Hosts: hosts}, Datapath: datapath})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	e := &dpEnv{t: t, lab: lab, dataDir: t.TempDir(), ctlIP: lab.ControllerIP().String(),
		agents: map[string]*demo.Agent{}, logs: map[string]*lockedWriter{}, states: map[string]string{}, servers: map[string]func(){}}
	t.Cleanup(func() {
		e.stopServers()
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
		if left, _ := lab.Names(); len(left) > 0 {
			t.Errorf("namespaces left after cleanup: %v", left)
		}
		if t.Failed() {
			for h, l := range e.logs {
				t.Logf("agent %s log:\n%s", h, tail(l.String(), 40))
			}
			if e.ctl != nil {
				t.Logf("controller log:\n%s", tail(e.ctl.stderr.String(), 40))
			}
		}
	})
	e.startController()

	e.file = filepath.Join(t.TempDir(), "dataplane.yaml")
	if err := os.WriteFile(e.file, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := e.weft("apply", "-f", e.file); code != 0 {
		t.Fatalf("apply: %s", out)
	}
	return e
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *dpEnv) apiURL() string { return "https://" + net.JoinHostPort(e.ctlIP, "7443") }

// dialUnderlay dials from the underlay namespace, where the controller is.
func (e *dpEnv) dialUnderlay(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netnsfile.Do(e.lab.UnderlayPath(), func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

func (e *dpEnv) adminConfig() string { return filepath.Join(e.dataDir, "admin.config") }

// startController runs `weft controller` in the underlay namespace on the
// env's data dir and waits until it answers.
func (e *dpEnv) startController() {
	t := e.t
	t.Helper()
	e.ctl = startIn(t, e.lab.UnderlayPath(), "controller", "--data-dir", e.dataDir,
		"--api-listen", net.JoinHostPort(e.ctlIP, "7443"), "--agent-listen", net.JoinHostPort(e.ctlIP, "7444"), "--log-level", "warn")
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The controller writes its admin.config once it serves.
		err := readyz(e.adminConfig(), e.dialUnderlay)
		if err == nil {
			break
		}
		select {
		case <-e.ctl.done:
			t.Fatalf("controller exited during start-up: %s", e.ctl.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready after 30s: %v; log: %s", err, e.ctl.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.cl == nil {
		cl, err := adminClient(e.adminConfig(), e.dialUnderlay)
		if err != nil {
			t.Fatal(err)
		}
		e.cl = cl
		t.Cleanup(func() { cl.Close() })
	}
}

func (e *dpEnv) startAgent(host string) *demo.Agent {
	t := e.t
	t.Helper()
	if e.logs[host] == nil {
		e.logs[host] = &lockedWriter{w: &bytes.Buffer{}}
	}
	ac := demo.AgentConfig{
		Binary: binary(t), Controller: net.JoinHostPort(e.ctlIP, "7444"), API: e.apiURL(),
		StateDir: e.states[host], Log: e.logs[host],
	}
	if e.agentArgs != nil {
		ac.Args = e.agentArgs(host)
	}
	if _, err := os.Stat(filepath.Join(e.states[host], "credentials")); err != nil {
		// First start: enrol (later starts use the stored credentials).
		f := bootstrap(t, e.cl, host, t.TempDir())
		ac.BootstrapTokenFile, ac.CAFile = f[1], f[3]
	}
	a, err := e.lab.StartAgent(e.lab.HostByName(host), ac)
	if err != nil {
		t.Fatal(err)
	}
	e.agents[host] = a
	return a
}

// weft runs the CLI inside the underlay namespace (where the controller is).
func (e *dpEnv) weft(args ...string) (string, int) {
	e.t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(binary(e.t), args...)
	cmd.Env = append(os.Environ(), "WEFT_CONFIG="+e.adminConfig())
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netnsfile.Do(e.lab.UnderlayPath(), cmd.Start); err != nil {
		e.t.Fatalf("weft %v: %v", args, err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		e.t.Fatalf("weft %v: %v", args, err)
	}
	return out.String(), 0
}

// endpoints lists every endpoint, sorted by tenant/name.
func (e *dpEnv) endpoints() ([]*apiv1.Endpoint, error) {
	objs, _, err := e.cl.List(context.Background(), apiv1.KindEndpoint, "", "")
	var eps []*apiv1.Endpoint
	for _, o := range objs {
		eps = append(eps, o.(*apiv1.Endpoint))
	}
	sort.Slice(eps, func(i, j int) bool { return epID(eps[i]) < epID(eps[j]) })
	return eps, err
}

func epID(e *apiv1.Endpoint) string { return e.Metadata.Tenant + "/" + e.Metadata.Name }

// waitReady waits until there are n endpoints, all Ready, and returns them
// by tenant/name.
func (e *dpEnv) waitReady(n int, d time.Duration) map[string]*apiv1.Endpoint {
	e.t.Helper()
	var eps []*apiv1.Endpoint
	eventually(e.t, d, fmt.Sprintf("%d endpoints Ready", n), func() (bool, string) {
		var err error
		eps, err = e.endpoints()
		var s []string
		ready := 0
		for _, ep := range eps {
			s = append(s, fmt.Sprintf("%s@%s=%s %s", epID(ep), ep.Status.Host, ep.Status.Phase, ep.Status.Message))
			if ep.Status.Phase == apiv1.PhaseReady && ep.Status.Host == ep.Spec.Host && ep.Status.Netns != "" {
				ready++
			}
		}
		return err == nil && ready == n && len(eps) == n, fmt.Sprint(s, err)
	})
	by := map[string]*apiv1.Endpoint{}
	for _, ep := range eps {
		by[epID(ep)] = ep
	}
	return by
}

// serve (re)starts the hello server of ep, which answers "tenant/name".
func (e *dpEnv) serve(ep *apiv1.Endpoint) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if stop := e.servers[epID(ep)]; stop != nil {
		stop()
	}
	ln, err := testnet.ListenTCP(ep.Status.Netns, fmt.Sprintf(":%d", helloPort))
	if err != nil {
		e.t.Fatalf("hello server on %s: %v", epID(ep), err)
	}
	e.servers[epID(ep)] = testnet.ServeHello(ln, epID(ep))
}

func (e *dpEnv) stopServers() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, stop := range e.servers {
		stop()
		delete(e.servers, k)
	}
}

func helloAddr(ep *apiv1.Endpoint) string {
	return net.JoinHostPort(ep.Status.IP, fmt.Sprint(helloPort))
}

// TestDataPlane runs the data-plane scenarios in order on one lab (they
// build on each other's state): the connectivity matrix, a migration, an
// agent killed with SIGKILL, the controller down, and deleting everything.
func TestDataPlane(t *testing.T) { forEachDatapath(t, testDataPlane) }

func testDataPlane(t *testing.T, datapath string) {
	e := newDPEnv(t, dataplaneDoc(), datapath)
	eps := e.waitReady(10, 60*time.Second)
	for _, ep := range eps {
		e.serve(ep)
	}
	steps := []struct {
		name string
		fn   func(t *testing.T, e *dpEnv, eps map[string]*apiv1.Endpoint) map[string]*apiv1.Endpoint
	}{
		{"ConnectivityMatrix", testMatrix},
		{"Migration", testMigration},
		{"KillAgent", testKillAgent},
		{"ControllerDown", testControllerDown},
		{"DeleteEverything", testDeleteEverything},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) { eps = s.fn(t, e, eps) })
		if !ok {
			// Later scenarios build on this one's state.
			t.Fatalf("%s failed; skipping the rest", s.name)
		}
	}
}

// testMatrix: every same-tenant pair reaches each other (ICMP echo and TCP,
// the TCP server answering with its own name), no cross-tenant pair does.
func testMatrix(t *testing.T, e *dpEnv, eps map[string]*apiv1.Endpoint) map[string]*apiv1.Endpoint {
	ctx := context.Background()
	used := map[string]map[string]bool{}
	for _, ep := range eps {
		if used[ep.Metadata.Tenant] == nil {
			used[ep.Metadata.Tenant] = map[string]bool{}
		}
		used[ep.Metadata.Tenant][ep.Status.IP] = true
	}
	// seen: remote locations a host's VPC router may have learned already,
	// by "host tenant ip".
	seen := map[string]bool{}
	var first, cold []time.Duration
	var sameHost, crossHost, sameSubnet, crossSubnet, isolated int
	for _, src := range sortedEPs(eps) {
		for _, dst := range sortedEPs(eps) {
			if src == dst {
				continue
			}
			name := epID(src) + "->" + epID(dst)
			if src.Metadata.Tenant == dst.Metadata.Tenant {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				rtt, err := testnet.Ping(pctx, src.Status.Netns, netip.MustParseAddr(dst.Status.IP))
				cancel()
				fwd := src.Status.Host + " " + src.Metadata.Tenant + " " + dst.Status.IP
				rev := dst.Status.Host + " " + dst.Metadata.Tenant + " " + src.Status.IP
				never := src.Status.Host != dst.Status.Host && !seen[fwd] && !seen[rev]
				seen[fwd], seen[rev] = true, true
				if err != nil {
					t.Errorf("%s: first ICMP echo: %v", name, err)
				} else if never {
					cold = append(cold, rtt)
				} else {
					first = append(first, rtt)
				}
				hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				got, err := testnet.Hello(hctx, src.Status.Netns, helloAddr(dst))
				cancel()
				if err != nil || got != epID(dst) {
					t.Errorf("%s: TCP to %s: got %q, %v; want %q", name, helloAddr(dst), got, err, epID(dst))
				}
				if src.Status.Host == dst.Status.Host {
					sameHost++
				} else {
					crossHost++
				}
				if src.Spec.Subnet == dst.Spec.Subnet {
					sameSubnet++
				} else {
					crossSubnet++
				}
				continue
			}
			// Another tenant: its address is either unknown in src's VPC
			// (no answer at all) or another endpoint of src's own tenant.
			isolated++
			hctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			got, _ := testnet.Hello(hctx, src.Status.Netns, helloAddr(dst))
			cancel()
			if got == epID(dst) {
				t.Errorf("%s: crossed tenants: TCP to %s answered %q", name, helloAddr(dst), got)
			}
			if !used[src.Metadata.Tenant][dst.Status.IP] {
				pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				_, err := testnet.Ping(pctx, src.Status.Netns, netip.MustParseAddr(dst.Status.IP))
				cancel()
				if err == nil {
					t.Errorf("%s: crossed tenants: ICMP echo to %s answered, and %s has no endpoint with that address", name, dst.Status.IP, src.Metadata.Tenant)
				}
			}
		}
	}
	if sameHost == 0 || crossHost == 0 || sameSubnet == 0 || crossSubnet == 0 {
		t.Errorf("matrix does not cover every case: same host %d, across hosts %d, same subnet %d, across subnets %d", sameHost, crossHost, sameSubnet, crossSubnet)
	}
	t.Logf("%d same-tenant pairs (same host %d, across hosts %d; same subnet %d, across subnets %d) reach each other, %d cross-tenant pairs isolated",
		sameHost+crossHost, sameHost, crossHost, sameSubnet, crossSubnet, isolated)
	t.Logf("first ICMP echo round trip to a never-seen remote peer (request and reply both learned on demand): %s", stats(cold))
	t.Logf("first ICMP echo round trip of the other pairs (local, or location already learned): %s", stats(first))
	return eps
}

// stats summarizes durations: count, median, max.
func stats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	ds = append([]time.Duration(nil), ds...)
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	r := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	return fmt.Sprintf("%d pairs, median %s, max %s", len(ds), r(ds[len(ds)/2]), r(ds[len(ds)-1]))
}

func sortedEPs(eps map[string]*apiv1.Endpoint) []*apiv1.Endpoint {
	var out []*apiv1.Endpoint
	for _, ep := range eps {
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return epID(out[i]) < epID(out[j]) })
	return out
}

// pinger sends ICMP echoes from a namespace at a fixed interval and
// records which were answered.
type pinger struct {
	conn     *icmp.PacketConn
	dst      netip.Addr
	id       int
	interval time.Duration

	mu    sync.Mutex
	sent  []time.Time
	got   map[int]bool
	stopc chan struct{}
	wg    sync.WaitGroup
}

func startPinger(t *testing.T, nsPath string, dst netip.Addr, interval time.Duration) *pinger {
	t.Helper()
	p := &pinger{dst: dst, id: rand.IntN(1 << 16), interval: interval, got: map[int]bool{}, stopc: make(chan struct{})}
	if err := netnsfile.Do(nsPath, func() error {
		var err error
		p.conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatalf("pinger: %v", err)
	}
	p.wg.Add(2)
	go p.send()
	go p.receive()
	t.Cleanup(p.stop)
	return p
}

func (p *pinger) send() {
	defer p.wg.Done()
	tk := time.NewTicker(p.interval)
	defer tk.Stop()
	for seq := 0; ; seq++ {
		b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("weft-e2e")}}).Marshal(nil)
		p.mu.Lock()
		p.sent = append(p.sent, time.Now())
		p.mu.Unlock()
		_, _ = p.conn.WriteTo(b, &net.IPAddr{IP: p.dst.AsSlice()})
		select {
		case <-p.stopc:
			return
		case <-tk.C:
		}
	}
}

func (p *pinger) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if m.Type != ipv4.ICMPTypeEchoReply || !ok || echo.ID != p.id {
			continue
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(p.dst.AsSlice()) {
			continue
		}
		p.mu.Lock()
		p.got[echo.Seq] = true
		p.mu.Unlock()
	}
}

// stop stops sending, waits a second for the last replies, and stops.
func (p *pinger) stop() {
	select {
	case <-p.stopc:
		return
	default:
	}
	close(p.stopc)
	time.Sleep(time.Second)
	p.conn.Close()
	p.wg.Wait()
}

// result returns how many echoes were sent and lost, and the loss window:
// from the first lost echo's send time to the send time of the first echo
// answered after the last lost one (zero if none was lost).
func (p *pinger) result() (sent, lost int, window time.Duration, firstLost time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first, last := -1, -1
	for seq := range p.sent {
		if !p.got[seq&0xffff] {
			lost++
			if first < 0 {
				first = seq
			}
			last = seq
		}
	}
	if first < 0 {
		return len(p.sent), 0, 0, time.Time{}
	}
	end := p.sent[len(p.sent)-1]
	if last+1 < len(p.sent) {
		end = p.sent[last+1]
	}
	return len(p.sent), lost, end.Sub(p.sent[first]), p.sent[first]
}

// answeredTail reports whether the last n echoes sent were answered.
func (p *pinger) answeredTail(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sent) < n {
		return false
	}
	for seq := len(p.sent) - n; seq < len(p.sent); seq++ {
		if !p.got[seq&0xffff] {
			return false
		}
	}
	return true
}

// testMigration moves acme/db-1 (10.0.2.10) from h3 to h2 while acme/web-1
// (h1) pings it every 10 ms, and logs the loss window.
func testMigration(t *testing.T, e *dpEnv, eps map[string]*apiv1.Endpoint) map[string]*apiv1.Endpoint {
	src, dst := eps["acme/web-1"], eps["acme/db-1"]
	if dst.Status.Host != "h3" {
		t.Fatalf("acme/db-1 on %s, want h3", dst.Status.Host)
	}
	p := startPinger(t, src.Status.Netns, netip.MustParseAddr(dst.Status.IP), 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	moved := fmt.Sprintf("apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: db-1, tenant: acme, labels: {role: db}}\nspec: {subnet: db, host: h2, ip: 10.0.2.10}\n")
	f := filepath.Join(t.TempDir(), "move.yaml")
	if err := os.WriteFile(f, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	// When does h1 send to h2?
	h2 := e.lab.HostByName("h2").UnderlayIP
	switched := make(chan time.Duration, 1)
	watchCtx, stopWatch := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopWatch()
	written := time.Now()
	go func() {
		defer close(switched)
		for watchCtx.Err() == nil {
			if to, _ := e.forwardsTo("h1", src.Status.VNI, dst.Status.IP); to == h2 {
				switched <- time.Since(written)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if out, code := e.weft("apply", "-f", f); code != 0 || !strings.Contains(out, "configured") {
		t.Fatalf("apply the move: exit %d: %s", code, out)
	}
	eps = e.waitReady(10, 30*time.Second)
	ready := time.Since(written)
	forwards, ok := <-switched
	if !ok {
		t.Errorf("h1 never forwarded %s to h2 (%s)", dst.Status.IP, h2)
	}
	eventually(t, 5*time.Second, "echoes answered again after the move", func() (bool, string) {
		return p.answeredTail(20), ""
	})
	p.stop()
	sent, lost, window, firstLost := p.result()
	// The apply includes the CLI's start-up and round trips, so these are upper bounds.
	if lost == 0 {
		t.Logf("migration h3 -> h2: %d echoes every 10 ms, none lost; after `weft apply` started: h1 forwards to h2 in %s, Ready on h2 in %s",
			sent, forwards.Round(time.Millisecond), ready.Round(time.Millisecond))
	} else {
		t.Logf("migration h3 -> h2: %d echoes every 10 ms, %d lost, loss window %s (goal <= 200ms) starting %s after `weft apply` started; h1 forwards to h2 in %s, Ready on h2 in %s",
			sent, lost, window.Round(time.Millisecond), firstLost.Sub(written).Round(time.Millisecond), forwards.Round(time.Millisecond), ready.Round(time.Millisecond))
		// The goal (200 ms) is asserted only loosely: the window is how
		// long h2's agent takes to make the endpoint, which a loaded
		// machine stretches (585 ms seen with other work running); a
		// broken hand-over loses seconds (an ARP retry, a lookup timeout).
		if window > migrationLossBound {
			t.Errorf("migration lost echoes for %s, want at most %s (goal 200ms)", window.Round(time.Millisecond), migrationLossBound)
		}
	}
	db := eps["acme/db-1"]
	if db.Status.Host != "h2" || !strings.Contains(db.Status.Netns, "-h2-") {
		t.Errorf("acme/db-1 after the move: host %s netns %s, want h2", db.Status.Host, db.Status.Netns)
	}
	e.serve(db)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := testnet.Hello(ctx, src.Status.Netns, helloAddr(db)); err != nil || got != "acme/db-1" {
		t.Errorf("TCP to the moved acme/db-1: got %q, %v", got, err)
	}
	return eps
}

// forwardsTo returns the underlay address of the host that host sends
// VNI vni's packets for ip to (invalid if none): with linux, the host whose
// VTEP MAC the VPC router's neighbour entry names; with ebpf, the remote
// the driver's pinned map holds.
func (e *dpEnv) forwardsTo(host string, vni uint32, ip string) (netip.Addr, error) {
	if e.lab.Datapath() == demo.DatapathEBPF {
		a, _, err := ebpf.LookupRemote(ebpf.PinDir("/sys/fs/bpf", e.lab.Prefix(), host), datapath.RemoteKey{VNI: vni, IP: netip.MustParseAddr(ip)})
		return a, err
	}
	vpcNS := filepath.Join(netnsfile.DefaultDir, linux.VPCNetnsName(e.lab.Prefix(), host, vni))
	mac, err := neighMAC(vpcNS, fmt.Sprintf("wftx%d", vni), ip)
	for _, h := range e.lab.Hosts() {
		if mac != "" && linux.VTEPMAC(h.UnderlayIP).String() == mac {
			return h.UnderlayIP, err
		}
	}
	return netip.Addr{}, err
}

// neighMAC returns the link-layer address of ip's neighbour entry on dev in
// the namespace at nsPath ("" if none).
func neighMAC(nsPath, dev, ip string) (string, error) {
	fd, err := netns.GetFromPath(nsPath)
	if err != nil {
		return "", err
	}
	h, err := netlink.NewHandleAt(fd)
	fd.Close()
	if err != nil {
		return "", err
	}
	defer h.Close()
	link, err := h.LinkByName(dev)
	if err != nil {
		return "", err
	}
	neighs, err := h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for _, n := range neighs {
		if n.IP.String() == ip && n.HardwareAddr != nil {
			return n.HardwareAddr.String(), nil
		}
	}
	return "", nil
}

// nsState is what identifies a host's data plane objects: the namespaces
// of its agent (by inode), the links in them and the host's own (by
// ifindex), and what the ebpf driver pinned (by the pin's inode: a map or
// program made again is pinned again).
func nsState(t *testing.T, e *dpEnv, host string) map[string]string {
	t.Helper()
	names, err := e.lab.Names()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	links := func(name, path string, keep func(string) bool) {
		fd, err := netns.GetFromPath(path)
		if err != nil {
			t.Fatal(err)
		}
		h, err := netlink.NewHandleAt(fd)
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
		ls, err := h.LinkList()
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if keep(l.Attrs().Name) {
				out[name+"/"+l.Attrs().Name] = fmt.Sprintf("ifindex %d", l.Attrs().Index)
			}
		}
	}
	for _, name := range names {
		if !strings.HasPrefix(name, e.lab.Prefix()+"-"+host+"-") {
			continue
		}
		path := filepath.Join(netnsfile.DefaultDir, name)
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		out[name] = fmt.Sprintf("netns inode %d", st.Ino)
		links(name, path, func(string) bool { return true })
	}
	links(host, e.lab.HostByName(host).Path, func(n string) bool { return strings.HasPrefix(n, linux.LinkPrefix) })
	pins := ebpf.PinDir("/sys/fs/bpf", e.lab.Prefix(), host)
	_ = filepath.WalkDir(pins, func(path string, d os.DirEntry, err error) error {
		var st syscall.Stat_t
		if err == nil && !d.IsDir() && syscall.Stat(path, &st) == nil {
			out["pin "+strings.TrimPrefix(path, pins)] = fmt.Sprintf("inode %d", st.Ino)
		}
		return nil
	})
	return out
}

// testKillAgent kills h1's agent with SIGKILL while traffic flows from and
// to h1 (an echo every 100 ms, none may be lost), restarts it, and checks
// that it reconciled without replacing anything (the same namespaces,
// links and pins: inodes, ifindexes) and without writing anything (its
// driver logs every Set that writes).
func testKillAgent(t *testing.T, e *dpEnv, eps map[string]*apiv1.Endpoint) map[string]*apiv1.Endpoint {
	before := nsState(t, e, "h1")
	p1 := startPinger(t, eps["acme/web-1"].Status.Netns, netip.MustParseAddr(eps["acme/db-1"].Status.IP), 100*time.Millisecond)
	p2 := startPinger(t, eps["globex/wh-1"].Status.Netns, netip.MustParseAddr(eps["globex/etl-1"].Status.IP), 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	e.agents["h1"].Kill()
	time.Sleep(1500 * time.Millisecond)
	logFrom := len(e.logs["h1"].String())
	e.startAgent("h1")
	eventually(t, 30*time.Second, "h1 Alive again with its view acknowledged", func() (bool, string) {
		o, err := e.cl.Get(context.Background(), apiv1.KindHost, "", "h1")
		if err != nil {
			return false, err.Error()
		}
		st := o.(*apiv1.Host).Status
		return st.Liveness == apiv1.LivenessAlive && st.ViewVersion > 0 && st.LastError == "", fmt.Sprintf("%+v", st)
	})
	eps = e.waitReady(10, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	p1.stop()
	p2.stop()
	for _, p := range []*pinger{p1, p2} {
		sent, lost, window, _ := p.result()
		if lost > 0 || sent < 20 {
			t.Errorf("echoes %s across kill -9 and restart of h1's agent: %d sent, %d lost (window %s), want none lost", p.dst, sent, lost, window)
		}
	}
	after := nsState(t, e, "h1")
	if len(before) == 0 {
		t.Fatal("no namespaces of h1's agent found")
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the restarted agent replaced data-plane objects (-before +after):\n%s", diff)
	}
	if strings.Contains(e.logs["h1"].String(), "reconcile repaired drift") {
		t.Errorf("the restarted agent repaired drift, want none:\n%s", tail(e.logs["h1"].String(), 20))
	}
	if log := e.logs["h1"].String()[logFrom:]; strings.Contains(log, `"msg":"datapath set"`) {
		t.Errorf("the restarted agent wrote to its data plane, want no writes:\n%s", tail(log, 20))
	}
	// A peer never seen before the restart is learned by the new agent.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := testnet.Hello(ctx, eps["acme/db-2"].Status.Netns, helloAddr(eps["acme/web-3"])); err != nil || got != "acme/web-3" {
		t.Errorf("TCP h1 -> h3 after the restart: got %q, %v", got, err)
	}
	return eps
}

// testControllerDown stops the controller: traffic keeps flowing; started
// again on the same data dir, a new endpoint becomes Ready and reachable.
func testControllerDown(t *testing.T, e *dpEnv, eps map[string]*apiv1.Endpoint) map[string]*apiv1.Endpoint {
	p := startPinger(t, eps["globex/etl-1"].Status.Netns, netip.MustParseAddr(eps["globex/wh-2"].Status.IP), 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	e.ctl.stop(t)
	time.Sleep(2 * time.Second)
	// Traffic between endpoints that never talked before also flows if
	// both are local to one host (no lookup needed).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := testnet.Hello(ctx, eps["acme/db-2"].Status.Netns, helloAddr(eps["acme/web-1"])); err != nil || got != "acme/web-1" {
		t.Errorf("TCP on h1 with the controller down: got %q, %v", got, err)
	}
	e.startController()
	p.stop()
	if sent, lost, window, _ := p.result(); lost > 0 || sent < 20 {
		t.Errorf("echoes with the controller down: %d sent, %d lost (window %s), want none lost", sent, lost, window)
	}
	ep := &apiv1.Endpoint{
		TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{Name: "web-9", Tenant: "acme", Labels: map[string]string{"role": "web"}},
		Spec:     apiv1.EndpointSpec{Subnet: "web", Host: "h3"},
	}
	if _, err := e.cl.Create(context.Background(), ep); err != nil {
		t.Fatalf("create acme/web-9 after the restart: %v", err)
	}
	eps = e.waitReady(11, 30*time.Second)
	web9 := eps["acme/web-9"]
	e.serve(web9)
	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer pcancel()
	if _, err := testnet.Ping(pctx, eps["acme/web-1"].Status.Netns, netip.MustParseAddr(web9.Status.IP)); err != nil {
		t.Errorf("ICMP acme/web-1 -> new acme/web-9: %v", err)
	}
	if got, err := testnet.Hello(pctx, eps["acme/web-1"].Status.Netns, helloAddr(web9)); err != nil || got != "acme/web-9" {
		t.Errorf("TCP acme/web-1 -> new acme/web-9: got %q, %v", got, err)
	}
	return eps
}

// testDeleteEverything deletes every object but the Hosts (deleting a
// Host revokes its agent's credentials, so an agent that is reconnecting
// then would never hear of the rest); the agents remove their data planes;
// then the Hosts are deleted, the agents stopped and torn down, and nothing
// of ours is left in any host namespace.
func testDeleteEverything(t *testing.T, e *dpEnv, eps map[string]*apiv1.Endpoint) map[string]*apiv1.Endpoint {
	e.stopServers()
	if _, err := e.cl.Delete(context.Background(), apiv1.KindEndpoint, "acme", "web-9"); err != nil {
		t.Fatalf("delete acme/web-9: %v", err)
	}
	data, err := os.ReadFile(e.file)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := apiv1.DecodeDocuments(data)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, o := range objs {
		if _, ok := o.(*apiv1.Host); !ok {
			doc, err := apiv1.Marshal(o, "yaml")
			if err != nil {
				t.Fatal(err)
			}
			docs = append(docs, doc)
		}
	}
	noHosts := filepath.Join(t.TempDir(), "no-hosts.yaml")
	if err := os.WriteFile(noHosts, bytes.Join(docs, []byte("---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := e.weft("delete", "-f", noHosts); code != 0 {
		t.Fatalf("delete -f: exit %d: %s", code, out)
	}
	agentNS := func() ([]string, string) {
		names, err := e.lab.Names()
		var ours []string
		for _, n := range names {
			if strings.Count(strings.TrimPrefix(n, e.lab.Prefix()+"-"), "-") > 0 {
				ours = append(ours, n)
			}
		}
		return ours, fmt.Sprint(ours, err)
	}
	eventually(t, 30*time.Second, "the agents removed every VPC and endpoint namespace", func() (bool, string) {
		ns, s := agentNS()
		return len(ns) == 0, s
	})
	if out, code := e.weft("delete", "-f", e.file, "--ignore-not-found"); code != 0 {
		t.Fatalf("delete -f: exit %d: %s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range e.lab.Hosts() {
		if err := e.agents[h.Name].Stop(10 * time.Second); err != nil {
			t.Error(err)
		}
		if err := e.lab.Teardown(ctx, h); err != nil {
			t.Errorf("teardown %s: %v", h.Name, err)
		}
	}
	if ns, s := agentNS(); len(ns) > 0 {
		t.Errorf("namespaces left: %s", s)
	}
	for _, h := range e.lab.Hosts() {
		if left := leftovers(t, h.Path); len(left) > 0 {
			t.Errorf("host %s: left behind: %v", h.Name, left)
		}
		if pins := ebpf.PinDir("/sys/fs/bpf", e.lab.Prefix(), h.Name); isDir(pins) {
			t.Errorf("host %s: pins left in %s", h.Name, pins)
		}
	}
	return nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// leftovers lists what of ours is in the namespace at path: links named
// wft*, routes and rules of linux.RouteProtocol, nftables tables named
// weft*/wft*.
func leftovers(t *testing.T, path string) []string {
	t.Helper()
	fd, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var out []string
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, linux.LinkPrefix) {
			out = append(out, "link "+l.Attrs().Name)
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: syscall.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Protocol == linux.RouteProtocol {
			out = append(out, "route "+r.String())
		}
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Protocol == uint8(linux.RouteProtocol) {
			out = append(out, "rule "+r.String())
		}
	}
	nft, err := nftables.New(nftables.WithNetNSFd(int(fd)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := nft.ListTables()
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "weft") || strings.HasPrefix(tb.Name, "wft") {
			out = append(out, "nftables table "+tb.Name)
		}
	}
	return out
}

// TestDemoNoWait runs the demo flow (what `weft demo --no-wait` runs) with
// this test's weft binary as agent, on ports of its own, on each data
// plane: every check of the table passes (so both data planes show the
// same table: its WANT column is the example's) and nothing is left
// behind.
func TestDemoNoWait(t *testing.T) { forEachDatapath(t, testDemoNoWait) }

func testDemoNoWait(t *testing.T, datapath string) {
	nettest.RequireRoot(t)
	prefix := "wftdtest" // fixed: a run sweeps what a killed one left
	var out lockedWriter
	out.w = &bytes.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := demo.Run(ctx, demo.Config{Binary: binary(t), Datapath: datapath, NoWait: true, Prefix: prefix, APIPort: 17443, AgentPort: 17444, Out: &out})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	for _, want := range []string{"acme/web-1", "globex/wh-1", "export WEFT_CONFIG=", "weft get endpoints --all-tenants", "cleaning up"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "FAIL") {
		t.Errorf("a demo check failed")
	}
	left, err := os.ReadDir(netnsfile.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range left {
		if strings.HasPrefix(d.Name(), prefix+"-") {
			t.Errorf("namespace %s left behind", d.Name())
		}
	}
	if _, err := netlink.LinkByName(prefix + "-ctl"); err == nil {
		t.Errorf("link %s-ctl left behind", prefix)
	}
	pins, _ := filepath.Glob(filepath.Join(filepath.Dir(ebpf.PinDir("/sys/fs/bpf", prefix, "h")), prefix+"-*"))
	if len(pins) > 0 {
		t.Errorf("BPF pins left behind: %v", pins)
	}
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
