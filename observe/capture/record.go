package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// The upload stream: what an agent sends the collector for one capture,
// in the body of one HTTP request. All integers are big endian.
//
//	magic "WFCP", version 1                                      5 bytes, once
//	then records: type (1 byte), body length (4 bytes), body
//
//	type 1 Interface  id (2), flags (1: bit 0 underlay), name length (1),
//	                  name, endpoint length (1), endpoint ("tenant/name")
//	type 2 Packet     interface id (2), flags (1: bit 0 out), drop reason (1),
//	                  time (8, Unix ns), length on the wire (4), data
//	type 3 Mark       time (8, Unix ns): no packet of an earlier time follows;
//	                  lost (8): packets not sent so far
//	type 4 End        lost (8); the host has finished
//
// Every record is decoded strictly (reserved bits zero, known types,
// bounded sizes, an interface declared before its packets): the
// collector takes it from a host it trusts only with its own packets.

// Record types.
const (
	RecInterface = 1
	RecPacket    = 2
	RecMark      = 3
	RecEnd       = 4
)

const (
	magic       = "WFCP\x01"
	maxName     = 64
	maxBody     = 18 + MaxSnap
	maxIfaces   = 4096
	headerBytes = 5
)

// ErrMalformed marks an upload stream that does not decode.
var ErrMalformed = errors.New("capture: malformed upload")

// Record is one decoded record; which fields are set depends on Type.
type Record struct {
	Type int
	// Interface (RecInterface), or the interface of a packet.
	Iface    uint16
	Underlay bool
	Name     string
	Endpoint string
	// Packet: Out, Drop, Time, Length, Data (valid until the next Next).
	Out    bool
	Drop   uint8
	Time   time.Time
	Length uint32
	Data   []byte
	// Mark and End.
	Lost uint64
}

// Writer encodes an upload stream.
type Writer struct {
	w   *bufio.Writer
	hdr bool
	buf []byte
}

// NewWriter returns a Writer on w; Flush sends what is buffered.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, 64<<10)} }

// Write encodes one record.
func (w *Writer) Write(r *Record) error {
	if !w.hdr {
		if _, err := w.w.WriteString(magic); err != nil {
			return err
		}
		w.hdr = true
	}
	b := w.buf[:0]
	switch r.Type {
	case RecInterface:
		if len(r.Name) > maxName || len(r.Endpoint) > maxName {
			return fmt.Errorf("%w: interface name or endpoint too long", ErrMalformed)
		}
		b = binary.BigEndian.AppendUint16(b, r.Iface)
		b = append(b, flag(r.Underlay), byte(len(r.Name)))
		b = append(b, r.Name...)
		b = append(b, byte(len(r.Endpoint)))
		b = append(b, r.Endpoint...)
	case RecPacket:
		if len(r.Data) > MaxSnap || uint32(len(r.Data)) > r.Length {
			return fmt.Errorf("%w: packet of %d bytes, length %d", ErrMalformed, len(r.Data), r.Length)
		}
		b = binary.BigEndian.AppendUint16(b, r.Iface)
		b = append(b, flag(r.Out), r.Drop)
		b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
		b = binary.BigEndian.AppendUint32(b, r.Length)
		b = append(b, r.Data...)
	case RecMark:
		b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
		b = binary.BigEndian.AppendUint64(b, r.Lost)
	case RecEnd:
		b = binary.BigEndian.AppendUint64(b, r.Lost)
	default:
		return fmt.Errorf("%w: record type %d", ErrMalformed, r.Type)
	}
	var h [5]byte
	h[0] = byte(r.Type)
	binary.BigEndian.PutUint32(h[1:], uint32(len(b)))
	w.buf = b
	if _, err := w.w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.w.Write(b)
	return err
}

// Flush sends the buffered records.
func (w *Writer) Flush() error { return w.w.Flush() }

func flag(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// Reader decodes an upload stream.
type Reader struct {
	r      *bufio.Reader
	hdr    bool
	buf    []byte
	ifaces map[uint16]bool
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), ifaces: map[uint16]bool{}}
}

// Next decodes the next record into rec; it returns io.EOF at a clean
// end and an error wrapping ErrMalformed for bad input.
func (rd *Reader) Next(rec *Record) error {
	if !rd.hdr {
		var h [headerBytes]byte
		if _, err := io.ReadFull(rd.r, h[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("%w: header: %v", ErrMalformed, err)
		}
		if string(h[:]) != magic {
			return fmt.Errorf("%w: bad magic or version", ErrMalformed)
		}
		rd.hdr = true
	}
	var h [5]byte
	if _, err := io.ReadFull(rd.r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("%w: record header: %v", ErrMalformed, err)
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxBody {
		return fmt.Errorf("%w: record of %d bytes", ErrMalformed, n)
	}
	if cap(rd.buf) < int(n) {
		rd.buf = make([]byte, n)
	}
	b := rd.buf[:n]
	if _, err := io.ReadFull(rd.r, b); err != nil {
		return fmt.Errorf("%w: record body: %v", ErrMalformed, err)
	}
	*rec = Record{Type: int(h[0])}
	return rd.decode(rec, b)
}

func (rd *Reader) decode(rec *Record, b []byte) error {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }
	switch rec.Type {
	case RecInterface:
		if len(b) < 5 {
			return bad("short interface")
		}
		rec.Iface = binary.BigEndian.Uint16(b)
		if b[2] > 1 {
			return bad("interface flags")
		}
		rec.Underlay = b[2] == 1
		name, rest, ok := lenString(b[3:])
		if !ok {
			return bad("interface name")
		}
		ep, rest, ok := lenString(rest)
		if !ok || len(rest) != 0 || name == "" {
			return bad("interface endpoint")
		}
		if !rd.ifaces[rec.Iface] && len(rd.ifaces) >= maxIfaces {
			return bad("too many interfaces")
		}
		rec.Name, rec.Endpoint = name, ep
		rd.ifaces[rec.Iface] = true
	case RecPacket:
		if len(b) < 16 {
			return bad("short packet")
		}
		rec.Iface = binary.BigEndian.Uint16(b)
		if !rd.ifaces[rec.Iface] {
			return bad("packet of an undeclared interface")
		}
		if b[2] > 1 {
			return bad("packet flags")
		}
		rec.Out, rec.Drop = b[2] == 1, b[3]
		rec.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[4:])))
		rec.Length = binary.BigEndian.Uint32(b[12:])
		rec.Data = b[16:]
		if uint32(len(rec.Data)) > rec.Length || len(rec.Data) > MaxSnap {
			return bad("packet longer than its length")
		}
	case RecMark:
		if len(b) != 16 {
			return bad("mark")
		}
		rec.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b)))
		rec.Lost = binary.BigEndian.Uint64(b[8:])
	case RecEnd:
		if len(b) != 8 {
			return bad("end")
		}
		rec.Lost = binary.BigEndian.Uint64(b)
	default:
		return bad(fmt.Sprintf("record type %d", rec.Type))
	}
	return nil
}

// lenString reads a length-prefixed name of at most maxName printable
// UTF-8 bytes.
func lenString(b []byte) (string, []byte, bool) {
	if len(b) < 1 || int(b[0]) > maxName || len(b) < 1+int(b[0]) {
		return "", nil, false
	}
	s := string(b[1 : 1+b[0]])
	if !utf8.ValidString(s) {
		return "", nil, false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "", nil, false
		}
	}
	return s, b[1+b[0]:], true
}
