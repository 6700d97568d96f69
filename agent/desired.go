package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// translate turns a view into the desired state of the data plane. It is
// strict: an address that does not parse exactly, a resource whose ID does
// not match its content, or a desired state the datapath would refuse
// (datapath.Desired.Normalize) fails the whole view with ErrInvalidView and
// every problem found. Resource types this agent does not know are skipped
// (a newer controller may send them).
//
// An endpoint's policy is the OR of the compiled policies whose Applies
// list it: a direction is isolated if one of them isolates it or if its
// VPC is default-deny, and its rules are theirs, in the order of the
// policies' IDs (Applies entries that name no endpoint of the view are
// ignored). Its QoS is its class's; the view's host capacity and the VPCs'
// aggregates go to HostConfig.CapacityBps and VPC.QoS.
func translate(v *state.View, cfg *Config) (*datapath.Desired, error) {
	sc := translations.Get().(*translation)
	defer sc.release()
	d := &sc.in
	d.Host = datapath.HostConfig{Name: cfg.Host, UnderlayIP: cfg.UnderlayIP, UnderlayDev: cfg.UnderlayDev, MTU: cfg.MTU}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for r := range v.All() {
		switch r.Key.Type {
		case view.TypeHost, view.TypeVPC, view.TypeEndpoint, view.TypeQoS:
		case view.TypePolicy:
			ref, err := sc.policy(r, cfg.PolicyCache)
			if err != nil {
				bad("%w", err)
				continue
			}
			if id := view.ID(ref.tenant, ref.name); r.Key.ID != id {
				bad("%s: resource holds policy %q", r.Key, id)
				continue
			}
			sc.policies = append(sc.policies, ref)
			continue
		default:
			continue
		}
		obj, err := sc.dec.Decode(r)
		if err != nil {
			bad("%w", err)
			continue
		}
		switch o := obj.(type) {
		case *view.Host:
			if r.Key.ID != cfg.Host || o.Name != cfg.Host {
				bad("%s: host resource for %q, this is %q", r.Key, o.Name, cfg.Host)
				continue
			}
			if o.UnderlayIP != "" {
				ip, err := parseAddr(o.UnderlayIP)
				if err != nil {
					bad("%s: underlayIP: %w", r.Key, err)
					continue
				}
				d.Host.UnderlayIP = ip
			}
			d.Host.CapacityBps = o.CapacityBps
		case *view.VPC:
			if id := view.ID(o.Tenant, o.Name); r.Key.ID != id {
				bad("%s: resource holds VPC %q", r.Key, id)
				continue
			}
			first := len(sc.subnets)
			for _, s := range o.Subnets {
				cidr, err := parsePrefix(s.CIDR)
				if err != nil {
					bad("%s: subnet %q: cidr: %w", r.Key, s.Name, err)
					continue
				}
				gw, err := parseOptAddr(s.Gateway)
				if err != nil {
					bad("%s: subnet %q: gateway: %w", r.Key, s.Name, err)
					continue
				}
				sc.subnets = append(sc.subnets, datapath.Subnet{Name: s.Name, CIDR: cidr, Gateway: gw})
			}
			vpc := datapath.VPC{Tenant: o.Tenant, Name: o.Name, VNI: o.VNI,
				Subnets: sc.subnets[first:len(sc.subnets):len(sc.subnets)]}
			if o.MaxRateBps != 0 || o.MinRateBps != 0 {
				vpc.QoS = &datapath.VPCQoS{MaxRateBps: o.MaxRateBps, MinRateBps: o.MinRateBps}
			}
			if o.DefaultDeny {
				sc.denyVNIs = append(sc.denyVNIs, o.VNI)
			}
			d.VPCs = append(d.VPCs, vpc)
		case *view.Endpoint:
			id := view.ID(o.Tenant, o.Name)
			if r.Key.ID != id {
				bad("%s: resource holds endpoint %q", r.Key, id)
				continue
			}
			ep, err := endpoint(id, o)
			if err != nil {
				bad("%s: %w", r.Key, err)
				continue
			}
			if cfg.IfName != nil {
				ep.IfName = cfg.IfName(id)
			}
			d.Endpoints = append(d.Endpoints, ep)
			sc.eps = append(sc.eps, epRefs{vpc: o.VPC, class: o.QoSClass})
		case *view.QoS:
			if id := view.ID(o.Tenant, o.Name); r.Key.ID != id {
				bad("%s: resource holds QoS class %q", r.Key, id)
				continue
			}
			q, err := qos(o)
			if err != nil {
				bad("%s: %w", r.Key, err)
				continue
			}
			if sc.classes == nil {
				sc.classes = map[string]*datapath.QoS{}
			}
			sc.classes[r.Key.ID] = q
		}
	}
	if len(errs) == 0 {
		errs = sc.resolve(d)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w at version %d: %w", ErrInvalidView, v.Version, errors.Join(errs...))
	}
	n, err := d.Normalize()
	if err != nil {
		return nil, fmt.Errorf("%w at version %d: %w", ErrInvalidView, v.Version, err)
	}
	// The agent keeps this until the next view: exactly sized, it costs
	// about a third less than the slices Normalize grew by appending.
	if cap(n.VPCs) != len(n.VPCs) {
		n.VPCs = slices.Clone(n.VPCs)
	}
	if cap(n.Endpoints) != len(n.Endpoints) {
		n.Endpoints = slices.Clone(n.Endpoints)
	}
	return n, nil
}

