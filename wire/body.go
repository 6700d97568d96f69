package wire

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Body limits.
const (
	// MaxVNI is the largest VXLAN network identifier (24 bits).
	MaxVNI = 1<<24 - 1
	// MaxLookupBatch is the most queries a LookupRequest, or answers a
	// LookupReply, may carry: a full reply stays under MaxDatagramSize.
	MaxLookupBatch = 16
)

// Address families on the wire.
const (
	famNone = 0 // no address (only where the address is optional)
	famIPv4 = 4
	famIPv6 = 6
)

// Health is the set of health flags an agent reports in its heartbeat.
// Bits without a name are reserved: senders leave them zero, receivers
// ignore them.
type Health uint32

// Health flags.
const (
	// HealthReady: the agent applied its view and programmed the datapath.
	HealthReady Health = 1 << iota
	// HealthDegraded: datapath errors or drift the agent could not repair.
	HealthDegraded
	// HealthHeadless: the config stream is down; forwarding from cache.
	HealthHeadless
	// HealthDraining: the host is being drained of endpoints.
	HealthDraining
)

// Heartbeat is sent by an agent every second (host → controller).
type Heartbeat struct {
	// ViewVersion is the config version the agent has applied.
	ViewVersion   uint64
	Health        Health
	EndpointCount uint32
	UptimeSeconds uint32
}

// HeartbeatLen is the encoded size of a Heartbeat body.
const HeartbeatLen = 8 + 4 + 4 + 4

// Type implements Body.
func (*Heartbeat) Type() Type { return TypeHeartbeat }

// AppendBinary implements Body.
func (m *Heartbeat) AppendBinary(dst []byte) ([]byte, error) {
	dst = binary.BigEndian.AppendUint64(dst, m.ViewVersion)
	dst = binary.BigEndian.AppendUint32(dst, uint32(m.Health))
	dst = binary.BigEndian.AppendUint32(dst, m.EndpointCount)
	return binary.BigEndian.AppendUint32(dst, m.UptimeSeconds), nil
}

// UnmarshalBinary implements Body.
func (m *Heartbeat) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ViewVersion = r.u64()
	m.Health = Health(r.u32())
	m.EndpointCount = r.u32()
	m.UptimeSeconds = r.u32()
	return r.done()
}

// HeartbeatAck optionally answers a Heartbeat (controller → host).
type HeartbeatAck struct {
	// Epoch identifies the controller incarnation serving the host; a
	// change tells the agent the controller restarted or failed over.
	Epoch uint64
	// ReplicasVersion is the version of the controller replica list. The
	// list itself travels in a Welcome on the config stream; a version
	// above the one of the agent's list says a new Welcome is on its way.
	ReplicasVersion uint64
	// HeartbeatSeq is the sequence number of the heartbeat acknowledged.
	HeartbeatSeq uint64
}

// HeartbeatAckLen is the encoded size of a HeartbeatAck body.
const HeartbeatAckLen = 8 + 8 + 8

// Type implements Body.
func (*HeartbeatAck) Type() Type { return TypeHeartbeatAck }

// AppendBinary implements Body.
func (m *HeartbeatAck) AppendBinary(dst []byte) ([]byte, error) {
	dst = binary.BigEndian.AppendUint64(dst, m.Epoch)
	dst = binary.BigEndian.AppendUint64(dst, m.ReplicasVersion)
	return binary.BigEndian.AppendUint64(dst, m.HeartbeatSeq), nil
}

// UnmarshalBinary implements Body.
func (m *HeartbeatAck) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.Epoch = r.u64()
	m.ReplicasVersion = r.u64()
	m.HeartbeatSeq = r.u64()
	return r.done()
}

// LookupQuery asks where the endpoint with address IP in virtual network
// VNI lives.
type LookupQuery struct {
	// RequestID is chosen by the agent and echoed in the answer.
	RequestID uint32
	VNI       uint32
	// IP is an IPv4 or IPv6 address without zone.
	IP netip.Addr
}

// LookupRequest carries 1..MaxLookupBatch queries (host → controller).
type LookupRequest struct {
	Queries []LookupQuery
}

// Type implements Body.
func (*LookupRequest) Type() Type { return TypeLookupRequest }

