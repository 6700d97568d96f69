// Package scaleobjects generates the API objects of a large simulated data
// centre, shaped like the ones `weft sim` loads, for memory and scale
// benchmarks of packages that cannot import sim (the store, the locator).
// Only tests import it (Endpoints takes a testing.TB).
package scaleobjects

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Objects returns the objects of a simulated data centre with n
// endpoints, in creation order: tenants (100 VPCs each), n/100 VPCs with
// one subnet each, n/10 hosts, then the endpoints, spread over hosts and
// VPCs, with a UID, a creation time and two labels (150 label sets). With
// pending the endpoints have no status address yet (as created, before
// the controller and agent fill it); otherwise they are Ready with IP,
// MAC, VNI, a security identity and two True conditions.
func Objects(n int, pending bool) []apiv1.Object {
	hosts, vpcs := max(n/10, 1), max(n/100, 1)
	tm := func(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }
	meta := func(tenant, name string, i int) apiv1.ObjectMeta {
		return apiv1.ObjectMeta{Name: name, Tenant: tenant, Generation: 1,
			UID:               fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i*2654435761&0xffffffff, i&0xffff, i&0xfff, (i>>12)&0xfff, uint64(i)*0x9e3779b97f4a7c15&0xffffffffffff),
			CreationTimestamp: "2025-06-01T12:00:00Z"}
	}
	tenantOf := func(k int) string { return "t" + strconv.Itoa(k/100) }
	var objs []apiv1.Object
	for t := range (vpcs + 99) / 100 {
		objs = append(objs, &apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: meta("", "t"+strconv.Itoa(t), t)})
	}
	for k := range vpcs {
		cidr := fmt.Sprintf("10.%d.0.0/16", k%100)
		vpc := &apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: meta(tenantOf(k), "v"+strconv.Itoa(k), k), Spec: apiv1.VPCSpec{CIDRs: []string{cidr}}}
		vpc.Status.VNI = uint32(1000 + k)
		sn := &apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: meta(tenantOf(k), "s"+strconv.Itoa(k), k),
			Spec: apiv1.SubnetSpec{VPC: vpc.Metadata.Name, CIDR: cidr}}
		sn.Status.VNI = uint32(1000 + k)
		objs = append(objs, vpc, sn)
	}
	for i := range hosts {
		objs = append(objs, &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: meta("", "h"+strconv.Itoa(i), i),
			Spec: apiv1.HostSpec{UnderlayIP: fmt.Sprintf("100.%d.%d.%d", 64+(i>>16)&63, byte(i>>8), byte(i))}})
	}
	tiers := []string{"frontend", "backend", "db"}
	for e := range n {
		h, k := e%hosts, (e+e/hosts)%vpcs
		ep := &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: meta(tenantOf(k), "e"+strconv.Itoa(e), e),
			Spec: apiv1.EndpointSpec{Subnet: "s" + strconv.Itoa(k), Host: "h" + strconv.Itoa(h)}}
		ep.Metadata.Labels = map[string]string{"app": "app-" + strconv.Itoa(e%50), "tier": tiers[e%3]}
		ep.Status.Host = ep.Spec.Host
		ep.Status.Phase = apiv1.PhasePending
		if !pending {
			j := e / vpcs // index inside the VPC
			ep.Status.IP = fmt.Sprintf("10.%d.%d.%d", k%100, byte(j>>8), byte(j))
			ep.Status.MAC = fmt.Sprintf("02:00:0a:%02x:%02x:%02x", k%100, byte(j>>8), byte(j))
			ep.Status.VNI = uint32(1000 + k)
			ep.Status.Phase = apiv1.PhaseReady
			ep.Status.Identity = uint32(1 + e%150) // one per label set
			ep.Status.Conditions = []apiv1.Condition{
				{Type: apiv1.ConditionPolicyProgrammed, Status: apiv1.ConditionTrue, Reason: "Programmed",
					ObservedGeneration: 1, LastTransitionTime: "2025-06-01T12:00:01Z"},
				{Type: apiv1.ConditionQoSProgrammed, Status: apiv1.ConditionTrue, Reason: "Programmed",
					ObservedGeneration: 1, LastTransitionTime: "2025-06-01T12:00:01Z"},
			}
		}
		objs = append(objs, ep)
	}
	return objs
}

// EndpointsEnv names the environment variable that sets the number of
// endpoints of the memory benchmarks built on Objects.
const EndpointsEnv = "WEFT_MEM_ENDPOINTS"

// Endpoints returns the endpoint count a memory benchmark runs with:
// EndpointsEnv if set (at least 100; tb fails otherwise), else def.
func Endpoints(tb testing.TB, def int) int {
	v := os.Getenv(EndpointsEnv)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 100 {
		tb.Fatalf("%s=%q: want a number ≥ 100", EndpointsEnv, v)
	}
	return n
}