// resolve gives the endpoints of d their policies and QoS, from the
// policies, classes and default-deny VPCs of the view.
func (sc *translation) resolve(d *datapath.Desired) []error {
	var errs []error
	var applies map[string][]int // endpoint ID → indexes into sc.policies
	for i, p := range sc.policies {
		for _, id := range p.applies {
			if applies == nil {
				applies = map[string][]int{}
			}
			applies[id] = append(applies[id], i)
		}
	}
	for i := range d.Endpoints {
		e, refs := &d.Endpoints[i], sc.eps[i]
		if refs.class != "" {
			q, ok := sc.classes[view.ID(tenantOf(e.ID), refs.class)]
			if !ok {
				errs = append(errs, fmt.Errorf("endpoint/%s: QoS class %q is not in the view", e.ID, refs.class))
				continue
			}
			e.QoS = q
		}
		var pols []*datapath.EndpointPolicy
		for _, j := range applies[e.ID] {
			p := sc.policies[j]
			if p.vpc != refs.vpc {
				errs = append(errs, fmt.Errorf("policy/%s: of VPC %q, applies to endpoint %s of VPC %q", view.ID(p.tenant, p.name), p.vpc, e.ID, refs.vpc))
				continue
			}
			if p.err != nil {
				errs = append(errs, fmt.Errorf("policy/%s: %w", view.ID(p.tenant, p.name), p.err))
				continue
			}
			pols = append(pols, p.pol)
		}
		e.Policy = orPolicies(pols, slices.Contains(sc.denyVNIs, e.VNI))
	}
	return errs
}

// orPolicies is the policy of an endpoint that the policies pols apply to,
// in a default-deny VPC or not: nil if it isolates neither direction (it
// allows everything). An only policy is shared, not copied.
func orPolicies(pols []*datapath.EndpointPolicy, deny bool) *datapath.EndpointPolicy {
	if len(pols) == 1 && !deny {
		if p := pols[0]; p.IngressIsolated || p.EgressIsolated {
			return p
		}
		return nil
	}
	or := &datapath.EndpointPolicy{IngressIsolated: deny, EgressIsolated: deny}
	for _, p := range pols {
		or.IngressIsolated = or.IngressIsolated || p.IngressIsolated
		or.EgressIsolated = or.EgressIsolated || p.EgressIsolated
		or.Ingress = append(or.Ingress, p.Ingress...)
		or.Egress = append(or.Egress, p.Egress...)
	}
	if !or.IngressIsolated && !or.EgressIsolated {
		return nil
	}
	return or
}

// policyRef is a policy resource of the view: the policy translated,
// shared with every view that holds the same compiled policy, and the
// local endpoints it applies to.
type policyRef struct {
	*sharedPolicy
	applies []string
}

// policy decodes and translates the policy resource r, or takes the
// translation of its shared bytes from cache (nil: none) and decodes
// only the endpoints it applies to. A policy that cannot be translated
// is not an error here: resolve reports it if it applies to an endpoint.
func (sc *translation) policy(r wire.Resource, cache *PolicyCache) (policyRef, error) {
	var shared []byte
	split := false
	if cache != nil {
		var applies []string
		if shared, applies, split = view.SplitPolicy(r.Bytes()); split {
			if sp := cache.get(shared); sp != nil {
				return policyRef{sp, applies}, nil
			}
		}
	}
	obj, err := sc.dec.Decode(r)
	if err != nil {
		return policyRef{}, err
	}
	p := obj.(*view.Policy) // a new *Policy per Decode
	sp := &sharedPolicy{tenant: p.Tenant, name: p.Name, vpc: p.VPC}
	sp.pol, sp.err = policy(p)
	if split {
		// Valid JSON: so is every data with these shared bytes, and it
		// decodes to this policy but for its Applies (view.SplitPolicy).
		cache.put(shared, sp)
	}
	return policyRef{sp, p.Applies}, nil
}

// policy translates a compiled policy's isolation and rules.
func policy(p *view.Policy) (*datapath.EndpointPolicy, error) {
	out := &datapath.EndpointPolicy{IngressIsolated: p.IngressIsolated, EgressIsolated: p.EgressIsolated}
	var err error
	if out.Ingress, err = rules(p.Ingress); err != nil {
		return nil, fmt.Errorf("ingress: %w", err)
	}
	if out.Egress, err = rules(p.Egress); err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	return out, nil
}