// AppendBinary implements Body.
func (m *LookupRequest) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkBatch(len(m.Queries)); err != nil {
		return dst, err
	}
	for i := range m.Queries {
		q := &m.Queries[i]
		if err := checkVNIAddr(q.VNI, q.IP); err != nil {
			return dst, err
		}
	}
	dst = append(dst, byte(len(m.Queries)))
	for i := range m.Queries {
		q := &m.Queries[i]
		dst = binary.BigEndian.AppendUint32(dst, q.RequestID)
		dst = binary.BigEndian.AppendUint32(dst, q.VNI)
		dst = appendAddr(dst, q.IP)
	}
	return dst, nil
}

// UnmarshalBinary implements Body. It reuses m.Queries' backing array.
func (m *LookupRequest) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	n := r.count()
	m.Queries = m.Queries[:0]
	for i := 0; i < n && r.err == nil; i++ {
		m.Queries = append(m.Queries, LookupQuery{
			RequestID: r.u32(),
			VNI:       r.vni(),
			IP:        r.addr(false),
		})
	}
	return r.done()
}

// Location is where an endpoint lives: the underlay address of its host,
// its MAC address and its security identity.
type Location struct {
	HostIP   netip.Addr `json:"hostIP"`
	MAC      MACAddr    `json:"mac"`
	Identity uint32     `json:"identity,omitempty"`
}

// LookupAnswer answers one LookupQuery.
type LookupAnswer struct {
	RequestID uint32
	VNI       uint32
	IP        netip.Addr
	// Found is false when no such endpoint exists; Location is then
	// meaningless (senders leave it zero), while Epoch and TTL still say
	// how long the negative answer may be cached.
	Found    bool
	Location Location
	// Epoch is the version of the endpoint's location; an Invalidate with
	// a higher epoch supersedes this answer.
	Epoch uint64
	// TTL is how many seconds the agent may cache the answer.
	TTL uint16
}

// LookupReply carries 1..MaxLookupBatch answers (controller → host).
type LookupReply struct {
	Answers []LookupAnswer
}

// Type implements Body.
func (*LookupReply) Type() Type { return TypeLookupReply }

// AppendBinary implements Body.
func (m *LookupReply) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkBatch(len(m.Answers)); err != nil {
		return dst, err
	}
	for i := range m.Answers {
		a := &m.Answers[i]
		if err := checkVNIAddr(a.VNI, a.IP); err != nil {
			return dst, err
		}
		if err := checkOptAddr(a.Location.HostIP); err != nil {
			return dst, err
		}
	}
	dst = append(dst, byte(len(m.Answers)))
	for i := range m.Answers {
		a := &m.Answers[i]
		dst = binary.BigEndian.AppendUint32(dst, a.RequestID)
		dst = binary.BigEndian.AppendUint32(dst, a.VNI)
		dst = appendAddr(dst, a.IP)
		dst = append(dst, flagByte(a.Found))
		dst = appendLocation(dst, &a.Location)
		dst = binary.BigEndian.AppendUint64(dst, a.Epoch)
		dst = binary.BigEndian.AppendUint16(dst, a.TTL)
	}
	return dst, nil
}

// UnmarshalBinary implements Body. It reuses m.Answers' backing array.
func (m *LookupReply) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	n := r.count()
	m.Answers = m.Answers[:0]
	for i := 0; i < n && r.err == nil; i++ {
		m.Answers = append(m.Answers, LookupAnswer{
			RequestID: r.u32(),
			VNI:       r.vni(),
			IP:        r.addr(false),
			Found:     r.flag(),
			Location:  r.location(),
			Epoch:     r.u64(),
			TTL:       r.u16(),
		})
	}
	return r.done()
}

// Invalidate tells an agent that the endpoint with address IP in VNI moved
// (HasLocation, with its new Location) or is gone (!HasLocation). It is
// pushed by the controller over UDP, best effort, and may also travel on
// the config stream (as JSON). An agent applies it only if Epoch is above
// the epoch of what it has cached, so duplicates and reordering are
// harmless.
type Invalidate struct {
	VNI         uint32     `json:"vni"`
	IP          netip.Addr `json:"ip"`
	Epoch       uint64     `json:"epoch"`
	HasLocation bool       `json:"hasLocation,omitempty"`
	Location    Location   `json:"location"`
}

// Type implements Body.
func (*Invalidate) Type() Type { return TypeInvalidate }

