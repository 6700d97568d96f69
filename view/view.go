// Package view defines a host's compiled view: the resources the
// controller's compiler derives from the desired state for one host and
// sends to its agent over the config stream (as wire.Resource, JSON in
// Data). A view holds only what the host needs: its own Host record, its
// local endpoints, the VPCs (with all their subnets) those endpoints are
// in, and the security policies and QoS classes that apply to them — never
// every remote endpoint; remote locations are learned on demand — and the
// traces and captures its data plane takes part in (observe.go).
//
// Encode turns a resource into its wire.Resource (encoding/json); Decode,
// and a Decoder that reuses its memory from one resource to the next,
// turn it back. Both read the JSON that Encode writes in one pass without
// reflection, and leave anything else to encoding/json: the result, or
// the error, is always json.Unmarshal's (FuzzDecode checks this).
package view

import (
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/wire"
)

// Resource types, used as wire.ResourceKey.Type.
const (
	TypeHost     = "host"
	TypeVPC      = "vpc"
	TypeEndpoint = "endpoint"
	TypePolicy   = "policy"
	TypeQoS      = "qos"
)

// Host is the host's own record.
type Host struct {
	Name       string `json:"name"`
	HostID     uint32 `json:"hostID,omitempty"`
	UnderlayIP string `json:"underlayIP"`
	// CapacityBps is the NIC bandwidth in bit/s (0 = unknown).
	CapacityBps uint64 `json:"capacityBps,omitempty"`
}

// VPC is a VPC with at least one endpoint on the host; ID "tenant/name".
type VPC struct {
	Tenant  string   `json:"tenant"`
	Name    string   `json:"name"`
	VNI     uint32   `json:"vni"`
	CIDRs   []string `json:"cidrs"`
	Subnets []Subnet `json:"subnets"`
	// DefaultDeny is spec.defaultPolicy deny: every endpoint of the VPC on
	// the host is isolated in both directions (datapath.EndpointPolicy
	// IngressIsolated and EgressIsolated set, with a Policy or without),
	// so only what the VPC's policies allow passes.
	DefaultDeny bool `json:"defaultDeny,omitempty"`
	// MaxRateBps and MinRateBps are spec.qos in bit/s: the aggregate of
	// the VPC's endpoints on the host (datapath.VPCQoS; both 0 means none,
	// a nil *VPCQoS).
	MaxRateBps uint64 `json:"maxRateBps,omitempty"`
	MinRateBps uint64 `json:"minRateBps,omitempty"`
}

// Subnet is one subnet of a VPC; every subnet of the VPC is in the view so
// that inter-subnet traffic is routed on the source host.
type Subnet struct {
	Name    string `json:"name"`
	CIDR    string `json:"cidr"`
	Gateway string `json:"gateway"`
}

