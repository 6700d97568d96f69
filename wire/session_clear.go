//go:build weftclearstream

package wire

import "crypto/cipher"

// ClearStream reports whether this binary was built with the
// weftclearstream tag. Such a binary is a benchmark baseline only: it
// measures what sealing the config stream costs (issue: the 100,000-host
// cold start sealed against in clear, interleaved runs of two binaries).
// Its frames travel with a zero tag in place of the AEAD's, so the framing
// and sizes are those of the sealed stream, but nothing is encrypted or
// checked: a frame changed on the wire is accepted. The handshake (the
// Hello's MAC, the session's key derivation) and the datagrams' MACs are
// unchanged. No flag turns this on; release builds (scripts/release.sh)
// never set the tag, and `weft version` names it.
const ClearStream = true

// newAEAD returns the clear "AEAD" of this benchmark build.
func newAEAD([]byte) (cipher.AEAD, error) { return clearAEAD{}, nil }

// clearAEAD copies the plaintext and appends SealOverhead zero bytes.
type clearAEAD struct{}

func (clearAEAD) NonceSize() int { return 12 }
func (clearAEAD) Overhead() int  { return SealOverhead }

func (clearAEAD) Seal(dst, _, plaintext, _ []byte) []byte {
	dst = append(dst, plaintext...)
	var tag [SealOverhead]byte
	return append(dst, tag[:]...)
}

func (clearAEAD) Open(dst, _, ciphertext, _ []byte) ([]byte, error) {
	if len(ciphertext) < SealOverhead {
		return nil, ErrAuth
	}
	return append(dst, ciphertext[:len(ciphertext)-SealOverhead]...), nil
}
