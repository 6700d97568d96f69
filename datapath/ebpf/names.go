package ebpf

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/weftnet/weft/datapath"
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
	AliasPrefix = "weft:"
	// RouteProtocol marks the routes the driver adds inside endpoint
	// namespaces (rtm_protocol 87, as the linux driver).
	RouteProtocol = 87

	vethHashLen = 11 // "wftb" + 11 = 15 = IFNAMSIZ-1
	epNSHashLen = 16
)

// GatewayMAC is the MAC of the distributed gateway (02:77:66:74:67:77, as
// the linux driver's): every host-side veth and the VXLAN device have it,
// and the BPF programs answer ARP for the gateway with it.
func GatewayMAC() net.HardwareAddr { return net.HardwareAddr{0x02, 0x77, 0x66, 0x74, 0x67, 0x77} }

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

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func hashID(id string, n int) string {
	s := sha256.Sum256([]byte(id))
	return b32.EncodeToString(s[:])[:n]
}

// VethName is the name of the host-side veth of endpoint id.
func VethName(id string) string { return LinkPrefix + hashID(id, vethHashLen) }

func isVethName(name string) bool {
	return len(name) == len(LinkPrefix)+vethHashLen && strings.HasPrefix(name, LinkPrefix)
}

func aliasOf(id string) string { return AliasPrefix + id }

// names builds and parses the driver's namespace names.
type names struct {
	base string // "<prefix>-<host>-"
}

func newNames(prefix, host string) names { return names{base: prefix + "-" + host + "-"} }

func (n names) endpoint(id string) string { return n.base + "e" + hashID(id, epNSHashLen) }

// isEndpoint reports whether name is an endpoint namespace of ours.
func (n names) isEndpoint(name string) bool {
	rest, ok := strings.CutPrefix(name, n.base+"e")
	if !ok || len(rest) != epNSHashLen {
		return false
	}
	_, err := b32.DecodeString(rest)
	return err == nil
}

// PinDir is where a driver with this bpffs mount, prefix and host name pins
// its maps, programs and links.
func PinDir(bpffs, prefix, host string) string {
	return filepath.Join(bpffs, "weft", prefix+"-"+host)
}

func checkName(what, s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("%s %q: want 1..64 characters", what, s)
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '-' || r == '_' || r == '.'))
		if !ok {
			return fmt.Errorf("%s %q: only letters, digits and (not first) '-', '_', '.'", what, s)
		}
	}
	return nil
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
