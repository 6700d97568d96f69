package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait for an asynchronous effect; tests poll for
// conditions and fail only when this generous bound passes.
const waitTimeout = 10 * time.Second

// testKey returns a deterministic raw host key.
func testKey(seed string) []byte {
	k := sha256.Sum256([]byte("weft agent test key " + seed))
	return k[:]
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ---- a fake controller: config stream ----

// fakeStream is a config-stream server on loopback: it verifies each Hello
// with the host key and answers with the Welcome of its welcome func.
type fakeStream struct {
	t        *testing.T
	ln       net.Listener
	key      []byte
	welcome  func(h *wire.Hello) *wire.Welcome
	sessions chan *fakeSession
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

type fakeSession struct {
	t     *testing.T
	conn  *wire.Conn
	hello *wire.Hello
}

func newFakeStream(t *testing.T, key []byte, hostID uint32) *fakeStream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeStream{t: t, ln: ln, key: key, sessions: make(chan *fakeSession, 16),
		welcome: func(*wire.Hello) *wire.Welcome { return &wire.Welcome{HostID: hostID, Epoch: 1} }}
	f.wg.Go(f.serve)
	t.Cleanup(f.close)
	return f
}

// setWelcome replaces the function that makes Welcomes.
func (f *fakeStream) setWelcome(fn func(h *wire.Hello) *wire.Welcome) {
	f.mu.Lock()
	f.welcome = fn
	f.mu.Unlock()
}

func (f *fakeStream) addr() string { return f.ln.Addr().String() }

func (f *fakeStream) serve() {
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, nc)
		f.mu.Unlock()
		f.wg.Go(func() { f.handshake(nc) })
	}
}

func (f *fakeStream) handshake(nc net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c := wire.NewConn(nc, 0)
	m, err := c.ReadMessage(ctx)
	if err != nil {
		c.Close()
		return
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		f.t.Errorf("fake controller: first message %T, want *wire.Hello", m)
		c.Close()
		return
	}
	if err := wire.VerifyHello(h, f.key, time.Now(), time.Minute); err != nil {
		f.t.Errorf("fake controller: hello from %q does not verify: %v", h.Host, err)
		c.Close()
		return
	}
	f.mu.Lock()
	welcome := f.welcome
	f.mu.Unlock()
	w := welcome(h)
	if err := c.WriteMessage(ctx, w); err != nil {
		c.Close()
		return
	}
	if w.Error != "" {
		c.Close()
		return
	}
	f.sessions <- &fakeSession{t: f.t, conn: c, hello: h}
}

func (f *fakeStream) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// accept waits for the next welcomed session.
func (f *fakeStream) accept(t *testing.T) *fakeSession {
	t.Helper()
	select {
	case s := <-f.sessions:
		return s
	case <-time.After(waitTimeout):
		t.Fatalf("no agent connected to the fake controller at %s within %v", f.addr(), waitTimeout)
		return nil
	}
}

func (s *fakeSession) send(t *testing.T, m wire.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := s.conn.WriteMessage(ctx, m); err != nil {
		t.Fatalf("fake controller: send %v: %v", m.FrameType(), err)
	}
}

func (s *fakeSession) recv(t *testing.T) wire.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	m, err := s.conn.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("fake controller: read the agent's answer: %v", err)
	}
	return m
}

// answer reads the agent's answer as text: "ack V", "ack V: programming
// error" or "nack V: error".
func (s *fakeSession) answer(t *testing.T) string {
	t.Helper()
	switch m := s.recv(t).(type) {
	case *wire.Ack:
		if m.Error != "" {
			return fmt.Sprintf("ack %d: %s", m.Version, m.Error)
		}
		return fmt.Sprintf("ack %d", m.Version)
	case *wire.Nack:
		return fmt.Sprintf("nack %d: %s", m.Version, m.Error)
	default:
		t.Fatalf("agent answered with %T", m)
		return ""
	}
}

// ---- a fake controller: UDP ----

type datagram struct {
	hdr  wire.Header
	body wire.Body
	from netip.AddrPort
}

