package v1

import (
	"net"
	"net/netip"
	"strings"
)

// DefaultPriority is the QoSClass priority when none is given.
const DefaultPriority = 4

// Default fills in the defaults of o in place and puts addresses in their
// canonical text form; it is idempotent, and is applied before validation
// (decode → Default → Validate).
//
//   - apiVersion and kind, if empty;
//   - Subnet: spec.gateway is the first host address of spec.cidr;
//   - QoSClass: spec.priority is DefaultPriority;
//   - SecurityPolicy: a port's protocol is TCP, and protocols are upper case;
//   - CIDRs and IPs are rewritten in canonical form (2001:DB8::/32 →
//     2001:db8::/32) when they parse; a CIDR with host bits set is left
//     alone for validation to reject, never silently masked;
//   - MACs are lower case with colons (02-00-0A-00-01-0A → 02:00:0a:00:01:0a).
func Default(o Object) {
	tm := o.GetTypeMeta()
	if tm.APIVersion == "" {
		tm.APIVersion = APIVersion
	}
	if tm.Kind == "" {
		tm.Kind = kindOf(o)
	}
	switch o := o.(type) {
	case *Host:
		o.Spec.UnderlayIP = canonicalAddr(o.Spec.UnderlayIP)
	case *VPC:
		for i, c := range o.Spec.CIDRs {
			o.Spec.CIDRs[i] = canonicalPrefix(c)
		}
	case *Subnet:
		o.Spec.CIDR = canonicalPrefix(o.Spec.CIDR)
		if o.Spec.Gateway == "" {
			if p, err := netip.ParsePrefix(o.Spec.CIDR); err == nil && p == p.Masked() {
				if gw := p.Addr().Next(); gw.IsValid() && p.Contains(gw) {
					o.Spec.Gateway = gw.String()
				}
			}
		}
		o.Spec.Gateway = canonicalAddr(o.Spec.Gateway)
	case *Endpoint:
		o.Spec.IP = canonicalAddr(o.Spec.IP)
		o.Spec.MAC = canonicalMAC(o.Spec.MAC)
	case *SecurityPolicy:
		defaultRules(o.Spec.Ingress)
		defaultRules(o.Spec.Egress)
	case *QoSClass:
		if o.Spec.Priority == nil {
			p := DefaultPriority
			o.Spec.Priority = &p
		}
	}
}

func defaultRules(rules []PolicyRule) {
	for i := range rules {
		r := &rules[i]
		for j := range r.Peers {
			r.Peers[j].CIDR = canonicalPrefix(r.Peers[j].CIDR)
		}
		for j := range r.Ports {
			p := &r.Ports[j]
			if p.Protocol == "" {
				p.Protocol = "TCP"
			}
			p.Protocol = strings.ToUpper(p.Protocol)
		}
	}
}

// kindOf returns the Kind of o's Go type.
func kindOf(o Object) string {
	switch o.(type) {
	case *Tenant:
		return KindTenant
	case *Host:
		return KindHost
	case *VPC:
		return KindVPC
	case *Subnet:
		return KindSubnet
	case *Endpoint:
		return KindEndpoint
	case *SecurityPolicy:
		return KindSecurityPolicy
	case *QoSClass:
		return KindQoSClass
	}
	return ""
}

// canonicalPrefix rewrites a CIDR in canonical text if it parses and has no
// host bits set; otherwise it returns s unchanged.
func canonicalPrefix(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil || p != p.Masked() {
		return s
	}
	return p.String()
}

// canonicalAddr rewrites an IP address in canonical text if it parses.
func canonicalAddr(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	return a.String()
}

// canonicalMAC rewrites a 48-bit MAC as lower-case colon-separated hex if
// it parses, else lower-cases it.
func canonicalMAC(s string) string {
	if hw, err := net.ParseMAC(s); err == nil && len(hw) == 6 {
		return hw.String()
	}
	return strings.ToLower(s)
}
