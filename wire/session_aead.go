//go:build !weftclearstream

package wire

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
)

// ClearStream reports whether this binary was built with the
// weftclearstream tag, which leaves the config stream's frames unsealed
// (see session_clear.go). It is false in every build but that benchmark
// baseline.
const ClearStream = false

// newAEAD returns AES-256-GCM with key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("wire: session cipher: %w", err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("wire: session cipher: %w", err)
	}
	return g, nil
}
