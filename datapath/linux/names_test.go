package linux

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNames(t *testing.T) {
	n := newNames("wft", "h1")
	ep := n.Endpoint("acme/web-1")
	tests := []struct {
		name   string
		in     string
		wantV  uint32
		wantEP bool
	}{
		{"vpc", "wft-h1-v100", 100, false},
		{"endpoint", ep, 0, true},
		{"other host", "wft-h11-v100", 0, false},
		{"host with a v in its name", "wft-h1-v100-v5", 0, false},
		{"leading zero", "wft-h1-v0100", 0, false},
		{"vni zero", "wft-h1-v0", 0, false},
		{"short hash", "wft-h1-eabc", 0, false},
		{"bad hash", "wft-h1-e" + strings.Repeat("1", 16), 0, false},
		{"other prefix", "wftt-h1-v100", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, e := n.parse(tc.in)
			if v != tc.wantV || e != tc.wantEP {
				t.Errorf("parse(%q) = %d, %v; want %d, %v", tc.in, v, e, tc.wantV, tc.wantEP)
			}
		})
	}
	if got := n.vpc(100); got != "wft-h1-v100" {
		t.Errorf("vpc(100) = %q", got)
	}
	for _, id := range []string{"a/b", strings.Repeat("x", 300)} {
		if v := VethName(id); len(v) > 15 || !strings.HasPrefix(v, LinkPrefix) {
			t.Errorf("VethName(%q) = %q: longer than IFNAMSIZ-1 or not ours", id, v)
		}
	}
	if VethName("acme/a") == VethName("acme/b") {
		t.Error("veth names collide")
	}
}

func TestVTEPMAC(t *testing.T) {
	if diff := cmp.Diff("02:77:c0:00:02:0b", VTEPMAC(netip.MustParseAddr("192.0.2.11")).String()); diff != "" {
		t.Error(diff)
	}
	m := VTEPMAC(netip.MustParseAddr("2001:db8::1"))
	if m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("VTEPMAC(v6) = %s: not a locally administered unicast MAC", m)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{HostName: "h1"}, true},
		{"no host", Config{}, false},
		{"slash in host", Config{HostName: "a/b"}, false},
		{"leading dash", Config{HostName: "-h"}, false},
		{"relative dir", Config{HostName: "h1", NetnsDir: "run/netns"}, false},
		{"resync every Set", Config{HostName: "h1", EndpointResync: -1, VPCResync: -1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestParseNeighMsg(t *testing.T) {
	// ndmsg{AF_INET, ifindex 7, NUD_INCOMPLETE} + NDA_DST 10.0.1.20
	b := []byte{2, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 8, 0, 1, 0, 10, 0, 1, 20}
	ip, idx, ok := parseNeighMsg(b)
	if !ok || idx != 7 || ip != netip.MustParseAddr("10.0.1.20") {
		t.Errorf("parseNeighMsg = %s, %d, %v", ip, idx, ok)
	}
	if _, _, ok := parseNeighMsg(b[:10]); ok {
		t.Error("short message parsed")
	}
}
