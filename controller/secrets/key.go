package secrets

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// KeySize is the length of the cluster key and of host keys.
const KeySize = 32

// ParseKey decodes a hex key of KeySize bytes (a cluster or host key as
// written in key files); surrounding white space is ignored.
func ParseKey(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("key: not hex: %w", err)
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("key: %d bytes, want %d (64 hex digits)", len(b), KeySize)
	}
	return b, nil
}

// ReadKeyFile reads a hex key file.
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes a hex key file readable only by its owner; it fails
// if the file exists.
func WriteKeyFile(path string, key []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	return nil
}

// NewKey returns KeySize random bytes.
func NewKey() []byte {
	k := make([]byte, KeySize)
	_, _ = rand.Read(k) // never fails (crypto/rand)
	return k
}

// LoadOrCreateKeyFile reads the cluster key at path, creating a random one
// (mode 0600) if the file does not exist; created says which.
func LoadOrCreateKeyFile(path string) (key []byte, created bool, err error) {
	key, err = ReadKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	key = NewKey()
	if err := WriteKeyFile(path, key); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process was first
			key, err = ReadKeyFile(path)
			return key, false, err
		}
		return nil, false, err
	}
	return key, true, nil
}
