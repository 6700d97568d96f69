package main

import (
	"strings"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/intent"
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
	// The related objects are asked for by field selector, not listed
	// whole and filtered here.
	var lists []string
	for _, r := range h.srv.Requests() {
		if p, _, _ := strings.Cut(r, "?"); strings.HasPrefix(r, "GET ") && (strings.HasSuffix(p, "/endpoints") || strings.HasSuffix(p, "/subnets")) {
			lists = append(lists, r)
		}
	}
	want := []string{
		"GET /apis/weft/v1/tenants/acme/subnets?fieldSelector=spec.vpc%3Dmain",
		"GET /apis/weft/v1/tenants/acme/endpoints?fieldSelector=spec.subnet%3Da",
		"GET /apis/weft/v1/endpoints?fieldSelector=spec.host%3Dh1",
	}
	if len(lists) != len(want) {
		t.Fatalf("lists of related objects: %q, want %q", lists, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(lists[i], w) {
			t.Errorf("list %d: %s, want %s...", i, lists[i], w)
		}
	}
}

// TestDescribeAppIntent: describe shows an intent's needs, each with the
// object and rule that meet it, and its status as the intent controller
// wrote it; the owned objects name their owner.
func TestDescribeAppIntent(t *testing.T) {
	h := newHarness(t)
	h.seed()
	ctl, err := intent.New(intent.Config{Store: h.srv.Env.Store, Writer: h.srv.Env.Registry})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if r := h.runIn(t.Context(), `
apiVersion: weft/v1
kind: AppIntent
metadata: {name: shop, tenant: acme}
spec:
  vpc: main
  selector: {matchLabels: {app: web}}
  latency: low
  talksTo:
  - {selector: {matchLabels: {app: db}}, ports: [{port: 5432}]}
  exposes:
  - {ports: [{port: 443}], from: [{cidr: 0.0.0.0/0}]}
`, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %+v", r)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if in := h.stored("appintent", "acme", "shop").(*apiv1.AppIntent); in.Status.ObservedGeneration == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the intent's status was not written within 30s")
		}
	}
	uid := h.stored("appintent", "acme", "shop").GetObjectMeta().UID
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"appintent", []string{"describe", "appintent", "shop", "--tenant", "acme"}, []string{
			"Status:\n  objects:\n  - kind: SecurityPolicy\n    name: appintent-shop\n  - kind: QoSClass\n    name: appintent-shop\n  observedGeneration: 1\n" +
				"  unmet:\n  - 'latency: the intent''s class does not apply to endpoints with their own qosClass:\n    web-1'\n",
			"Needs (5):\n" +
				"  NEED                                 OBJECT                          RULE\n" +
				"  selector: app=web in VPC main        SecurityPolicy/appintent-shop   applies to app=web in VPC main\n" +
				"  talksTo[0]: app=db TCP 5432          SecurityPolicy/appintent-shop   egress[0]: to app=db on TCP 5432\n" +
				"  exposes[0]: TCP 443 from 0.0.0.0/0   SecurityPolicy/appintent-shop   ingress[0]: from 0.0.0.0/0 on TCP 443\n" +
				"  selector: app=web in VPC main        QoSClass/appintent-shop         the class of the selected endpoints that name none\n" +
				"  latency: low                         QoSClass/appintent-shop         priority: 0, dscp: 46\n",
		}},
		{"owned policy", []string{"describe", "securitypolicy", "appintent-shop", "--tenant", "acme"}, []string{
			"Owners:           AppIntent shop (" + uid + ")\n",
		}},
		{"get", []string{"get", "appintents", "--tenant", "acme"}, []string{
			"NAME   VPC    SELECTOR   OBJECTS   UNMET\nshop   main   app=web    2         1\n",
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
