package agent

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/rendezvous"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// Lines of the sim driver's state for the resources of the test views.
const (
	hostLine   = "host h1 underlay=192.0.2.11 dev=eth0 mtu=0"
	vpcLine    = "vpc 100 acme/main"
	subnetLine = "vpc 100 subnet a 10.0.1.0/24 gw=10.0.1.1"
)

func epLine(id string, last byte) string {
	return fmt.Sprintf(`endpoint %s vni=100 subnet=a ip=10.0.1.%d/24 mac=02:00:0a:00:01:%02x gw=10.0.1.1 if=eth0 netns="" identity=0`, id, last, last)
}

func state_(extra ...string) []string {
	out := append([]string{hostLine, vpcLine, subnetLine}, extra...)
	slices.Sort(out)
	return out
}

// step sends the frames of one delta and checks the answer, the programmed
// state, the version held and the version persisted.
type step struct {
	frames    []*wire.Delta
	answer    string // "ack V", or "nack V" followed by ": " and the error
	errHas    string // for a nack: a substring of the error
	state     []string
	version   uint64
	persisted uint64
}

func runSteps(t *testing.T, h *harness, s *fakeSession, steps []step) {
	t.Helper()
	for i, st := range steps {
		for _, f := range st.frames {
			s.send(t, f)
		}
		got := s.answer(t)
		if st.errHas != "" {
			if !strings.HasPrefix(got, st.answer+": ") || !strings.Contains(got, st.errHas) {
				t.Fatalf("step %d: answer %q, want %q with an error containing %q", i, got, st.answer, st.errHas)
			}
		} else if got != st.answer {
			t.Fatalf("step %d: answer %q, want %q", i, got, st.answer)
		}
		if diff := cmp.Diff(st.state, lines(h.drv.State())); diff != "" {
			t.Errorf("step %d: programmed state (-want +got):\n%s", i, diff)
		}
		if v := h.agent.ViewVersion(); v != st.version {
			t.Errorf("step %d: ViewVersion = %d, want %d", i, v, st.version)
		}
		v, err := state.Load(h.dir)
		if err != nil {
			t.Fatalf("step %d: load persisted view: %v", i, err)
		}
		if v.Version != st.persisted {
			t.Errorf("step %d: persisted version %d, want %d", i, v.Version, st.persisted)
		}
	}
}

