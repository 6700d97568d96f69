package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// cmpOpts compares netip.Addr by value and treats nil and empty slices as
// equal (a decoder reuses slices, JSON turns empty into absent).
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmpopts.EquateEmpty(),
}

// rawKey returns a deterministic test key for a host.
func rawKey(hostID uint32) []byte {
	var seed [4]byte
	binary.BigEndian.PutUint32(seed[:], hostID)
	k := sha256.Sum256(append([]byte("weft test key "), seed[:]...))
	return k[:]
}

func mustKey(t testing.TB, hostID uint32) *Key {
	t.Helper()
	k, err := NewKey(rawKey(hostID))
	if err != nil {
		t.Fatal(err)
	}
	return &k
}

// testKeyring knows a fixed set of hosts and allows changing keys.
type testKeyring struct {
	mu   sync.RWMutex
	keys map[uint32][]byte
}

func newTestKeyring(hostIDs ...uint32) *testKeyring {
	kr := &testKeyring{keys: make(map[uint32][]byte)}
	for _, id := range hostIDs {
		kr.keys[id] = rawKey(id)
	}
	return kr
}

func (kr *testKeyring) Key(hostID uint32) ([]byte, bool) {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	k, ok := kr.keys[hostID]
	return k, ok
}

func (kr *testKeyring) set(hostID uint32, key []byte) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if key == nil {
		delete(kr.keys, hostID)
		return
	}
	kr.keys[hostID] = key
}

func mustVerifier(t testing.TB, kr Keyring, accept Direction) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierConfig{Keyring: kr, Accept: accept})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sampleBodies returns one filled-in value of every body type.
func sampleBodies() map[string]Body {
	loc := Location{
		HostIP:   netip.MustParseAddr("192.0.2.11"),
		MAC:      MACAddr{0x02, 0x57, 0x46, 0x00, 0x00, 0x01},
		Identity: 4242,
	}
	return map[string]Body{
		"heartbeat":     &Heartbeat{ViewVersion: 1 << 40, Health: HealthReady | HealthHeadless, EndpointCount: 312, UptimeSeconds: 86400},
		"heartbeat ack": &HeartbeatAck{Epoch: 7, ReplicasVersion: 3, HeartbeatSeq: 1<<62 + 5},
		"lookup request v4": &LookupRequest{Queries: []LookupQuery{
			{RequestID: 1, VNI: 100, IP: netip.MustParseAddr("10.0.1.10")},
		}},
		"lookup request batch": &LookupRequest{Queries: []LookupQuery{
			{RequestID: 1, VNI: MaxVNI, IP: netip.MustParseAddr("10.0.1.10")},
			{RequestID: 2, VNI: 0, IP: netip.MustParseAddr("2001:db8::1")},
			{RequestID: 3, VNI: 7, IP: netip.MustParseAddr("::ffff:10.0.0.1")},
		}},
		"lookup reply found": &LookupReply{Answers: []LookupAnswer{
			{RequestID: 1, VNI: 100, IP: netip.MustParseAddr("10.0.1.10"), Found: true, Location: loc, Epoch: 9, TTL: 300},
		}},
		"lookup reply batch": &LookupReply{Answers: []LookupAnswer{
			{RequestID: 1, VNI: 100, IP: netip.MustParseAddr("10.0.1.10"), Found: true, Location: loc, Epoch: 9, TTL: 300},
			{RequestID: 2, VNI: 100, IP: netip.MustParseAddr("2001:db8::2"), Epoch: 1, TTL: 5},
			{RequestID: 3, VNI: 100, IP: netip.MustParseAddr("2001:db8::3"), Found: true,
				Location: Location{HostIP: netip.MustParseAddr("2001:db8:ffff::11")}, Epoch: 1, TTL: 5},
		}},
		"invalidate moved": &Invalidate{VNI: 100, IP: netip.MustParseAddr("10.0.1.10"), Epoch: 10, HasLocation: true, Location: loc},
		"invalidate gone":  &Invalidate{VNI: 100, IP: netip.MustParseAddr("2001:db8::1"), Epoch: 11},
		"flow report": &FlowReport{IntervalMs: 10000, HeartbeatsSent: 1 << 31, Sampling: 8,
			VPCs: []VPCCounters{{VNI: 100, SentPackets: 12, SentBytes: 1 << 40, ReceivedPackets: 3, ConnsOut: 1, Drops: [NumDropCounters]uint64{4, 0, 0, 0, 2}}},
			Flows: []FlowEntry{
				{VNI: 100, Src: netip.MustParseAddr("10.0.1.10"), Dst: netip.MustParseAddr("10.0.2.11"), Proto: 6, SrcPort: 40000, DstPort: 443,
					Bytes: 1 << 33, Packets: 5000, DurationMs: 9000, IdleMs: 3},
				{VNI: MaxVNI, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), Proto: 1, DstPort: 8 << 8,
					Bytes: 84, Packets: 1, Dropped: 1, Reason: 1},
			}},
	}
}

// newBody returns an empty body of a datagram type.
func newBody(t Type) Body {
	switch t {
	case TypeHeartbeat:
		return &Heartbeat{}
	case TypeHeartbeatAck:
		return &HeartbeatAck{}
	case TypeLookupRequest:
		return &LookupRequest{}
	case TypeLookupReply:
		return &LookupReply{}
	case TypeInvalidate:
		return &Invalidate{}
	case TypeFlowReport:
		return &FlowReport{}
	}
	return nil
}
