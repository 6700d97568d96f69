package agent

import (
	"errors"
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

func TestTranslate(t *testing.T) {
	cfg := &Config{Host: testHost, UnderlayIP: mustAddr("198.51.100.1"), UnderlayDev: "eth1", MTU: 9000}
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	vpc := datapath.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []datapath.Subnet{
		{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24"), Gateway: mustAddr("10.0.1.1")},
	}}
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
			name: "the view's host underlay wins; endpoint fields; policies and QoS decoded, unknown types skipped",
			res: func(t *testing.T) []wire.Resource {
				return []wire.Resource{
					hostRes(t), vpcRes(t, "acme", 100),
					mustRes(t, &view.Endpoint{Tenant: "acme", Name: "vm", VNI: 100, Subnet: "a", IP: "10.0.1.9",
						MAC: "02:00:0a:00:01:09", Netns: "/var/run/netns/vm", Identity: 42}),
					mustRes(t, &view.Policy{Tenant: "acme", Name: "p", VPC: "main", Applies: []string{"acme/vm"}}),
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := translate(viewOf(t, tc.res(t)...), cfg)
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
	t.Run("no underlay address anywhere", func(t *testing.T) {
		_, err := translate(viewOf(t), &Config{Host: testHost})
		if !errors.Is(err, ErrInvalidView) || !errors.Is(err, datapath.ErrInvalid) {
			t.Errorf("translate = %v, want ErrInvalidView wrapping datapath.ErrInvalid", err)
		}
	})
}