func TestConfigStream(t *testing.T) {
	web, db, api := epLine("acme/web", 10), epLine("acme/db", 20), epLine("acme/api", 30)
	for _, tc := range []struct {
		name  string
		steps func(t *testing.T) []step
	}{
		{
			name: "snapshot then deltas",
			steps: func(t *testing.T) []step {
				return []step{
					{frames: []*wire.Delta{baseSnapshot(t, 1)}, answer: "ack 1", state: state_(web), version: 1, persisted: 1},
					{frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}}},
						answer: "ack 2", state: state_(web, db), version: 2, persisted: 2},
					{frames: []*wire.Delta{{FromVersion: 2, ToVersion: 3, Deletes: []wire.ResourceKey{key("endpoint", "acme/web")}}},
						answer: "ack 3", state: state_(db), version: 3, persisted: 3},
					{frames: []*wire.Delta{{FromVersion: 3, ToVersion: 3}}, answer: "ack 3", state: state_(db), version: 3, persisted: 3},
				}
			},
		},
		{
			name: "from-version mismatch is nacked, then a snapshot recovers",
			steps: func(t *testing.T) []step {
				snap6 := baseSnapshot(t, 6)
				snap6.Upserts = append(snap6.Upserts, epRes(t, "acme", "db", 100, 20))
				return []step{
					{frames: []*wire.Delta{baseSnapshot(t, 1)}, answer: "ack 1", state: state_(web), version: 1, persisted: 1},
					{frames: []*wire.Delta{{FromVersion: 5, ToVersion: 6, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}}},
						answer: "nack 6", errHas: "delta from version 5 but the agent holds version 1", state: state_(web), version: 1, persisted: 1},
					{frames: []*wire.Delta{snap6}, answer: "ack 6", state: state_(web, db), version: 6, persisted: 6},
					{frames: []*wire.Delta{{FromVersion: 6, ToVersion: 7, Deletes: []wire.ResourceKey{key("endpoint", "acme/db")}}},
						answer: "ack 7", state: state_(web), version: 7, persisted: 7},
				}
			},
		},
		{
			name: "multi-frame deltas are applied together at the last frame",
			steps: func(t *testing.T) []step {
				return []step{
					{frames: []*wire.Delta{
						{ToVersion: 1, Snapshot: true, More: true, Upserts: []wire.Resource{hostRes(t), vpcRes(t, "acme", 100)}},
						{ToVersion: 1, Snapshot: true, Upserts: []wire.Resource{epRes(t, "acme", "web", 100, 10)}},
					}, answer: "ack 1", state: state_(web), version: 1, persisted: 1},
					{frames: []*wire.Delta{
						{FromVersion: 1, ToVersion: 2, More: true, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}},
						{FromVersion: 1, ToVersion: 2, More: true, Upserts: []wire.Resource{epRes(t, "acme", "api", 100, 30)}},
						{FromVersion: 1, ToVersion: 2, Deletes: []wire.ResourceKey{key("endpoint", "acme/web")}},
					}, answer: "ack 2", state: state_(db, api), version: 2, persisted: 2},
					// Exactly one answer per delta: the next answer is for version 3.
					{frames: []*wire.Delta{{FromVersion: 2, ToVersion: 3}}, answer: "ack 3", state: state_(db, api), version: 3, persisted: 3},
				}
			},
		},
		{
			name: "a delta cut short by another is nacked",
			steps: func(t *testing.T) []step {
				return []step{
					{frames: []*wire.Delta{baseSnapshot(t, 1)}, answer: "ack 1", state: state_(web), version: 1, persisted: 1},
					{frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, More: true, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}}},
						answer: "nack 2", errHas: "incomplete", state: state_(web), version: 1, persisted: 1},
				}
			},
		},
		{
			name: "unknown resource types are kept but not programmed",
			steps: func(t *testing.T) []step {
				return []step{
					{frames: []*wire.Delta{baseSnapshot(t, 1)}, answer: "ack 1", state: state_(web), version: 1, persisted: 1},
					{frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{{Key: key("route", "x"), Data: []byte(`{"via":"y"}`)}}}},
						answer: "ack 2", state: state_(web), version: 2, persisted: 2},
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			s := h.stream.accept(t)
			if s.hello.Host != testHost || s.hello.ViewVersion != 0 {
				t.Errorf("hello: host %q version %d, want %q and 0", s.hello.Host, s.hello.ViewVersion, testHost)
			}
			steps := tc.steps(t)
			if tc.name == "a delta cut short by another is nacked" {
				// The cut-short delta is answered when the next one begins.
				runSteps(t, h, s, steps[:1])
				s.send(t, steps[1].frames[0])
				s.send(t, &wire.Delta{FromVersion: 1, ToVersion: 3, Upserts: []wire.Resource{epRes(t, "acme", "api", 100, 30)}})
				if got := s.answer(t); !strings.HasPrefix(got, "nack 2: ") || !strings.Contains(got, "incomplete") {
					t.Fatalf("cut-short delta answered %q, want nack 2 (incomplete)", got)
				}
				if got := s.answer(t); got != "ack 3" {
					t.Fatalf("the delta after it answered %q, want ack 3", got)
				}
				if diff := cmp.Diff(state_(web, api), lines(h.drv.State())); diff != "" {
					t.Errorf("programmed state (-want +got):\n%s", diff)
				}
				return
			}
			runSteps(t, h, s, steps)
			if st := h.agent.Stats(); st.Acks+st.Nacks != uint64(len(steps)) {
				t.Errorf("Stats: %d acks + %d nacks, want %d answers", st.Acks, st.Nacks, len(steps))
			}
		})
	}
}

