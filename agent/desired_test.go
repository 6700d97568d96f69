package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

func viewOf(t *testing.T, res ...wire.Resource) *state.View {
	t.Helper()
	v, err := state.New(testHost).Apply(&wire.Delta{ToVersion: 3, Snapshot: true, Upserts: res})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func withQoS(v datapath.VPC, q *datapath.VPCQoS) datapath.VPC { v.QoS = q; return v }

func withEP(e datapath.Endpoint, change func(*datapath.Endpoint)) datapath.Endpoint {
	change(&e)
	return e
}

func TestTranslate(t *testing.T) {
	cfg := &Config{Host: testHost, UnderlayIP: mustAddr("198.51.100.1"), UnderlayDev: "eth1", MTU: 9000}
	cached := new(Config)
	*cached = *cfg
	cached.PolicyCache = NewPolicyCache(0)
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	vpc := datapath.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []datapath.Subnet{
		{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24"), Gateway: mustAddr("10.0.1.1")},
	}}
	host := datapath.HostConfig{Name: testHost, UnderlayIP: mustAddr(underlay1), UnderlayDev: "eth1", MTU: 9000}
	// ep is endpoint acme/name at 10.0.1.last in VPC main (VNI 100), changed by change.
	ep := func(t *testing.T, name string, last byte, change func(*view.Endpoint)) wire.Resource {
		e := &view.Endpoint{Tenant: "acme", Name: name, VPC: "main", VNI: 100, Subnet: "a",
			IP: fmt.Sprintf("10.0.1.%d", last), MAC: fmt.Sprintf("02:00:0a:00:01:%02x", last)}
		if change != nil {
			change(e)
		}
		return mustRes(t, e)
	}
	// vmEP is ep translated.
	vmEP := func(name string, last byte) datapath.Endpoint {
		return datapath.Endpoint{ID: "acme/" + name, VNI: 100, Subnet: "a", IP: mustAddr(fmt.Sprintf("10.0.1.%d", last)),
			MAC: mac(fmt.Sprintf("02:00:0a:00:01:%02x", last)), Gateway: mustAddr("10.0.1.1"),
			Prefix: netip.MustParsePrefix("10.0.1.0/24"), IfName: "eth0"}
	}
	for _, tc := range []struct {
		name   string
		res    func(t *testing.T) []wire.Resource
		want   *datapath.Desired
		errHas string
	}{
		{
			name: "host from config when the view has none",
			res:  func(t *testing.T) []wire.Resource { return nil },
			want: &datapath.Desired{Host: datapath.HostConfig{Name: testHost, UnderlayIP: mustAddr("198.51.100.1"), UnderlayDev: "eth1", MTU: 9000}},
		},
		{
			name: "the view's host underlay wins; endpoint fields; a policy isolating nothing allows all; unknown types skipped",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{
					hostRes(t), vpcRes(t, "acme", 100),
					mustRes(t, &view.Endpoint{Tenant: "acme", Name: "vm", VPC: "main", VNI: 100, Subnet: "a", IP: "10.0.1.9",
						MAC: "02:00:0a:00:01:09", Netns: "/var/run/netns/vm", Identity: 42}),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "p", VPC: "main", Applies: []string{"acme/vm"},
						Ingress: []view.Rule{{Name: "acme/p ingress[0]"}}}),
					mustRes(t, &view.QoS{Tenant: "acme", Name: "gold", MaxRateBps: 1e9}),
					{Key: key("route", "anything"), Data: []byte(`"not even an object"`)},
				}
			},
			want: &datapath.Desired{
				Host: datapath.HostConfig{Name: testHost, UnderlayIP: mustAddr(underlay1), UnderlayDev: "eth1", MTU: 9000},
				VPCs: []datapath.VPC{vpc},
				Endpoints: []datapath.Endpoint{{ID: "acme/vm", VNI: 100, Subnet: "a", IP: mustAddr("10.0.1.9"),
					MAC: mac("02:00:0a:00:01:09"), Gateway: mustAddr("10.0.1.1"), Prefix: netip.MustParsePrefix("10.0.1.0/24"),
					Netns: "/var/run/netns/vm", IfName: "eth0", Identity: 42}},
			},
		},
		{
			name: "host capacity, VPC aggregate, QoS class",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{
					mustRes(t, &view.Host{Name: testHost, UnderlayIP: underlay1, CapacityBps: 10e9}),
					mustRes(t, &view.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24"}},
						MaxRateBps: 2e9, MinRateBps: 1e9}),
					ep(t, "vm", 9, func(e *view.Endpoint) { e.QoSClass = "gold" }),
					mustRes(t, &view.QoS{Tenant: "acme", Name: "gold", MinRateBps: 1e8, MaxRateBps: 1e9, Priority: 1, DSCP: 46}),
				}
			},
			want: &datapath.Desired{
				Host: datapath.HostConfig{Name: testHost, UnderlayIP: mustAddr(underlay1), UnderlayDev: "eth1", MTU: 9000, CapacityBps: 10e9},
				VPCs: []datapath.VPC{withQoS(vpc, &datapath.VPCQoS{MaxRateBps: 2e9, MinRateBps: 1e9})},
				Endpoints: []datapath.Endpoint{withEP(vmEP("vm", 9), func(e *datapath.Endpoint) {
					e.QoS = &datapath.QoS{MinRateBps: 1e8, MaxRateBps: 1e9, Priority: 1, DSCP: 46}
				})},
			},
		},
		{
			name: "a policy's rules, translated field for field; endpoints it does not list allow all",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{hostRes(t), vpcRes(t, "acme", 100), ep(t, "db", 9, nil), ep(t, "web", 10, nil),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "db", VPC: "main", IngressIsolated: true, Applies: []string{"acme/db"},
						Ingress: []view.Rule{
							{Name: "acme/db ingress[0]", Identities: []uint32{3, 7}, Prefixes: []string{"192.0.2.0/24"},
								Ports: []view.Port{{Protocol: 6, First: 5432, Last: 5432, ICMPType: -1, ICMPCode: -1},
									{Protocol: 17, First: 9000, Last: 9010, ICMPType: -1, ICMPCode: -1},
									{Protocol: 1, ICMPType: 8, ICMPCode: -1}}},
							{Name: "acme/db ingress[1]"}, // a selector that matches nothing
							{Name: "acme/db ingress[2]", AllPeers: true},
						}}),
				}
			},
			want: &datapath.Desired{
				Host: host, VPCs: []datapath.VPC{vpc},
				Endpoints: []datapath.Endpoint{
					withEP(vmEP("db", 9), func(e *datapath.Endpoint) {
						e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{
							{Name: "acme/db ingress[0]", Identities: []uint32{3, 7}, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
								Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5432, Last: 5432, ICMPType: -1, ICMPCode: -1},
									{Protocol: datapath.ProtoUDP, First: 9000, Last: 9010, ICMPType: -1, ICMPCode: -1},
									{Protocol: datapath.ProtoICMP, ICMPType: 8, ICMPCode: -1}}},
							{Name: "acme/db ingress[1]"},
							{Name: "acme/db ingress[2]", AllPeers: true},
						}}
					}),
					vmEP("web", 10),
				},
			},
		},
		{
			name: "policies are ORed: isolated per direction if any isolates it, rules in policy order",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{hostRes(t), vpcRes(t, "acme", 100), ep(t, "db", 9, nil),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "b-egress", VPC: "main", EgressIsolated: true, Applies: []string{"acme/db"},
						Egress: []view.Rule{{Name: "acme/b-egress egress[0]", Prefixes: []string{"10.0.1.10/32"}}}}),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "a-ingress", VPC: "main", IngressIsolated: true, Applies: []string{"acme/db", "acme/gone"},
						Ingress: []view.Rule{{Name: "acme/a-ingress ingress[0]", Identities: []uint32{2}}}}),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "c-more", VPC: "main", Applies: []string{"acme/db"},
						Ingress: []view.Rule{{Name: "acme/c-more ingress[0]", AllPeers: true}}}),
				}
			},
			want: &datapath.Desired{Host: host, VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{
				withEP(vmEP("db", 9), func(e *datapath.Endpoint) {
					e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true,
						Ingress: []datapath.Rule{{Name: "acme/a-ingress ingress[0]", Identities: []uint32{2}}, {Name: "acme/c-more ingress[0]", AllPeers: true}},
						Egress:  []datapath.Rule{{Name: "acme/b-egress egress[0]", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.10/32")}}}}
				}),
			}},
		},
		{
			name: "a default-deny VPC isolates every endpoint both ways, with a policy or without",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{hostRes(t),
					mustRes(t, &view.VPC{Tenant: "acme", Name: "main", VNI: 100, DefaultDeny: true, Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24"}}}),
					ep(t, "db", 9, nil), ep(t, "web", 10, nil),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "db", VPC: "main", IngressIsolated: true, Applies: []string{"acme/db"},
						Ingress: []view.Rule{{Name: "acme/db ingress[0]", AllPeers: true}}}),
				}
			},
			want: &datapath.Desired{Host: host, VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{
				withEP(vmEP("db", 9), func(e *datapath.Endpoint) {
					e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true,
						Ingress: []datapath.Rule{{Name: "acme/db ingress[0]", AllPeers: true}}}
				}),
				withEP(vmEP("web", 10), func(e *datapath.Endpoint) {
					e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true}
				}),
			}},
		},
		{
			name: "every problem is reported",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{
					vpcRes(t, "acme", 100),
					mustRes(t, &view.Endpoint{Tenant: "acme", Name: "x", VNI: 100, Subnet: "a", IP: "bad", MAC: "02:00:0a:00:01:09"}),
					mustRes(t, &view.Endpoint{Tenant: "acme", Name: "y", VNI: 100, Subnet: "a", IP: "10.0.1.8", MAC: "bad"}),
				}
			},
			errHas: `endpoint/acme/x: ip: "bad" is not an IP address` + "\n" + `endpoint/acme/y: mac "bad" is not a 6-byte Ethernet address`,
		},
		{
			name: "policy with a mismatched key",
			res: func(t *testing.T) []wire.Resource {
				r := mustRes(t, &view.Policy{Tenant: "acme", Name: "p"})
				r.Key.ID = "acme/q"
				return []wire.Resource{r}
			},
			errHas: `resource holds policy "acme/p"`,
		},
		{
			name: "a policy peer that is not a prefix",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{hostRes(t), vpcRes(t, "acme", 100), ep(t, "db", 9, nil),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "p", VPC: "main", Applies: []string{"acme/db"},
						Egress: []view.Rule{{Name: "acme/p egress[0]", Prefixes: []string{"10.0.1.9/24"}}}})}
			},
			errHas: `policy/acme/p: egress: rule "acme/p egress[0]": peer: "10.0.1.9/24" has host bits set`,
		},
		{
			name: "a policy of another VPC",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{hostRes(t), vpcRes(t, "acme", 100), ep(t, "db", 9, nil),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "p", VPC: "other", Applies: []string{"acme/db"}})}
			},
			errHas: `policy/acme/p: of VPC "other", applies to endpoint acme/db of VPC "main"`,
		},
		{
			name: "a QoS class missing from the view",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{hostRes(t), vpcRes(t, "acme", 100), ep(t, "db", 9, func(e *view.Endpoint) { e.QoSClass = "gold" })}
			},
			errHas: `endpoint/acme/db: QoS class "gold" is not in the view`,
		},
		{
			name: "a DSCP out of range",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{mustRes(t, &view.QoS{Tenant: "acme", Name: "gold", DSCP: 300})}
			},
			errHas: `qos/acme/gold: DSCP 300 out of range 0..63`,
		},
	} {
		// Without a PolicyCache, then with one shared by every case:
		// the first translation of a policy fills it, the second finds
		// it (as may a later case's view that holds the same policy).
		for _, c := range []struct {
			name string
			cfg  *Config
		}{{"", cfg}, {"/cache", cached}, {"/cached", cached}} {
			t.Run(tc.name+c.name, func(t *testing.T) {
				got, err := translate(viewOf(t, tc.res(t)...), c.cfg)
				if tc.errHas != "" {
					if err == nil || !strings.Contains(err.Error(), tc.errHas) || !errors.Is(err, ErrInvalidView) {
						t.Fatalf("translate = %v, want an ErrInvalidView containing %q", err, tc.errHas)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
					cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
					t.Errorf("desired (-want +got):\n%s", diff)
				}
			})
		}
	}
	if st := cached.PolicyCache.Stats(); st.Hits == 0 || st.Misses == 0 {
		t.Errorf("policy cache %+v: want hits and misses", st)
	}
	t.Run("no underlay address anywhere", func(t *testing.T) {
		_, err := translate(viewOf(t), &Config{Host: testHost})
		if !errors.Is(err, ErrInvalidView) || !errors.Is(err, datapath.ErrInvalid) {
			t.Errorf("translate = %v, want ErrInvalidView wrapping datapath.ErrInvalid", err)
		}
	})
}
