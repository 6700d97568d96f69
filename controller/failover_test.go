package controller_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/controller/secrets"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/sim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// startReplica starts a replica with a plain-HTTP API without credentials
// (the API's security is the subject of security_test.go).
func startReplica(t *testing.T, cfg controller.Config) *controller.Controller {
	t.Helper()
	cfg.APIListen, cfg.InsecureHTTP = cmp.Or(cfg.APIListen, "127.0.0.1:0"), true
	cfg.AgentListen = cmp.Or(cfg.AgentListen, "127.0.0.1:0")
	c, err := controller.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// counter reads a counter of a replica's /metrics (0 if absent).
func counter(t *testing.T, c *controller.Controller, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// enrolled is what enrol returns.
type enrolled struct {
	hostkey.Enrolment
	key []byte
}

// enrol enrols a host through the API as a cluster admin.
func enrol(t *testing.T, api *client.Client, host, ip string) enrolled {
	t.Helper()
	body, _ := json.Marshal(hostkey.EnrollRequest{Host: host, UnderlayIP: ip})
	resp, err := api.Raw(context.Background(), http.MethodPost, "/apis/weft/v1/enroll", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e enrolled
	if err := json.NewDecoder(resp.Body).Decode(&e.Enrolment); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("enrol %s: %s %v", host, resp.Status, err)
	}
	if e.key, err = secrets.ParseKey(e.HostKey); err != nil {
		t.Fatal(err)
	}
	return e
}

// startAgent starts an agent with cfg, the test's defaults filled in: a
// sim driver, underlay 192.0.2.10 and a 1-20 ms reconnect backoff. The
// caller closes it (defer ag.Close(), in the order its test needs).
func startAgent(ctx context.Context, t *testing.T, cfg agent.Config) *agent.Agent {
	t.Helper()
	if cfg.Driver == nil {
		cfg.Driver = simdp.New(simdp.Config{})
	}
	if !cfg.UnderlayIP.IsValid() {
		cfg.UnderlayIP = netip.MustParseAddr("192.0.2.10")
	}
	if cfg.Backoff == (backoff.Policy{}) {
		cfg.Backoff = backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond}
	}
	ag, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return ag
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
	}
}

