package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Config stream framing constants.
const (
	// FrameHeaderLen is the size of a frame header: a 4-byte big-endian
	// length (of the type byte plus the body), then the type byte.
	FrameHeaderLen = 5
	// DefaultMaxFrame bounds a frame (type byte plus body) when no other
	// limit is given.
	DefaultMaxFrame = 16 << 20
	// frameChunk is the first step in which a frame body buffer grows as
	// its bytes arrive, so memory follows the bytes received rather than
	// the length a peer announces.
	frameChunk = 64 << 10
	// frameRetain is the largest body buffer a FrameReader keeps between
	// frames; a larger one (a snapshot) is dropped after use so that
	// thousands of idle connections do not pin megabytes each.
	frameRetain = 1 << 20
)

// FrameType is the type of a config stream frame.
type FrameType uint8

// Frame types.
const (
	FrameHello      FrameType = 1 // agent → controller
	FrameWelcome    FrameType = 2 // controller → agent
	FrameDelta      FrameType = 3 // controller → agent
	FrameAck        FrameType = 4 // agent → controller
	FrameNack       FrameType = 5 // agent → controller
	FrameInvalidate FrameType = 6 // controller → agent
)

var frameNames = [...]string{
	FrameHello:      "Hello",
	FrameWelcome:    "Welcome",
	FrameDelta:      "Delta",
	FrameAck:        "Ack",
	FrameNack:       "Nack",
	FrameInvalidate: "Invalidate",
}

func (t FrameType) String() string {
	if t >= FrameHello && t <= FrameInvalidate {
		return frameNames[t]
	}
	return fmt.Sprintf("FrameType(%d)", uint8(t))
}

// AppendFrame appends a frame to dst. It fails with ErrTooLarge if the
// frame (type byte plus body) would exceed maxFrame (DefaultMaxFrame if
// maxFrame <= 0).
func AppendFrame(dst []byte, t FrameType, body []byte, maxFrame int) ([]byte, error) {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	if 1+len(body) > maxFrame {
		return dst, fmt.Errorf("wire: %v frame of %d bytes exceeds %d: %w", t, 1+len(body), maxFrame, ErrTooLarge)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+len(body)))
	dst = append(dst, byte(t))
	return append(dst, body...), nil
}

// FrameReader reads frames from a stream. It never allocates more than
// about twice the bytes actually received, whatever length a frame
// announces. Not safe for concurrent use.
type FrameReader struct {
	r   io.Reader
	max int
	hdr [FrameHeaderLen]byte
	buf []byte
}

// NewFrameReader reads frames of at most maxFrame bytes (type byte plus
// body; DefaultMaxFrame if maxFrame <= 0) from r, which should be
// buffered.
func NewFrameReader(r io.Reader, maxFrame int) *FrameReader {
	fr := &FrameReader{r: r}
	fr.SetMaxFrame(maxFrame)
	return fr
}

// SetMaxFrame changes the frame size limit, e.g. to raise it once the peer
// is authenticated.
func (fr *FrameReader) SetMaxFrame(maxFrame int) {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	fr.max = maxFrame
}

// Next reads the next frame. The body is valid until the next call. At a
// clean end of stream (no byte of a new frame) it returns io.EOF; a frame
// cut short fails with ErrShort, a length above the limit with ErrTooLarge
// (before reading or allocating the body), a zero length with ErrMalformed.
// Frame types are not interpreted here.
func (fr *FrameReader) Next() (FrameType, []byte, error) {
	if cap(fr.buf) > frameRetain {
		fr.buf = nil
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		switch {
		case errors.Is(err, io.EOF):
			return 0, nil, io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			return 0, nil, fmt.Errorf("wire: read frame header: %w", ErrShort)
		}
		return 0, nil, fmt.Errorf("wire: read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(fr.hdr[:4])
	t := FrameType(fr.hdr[4])
	switch {
	case n == 0:
		return 0, nil, fmt.Errorf("wire: frame length 0: %w", ErrMalformed)
	case uint64(n) > uint64(fr.max):
		return 0, nil, fmt.Errorf("wire: %v frame of %d bytes exceeds %d: %w", t, n, fr.max, ErrTooLarge)
	}
	body, err := fr.readBody(int(n) - 1)
	if err != nil {
		return 0, nil, fmt.Errorf("wire: read %v frame body of %d bytes: %w", t, n-1, err)
	}
	return t, body, nil
}

// readBody reads exactly need bytes, growing the buffer only as bytes
// arrive.
func (fr *FrameReader) readBody(need int) ([]byte, error) {
	buf := fr.buf[:0]
	for len(buf) < need {
		if len(buf) == cap(buf) {
			c := min(need, max(2*cap(buf), frameChunk))
			nb := make([]byte, len(buf), c)
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(fr.r, buf[len(buf):min(need, cap(buf))])
		buf = buf[:len(buf)+m]
		if err != nil {
			fr.buf = buf
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, ErrShort
			}
			return nil, err
		}
	}
	fr.buf = buf
	return buf, nil
}
