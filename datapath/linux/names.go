package linux

import (
	"crypto/sha256"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath/internal/owned"
)

// What the driver owns is marked so that a restarted driver adopts and
// repairs it, and prunes only its own orphans:
//
//   - namespaces: "<prefix>-<host>-v<vni>" (VPC router) and
//     "<prefix>-<host>-e<hash>" (an endpoint namespace the driver made);
//     named namespaces are global on a machine, so the host name is part of
//     the mark (several test hosts share one machine);
//   - links, inside those namespaces: "wftx<vni>" (VXLAN) and
//     "wfte<hash>" (the VPC side of an endpoint's veth, alias "weft:<id>");
//   - routes: protocol RouteProtocol.
const (
	// LinkPrefix starts the name of every link the driver creates.
	LinkPrefix = "wft"
	// RouteProtocol marks the driver's routes (rtm_protocol; unassigned in
	// /etc/iproute2/rt_protos).
	RouteProtocol = netlink.RouteProtocol(87)
	// VXLANPort is the IANA VXLAN UDP port.
	VXLANPort = 4789
	// AliasPrefix starts the alias of an endpoint's VPC-side veth; the
	// endpoint ID follows.
	AliasPrefix = owned.AliasPrefix

	vxlanLinkPrefix = LinkPrefix + "x"
	vethLinkPrefix  = LinkPrefix + "e"
	vethHashLen     = 11 // "wfte" + 11 = 15 = IFNAMSIZ-1
)

// GatewayMAC is the MAC of the distributed gateway (02:77:66:74:67:77, the
// same on every host): the VPC side of every endpoint veth has it, and every
// endpoint has a permanent neighbour entry gateway IP -> GatewayMAC, so
// endpoints never ARP.
func GatewayMAC() net.HardwareAddr { return owned.GatewayMAC() }

// VTEPMAC is the MAC of a host's VXLAN devices, derived from its underlay
// address (02:77:a:b:c:d for IPv4). A sender resolves a remote endpoint IP
// to the VTEPMAC of its host, and the FDB maps that MAC to the host's
// underlay address; the receiving VXLAN device sees its own MAC as
// destination and routes the packet in its VPC namespace.
func VTEPMAC(underlay netip.Addr) net.HardwareAddr {
	if underlay.Is4() {
		b := underlay.As4()
		return net.HardwareAddr{0x02, 0x77, b[0], b[1], b[2], b[3]}
	}
	s := sha256.Sum256(underlay.AsSlice())
	return net.HardwareAddr{0x02, 0x76, s[0], s[1], s[2], s[3]}
}

func vxlanName(vni uint32) string { return vxlanLinkPrefix + strconv.FormatUint(uint64(vni), 10) }

// VethName is the name of the VPC-side veth of endpoint id.
func VethName(id string) string { return vethLinkPrefix + owned.Hash(id, vethHashLen) }

// names builds and parses the driver's namespace names.
type names struct{ owned.Netns }

func newNames(prefix, host string) names { return names{owned.NewNetns(prefix, host)} }

func (n names) vpc(vni uint32) string { return n.Base() + "v" + strconv.FormatUint(uint64(vni), 10) }

// VPCNetnsName is the name of the router namespace of VPC vni on host, as
// a driver with Config.Prefix prefix names it (in Config.NetnsDir).
func VPCNetnsName(prefix, host string, vni uint32) string { return newNames(prefix, host).vpc(vni) }

// parse reports whether name is one of ours: a VPC namespace (vni != 0) or
// an endpoint namespace (ep true).
func (n names) parse(name string) (vni uint32, ep bool) {
	if n.IsEndpoint(name) {
		return 0, true
	}
	rest, ok := strings.CutPrefix(name, n.Base()+"v")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 10, 32)
	if err != nil || v == 0 || strconv.FormatUint(v, 10) != rest {
		return 0, false
	}
	return uint32(v), false
}

func vniOfVxlan(name string) (uint32, bool) {
	s, ok := strings.CutPrefix(name, vxlanLinkPrefix)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}
