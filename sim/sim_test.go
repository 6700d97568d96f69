package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/internal/lifecycle"
)

func TestMain(m *testing.M) {
	// TestChild re-executes this binary as a child process.
	if len(os.Args) > 1 && os.Args[1] == ChildCommand {
		if err := RunChild(context.Background(), os.Stdin, os.Stdout, os.Stderr, testRoles()); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// etcd's embedded server and client keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

func TestLayout(t *testing.T) {
	tests := []struct {
		name string
		l    Layout
	}{
		{"more hosts than endpoints", Layout{Hosts: 10, Endpoints: 7, VPCs: 3}},
		{"uneven", Layout{Hosts: 7, Endpoints: 100, VPCs: 5}},
		{"one vpc", Layout{Hosts: 3, Endpoints: 9, VPCs: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			perHost := make([]int, tt.l.Hosts)
			vpcs := map[int]bool{}
			for e := range tt.l.Endpoints {
				perHost[tt.l.EndpointHost(e)]++
				vpcs[tt.l.EndpointVPC(e)] = true
			}
			want := make([]int, tt.l.Hosts)
			for h := range want {
				want[h] = tt.l.HostEndpoints(h)
			}
			if d := cmp.Diff(want, perHost); d != "" {
				t.Errorf("endpoints per host (-HostEndpoints +counted):\n%s", d)
			}
			if n := min(tt.l.VPCs, tt.l.Endpoints); len(vpcs) != n {
				t.Errorf("endpoints use %d VPCs, want %d", len(vpcs), n)
			}
		})
	}
}

// TestLayoutIdentities checks that the endpoints' app labels give every
// VPC all its apps when it has enough endpoints: about one identity per
// policy (or one per VPC without policies).
func TestLayoutIdentities(t *testing.T) {
	tests := []struct {
		name string
		l    Layout
		want int
	}{
		{"no policies", Layout{Hosts: 3, Endpoints: 9, VPCs: 1}, 1},
		{"small", Layout{Hosts: 20, Endpoints: 100, VPCs: 4, Policies: 50}, 52},
		{"uneven", Layout{Hosts: 7, Endpoints: 100, VPCs: 5, Policies: 12}, 15},
		{"10k hosts", Layout{Hosts: 10_000, Endpoints: 100_000, VPCs: 1000, Policies: 10_000}, 10_000},
		{"fewer policies than VPCs", Layout{Hosts: 10_000, Endpoints: 100_000, VPCs: 1000, Policies: 10}, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.Identities(); got != tt.want {
				t.Errorf("Identities() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestReplicaFor(t *testing.T) {
	addrs := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	count := map[string]int{}
	for i := range 3000 {
		count[ReplicaFor(HostName(i), addrs)]++
	}
	for _, a := range addrs {
		if count[a] < 800 {
			t.Errorf("replica %s got %d of 3000 hosts, want about 1000", a, count[a])
		}
	}
}

func TestProc(t *testing.T) {
	u, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 {
		t.Errorf("RSS %d, want > 0", u.RSS)
	}
}

// TestRunSmall runs a whole small simulation in this process.
func TestRunSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Run(ctx, RunConfig{
		Config: Config{Hosts: 20, Endpoints: 100, VPCs: 4, BackoffMin: 100 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond},
		Hold:   time.Second, LookupRate: 50,
	})
	if err != nil {
		t.Fatalf("Run: %v (report %+v)", err, rep)
	}
	if rep.Programmed != 20 || rep.Connected != 20 {
		t.Errorf("programmed %d, connected %d of 20", rep.Programmed, rep.Connected)
	}
	if rep.HeartbeatsProcessed == 0 {
		t.Error("no heartbeat was processed")
	}
	if rep.LookupsFound+rep.LookupsNotFound == 0 || rep.AgentAnswersApplied == 0 {
		t.Error("no lookup was answered")
	}
	if len(rep.Controllers) != 1 || rep.Controllers[0].RSSBytes == 0 {
		t.Errorf("controllers %+v, want one with an RSS", rep.Controllers)
	}
}

func TestHeadroom(t *testing.T) {
	live := int64(0)
	for i := range 3 {
		live += replicaLive(i, 50_000, 500_000, 3)
	}
	agents := int64(50_000)*(agentBytes+kernelBytesPerHost) + 4*128<<20
	mid := agents + memoryReserve + live*6/5 // exactly 1.2× the live estimates
	for _, tc := range []struct {
		name      string
		available int64
		want      float64
	}{
		{"plenty", 64 << 30, maxHeadroom},
		{"unknown", 0, minHeadroom},
		{"less than the agents need", agents, minHeadroom},
		{"in between", mid, 1.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := headroom(50_000, 500_000, 3, 4, tc.available)
			if got < tc.want-0.001 || got > tc.want+0.001 {
				t.Errorf("headroom(available %d) = %.4f, want %.4f", tc.available, got, tc.want)
			}
		})
	}
	if memAvailable() <= 0 {
		t.Error("memAvailable() found no MemAvailable in /proc/meminfo")
	}
}

func TestWantBacklog(t *testing.T) {
	for _, tc := range []struct {
		hosts, current, want int
	}{
		{10_000, 1000, 0},      // small runs leave the host alone
		{100_000, 1000, 65536}, // the default overflowed at 100k agents
		{100_000, 65536, 0},    // already enough
		{50_000, 200000, 0},    // never lowered
	} {
		if got := wantBacklog(tc.hosts, tc.current); got != tc.want {
			t.Errorf("wantBacklog(%d, %d) = %d, want %d", tc.hosts, tc.current, got, tc.want)
		}
	}
}

// testRoles are the child roles of TestChild: "echo" answers every
// command line with its spec's prefix, "fail" fails at once.
func testRoles() ChildRoles {
	type line struct {
		T    string `json:"t"`
		Line string `json:"line,omitempty"`
	}
	return ChildRoles{
		"echo": func(ctx context.Context, c ChildIO) error {
			var prefix string
			if err := json.Unmarshal(c.Spec, &prefix); err != nil {
				return err
			}
			c.Emit(line{T: "ready"})
			for cmd := range c.Cmds {
				c.Emit(line{T: "echo", Line: prefix + cmd})
			}
			return nil
		},
		"fail": func(context.Context, ChildIO) error { return errors.New("no luck") },
	}
}

func TestChild(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, exe string }{{"in-process", ""}, {"process", exe}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := func(role string) *Child {
				ch, err := StartChild(ctx, ChildConfig{Name: role, Exe: tc.exe, Role: role, Spec: "got ", Roles: testRoles()})
				if err != nil {
					t.Fatalf("StartChild(%s): %v", role, err)
				}
				return ch
			}
			ch := start("echo")
			if _, err := ch.Await(ctx, "ready", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := ch.Send("hello"); err != nil {
				t.Fatal(err)
			}
			m, err := ch.Await(ctx, "echo", 20*time.Second)
			var got struct{ Line string }
			if err == nil {
				err = m.Decode(&got)
			}
			if err != nil || got.Line != "got hello" {
				t.Errorf("echo = %q, %v; want %q", got.Line, err, "got hello")
			}
			for i := range 2 { // Close is idempotent
				if err := ch.Close(); err != nil {
					t.Errorf("Close #%d: %v", i+1, err)
				}
			}

			ch = start("fail")
			if _, err := ch.Await(ctx, "ready", 20*time.Second); err == nil || !strings.Contains(err.Error(), "no luck") {
				t.Errorf("Await of a failing child = %v, want its error", err)
			}
			if err := ch.Close(); err == nil || !strings.Contains(err.Error(), "no luck") {
				t.Errorf("Close of a failing child = %v, want its error", err)
			}
		})
	}
}

func TestClusterLifecycle(t *testing.T) {
	c, err := New(Config{Hosts: 2, Endpoints: 2, VPCs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close without Start: %v", err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, lifecycle.ErrClosed) {
		t.Errorf("Start after Close = %v, want lifecycle.ErrClosed", err)
	}
	if _, err := New(Config{Hosts: 0, VPCs: 1}); err == nil {
		t.Error("New accepted 0 hosts")
	}
}

// TestPolicies loads policies with a small cluster: every endpoint has the
// identity of its app label in its VPC, the identities are as many as
// Layout says, and every host with an endpoint a policy selects gets that
// policy's rules in a view its driver applied.
func TestPolicies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(ctx, t, Config{Hosts: 20, Endpoints: 100, VPCs: 4, Policies: 50, WatchPolicy: "sp", BackoffMin: 100 * time.Millisecond})
	l := c.Layout()
	cl, err := client.New("http://"+c.APIAddr(), client.WithTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	policies, _, err := cl.List(ctx, apiv1.KindSecurityPolicy, "", "")
	if err != nil || len(policies) != l.Policies {
		t.Fatalf("list policies: %d, %v; want %d", len(policies), err, l.Policies)
	}
	eps, _, err := cl.List(ctx, apiv1.KindEndpoint, "", "")
	if err != nil || len(eps) != l.Endpoints {
		t.Fatalf("list endpoints: %d, %v; want %d", len(eps), err, l.Endpoints)
	}
	idOf := map[string]uint32{}     // subnet and labels → identity
	labelsOf := map[string]string{} // subnet and identity → labels
	for _, o := range eps {
		ep := o.(*apiv1.Endpoint)
		subnet, app := ep.Metadata.Tenant+"/"+ep.Spec.Subnet, ep.Metadata.Labels["app"]
		id := ep.Status.Identity
		if id == 0 || app == "" {
			t.Fatalf("endpoint %s: identity %d, labels %v: want both", ep.Metadata.Name, id, ep.Metadata.Labels)
		}
		if got, ok := idOf[subnet+" "+app]; ok && got != id {
			t.Errorf("%s app %s: identities %d and %d", subnet, app, got, id)
		}
		if got, ok := labelsOf[fmt.Sprint(subnet, " ", id)]; ok && got != app {
			t.Errorf("%s identity %d: apps %s and %s", subnet, id, got, app)
		}
		idOf[subnet+" "+app], labelsOf[fmt.Sprint(subnet, " ", id)] = id, app
	}
	if len(idOf) != l.Identities() || c.Identities != l.Identities() || l.Identities() < l.Policies {
		t.Errorf("%d identities listed, %d counted by the load, Layout.Identities %d: want equal and >= %d policies",
			len(idOf), c.Identities, l.Identities(), l.Policies)
	}

	waiting := map[string]bool{} // "host policy" that must reach the host
	for p := range l.Policies {
		tenant, _, _ := l.VPC(l.PolicyVPC(p))
		for e := range l.Endpoints {
			if l.EndpointVPC(e) == l.PolicyVPC(p) && l.EndpointApp(e) == l.PolicyApp(p) {
				waiting[fmt.Sprintf("%d %s/%s", l.EndpointHost(e), tenant, PolicyName(p))] = true
			}
		}
	}
	if _, err := c.StartAgents(ctx); err != nil {
		t.Fatalf("StartAgents: %v", err)
	}
	if _, err := c.WaitProgrammed(ctx, 40*time.Second); err != nil {
		t.Fatalf("WaitProgrammed: %v", err)
	}
	for len(waiting) > 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d host/policy pairs never applied, e.g. %v", len(waiting), slices.Collect(maps.Keys(waiting))[:1])
		case ev := <-c.Events():
			if ev.Kind == "policy" {
				delete(waiting, fmt.Sprintf("%d %s", ev.Host, ev.ID))
			}
		}
	}
}

func TestUnderlayHost(t *testing.T) {
	for _, h := range []int{0, 1, 255, 256, 65535, 65536, 99_999, 1<<22 - 1} {
		if got := underlayHost(HostUnderlay(h)); got != h {
			t.Errorf("underlayHost(HostUnderlay(%d) = %s) = %d", h, HostUnderlay(h), got)
		}
	}
	for _, s := range []string{"10.0.0.1", "100.63.0.1", "100.128.0.1", "::1"} {
		if got := underlayHost(netip.MustParseAddr(s)); got != -1 {
			t.Errorf("underlayHost(%s) = %d, want -1", s, got)
		}
	}
	if got := underlayHost(netip.Addr{}); got != -1 {
		t.Errorf("underlayHost of the zero address = %d, want -1", got)
	}
}

// TestHeartbeatLoss: the loss is the drops per heartbeat sent, never
// below 0 (processed against sent printed -0.27 to -0.46 for lossless
// 100,000-host runs whose replicas were still working off the storm's
// queue when the hold began).
func TestHeartbeatLoss(t *testing.T) {
	for _, tc := range []struct {
		name          string
		sent, dropped uint64
		want          float64
	}{
		{"none lost", 1000, 0, 0},
		{"a tenth lost", 1000, 100, 0.1},
		{"no heartbeats", 0, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := heartbeatLoss(tc.sent, tc.dropped); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("loss = %.5f, want %.5f", got, tc.want)
			}
		})
	}
}

