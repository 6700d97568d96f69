package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

// A token is "weft_" + its ID (8 bytes, hex) + "_" + its secret (32 bytes,
// unpadded base64url). Only the secret's SHA-256 is stored.
const (
	tokenPrefix = "weft_"
	idBytes     = 8
	secretBytes = 32
	idLen       = 2 * idBytes
	secretLen   = (secretBytes*8 + 5) / 6 // 43
	tokenLen    = len(tokenPrefix) + idLen + 1 + secretLen
)

// ErrBadToken is returned by ParseToken for a string that is not a token.
var ErrBadToken = errors.New("auth: not a weft token (want weft_<16 hex>_<43 base64url>)")

var b64 = base64.RawURLEncoding

// ParseToken splits a token into its ID and secret.
func ParseToken(s string) (id string, secret []byte, err error) {
	if len(s) != tokenLen || !strings.HasPrefix(s, tokenPrefix) || s[len(tokenPrefix)+idLen] != '_' {
		return "", nil, ErrBadToken
	}
	id = s[len(tokenPrefix) : len(tokenPrefix)+idLen]
	if raw, err := hex.DecodeString(id); err != nil || hex.EncodeToString(raw) != id { // lower case only
		return "", nil, ErrBadToken
	}
	secret, err = b64.Strict().DecodeString(s[len(tokenPrefix)+idLen+1:])
	if err != nil || len(secret) != secretBytes {
		return "", nil, ErrBadToken
	}
	return id, secret, nil
}

// newToken returns a fresh token, its ID and the hash to store.
func newToken() (tok, id string, hash []byte) {
	var raw [idBytes + secretBytes]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
	id = hex.EncodeToString(raw[:idBytes])
	h := sha256.Sum256(raw[idBytes:])
	return tokenPrefix + id + "_" + b64.EncodeToString(raw[idBytes:]), id, h[:]
}
