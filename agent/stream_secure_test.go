package agent

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/wire"
)

// flipProxy relays TCP connections to a target; once armed, it flips one
// bit of the next bytes it relays from the target (the controller) to the
// client (the agent), then relays faithfully again.
type flipProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func newFlipProxy(t *testing.T, target string) *flipProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flipProxy{ln: ln, target: target}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *flipProxy) addr() string { return p.ln.Addr().String() }

func (p *flipProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Go(func() { io.Copy(u, c); u.Close() })
		p.wg.Go(func() {
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := u.Read(buf)
				if n > 0 && p.armed.CompareAndSwap(true, false) {
					buf[n-1] ^= 0x10 // in the last frame read: its tag, most likely
				}
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
}

// TestTamperedFrameReconnects: a frame changed on the wire fails
// authentication: the agent drops the session without applying it, keeps
// forwarding with its last good view, and reconnects; the new session
// resumes from that view.
func TestTamperedFrameReconnects(t *testing.T) {
	var proxy *flipProxy
	h := newHarness(t, func(c *Config) {
		proxy = newFlipProxy(t, c.StreamAddrs[0])
		c.StreamAddrs = []string{proxy.addr()}
	})
	s := h.connect(t)
	waitFor(t, "Connected", h.agent.Connected)
	good := lines(h.drv.State())

	proxy.armed.Store(true)
	s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}})
	s2 := h.stream.accept(t) // the agent reconnected
	if s2.hello.ViewVersion != 1 {
		t.Errorf("hello after the tampered frame: version %d, want 1 (the delta was not applied)", s2.hello.ViewVersion)
	}
	if diff := cmp.Diff(good, lines(h.drv.State())); diff != "" {
		t.Errorf("programmed state after the tampered frame (-want +got):\n%s", diff)
	}
	if e := h.agent.LastStreamError(); !strings.Contains(e, wire.ErrAuth.Error()) {
		t.Errorf("LastStreamError %q, want an authentication failure", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := s.conn.ReadMessage(ctx); err == nil {
		t.Error("the first session is still open")
	}
	runSteps(t, h, s2, []step{{
		frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}}},
		answer: "ack 2", state: state_(epLine("acme/web", 10), epLine("acme/db", 20)), version: 2, persisted: 2,
	}})
}

// TestImpostorControllerRefused: a controller that does not hold the host
// key (it accepts any Hello) cannot seal the Welcome: the agent refuses
// it, takes nothing from it and tries again.
func TestImpostorControllerRefused(t *testing.T) {
	raw := testKey(t.Name())
	impostor := newFakeStream(t, testKey("another host"), testHostID)
	impostor.trustAll.Store(true)
	a := startAgent(t, Config{Host: testHost, StreamAddrs: []string{impostor.addr()}, UDPAddr: "127.0.0.1:9", Key: raw,
		Driver: newSim(t), Logger: testLogger(t), Backoff: backoff.Policy{Min: time.Millisecond, Max: 5 * time.Millisecond}})
	waitFor(t, "two refused attempts", func() bool { return impostor.hellos.Load() >= 2 && a.Stats().StreamFailed >= 2 })
	if e := a.LastStreamError(); !strings.Contains(e, wire.ErrAuth.Error()) {
		t.Errorf("LastStreamError %q, want an authentication failure", e)
	}
	if a.Connected() || a.HostID() != 0 || a.DatagramKey() != nil || a.ViewVersion() != 0 {
		t.Errorf("after the impostor: connected %v, host ID %d, datagram key %x, view %d: want nothing taken",
			a.Connected(), a.HostID(), a.DatagramKey(), a.ViewVersion())
	}
	if st := a.Stats(); st.StreamConnects != 0 || st.StreamFailed < 2 {
		t.Errorf("StreamConnects %d StreamFailed %d, want 0 and at least 2", st.StreamConnects, st.StreamFailed)
	}
}

// TestMultiFrameDeltaBounded: the frames of a delta are held until its
// last one only up to MaxDeltaBytes; a larger delta is refused (Nack) when
// it ends, the view unchanged, and the next delta applies.
func TestMultiFrameDeltaBounded(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxDeltaBytes = 4 << 10 })
	s := h.connect(t)
	var frames []*wire.Delta
	for i := range 20 { // each frame about 500 bytes: 10 KB in all
		frames = append(frames, &wire.Delta{FromVersion: 1, ToVersion: 2, More: i < 19,
			Upserts: []wire.Resource{epRes(t, "acme", "ep"+string(rune('a'+i)), 100, byte(20+i))}})
	}
	web := epLine("acme/web", 10)
	runSteps(t, h, s, []step{
		{frames: frames, answer: "nack 2", errHas: "exceeds the agent's limit", state: state_(web), version: 1, persisted: 1},
		{frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}}},
			answer: "ack 2", state: state_(web, epLine("acme/db", 20)), version: 2, persisted: 2},
	})
}

// TestDatagramKeyPerSession: the agent takes the controller's datagrams
// under the key of its latest session, in a replay window of that key's
// own: after it reconnects (to a replica whose sequence numbers are lower,
// say) the new session's datagrams are accepted from any sequence number,
// and the old session's are refused.
func TestDatagramKeyPerSession(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HeartbeatInterval = 5 * time.Millisecond })
	s := h.connect(t)
	k1 := h.udp.key(t)
	high := wire.NewSequence(time.Now().Add(time.Hour))
	ack := func(key *wire.Key, seq uint64) {
		t.Helper()
		pkt, err := wire.Seal(nil, wire.Header{HostID: testHostID, Seq: seq}, &wire.HeartbeatAck{}, key)
		if err != nil {
			t.Fatal(err)
		}
		h.udp.sendRaw(t, h.agentUDP(t), pkt)
	}
	ack(k1, high.Next())
	waitFor(t, "the first session's ack", func() bool { return h.agent.Stats().HeartbeatAcks == 1 })

	s.conn.Close() // the replica goes; the agent reconnects (a new session)
	h.stream.accept(t)
	waitFor(t, "the new session's key", func() bool {
		k, _ := h.udp.keys.Key(testHostID)
		return h.agent.DatagramKey() != nil && string(h.agent.DatagramKey()) == string(k)
	})
	k2 := h.udp.key(t)
	ack(k2, 1) // far below the first session's numbers
	waitFor(t, "the second session's ack", func() bool { return h.agent.Stats().HeartbeatAcks == 2 })
	ack(k1, high.Next())
	waitFor(t, "the first session's datagram refused", func() bool { return h.agent.Stats().DatagramsRejected == 1 })
	// The agent's heartbeats are under the new key (the fake controller
	// fails the test on any it cannot open).
	for len(h.udp.heartbeats) > 0 {
		<-h.udp.heartbeats
	}
	next(t, h.udp.heartbeats, "a heartbeat of the new session")
}