// fakeUDP is the controller's UDP side on loopback: it authenticates
// everything it receives with the host key and hands heartbeats and lookup
// requests to the test.
type fakeUDP struct {
	conn       *net.UDPConn
	key        wire.Key
	seq        *wire.Sequence
	verifier   *wire.Verifier
	heartbeats chan datagram
	lookups    chan datagram
	reports    chan datagram // flow reports
	wg         sync.WaitGroup
}

func newFakeUDP(t *testing.T, raw []byte, hostID uint32) *fakeUDP {
	t.Helper()
	return newFakeUDPOn(t, raw, hostID, 0)
}

// newFakeUDPOn is newFakeUDP on a given port of 127.0.0.1 (0: any).
func newFakeUDPOn(t *testing.T, raw []byte, hostID uint32, port int) *fakeUDP {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	key, err := wire.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return newFakeUDPKeys(t, conn, key, map[uint32][]byte{hostID: raw})
}

// newFakeUDPKeys is a fake controller on conn that knows the hosts of keys;
// key is the one sealTo callers usually use.
func newFakeUDPKeys(t *testing.T, conn *net.UDPConn, key wire.Key, keys map[uint32][]byte) *fakeUDP {
	t.Helper()
	v, err := wire.NewVerifier(wire.VerifierConfig{Accept: wire.ToController, Keyring: wire.KeyringFunc(func(id uint32) ([]byte, bool) {
		raw, ok := keys[id]
		return raw, ok
	})})
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeUDP{conn: conn, key: key, seq: wire.NewSequence(time.Now()), verifier: v,
		heartbeats: make(chan datagram, 4096), lookups: make(chan datagram, 4096), reports: make(chan datagram, 4096)}
	u.wg.Go(func() { u.serve(t) })
	t.Cleanup(func() {
		conn.Close()
		u.wg.Wait()
	})
	return u
}

func (u *fakeUDP) addr() string { return u.conn.LocalAddr().String() }

func (u *fakeUDP) serve(t *testing.T) {
	buf := make([]byte, wire.MaxDatagramSize+1)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		hdr, body, err := u.verifier.Open(buf[:n])
		if err != nil {
			t.Errorf("fake controller: datagram from %s rejected: %v", from, err)
			continue
		}
		switch hdr.Type {
		case wire.TypeHeartbeat:
			var hb wire.Heartbeat
			if err := hb.UnmarshalBinary(body); err != nil {
				t.Errorf("fake controller: heartbeat: %v", err)
				continue
			}
			select {
			case u.heartbeats <- datagram{hdr, &hb, from}:
			default:
			}
		case wire.TypeLookupRequest:
			var req wire.LookupRequest
			if err := req.UnmarshalBinary(body); err != nil {
				t.Errorf("fake controller: lookup request: %v", err)
				continue
			}
			select {
			case u.lookups <- datagram{hdr, &req, from}:
			default:
			}
		case wire.TypeFlowReport:
			var r wire.FlowReport
			if err := r.UnmarshalBinary(body); err != nil {
				t.Errorf("fake controller: flow report: %v", err)
				continue
			}
			select {
			case u.reports <- datagram{hdr, &r, from}:
			default:
			}
		default:
			t.Errorf("fake controller: unexpected %v datagram", hdr.Type)
		}
	}
}

func next(t *testing.T, ch chan datagram, what string) datagram {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(waitTimeout):
		t.Fatalf("no %s within %v", what, waitTimeout)
		return datagram{}
	}
}

// none checks that ch holds nothing right now.
func none(t *testing.T, ch chan datagram, what string) {
	t.Helper()
	select {
	case d := <-ch:
		t.Fatalf("unexpected %s: %+v", what, d.body)
	default:
	}
}

// sealTo seals body for host hostID with key and sends it to the agent.
func (u *fakeUDP) sealTo(t *testing.T, to netip.AddrPort, hostID uint32, body wire.Body, key *wire.Key) []byte {
	t.Helper()
	pkt, err := wire.Seal(nil, wire.Header{HostID: hostID, Seq: u.seq.Next()}, body, key)
	if err != nil {
		t.Fatal(err)
	}
	u.sendRaw(t, to, pkt)
	return pkt
}

