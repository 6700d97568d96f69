package controller_test

import (
	"context"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/wire"
)

// TestFailoverKeepsLookups: replica A starts before replica B, so its
// datagrams carry lower sequence numbers than B's. An agent streams from
// B, learns a location through B, and fails over to A when B stops: its
// lookups through A are answered and A's invalidations reach it (each
// session has its own datagram key and replay window; one window per host
// refused everything A sent as older than B's numbers).
func TestFailoverKeepsLookups(t *testing.T) {
	a, b := replicaPair(t, t.TempDir()) // B's sequence numbers start later
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
		etcdtest.Tenant("acme"), etcdtest.Host(host, "192.0.2.10"), etcdtest.Host("far", "192.0.2.20"), etcdtest.Host("farther", "192.0.2.30"),
		etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("acme", "web", "a", host), etcdtest.Endpoint("acme", "db", "a", "far"), etcdtest.Endpoint("acme", "db2", "a", "far"),
	} {
		if _, err := api.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ipOf := func(name string) netip.Addr {
		o, err := api.Get(ctx, apiv1.KindEndpoint, "acme", name)
		if err != nil {
			t.Fatal(err)
		}
		return netip.MustParseAddr(o.(*apiv1.Endpoint).Status.IP)
	}
	drv := simdp.New(simdp.Config{})
	defer drv.Close()
	ag := startAgent(ctx, t, agent.Config{
		Host: host, StreamAddrs: replicas, UDPAddr: b.AgentAddr(), UDPFollowsStream: true,
		Key: enrol(t, api, host, "192.0.2.10").key, Driver: drv,
	})
	defer ag.Close()
	waitFor(t, "view from replica B", func() bool { return ag.AppliedVersion() != 0 })
	// resolves waits until the packet web sends to ip goes to host.
	resolves := func(what string, ip netip.Addr, host string) {
		t.Helper()
		waitFor(t, what, func() bool {
			d, err := drv.Resolve("acme/web", ip)
			if err != nil {
				t.Fatal(err)
			}
			return d.Verdict == simdp.VerdictRemote && d.Host == netip.MustParseAddr(host)
		})
	}
	resolves("db located through replica B", ipOf("db"), "192.0.2.20")

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// A second session (or later: a loaded machine may cut one) is with A,
	// the only replica left.
	waitFor(t, "session on replica A", func() bool { return ag.Connected() && ag.Stats().StreamConnects >= 2 })
	resolves("db2 located through replica A", ipOf("db2"), "192.0.2.20")

	ep, err := api.Get(ctx, apiv1.KindEndpoint, "acme", "db2")
	if err != nil {
		t.Fatal(err)
	}
	ep.(*apiv1.Endpoint).Spec.Host = "farther"
	if _, err := api.Update(ctx, ep); err != nil {
		t.Fatal(err)
	}
	resolves("db2's move invalidated by replica A", ipOf("db2"), "192.0.2.30")
	if st := ag.Stats(); st.DatagramsRejected != 0 || st.Invalidations == 0 {
		t.Errorf("agent: %d datagrams rejected, %d invalidations: want none rejected and A's invalidation", st.DatagramsRejected, st.Invalidations)
	}
}

// wireAgent is a host's end of the southbound written out: a config
// stream session and datagrams under its key.
type wireAgent struct {
	t    *testing.T
	conn *wire.Conn
	id   uint32
	key  wire.Key
	seq  *wire.Sequence
	udp  *net.UDPConn
}