// TestBadResource: a delta with a resource that does not parse strictly is
// nacked with the error, and the view, the data plane and the persisted
// view stay as they were.
func TestBadResource(t *testing.T) {
	good := func() *view.Endpoint {
		return &view.Endpoint{Tenant: "acme", Name: "db", VPC: "main", VNI: 100, Subnet: "a", CIDR: "10.0.1.0/24",
			Gateway: "10.0.1.1", IP: "10.0.1.20", MAC: "02:00:0a:00:01:14"}
	}
	ep := func(f func(e *view.Endpoint)) func(t *testing.T) wire.Resource {
		return func(t *testing.T) wire.Resource {
			e := good()
			f(e)
			return mustRes(t, e)
		}
	}
	for _, tc := range []struct {
		name   string
		res    func(t *testing.T) wire.Resource
		errHas string
	}{
		{"address out of range", ep(func(e *view.Endpoint) { e.IP = "10.0.1.300" }), `ip: "10.0.1.300" is not an IP address`},
		{"address with a zone", ep(func(e *view.Endpoint) { e.IP = "fe80::1%eth0" }), "zones are not allowed"},
		{"IPv4-mapped address", ep(func(e *view.Endpoint) { e.IP = "::ffff:10.0.1.20" }), "IPv4-mapped"},
		{"MAC", ep(func(e *view.Endpoint) { e.MAC = "02:00:0a:00:01" }), "not a 6-byte Ethernet address"},
		{"prefix with host bits", ep(func(e *view.Endpoint) { e.CIDR = "10.0.1.5/24" }), "host bits set"},
		{"gateway", ep(func(e *view.Endpoint) { e.Gateway = "gw" }), `gateway: "gw" is not an IP address`},
		{"unknown subnet", ep(func(e *view.Endpoint) { e.Subnet = "b" }), `no subnet "b" in VNI 100`},
		{"address outside the subnet", ep(func(e *view.Endpoint) { e.IP = "10.0.2.20" }), "is not a host address of 10.0.1.0/24"},
		{"key does not match the content", func(t *testing.T) wire.Resource {
			r := mustRes(t, good())
			r.Key.ID = "acme/other"
			return r
		}, `resource holds endpoint "acme/db"`},
		{"not JSON of an endpoint", func(*testing.T) wire.Resource {
			return wire.Resource{Key: key("endpoint", "acme/db"), Data: []byte(`{"ip": 7}`)}
		}, "view: decode endpoint/acme/db"},
		{"VPC subnet with host bits", func(t *testing.T) wire.Resource {
			return mustRes(t, &view.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.1/24"}}})
		}, "host bits set"},
		{"VNI out of range", func(t *testing.T) wire.Resource {
			return mustRes(t, &view.VPC{Tenant: "acme", Name: "main", VNI: 1 << 24, Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24"}}})
		}, "VNI 16777216 out of range"},
		{"host resource of another host", func(t *testing.T) wire.Resource {
			return mustRes(t, &view.Host{Name: "h2", UnderlayIP: "192.0.2.12"})
		}, `host resource for "h2"`},
		{"host underlay address", func(t *testing.T) wire.Resource {
			return mustRes(t, &view.Host{Name: testHost, UnderlayIP: "192.0.2"})
		}, `underlayIP: "192.0.2" is not an IP address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			s := h.connect(t)
			want := state_(epLine("acme/web", 10))
			runSteps(t, h, s, []step{
				{frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{tc.res(t)}}},
					answer: "nack 2", errHas: tc.errHas, state: want, version: 1, persisted: 1},
				// The view is still at 1: a delta from 1 applies.
				{frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}}},
					answer: "ack 2", state: state_(epLine("acme/web", 10), epLine("acme/db", 20)), version: 2, persisted: 2},
			})
		})
	}
}

// TestReconnectResumes: when the controller drops the stream the agent
// reconnects (with backoff) and says which version it holds; it gets only
// the deltas since then, and keeps forwarding meanwhile.
func TestReconnectResumes(t *testing.T) {
	h := newHarness(t)
	s := h.connect(t)
	waitFor(t, "Connected", h.agent.Connected)
	// Hold the next Welcome until the test has looked at the agent.
	gate := make(chan struct{})
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	h.stream.setWelcome(func(hello *wire.Hello) *wire.Welcome {
		<-gate
		return &wire.Welcome{HostID: testHostID}
	})
	s.conn.Close()
	waitFor(t, "not Connected after the drop", func() bool { return !h.agent.Connected() })
	if diff := cmp.Diff(state_(epLine("acme/web", 10)), lines(h.drv.State())); diff != "" {
		t.Errorf("state while disconnected (-want +got):\n%s", diff)
	}
	close(gate)
	s2 := h.stream.accept(t)
	if s2.hello.ViewVersion != 1 || s2.hello.HostID != testHostID {
		t.Errorf("second hello: version %d host ID %d, want 1 and %d", s2.hello.ViewVersion, s2.hello.HostID, testHostID)
	}
	if string(s2.hello.Nonce) == string(s.hello.Nonce) {
		t.Errorf("the second hello reuses the first one's nonce")
	}
	runSteps(t, h, s2, []step{{
		frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{epRes(t, "acme", "db", 100, 20)}}},
		answer: "ack 2", state: state_(epLine("acme/web", 10), epLine("acme/db", 20)), version: 2, persisted: 2,
	}})
	waitFor(t, "Connected again", h.agent.Connected)
	if got := h.agent.Stats().StreamConnects; got != 2 {
		t.Errorf("StreamConnects = %d, want 2", got)
	}
	if st := h.agent.Stats(); st.StreamLost != 1 || st.StreamFailed != 0 {
		t.Errorf("StreamLost %d StreamFailed %d, want 1 and 0 (one welcomed session dropped)", st.StreamLost, st.StreamFailed)
	}
	if e := h.agent.LastStreamError(); e == "" {
		t.Error("LastStreamError empty after a dropped session")
	}
}

// TestReplicaFailover: replicas are tried in rendezvous order; one that
// refuses connections is skipped, one that refuses the agent too, and the
// replica list of a Welcome replaces the configured one.
func TestReplicaFailover(t *testing.T) {
	raw := testKey(t.Name())
	refusing := newFakeStream(t, raw, testHostID)
	var refusals atomic.Int32
	refusing.setWelcome(func(*wire.Hello) *wire.Welcome {
		refusals.Add(1)
		return &wire.Welcome{Error: "not my host"}
	})
	good := newFakeStream(t, raw, testHostID)
	later := newFakeStream(t, raw, testHostID)
	// A port nobody listens on.
	deadLn := newFakeStream(t, raw, testHostID)
	dead := deadLn.addr()
	deadLn.close()

	addrs := []string{good.addr(), refusing.addr(), dead}
	// Pick a host name whose order puts the good replica last.
	host := ""
	for i := range 1000 {
		name := fmt.Sprintf("host-%d", i)
		if o := rendezvous.Order(name, addrs); o[2] == good.addr() {
			host = name
			break
		}
	}
	if host == "" {
		t.Fatal("no host name orders the good replica last")
	}
	good.setWelcome(func(*wire.Hello) *wire.Welcome {
		return &wire.Welcome{HostID: testHostID, Replicas: []string{good.addr(), later.addr()}, ReplicasVersion: 2}
	})
	udp := newFakeUDP(t, good)
	drv := newSim(t)
	a := startAgent(t, Config{Host: host, StreamAddrs: addrs, UDPAddr: udp.addr(), Key: raw, Driver: drv,
		Logger: testLogger(t), Backoff: backoff.Policy{Min: time.Millisecond, Max: 5 * time.Millisecond}})
	s := good.accept(t)
	if s.hello.Host != host {
		t.Fatalf("hello from %q, want %q", s.hello.Host, host)
	}
	if st := a.Stats(); refusals.Load() > 0 && (st.StreamRefused == 0 || st.StreamFailed < st.StreamRefused) {
		t.Errorf("StreamRefused %d StreamFailed %d after %d refusals", st.StreamRefused, st.StreamFailed, refusals.Load())
	}
	if refusals.Load() == 0 {
		t.Errorf("the agent reached the replica ranked last without trying the one that refuses it")
	}
	want := rendezvous.Order(host, []string{good.addr(), later.addr()})
	waitFor(t, "the Welcome's replica list", func() bool { return slices.Equal(want, a.Replicas()) })
	// The good replica goes away: the agent moves to the other one it
	// learned from the Welcome.
	good.close()
	s2 := later.accept(t)
	if s2.hello.Host != host {
		t.Errorf("hello at the new replica from %q", s2.hello.Host)
	}
}

// TestViewHash: a delta carries the hash of the view it leads to; the
// agent refuses one after which its view does not match (and keeps the
// view it holds), and says in its next Hello what its view hashes to.
func TestViewHash(t *testing.T) {
	h := newHarness(t)
	s := h.connect(t)
	base := baseSnapshot(t, 1).Upserts
	db := epRes(t, "acme", "db", 100, 20)
	good := wire.ViewHash(append(slices.Clone(base), db))
	bad := slices.Clone(good)
	bad[0] ^= 1
	runSteps(t, h, s, []step{
		{
			frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{db}, ViewHash: bad}},
			answer: "nack 2", errHas: "view hash mismatch",
			state: state_(epLine("acme/web", 10)), version: 1, persisted: 1,
		},
		{
			frames: []*wire.Delta{{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{db}, ViewHash: good}},
			answer: "ack 2", state: state_(epLine("acme/web", 10), epLine("acme/db", 20)), version: 2, persisted: 2,
		},
	})
	if got := h.agent.Stats().HashMismatches; got != 1 {
		t.Errorf("HashMismatches = %d, want 1", got)
	}
	s.conn.Close()
	s2 := h.stream.accept(t)
	if s2.hello.ViewVersion != 2 || !bytes.Equal(s2.hello.ViewHash, good) {
		t.Errorf("hello after reconnect: version %d hash %x, want 2 and %x", s2.hello.ViewVersion, s2.hello.ViewHash, good)
	}
}

// TestStreamSource: the config stream is dialled from StreamSource.
func TestStreamSource(t *testing.T) {
	src := netip.MustParseAddr("127.0.0.7")
	h := newHarness(t, func(c *Config) { c.StreamSource = src })
	s := h.connect(t)
	got, err := netip.ParseAddrPort(s.conn.RemoteAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got.Addr() != src {
		t.Errorf("stream dialled from %v, want %v", got.Addr(), src)
	}
}

// TestMoveNotice: a replica that tells its agents to move (a Welcome with
// an Error during the session: it lost its etcd quorum) is left at once,
// and moving is no failure: however often it happens, the agent is back
// on a replica within the backoff's first cap, not after a grown backoff.
func TestMoveNotice(t *testing.T) {
	raw := testKey(t.Name())
	a, b := newFakeStream(t, raw, testHostID), newFakeStream(t, raw, testHostID)
	udp := newFakeUDP(t, a)
	const minDelay = 50 * time.Millisecond
	ag := startAgent(t, Config{Host: "h1", StreamAddrs: []string{a.addr(), b.addr()}, UDPAddr: udp.addr(), Key: raw, Driver: newSim(t),
		Logger: testLogger(t), Backoff: backoff.Policy{Min: minDelay, Max: time.Minute}})
	next := func() *fakeSession {
		t.Helper()
		select {
		case s := <-a.sessions:
			return s
		case s := <-b.sessions:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("the agent did not move to a replica within 5s of the notice")
			return nil
		}
	}
	s := next()
	// A grown backoff would reach 50ms·2^8 = 12.8s by the last move.
	for i := range 8 {
		start := time.Now()
		s.send(t, &wire.Welcome{Error: "this replica lost its etcd quorum"})
		s = next()
		if took := time.Since(start); took > time.Second {
			t.Errorf("move %d: the agent took %s to move, want at most the first cap (%s) and some slack", i+1, took, minDelay)
		}
	}
	if e := ag.LastStreamError(); !strings.Contains(e, "move") {
		t.Errorf("LastStreamError = %q, want the move notice", e)
	}
}