func (u *fakeUDP) sendRaw(t *testing.T, to netip.AddrPort, pkt []byte) {
	t.Helper()
	if _, err := u.conn.WriteToUDPAddrPort(pkt, to); err != nil {
		t.Fatal(err)
	}
}

// ---- view resources ----

const (
	testHost   = "h1"
	testHostID = 7
	underlay1  = "192.0.2.11"
)

func mustRes(t testing.TB, v any) wire.Resource {
	t.Helper()
	r, err := view.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hostRes(t testing.TB) wire.Resource {
	return mustRes(t, &view.Host{Name: testHost, HostID: testHostID, UnderlayIP: underlay1})
}

func vpcRes(t testing.TB, tenant string, vni uint32) wire.Resource {
	return mustRes(t, &view.VPC{Tenant: tenant, Name: "main", VNI: vni, CIDRs: []string{"10.0.0.0/16"},
		Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1"}}})
}

// epRes is an endpoint in subnet a of tenant's VPC; last is the last byte
// of its address.
func epRes(t testing.TB, tenant, name string, vni uint32, last byte) wire.Resource {
	return mustRes(t, &view.Endpoint{Tenant: tenant, Name: name, VPC: "main", VNI: vni, Subnet: "a",
		CIDR: "10.0.1.0/24", Gateway: "10.0.1.1", IP: fmt.Sprintf("10.0.1.%d", last),
		MAC: fmt.Sprintf("02:00:0a:00:01:%02x", last)})
}

func key(typ, id string) wire.ResourceKey { return wire.ResourceKey{Type: typ, ID: id} }

// baseSnapshot is a snapshot at version v with the host, acme's VPC (VNI
// 100) and endpoint acme/web at 10.0.1.10.
func baseSnapshot(t testing.TB, v uint64) *wire.Delta {
	return &wire.Delta{ToVersion: v, Snapshot: true, Upserts: []wire.Resource{
		hostRes(t), vpcRes(t, "acme", 100), epRes(t, "acme", "web", 100, 10),
	}}
}

// ---- the agent under test ----

type harness struct {
	stream *fakeStream
	udp    *fakeUDP
	drv    *sim.Driver
	agent  *Agent
	dir    string
	raw    []byte
}

// newHarness starts an agent (sim driver, fresh state directory) against
// a fake controller; opts adjust the config before New.
func newHarness(t *testing.T, opts ...func(*Config)) *harness {
	t.Helper()
	raw := testKey(t.Name())
	h := &harness{
		stream: newFakeStream(t, raw, testHostID),
		udp:    newFakeUDP(t, raw, testHostID),
		drv:    sim.New(sim.Config{MissBuffer: 256}),
		dir:    t.TempDir(),
		raw:    raw,
	}
	t.Cleanup(func() { h.drv.Close() })
	cfg := Config{
		Host: testHost, StreamAddrs: []string{h.stream.addr()}, UDPAddr: h.udp.addr(), Key: raw,
		Driver: h.drv, StateDir: h.dir, Logger: testLogger(t), UnderlayDev: "eth0",
		HeartbeatInterval: time.Hour, ReconcileInterval: time.Hour, LookupTimeout: time.Hour,
		Backoff: backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond},
	}
	for _, o := range opts {
		o(&cfg)
	}
	h.agent = startAgent(t, cfg)
	return h
}

func startAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

// agentUDP returns the agent's UDP address as the controller sees it.
func (h *harness) agentUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(h.agent.LocalUDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port())
}

// connect accepts the agent's session and applies snapshot v1 of baseSnapshot.
func (h *harness) connect(t *testing.T) *fakeSession {
	t.Helper()
	s := h.stream.accept(t)
	s.send(t, baseSnapshot(t, 1))
	if got := s.answer(t); got != "ack 1" {
		t.Fatalf("snapshot answered %q, want ack 1", got)
	}
	return s
}

// lines splits the sim driver's state for cmp.Diff.
func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

var errInjected = errors.New("injected failure")

func newSim(t *testing.T) *sim.Driver {
	d := sim.New(sim.Config{MissBuffer: 256})
	t.Cleanup(func() { d.Close() })
	return d
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

type datapathKey = datapath.RemoteKey
