package intent

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Mapping is one line of how an intent is met: a need of its spec, the
// owned object that carries it ("kind/name"; "-" for a need that needs
// none) and what in that object does.
type Mapping struct {
	Need, Object, Rule string
}

// Explain maps each need of an intent to the object and the rule it
// compiles to (see Compile), for `weft describe appintent`. An object the
// status does not list (not written yet, or refused: see status.unmet) is
// marked "(not written)".
func Explain(in *apiv1.AppIntent) []Mapping {
	var policy *apiv1.SecurityPolicy
	var class *apiv1.QoSClass
	for _, o := range Compile(in) {
		switch o := o.(type) {
		case *apiv1.SecurityPolicy:
			policy = o
		case *apiv1.QoSClass:
			class = o
		}
	}
	object := func(o apiv1.Object) string {
		if o == nil {
			return "-"
		}
		ref := apiv1.LocalObjectReference{Kind: o.GetTypeMeta().Kind, Name: o.GetObjectMeta().Name}
		s := ref.Kind + "/" + ref.Name
		if !slices.Contains(in.Status.Objects, ref) {
			s += " (not written)"
		}
		return s
	}
	s := in.Spec
	selector := selectorString(s.Selector, "all endpoints") + " in VPC " + s.VPC
	var out []Mapping
	if policy != nil {
		out = append(out, Mapping{"selector: " + selector, object(policy), "applies to " + selector})
	}
	for i, d := range s.TalksTo {
		out = append(out, Mapping{fmt.Sprintf("talksTo[%d]: %s %s", i, peerString(d.PolicyPeer), portsString(d.Ports)),
			object(policy), fmt.Sprintf("egress[%d]: to %s", i, ruleString(policy.Spec.Egress[i]))})
	}
	if len(s.TalksTo) == 0 {
		out = append(out, Mapping{"talksTo: none", "-", "egress left alone"})
	}
	for i, e := range s.Exposes {
		out = append(out, Mapping{fmt.Sprintf("exposes[%d]: %s from %s", i, portsString(e.Ports), peersString(e.From)),
			object(policy), fmt.Sprintf("ingress[%d]: from %s", i, ruleString(policy.Spec.Ingress[i]))})
	}
	if len(s.Exposes) == 0 {
		out = append(out, Mapping{"exposes: none", "-", "ingress left alone"})
	}
	if class == nil {
		return append(out, Mapping{"bandwidth, latency: " + s.Latency, "-", "no class: the endpoints keep their own"})
	}
	out = append(out, Mapping{"selector: " + selector, object(class), "the class of the selected endpoints that name none"})
	if b := s.Bandwidth; b != nil && b.Min != "" {
		out = append(out, Mapping{"bandwidth.min: " + string(b.Min), object(class), "minRate: " + string(b.Min) + ", guaranteed on the host uplink"})
	}
	if b := s.Bandwidth; b != nil && b.Max != "" {
		out = append(out, Mapping{"bandwidth.max: " + string(b.Max), object(class), "maxRate: " + string(b.Max) + ", each direction"})
	}
	return append(out, Mapping{"latency: " + s.Latency, object(class),
		fmt.Sprintf("priority: %d, dscp: %d", *class.Spec.Priority, class.Spec.DSCP)})
}

// ruleString formats a policy rule: its peers and ports.
func ruleString(r apiv1.PolicyRule) string {
	return peersString(r.Peers) + " on " + portsString(r.Ports)
}

func peersString(peers []apiv1.PolicyPeer) string {
	if len(peers) == 0 {
		return "anyone"
	}
	s := make([]string, len(peers))
	for i, p := range peers {
		s[i] = peerString(p)
	}
	return strings.Join(s, " or ")
}

func peerString(p apiv1.PolicyPeer) string {
	if p.Selector != nil {
		return selectorString(*p.Selector, "every endpoint")
	}
	return p.CIDR
}

func selectorString(sel apiv1.LabelSelector, empty string) string {
	if sel.Empty() {
		return empty
	}
	return sel.String()
}

func portsString(ports []apiv1.PolicyPort) string {
	if len(ports) == 0 {
		return "all traffic"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		switch {
		case p.Protocol == apiv1.ProtocolICMP && p.ICMPType == nil:
			s[i] = "ICMP"
		case p.Protocol == apiv1.ProtocolICMP && p.ICMPCode == nil:
			s[i] = "ICMP type " + strconv.Itoa(*p.ICMPType)
		case p.Protocol == apiv1.ProtocolICMP:
			s[i] = fmt.Sprintf("ICMP type %d code %d", *p.ICMPType, *p.ICMPCode)
		case p.Port == 0:
			s[i] = p.Protocol + " all ports"
		case p.EndPort != 0:
			s[i] = fmt.Sprintf("%s %d-%d", p.Protocol, p.Port, p.EndPort)
		default:
			s[i] = p.Protocol + " " + strconv.Itoa(p.Port)
		}
	}
	return strings.Join(s, ", ")
}
