package alloc

import (
	"net"
	"net/netip"
)

// MAC returns the deterministic MAC address of an endpoint with address ip:
// 0a:58 followed by the four bytes of an IPv4 address (the scheme of the
// Kubernetes CNI bridge and ptp plugins; 0a:58:0a:01:02:03 for 10.1.2.3), or
// by the last four bytes of an IPv6 address. An IPv4-mapped IPv6 address is
// treated as IPv4. The first byte 0x0a has the locally administered bit set
// and the multicast bit clear, so the address is a locally administered
// unicast MAC that cannot clash with a vendor-assigned one. MAC returns nil
// for the zero Addr.
//
// Uniqueness follows from address uniqueness and needs no allocator of its
// own: the IPv4 mapping is one-to-one, so two endpoints of a VPC (whose
// addresses are unique within it) never share a MAC. The IPv6 mapping keeps
// only 32 bits; it is one-to-one within a subnet, because a Pool allocates
// only among the first 2^20 addresses of a subnet, but two IPv6 subnets of
// one VPC (or an IPv4 and an IPv6 address of a dual-stack VPC) can map to the
// same MAC. That is harmless as long as one L2 domain never spans more than
// one subnet of a family; a datapath that bridges a whole VPC in one L2
// domain must set Endpoint.spec.mac explicitly for IPv6 endpoints.
func MAC(ip netip.Addr) net.HardwareAddr {
	if !ip.IsValid() {
		return nil
	}
	ip = ip.Unmap()
	mac := net.HardwareAddr{0x0a, 0x58, 0, 0, 0, 0}
	if ip.Is4() {
		a := ip.As4()
		copy(mac[2:], a[:])
		return mac
	}
	a := ip.As16()
	copy(mac[2:], a[12:])
	return mac
}
