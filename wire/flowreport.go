package wire

import (
	"encoding/binary"
	"net/netip"
)

// FlowReport (host → controller, every flow interval, see the package
// documentation) carries what the host's data plane counted since the
// previous report: per VPC, the traffic of the host's endpoints and the
// drops by reason (differences, so a lost report loses its interval, and
// the controller keeps no per-host counter state), the top sampled flows
// of the interval, and the heartbeats the agent has sent (cumulative, so
// the controller can tell how many it lost). A report too large for one
// datagram is sent as several, each a FlowReport of its own.
type FlowReport struct {
	// IntervalMs is the length of the interval counted, milliseconds.
	IntervalMs uint32
	// HeartbeatsSent counts every heartbeat the agent sent since it
	// started, modulo 2^32.
	HeartbeatsSent uint32
	// Sampling is N of the data plane's 1-in-N flow sampling (0: none).
	Sampling uint32
	VPCs     []VPCCounters
	Flows    []FlowEntry
}

// NumDropCounters is the number of drop reasons a VPCCounters carries:
// reasons 1 to NumDropCounters (datapath.DropReason values).
const NumDropCounters = 7

// VPCCounters is what the endpoints of one VPC on the host did in the
// interval.
type VPCCounters struct {
	VNI                            uint32
	SentPackets, SentBytes         uint64
	ReceivedPackets, ReceivedBytes uint64
	ConnsOut, ConnsIn              uint64
	Drops                          [NumDropCounters]uint64 // Drops[i] is reason i+1
}

// FlowEntry is what one sampled flow did in the interval.
type FlowEntry struct {
	VNI              uint32
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
	Bytes, Packets   uint64
	Dropped          uint64
	// Reason is the drop reason of Dropped (0: none).
	Reason uint8
	// DurationMs is from the flow's first packet to its last, IdleMs from
	// its last packet to the report (both saturate at 2^32-1).
	DurationMs, IdleMs uint32
}

// MaxFlowReportBody is the largest FlowReport body that fits a datagram.
const MaxFlowReportBody = MaxDatagramSize - MinDatagramSize

// Type implements Body.
func (*FlowReport) Type() Type { return TypeFlowReport }

// AppendBinary implements Body. It fails with ErrTooLarge for more than
// 255 VPCs or flows; Seal refuses a body above MaxFlowReportBody.
func (m *FlowReport) AppendBinary(dst []byte) ([]byte, error) {
	if len(m.VPCs) > 255 || len(m.Flows) > 255 {
		return dst, ErrTooLarge
	}
	for i := range m.VPCs {
		if m.VPCs[i].VNI > MaxVNI {
			return dst, ErrMalformed
		}
	}
	for i := range m.Flows {
		f := &m.Flows[i]
		if f.VNI > MaxVNI || !f.Src.IsValid() || !f.Dst.IsValid() {
			return dst, ErrMalformed
		}
	}
	dst = binary.BigEndian.AppendUint32(dst, m.IntervalMs)
	dst = binary.BigEndian.AppendUint32(dst, m.HeartbeatsSent)
	dst = binary.BigEndian.AppendUint32(dst, m.Sampling)
	dst = append(dst, byte(len(m.VPCs)))
	for i := range m.VPCs {
		v := &m.VPCs[i]
		dst = binary.BigEndian.AppendUint32(dst, v.VNI)
		for _, c := range []uint64{v.SentPackets, v.SentBytes, v.ReceivedPackets, v.ReceivedBytes, v.ConnsOut, v.ConnsIn} {
			dst = binary.AppendUvarint(dst, c)
		}
		for _, c := range v.Drops {
			dst = binary.AppendUvarint(dst, c)
		}
	}
	dst = append(dst, byte(len(m.Flows)))
	for i := range m.Flows {
		f := &m.Flows[i]
		dst = binary.BigEndian.AppendUint32(dst, f.VNI)
		dst = appendAddr(dst, f.Src)
		dst = appendAddr(dst, f.Dst)
		dst = append(dst, f.Proto)
		dst = binary.BigEndian.AppendUint16(dst, f.SrcPort)
		dst = binary.BigEndian.AppendUint16(dst, f.DstPort)
		dst = binary.AppendUvarint(dst, f.Bytes)
		dst = binary.AppendUvarint(dst, f.Packets)
		dst = binary.AppendUvarint(dst, f.Dropped)
		dst = append(dst, f.Reason)
		dst = binary.AppendUvarint(dst, uint64(f.DurationMs))
		dst = binary.AppendUvarint(dst, uint64(f.IdleMs))
	}
	return dst, nil
}

// UnmarshalBinary implements Body.
func (m *FlowReport) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.IntervalMs = r.u32()
	m.HeartbeatsSent = r.u32()
	m.Sampling = r.u32()
	m.VPCs = m.VPCs[:0]
	for range int(r.u8()) {
		var v VPCCounters
		v.VNI = r.vni()
		for _, c := range []*uint64{&v.SentPackets, &v.SentBytes, &v.ReceivedPackets, &v.ReceivedBytes, &v.ConnsOut, &v.ConnsIn} {
			*c = r.uvarint()
		}
		for i := range v.Drops {
			v.Drops[i] = r.uvarint()
		}
		if r.err != nil {
			return r.err
		}
		m.VPCs = append(m.VPCs, v)
	}
	m.Flows = m.Flows[:0]
	for range int(r.u8()) {
		var f FlowEntry
		f.VNI = r.vni()
		f.Src = r.addr(false)
		f.Dst = r.addr(false)
		f.Proto = r.u8()
		f.SrcPort = r.u16()
		f.DstPort = r.u16()
		f.Bytes = r.uvarint()
		f.Packets = r.uvarint()
		f.Dropped = r.uvarint()
		f.Reason = r.u8()
		f.DurationMs = r.uvarint32()
		f.IdleMs = r.uvarint32()
		if r.err != nil {
			return r.err
		}
		m.Flows = append(m.Flows, f)
	}
	return r.done()
}

// uvarint reads a minimally encoded unsigned varint (encoding/binary's).
func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	switch {
	case n == 0:
		r.err, r.b = ErrShort, nil
		return 0
	case n < 0 || n != len(binary.AppendUvarint(nil, v)):
		r.fail(ErrMalformed) // overflow, or not minimal (not canonical)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.fail(ErrMalformed)
	}
	return uint32(v)
}