// AppendBinary implements Body.
func (m *Invalidate) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkVNIAddr(m.VNI, m.IP); err != nil {
		return dst, err
	}
	if err := checkOptAddr(m.Location.HostIP); err != nil {
		return dst, err
	}
	dst = binary.BigEndian.AppendUint32(dst, m.VNI)
	dst = appendAddr(dst, m.IP)
	dst = binary.BigEndian.AppendUint64(dst, m.Epoch)
	dst = append(dst, flagByte(m.HasLocation))
	return appendLocation(dst, &m.Location), nil
}

// UnmarshalBinary implements Body.
func (m *Invalidate) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.VNI = r.vni()
	m.IP = r.addr(false)
	m.Epoch = r.u64()
	m.HasLocation = r.flag()
	m.Location = r.location()
	return r.done()
}

// MACAddr is an Ethernet address. It is a value type (unlike
// net.HardwareAddr) so that decoding one never allocates. In JSON it is the
// usual "aa:bb:cc:dd:ee:ff" string.
type MACAddr [6]byte

func (a MACAddr) String() string { return net.HardwareAddr(a[:]).String() }

// MarshalText implements encoding.TextMarshaler.
func (a MACAddr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *MACAddr) UnmarshalText(b []byte) error {
	hw, err := net.ParseMAC(string(b))
	if err != nil {
		return fmt.Errorf("wire: parse MAC %q: %w", b, err)
	}
	if len(hw) != len(a) {
		return fmt.Errorf("wire: MAC %q is %d bytes, want %d: %w", b, len(hw), len(a), ErrMalformed)
	}
	copy(a[:], hw)
	return nil
}

func checkBatch(n int) error {
	switch {
	case n == 0:
		return ErrMalformed
	case n > MaxLookupBatch:
		return ErrTooLarge
	}
	return nil
}

// checkVNIAddr checks a VNI and a required address.
func checkVNIAddr(vni uint32, ip netip.Addr) error {
	if vni > MaxVNI || !ip.IsValid() || ip.Zone() != "" {
		return ErrMalformed
	}
	return nil
}

// checkOptAddr checks an optional address: absent, or without zone.
func checkOptAddr(ip netip.Addr) error {
	if ip.Zone() != "" {
		return ErrMalformed
	}
	return nil
}

func flagByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func appendAddr(dst []byte, ip netip.Addr) []byte {
	switch {
	case !ip.IsValid():
		return append(dst, famNone)
	case ip.Is4():
		a := ip.As4()
		return append(append(dst, famIPv4), a[:]...)
	default:
		a := ip.As16()
		return append(append(dst, famIPv6), a[:]...)
	}
}

func appendLocation(dst []byte, l *Location) []byte {
	dst = appendAddr(dst, l.HostIP)
	dst = append(dst, l.MAC[:]...)
	return binary.BigEndian.AppendUint32(dst, l.Identity)
}

// reader decodes a body front to back. The first error sticks: later reads
// return zero values, and done reports it. Running out of input is ErrShort,
// so a truncated valid encoding always fails with ErrShort.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err, r.b = ErrShort, nil
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (r *reader) vni() uint32 {
	v := r.u32()
	if v > MaxVNI {
		r.fail(ErrMalformed)
	}
	return v
}

// flag reads a flags byte whose only defined bit is bit 0.
func (r *reader) flag() bool {
	f := r.u8()
	if f&^1 != 0 {
		r.fail(ErrMalformed)
	}
	return f&1 != 0
}

// count reads a batch count.
func (r *reader) count() int {
	n := int(r.u8())
	if r.err == nil {
		r.fail(checkBatch(n))
	}
	return n
}

func (r *reader) addr(optional bool) netip.Addr {
	switch fam := r.u8(); {
	case r.err != nil:
	case fam == famIPv4:
		if p := r.take(4); p != nil {
			return netip.AddrFrom4([4]byte(p))
		}
	case fam == famIPv6:
		if p := r.take(16); p != nil {
			return netip.AddrFrom16([16]byte(p))
		}
	case fam == famNone && optional:
	default:
		r.fail(ErrMalformed)
	}
	return netip.Addr{}
}

func (r *reader) location() Location {
	var l Location
	l.HostIP = r.addr(true)
	if p := r.take(len(l.MAC)); p != nil {
		copy(l.MAC[:], p)
	}
	l.Identity = r.u32()
	return l
}

// done returns the first error, or ErrMalformed if input is left over.
func (r *reader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return ErrMalformed
	}
	return nil
}
