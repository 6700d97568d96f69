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
	// MaxHandshakeFrame bounds the frames each end reads in clear, before
	// the other is authenticated: the Hello, the Accept, a refusing
	// Welcome.
	MaxHandshakeFrame = 4 << 10
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
	FrameAccept     FrameType = 7 // controller → agent, in clear
)

var frameNames = [...]string{
	FrameHello:      "Hello",
	FrameWelcome:    "Welcome",
	FrameDelta:      "Delta",
	FrameAck:        "Ack",
	FrameNack:       "Nack",
	FrameInvalidate: "Invalidate",
	FrameAccept:     "Accept",
}

func (t FrameType) String() string {
	if t >= FrameHello && t <= FrameAccept {
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
//
// It does its own buffering, sized for a connection that is idle most of
// the time: a small fixed buffer (frameSmall bytes) receives the next
// header, and with it a small frame (an Ack, a Welcome) whole, so that one
// read gets it; a larger body is read into a buffer taken from a pool
// shared by all readers and writers and given back as soon as the frame is
// done with. Between frames a reader holds no body buffer, so r need not
// be (and should not be) buffered.
type FrameReader struct {
	r   io.Reader
	max int
	// small holds bytes read ahead of the frames returned: unread bytes
	// are small[sr:sw].
	small  [frameSmall]byte
	sr, sw int
	// body is the pooled buffer of the last frame returned, if it did not
	// fit in small; nil otherwise.
	body *[]byte
}

// frameSmall is the size of a FrameReader's own buffer: a header and the
// body of an Ack, a Nack, a Welcome or an Invalidate.
const frameSmall = 256

// NewFrameReader reads frames of at most maxFrame bytes (type byte plus
// body; DefaultMaxFrame if maxFrame <= 0) from r.
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
	fr.release()
	if err := fr.fillHeader(); err != nil {
		switch {
		case errors.Is(err, io.EOF) && fr.sw == fr.sr:
			return 0, nil, io.EOF
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return 0, nil, fmt.Errorf("wire: read frame header: %w", ErrShort)
		}
		return 0, nil, fmt.Errorf("wire: read frame header: %w", err)
	}
	hdr := fr.small[fr.sr : fr.sr+FrameHeaderLen]
	n := binary.BigEndian.Uint32(hdr)
	t := FrameType(hdr[4])
	fr.sr += FrameHeaderLen
	switch {
	case n == 0:
		return 0, nil, fmt.Errorf("wire: frame length 0: %w", ErrMalformed)
	case uint64(n) > uint64(fr.max):
		return 0, nil, fmt.Errorf("wire: %v frame of %d bytes exceeds %d: %w", t, n, fr.max, ErrTooLarge)
	}
	need := int(n) - 1
	if fr.sw-fr.sr >= need {
		// The whole body is in small. It stays there until the next call
		// reads into small.
		body := fr.small[fr.sr : fr.sr+need : fr.sr+need]
		fr.consume(need)
		return t, body, nil
	}
	body, err := fr.readBody(need)
	if err != nil {
		return 0, nil, fmt.Errorf("wire: read %v frame body of %d bytes: %w", t, n-1, err)
	}
	return t, body, nil
}

// release gives the body buffer of the last frame back to the pool: the
// body returned by Next is no longer valid.
func (fr *FrameReader) release() {
	if fr.body != nil {
		putBuf(fr.body)
		fr.body = nil
	}
}

func (fr *FrameReader) consume(n int) {
	fr.sr += n
	if fr.sr == fr.sw {
		fr.sr, fr.sw = 0, 0
	}
}

// fillHeader reads until small holds a frame header. A read that returns
// bytes and an error keeps the bytes; the error is returned only if the
// header is still incomplete (as io.ReadFull does). Like bufio, it gives
// up with io.ErrNoProgress on a reader that keeps returning nothing.
func (fr *FrameReader) fillHeader() error {
	empty := 0
	for fr.sw-fr.sr < FrameHeaderLen {
		if fr.sr > 0 {
			fr.sw = copy(fr.small[:], fr.small[fr.sr:fr.sw])
			fr.sr = 0
		}
		m, err := fr.r.Read(fr.small[fr.sw:])
		fr.sw += m
		switch {
		case fr.sw-fr.sr >= FrameHeaderLen:
			return nil
		case err != nil:
			return err
		case m == 0:
			if empty++; empty >= 100 {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// readBody reads a body of need bytes, starting with those already in
// small, into a pooled buffer that grows only as bytes arrive.
func (fr *FrameReader) readBody(need int) ([]byte, error) {
	bp := getBuf(min(need, frameChunk))
	buf := append((*bp)[:0], fr.small[fr.sr:fr.sw]...)
	fr.sr, fr.sw = 0, 0
	for len(buf) < need {
		if len(buf) == cap(buf) {
			// Grow: the bytes so far have arrived, so doubling stays
			// within about twice what was received.
			nbp := getBuf(min(need, max(2*cap(buf), frameChunk)))
			nb := append((*nbp)[:0], buf...)
			*bp = buf[:0]
			putBuf(bp)
			bp, buf = nbp, nb
		}
		m, err := io.ReadFull(fr.r, buf[len(buf):min(need, cap(buf))])
		buf = buf[:len(buf)+m]
		if err != nil {
			*bp = buf[:0]
			putBuf(bp)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, ErrShort
			}
			return nil, err
		}
	}
	*bp = buf[:0]
	fr.body = bp
	return buf, nil
}
