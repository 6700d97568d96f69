package flows

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/weftnet/weft/datapath"
)

// IPFIX export (RFC 7011) over UDP. No maintained Go library could be
// used here (the one the field uses, vmware/go-ipfix, is not available
// to this build and brings a large dependency tree for a few dozen lines
// of encoding), so the encoder below writes exactly what weft exports:
// one template per address family, re-sent in every message (UDP loses
// and reorders; RFC 7011 section 8.4 lets an exporter resend templates at
// any time, and a restarted collector learns them from the next message),
// and data records of fixed length. ParseIPFIX reads it back (tests, and
// a fuzz target guards it).

// IPFIX information elements weft exports (IANA "IPFIX Information
// Elements"), with their lengths.
const (
	ieOctetDeltaCount          = 1
	iePacketDeltaCount         = 2
	ieProtocolIdentifier       = 4
	ieSourceTransportPort      = 7
	ieSourceIPv4Address        = 8
	ieDestinationTransportPort = 11
	ieDestinationIPv4Address   = 12
	ieSourceIPv6Address        = 27
	ieDestinationIPv6Address   = 28
	ieForwardingStatus         = 89
	ieDroppedPacketDeltaCount  = 133
	ieFlowStartMilliseconds    = 152
	ieFlowEndMilliseconds      = 153
	ieLayer2SegmentID          = 351
)

// Template IDs (data sets use them as set IDs; 256 is the first allowed).
const (
	TemplateIPv4 = 256
	TemplateIPv6 = 257
)

// IPFIX message constants.
const (
	ipfixVersion      = 10
	msgHeaderLen      = 16
	setHeaderLen      = 4
	templateSetID     = 2
	maxMessageSize    = 1400 // never fragments on a 1500-byte path
	vxlanSegmentType  = 0x01 // layer2SegmentId: top byte 1 = VXLAN, VNI below
	forwardedUnknown  = 64   // forwardingStatus: forwarded, reason unknown
	droppedUnknown    = 128
	droppedACLDeny    = 129
	droppedUnroutable = 131
	droppedAdjacency  = 132
	droppedFragDF     = 133
	droppedPolicer    = 137
)

type field struct{ id, length uint16 }

func template(v6 bool) []field {
	addrLen, src, dst := uint16(4), uint16(ieSourceIPv4Address), uint16(ieDestinationIPv4Address)
	if v6 {
		addrLen, src, dst = 16, ieSourceIPv6Address, ieDestinationIPv6Address
	}
	return []field{
		{ieLayer2SegmentID, 8}, {src, addrLen}, {dst, addrLen}, {ieProtocolIdentifier, 1},
		{ieSourceTransportPort, 2}, {ieDestinationTransportPort, 2},
		{ieOctetDeltaCount, 8}, {iePacketDeltaCount, 8}, {ieDroppedPacketDeltaCount, 8},
		{ieForwardingStatus, 1}, {ieFlowStartMilliseconds, 8}, {ieFlowEndMilliseconds, 8},
	}
}

func recordLen(fs []field) int {
	n := 0
	for _, f := range fs {
		n += int(f.length)
	}
	return n
}

// forwardingStatus encodes a record's verdict (RFC 7270 forwardingStatus).
func forwardingStatus(r *Record) byte {
	if r.Dropped == 0 {
		return forwardedUnknown
	}
	switch r.Reason {
	case datapath.DropPolicy:
		return droppedACLDeny
	case datapath.DropNoRoute:
		return droppedUnroutable
	case datapath.DropNoLocation:
		return droppedAdjacency
	case datapath.DropMTU:
		return droppedFragDF
	case datapath.DropQoS:
		return droppedPolicer
	}
	return droppedUnknown
}

func reasonOf(status byte) datapath.DropReason {
	switch status {
	case droppedACLDeny:
		return datapath.DropPolicy
	case droppedUnroutable:
		return datapath.DropNoRoute
	case droppedAdjacency:
		return datapath.DropNoLocation
	case droppedFragDF:
		return datapath.DropMTU
	case droppedPolicer:
		return datapath.DropQoS
	}
	return datapath.DropNone
}

// Encoder builds IPFIX messages of one observation domain.
type Encoder struct {
	// Domain is the observation domain ID (e.g. the host's ID).
	Domain uint32
	seq    uint32 // data records sent so far, mod 2^32
}

