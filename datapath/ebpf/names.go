package ebpf

import (
	"encoding/binary"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/nlconv"
	"github.com/weftnet/weft/datapath/internal/owned"
)

// What the driver owns is marked so that a restarted driver adopts and
// repairs it, and prunes only its own orphans:
//
//   - in the host namespace, links "wftb<hash>" (the host side of an
//     endpoint's veth, alias "weft:<id>"), VXLANName and the shaper veth
//     pair (ShaperName), and the HTB qdiscs (handle 7766:) of the shaper and
//     the underlay device;
//   - named namespaces "<prefix>-<host>-e<hash>" (an endpoint namespace the
//     driver made);
//   - under bpffs, the directory "<bpffs>/weft/<prefix>-<host>" with every
//     map, program and link the driver pins (see PinDir).
const (
	// LinkPrefix starts the name of every link the driver creates.
	LinkPrefix = "wftb"
	// VXLANName is the host's one collect-metadata VXLAN device.
	VXLANName = LinkPrefix + "x"
	// ShaperName is the end of the shaper veth pair whose HTB tree holds
	// shaped traffic (see "Quality of service"); shaperPeer the other.
	ShaperName = LinkPrefix + "q"
	shaperPeer = LinkPrefix + "r"
	// VXLANPort is the IANA VXLAN UDP port.
	VXLANPort = 4789
	// AliasPrefix starts the alias of an endpoint's host-side veth; the
	// endpoint ID follows.
	AliasPrefix = owned.AliasPrefix
	// RouteProtocol marks the routes the driver adds inside endpoint
	// namespaces (rtm_protocol 87, as the linux driver).
	RouteProtocol = nlconv.RouteProtocol

	vethHashLen = 11 // "wftb" + 11 = 15 = IFNAMSIZ-1
)

// GatewayMAC is the MAC of the distributed gateway (02:77:66:74:67:77, as
// the linux driver's): every host-side veth and the VXLAN device have it,
// and the BPF programs answer ARP for the gateway with it.
func GatewayMAC() net.HardwareAddr { return owned.GatewayMAC() }

// holdMAC is the link-layer address the driver resolves a held miss's
// neighbour to: 02:77:00 and the VNI. Released packets leave the neighbour
// queue with it as destination, and to_vxlan recognises them by it.
func holdMAC(vni uint32) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x77, 0x00, byte(vni >> 16), byte(vni >> 8), byte(vni)}
}

// holdAddr is the IPv6 next hop a miss's packets are queued on:
// fd77:7766::<vni>:<ip> (see the BPF program's miss).
func holdAddr(vni uint32, ip netip.Addr) net.IP {
	b := make(net.IP, 16)
	copy(b, []byte{0xfd, 0x77, 0x77, 0x66})
	binary.BigEndian.PutUint32(b[8:], vni)
	a := ip.As4()
	copy(b[12:], a[:])
	return b
}

// VethName is the name of the host-side veth of endpoint id.
func VethName(id string) string { return LinkPrefix + owned.Hash(id, vethHashLen) }

func isVethName(name string) bool {
	return len(name) == len(LinkPrefix)+vethHashLen && strings.HasPrefix(name, LinkPrefix)
}

// PinDir is where a driver with this bpffs mount, prefix and host name pins
// its maps, programs and links.
func PinDir(bpffs, prefix, host string) string {
	return filepath.Join(bpffs, "weft", prefix+"-"+host)
}

// be32 is an IPv4 address as the BPF maps hold it: network byte order in
// memory.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// vipOf is an endpoint's key in the locals map.
func vipOf(e *datapath.Endpoint) weftVip { return weftVip{Vni: e.VNI, Ip: be32(e.IP)} }

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }
