package etcdtest

import apiv1 "github.com/weftnet/weft/api/v1"

// TypeMeta returns the weft/v1 TypeMeta of a kind.
func TypeMeta(kind string) apiv1.TypeMeta {
	return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind}
}

// Tenant builds a Tenant.
func Tenant(name string) *apiv1.Tenant {
	return &apiv1.Tenant{TypeMeta: TypeMeta(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: name}}
}

// Host builds a Host with an underlay address.
func Host(name, ip string) *apiv1.Host {
	return &apiv1.Host{TypeMeta: TypeMeta(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: name}, Spec: apiv1.HostSpec{UnderlayIP: ip}}
}

// VPC builds a VPC of a tenant.
func VPC(tenant, name string, cidrs ...string) *apiv1.VPC {
	return &apiv1.VPC{TypeMeta: TypeMeta(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: name, Tenant: tenant}, Spec: apiv1.VPCSpec{CIDRs: cidrs}}
}

// Subnet builds a Subnet of a tenant's VPC.
func Subnet(tenant, name, vpc, cidr string) *apiv1.Subnet {
	return &apiv1.Subnet{TypeMeta: TypeMeta(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: name, Tenant: tenant}, Spec: apiv1.SubnetSpec{VPC: vpc, CIDR: cidr}}
}

// Endpoint builds an Endpoint on a subnet and host; labels are key, value pairs.
func Endpoint(tenant, name, subnet, host string, labels ...string) *apiv1.Endpoint {
	ep := &apiv1.Endpoint{TypeMeta: TypeMeta(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: tenant},
		Spec: apiv1.EndpointSpec{Subnet: subnet, Host: host}}
	for i := 0; i+1 < len(labels); i += 2 {
		if ep.Metadata.Labels == nil {
			ep.Metadata.Labels = map[string]string{}
		}
		ep.Metadata.Labels[labels[i]] = labels[i+1]
	}
	return ep
}