// AppendMessages encodes rs (skipping records without valid addresses)
// into messages of at most maxMessageSize bytes, each starting with the
// templates it uses, and returns them.
func (e *Encoder) AppendMessages(rs []Record, now time.Time) [][]byte {
	var msgs [][]byte
	for fam := range 2 {
		v6 := fam == 1
		fs := template(v6)
		id := uint16(TemplateIPv4)
		if v6 {
			id = TemplateIPv6
		}
		var recs []*Record
		for i := range rs {
			if r := &rs[i]; r.Src.IsValid() && r.Dst.IsValid() && r.Src.Is4() == !v6 && r.Dst.Is4() == !v6 {
				recs = append(recs, r)
			}
		}
		tmplLen := setHeaderLen + 4 + 4*len(fs)
		perMsg := (maxMessageSize - msgHeaderLen - tmplLen - setHeaderLen) / recordLen(fs)
		for len(recs) > 0 {
			n := min(len(recs), perMsg)
			msgs = append(msgs, e.message(id, fs, recs[:n], now))
			recs = recs[n:]
		}
	}
	return msgs
}

func (e *Encoder) message(id uint16, fs []field, recs []*Record, now time.Time) []byte {
	b := make([]byte, msgHeaderLen, maxMessageSize)
	binary.BigEndian.PutUint16(b[0:], ipfixVersion)
	binary.BigEndian.PutUint32(b[4:], uint32(now.Unix()))
	binary.BigEndian.PutUint32(b[8:], e.seq)
	binary.BigEndian.PutUint32(b[12:], e.Domain)
	// Template set.
	b = binary.BigEndian.AppendUint16(b, templateSetID)
	b = binary.BigEndian.AppendUint16(b, uint16(setHeaderLen+4+4*len(fs)))
	b = binary.BigEndian.AppendUint16(b, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(fs)))
	for _, f := range fs {
		b = binary.BigEndian.AppendUint16(b, f.id)
		b = binary.BigEndian.AppendUint16(b, f.length)
	}
	// Data set.
	b = binary.BigEndian.AppendUint16(b, id)
	b = binary.BigEndian.AppendUint16(b, uint16(setHeaderLen+len(recs)*recordLen(fs)))
	for _, r := range recs {
		b = binary.BigEndian.AppendUint64(b, vxlanSegmentType<<56|uint64(r.VNI))
		b = append(b, r.Src.AsSlice()...)
		b = append(b, r.Dst.AsSlice()...)
		b = append(b, byte(r.Proto))
		b = binary.BigEndian.AppendUint16(b, r.SrcPort)
		b = binary.BigEndian.AppendUint16(b, r.DstPort)
		b = binary.BigEndian.AppendUint64(b, r.Bytes)
		b = binary.BigEndian.AppendUint64(b, r.Packets)
		b = binary.BigEndian.AppendUint64(b, r.Dropped)
		b = append(b, forwardingStatus(r))
		b = binary.BigEndian.AppendUint64(b, uint64(r.Start.UnixMilli()))
		b = binary.BigEndian.AppendUint64(b, uint64(r.End.UnixMilli()))
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	e.seq += uint32(len(recs))
	return b
}

// Exporter sends flow records to an IPFIX collector over UDP. It is safe
// for concurrent use.
type Exporter struct {
	mu   sync.Mutex
	conn net.Conn
	enc  Encoder
}

// NewExporter connects (UDP) to the collector at addr (host:port).
func NewExporter(ctx context.Context, addr string, domain uint32) (*Exporter, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("flows: IPFIX collector %s: %w", addr, err)
	}
	return &Exporter{conn: c, enc: Encoder{Domain: domain}}, nil
}

// Export sends rs; it returns the number of messages sent.
func (x *Exporter) Export(rs []Record, now time.Time) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	msgs := x.enc.AppendMessages(rs, now)
	var errs []error
	sent := 0
	for _, m := range msgs {
		if _, err := x.conn.Write(m); err != nil {
			errs = append(errs, err)
			continue
		}
		sent++
	}
	if len(errs) > 0 {
		return sent, fmt.Errorf("flows: IPFIX export: %d of %d messages failed: %w", len(errs), len(msgs), errs[0])
	}
	return sent, nil
}

