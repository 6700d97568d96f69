package udp

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's embedded server and client keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// rawKey is a deterministic test key for a host.
func rawKey(hostID uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], hostID)
	k := sha256.Sum256(append([]byte("weft udp test "), b[:]...))
	return k[:]
}

// keyring knows a set of hosts; safe for concurrent use.
type keyring struct {
	mu   sync.RWMutex
	keys map[uint32][]byte
}

func newKeyring(ids ...uint32) *keyring {
	k := &keyring{keys: map[uint32][]byte{}}
	for _, id := range ids {
		k.keys[id] = rawKey(id)
	}
	return k
}

func (k *keyring) Key(id uint32) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	b, ok := k.keys[id]
	return b, ok
}

// agent is a test host speaking the UDP protocol from its own socket.
type agent struct {
	t    *testing.T
	id   uint32
	conn *net.UDPConn
	key  wire.Key
	seq  *wire.Sequence
	ver  *wire.Verifier
	srv  netip.AddrPort
}

func newAgent(t *testing.T, id uint32, srv net.Addr) *agent {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key, err := wire.NewKey(rawKey(id))
	if err != nil {
		t.Fatal(err)
	}
	ver, err := wire.NewVerifier(wire.VerifierConfig{Keyring: newKeyring(id), Accept: wire.ToAgent})
	if err != nil {
		t.Fatal(err)
	}
	return &agent{t: t, id: id, conn: conn, key: key, seq: wire.NewSequence(time.Now()), ver: ver,
		srv: srv.(*net.UDPAddr).AddrPort()}
}

// seal returns a datagram from this agent.
func (a *agent) seal(body wire.Body) []byte {
	a.t.Helper()
	b, err := wire.Seal(nil, wire.Header{HostID: a.id, Seq: a.seq.Next()}, body, &a.key)
	if err != nil {
		a.t.Fatal(err)
	}
	return b
}

func (a *agent) sendRaw(b []byte) {
	a.t.Helper()
	if _, err := a.conn.WriteToUDPAddrPort(b, a.srv); err != nil {
		a.t.Fatal(err)
	}
}

func (a *agent) send(body wire.Body) { a.t.Helper(); a.sendRaw(a.seal(body)) }

func (a *agent) heartbeat(view uint64) {
	a.t.Helper()
	a.send(&wire.Heartbeat{ViewVersion: view, Health: wire.HealthReady})
}

// recv returns the next authentic datagram's header and body; it fails
// the test if none arrives within a generous bound.
func (a *agent) recv() (wire.Header, wire.Body) {
	a.t.Helper()
	buf := make([]byte, 2048)
	if err := a.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		a.t.Fatal(err)
	}
	for {
		n, _, err := a.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			a.t.Fatalf("host %d: receive: %v", a.id, err)
		}
		hdr, body, err := a.ver.Open(buf[:n])
		if err != nil {
			a.t.Fatalf("host %d: open datagram: %v", a.id, err)
		}
		var m wire.Body
		switch hdr.Type {
		case wire.TypeLookupReply:
			m = &wire.LookupReply{}
		case wire.TypeInvalidate:
			m = &wire.Invalidate{}
		case wire.TypeHeartbeatAck:
			m = &wire.HeartbeatAck{}
		default:
			a.t.Fatalf("host %d: unexpected %v", a.id, hdr.Type)
		}
		if err := m.UnmarshalBinary(body); err != nil {
			a.t.Fatalf("host %d: decode %v: %v", a.id, hdr.Type, err)
		}
		return hdr, m
	}
}

// lookup asks one batch and returns the answers.
func (a *agent) lookup(qs ...wire.LookupQuery) []wire.LookupAnswer {
	a.t.Helper()
	a.send(&wire.LookupRequest{Queries: qs})
	_, m := a.recv()
	rep, ok := m.(*wire.LookupReply)
	if !ok {
		a.t.Fatalf("host %d: got %T, want a LookupReply", a.id, m)
	}
	return rep.Answers
}

// waitFor polls cond until it holds; the bound only catches a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startServer starts a Server on 127.0.0.1 with cfg's blanks filled.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fakeTable is a liveness table on a fake clock.
func fakeTable(t *testing.T, now *int64) *liveness.Table {
	t.Helper()
	tab, err := liveness.New(liveness.Config{Capacity: 64, Now: func() int64 { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tab.Close() })
	return tab
}

// ---- a real registry ----

func newRegistry(t *testing.T) (*registry.Registry, *store.Store) {
	t.Helper()
	env := etcdtest.Start(t)
	return env.Registry, env.Store
}

func tm(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }

func create(t *testing.T, r *registry.Registry, objs ...apiv1.Object) []apiv1.Object {
	t.Helper()
	var out []apiv1.Object
	for _, o := range objs {
		got, err := r.Create(context.Background(), o)
		if err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
		out = append(out, got)
	}
	return out
}

func hostObj(name, ip string) *apiv1.Host {
	return &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: name}, Spec: apiv1.HostSpec{UnderlayIP: ip}}
}

// hostWithID is a Host as the registry numbers it.
func hostWithID(name, ip string, id uint32) *apiv1.Host {
	h := hostObj(name, ip)
	h.Status.HostID = id
	return h
}

func endpointObj(name, subnet, host string) *apiv1.Endpoint {
	return &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "acme"},
		Spec: apiv1.EndpointSpec{Subnet: subnet, Host: host}}
}
