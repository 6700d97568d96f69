package udp

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/wire"
)

// TestHeartbeatsDriveLiveness: heartbeats over a real socket make a host
// Alive; when they stop, the host is Suspect and then Dead on the fake
// clock.
func TestHeartbeatsDriveLiveness(t *testing.T) {
	for _, batch := range []int{1, DefaultReadBatch} {
		t.Run(map[int]string{1: "recvmsg", DefaultReadBatch: "recvmmsg"}[batch], func(t *testing.T) {
			var now int64 = int64(time.Second)
			tab := fakeTable(t, &now)
			srv := startServer(t, Config{Keys: newKeyring(1, 2), Liveness: tab, ReadBatch: batch, Sockets: 2})
			a := newAgent(t, 1, srv.LocalAddr())
			a.heartbeat(7)
			waitFor(t, "the heartbeat", func() bool { return srv.Stats().Heartbeats == 1 })
			tab.Sweep(now)
			info, _ := tab.Get(1)
			if info.State != liveness.Alive || info.ViewVersion != 7 || info.Health != uint32(wire.HealthReady) {
				t.Fatalf("after a heartbeat: %+v", info)
			}
			for _, step := range []struct {
				at   time.Duration
				want liveness.State
			}{{2 * time.Second, liveness.Alive}, {2750 * time.Millisecond, liveness.Suspect}, {4 * time.Second, liveness.Dead}} {
				now = int64(step.at)
				tab.Sweep(now)
				if got := tab.State(1); got != step.want {
					t.Errorf("at %v: %s, want %s", step.at, got, step.want)
				}
			}
			if tab.State(2) != liveness.Unknown {
				t.Errorf("host 2, silent: %s", tab.State(2))
			}
		})
	}
}

// TestRejections sends bad datagrams: each is counted under its reason
// and none reaches the liveness table.
func TestRejections(t *testing.T) {
	var now int64 = 1
	tab := fakeTable(t, &now)
	// Host 99 has a key but is beyond MaxHosts.
	srv := startServer(t, Config{Keys: newKeyring(1, 2, 99), Liveness: tab, MaxHosts: 64, Sockets: 1})
	a := newAgent(t, 1, srv.LocalAddr())
	good := a.seal(&wire.Heartbeat{ViewVersion: 1})
	a.sendRaw(good)
	waitFor(t, "the first heartbeat", func() bool { return srv.Stats().Heartbeats == 1 })
	tab.Sweep(now)
	before, _ := tab.Get(1)

	forged := a.seal(&wire.Heartbeat{ViewVersion: 666})
	forged[len(forged)-1] ^= 1
	stranger := newAgent(t, 3, srv.LocalAddr()) // no key on the server
	far := newAgent(t, 99, srv.LocalAddr())
	reflected := a.seal(&wire.HeartbeatAck{Epoch: 1})
	badMagic := a.seal(&wire.Heartbeat{ViewVersion: 666})
	badMagic[0] = 'X'
	truncated := a.seal(&wire.Heartbeat{ViewVersion: 666})
	oversized := make([]byte, wire.MaxDatagramSize+10)
	copy(oversized, a.seal(&wire.Heartbeat{}))

	tests := []struct {
		name, reason string
		pkt          []byte
	}{
		{"forged tag", "auth", forged},
		{"replayed", "replay", good},
		{"truncated", "auth", truncated[:len(truncated)-3]},
		{"shorter than a header", "short", good[:20]},
		{"unknown host", "unknown_host", stranger.seal(&wire.Heartbeat{ViewVersion: 666})},
		{"host ID beyond the table", "host_id_range", far.seal(&wire.Heartbeat{ViewVersion: 666})},
		{"reflected controller type", "direction", reflected},
		{"bad magic", "bad_magic", badMagic},
		{"too large", "too_large", oversized},
	}
	want := map[string]uint64{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a.sendRaw(tc.pkt)
			want[tc.reason]++
			waitFor(t, tc.reason+" counted", func() bool { return srv.Stats().Rejected[tc.reason] == want[tc.reason] })
		})
	}
	st := srv.Stats()
	if diff := cmp.Diff(want, st.Rejected); diff != "" {
		t.Errorf("rejections (-want +got):\n%s", diff)
	}
	if st.Heartbeats != 1 {
		t.Errorf("heartbeats accepted: %d, want 1", st.Heartbeats)
	}
	now += int64(time.Second)
	tab.Sweep(now)
	after, _ := tab.Get(1)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("host 1 changed by rejected datagrams (-before +after):\n%s", diff)
	}
	for _, id := range []uint32{3, 99} {
		if _, ok := tab.Get(id); ok {
			t.Errorf("host %d reached the liveness table", id)
		}
	}
}

// TestRejectionMetric checks the Prometheus counter behind Stats.
func TestRejectionMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := startServer(t, Config{Keys: newKeyring(1), Registerer: reg, Sockets: 1})
	a := newAgent(t, 1, srv.LocalAddr())
	pkt := a.seal(&wire.Heartbeat{})
	pkt[len(pkt)-1] ^= 1
	a.sendRaw(pkt)
	waitFor(t, "the rejection", func() bool { return srv.Stats().Rejected["auth"] == 1 })
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "weft_udp_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				got[m.GetLabel()[0].GetValue()] = v
			}
		}
	}
	if diff := cmp.Diff(map[string]float64{"auth": 1}, got); diff != "" {
		t.Errorf("weft_udp_rejected_total (-want +got):\n%s", diff)
	}
}