// Close closes the exporter's socket.
func (x *Exporter) Close() error { return x.conn.Close() }

// ErrMalformed marks an IPFIX message ParseIPFIX cannot read.
var ErrMalformed = errors.New("flows: malformed IPFIX message")

// Templates are the templates a collector learned, by observation domain
// and template ID.
type Templates map[[2]uint32][]field

// ParseIPFIX decodes one message: it learns its templates into ts and
// returns its data records, the observation domain and the message's
// sequence number. Data sets of unknown templates are skipped, as RFC
// 7011 asks; fields weft does not export are ignored.
func ParseIPFIX(msg []byte, ts Templates) (rs []Record, domain uint32, err error) {
	if len(msg) < msgHeaderLen || binary.BigEndian.Uint16(msg) != ipfixVersion {
		return nil, 0, fmt.Errorf("%w: short or not version 10", ErrMalformed)
	}
	if n := int(binary.BigEndian.Uint16(msg[2:])); n != len(msg) {
		return nil, 0, fmt.Errorf("%w: length %d, got %d bytes", ErrMalformed, n, len(msg))
	}
	domain = binary.BigEndian.Uint32(msg[12:])
	for b := msg[msgHeaderLen:]; len(b) > 0; {
		if len(b) < setHeaderLen {
			return nil, domain, fmt.Errorf("%w: truncated set header", ErrMalformed)
		}
		id, n := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if n < setHeaderLen || n > len(b) {
			return nil, domain, fmt.Errorf("%w: set length %d", ErrMalformed, n)
		}
		body := b[setHeaderLen:n]
		b = b[n:]
		switch {
		case id == templateSetID:
			if err := parseTemplates(body, domain, ts); err != nil {
				return nil, domain, err
			}
		case id >= 256:
			fs := ts[[2]uint32{domain, uint32(id)}]
			if fs == nil {
				continue
			}
			l := recordLen(fs)
			for ; l > 0 && len(body) >= l; body = body[l:] {
				rs = append(rs, parseRecord(body[:l], fs))
			}
		}
	}
	return rs, domain, nil
}

func parseTemplates(b []byte, domain uint32, ts Templates) error {
	for len(b) >= 4 {
		id, count := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		b = b[4:]
		if id < 256 || len(b) < 4*count {
			return fmt.Errorf("%w: template %d with %d fields", ErrMalformed, id, count)
		}
		fs := make([]field, count)
		for i := range fs {
			fs[i] = field{binary.BigEndian.Uint16(b[4*i:]), binary.BigEndian.Uint16(b[4*i+2:])}
			if fs[i].id&0x8000 != 0 || fs[i].length == 0xffff {
				return fmt.Errorf("%w: template %d: enterprise or variable-length field", ErrMalformed, id)
			}
		}
		b = b[4*count:]
		ts[[2]uint32{domain, uint32(id)}] = fs
	}
	return nil
}

func parseRecord(b []byte, fs []field) Record {
	var r Record
	for _, f := range fs {
		v := b[:f.length]
		b = b[f.length:]
		u := func() uint64 {
			var x uint64
			for _, c := range v {
				x = x<<8 | uint64(c)
			}
			return x
		}
		switch f.id {
		case ieLayer2SegmentID:
			r.VNI = uint32(u() & 0xffffff)
		case ieSourceIPv4Address, ieSourceIPv6Address:
			r.Src, _ = netip.AddrFromSlice(v)
		case ieDestinationIPv4Address, ieDestinationIPv6Address:
			r.Dst, _ = netip.AddrFromSlice(v)
		case ieProtocolIdentifier:
			r.Proto = datapath.Protocol(u())
		case ieSourceTransportPort:
			r.SrcPort = uint16(u())
		case ieDestinationTransportPort:
			r.DstPort = uint16(u())
		case ieOctetDeltaCount:
			r.Bytes = u()
		case iePacketDeltaCount:
			r.Packets = u()
		case ieDroppedPacketDeltaCount:
			r.Dropped = u()
		case ieForwardingStatus:
			r.Reason = reasonOf(byte(u()))
		case ieFlowStartMilliseconds:
			r.Start = time.UnixMilli(int64(u()))
		case ieFlowEndMilliseconds:
			r.End = time.UnixMilli(int64(u()))
		}
	}
	return r
}
