package datapath

import "net/netip"

// Security policy and quality of service, as a driver programs them. The
// controller compiles SecurityPolicy, QoSClass and a VPC's settings into
// these per-endpoint terms; a driver never sees label selectors.
//
// # Identity
//
// Every endpoint has a numeric security identity, allocated by the
// controller per distinct label set per VPC: 1..MaxIdentity; 0 means "no
// identity" (traffic from outside the VPC, or from a sender that stamped
// none). Identities are VPC-local: drivers interpret them within the
// endpoint's VNI. The sending host stamps the source endpoint's identity
// into the packet (VXLAN-GBP group policy ID on the wire, the packet mark
// inside the host: see Mark*), and the receiving host enforces ingress by
// it without knowing the sender's address.
//
// # Semantics (Kubernetes NetworkPolicy)
//
// An endpoint whose Policy is nil, or whose Policy isolates neither
// direction, sends and receives everything. In an isolated direction only
// what some rule of that direction allows passes. Replies of an allowed
// connection pass both ways (stateful). Connection state is never shared
// between VPCs, so overlapping addresses of different tenants cannot
// answer each other's connections. When a policy change stops allowing an
// established connection, the driver drops it within a second (it flushes
// the connection's state).

// MaxIdentity is the largest security identity: the VXLAN-GBP group policy
// ID has 16 bits.
const MaxIdentity = 1<<16 - 1

// The packet mark (skb->mark) layout every driver and the observability
// tools share. Bits 0-15, 19 and 22 are what VXLAN-GBP carries on the wire
// (the kernel copies them between the mark and the GBP header); the others
// never leave the host.
const (
	// MarkIdentityMask holds the source endpoint's security identity.
	MarkIdentityMask = 0x0000ffff
	// MarkPolicyApplied (GBP "A" bit) says the sending host has enforced
	// the source endpoint's egress policy.
	MarkPolicyApplied = 1 << 19
	// MarkTrace (GBP "D" bit, which weft's overlay does not otherwise use:
	// its VXLAN devices never learn) flags a trace probe or a packet of a
	// live trace, on the wire and inside hosts.
	MarkTrace = 1 << 22
	// MarkDropReasonShift and MarkDropReasonMask place a drop reason
	// (DropReason) in the top byte, for counters and capture of dropped
	// packets; it is host-local.
	MarkDropReasonShift = 24
	MarkDropReasonMask  = 0xff << MarkDropReasonShift
)

// DropReason says why the data plane dropped a packet (in the top byte of
// the mark, in counters, in traces and captures).
type DropReason uint8

// Drop reasons. Values are stable: they are written into packets and
// exported in metrics.
const (
	DropNone        DropReason = 0
	DropPolicy      DropReason = 1 // no rule of an isolated direction allowed it
	DropNoRoute     DropReason = 2 // no route to the destination
	DropNoLocation  DropReason = 3 // the destination's location is unknown
	DropMTU         DropReason = 4 // larger than the path MTU and not fragmentable
	DropQoS         DropReason = 5 // over a rate limit
	DropInvalidFlow DropReason = 6 // not a valid connection (conntrack invalid)
)

// String returns the reason's name as metrics and traces show it.
func (r DropReason) String() string {
	switch r {
	case DropNone:
		return "none"
	case DropPolicy:
		return "policy"
	case DropNoRoute:
		return "no-route"
	case DropNoLocation:
		return "unknown-location"
	case DropMTU:
		return "mtu"
	case DropQoS:
		return "qos"
	case DropInvalidFlow:
		return "invalid-flow"
	}
	return "unknown"
}

// EndpointPolicy is the security policy of one local endpoint. A nil
// *EndpointPolicy allows everything.
type EndpointPolicy struct {
	// IngressIsolated and EgressIsolated say that only what Ingress
	// (resp. Egress) allows passes in that direction. A direction that is
	// not isolated allows everything whatever its rules.
	IngressIsolated bool
	EgressIsolated  bool
	Ingress         []Rule
	Egress          []Rule
}

// Rule allows traffic from (ingress) or to (egress) any of its peers on
// any of its ports.
type Rule struct {
	// Name names the rule in traces and errors, e.g.
	// "acme/db-from-web ingress[0]".
	Name string
	// AllPeers makes the rule match any peer, inside the VPC or not (a
	// policy rule without peers). Otherwise the rule matches only the
	// listed peers, and none if both lists are empty (a selector that
	// matches no endpoint).
	AllPeers bool
	// Identities are peers by security identity (ingress only: the
	// sender's identity carried in the packet).
	Identities []uint32
	// Prefixes are peers by address: CIDR peers, and for egress the
	// addresses of the endpoints a peer selector matches (resolved by the
	// controller, because a sender does not know a never-seen
	// destination's identity before its first packet leaves).
	Prefixes []netip.Prefix
	// Ports limits the rule to these protocols and ports; empty means all
	// traffic.
	Ports []Port
}

// Protocol is an IP protocol number a Port may name.
type Protocol uint8

// Protocols a Port may name.
const (
	ProtoICMP Protocol = 1
	ProtoTCP  Protocol = 6
	ProtoUDP  Protocol = 17
	ProtoSCTP Protocol = 132
)

// Port is a protocol with a port range (TCP, UDP, SCTP) or an ICMP type
// and code.
type Port struct {
	Protocol Protocol
	// First..Last is the destination port range; 0..0 means every port.
	// Unused for ICMP.
	First, Last uint16
	// ICMPType and ICMPCode restrict an ICMP port; -1 means any.
	ICMPType, ICMPCode int16
}

// QoS is the quality of service of one local endpoint. A nil *QoS means
// none: best effort, no limit, no marking.
type QoS struct {
	// MaxRateBps caps the endpoint's traffic in each direction (sent by it
	// and sent to it), same-host traffic included; 0 means no cap.
	MaxRateBps uint64
	// MinRateBps is guaranteed to the endpoint's traffic on the host's
	// underlay uplink; 0 means none. The controller admits the sum of
	// minimums on a host up to HostConfig.CapacityBps.
	MinRateBps uint64
	// Priority 0 (highest) .. 7 (lowest, BestEffortPriority: that of
	// traffic without QoS) orders the endpoint's traffic against others
	// when the uplink is contended.
	Priority int
	// DSCP is written into the outer (underlay) IP header of the
	// endpoint's encapsulated traffic so the physical network can honour
	// it; the inner header is left alone. 0 leaves the outer DSCP 0.
	DSCP uint8
}

// VPCQoS is a VPC's aggregate quality of service on one host, shared by
// the VPC's endpoints on that host. A nil *VPCQoS means none.
type VPCQoS struct {
	// MaxRateBps caps the VPC's endpoints' traffic together, per
	// direction; 0 means no cap.
	MaxRateBps uint64
	// MinRateBps is guaranteed to the VPC's endpoints together on the
	// uplink; 0 means none.
	MinRateBps uint64
}