// TestFailoverResumesFromVersion: two replicas share one etcd; an agent
// streams from the one its host name ranks first. That replica stops: the
// agent moves to the other, which numbers views the same way (etcd
// revisions) and, finding the agent's view hash current, sends an empty
// delta — no snapshot — and then ordinary deltas.
func TestFailoverResumesFromVersion(t *testing.T) {
	a, b := replicaPair(t, t.TempDir())
	replicas := []string{a.AgentAddr(), b.AgentAddr()}
	host := rankingFirst(t, replicas, b.AgentAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := client.New("http://" + a.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	for _, o := range []apiv1.Object{
		etcdtest.Tenant("acme"), etcdtest.Host(host, "192.0.2.10"), etcdtest.VPC("acme", "main", "10.0.0.0/16"),
		etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("acme", "web-1", "a", host), etcdtest.Endpoint("acme", "web-2", "a", host),
	} {
		if _, err := api.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	drv := simdp.New(simdp.Config{})
	key := enrol(t, api, host, "192.0.2.10").key
	// The agent must get its first view from B, its first choice: a B
	// that is not ready yet would send it on to A.
	waitFor(t, "replica B ready", func() bool { code, _ := readyz(b); return code == http.StatusOK })
	ag := startAgent(ctx, t, agent.Config{
		Host: host, StreamAddrs: replicas, UDPAddr: b.AgentAddr(), UDPFollowsStream: true,
		Key: key, Driver: drv,
	})
	defer ag.Close()
	waitFor(t, "view from replica B", func() bool { return ag.AppliedVersion() != 0 })
	held := ag.AppliedVersion()
	const snapshots = `weft_stream_deltas_total{type="snapshot"}`
	if n, na := counter(t, b, snapshots), counter(t, a, snapshots); n != 1 {
		t.Fatalf("replica B sent %v snapshots (A %v), want 1 (the first view); the agent's last stream error: %q",
			n, na, ag.LastStreamError())
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "session on replica A", func() bool { return ag.Connected() && ag.Stats().StreamConnects == 2 })
	if n := counter(t, a, snapshots); n != 0 {
		t.Errorf("replica A sent %v snapshots to an agent holding a current view, want 0", n)
	}
	if got := ag.AppliedVersion(); got < held {
		t.Errorf("version went back from %d to %d", held, got)
	}

	ep, err := api.Get(ctx, apiv1.KindEndpoint, "acme", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	ep.GetObjectMeta().Labels = map[string]string{"moved": "no"}
	before := ag.AppliedVersion()
	if _, err := api.Update(ctx, ep); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change applied through replica A", func() bool { return ag.AppliedVersion() > before })
	if n := counter(t, a, snapshots); n != 0 {
		t.Errorf("replica A answered a change with %v snapshots, want deltas only", n)
	}
	if s := ag.Stats(); s.Nacks != 0 || s.HashMismatches != 0 {
		t.Errorf("agent nacked %d deltas (%d hash mismatches), want none", s.Nacks, s.HashMismatches)
	}
}

// TestAgentPortTaken: a second controller on the agent port of a running
// one fails to start instead of sharing the port (SO_REUSEPORT).
func TestAgentPortTaken(t *testing.T) {
	a := startReplica(t, controller.Config{DataDir: t.TempDir()})
	c, err := controller.New(controller.Config{DataDir: t.TempDir(), APIListen: "127.0.0.1:0", AgentListen: a.AgentAddr(), InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("second controller on %s: %v, want address already in use", a.AgentAddr(), err)
	}
}

// TestLivenessOfAnotherReplicasHost: replica A starts alone on a state
// with hosts, so it expects their heartbeats; replica B joins and a host's
// agent streams (and heartbeats) to B. A must write nothing about that
// host: B speaks for it.
func TestLivenessOfAnotherReplicasHost(t *testing.T) {
	dir := t.TempDir()
	first := startReplica(t, controller.Config{DataDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := client.New("http://" + first.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for i := range 40 {
		hosts = append(hosts, fmt.Sprintf("h%d", i))
		if _, err := api.Create(ctx, etcdtest.Host(hosts[i], "192.0.2.10")); err != nil {
			t.Fatal(err)
		}
	}
	api.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	a, b := replicaPair(t, dir) // A alone at first: expects every host
	if api, err = client.New("http://" + b.APIAddr()); err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	replicas := []string{a.AgentAddr(), b.AgentAddr()}
	host := rankingFirst(t, replicas, b.AgentAddr(), hosts...)
	ag := startAgent(ctx, t, agent.Config{
		Host: host, StreamAddrs: replicas, UDPAddr: b.AgentAddr(), UDPFollowsStream: true,
		Key: enrol(t, api, host, "192.0.2.10").key, HeartbeatInterval: 200 * time.Millisecond,
	})
	defer ag.Close()
	status := func() (apiv1.HostStatus, string) {
		o, err := api.Get(ctx, apiv1.KindHost, "", host)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*apiv1.Host).Status, o.GetObjectMeta().ResourceVersion
	}
	waitFor(t, "the host Alive on replica B", func() bool {
		st, _ := status()
		return st.Liveness == apiv1.LivenessAlive && st.Replica == b.AgentAddr() && st.ViewVersion != 0
	})
	_, rv := status()
	// A silent host is Suspect after 1.5 s and Dead after 2.5 s: wait for
	// twice that. Nobody may write the host meanwhile.
	time.Sleep(5 * time.Second)
	if st, now := status(); now != rv || st.Liveness != apiv1.LivenessAlive {
		t.Errorf("host %s written while its agent ran on B: resourceVersion %s -> %s, liveness %q", host, rv, now, st.Liveness)
	}
}

// replicaPair starts replica A with its embedded etcd in dir, then (10 ms
// later, so that B's datagram sequence numbers start after A's) replica B
// on A's etcd and cluster key.
func replicaPair(t *testing.T, dir string) (a, b *controller.Controller) {
	t.Helper()
	a = startReplica(t, controller.Config{DataDir: dir})
	cli, err := a.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	b = startReplica(t, controller.Config{EtcdEndpoints: cli.Endpoints(), ClusterKeyFile: a.ClusterKeyFile()})
	return a, b
}

// rankingFirst returns the first of names (default h0…h999) whose
// rendezvous order over replicas puts want first.
func rankingFirst(t *testing.T, replicas []string, want string, names ...string) string {
	t.Helper()
	if len(names) == 0 {
		for i := range 1000 {
			names = append(names, fmt.Sprintf("h%d", i))
		}
	}
	for _, h := range names {
		if sim.ReplicaFor(h, replicas) == want {
			return h
		}
	}
	t.Fatalf("no host ranks %s first", want)
	return ""
}
