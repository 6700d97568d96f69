package linux

import (
	"encoding/binary"
	"errors"
	"net/netip"

	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftEvent is one nftables trace event (NFT_MSG_TRACE): the kernel's
// report that a packet with nftrace set went through a rule, returned
// from a chain, or met a base chain's policy.
type nftEvent struct {
	table, chain string
	// typ is unix.NFT_TRACETYPE_RULE, _RETURN or _POLICY.
	typ uint32
	// verdict is the verdict code (NF_ACCEPT, NF_DROP, NFT_CONTINUE,
	// NFT_JUMP ...), jumpTo the chain of a jump or goto.
	verdict int32
	jumpTo  string
	hasVerd bool
	// id is the kernel's per-packet trace id; it is the same for every
	// event of one packet in one namespace.
	id        uint32
	handle    uint64
	iif, oif  uint32
	mark      uint32
	ll        []byte // link layer header (on Ethernet devices)
	network   []byte // up to 40 bytes from the network header
	transport []byte // up to 20 bytes from the transport header
}

// noVerdict is an event's verdict when it carries none.
const noVerdict = -1000

// errEvent marks a message that is not a well-formed trace event.
var errEvent = errors.New("linux: not an nftables trace event")

// parseNftEvent decodes the payload of an NFT_MSG_TRACE message (after
// the netlink header): the nfgenmsg and the NFTA_TRACE attributes. The
// slices it returns alias b.
func parseNftEvent(b []byte) (nftEvent, error) {
	ev := nftEvent{verdict: noVerdict}
	if len(b) < 4 {
		return ev, errEvent
	}
	ad, err := mdnetlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return ev, errEvent
	}
	ad.ByteOrder = binary.BigEndian
	u32 := func() uint32 {
		if len(ad.Bytes()) != 4 {
			err = errEvent
			return 0
		}
		return ad.Uint32()
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TRACE_TABLE:
			ev.table = ad.String()
		case unix.NFTA_TRACE_CHAIN:
			ev.chain = ad.String()
		case unix.NFTA_TRACE_TYPE:
			ev.typ = u32()
		case unix.NFTA_TRACE_ID:
			ev.id = u32()
		case unix.NFTA_TRACE_RULE_HANDLE:
			if len(ad.Bytes()) != 8 {
				err = errEvent
				continue
			}
			ev.handle = ad.Uint64()
		case unix.NFTA_TRACE_IIF:
			ev.iif = u32()
		case unix.NFTA_TRACE_OIF:
			ev.oif = u32()
		case unix.NFTA_TRACE_MARK:
			ev.mark = u32()
		case unix.NFTA_TRACE_LL_HEADER:
			ev.ll = ad.Bytes()
		case unix.NFTA_TRACE_NETWORK_HEADER:
			ev.network = ad.Bytes()
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			ev.transport = ad.Bytes()
		case unix.NFTA_TRACE_VERDICT:
			ev.hasVerd = true
			ad.Nested(func(nd *mdnetlink.AttributeDecoder) error {
				nd.ByteOrder = binary.BigEndian
				for nd.Next() {
					switch nd.Type() {
					case unix.NFTA_VERDICT_CODE:
						if len(nd.Bytes()) != 4 {
							return errEvent
						}
						ev.verdict = int32(nd.Uint32())
					case unix.NFTA_VERDICT_CHAIN:
						ev.jumpTo = nd.String()
					}
				}
				return nil
			})
		}
	}
	if err != nil || ad.Err() != nil || ev.table == "" || ev.typ == 0 || ev.typ > unix.NFT_TRACETYPE_MAX {
		return nftEvent{}, errEvent
	}
	return ev, nil
}

// ipv4 is the fields of an IPv4 header (and its L4 ports) a trace
// matches and a hop reports.
type ipv4 struct {
	src, dst     netip.Addr
	proto        uint8
	id           uint16
	dscp         uint8
	length       uint16
	sport, dport uint16 // TCP, UDP; ICMP: type<<8|code, echo identifier
}

// parseIPv4 decodes an IPv4 header (network) and the start of its
// transport header (transport; or what follows the header in network);
// ok is false for anything else.
func parseIPv4(network, transport []byte) (ipv4, bool) {
	b := network
	if len(b) < 20 || b[0]>>4 != 4 {
		return ipv4{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return ipv4{}, false
	}
	h := ipv4{
		src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])),
		proto: b[9], id: binary.BigEndian.Uint16(b[4:6]), dscp: b[1] >> 2, length: binary.BigEndian.Uint16(b[2:4]),
	}
	l4 := transport
	if len(l4) == 0 && len(b) > ihl {
		l4 = b[ihl:]
	}
	if len(l4) >= 4 && binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 {
		switch h.proto {
		case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
			h.sport, h.dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		case unix.IPPROTO_ICMP:
			h.sport = binary.BigEndian.Uint16(l4) // type, code
			if len(l4) >= 6 {
				h.dport = binary.BigEndian.Uint16(l4[4:]) // echo identifier
			}
		}
	}
	return h, true
}
