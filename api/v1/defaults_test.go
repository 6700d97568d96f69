package v1

import (
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

func TestDefault(t *testing.T) {
	four, two := 4, 2
	tests := []struct {
		name string
		in   Object
		want Object
	}{
		{name: "type meta",
			in:   &Tenant{Metadata: meta("", "acme")},
			want: &Tenant{TypeMeta: TypeMeta{APIVersion, KindTenant}, Metadata: meta("", "acme")}},
		{name: "type meta kept when set",
			in:   &Tenant{TypeMeta: TypeMeta{"weft/v2", "Other"}},
			want: &Tenant{TypeMeta: TypeMeta{"weft/v2", "Other"}}},
		{name: "subnet gateway is the first host address",
			in:   &Subnet{Spec: SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24"}},
			want: &Subnet{TypeMeta: TypeMeta{APIVersion, KindSubnet}, Spec: SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1"}}},
		{name: "subnet IPv6 cidr canonical and gateway",
			in:   &Subnet{Spec: SubnetSpec{CIDR: "FD00:0:0:1:0::/64"}},
			want: &Subnet{TypeMeta: TypeMeta{APIVersion, KindSubnet}, Spec: SubnetSpec{CIDR: "fd00:0:0:1::/64", Gateway: "fd00:0:0:1::1"}}},
		{name: "subnet gateway given is kept, canonical",
			in:   &Subnet{Spec: SubnetSpec{CIDR: "fd00::/64", Gateway: "FD00::FE"}},
			want: &Subnet{TypeMeta: TypeMeta{APIVersion, KindSubnet}, Spec: SubnetSpec{CIDR: "fd00::/64", Gateway: "fd00::fe"}}},
		{name: "subnet with host bits is not masked and gets no gateway",
			in:   &Subnet{Spec: SubnetSpec{CIDR: "10.0.1.5/24"}},
			want: &Subnet{TypeMeta: TypeMeta{APIVersion, KindSubnet}, Spec: SubnetSpec{CIDR: "10.0.1.5/24"}}},
		{name: "subnet /32 gets no gateway",
			in:   &Subnet{Spec: SubnetSpec{CIDR: "10.0.1.5/32"}},
			want: &Subnet{TypeMeta: TypeMeta{APIVersion, KindSubnet}, Spec: SubnetSpec{CIDR: "10.0.1.5/32"}}},
		{name: "subnet with invalid cidr gets no gateway",
			in:   &Subnet{Spec: SubnetSpec{CIDR: "nonsense"}},
			want: &Subnet{TypeMeta: TypeMeta{APIVersion, KindSubnet}, Spec: SubnetSpec{CIDR: "nonsense"}}},
		{name: "vpc cidrs canonical, host bits left alone",
			in:   &VPC{Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16", "2001:DB8::/32", "10.1.2.3/16"}}},
			want: &VPC{TypeMeta: TypeMeta{APIVersion, KindVPC}, Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16", "2001:db8::/32", "10.1.2.3/16"}, DefaultPolicy: DefaultPolicyAllow}}},
		{name: "vpc default policy kept",
			in:   &VPC{Spec: VPCSpec{DefaultPolicy: DefaultPolicyDeny}},
			want: &VPC{TypeMeta: TypeMeta{APIVersion, KindVPC}, Spec: VPCSpec{DefaultPolicy: DefaultPolicyDeny}}},
		{name: "qos priority",
			in:   &QoSClass{},
			want: &QoSClass{TypeMeta: TypeMeta{APIVersion, KindQoSClass}, Spec: QoSClassSpec{Priority: &four}}},
		{name: "qos priority kept",
			in:   &QoSClass{Spec: QoSClassSpec{Priority: &two}},
			want: &QoSClass{TypeMeta: TypeMeta{APIVersion, KindQoSClass}, Spec: QoSClassSpec{Priority: &two}}},
		{name: "endpoint mac lower case, ip canonical",
			in:   &Endpoint{Spec: EndpointSpec{MAC: "02-00-0A-00-01-0A", IP: "FD00::0A"}},
			want: &Endpoint{TypeMeta: TypeMeta{APIVersion, KindEndpoint}, Spec: EndpointSpec{MAC: "02:00:0a:00:01:0a", IP: "fd00::a"}}},
		{name: "endpoint unparsable mac is lower-cased only",
			in:   &Endpoint{Spec: EndpointSpec{MAC: "NOT-A-MAC"}},
			want: &Endpoint{TypeMeta: TypeMeta{APIVersion, KindEndpoint}, Spec: EndpointSpec{MAC: "not-a-mac"}}},
		{name: "host underlay canonical",
			in:   &Host{Spec: HostSpec{UnderlayIP: "2001:DB8:0::11"}},
			want: &Host{TypeMeta: TypeMeta{APIVersion, KindHost}, Spec: HostSpec{UnderlayIP: "2001:db8::11"}}},
		{name: "policy protocols",
			in: &SecurityPolicy{Spec: SecurityPolicySpec{
				Ingress: []PolicyRule{{Ports: []PolicyPort{{Port: 80}, {Protocol: "udp"}}, Peers: []PolicyPeer{{CIDR: "FD00::/8"}}}},
				Egress:  []PolicyRule{{Ports: []PolicyPort{{Protocol: "Icmp"}}}},
			}},
			want: &SecurityPolicy{TypeMeta: TypeMeta{APIVersion, KindSecurityPolicy}, Spec: SecurityPolicySpec{
				Ingress: []PolicyRule{{Ports: []PolicyPort{{Protocol: "TCP", Port: 80}, {Protocol: "UDP"}}, Peers: []PolicyPeer{{CIDR: "fd00::/8"}}}},
				Egress:  []PolicyRule{{Ports: []PolicyPort{{Protocol: "ICMP"}}}},
			}}},
		{name: "intent latency, protocols and peers",
			in: &AppIntent{Spec: AppIntentSpec{
				TalksTo: []IntentDestination{{PolicyPeer: PolicyPeer{CIDR: "010.0.0.0/8"}, Ports: []PolicyPort{{Port: 5432}}}, {PolicyPeer: PolicyPeer{CIDR: "FD00:0::/16"}}},
				Exposes: []IntentExposure{{Ports: []PolicyPort{{Protocol: "sctp", Port: 9}, {Protocol: "icmp", ICMPType: &two}}, From: []PolicyPeer{{CIDR: "FD00::/8"}}}},
			}},
			want: &AppIntent{TypeMeta: TypeMeta{APIVersion, KindAppIntent}, Spec: AppIntentSpec{
				Latency: LatencyNormal,
				TalksTo: []IntentDestination{{PolicyPeer: PolicyPeer{CIDR: "010.0.0.0/8"}, Ports: []PolicyPort{{Protocol: "TCP", Port: 5432}}}, {PolicyPeer: PolicyPeer{CIDR: "fd00::/16"}}},
				Exposes: []IntentExposure{{Ports: []PolicyPort{{Protocol: "SCTP", Port: 9}, {Protocol: "ICMP", ICMPType: &two}}, From: []PolicyPeer{{CIDR: "fd00::/8"}}}},
			}}},
		{name: "intent latency kept",
			in:   &AppIntent{Spec: AppIntentSpec{Latency: LatencyLow}},
			want: &AppIntent{TypeMeta: TypeMeta{APIVersion, KindAppIntent}, Spec: AppIntentSpec{Latency: LatencyLow}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Default(tt.in)
			if diff := gocmp.Diff(tt.want, tt.in); diff != "" {
				t.Errorf("Default (-want +got):\n%s", diff)
			}
			Default(tt.in)
			if diff := gocmp.Diff(tt.want, tt.in); diff != "" {
				t.Errorf("Default is not idempotent (-want +got):\n%s", diff)
			}
		})
	}
}
