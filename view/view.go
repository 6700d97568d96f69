// Package view defines a host's compiled view: the resources the
// controller's compiler derives from the desired state for one host and
// sends to its agent over the config stream (as wire.Resource, JSON in
// Data). A view holds only what the host needs: its own Host record, its
// local endpoints, the VPCs (with all their subnets) those endpoints are
// in, and the security policies and QoS classes that apply to them — never
// every remote endpoint; remote locations are learned on demand.
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

	apiv1 "github.com/weftnet/weft/api/v1"
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
	Tenant   string            `json:"tenant"`
	Name     string            `json:"name"`
	UID      string            `json:"uid,omitempty"`
	VPC      string            `json:"vpc"`
	VNI      uint32            `json:"vni"`
	Subnet   string            `json:"subnet"`
	CIDR     string            `json:"cidr"` // the subnet's prefix
	Gateway  string            `json:"gateway"`
	IP       string            `json:"ip"`
	MAC      string            `json:"mac"`
	Netns    string            `json:"netns,omitempty"` // requested attachment; "" = agent makes one
	QoSClass string            `json:"qosClass,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Identity is the endpoint's security identity (0 until policy lands).
	Identity uint32 `json:"identity,omitempty"`
}

// Policy is a security policy that selects at least one local endpoint; ID "tenant/name".
type Policy struct {
	Tenant string                   `json:"tenant"`
	Name   string                   `json:"name"`
	Spec   apiv1.SecurityPolicySpec `json:"spec"`
	// Applies lists the local endpoints ("tenant/name") the policy selects.
	Applies []string `json:"applies"`
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
