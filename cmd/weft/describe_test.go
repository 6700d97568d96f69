package main

import (
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	h := newHarness(t)
	h.seed()
	// Set by the controller: creation time, UID, resourceVersion.
	vpc, beta := h.stored("vpc", "acme", "main").GetObjectMeta(), h.stored("tenant", "", "beta").GetObjectMeta()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"vpc", []string{"describe", "vpc", "main", "--tenant", "acme"}, lines(
			"Kind:             VPC",
			"Name:             main",
			"Tenant:           acme",
			"Labels:           env=prod",
			"Created:          "+vpc.CreationTimestamp+" (90m ago)",
			"UID:              "+vpc.UID,
			"ResourceVersion:  "+vpc.ResourceVersion,
			"Generation:       1",
			"Spec:",
			"  cidrs:",
			"  - 10.0.0.0/16",
			"  defaultPolicy: allow",
			"Status:",
			"  vni: 4096",
			"Subnets (1):",
			"  NAME   CIDR          GATEWAY",
			"  a      10.0.1.0/24   10.0.1.1",
		)},
		{"tenant", []string{"describe", "tenant", "beta"}, lines(
			"Kind:             Tenant",
			"Name:             beta",
			"Labels:           <none>",
			"Created:          "+beta.CreationTimestamp+" (90m ago)",
			"UID:              "+beta.UID,
			"ResourceVersion:  "+beta.ResourceVersion,
			"Generation:       1",
			"Spec:             <none>",
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkResult(t, h.run(tc.args...), 0, tc.want, "")
		})
	}

	// Related objects of a subnet and a host.
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"subnet", []string{"describe", "subnet", "a", "--tenant", "acme"},
			[]string{"Endpoints:        2\n", "  vpc: main\n", "  gateway: 10.0.1.1\n"}},
		{"host", []string{"describe", "host", "h1"}, []string{
			"Endpoints (2):\n",
			"  TENANT   NAME    SUBNET   IP          PHASE\n",
			"  acme     db-1    a        10.0.1.50   Pending\n",
			"  acme     web-1   a        10.0.1.2    Pending\n",
			"  hostID: 1\n",
		}},
		{"endpoint", []string{"describe", "ep", "web-1", "--tenant", "acme"}, []string{
			"Labels:           app=web\n", "  qosClass: gold\n", "  ip: 10.0.1.2\n", "  mac: 0a:58:0a:00:01:02\n", "  phase: Pending\n",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := h.ok(tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