func TestReadUDPSockets(t *testing.T) {
	const table = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:1D14 00000000:0000 07 00000000:00000300 00:00000000 00000000     0        0 1234 2 0000000000000000 7
  102: 0100007F:1D14 00000000:0000 07 00000000:00000100 00:00000000 00000000     0        0 1235 2 0000000000000000 5
  103: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1236 2 0000000000000000 99
`
	got, err := readUDPSockets(strings.NewReader(table), map[uint16]bool{0x1d14: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := (udpSockets{Drops: 12, Queued: 0x400}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := readUDPSockets(strings.NewReader("header\n  1: 0100007F:1D14 short\n"), map[uint16]bool{0x1d14: true}); err == nil {
		t.Error("a short line: no error")
	}
}

// TestReadUDPSocketsKernel: a socket whose receive buffer overflows shows
// its queue and its drops in the kernel's table as readUDPSockets reads it.
func TestReadUDPSocketsKernel(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	sc, err := net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	for range 200 {
		if _, err := sc.Write(make([]byte, 512)); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		t.Skipf("no /proc/net/udp: %v", err)
	}
	defer f.Close()
	got, err := readUDPSockets(f, map[uint16]bool{uint16(rc.LocalAddr().(*net.UDPAddr).Port): true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Drops == 0 || got.Queued == 0 {
		t.Errorf("200 datagrams into a 4 KB buffer: %+v, want drops and a queue", got)
	}
}

// startCluster starts a simulation's controller with cfg (agents not yet
// started) and closes it when the test ends.
func startCluster(ctx context.Context, t *testing.T, cfg Config) *Cluster {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return c
}
