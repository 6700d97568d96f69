package wire

import (
	"errors"
	"sync"
)

// Keyring returns the raw key (KeySize bytes) of a host. It must be safe
// for concurrent use; it is called once per datagram, so it should be a
// lock-free or read-locked map lookup. A key of the wrong size counts as no
// key (ErrUnknownHost).
type Keyring interface {
	Key(hostID uint32) ([]byte, bool)
}

// KeyringFunc adapts a function to a Keyring.
type KeyringFunc func(hostID uint32) ([]byte, bool)

// Key implements Keyring.
func (f KeyringFunc) Key(hostID uint32) ([]byte, bool) { return f(hostID) }

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Keyring supplies the per-host keys. Required.
	Keyring Keyring
	// Accept is the direction of the datagrams this receiver takes:
	// ToController on the controller, ToAgent on an agent. Datagrams of
	// the other direction fail with ErrDirection, so that a datagram
	// reflected back to its sender is never accepted. Required.
	Accept Direction
}

// Validate checks the configuration.
func (c *VerifierConfig) Validate() error {
	if c.Keyring == nil {
		return errors.New("wire: verifier config: Keyring is required")
	}
	if c.Accept != ToController && c.Accept != ToAgent {
		return errors.New("wire: verifier config: Accept must be ToController or ToAgent")
	}
	return nil
}

// verifierShards spreads hosts over independently locked maps; host IDs are
// dense, so the low bits spread them evenly.
const verifierShards = 256

// Verifier authenticates received datagrams and rejects replays. For each
// host it keeps a 112-byte state: the 64-entry sliding replay window (16
// bytes), the host's key prepared for HMAC (64) and the raw key (32), to
// notice a key change. The window belongs to the key: a new key (a new
// session) starts a new window. With the map around it that is 170 to 270 bytes per
// host, depending on where the maps are in their growth
// (BenchmarkVerifierMemory: 168 at 100,000 hosts, 268 at 1,000,000); no
// pointers, so the garbage collector does not scan it. State exists only
// for hosts the keyring knows, so forged traffic cannot grow it beyond the
// keyring. Safe for concurrent use; Open does not allocate once a host is
// known.
//
// On a controller one Verifier serves every host. A process that simulates
// many agents should share one Verifier (with a keyring covering all its
// hosts) rather than create one per agent.
type Verifier struct {
	keys   Keyring
	accept Direction
	shards [verifierShards]verifierShard
}

type verifierShard struct {
	mu sync.Mutex
	m  map[uint32]hostState // made on first store
	_  [48]byte             // mutex (8) + map (8) + 48: a shard per cache line
}

// hostState is what a Verifier keeps per host. It holds no pointers, so the
// garbage collector never scans the maps' contents.
type hostState struct {
	win replayWindow
	raw [KeySize]byte // the key prepared in key, to notice a key change
	key Key
}

// NewVerifier returns a Verifier for the configuration.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Verifier{keys: cfg.Keyring, accept: cfg.Accept}, nil
}

// store saves a host's state; the caller holds sh.mu.
func (sh *verifierShard) store(hostID uint32, st hostState) {
	if sh.m == nil {
		sh.m = make(map[uint32]hostState)
	}
	sh.m[hostID] = st
}

func (v *Verifier) shard(hostID uint32) *verifierShard {
	return &v.shards[hostID%verifierShards]
}

// lookup returns the host's state with a key prepared from the keyring's
// current key. A key seen for the first time (new host or new key) is
// prepared and stored at once, with a fresh replay window: datagrams
// sealed with the old key fail authentication, so the window of the old
// key has nothing left to guard, and the sender of the new one (a new
// session) may count from anywhere. A flood of forged datagrams for a
// known host costs one HMAC each, not a key preparation too; state is only
// ever created for hosts the keyring knows.
func (v *Verifier) lookup(hostID uint32) (hostState, error) {
	raw, ok := v.keys.Key(hostID)
	if !ok || len(raw) != KeySize {
		return hostState{}, ErrUnknownHost
	}
	sh := v.shard(hostID)
	sh.mu.Lock()
	st := sh.m[hostID]
	sh.mu.Unlock()
	if st.raw == [KeySize]byte(raw) && st.key != (Key{}) {
		return st, nil
	}
	st = hostState{raw: [KeySize]byte(raw)}
	st.key = newKey(&st.raw)
	sh.mu.Lock()
	if cur, ok := sh.m[hostID]; !ok || cur.raw != st.raw {
		sh.store(hostID, st)
	} else {
		st = cur // another goroutine stored this key first: keep its window
	}
	sh.mu.Unlock()
	return st, nil
}

