package sim

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/datapath"
)

// Packet is a packet as the simulated data plane judges it.
type Packet struct {
	Dst              netip.Addr
	Proto            datapath.Protocol
	SrcPort, DstPort uint16
	// ICMPType and ICMPCode are an ICMP message's.
	ICMPType, ICMPCode uint8
	// Midstream marks a TCP segment that is not a connection's first (no
	// SYN). Without connection state it is judged on its own and makes
	// none, as on linux (nf_conntrack_tcp_loose=0 in the VPC routers): a
	// connection whose state a policy change flushed cannot come back.
	Midstream bool
	// Bytes is the packet's size, for the traffic counters.
	Bytes int
}

// connKey is one direction of a connection in one VPC. An ICMP request
// has its type as destination port and 0 as source port, its answer the
// request's type as source port and 0 as destination port: the answer's key
// is the request's reversed, as in the kernel's conntrack.
type connKey struct {
	vni              uint32
	src, dst         netip.Addr
	proto            datapath.Protocol
	srcPort, dstPort uint16
}

func (k connKey) reverse() connKey {
	return connKey{k.vni, k.dst, k.src, k.proto, k.dstPort, k.srcPort}
}

// conn is a connection's state: what its first packet was judged on.
type conn struct {
	identity           uint32 // the sender's
	icmpType, icmpCode uint8
}

func key(vni uint32, src netip.Addr, p Packet) connKey {
	k := connKey{vni: vni, src: src, dst: p.Dst, proto: p.Proto, srcPort: p.SrcPort, dstPort: p.DstPort}
	if p.Proto == datapath.ProtoICMP {
		switch t := uint16(p.ICMPType); t {
		case 0: // echo reply
			k.srcPort, k.dstPort = 8, 0
		case 14: // timestamp reply
			k.srcPort, k.dstPort = 13, 0
		default:
			k.srcPort, k.dstPort = 0, t
		}
	}
	return k
}

func flow(p Packet) datapath.Flow {
	if p.Proto == datapath.ProtoICMP {
		return datapath.Flow{Proto: p.Proto, ICMPType: p.ICMPType, ICMPCode: p.ICMPCode}
	}
	return datapath.Flow{Proto: p.Proto, Port: p.DstPort}
}

// startsConn reports whether a packet allowed without state makes some:
// a TCP SYN, any UDP or SCTP packet, an ICMP echo or timestamp request.
func startsConn(p Packet) bool {
	switch p.Proto {
	case datapath.ProtoTCP:
		return !p.Midstream
	case datapath.ProtoICMP:
		return p.ICMPType == 8 || p.ICMPType == 13
	}
	return true
}

// Send decides the fate of a packet that local endpoint src sends: routed
// as Resolve does, then judged by policy (see datapath.EndpointPolicy): a
// packet of a known connection passes either way; otherwise src's egress
// policy and, for a local destination, its ingress policy decide, and an
// allowed packet that starts a connection records it. A denied packet gets
// VerdictDenied. A remote destination's ingress is its own host's to judge
// (Deliver).
func (d *Driver) Send(src string, p Packet) (Decision, error) {
	dec, err := d.Resolve(src, p.Dst)
	if err != nil {
		return dec, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.endpoint(src)
	if e == nil {
		return Decision{}, fmt.Errorf("send from %q: %w", src, ErrUnknownEndpoint)
	}
	switch dec.Verdict {
	case VerdictDrop:
		d.countPacket(e.VNI, e.IP, e, nil, p, datapath.DropNoRoute, nil)
		d.observeSent(e, nil, p, dec, datapath.DropNoRoute, nil)
		return dec, nil
	case VerdictMiss: // held until the location is learned
		d.countPacket(e.VNI, e.IP, e, nil, p, datapath.DropNone, nil)
		d.observeSent(e, nil, p, dec, datapath.DropNone, nil)
		return dec, nil
	}
	var to *datapath.Endpoint
	if dec.Verdict == VerdictLocal {
		to = d.endpointAt(datapath.RemoteKey{VNI: e.VNI, IP: p.Dst})
	}
	if reason, at := d.judge(e.VNI, e.IP, e.Identity, e, to, p); reason != "" {
		d.countPacket(e.VNI, e.IP, e, to, p, datapath.DropPolicy, at)
		d.observeSent(e, to, p, dec, datapath.DropPolicy, at)
		return Decision{Verdict: VerdictDenied, VNI: e.VNI, Reason: reason}, nil
	}
	d.countPacket(e.VNI, e.IP, e, to, p, datapath.DropNone, nil)
	d.observeSent(e, to, p, dec, datapath.DropNone, nil)
	return dec, nil
}

// Deliver decides the fate of a packet that arrives from another host in
// VNI vni, sent from src with the sender's identity, for a local endpoint:
// a packet of a known connection passes; otherwise the destination's
// ingress policy decides, by identity or address.
func (d *Driver) Deliver(vni uint32, src netip.Addr, identity uint32, p Packet) (Decision, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return Decision{}, datapath.ErrClosed
	}
	to := d.endpointAt(datapath.RemoteKey{VNI: vni, IP: p.Dst})
	if to == nil {
		return Decision{Verdict: VerdictDrop, VNI: vni, Reason: "no local endpoint"}, nil
	}
	if reason, at := d.judge(vni, src, identity, nil, to, p); reason != "" {
		d.countPacket(vni, src, nil, to, p, datapath.DropPolicy, at)
		d.observeDelivered(vni, src, identity, to, p, datapath.DropPolicy)
		return Decision{Verdict: VerdictDenied, VNI: vni, Reason: reason}, nil
	}
	d.countPacket(vni, src, nil, to, p, datapath.DropNone, nil)
	d.observeDelivered(vni, src, identity, to, p, datapath.DropNone)
	return Decision{Verdict: VerdictLocal, VNI: vni, Endpoint: to.ID, Identity: to.Identity}, nil
}

