package wire

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// step is one datagram fed to a Verifier and the result expected.
type step struct {
	host uint32
	seq  uint64
	key  uint32 // host whose key signs it (normally host)
	typ  Type   // 0: heartbeat
	want error
}

func TestVerifierOpen(t *testing.T) {
	const h = 10
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{host: h, seq: 1}, {host: h, seq: 2}, {host: h, seq: 3}}},
		{"replayed sequence", []step{{host: h, seq: 5}, {host: h, seq: 5, want: ErrReplay}}},
		{"sequence 0", []step{{host: h, seq: 0, want: ErrReplay}}},
		{"out of order inside the window", []step{
			{host: h, seq: 100}, {host: h, seq: 90}, {host: h, seq: 37}, {host: h, seq: 90, want: ErrReplay},
		}},
		{"far in the future slides the window", []step{
			{host: h, seq: 100}, {host: h, seq: 1 << 60}, {host: h, seq: 1<<60 - 63}, {host: h, seq: 100, want: ErrReplay},
			{host: h, seq: 1<<60 - 64, want: ErrReplay}, {host: h, seq: 1<<60 + 1},
		}},
		{"older than the window", []step{{host: h, seq: 1000}, {host: h, seq: 1000 - 64, want: ErrReplay}, {host: h, seq: 1000 - 63}}},
		{"forged tag does not move the window", []step{
			{host: h, seq: 1}, {host: h, seq: 500, key: 11, want: ErrAuth}, {host: h, seq: 2},
		}},
		{"unknown host", []step{{host: 99, seq: 1, key: 99, want: ErrUnknownHost}}},
		{"wrong direction", []step{{host: h, seq: 1, typ: TypeHeartbeatAck, want: ErrDirection}}},
		{"hosts have separate windows", []step{{host: h, seq: 7}, {host: 11, seq: 7}, {host: h, seq: 7, want: ErrReplay}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustVerifier(t, newTestKeyring(10, 11), ToController)
			for i, s := range tt.steps {
				if got := openStep(t, v, s); got != s.want {
					t.Errorf("step %d (host %d seq %d): err = %v, want exactly %v", i, s.host, s.seq, got, s.want)
				}
			}
		})
	}
}

func openStep(t *testing.T, v *Verifier, s step) error {
	t.Helper()
	if s.key == 0 {
		s.key = s.host
	}
	body := Body(&Heartbeat{ViewVersion: s.seq})
	if s.typ != 0 {
		body = sampleBodies()["heartbeat ack"]
	}
	pkt := AppendHeader(nil, Header{Type: body.Type(), HostID: s.host, Seq: s.seq})
	pkt, err := body.AppendBinary(pkt)
	if err != nil {
		t.Fatal(err)
	}
	pkt = appendTag(pkt, 0, mustKey(t, s.key))
	hdr, b, err := v.Open(pkt)
	if err == nil {
		want := Header{Type: body.Type(), HostID: s.host, Seq: s.seq}
		if d := cmp.Diff(want, hdr); d != "" {
			t.Errorf("header (-want +got):\n%s", d)
		}
		if !bytes.Equal(b, pkt[HeaderLen:len(pkt)-TagLen]) {
			t.Errorf("body = %x, want %x", b, pkt[HeaderLen:len(pkt)-TagLen])
		}
	}
	return err
}

func TestVerifierEveryByteFlipFails(t *testing.T) {
	key := mustKey(t, 3)
	for name, body := range sampleBodies() {
		t.Run(name, func(t *testing.T) {
			pkt, err := Seal(nil, Header{HostID: 3, Seq: 77}, body, key)
			if err != nil {
				t.Fatal(err)
			}
			accept := body.Type().Direction()
			for i := range pkt {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					v := mustVerifier(t, newTestKeyring(3), accept)
					bad := bytes.Clone(pkt)
					bad[i] ^= mask
					_, _, err := v.Open(bad)
					if err == nil {
						t.Fatalf("byte %d ^ %#x: accepted", i, mask)
					}
					if i >= HeaderLen && err != ErrAuth {
						t.Errorf("byte %d ^ %#x (body or tag): err = %v, want ErrAuth", i, mask, err)
					}
				}
			}
		})
	}
}

