// Package v1 is the weft/v1 resource schema: the kinds (Tenant, Host,
// QoSClass, VPC, Subnet, SecurityPolicy, AppIntent, Endpoint, Trace, Capture), their
// defaults and validation, strict YAML/JSON decoding, label selectors,
// status conditions and the StatusError that every API error is. It does
// no I/O: validation that needs other objects reads them through the
// Lookup interface the controller provides.
//
// An object from a user goes through these steps:
//
//	objs, err := v1.DecodeDocuments(file) // or DecodeObject(body): strict, BadRequest on malformed input
//	v1.Default(o)                         // apiVersion/kind, subnet gateway, QoS priority, canonical addresses
//	v1.DefaultRefs(o, old, lookup)        // a policy's or intent's spec.vpc from the tenant's only VPC
//	err = v1.ValidateCreate(o, lookup)    // or ValidateUpdate(o, old, lookup): Invalid, with a cause per field
//
// Status written by agents and the controller is checked by
// ValidateStatus; SetCondition and FindCondition maintain conditions.
//
// Validation bounds what one object may ask for (MaxLabels, MaxRules,
// MaxSelectorRequirements and the other Max constants), and refuses what
// the data plane cannot carry yet rather than leaving it to fail on a
// host: IPv6 ranges in VPCs, subnets and policy peers (MsgIPv6).
//
// Objects the store wrote are decoded with DecodeInto, which trusts its
// input and is fast. Marshal and MarshalList write JSON or YAML that
// DecodeDocuments reads back.
//
// Field paths in errors follow the JSON names: "metadata.name",
// "spec.cidrs[1]", "metadata.labels[app]", "spec.ingress[0].ports[1].port".
package v1
