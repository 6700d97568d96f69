package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// ErrOpen is returned for a sealed value that does not open: another
// cluster key, another etcd key, or modified bytes.
var ErrOpen = errors.New("secrets: sealed value does not open (wrong cluster key, moved or corrupted)")

// sealVersion is the first byte of every sealed value.
const sealVersion = 1

// Sealer encrypts values stored in etcd under the cluster key. It is safe
// for concurrent use.
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns the Sealer of a cluster key.
func NewSealer(clusterKey []byte) (*Sealer, error) {
	if len(clusterKey) != KeySize {
		return nil, fmt.Errorf("secrets: cluster key has %d bytes, want %d", len(clusterKey), KeySize)
	}
	k, err := hkdf.Key(sha256.New, clusterKey, nil, "weft secrets v1", 32)
	if err != nil {
		return nil, fmt.Errorf("secrets: derive the sealing key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext to be stored under the etcd key name: a version
// byte, a random nonce and the ciphertext with its tag.
func (s *Sealer) Seal(name string, plaintext []byte) []byte {
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	_, _ = rand.Read(out[1:]) // never fails (crypto/rand)
	return s.aead.Seal(out, out[1:], plaintext, []byte(name))
}

// Open decrypts a value Seal made for the etcd key name.
func (s *Sealer) Open(name string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%s: %w", name, ErrOpen)
	}
	pt, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrOpen)
	}
	return pt, nil
}