func rules(rs []view.Rule) ([]datapath.Rule, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	// One array each for the rules' prefixes and ports: an agent
	// translates every policy of its view on every change.
	var np, nport int
	for _, r := range rs {
		np, nport = np+len(r.Prefixes), nport+len(r.Ports)
	}
	prefixes, ports := make([]netip.Prefix, np), make([]datapath.Port, nport)
	out := make([]datapath.Rule, len(rs))
	for i, r := range rs {
		dr := &out[i]
		dr.Name, dr.AllPeers, dr.Identities = r.Name, r.AllPeers, r.Identities
		if n := len(r.Prefixes); n > 0 {
			dr.Prefixes, prefixes = prefixes[:n:n], prefixes[n:]
			for j, s := range r.Prefixes {
				p, err := parsePrefix(s)
				if err != nil {
					return nil, fmt.Errorf("rule %q: peer: %w", r.Name, err)
				}
				dr.Prefixes[j] = p
			}
		}
		if n := len(r.Ports); n > 0 {
			dr.Ports, ports = ports[:n:n], ports[n:]
			for j, pt := range r.Ports {
				dr.Ports[j] = datapath.Port{Protocol: datapath.Protocol(pt.Protocol), First: pt.First, Last: pt.Last,
					ICMPType: pt.ICMPType, ICMPCode: pt.ICMPCode}
			}
		}
	}
	return out, nil
}

// qos translates a QoS class.
func qos(o *view.QoS) (*datapath.QoS, error) {
	if o.DSCP < 0 || o.DSCP > datapath.MaxDSCP {
		return nil, fmt.Errorf("DSCP %d out of range 0..%d", o.DSCP, datapath.MaxDSCP)
	}
	return &datapath.QoS{MaxRateBps: o.MaxRateBps, MinRateBps: o.MinRateBps, Priority: o.Priority, DSCP: uint8(o.DSCP)}, nil
}

// tenantOf returns the tenant of an ID "tenant/name".
func tenantOf(id string) string {
	t, _, _ := strings.Cut(id, "/")
	return t
}

// translation is the scratch memory of one translate: the view's
// resources are decoded into it and turned into a Desired that Normalize
// copies. It is lent from translations, so that agents translating views
// at once (a cold start) share a few instead of allocating one per view,
// and agents at rest hold none.
type translation struct {
	dec      view.Decoder
	in       datapath.Desired  // Normalize's input
	subnets  []datapath.Subnet // of in.VPCs
	eps      []epRefs          // of in.Endpoints, by index
	policies []policyRef
	classes  map[string]*datapath.QoS // by QoS resource ID
	denyVNIs []uint32                 // of the default-deny VPCs
}

// epRefs is what an endpoint of the view refers to by name.
type epRefs struct{ vpc, class string }

var translations = sync.Pool{New: func() any { return new(translation) }}

// release clears the references the scratch memory holds and returns it
// to translations.
func (sc *translation) release() {
	clear(sc.in.VPCs)
	clear(sc.in.Endpoints)
	clear(sc.subnets)
	clear(sc.eps)
	clear(sc.policies)
	sc.in = datapath.Desired{VPCs: sc.in.VPCs[:0], Endpoints: sc.in.Endpoints[:0]}
	sc.subnets, sc.eps, sc.policies, sc.denyVNIs = sc.subnets[:0], sc.eps[:0], sc.policies[:0], sc.denyVNIs[:0]
	sc.classes = nil
	translations.Put(sc)
}

func endpoint(id string, o *view.Endpoint) (datapath.Endpoint, error) {
	ip, err := parseAddr(o.IP)
	if err != nil {
		return datapath.Endpoint{}, fmt.Errorf("ip: %w", err)
	}
	mac, err := net.ParseMAC(o.MAC)
	if err != nil || len(mac) != 6 {
		return datapath.Endpoint{}, fmt.Errorf("mac %q is not a 6-byte Ethernet address", o.MAC)
	}
	var prefix netip.Prefix
	if o.CIDR != "" {
		if prefix, err = parsePrefix(o.CIDR); err != nil {
			return datapath.Endpoint{}, fmt.Errorf("cidr: %w", err)
		}
	}
	gw, err := parseOptAddr(o.Gateway)
	if err != nil {
		return datapath.Endpoint{}, fmt.Errorf("gateway: %w", err)
	}
	return datapath.Endpoint{
		ID: id, VNI: o.VNI, Subnet: o.Subnet, IP: ip, MAC: mac, Gateway: gw, Prefix: prefix,
		Netns: o.Netns, Identity: o.Identity,
	}, nil
}

// parseAddr parses an IP address strictly: no zone, no IPv4-mapped IPv6.
func parseAddr(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	case ip.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q: zones are not allowed", s)
	case ip.Is4In6():
		return netip.Addr{}, fmt.Errorf("%q: IPv4-mapped IPv6 addresses are not allowed", s)
	}
	return ip, nil
}

// parseOptAddr is parseAddr, with "" for no address.
func parseOptAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	return parseAddr(s)
}

// parsePrefix parses a network prefix strictly: no host bits set.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", s)
	case p != p.Masked():
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (the network is %s)", s, p.Masked())
	case p.Addr().Is4In6():
		return netip.Prefix{}, fmt.Errorf("%q: IPv4-mapped IPv6 prefixes are not allowed", s)
	}
	return p, nil
}
