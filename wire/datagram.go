package wire

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
)

// UDP datagram constants. See the package documentation for the layout.
const (
	// Magic opens every datagram: "WF".
	Magic uint16 = 0x5746
	// Version is the datagram protocol version this package speaks.
	Version = 1
	// HeaderLen is the size of the common datagram header.
	HeaderLen = 16
	// TagLen is the size of the truncated HMAC-SHA256 tag that ends every
	// datagram.
	TagLen = 16
	// MinDatagramSize is the size of a datagram with an empty body.
	MinDatagramSize = HeaderLen + TagLen
	// MaxDatagramSize bounds a datagram (header, body and tag) so that it
	// never fragments on a 1500-byte MTU path, even inside a tunnel.
	// Receivers should read into buffers of at least MaxDatagramSize+1
	// bytes so that an oversized datagram is seen as such (ErrTooLarge).
	MaxDatagramSize = 1400
)

// Type is a datagram type.
type Type uint8

// Datagram types.
const (
	TypeHeartbeat     Type = 1 // host → controller
	TypeHeartbeatAck  Type = 2 // controller → host
	TypeLookupRequest Type = 3 // host → controller
	TypeLookupReply   Type = 4 // controller → host
	TypeInvalidate    Type = 5 // controller → host
	TypeFlowReport    Type = 6 // host → controller
)

var typeNames = [...]string{
	TypeHeartbeat:     "Heartbeat",
	TypeHeartbeatAck:  "HeartbeatAck",
	TypeLookupRequest: "LookupRequest",
	TypeLookupReply:   "LookupReply",
	TypeInvalidate:    "Invalidate",
	TypeFlowReport:    "FlowReport",
}

