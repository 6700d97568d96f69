package registry

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Key suffixes (below the store prefix) of the bookkeeping records that the
// registry writes in the same transaction as the objects. They let etcd,
// not the registry's memory, enforce uniqueness and referential integrity:
// every create compares that its reservation does not exist yet, every
// delete compares that no record under its dependents' prefix exists.

// vniKey reserves one VNI for one VPC.
func vniKey(vni uint32) string { return fmt.Sprintf("vni/%d", vni) }

// ipamKey reserves one address of one subnet for one endpoint. Subnets of a
// VPC do not overlap, so this makes addresses unique per VPC.
func ipamKey(tenant, subnet string, ip netip.Addr) string {
	return "ipam/" + tenant + "/" + subnet + "/" + ip.String()
}

// ipamPrefix covers every address reservation of a subnet.
func ipamPrefix(tenant, subnet string) string { return "ipam/" + tenant + "/" + subnet + "/" }

// subnetRefKey marks that a subnet belongs to a VPC.
func subnetRefKey(tenant, vpc, subnet string) string {
	return "refs/vpc/" + tenant + "/" + vpc + "/" + subnet
}

// subnetRefPrefix covers the subnets of a VPC.
func subnetRefPrefix(tenant, vpc string) string { return "refs/vpc/" + tenant + "/" + vpc + "/" }

// hostRefKey marks that an endpoint runs on a host.
func hostRefKey(host, tenant, endpoint string) string {
	return "refs/host/" + host + "/" + tenant + "/" + endpoint
}

// hostRefPrefix covers the endpoints on a host.
func hostRefPrefix(host string) string { return "refs/host/" + host + "/" }

// qosRefKey marks that an endpoint uses a QoS class.
func qosRefKey(tenant, qos, endpoint string) string {
	return "refs/qos/" + tenant + "/" + qos + "/" + endpoint
}

// qosRefPrefix covers the endpoints of a QoS class.
func qosRefPrefix(tenant, qos string) string { return "refs/qos/" + tenant + "/" + qos + "/" }

// hostIDKey reserves one host ID for one Host.
func hostIDKey(id uint32) string { return fmt.Sprintf("hostid/%d", id) }

// vpcUseKey marks that a SecurityPolicy or AppIntent (by its kind's plural)
// applies in a VPC.
func vpcUseKey(tenant, vpc, plural, name string) string {
	return "refs/vpcuse/" + tenant + "/" + vpc + "/" + plural + "/" + name
}

// vpcUsePrefix covers the policies and intents of a VPC.
func vpcUsePrefix(tenant, vpc string) string { return "refs/vpcuse/" + tenant + "/" + vpc + "/" }

// identityKey maps a label set (by labelsHash) of a VPC to its security
// identity, in decimal.
func identityKey(k vpcKey, hash string) string {
	return "identity/" + k.tenant + "/" + k.vpc + "/" + hash
}

// identityPrefix covers the identities of a VPC by label set.
func identityPrefix(k vpcKey) string { return "identity/" + k.tenant + "/" + k.vpc + "/" }

// identityIDKey reserves an identity of a VPC for one label set (the
// value is its labelsHash).
func identityIDKey(k vpcKey, id uint32) string {
	return "identity-id/" + k.tenant + "/" + k.vpc + "/" + strconv.FormatUint(uint64(id), 10)
}

// identityIDPrefix covers the identity reservations of a VPC.
func identityIDPrefix(k vpcKey) string { return "identity-id/" + k.tenant + "/" + k.vpc + "/" }

// identityRefKey marks that an endpoint has an identity.
func identityRefKey(k vpcKey, id uint32, endpoint string) string {
	return identityRefPrefix(k, id) + endpoint
}

// identityRefPrefix covers the endpoints that have an identity.
func identityRefPrefix(k vpcKey, id uint32) string {
	return identityRefsOf(k) + strconv.FormatUint(uint64(id), 10) + "/"
}

// identityRefsOf covers the identity references of a VPC.
func identityRefsOf(k vpcKey) string { return "identity-ref/" + k.tenant + "/" + k.vpc + "/" }