// dialWireAgent opens a session of host with its key at addr.
func dialWireAgent(t *testing.T, addr, host string, hostKey []byte) *wireAgent {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wc := wire.NewConn(nc, 0)
	t.Cleanup(func() { wc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nonce, _ := wire.NewNonce()
	w, dk, err := wc.Handshake(ctx, &wire.Hello{Host: host, Nonce: nonce, Time: time.Now().Unix()}, hostKey)
	if err != nil || w.Error != "" {
		t.Fatalf("handshake of %s with %s: %v %q", host, addr, err, w.Error)
	}
	key, err := wire.NewKey(dk)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	return &wireAgent{t: t, conn: wc, id: w.HostID, key: key, seq: wire.NewSequence(time.Now()), udp: udp}
}

// seal returns a datagram of the session.
func (w *wireAgent) seal(body wire.Body) []byte {
	w.t.Helper()
	pkt, err := wire.Seal(nil, wire.Header{HostID: w.id, Seq: w.seq.Next()}, body, &w.key)
	if err != nil {
		w.t.Fatal(err)
	}
	return pkt
}

func (w *wireAgent) send(addr string, pkts ...[]byte) {
	w.t.Helper()
	to := netip.MustParseAddrPort(addr)
	for _, p := range pkts {
		if _, err := w.udp.WriteToUDPAddrPort(p, to); err != nil {
			w.t.Fatal(err)
		}
	}
}

// TestReplayAfterRestart: heartbeats and lookups captured on the wire are
// refused when replayed: to the replica that took them (a replay), and
// after that replica restarted (it forgot the session: its datagram key
// is gone; a new session has another key).
func TestReplayAfterRestart(t *testing.T) {
	dir := t.TempDir()
	c := startReplica(t, controller.Config{DataDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := client.New("http://" + c.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []apiv1.Object{etcdtest.Tenant("acme"), etcdtest.VPC("acme", "main", "10.0.0.0/16"),
		etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24")} {
		if _, err := api.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	key := enrol(t, api, "h1", "192.0.2.1").key
	ep, err := api.Create(ctx, etcdtest.Endpoint("acme", "web", "a", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	api.Close()
	web := ep.(*apiv1.Endpoint)

	w := dialWireAgent(t, c.AgentAddr(), "h1", key)
	captured := [][]byte{
		w.seal(&wire.Heartbeat{ViewVersion: 1, Health: wire.HealthReady}),
		w.seal(&wire.LookupRequest{Queries: []wire.LookupQuery{{VNI: web.Status.VNI, IP: netip.MustParseAddr(web.Status.IP)}}}),
	}
	const (
		heartbeats = `weft_udp_accepted_total{type="Heartbeat"}`
		lookups    = `weft_udp_accepted_total{type="LookupRequest"}`
	)
	w.send(c.AgentAddr(), captured...)
	waitFor(t, "the heartbeat and the lookup taken", func() bool {
		return counter(t, c, heartbeats) == 1 && counter(t, c, lookups) == 1
	})
	w.send(c.AgentAddr(), captured...)
	waitFor(t, "the replays refused", func() bool { return counter(t, c, `weft_udp_rejected_total{reason="replay"}`) == 2 })

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = startReplica(t, controller.Config{DataDir: dir})
	w.send(c.AgentAddr(), captured...)
	waitFor(t, "the replays refused after the restart", func() bool {
		return counter(t, c, `weft_udp_rejected_total{reason="unknown_host"}`) == 2
	})
	w2 := dialWireAgent(t, c.AgentAddr(), "h1", key) // the host's new session
	w2.send(c.AgentAddr(), captured...)
	waitFor(t, "the replays refused under the new session's key", func() bool {
		return counter(t, c, `weft_udp_rejected_total{reason="auth"}`) == 2
	})
	w2.send(c.AgentAddr(), w2.seal(&wire.Heartbeat{ViewVersion: 1}))
	waitFor(t, "the new session's heartbeat taken", func() bool { return counter(t, c, heartbeats) == 1 })
	if n := counter(t, c, lookups); n != 0 {
		t.Errorf("%v replayed lookups answered after the restart", n)
	}
}

// TestRestartLookupsRedial: a restarted controller knows none of the old
// sessions' datagram keys, so an agent whose stream is down cannot learn a
// location until it has a new session. Its reconnect backoff has grown
// while the controller was down (the jitter is pinned to its cap, so the
// next round is 8 to 16 s away); its unanswered lookups make it reconnect at
// once instead, and it learns an endpoint created after the restart
// within 3 s (about 0.1 s here; without the redial, 16 s).
func TestRestartLookupsRedial(t *testing.T) {
	dir := t.TempDir()
	c := startReplica(t, controller.Config{DataDir: dir})
	addr := c.AgentAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	api, err := client.New("http://" + c.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []apiv1.Object{
		etcdtest.Tenant("acme"), etcdtest.Host("h1", "192.0.2.10"), etcdtest.Host("far", "192.0.2.20"),
		etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("acme", "web", "a", "h1"),
	} {
		if _, err := api.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	key := enrol(t, api, "h1", "192.0.2.10").key
	api.Close()
	drv := simdp.New(simdp.Config{})
	defer drv.Close()
	ag := startAgent(ctx, t, agent.Config{
		Host: "h1", StreamAddrs: []string{addr}, UDPAddr: addr, Key: key, Driver: drv,
		UnderlayIP:  netip.MustParseAddr("192.0.2.10"),
		Backoff:     backoff.Policy{Min: 250 * time.Millisecond, Max: time.Hour},
		BackoffRand: rand.New(capSource{}),
	})
	defer ag.Close()
	waitFor(t, "the agent's view", func() bool { return ag.AppliedVersion() != 0 })

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Five rounds fail: the next one waits 250 ms × 2⁵ or 2⁶.
	for deadline := time.Now().Add(60 * time.Second); ag.Stats().StreamFailed < 5; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("five failed reconnect rounds: not within 60s")
		}
	}
	failedAt := time.Now()
	c = startReplica(t, controller.Config{DataDir: dir, AgentListen: addr})
	restarted := time.Now()
	t.Logf("restart took %v after the fifth failed round", restarted.Sub(failedAt))
	api, err = client.New("http://" + c.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	o, err := api.Create(ctx, etcdtest.Endpoint("acme", "db", "a", "far"))
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(o.(*apiv1.Endpoint).Status.IP)
	waitFor(t, "db located after the restart", func() bool {
		d, err := drv.Resolve("acme/web", ip)
		if err != nil {
			t.Fatal(err)
		}
		return d.Verdict == simdp.VerdictRemote && d.Host == netip.MustParseAddr("192.0.2.20")
	})
	// Well inside the backoff's cap; the wait above allows more only to
	// report a failure as such.
	took := time.Since(restarted)
	t.Logf("db located %v after the restart (%d stream connects)", took, ag.Stats().StreamConnects)
	if took > 3*time.Second {
		t.Errorf("db located %v after the restart: the agent waited out its backoff", took)
	}
}

// capSource makes every draw of the backoff's jitter its maximum.
type capSource struct{}

func (capSource) Uint64() uint64 { return math.MaxUint64 }
