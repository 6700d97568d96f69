package wire

import "errors"

// Decode and verification errors. The UDP path returns these sentinels
// unwrapped, so that rejecting a datagram never allocates and a server can
// count each kind in a metric with errors.Is (or a plain ==). The TCP path
// wraps them with context.
var (
	// ErrShort: the input ends before the structure it must hold.
	ErrShort = errors.New("wire: short input")
	// ErrBadMagic: a datagram does not start with Magic.
	ErrBadMagic = errors.New("wire: bad magic")
	// ErrVersion: a datagram carries a protocol version this code does not speak.
	ErrVersion = errors.New("wire: unsupported version")
	// ErrUnknownType: a datagram or frame type this code does not know.
	ErrUnknownType = errors.New("wire: unknown message type")
	// ErrDirection: a known datagram type that this receiver must not get
	// (a host→controller type sent to an agent or the reverse: a
	// misdirected or reflected datagram).
	ErrDirection = errors.New("wire: message type not accepted in this direction")
	// ErrAuth: the authentication tag (or a Hello MAC) does not match.
	ErrAuth = errors.New("wire: authentication failed")
	// ErrReplay: the sequence number was already seen, is 0, or is older
	// than the replay window.
	ErrReplay = errors.New("wire: replayed or stale sequence number")
	// ErrUnknownHost: the keyring has no (valid) key for the host ID.
	ErrUnknownHost = errors.New("wire: unknown host")
	// ErrTooLarge: a datagram, batch or frame exceeds its size limit.
	ErrTooLarge = errors.New("wire: message too large")
	// ErrMalformed: the input has the right length but an invalid value
	// (a VNI above 24 bits, an unknown address family, reserved bits set,
	// trailing bytes, invalid JSON...).
	ErrMalformed = errors.New("wire: malformed message")
	// ErrStale: a Hello's timestamp is outside the allowed clock skew.
	ErrStale = errors.New("wire: stale timestamp")
)
