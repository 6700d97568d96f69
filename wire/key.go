package wire

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
)

// KeySize is the length of a per-host key: 32 uniformly random bytes.
const KeySize = 32

// Key is a per-host key prepared for HMAC-SHA256: it holds the SHA-256
// chaining values after the (key XOR ipad) and (key XOR opad) blocks, which
// is exactly the state hmac.New computes once and restores on every Reset.
// Keeping only these 64 bytes (instead of a hash.Hash, about 500 bytes and
// not safe for concurrent use) makes a Key an immutable value: one Key may be
// used by any number of goroutines, and a controller can keep one per host.
//
// The zero Key is not a valid key; build one with NewKey.
type Key struct {
	inner, outer [sha256.Size]byte
}

// NewKey prepares a raw per-host key of KeySize bytes.
func NewKey(secret []byte) (Key, error) {
	if len(secret) != KeySize {
		return Key{}, fmt.Errorf("wire: key is %d bytes, want %d", len(secret), KeySize)
	}
	return newKey((*[KeySize]byte)(secret)), nil
}

func newKey(secret *[KeySize]byte) Key {
	var k Key
	var pad [sha256.BlockSize]byte
	for i := range pad {
		var b byte
		if i < KeySize {
			b = secret[i]
		}
		pad[i] = b ^ 0x36
	}
	k.inner = midstate(&pad)
	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	k.outer = midstate(&pad)
	return k
}

// The marshaled form of a crypto/sha256 digest, which the standard library
// keeps stable across releases: magic "sha\x03", the 8 chaining words
// (big endian), the 64-byte block buffer, the byte count (big endian uint64).
// A midstate is the state after exactly one block, so the buffer is empty
// and the count is 64.
const (
	shaMagic      = "sha\x03"
	shaStateSize  = len(shaMagic) + sha256.Size + sha256.BlockSize + 8
	shaChainStart = len(shaMagic)
	shaChainEnd   = shaChainStart + sha256.Size
)

func midstate(block *[sha256.BlockSize]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(block[:])
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || len(st) != shaStateSize || string(st[:len(shaMagic)]) != shaMagic ||
		binary.BigEndian.Uint64(st[shaStateSize-8:]) != sha256.BlockSize {
		// The format is documented as stable; reaching this is a bug in
		// this package or a broken standard library, not a runtime condition.
		panic(fmt.Sprintf("wire: unexpected crypto/sha256 state encoding (len %d, err %v)", len(st), err))
	}
	var out [sha256.Size]byte
	copy(out[:], st[shaChainStart:shaChainEnd])
	return out
}

// macScratch is the mutable part of one HMAC computation: a SHA-256 digest
// and the buffer its state is restored from. Scratches are pooled so that
// computing a tag never allocates; a Key itself stays immutable.
type macScratch struct {
	h     hash.Hash
	u     encoding.BinaryUnmarshaler
	state [shaStateSize]byte
	inner [sha256.Size]byte
	outer [sha256.Size]byte
}

// macPool holds reusable scratch state only (no observable state), the same
// pattern the standard library uses for its encoders.
var macPool = sync.Pool{New: func() any {
	h := sha256.New()
	s := &macScratch{h: h, u: h.(encoding.BinaryUnmarshaler)}
	copy(s.state[:], shaMagic)
	binary.BigEndian.PutUint64(s.state[shaStateSize-8:], sha256.BlockSize)
	return s
}}

func (s *macScratch) restore(chain *[sha256.Size]byte) {
	copy(s.state[shaChainStart:shaChainEnd], chain[:])
	if err := s.u.UnmarshalBinary(s.state[:]); err != nil {
		panic(fmt.Sprintf("wire: restore sha256 state: %v", err))
	}
}

// sum computes HMAC-SHA256(key, msg) into out. The digest only ever sees
// slices of the (heap) scratch, so out may live on the caller's stack.
func (k *Key) sum(out *[sha256.Size]byte, msg []byte) {
	s := macPool.Get().(*macScratch)
	s.restore(&k.inner)
	s.h.Write(msg)
	s.h.Sum(s.inner[:0])
	s.restore(&k.outer)
	s.h.Write(s.inner[:])
	s.h.Sum(s.outer[:0])
	*out = s.outer
	macPool.Put(s)
}

// verifyTag reports, in constant time, whether tag is the truncated
// HMAC-SHA256 of msg.
func (k *Key) verifyTag(msg, tag []byte) bool {
	var full [sha256.Size]byte
	k.sum(&full, msg)
	return subtle.ConstantTimeCompare(full[:TagLen], tag) == 1
}
