package wire

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"time"
)

// Hello nonce limits.
const (
	MinNonceLen = 16
	MaxNonceLen = 64
	// helloLabel separates Hello MACs from datagram tags made with the
	// same host key: a datagram's MAC input starts with Magic, never with
	// this label.
	helloLabel = "weft-hello-v2\x00"
)

// NewNonce returns MinNonceLen random bytes for Hello.Nonce.
func NewNonce() ([]byte, error) {
	b := make([]byte, MinNonceLen)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("wire: read random nonce: %w", err)
	}
	return b, nil
}

// SignHello sets h.MAC to the HMAC-SHA256, with the host key, of every
// other field of h (see the package documentation for the exact input).
// The caller sets Nonce (NewNonce) and Time (Unix seconds) first.
func SignHello(h *Hello, key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("wire: sign hello for host %q: key is %d bytes, want %d", h.Host, len(key), KeySize)
	}
	if err := checkNonce(h.Nonce); err != nil {
		return fmt.Errorf("wire: sign hello for host %q: %w", h.Host, err)
	}
	h.MAC = helloMAC(h, key)
	return nil
}

// VerifyHello checks h.MAC with the host key, then that h.Time is within
// skew of now. It fails with ErrAuth (bad MAC, wrong key size), ErrStale
// (authentic but too old or too far in the future) or ErrMalformed (bad
// nonce). A controller that must also reject a Hello replayed within the
// skew remembers the nonces it saw for that long.
func VerifyHello(h *Hello, key []byte, now time.Time, skew time.Duration) error {
	if err := checkNonce(h.Nonce); err != nil {
		return fmt.Errorf("wire: verify hello from host %q: %w", h.Host, err)
	}
	if len(key) != KeySize || len(h.MAC) != sha256.Size || !hmac.Equal(h.MAC, helloMAC(h, key)) {
		return fmt.Errorf("wire: verify hello from host %q (id %d): %w", h.Host, h.HostID, ErrAuth)
	}
	sent := time.Unix(h.Time, 0)
	if d := now.Sub(sent); d > skew || d < -skew {
		return fmt.Errorf("wire: verify hello from host %q (id %d): sent at %v, %v from now %v, allowed skew %v: %w",
			h.Host, h.HostID, sent.UTC(), d, now.UTC(), skew, ErrStale)
	}
	return nil
}

func checkNonce(n []byte) error {
	if len(n) < MinNonceLen || len(n) > MaxNonceLen {
		return fmt.Errorf("nonce of %d bytes, want %d to %d: %w", len(n), MinNonceLen, MaxNonceLen, ErrMalformed)
	}
	return nil
}

// helloMAC computes the Hello MAC: every variable-length field is prefixed
// with its 4-byte length, so no two different Hellos have the same input.
func helloMAC(h *Hello, key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(helloLabel))
	writeBytes(m, []byte(h.Host))
	writeUint(m, uint64(h.HostID), 4)
	writeBytes(m, []byte(h.AgentVersion))
	writeUint(m, h.ViewVersion, 8)
	writeBytes(m, h.ViewHash)
	writeBytes(m, h.Nonce)
	writeUint(m, uint64(h.Time), 8)
	return m.Sum(nil)
}

func writeBytes(m hash.Hash, b []byte) {
	writeUint(m, uint64(len(b)), 4)
	m.Write(b)
}

func writeUint(m hash.Hash, v uint64, size int) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	m.Write(b[8-size:])
}