// judge returns why policy drops p from (src, identity) to p.Dst, and
// the endpoint whose policy does, or "" when it passes; from and to are
// the local endpoints at either end (nil: not local). The caller holds mu.
func (d *Driver) judge(vni uint32, src netip.Addr, identity uint32, from, to *datapath.Endpoint, p Packet) (string, *datapath.Endpoint) {
	k := key(vni, src, p)
	if d.conns[k] != nil || d.conns[k.reverse()] != nil {
		return "", nil
	}
	if reason := denies(from, to, src, identity, flow(p), p.Dst); reason != "" {
		if from != nil && strings.HasPrefix(reason, "policy: egress") {
			return reason, from
		}
		return reason, to
	}
	if startsConn(p) {
		if d.conns == nil {
			d.conns = map[connKey]*conn{}
		}
		d.conns[k] = &conn{identity: identity, icmpType: p.ICMPType, icmpCode: p.ICMPCode}
	}
	return "", nil
}

// denies returns why the first packet f of a connection from src to dst is
// denied: from's egress or to's ingress policy (either nil when not
// local); "" when allowed.
func denies(from, to *datapath.Endpoint, src netip.Addr, identity uint32, f datapath.Flow, dst netip.Addr) string {
	if from != nil {
		f.Peer = dst
		if !from.Policy.AllowsEgress(f) {
			return "policy: egress of " + from.ID
		}
	}
	if to != nil {
		f.Peer, f.PeerIdentity = src, identity
		if !to.Policy.AllowsIngress(f) {
			return "policy: ingress of " + to.ID
		}
	}
	return ""
}

// flushDenied forgets the connections that the programmed policies no
// longer allow, and those of VPCs no longer carried. The caller holds mu.
func (d *Driver) flushDenied() {
	for k, c := range d.conns {
		drop := d.vpc(k.vni) == nil
		if !drop {
			from := d.endpointAt(datapath.RemoteKey{VNI: k.vni, IP: k.src})
			to := d.endpointAt(datapath.RemoteKey{VNI: k.vni, IP: k.dst})
			identity := c.identity
			if from != nil {
				identity = from.Identity // its packets carry the current one
			}
			f := datapath.Flow{Proto: k.proto, Port: k.dstPort, ICMPType: c.icmpType, ICMPCode: c.icmpCode}
			drop = denies(from, to, k.src, identity, f, k.dst) != ""
		}
		if drop {
			delete(d.conns, k)
			d.count(kindConn, verbDel)
		}
	}
}

// keepInvalid returns n with every VPC of n.Invalid as programmed before
// (a VPC not programmed before stays absent), and the error naming those
// VPCs. The caller holds mu.
func (d *Driver) keepInvalid(n *datapath.Desired) (*datapath.Desired, error) {
	m := &datapath.Desired{Host: n.Host}
	d.failed = make(map[uint32]error, len(n.Invalid))
	errs := make([]error, 0, len(n.Invalid))
	for vni, err := range n.Invalid {
		d.failed[vni] = err
		errs = append(errs, &datapath.VPCError{VNI: vni, Err: err})
	}
	slices.SortFunc(errs, func(a, b error) int {
		var x, y *datapath.VPCError
		errors.As(a, &x)
		errors.As(b, &y)
		return cmp.Compare(x.VNI, y.VNI)
	})
	for _, v := range n.VPCs {
		if n.Invalid[v.VNI] == nil {
			m.VPCs = append(m.VPCs, v)
		} else if old := d.vpc(v.VNI); old != nil {
			m.VPCs = append(m.VPCs, *old)
		}
	}
	ids := make(map[string]bool, len(n.Endpoints))
	for _, e := range n.Endpoints {
		if n.Invalid[e.VNI] == nil {
			m.Endpoints = append(m.Endpoints, e)
			ids[e.ID] = true
		}
	}
	for _, e := range d.eps {
		if n.Invalid[e.VNI] != nil && !ids[e.ID] {
			m.Endpoints = append(m.Endpoints, e)
		}
	}
	slices.SortFunc(m.Endpoints, func(a, b datapath.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return m, errors.Join(errs...)
}