// Endpoint is an endpoint placed on the host; ID "tenant/name".
type Endpoint struct {
	Tenant  string `json:"tenant"`
	Name    string `json:"name"`
	UID     string `json:"uid,omitempty"`
	VPC     string `json:"vpc"`
	VNI     uint32 `json:"vni"`
	Subnet  string `json:"subnet"`
	CIDR    string `json:"cidr"` // the subnet's prefix
	Gateway string `json:"gateway"`
	IP      string `json:"ip"`
	MAC     string `json:"mac"`
	Netns   string `json:"netns,omitempty"` // requested attachment; "" = agent makes one
	// QoSClass is the QoS class the endpoint uses (a QoS resource of the
	// view, datapath.Endpoint's QoS): the one it names, else the class of
	// an AppIntent that selects it (see package compile); "" = none.
	QoSClass string            `json:"qosClass,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Identity is the endpoint's security identity in its VPC
	// (status.identity; datapath.Endpoint.Identity): the sending host
	// stamps it into the endpoint's packets. 0 = not allocated yet.
	Identity uint32 `json:"identity,omitempty"`
	// Generation is the endpoint's metadata.generation: the agent reports
	// it as the observedGeneration of the conditions it sets.
	Generation int64 `json:"generation,omitempty"`
}

// Policy is a SecurityPolicy that selects at least one local endpoint,
// compiled: selectors resolved to identities and addresses, ports to
// protocol numbers; ID "tenant/name". An endpoint's
// datapath.EndpointPolicy is the OR of the Policies whose Applies list it
// (and its VPC's DefaultDeny): a direction is isolated if any of them
// isolates it, and its rules are all their rules of that direction.
type Policy struct {
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	// VPC is the policy's VPC (spec.vpc): Applies and the identities of
	// the rules are of that VPC.
	VPC string `json:"vpc"`
	// IngressIsolated and EgressIsolated say the policy lists the
	// direction (spec.ingress, spec.egress present, even empty): for the
	// endpoints it applies to, only what some rule of that direction
	// allows passes (datapath.EndpointPolicy's fields of the same name).
	IngressIsolated bool `json:"ingressIsolated,omitempty"`
	EgressIsolated  bool `json:"egressIsolated,omitempty"`
	// Ingress and Egress are the compiled rules, in the spec's order.
	Ingress []Rule `json:"ingress,omitempty"`
	Egress  []Rule `json:"egress,omitempty"`
	// Applies lists the local endpoints ("tenant/name") the policy
	// selects, sorted.
	Applies []string `json:"applies"`
}

// Rule is one compiled policy rule (datapath.Rule, field for field):
// traffic from (ingress) or to (egress) any of its peers on any of its
// ports passes.
type Rule struct {
	// Name is "tenant/policy ingress[i]" or "... egress[i]": i is the
	// rule's index in the spec.
	Name string `json:"name"`
	// AllPeers: the rule has no peers and matches any peer, in the VPC or
	// not. Otherwise only the peers below match, none if both are empty
	// (selectors that match no endpoint).
	AllPeers bool `json:"allPeers,omitempty"`
	// Identities (ingress only) are the security identities, in the VPC,
	// of the label sets the rule's selector peers match: a packet whose
	// source identity is one of them matches. Sorted, distinct.
	Identities []uint32 `json:"identities,omitempty"`
	// Prefixes are the rule's CIDR peers (masked) and, for egress, the
	// address (/32) of every endpoint of the VPC, on any host, its
	// selector peers match. Canonical netip.Prefix strings, sorted by
	// address then length, distinct.
	Prefixes []string `json:"prefixes,omitempty"`
	// Ports limits the rule to these; none means all traffic.
	Ports []Port `json:"ports,omitempty"`
}

// Port is a protocol with a destination port range or an ICMP type and
// code (datapath.Port, field for field).
type Port struct {
	// Protocol is the IP protocol number: 1 ICMP, 6 TCP, 17 UDP, 132 SCTP.
	Protocol uint8 `json:"protocol"`
	// First..Last is the destination port range (TCP, UDP, SCTP); 0..0
	// means every port.
	First uint16 `json:"first,omitempty"`
	Last  uint16 `json:"last,omitempty"`
	// ICMPType and ICMPCode restrict an ICMP port; -1 means any (always
	// -1 for the other protocols).
	ICMPType int16 `json:"icmpType"`
	ICMPCode int16 `json:"icmpCode"`
}

// QoS is a QoS class used by a local endpoint; ID "tenant/name".
type QoS struct {
	Tenant     string `json:"tenant"`
	Name       string `json:"name"`
	MinRateBps uint64 `json:"minRateBps,omitempty"`
	MaxRateBps uint64 `json:"maxRateBps,omitempty"`
	Priority   int    `json:"priority"`
	DSCP       int    `json:"dscp,omitempty"`
}

// ID returns the resource ID of a tenant-scoped resource.
func ID(tenant, name string) string { return tenant + "/" + name }

// Key returns the wire key of a view resource.
func Key(v any) (wire.ResourceKey, error) {
	switch r := v.(type) {
	case *Host:
		return wire.ResourceKey{Type: TypeHost, ID: r.Name}, nil
	case *VPC:
		return wire.ResourceKey{Type: TypeVPC, ID: ID(r.Tenant, r.Name)}, nil
	case *Endpoint:
		return wire.ResourceKey{Type: TypeEndpoint, ID: ID(r.Tenant, r.Name)}, nil
	case *Policy:
		return wire.ResourceKey{Type: TypePolicy, ID: ID(r.Tenant, r.Name)}, nil
	case *QoS:
		return wire.ResourceKey{Type: TypeQoS, ID: ID(r.Tenant, r.Name)}, nil
	case *Trace:
		return wire.ResourceKey{Type: TypeTrace, ID: ID(r.Tenant, r.Name)}, nil
	case *Capture:
		return wire.ResourceKey{Type: TypeCapture, ID: ID(r.Tenant, r.Name)}, nil
	}
	return wire.ResourceKey{}, fmt.Errorf("view: unknown resource %T", v)
}

// Encode turns a view resource into a wire.Resource.
func Encode(v any) (wire.Resource, error) {
	k, err := Key(v)
	if err != nil {
		return wire.Resource{}, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return wire.Resource{}, fmt.Errorf("view: encode %s: %w", k, err)
	}
	return wire.Resource{Key: k, Data: b}, nil
}
