package udpmux

import (
	"context"
	"crypto/sha256"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait for an asynchronous effect.
const waitTimeout = 10 * time.Second

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hostKey returns a deterministic raw host key.
func hostKey(host string) []byte {
	k := sha256.Sum256([]byte("weft udpmux test key " + host))
	return k[:]
}

// newMux starts a mux on loopback, closed when the test ends.
func newMux(tb testing.TB) *Mux {
	tb.Helper()
	m, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := m.Close(); err != nil {
			tb.Error(err)
		}
	})
	return m
}

// welcomer is a fake controller's config stream: it welcomes each host
// with its ID and sends nothing more. It keeps the datagram key of each
// host's latest session (a wire.Keyring).
type welcomer struct {
	ln  net.Listener
	ids map[string]uint32
	wg  sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn
	dgKeys map[uint32][]byte
}

// Key implements wire.Keyring.
func (w *welcomer) Key(id uint32) ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k, ok := w.dgKeys[id]
	return k, ok
}

// key returns the datagram key of host id's latest session.
func (w *welcomer) key(t *testing.T, id uint32) []byte {
	t.Helper()
	k, ok := w.Key(id)
	if !ok {
		t.Fatalf("no session of host ID %d", id)
	}
	return k
}

// newWelcomer serves ids (host name → host ID) until the test ends; the
// agents of the test must be closed first (register it before them).
func newWelcomer(tb testing.TB, ids map[string]uint32) *welcomer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	w := &welcomer{ln: ln, ids: ids, dgKeys: map[uint32][]byte{}}
	w.wg.Go(w.serve)
	tb.Cleanup(func() {
		ln.Close()
		w.mu.Lock()
		for _, c := range w.conns {
			c.Close()
		}
		w.mu.Unlock()
		w.wg.Wait()
	})
	return w
}

func (w *welcomer) serve() {
	for {
		nc, err := w.ln.Accept()
		if err != nil {
			return
		}
		w.mu.Lock()
		w.conns = append(w.conns, nc)
		w.mu.Unlock()
		w.wg.Go(func() {
			c := wire.NewConn(nc, 0)
			defer c.Close()
			ctx := context.Background()
			m, err := c.ReadMessage(ctx)
			h, ok := m.(*wire.Hello)
			if err != nil || !ok || wire.VerifyHello(h, hostKey(h.Host), time.Now(), time.Minute) != nil {
				return
			}
			dk, err := c.AcceptHello(ctx, h, hostKey(h.Host))
			if err != nil {
				return
			}
			w.mu.Lock()
			w.dgKeys[w.ids[h.Host]] = dk
			w.mu.Unlock()
			if err := c.WriteMessage(ctx, &wire.Welcome{HostID: w.ids[h.Host], Epoch: 1}); err != nil {
				return
			}
			for {
				if _, err := c.ReadMessage(context.Background()); err != nil {
					return
				}
			}
		})
	}
}

// startAgent starts the agent of host on mux, heartbeating every interval
// to udpAddr, and waits for its host ID.
func startAgent(tb testing.TB, mux *Mux, w *welcomer, host, udpAddr string, interval time.Duration) *agent.Agent {
	tb.Helper()
	drv := simdp.New(simdp.Config{})
	tb.Cleanup(func() { drv.Close() })
	a, err := agent.New(agent.Config{
		Host: host, StreamAddrs: []string{w.ln.Addr().String()}, UDPAddr: udpAddr, Transport: mux,
		Key: hostKey(host), Driver: drv, HeartbeatInterval: interval, ReconcileInterval: time.Hour,
		Backoff: backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := a.Close(); err != nil {
			tb.Error(err)
		}
	})
	return a
}

// datagram is one datagram the fake controller received.
type datagram struct {
	hdr  wire.Header
	from netip.AddrPort
}

// controllerUDP is a fake controller's UDP side: it authenticates every
// heartbeat it receives with the datagram key of the latest session of
// the host it names.
type controllerUDP struct {
	conn       *net.UDPConn
	seq        *wire.Sequence
	heartbeats chan datagram
}

func newControllerUDP(t *testing.T, w *welcomer) *controllerUDP {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	v, err := wire.NewVerifier(wire.VerifierConfig{Accept: wire.ToController, Keyring: w})
	if err != nil {
		t.Fatal(err)
	}
	u := &controllerUDP{conn: conn, seq: wire.NewSequence(time.Now()), heartbeats: make(chan datagram, 4096)}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, wire.MaxDatagramSize+1)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			hdr, _, err := v.Open(buf[:n])
			if err != nil {
				t.Errorf("fake controller: datagram from %s rejected: %v", from, err)
				continue
			}
			if hdr.Type != wire.TypeHeartbeat {
				t.Errorf("fake controller: unexpected %v datagram", hdr.Type)
				continue
			}
			select {
			case u.heartbeats <- datagram{hdr, from}:
			default:
			}
		}
	})
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return u
}

func (u *controllerUDP) addr() string { return u.conn.LocalAddr().String() }

// sealTo seals body for host hostID with the raw key and sends it to.
func (u *controllerUDP) sealTo(t *testing.T, to netip.AddrPort, hostID uint32, body wire.Body, raw []byte) {
	t.Helper()
	key, err := wire.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	pkt, err := wire.Seal(nil, wire.Header{HostID: hostID, Seq: u.seq.Next()}, body, &key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.conn.WriteToUDPAddrPort(pkt, to); err != nil {
		t.Fatal(err)
	}
}

func (u *controllerUDP) next(t *testing.T) datagram {
	t.Helper()
	select {
	case d := <-u.heartbeats:
		return d
	case <-time.After(waitTimeout):
		t.Fatalf("no heartbeat within %v", waitTimeout)
		return datagram{}
	}
}
