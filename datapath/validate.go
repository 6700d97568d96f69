package datapath

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// MaxVNI is the largest 24-bit VXLAN network identifier.
const MaxVNI = 1<<24 - 1

// Normalize returns a deep copy of d with defaults filled in (subnet
// gateways, endpoint Gateway/Prefix/IfName, a port rule's Last), QoS rates
// rounded down to whole bytes per second, and slices in canonical order
// (VPCs by VNI, subnets by CIDR, endpoints by ID), or an error wrapping
// ErrInvalid that lists every problem. Drivers program the copy, so a
// caller may reuse d after Set returns. Endpoints that share one
// *EndpointPolicy in d share one copy of it in the result (read-only, as
// all of the result).
//
// Problems confined to one VPC (an endpoint's policy, its identity, two
// endpoints attached to the same interface of one namespace) do not fail
// the whole state: they are listed in the copy's Invalid, and a driver
// fails only those VPCs.
func (d *Desired) Normalize() (*Desired, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: nil desired state", ErrInvalid)
	}
	n := &Desired{Host: d.Host}
	var errs invalidErrs
	bad := errs.add
	var vpcErrs map[uint32]*invalidErrs
	vpcBad := func(vni uint32, format string, args ...any) {
		if vpcErrs == nil {
			vpcErrs = map[uint32]*invalidErrs{}
		}
		if vpcErrs[vni] == nil {
			vpcErrs[vni] = new(invalidErrs)
		}
		vpcErrs[vni].add(format, args...)
	}
	// Sized up front: an agent normalizes every view it applies, and a
	// simulated host's share of a cold start was mostly these slices
	// growing. Empty stays nil.
	if len(d.VPCs) > 0 {
		n.VPCs = make([]VPC, 0, len(d.VPCs))
	}
	if len(d.Endpoints) > 0 {
		n.Endpoints = make([]Endpoint, 0, len(d.Endpoints))
	}

	h := d.Host
	if h.Name == "" {
		bad("host: empty name")
	}
	if !h.UnderlayIP.IsValid() {
		bad("host %q: no underlay IP", h.Name)
	}
	if h.MTU < 0 || (h.MTU > 0 && h.MTU-VXLANOverhead < 576) {
		bad("host %q: underlay MTU %d leaves less than 576 for the overlay", h.Name, h.MTU)
	}
	if _, _, err := normRates(h.CapacityBps, 0); err != nil {
		bad("host %q: capacity: %v", h.Name, err)
	}

	type subnetKey struct {
		vni  uint32
		name string
	}
	nsub := 0
	for _, v := range d.VPCs {
		nsub += len(v.Subnets)
	}
	subnets := make(map[subnetKey]Subnet, nsub)
	for _, v := range d.VPCs {
		nv := VPC{Tenant: v.Tenant, Name: v.Name, VNI: v.VNI}
		if len(v.Subnets) > 0 {
			nv.Subnets = make([]Subnet, 0, len(v.Subnets))
		}
		if v.VNI == 0 || v.VNI > MaxVNI {
			bad("vpc %s/%s: VNI %d out of range 1..%d", v.Tenant, v.Name, v.VNI, MaxVNI)
		}
		var err error
		if nv.QoS, err = normVPCQoS(v.QoS); err != nil {
			bad("vpc %d: qos: %v", v.VNI, err)
		}
		for _, s := range v.Subnets {
			if s.Name == "" {
				bad("vpc %d: subnet with empty name", v.VNI)
			}
			if !s.CIDR.IsValid() || s.CIDR != s.CIDR.Masked() {
				bad("vpc %d subnet %q: CIDR %s is not a network prefix", v.VNI, s.Name, s.CIDR)
				continue
			}
			if !s.Gateway.IsValid() {
				s.Gateway = s.CIDR.Addr().Next()
			}
			if !s.CIDR.Contains(s.Gateway) || s.Gateway == s.CIDR.Addr() {
				bad("vpc %d subnet %q: gateway %s not a host address of %s", v.VNI, s.Name, s.Gateway, s.CIDR)
			}
			k := subnetKey{v.VNI, s.Name}
			if _, dup := subnets[k]; dup {
				bad("vpc %d: duplicate subnet %q", v.VNI, s.Name)
			}
			for _, o := range nv.Subnets {
				if o.CIDR.Overlaps(s.CIDR) {
					bad("vpc %d: subnet %q (%s) overlaps subnet %q (%s)", v.VNI, s.Name, s.CIDR, o.Name, o.CIDR)
				}
			}
			subnets[k] = s
			nv.Subnets = append(nv.Subnets, s)
		}
		slices.SortFunc(nv.Subnets, func(a, b Subnet) int { return ComparePrefix(a.CIDR, b.CIDR) })
		n.VPCs = append(n.VPCs, nv)
	}
	slices.SortFunc(n.VPCs, func(a, b VPC) int { return cmp.Compare(a.VNI, b.VNI) })
	for i := 1; i < len(n.VPCs); i++ {
		if n.VPCs[i].VNI == n.VPCs[i-1].VNI {
			bad("duplicate VNI %d", n.VPCs[i].VNI)
		}
	}

	type ipKey struct {
		vni uint32
		ip  netip.Addr
	}
	ips := make(map[ipKey]string, len(d.Endpoints))
	type attached struct {
		id  string
		vni uint32
	}
	var attach map[string]attached // netns+ifname -> endpoint
	// Endpoints that share one *EndpointPolicy (an agent gives every
	// endpoint a policy selects the same one) share its normalized copy:
	// a policy is copied once, not once per endpoint.
	type normalized struct {
		p   *EndpointPolicy
		err error
	}
	var policies map[*EndpointPolicy]normalized
	for _, e := range d.Endpoints {
		ne := e
		ne.MAC = slices.Clone(e.MAC)
		if e.Identity > MaxIdentity {
			vpcBad(e.VNI, "endpoint %q: identity %d out of range 0..%d", e.ID, e.Identity, MaxIdentity)
		}
		if e.Policy != nil {
			np, done := policies[e.Policy]
			if !done {
				np.p, np.err = normalizePolicy(e.Policy)
				if policies == nil {
					policies = map[*EndpointPolicy]normalized{}
				}
				policies[e.Policy] = np
			}
			var perr error
			if ne.Policy, perr = np.p, np.err; perr != nil {
				// Kept as given, so that normalizing the copy again (a
				// driver normalizes what an agent normalized) finds it.
				ne.Policy = e.Policy
				vpcBad(e.VNI, "endpoint %q: %v", e.ID, perr)
			}
		}
		if e.ID == "" {
			bad("endpoint with empty ID (ip %s)", e.IP)
		}
		var err error
		if ne.QoS, err = normQoS(e.QoS); err != nil {
			bad("endpoint %q: qos: %v", e.ID, err)
		}
		if ne.IfName == "" {
			ne.IfName = DefaultIfName
		}
		if err := checkIfName(ne.IfName); err != nil {
			bad("endpoint %q: %v", e.ID, err)
		}
		if e.Netns != "" && !filepath.IsAbs(e.Netns) {
			bad("endpoint %q: netns %q is not an absolute path", e.ID, e.Netns)
		}
		if len(e.MAC) != 6 || e.MAC[0]&1 != 0 || bytes.Equal(e.MAC, make(net.HardwareAddr, 6)) {
			bad("endpoint %q: MAC %q is not a unicast Ethernet address", e.ID, e.MAC)
		}
		s, ok := subnets[subnetKey{e.VNI, e.Subnet}]
		if !ok {
			bad("endpoint %q: no subnet %q in VNI %d", e.ID, e.Subnet, e.VNI)
		} else {
			if !ne.Prefix.IsValid() {
				ne.Prefix = s.CIDR
			}
			if !ne.Gateway.IsValid() {
				ne.Gateway = s.Gateway
			}
			if ne.Prefix != s.CIDR {
				bad("endpoint %q: prefix %s differs from subnet %q (%s)", e.ID, ne.Prefix, s.Name, s.CIDR)
			}
			if ne.Gateway != s.Gateway {
				bad("endpoint %q: gateway %s differs from subnet %q (%s)", e.ID, ne.Gateway, s.Name, s.Gateway)
			}
			if !e.IP.IsValid() || !s.CIDR.Contains(e.IP) || e.IP == s.CIDR.Addr() || e.IP == s.Gateway {
				bad("endpoint %q: IP %s is not a host address of %s other than the gateway", e.ID, e.IP, s.CIDR)
			}
		}
		if e.IP.IsValid() {
			k := ipKey{e.VNI, e.IP}
			if other, dup := ips[k]; dup {
				bad("endpoint %q: IP %s in VNI %d already used by %q", e.ID, e.IP, e.VNI, other)
			}
			ips[k] = e.ID
		}
		if e.Netns != "" {
			k := e.Netns + "\x00" + ne.IfName
			if other, dup := attach[k]; dup {
				// Both VPCs fail: neither endpoint may take the interface.
				vpcBad(e.VNI, "endpoint %q: %s in %s already used by %q", e.ID, ne.IfName, e.Netns, other.id)
				vpcBad(other.vni, "endpoint %q: %s in %s also wanted by %q", other.id, ne.IfName, e.Netns, e.ID)
			}
			if attach == nil {
				attach = map[string]attached{}
			}
			attach[k] = attached{e.ID, e.VNI}
		}
		n.Endpoints = append(n.Endpoints, ne)
	}
	slices.SortFunc(n.Endpoints, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
	for i := 1; i < len(n.Endpoints); i++ {
		if n.Endpoints[i].ID == n.Endpoints[i-1].ID {
			bad("duplicate endpoint %q", n.Endpoints[i].ID)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for vni, e := range vpcErrs {
		if n.Invalid == nil {
			n.Invalid = make(map[uint32]error, len(vpcErrs))
		}
		n.Invalid[vni] = errors.Join(*e...)
	}
	return n, nil
}

// normalizePolicy returns a deep copy of p with defaults filled in (a port
// rule's Last defaults to First), or why p cannot be programmed.
func normalizePolicy(p *EndpointPolicy) (*EndpointPolicy, error) {
	np := &EndpointPolicy{IngressIsolated: p.IngressIsolated, EgressIsolated: p.EgressIsolated}
	var errs []error
	// One array each for the copies of all the rules' identities,
	// prefixes and ports, and one for the rules: an agent normalizes every
	// policy of its view on every change.
	var nid, npfx, nport int
	for _, rs := range [2][]Rule{p.Ingress, p.Egress} {
		for _, r := range rs {
			nid, npfx, nport = nid+len(r.Identities), npfx+len(r.Prefixes), nport+len(r.Ports)
		}
	}
	ids, pfxs, ports := make([]uint32, 0, nid), make([]netip.Prefix, 0, npfx), make([]Port, 0, nport)
	all := make([]Rule, 0, len(p.Ingress)+len(p.Egress))
	rules := func(dir string, rs []Rule) []Rule {
		if len(rs) == 0 {
			return nil
		}
		first := len(all)
		for i, r := range rs {
			r.Identities, ids = carve(ids, r.Identities)
			r.Prefixes, pfxs = carve(pfxs, r.Prefixes)
			r.Ports, ports = carve(ports, r.Ports)
			if err := normalizeRule(&r, dir == "egress"); err != nil {
				errs = append(errs, fmt.Errorf("%s[%d] %q: %w", dir, i, r.Name, err))
			}
			all = append(all, r)
		}
		return all[first:len(all):len(all)]
	}
	np.Ingress = rules("ingress", p.Ingress)
	np.Egress = rules("egress", p.Egress)
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy: %w", errors.Join(errs...))
	}
	return np, nil
}

// carve appends src to buf, which has room for it, and returns the copy
// (nil for an empty src, as slices.Clone of nil; capped so that appending
// to it cannot reach into the rest of buf) and buf grown.
func carve[T any](buf, src []T) (cp, grown []T) {
	if src == nil {
		return nil, buf
	}
	n := len(buf)
	buf = append(buf, src...)
	return buf[n:len(buf):len(buf)], buf
}

func normalizeRule(r *Rule, egress bool) error {
	if egress && len(r.Identities) > 0 {
		return errors.New("identities are ingress peers only (an egress peer is an address)")
	}
	for _, id := range r.Identities {
		if id == 0 || id > MaxIdentity {
			return fmt.Errorf("identity %d out of range 1..%d", id, MaxIdentity)
		}
	}
	for _, p := range r.Prefixes {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("peer %s is not a network prefix", p)
		}
	}
	for i := range r.Ports {
		pt := &r.Ports[i]
		switch pt.Protocol {
		case ProtoTCP, ProtoUDP, ProtoSCTP:
			if pt.Last == 0 {
				pt.Last = pt.First
			}
			if pt.First == 0 && pt.Last != 0 || pt.First > pt.Last {
				return fmt.Errorf("port range %d..%d (want 1 <= first <= last, or 0..0 for every port)", pt.First, pt.Last)
			}
		case ProtoICMP:
			if pt.First != 0 || pt.Last != 0 {
				return errors.New("an ICMP rule has a type and code, not ports")
			}
			if pt.ICMPType < -1 || pt.ICMPType > 255 || pt.ICMPCode < -1 || pt.ICMPCode > 255 || pt.ICMPType == -1 && pt.ICMPCode != -1 {
				return fmt.Errorf("ICMP type %d code %d (want -1..255, and a code only with a type)", pt.ICMPType, pt.ICMPCode)
			}
		default:
			return fmt.Errorf("protocol %d (want ICMP, TCP, UDP or SCTP)", pt.Protocol)
		}
	}
	return nil
}

