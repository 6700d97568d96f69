package ebpf

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/ports"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// Compiling endpoints' policies into the policy maps (see "Security
// policy" in the package documentation). A class is the rules of one
// isolated direction, named by a hash of its content: endpoints with the
// same rules share it, a changed policy makes a new class, and a class's
// entries never change.

// policyLayout names the way classes are laid out in the maps; it is part
// of every class and port set ID.
const policyLayout = "weft-ebpf-policy-v1"

// Endpoint flags (EP_* in weft.c) and port set flags (PS_*).
const (
	epEgressIsolated  = 1
	epIngressIsolated = 2
	epTxShaped        = 4
	epRxShaped        = 8

	psAll  = 1
	psICMP = 2
)

// class is the compiled rules of one isolated direction.
type class struct {
	id   uint64
	ids  map[weftIdKey]weftPolPeer
	nets map[weftNetKey]weftPolPeer
	sets map[uint64]*ports.Set // the port sets its peers use, by ID
}

// hash64 names content: the first 8 bytes of its SHA-256 with the
// layout, never 0 (which means "no class").
func hash64(kind, content string) uint64 {
	h := sha256.Sum256([]byte(policyLayout + "\x00" + kind + "\x00" + content))
	return max(1, binary.LittleEndian.Uint64(h[:8]))
}

func setID(s *ports.Set) uint64 { return hash64("set", s.Key()) }

// peerOf is the map value giving a peer the port set s.
func peerOf(s *ports.Set) weftPolPeer {
	p := weftPolPeer{Set: setID(s)}
	if s.All {
		p.Flags |= psAll
	}
	if len(s.ICMP) > 0 {
		p.Flags |= psICMP
	}
	for _, b := range s.Blocks() {
		p.Blocks |= 1 << b.Bits
	}
	return p
}

// compileClass compiles the rules of one isolated direction. Peers by
// address go into a longest-prefix-match map, so each prefix holds the
// union of what it and every prefix containing it allow (and what rules
// for all peers allow: the prefix 0.0.0.0/0). IPv6 peers are left out: no
// packet of this IPv4 overlay can match them.
func compileClass(rules []datapath.Rule, ingress bool) *class {
	ids := map[uint32]*ports.Set{}
	nets := map[netip.Prefix]*ports.Set{}
	all := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	union := func(cur, s *ports.Set) *ports.Set {
		if cur == nil {
			return s
		}
		return cur.Union(s)
	}
	for _, r := range rules {
		s := ports.Of(r.Ports)
		if r.AllPeers {
			nets[all] = union(nets[all], s)
			continue
		}
		if ingress {
			for _, id := range r.Identities {
				ids[id] = union(ids[id], s)
			}
		}
		for _, p := range r.Prefixes {
			if p.Addr().Is4() {
				nets[p] = union(nets[p], s)
			}
		}
	}
	type entry struct {
		p netip.Prefix
		s *ports.Set
	}
	prefixes := make([]entry, 0, len(nets))
	for p, s := range nets {
		prefixes = append(prefixes, entry{p, s})
	}
	slices.SortFunc(prefixes, func(a, b entry) int { return datapath.ComparePrefix(a.p, b.p) })
	// Prefixes nest or are disjoint: in address order, a stack of the ones
	// containing the current prefix holds what they allow together.
	var stack []entry
	for i, e := range prefixes {
		for len(stack) > 0 && !stack[len(stack)-1].p.Contains(e.p.Addr()) {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			prefixes[i].s = stack[len(stack)-1].s.Union(e.s)
		}
		stack = append(stack, prefixes[i])
	}

	c := &class{ids: make(map[weftIdKey]weftPolPeer, len(ids)), nets: make(map[weftNetKey]weftPolPeer, len(prefixes)), sets: map[uint64]*ports.Set{}}
	idList := make([]uint32, 0, len(ids))
	for id := range ids {
		idList = append(idList, id)
	}
	slices.Sort(idList)
	b := strconv.AppendBool(nil, ingress)
	for _, id := range idList {
		s := ids[id]
		c.sets[setID(s)] = s
		b = fmt.Appendf(b, ";i%d=%x", id, setID(s))
	}
	for _, e := range prefixes {
		c.sets[setID(e.s)] = e.s
		b = fmt.Appendf(b, ";n%s=%x", e.p, setID(e.s))
	}
	c.id = hash64("class", string(b))
	lo, hi := uint32(c.id), uint32(c.id>>32)
	for _, id := range idList {
		c.ids[weftIdKey{Class: c.id, Identity: id}] = peerOf(ids[id])
	}
	for _, e := range prefixes {
		c.nets[weftNetKey{Prefixlen: 64 + uint32(e.p.Bits()), ClassLo: lo, ClassHi: hi, Ip: be32(e.p.Addr())}] = peerOf(e.s)
	}
	return c
}

// epPolicy is an endpoint's compiled policy, kept while its policy stays
// the same.
type epPolicy struct {
	policy          *datapath.EndpointPolicy
	egress, ingress *class // nil: the direction is not isolated
}

func (p *epPolicy) flags() uint16 {
	var f uint16
	if p.egress != nil {
		f |= epEgressIsolated
	}
	if p.ingress != nil {
		f |= epIngressIsolated
	}
	return f
}

func classID(c *class) uint64 {
	if c == nil {
		return 0
	}
	return c.id
}

