package datapath

import (
	"net/netip"
	"slices"
)

// Flow is the first packet of a connection as a policy judges it, seen
// from the endpoint whose policy decides. It is the reference for what
// every driver enforces: the sim driver decides with it, and the linux
// driver with it decides which established connections a changed policy
// no longer allows.
type Flow struct {
	Proto Protocol
	// Peer is the other end: the destination (egress) or the source
	// (ingress).
	Peer netip.Addr
	// PeerIdentity is the source's security identity (ingress; 0 for
	// none).
	PeerIdentity uint32
	// Port is the destination port (TCP, UDP, SCTP).
	Port uint16
	// ICMPType and ICMPCode are the ICMP message's (ICMP).
	ICMPType, ICMPCode uint8
}

// AllowsEgress reports whether p lets its endpoint start f (f.Peer is the
// destination).
func (p *EndpointPolicy) AllowsEgress(f Flow) bool {
	return p == nil || !p.EgressIsolated || slices.ContainsFunc(p.Egress, func(r Rule) bool { return r.matches(f, false) })
}

// AllowsIngress reports whether p lets its endpoint accept f (f.Peer and
// f.PeerIdentity are the source's).
func (p *EndpointPolicy) AllowsIngress(f Flow) bool {
	return p == nil || !p.IngressIsolated || slices.ContainsFunc(p.Ingress, func(r Rule) bool { return r.matches(f, true) })
}

func (r *Rule) matches(f Flow, ingress bool) bool {
	peer := r.AllPeers ||
		ingress && f.PeerIdentity != 0 && slices.Contains(r.Identities, f.PeerIdentity) ||
		slices.ContainsFunc(r.Prefixes, func(p netip.Prefix) bool { return p.Contains(f.Peer) })
	if !peer {
		return false
	}
	return len(r.Ports) == 0 || slices.ContainsFunc(r.Ports, func(pt Port) bool { return pt.matches(f) })
}

func (pt Port) matches(f Flow) bool {
	switch {
	case pt.Protocol != f.Proto:
		return false
	case pt.Protocol == ProtoICMP:
		return (pt.ICMPType < 0 || pt.ICMPType == int16(f.ICMPType)) && (pt.ICMPCode < 0 || pt.ICMPCode == int16(f.ICMPCode))
	case pt.First == 0 && pt.Last == 0:
		return true
	}
	last := pt.Last
	if last == 0 {
		last = pt.First // not normalized: a single port
	}
	return pt.First <= f.Port && f.Port <= last
}

// Equal reports whether p and q are the same policy, rule for rule (nil
// equals only nil).
func (p *EndpointPolicy) Equal(q *EndpointPolicy) bool {
	if p == nil || q == nil {
		return p == q
	}
	return p.IngressIsolated == q.IngressIsolated && p.EgressIsolated == q.EgressIsolated &&
		slices.EqualFunc(p.Ingress, q.Ingress, Rule.equal) && slices.EqualFunc(p.Egress, q.Egress, Rule.equal)
}

func (r Rule) equal(o Rule) bool {
	return r.Name == o.Name && r.AllPeers == o.AllPeers && slices.Equal(r.Identities, o.Identities) &&
		slices.Equal(r.Prefixes, o.Prefixes) && slices.Equal(r.Ports, o.Ports)
}
