package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/view"
)

// translate turns a view into the desired state of the data plane. It is
// strict: an address that does not parse exactly, a resource whose ID does
// not match its content, or a desired state the datapath would refuse
// (datapath.Desired.Normalize) fails the whole view with ErrInvalidView and
// every problem found. Resource types this agent does not know are skipped
// (a newer controller may send them); policies and QoS classes are decoded
// (so a bad one is refused) but not yet programmed: Desired has no fields
// for them yet.
func translate(v *state.View, cfg *Config) (*datapath.Desired, error) {
	sc := translations.Get().(*translation)
	defer sc.release()
	d := &sc.in
	d.Host = datapath.HostConfig{Name: cfg.Host, UnderlayIP: cfg.UnderlayIP, UnderlayDev: cfg.UnderlayDev, MTU: cfg.MTU}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for r := range v.All() {
		switch r.Key.Type {
		case view.TypeHost, view.TypeVPC, view.TypeEndpoint, view.TypePolicy, view.TypeQoS:
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
			d.VPCs = append(d.VPCs, datapath.VPC{Tenant: o.Tenant, Name: o.Name, VNI: o.VNI,
				Subnets: sc.subnets[first:len(sc.subnets):len(sc.subnets)]})
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
			d.Endpoints = append(d.Endpoints, ep)
		case *view.Policy:
			if id := view.ID(o.Tenant, o.Name); r.Key.ID != id {
				bad("%s: resource holds policy %q", r.Key, id)
			}
		case *view.QoS:
			if id := view.ID(o.Tenant, o.Name); r.Key.ID != id {
				bad("%s: resource holds QoS class %q", r.Key, id)
			}
		}
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

// translation is the scratch memory of one translate: the view's
// resources are decoded into it and turned into a Desired that Normalize
// copies. It is lent from translations, so that agents translating views
// at once (a cold start) share a few instead of allocating one per view,
// and agents at rest hold none.
type translation struct {
	dec     view.Decoder
	in      datapath.Desired  // Normalize's input
	subnets []datapath.Subnet // of in.VPCs
}

var translations = sync.Pool{New: func() any { return new(translation) }}

// release clears the references the scratch memory holds and returns it
// to translations.
func (sc *translation) release() {
	clear(sc.in.VPCs)
	clear(sc.in.Endpoints)
	clear(sc.subnets)
	sc.in = datapath.Desired{VPCs: sc.in.VPCs[:0], Endpoints: sc.in.Endpoints[:0]}
	sc.subnets = sc.subnets[:0]
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