// Open authenticates a datagram and checks it against the host's replay
// window. It returns the header and the body, a sub-slice of pkt, to be
// decoded with the UnmarshalBinary method of the body type hdr.Type names.
// Errors are the unwrapped sentinels: ErrShort, ErrTooLarge, ErrBadMagic,
// ErrVersion, ErrUnknownType, ErrDirection, ErrUnknownHost, ErrAuth,
// ErrReplay. The window only moves for authentic datagrams.
func (v *Verifier) Open(pkt []byte) (Header, []byte, error) {
	h, err := ParseHeader(pkt)
	if err != nil {
		return Header{}, nil, err
	}
	if h.Type.Direction() != v.accept {
		return Header{}, nil, ErrDirection
	}
	st, err := v.lookup(h.HostID)
	if err != nil {
		return Header{}, nil, err
	}
	// Cheap early rejection of a replay, before spending an HMAC on it.
	if !st.win.check(h.Seq) {
		return Header{}, nil, ErrReplay
	}
	n := len(pkt) - TagLen
	if !st.key.verifyTag(pkt[:n], pkt[n:]) {
		return Header{}, nil, ErrAuth
	}
	// Commit against the current window: another goroutine may have
	// accepted this or a later sequence number meanwhile (or the host was
	// forgotten: then the state is stored again; or its key changed: then
	// this datagram is of an older key, and refused).
	sh := v.shard(h.HostID)
	sh.mu.Lock()
	cur, ok := sh.m[h.HostID]
	if !ok {
		cur = hostState{raw: st.raw, key: st.key}
	}
	stale := cur.raw != st.raw
	accepted := !stale && cur.win.accept(h.Seq)
	if accepted {
		sh.store(h.HostID, cur)
	}
	sh.mu.Unlock()
	if stale {
		return Header{}, nil, ErrAuth
	}
	if !accepted {
		return Header{}, nil, ErrReplay
	}
	return h, pkt[HeaderLen:n], nil
}

// PreparedKey returns the host's key prepared for Seal, from the same
// cache Open uses, so a controller sealing replies to many hosts prepares
// each key once. It fails with ErrUnknownHost if the keyring has no key.
func (v *Verifier) PreparedKey(hostID uint32) (Key, error) {
	st, err := v.lookup(hostID)
	if err != nil {
		return Key{}, err
	}
	return st.key, nil
}

// Forget drops everything known about a host (call it when the host is
// deleted). Its replay window starts over, so only forget hosts whose key
// is gone or replaced: old datagrams would otherwise be accepted again.
func (v *Verifier) Forget(hostID uint32) {
	sh := v.shard(hostID)
	sh.mu.Lock()
	delete(sh.m, hostID)
	sh.mu.Unlock()
}

// Hosts returns the number of hosts the Verifier holds state for.
func (v *Verifier) Hosts() int {
	n := 0
	for i := range v.shards {
		sh := &v.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// replayWindow is a sliding anti-replay window over 64 sequence numbers
// (RFC 4303 section 3.4.3, as in IPsec and WireGuard): top is the highest
// sequence number accepted, bit i of seen is set when top-i was accepted.
// The zero value has accepted nothing; sequence number 0 is never valid.
type replayWindow struct {
	top  uint64
	seen uint64
}

const replayWindowSize = 64

// check reports whether seq would be accepted, without recording it.
func (w *replayWindow) check(seq uint64) bool {
	switch {
	case seq == 0:
		return false
	case seq > w.top:
		return true
	case w.top-seq >= replayWindowSize:
		return false // older than the window
	default:
		return w.seen&(1<<(w.top-seq)) == 0
	}
}

// accept records seq if check allows it and reports whether it did. A seq
// beyond top slides the window forward, however far.
func (w *replayWindow) accept(seq uint64) bool {
	if !w.check(seq) {
		return false
	}
	if seq > w.top {
		if d := seq - w.top; d < replayWindowSize {
			w.seen = w.seen<<d | 1
		} else {
			w.seen = 1
		}
		w.top = seq
		return true
	}
	w.seen |= 1 << (w.top - seq)
	return true
}
