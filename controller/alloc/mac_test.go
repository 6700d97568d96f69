package alloc

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMAC(t *testing.T) {
	tests := []struct {
		name string
		ip   netip.Addr
		want string
	}{
		{name: "ipv4", ip: netip.MustParseAddr("10.1.2.3"), want: "0a:58:0a:01:02:03"},
		{name: "ipv4 high", ip: netip.MustParseAddr("192.168.255.254"), want: "0a:58:c0:a8:ff:fe"},
		{name: "ipv4-mapped", ip: netip.MustParseAddr("::ffff:10.1.2.3"), want: "0a:58:0a:01:02:03"},
		{name: "ipv6", ip: netip.MustParseAddr("fd00:1:2:3::a:bc:1234"), want: "0a:58:00:bc:12:34"},
		{name: "invalid", ip: netip.Addr{}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MAC(tt.ip)
			if diff := cmp.Diff(tt.want, got.String()); diff != "" {
				t.Errorf("MAC(%s) (-want +got):\n%s", tt.ip, diff)
			}
			if got != nil && (got[0]&0x02 == 0 || got[0]&0x01 != 0) {
				t.Errorf("MAC(%s) = %s is not locally administered unicast", tt.ip, got)
			}
		})
	}
}