func (t Type) String() string {
	if t.Known() {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Known reports whether t is a datagram type this package decodes.
func (t Type) Known() bool { return t >= TypeHeartbeat && t <= TypeFlowReport }

// Direction says which way a datagram type travels.
type Direction uint8

// Directions.
const (
	ToController Direction = 1 // sent by an agent
	ToAgent      Direction = 2 // sent by the controller
)

func (d Direction) String() string {
	switch d {
	case ToController:
		return "to-controller"
	case ToAgent:
		return "to-agent"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// Direction returns the direction a known type travels in, or 0.
func (t Type) Direction() Direction {
	switch t {
	case TypeHeartbeat, TypeLookupRequest, TypeFlowReport:
		return ToController
	case TypeHeartbeatAck, TypeLookupReply, TypeInvalidate:
		return ToAgent
	}
	return 0
}

// Header is the common datagram header (without magic and version, which
// are constants).
type Header struct {
	Type Type
	// HostID is the host the datagram is from (ToController) or for
	// (ToAgent); it selects the key.
	HostID uint32
	// Seq is strictly increasing per host per sender; 0 is never valid.
	Seq uint64
}

// Body is a datagram body: Heartbeat, HeartbeatAck, LookupRequest,
// LookupReply, Invalidate or FlowReport (all as pointers). AppendBinary appends the
// body's encoding to dst; UnmarshalBinary decodes a body of the exact length
// into the receiver, reusing its slices, and returns unwrapped sentinel
// errors.
type Body interface {
	Type() Type
	AppendBinary(dst []byte) ([]byte, error)
	UnmarshalBinary(b []byte) error
}

// Compile-time checks that every body type is a Body.
var (
	_ Body = (*Heartbeat)(nil)
	_ Body = (*HeartbeatAck)(nil)
	_ Body = (*LookupRequest)(nil)
	_ Body = (*LookupReply)(nil)
	_ Body = (*Invalidate)(nil)
	_ Body = (*FlowReport)(nil)
)

// AppendHeader appends the 16-byte datagram header to dst.
func AppendHeader(dst []byte, h Header) []byte {
	dst = binary.BigEndian.AppendUint16(dst, Magic)
	dst = append(dst, Version, byte(h.Type))
	dst = binary.BigEndian.AppendUint32(dst, h.HostID)
	return binary.BigEndian.AppendUint64(dst, h.Seq)
}

// ParseHeader checks the parts of a datagram that need no key — its size,
// magic, version and type — and returns its header. It does not
// authenticate anything: use a Verifier (or OpenWithKey) for that.
func ParseHeader(pkt []byte) (Header, error) {
	if len(pkt) < MinDatagramSize {
		return Header{}, ErrShort
	}
	if len(pkt) > MaxDatagramSize {
		return Header{}, ErrTooLarge
	}
	if binary.BigEndian.Uint16(pkt) != Magic {
		return Header{}, ErrBadMagic
	}
	if pkt[2] != Version {
		return Header{}, ErrVersion
	}
	t := Type(pkt[3])
	if !t.Known() {
		return Header{}, ErrUnknownType
	}
	return Header{
		Type:   t,
		HostID: binary.BigEndian.Uint32(pkt[4:]),
		Seq:    binary.BigEndian.Uint64(pkt[8:]),
	}, nil
}

// Seal appends a complete authenticated datagram to dst: the header (with
// hdr.Type replaced by body.Type()), the body and the tag computed with key.
// On error dst is returned unchanged in length. Seal does not allocate when
// dst has room for the datagram.
//
// Passing a pointer to a local variable as body makes it escape (an
// interface call); hot loops keep their bodies in long-lived structs.
func Seal(dst []byte, hdr Header, body Body, key *Key) ([]byte, error) {
	if hdr.Seq == 0 {
		return dst, fmt.Errorf("wire: seal %v for host %d: sequence 0 is reserved: %w", body.Type(), hdr.HostID, ErrMalformed)
	}
	start := len(dst)
	hdr.Type = body.Type()
	dst = AppendHeader(dst, hdr)
	dst, err := body.AppendBinary(dst)
	if err != nil {
		return dst[:start], fmt.Errorf("wire: seal %v for host %d: %w", hdr.Type, hdr.HostID, err)
	}
	if len(dst)-start+TagLen > MaxDatagramSize {
		return dst[:start], fmt.Errorf("wire: seal %v for host %d: %d bytes: %w", hdr.Type, hdr.HostID, len(dst)-start+TagLen, ErrTooLarge)
	}
	return appendTag(dst, start, key), nil
}

// appendTag appends the tag over dst[start:].
func appendTag(dst []byte, start int, key *Key) []byte {
	var sum [32]byte
	key.sum(&sum, dst[start:])
	return append(dst, sum[:TagLen]...)
}

// OpenWithKey checks a datagram's header and tag with one key and returns
// the header and the body (a sub-slice of pkt). It does not check for
// replays: receivers use a Verifier; OpenWithKey is for tools and tests.
func OpenWithKey(pkt []byte, key *Key) (Header, []byte, error) {
	h, err := ParseHeader(pkt)
	if err != nil {
		return Header{}, nil, err
	}
	n := len(pkt) - TagLen
	if !key.verifyTag(pkt[:n], pkt[n:]) {
		return Header{}, nil, ErrAuth
	}
	return h, pkt[HeaderLen:n], nil
}

// Sequence hands out the sequence numbers of one sender. It starts at the
// wall clock in nanoseconds, so a restarted sender continues above the
// numbers it used before (as long as it sent fewer than one datagram per
// nanosecond and its clock did not step back), and adds one per datagram.
// One Sequence per sender is enough: numbers increasing over all hosts
// increase per host. Safe for concurrent use.
type Sequence struct {
	n atomic.Uint64
}

// NewSequence returns a Sequence whose first number is above now in Unix
// nanoseconds (or 1 for times before 1970).
func NewSequence(now time.Time) *Sequence {
	s := &Sequence{}
	if ns := now.UnixNano(); ns > 0 {
		s.n.Store(uint64(ns))
	}
	return s
}

// Next returns the next sequence number; it is never 0.
func (s *Sequence) Next() uint64 {
	for {
		if n := s.n.Add(1); n != 0 {
			return n
		}
	}
}