func TestVerifierKeyChange(t *testing.T) {
	kr := newTestKeyring(5)
	v := mustVerifier(t, kr, ToController)
	if err := openStep(t, v, step{host: 5, seq: 10}); err != nil {
		t.Fatalf("first datagram: %v", err)
	}
	kr.set(5, rawKey(500)) // rotate: host 5 now uses the key of "host 500"
	tests := []struct {
		name string
		s    step
		want error
	}{
		{"old key refused", step{host: 5, seq: 11, key: 5}, ErrAuth},
		{"new key accepted", step{host: 5, seq: 12, key: 500}, nil},
		{"the new key has a window of its own", step{host: 5, seq: 10, key: 500}, nil},
		{"which refuses replays", step{host: 5, seq: 10, key: 500}, ErrReplay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := openStep(t, v, tt.s); err != tt.want {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	kr.set(5, nil)
	if err := openStep(t, v, step{host: 5, seq: 13, key: 500}); err != ErrUnknownHost {
		t.Errorf("after the key is removed: err = %v, want ErrUnknownHost", err)
	}
	kr.set(5, []byte("short key"))
	if err := openStep(t, v, step{host: 5, seq: 14, key: 500}); err != ErrUnknownHost {
		t.Errorf("with a key of the wrong size: err = %v, want ErrUnknownHost", err)
	}
}

func TestVerifierForgetAndPreparedKey(t *testing.T) {
	v := mustVerifier(t, newTestKeyring(1, 2), ToAgent)
	if _, err := v.PreparedKey(3); err != ErrUnknownHost {
		t.Errorf("PreparedKey(unknown) err = %v, want ErrUnknownHost", err)
	}
	k, err := v.PreparedKey(1)
	if err != nil {
		t.Fatal(err)
	}
	if k != *mustKey(t, 1) {
		t.Errorf("PreparedKey(1) differs from NewKey of host 1's key")
	}
	// A controller seals with the prepared key; the agent's verifier opens.
	pkt, err := Seal(nil, Header{HostID: 1, Seq: 9}, sampleBodies()["invalidate moved"], &k)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Open(pkt); err != nil {
		t.Fatalf("open: %v", err)
	}
	if _, _, err := v.Open(pkt); err != ErrReplay {
		t.Fatalf("open again: err = %v, want ErrReplay", err)
	}
	if _, err := v.PreparedKey(1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Open(pkt); err != ErrReplay {
		t.Errorf("PreparedKey reset the replay window: err = %v, want ErrReplay", err)
	}
	if got := v.Hosts(); got != 1 {
		t.Errorf("Hosts() = %d, want 1", got)
	}
	v.Forget(1)
	if got := v.Hosts(); got != 0 {
		t.Errorf("Hosts() after Forget = %d, want 0", got)
	}
	if _, _, err := v.Open(pkt); err != nil {
		t.Errorf("after Forget the window starts over: err = %v, want nil", err)
	}
}

func TestVerifierConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     VerifierConfig
		wantErr bool
	}{
		{"ok", VerifierConfig{Keyring: newTestKeyring(), Accept: ToAgent}, false},
		{"no keyring", VerifierConfig{Accept: ToAgent}, true},
		{"no direction", VerifierConfig{Keyring: newTestKeyring()}, true},
		{"bad direction", VerifierConfig{Keyring: newTestKeyring(), Accept: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Errorf("NewVerifier err = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestVerifierConcurrentReplay sends every datagram from several goroutines
// at once: each must be accepted exactly once.
func TestVerifierConcurrentReplay(t *testing.T) {
	const hosts, perHost, workers = 8, 200, 4
	kr := newTestKeyring()
	var pkts [][]byte
	for h := uint32(1); h <= hosts; h++ {
		kr.set(h, rawKey(h))
		key := mustKey(t, h)
		for s := uint64(1); s <= perHost; s++ {
			pkt, err := Seal(nil, Header{HostID: h, Seq: s}, &Heartbeat{}, key)
			if err != nil {
				t.Fatal(err)
			}
			pkts = append(pkts, pkt)
		}
	}
	v := mustVerifier(t, kr, ToController)
	accepted := make([][]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			accepted[w] = make([]int, len(pkts))
			for i, p := range pkts {
				if _, _, err := v.Open(p); err == nil {
					accepted[w][i]++
				} else if err != ErrReplay {
					t.Errorf("worker %d datagram %d: %v", w, i, err)
				}
			}
		})
	}
	wg.Wait()
	for i := range pkts {
		n := 0
		for w := range workers {
			n += accepted[w][i]
		}
		// Every worker walks the same order, so each datagram is in the
		// window when the first worker gets to it.
		if n != 1 {
			t.Errorf("datagram %d accepted %d times, want 1", i, n)
		}
	}
}

func TestOpenDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	v := mustVerifier(t, newTestKeyring(1), ToController)
	key := mustKey(t, 1)
	var hb Heartbeat
	seq := uint64(0)
	pkt := make([]byte, 0, MaxDatagramSize)
	open := func() {
		seq++
		var err error
		pkt, err = Seal(pkt[:0], Header{HostID: 1, Seq: seq}, &hb, key)
		if err != nil {
			t.Fatal(err)
		}
		_, body, err := v.Open(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if err := hb.UnmarshalBinary(body); err != nil {
			t.Fatal(err)
		}
	}
	open() // creates the host's state
	if allocs := testing.AllocsPerRun(200, open); allocs != 0 {
		t.Errorf("seal+open+decode allocates %v times per datagram, want 0", allocs)
	}
	bad := bytes.Clone(pkt)
	bad[len(bad)-1] ^= 1
	if allocs := testing.AllocsPerRun(200, func() { v.Open(bad) }); allocs != 0 {
		t.Errorf("rejecting a forged datagram allocates %v times, want 0", allocs)
	}
}

// TestReplayWindowModel compares the window with a set of every sequence
// number accepted so far.
func TestReplayWindowModel(t *testing.T) {
	tests := []struct {
		name string
		seqs []uint64
	}{
		{"ascending", []uint64{1, 2, 3, 4}},
		{"descending within the window", []uint64{64, 63, 2, 1, 64, 1}},
		{"edge of the window", []uint64{100, 37, 36, 101, 37, 38}},
		{"jumps", []uint64{5, 1 << 63, 5, 1<<63 - 1, ^uint64(0), ^uint64(0) - 63, ^uint64(0) - 64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkWindowModel(t, tt.seqs)
		})
	}
}

func checkWindowModel(t *testing.T, seqs []uint64) {
	t.Helper()
	var w replayWindow
	seen := map[uint64]bool{}
	var top uint64
	for i, s := range seqs {
		want := s != 0 && !seen[s] && (s > top || top-s < replayWindowSize)
		if got := w.check(s); got != want {
			t.Fatalf("step %d: check(%d) = %v, want %v", i, s, got, want)
		}
		if got := w.accept(s); got != want {
			t.Fatalf("step %d: accept(%d) = %v, want %v", i, s, got, want)
		}
		if want {
			seen[s] = true
			top = max(top, s)
		}
		if w.top != top {
			t.Fatalf("step %d: top = %d, want %d", i, w.top, top)
		}
	}
}

func ExampleVerifier() {
	key := make([]byte, KeySize) // in real life: 32 random bytes per host
	keys := KeyringFunc(func(hostID uint32) ([]byte, bool) { return key, hostID == 42 })
	v, err := NewVerifier(VerifierConfig{Keyring: keys, Accept: ToController})
	if err != nil {
		panic(err)
	}

	// Agent side: seal a heartbeat into a reused buffer.
	k, err := NewKey(key)
	if err != nil {
		panic(err)
	}
	hb := &Heartbeat{ViewVersion: 7, Health: HealthReady, EndpointCount: 3}
	buf := make([]byte, 0, MaxDatagramSize)
	pkt, err := Seal(buf, Header{HostID: 42, Seq: 1}, hb, &k)
	if err != nil {
		panic(err)
	}

	// Controller side: authenticate, then decode by type.
	hdr, body, err := v.Open(pkt)
	if err != nil {
		panic(err)
	}
	var got Heartbeat
	if hdr.Type == TypeHeartbeat {
		if err := got.UnmarshalBinary(body); err != nil {
			panic(err)
		}
	}
	fmt.Println(len(pkt), hdr.Type, hdr.HostID, got.ViewVersion, got.EndpointCount)
	_, _, err = v.Open(pkt)
	fmt.Println(errors.Is(err, ErrReplay))
	// Output:
	// 52 Heartbeat 42 7 3
	// true
}

// TestVerifierMemoryPerHost keeps the per-host state within its budget
// (BenchmarkVerifierMemory reports the figure for 1,000,000 hosts).
func TestVerifierMemoryPerHost(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates state for 100,000 hosts")
	}
	const hosts, budget = 100_000, 256
	key := rawKey(1)
	v := mustVerifier(t, KeyringFunc(func(uint32) ([]byte, bool) { return key, true }), ToController)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for id := range uint32(hosts) {
		if _, err := v.PreparedKey(id); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perHost := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / hosts
	t.Logf("%.0f bytes/host (%d-byte hostState)", perHost, unsafe.Sizeof(hostState{}))
	if perHost > budget {
		t.Errorf("Verifier holds %.0f bytes per host, budget %d", perHost, budget)
	}
	if v.Hosts() != hosts {
		t.Errorf("Hosts() = %d, want %d", v.Hosts(), hosts)
	}
}
