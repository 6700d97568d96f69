package sim

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/controller/registry"
)

// Layout is the deterministic shape of a run's state: which host and VPC
// every endpoint belongs to, and which endpoints the security policies
// select. The parent and every child compute it alike.
type Layout struct {
	Hosts, Endpoints, VPCs int
	// Policies is the number of SecurityPolicies. With none, endpoints
	// have no labels. Otherwise every endpoint has one label, app, with
	// one of Apps values per VPC (its label set, so its identity), and
	// policy p is in VPC p mod VPCs and selects the endpoints of one app
	// there (PolicyVPC, PolicyApp): the policies of a VPC select distinct
	// apps, and the VPCs' identities add up to about Policies (Identities).
	Policies int `json:",omitempty"`
}

// VPCsPerTenant is how many VPCs share one tenant.
const VPCsPerTenant = 100

// Tenants returns the number of tenants.
func (l Layout) Tenants() int { return (l.VPCs + VPCsPerTenant - 1) / VPCsPerTenant }

// HostName returns the name of host i.
func HostName(i int) string { return fmt.Sprintf("h%d", i) }

// HostUnderlay returns the underlay address of host i (100.64.0.0/10).
func HostUnderlay(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(100), byte(64 + (i>>16)&63), byte(i >> 8), byte(i)})
}

// underlayHost returns the host whose HostUnderlay is ip (-1: none).
func underlayHost(ip netip.Addr) int {
	if !ip.Is4() {
		return -1
	}
	b := ip.As4()
	if b[0] != 100 || b[1] < 64 || b[1] >= 128 {
		return -1
	}
	return int(b[1]-64)<<16 | int(b[2])<<8 | int(b[3])
}

// TenantName returns the name of tenant t.
func TenantName(t int) string { return fmt.Sprintf("t%d", t) }

// VPC returns the tenant, name and CIDR of VPC k. The VPCs of one tenant
// have disjoint /16s; tenants reuse the same ranges (overlap is allowed
// between tenants).
func (l Layout) VPC(k int) (tenant, name, cidr string) {
	j := k % VPCsPerTenant
	return TenantName(k / VPCsPerTenant), fmt.Sprintf("v%d", k), fmt.Sprintf("10.%d.0.0/16", j)
}

// SubnetName is the name of the single subnet of every VPC.
func SubnetName(k int) string { return fmt.Sprintf("s%d", k) }

// EndpointHost returns the host of endpoint e.
func (l Layout) EndpointHost(e int) int { return e % l.Hosts }

// EndpointVPC returns the VPC of endpoint e.
func (l Layout) EndpointVPC(e int) int { return (e + e/l.Hosts) % l.VPCs }

// EndpointName returns the name of endpoint e (its tenant is its VPC's).
func EndpointName(e int) string { return fmt.Sprintf("e%d", e) }

// EndpointID returns the datapath ID ("tenant/name") of endpoint e.
func (l Layout) EndpointID(e int) string {
	t, _, _ := l.VPC(l.EndpointVPC(e))
	return t + "/" + EndpointName(e)
}

// HostEndpoints returns how many endpoints Layout puts on host h.
func (l Layout) HostEndpoints(h int) int {
	if h >= l.Endpoints {
		return 0
	}
	return (l.Endpoints - h + l.Hosts - 1) / l.Hosts
}

// Apps returns how many app labels the endpoints of one VPC take turns
// at: Policies spread over VPCs, rounded up (0 without policies).
func (l Layout) Apps() int { return (l.Policies + l.VPCs - 1) / l.VPCs }

// AppName returns the value of label app of app j.
func AppName(j int) string { return fmt.Sprintf("a%d", j) }

// EndpointApp returns the app of endpoint e (-1 without policies). The
// endpoints of a VPC come in runs of consecutive e/VPCs, so they take the
// apps in turn and a VPC with at least Apps endpoints has them all.
func (l Layout) EndpointApp(e int) int {
	if l.Policies == 0 {
		return -1
	}
	return e / l.VPCs % l.Apps()
}

// PolicyName returns the name of policy p (its tenant is its VPC's).
func PolicyName(p int) string { return fmt.Sprintf("sp%d", p) }

// PolicyVPC returns the VPC of policy p.
func (l Layout) PolicyVPC(p int) int { return p % l.VPCs }

// PolicyApp returns the app whose endpoints policy p selects (its peers
// are the next two apps of its VPC).
func (l Layout) PolicyApp(p int) int { return p / l.VPCs }

// Identities returns the number of distinct label sets of endpoints in
// their VPCs: the security identities a load allocates.
func (l Layout) Identities() int {
	apps := max(l.Apps(), 1)
	seen := make([]bool, l.VPCs*apps)
	n := 0
	for e := range l.Endpoints {
		i := l.EndpointVPC(e)*apps + max(l.EndpointApp(e), 0)
		if !seen[i] {
			seen[i] = true
			n++
		}
	}
	return n
}

// Validate checks the sizes.
func (l Layout) Validate() error {
	switch {
	case l.Hosts < 1 || l.Hosts > 1<<22:
		return fmt.Errorf("sim: %d hosts: want 1..%d", l.Hosts, 1<<22)
	case l.VPCs < 1 || l.VPCs > 1<<20:
		return fmt.Errorf("sim: %d VPCs: want 1..%d", l.VPCs, 1<<20)
	case l.Endpoints < 0:
		return fmt.Errorf("sim: %d endpoints: must not be negative", l.Endpoints)
	case l.Policies < 0 || l.Apps() > registry.MaxIdentity:
		return fmt.Errorf("sim: %d policies in %d VPCs: want 0..%d per VPC (security identities)", l.Policies, l.VPCs, registry.MaxIdentity)
	}
	return nil
}