// invalidErrs collects the ErrInvalid errors of a Normalize.
type invalidErrs []error

// add records an ErrInvalid error. Not inlined: Normalize calls it from
// many places, and inlined each call's arguments took stack space, which
// grew the stack of every goroutine that normalizes.
//
//go:noinline
func (e *invalidErrs) add(format string, args ...any) {
	*e = append(*e, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
}

func checkIfName(name string) error {
	if len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// Validate checks a remote as received from the controller.
func (r Remote) Validate() error {
	switch {
	case r.VNI == 0 || r.VNI > MaxVNI:
		return fmt.Errorf("%w: remote %s: VNI %d out of range", ErrInvalid, r.IP, r.VNI)
	case !r.IP.IsValid():
		return fmt.Errorf("%w: remote in VNI %d: no IP", ErrInvalid, r.VNI)
	case !r.HostUnderlay.IsValid():
		return fmt.Errorf("%w: remote %d/%s: no host underlay address", ErrInvalid, r.VNI, r.IP)
	}
	return nil
}

// VPC returns the VPC with the given VNI, or nil.
func (d *Desired) VPC(vni uint32) *VPC {
	for i := range d.VPCs {
		if d.VPCs[i].VNI == vni {
			return &d.VPCs[i]
		}
	}
	return nil
}