func TestHeartbeatAck(t *testing.T) {
	srv := startServer(t, Config{Keys: newKeyring(5), Ack: true, Epoch: 42, Sockets: 1})
	a := newAgent(t, 5, srv.LocalAddr())
	pkt := a.seal(&wire.Heartbeat{ViewVersion: 1})
	a.sendRaw(pkt)
	hdr, m := a.recv()
	want := &wire.HeartbeatAck{Epoch: 42, HeartbeatSeq: binary.BigEndian.Uint64(pkt[8:16])}
	if diff := cmp.Diff(want, m); diff != "" || hdr.HostID != 5 {
		t.Errorf("ack for host %d (-want +got):\n%s", hdr.HostID, diff)
	}
}

// TestHeartbeatPathDoesNotAllocate runs the reader's per-datagram code on
// prepared heartbeats.
func TestHeartbeatPathDoesNotAllocate(t *testing.T) {
	var now int64 = 1
	tab := fakeTable(t, &now)
	s, err := New(Config{Addr: "127.0.0.1:0", Keys: newKeyring(1, 2, 3), Liveness: tab})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const runs = 300
	var pkts [][]byte
	for id := uint32(1); id <= 3; id++ {
		key, _ := wire.NewKey(rawKey(id))
		for i := 0; i < runs+2; i++ {
			p, err := wire.Seal(nil, wire.Header{HostID: id, Seq: uint64(i + 1)}, &wire.Heartbeat{ViewVersion: uint64(i)}, &key)
			if err != nil {
				t.Fatal(err)
			}
			pkts = append(pkts, p)
		}
	}
	r := &reader{}
	from := netip.MustParseAddrPort("127.0.0.1:4000")
	// Interleave the hosts; the first datagram of each host stores its address.
	order := make([][]byte, 0, len(pkts))
	for i := 0; i < runs+2; i++ {
		for h := 0; h < 3; h++ {
			order = append(order, pkts[h*(runs+2)+i])
		}
	}
	for _, p := range order[:3] {
		s.handle(r, p, from, now, 0, 0)
	}
	i := 3
	allocs := testing.AllocsPerRun(runs, func() {
		s.handle(r, order[i], from, now, 0, 0)
		i++
	})
	if allocs != 0 {
		t.Errorf("heartbeat path: %.2f allocations per datagram", allocs)
	}
	if r.c.heartbeats != uint64(i) || r.c.rejected != ([numReasons]uint64{}) {
		t.Errorf("heartbeats %d of %d, rejected %v", r.c.heartbeats, i, r.c.rejected)
	}
}

func TestTokenBucket(t *testing.T) {
	tests := []struct {
		name  string
		steps []struct {
			at, n uint64
			ok    bool
		}
	}{
		{"burst then empty", []struct {
			at, n uint64
			ok    bool
		}{{0, 10, true}, {0, 10, true}, {0, 1, false}}},
		{"refills at the rate", []struct {
			at, n uint64
			ok    bool
		}{{0, 20, true}, {100, 1, true}, {100, 1, false}, {600, 5, true}, {600, 1, false}}},
		{"refill capped at the burst", []struct {
			at, n uint64
			ok    bool
		}{{0, 20, true}, {100000, 21, false}, {100000, 20, true}}},
		{"fractional refill is kept", []struct {
			at, n uint64
			ok    bool
		}{{0, 20, true}, {50, 1, false}, {100, 1, true}, {150, 1, false}, {200, 1, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p peer
			for i, st := range tc.steps {
				if got := p.bucket.take(st.n, st.at+1000, 10, 20); got != st.ok { // 10/s, burst 20
					t.Errorf("step %d: take %d at %dms = %v, want %v", i, st.n, st.at, got, st.ok)
				}
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	st := &fakeSource{}
	st.put(hostWithID("h1", "192.0.2.1", 1))
	st.put(fakeEndpoint("e1", "h1", "10.0.0.2", "02:00:00:00:00:02", 5))
	loc := startLocator(t, st)
	srv := startServer(t, Config{Keys: newKeyring(1), Locator: loc, RateLimit: RateLimit{PerSecond: 1, Burst: 3}, Sockets: 1})
	a := newAgent(t, 1, srv.LocalAddr())
	q := wire.LookupQuery{VNI: 5, IP: netip.MustParseAddr("10.0.0.1")}
	a.lookup(q, q) // 2 of 3 tokens
	a.lookup(q)    // the last one
	a.send(&wire.LookupRequest{Queries: []wire.LookupQuery{q}})
	waitFor(t, "the rate limit", func() bool { return srv.Stats().Rejected["rate_limited"] == 1 })
	if got := srv.Stats().Lookups; got != 2 {
		t.Errorf("lookups answered: %d, want 2", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{Addr: ":0", Keys: newKeyring()}, true},
		{"discard needs no keys", Config{Addr: ":0", Discard: true}, true},
		{"no addr", Config{Keys: newKeyring()}, false},
		{"no keys", Config{Addr: ":0"}, false},
		{"burst too large", Config{Addr: ":0", Keys: newKeyring(), RateLimit: RateLimit{Burst: MaxBurst + 1}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Keys: newKeyring(), Sockets: 3})
	if err != nil {
		t.Fatal(err)
	}
	if s.LocalAddr() != nil {
		t.Error("LocalAddr before Start: not nil")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("second Start: no error")
	}
	if len(s.conns) != 3 {
		t.Errorf("%d sockets, want 3 sharing the port", len(s.conns))
	}
	for _, c := range s.conns[1:] {
		if c.LocalAddr().String() != s.LocalAddr().String() {
			t.Errorf("socket on %s, want %s", c.LocalAddr(), s.LocalAddr())
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("Start after Close: no error")
	}
}
