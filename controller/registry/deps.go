package registry

import (
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// subnetsOf lists the subnets of a VPC.
func (r *Registry) subnetsOf(tenant, vpc string) []apiv1.Object {
	return objects(r.st.SubnetsByVPC(tenant, vpc))
}

// endpointsOf lists the endpoints of a subnet.
func (r *Registry) endpointsOf(tenant, subnet string) []apiv1.Object {
	return objects(r.st.EndpointsBySubnet(tenant, subnet))
}

// endpointsOnHost lists the endpoints placed on a host.
func (r *Registry) endpointsOnHost(host string) []apiv1.Object {
	return objects(r.st.EndpointsByHost(host))
}

// vpcOfSubnet returns the VPC of a subnet, from the cache.
func (r *Registry) vpcOfSubnet(tenant, subnet string) (string, bool) {
	o, ok := r.st.Get(apiv1.KindSubnet, tenant, subnet)
	if !ok {
		return "", false
	}
	return o.(*apiv1.Subnet).Spec.VPC, true
}

func objects[T apiv1.Object](in []T) []apiv1.Object {
	out := make([]apiv1.Object, len(in))
	for i, o := range in {
		out[i] = o
	}
	return out
}

// rangeKVs returns the keys read by an Else range op.
func rangeKVs(op *etcdserverpb.ResponseOp) []*mvccpb.KeyValue {
	if rr := op.GetResponseRange(); rr != nil {
		return rr.Kvs
	}
	return nil
}

// rangeCount returns how many keys an Else range op found.
func rangeCount(op *etcdserverpb.ResponseOp) int { return len(rangeKVs(op)) }
