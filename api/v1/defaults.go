package v1

import (
	"net"
	"net/netip"
	"slices"
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
//   - VPC: spec.defaultPolicy is allow;
//   - AppIntent: spec.latency is normal;
//   - SecurityPolicy and AppIntent: a port's protocol is TCP, and protocols
//     are upper case;
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
		if o.Spec.DefaultPolicy == "" {
			o.Spec.DefaultPolicy = DefaultPolicyAllow
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
		for _, r := range slices.Concat(o.Spec.Ingress, o.Spec.Egress) {
			defaultPeers(r.Peers)
			defaultPorts(r.Ports)
		}
	case *QoSClass:
		if o.Spec.Priority == nil {
			p := DefaultPriority
			o.Spec.Priority = &p
		}
	case *Trace:
		defaultTrace(o)
	case *Capture:
		defaultCapture(o)
	case *AppIntent:
		if o.Spec.Latency == "" {
			o.Spec.Latency = LatencyNormal
		}
		for i := range o.Spec.TalksTo {
			d := &o.Spec.TalksTo[i]
			d.CIDR = canonicalPrefix(d.CIDR)
			defaultPorts(d.Ports)
		}
		for _, e := range o.Spec.Exposes {
			defaultPeers(e.From)
			defaultPorts(e.Ports)
		}
	}
}

func defaultPeers(peers []PolicyPeer) {
	for i := range peers {
		peers[i].CIDR = canonicalPrefix(peers[i].CIDR)
	}
}

func defaultPorts(ports []PolicyPort) {
	for i := range ports {
		p := &ports[i]
		if p.Protocol == "" {
			p.Protocol = ProtocolTCP
		}
		p.Protocol = strings.ToUpper(p.Protocol)
	}
}

// DefaultRefs fills in the defaults that depend on other objects, read
// through l; the controller applies it after Default, before validation,
// and must make the write conditional on what it read:
//
//   - SecurityPolicy and AppIntent: an empty spec.vpc is the stored
//     object's (old, nil on create), else the name of the tenant's VPC if
//     the tenant has exactly one.
func DefaultRefs(o, old Object, l Lookup) {
	vpc := vpcRef(o)
	if vpc == nil || *vpc != "" {
		return
	}
	if old != nil {
		if ov := vpcRef(old); ov != nil && *ov != "" {
			*vpc = *ov
			return
		}
	}
	if vpcs := l.List(KindVPC, o.GetObjectMeta().Tenant); len(vpcs) == 1 {
		*vpc = vpcs[0].GetObjectMeta().Name
	}
}

// vpcRef returns the spec.vpc of a SecurityPolicy or AppIntent, else nil.
func vpcRef(o Object) *string {
	switch o := o.(type) {
	case *SecurityPolicy:
		return &o.Spec.VPC
	case *AppIntent:
		return &o.Spec.VPC
	}
	return nil
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
	case *AppIntent:
		return KindAppIntent
	case *Trace:
		return KindTrace
	case *Capture:
		return KindCapture
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