// compilePolicy compiles e's policy, or returns the cached one if it is
// the same.
func (d *Driver) compilePolicy(e *datapath.Endpoint) *epPolicy {
	if c := d.policies[e.ID]; c != nil && c.policy.Equal(e.Policy) {
		return c
	}
	c := &epPolicy{policy: e.Policy}
	if p := e.Policy; p != nil {
		if p.EgressIsolated {
			c.egress = compileClass(p.Egress, false)
		}
		if p.IngressIsolated {
			c.ingress = compileClass(p.Ingress, true)
		}
	}
	return c
}

// policyMaps is the desired content of the four policy maps.
type policyMaps struct {
	ids   map[weftIdKey]weftPolPeer
	nets  map[weftNetKey]weftPolPeer
	ports map[weftPortKey]uint8
	icmp  map[weftIcmpKey]weftIcmpCodes
}

// policyMapsOf merges the classes of the endpoints' policies.
func policyMapsOf(pols []*epPolicy) *policyMaps {
	m := &policyMaps{ids: map[weftIdKey]weftPolPeer{}, nets: map[weftNetKey]weftPolPeer{},
		ports: map[weftPortKey]uint8{}, icmp: map[weftIcmpKey]weftIcmpCodes{}}
	seen := map[uint64]bool{}
	sets := map[uint64]*ports.Set{}
	for _, p := range pols {
		for _, c := range []*class{p.egress, p.ingress} {
			if c == nil || seen[c.id] {
				continue
			}
			seen[c.id] = true
			for k, v := range c.ids {
				m.ids[k] = v
			}
			for k, v := range c.nets {
				m.nets[k] = v
			}
			for id, s := range c.sets {
				sets[id] = s
			}
		}
	}
	for id, s := range sets {
		for _, b := range s.Blocks() {
			m.ports[weftPortKey{Set: id, Proto: b.Proto, Bits: uint8(b.Bits), Port: b.First}] = 1
		}
		for t, codes := range s.ICMP {
			m.icmp[weftIcmpKey{Set: id, Type: t}] = weftIcmpCodes{Bits: codes}
		}
	}
	return m
}

// connFlow is a tracked connection as policy judges it again: the flow of
// its first packet, and its ends.
func connFlow(k weftCtKey, v weftCt) datapath.Flow {
	f := datapath.Flow{Proto: datapath.Protocol(k.Proto)}
	switch f.Proto {
	case datapath.ProtoICMP:
		f.ICMPType, f.ICMPCode = v.IcmpType, v.IcmpCode
	case datapath.ProtoTCP, datapath.ProtoUDP, datapath.ProtoSCTP:
		f.Port = ntohs(k.Dport)
	}
	return f
}

func ntohs(v uint16) uint16 { return v>>8 | v<<8 }

// stillAllowed reports whether the policies of a connection's local ends
// (nil: not local) allow its first packet: the egress of its sender, with
// peer dst, and the ingress of its destination, with peer src and the
// sender's identity (a local sender's current one).
func stillAllowed(from, to *datapath.Endpoint, src, dst netip.Addr, identity uint32, f datapath.Flow) bool {
	if from != nil {
		identity = from.Identity
		f.Peer = dst
		if !from.Policy.AllowsEgress(f) {
			return false
		}
	}
	if to != nil {
		f.Peer, f.PeerIdentity = src, identity
		if !to.Policy.AllowsIngress(f) {
			return false
		}
	}
	return from != nil || to != nil
}

// flushConns deletes the tracked connections that the programmed
// endpoints' policies no longer allow (judged like their first packet),
// and those with no local end left. It returns how many it deleted.
func (d *Driver) flushConns(eps map[string]*epState) (int, error) {
	local := make(map[datapath.RemoteKey]*datapath.Endpoint, len(eps))
	for _, st := range eps {
		local[datapath.RemoteKey{VNI: st.ep.VNI, IP: st.ep.IP}] = &st.ep
	}
	var (
		k    weftCtKey
		v    weftCt
		gone []weftCtKey
	)
	it := d.objs.Conns.Iterate()
	for it.Next(&k, &v) {
		src, dst := addrOf(k.Src), addrOf(k.Dst)
		from, to := local[datapath.RemoteKey{VNI: k.Vni, IP: src}], local[datapath.RemoteKey{VNI: k.Vni, IP: dst}]
		if !stillAllowed(from, to, src, dst, v.Identity, connFlow(k, v)) {
			gone = append(gone, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("read connections: %w", err)
	}
	n := 0
	for _, k := range gone {
		if err := d.ops.Write(writes.ConntrackDel, func() error { return d.objs.Conns.Delete(k) }); err != nil {
			return n, fmt.Errorf("delete connection: %w", err)
		}
		n++
	}
	return n, nil
}

// policyDigest names what tracked connections are judged by: every
// programmed endpoint's address, identity and compiled classes. A Set
// that changes it judges the connections again.
func policyDigest(eps map[string]*epState, pols map[string]*epPolicy) string {
	ids := make([]string, 0, len(eps))
	for id := range eps {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmp.Compare)
	b := make([]byte, 0, 64*len(ids))
	for _, id := range ids {
		st, p := eps[id], pols[id]
		if p == nil {
			p = &epPolicy{}
		}
		b = fmt.Appendf(b, "%s %d %s %d %x %x\n", id, st.ep.VNI, st.ep.IP, st.ep.Identity, classID(p.egress), classID(p.ingress))
	}
	return string(b)
}
