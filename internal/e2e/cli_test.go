// subprocess with embedded etcd): the CLI contract, and crash safety.
package e2e

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type listOf struct {
	Kind  string            `json:"kind"`
	Items []json.RawMessage `json:"items"`
}

type endpointJSON struct {
	Metadata struct {
		Name   string `json:"name"`
		Tenant string `json:"tenant"`
	} `json:"metadata"`
	Spec struct {
		Subnet string `json:"subnet"`
		Host   string `json:"host"`
	} `json:"spec"`
	Status struct {
		IP   string `json:"ip"`
		MAC  string `json:"mac"`
		Host string `json:"host"`
		VNI  uint32 `json:"vni"`
	} `json:"status"`
}

func examplesFile(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../examples/two-tenants.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCLIAgainstController(t *testing.T) {
	ctl := startController(t, t.TempDir(), freePort(t))
	example := examplesFile(t)

	// apply: everything created, in dependency order.
	out, errOut, code := weft(t, ctl, "", "apply", "-f", example)
	if code != 0 {
		t.Fatalf("apply exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 21 {
		t.Fatalf("apply printed %d lines, want 21:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, " created") {
			t.Errorf("first apply: %q, want ... created", l)
		}
	}
	if !strings.Contains(out, "endpoint/acme/web-1 created") || !strings.Contains(out, "host/h1 created") {
		t.Errorf("apply output lacks expected refs:\n%s", out)
	}

	// apply again: unchanged.
	out, _, code = weft(t, ctl, "", "apply", "-f", example)
	if code != 0 || strings.Count(out, " unchanged") != 21 {
		t.Fatalf("second apply (exit %d) not all unchanged:\n%s", code, out)
	}

	// A label change from stdin: configured.
	changed := `apiVersion: weft/v1
kind: Endpoint
metadata: {name: web-1, tenant: acme, labels: {role: web, tier: front}}
spec: {subnet: web, host: h1, qosClass: gold}
`
	out, errOut, code = weft(t, ctl, changed, "apply", "-f", "-")
	if code != 0 || strings.TrimSpace(out) != "endpoint/acme/web-1 configured" {
		t.Fatalf("apply change: exit %d out %q err %q", code, out, errOut)
	}

	// get -o json: every endpoint has a distinct address inside its subnet.
	out, errOut, code = weft(t, ctl, "", "get", "endpoints", "--all-tenants", "-o", "json")
	if code != 0 {
		t.Fatalf("get endpoints: exit %d: %s", code, errOut)
	}
	var l listOf
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("get -o json is not a List: %v\n%s", err, out)
	}
	if len(l.Items) != 6 {
		t.Fatalf("got %d endpoints, want 6", len(l.Items))
	}
	subnets := map[string]string{"acme/web": "10.0.1.0/24", "acme/db": "10.0.2.0/24", "globex/etl": "10.0.1.0/24", "globex/warehouse": "10.0.2.0/24"}
	seen := map[string]string{}
	vnis := map[string]uint32{}
	for _, raw := range l.Items {
		var ep endpointJSON
		if err := json.Unmarshal(raw, &ep); err != nil {
			t.Fatal(err)
		}
		ip, err := netip.ParseAddr(ep.Status.IP)
		if err != nil {
			t.Fatalf("%s/%s has no status.ip: %s", ep.Metadata.Tenant, ep.Metadata.Name, raw)
		}
		cidr := netip.MustParsePrefix(subnets[ep.Metadata.Tenant+"/"+ep.Spec.Subnet])
		if !cidr.Contains(ip) || ip == cidr.Addr().Next() {
			t.Errorf("%s/%s got %s, not a usable address of %s", ep.Metadata.Tenant, ep.Metadata.Name, ip, cidr)
		}
		key := ep.Metadata.Tenant + "/" + ip.String()
		if other, dup := seen[key]; dup {
			t.Errorf("address %s given to %s and %s", key, other, ep.Metadata.Name)
		}
		seen[key] = ep.Metadata.Name
		if ep.Status.MAC == "" || ep.Status.Host != ep.Spec.Host || ep.Status.VNI == 0 {
			t.Errorf("%s/%s status incomplete: %+v", ep.Metadata.Tenant, ep.Metadata.Name, ep.Status)
		}
		vnis[ep.Metadata.Tenant] = ep.Status.VNI
	}
	if vnis["acme"] == vnis["globex"] {
		t.Errorf("acme and globex share VNI %d", vnis["acme"])
	}
	// The requested static address is honoured in both tenants (overlap is fine).
	if seen["acme/10.0.2.10"] != "db-1" || seen["globex/10.0.2.10"] != "wh-1" {
		t.Errorf("static addresses not honoured: %v", seen)
	}

	// get one object as yaml; label selector; table.
	out, _, code = weft(t, ctl, "", "get", "vpc", "main", "--tenant", "globex", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "vni:") || !strings.Contains(out, "10.0.0.0/16") {
		t.Errorf("get vpc -o yaml (exit %d):\n%s", code, out)
	}
	out, _, code = weft(t, ctl, "", "get", "ep", "--tenant", "acme", "-l", "role=web", "-o", "json")
	if code != 0 {
		t.Fatalf("get -l: exit %d", code)
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Items) != 2 {
		t.Errorf("get -l role=web: want 2 items, got %d (%v)", len(l.Items), err)
	}
	out, _, code = weft(t, ctl, "", "get", "hosts")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "192.0.2.13") {
		t.Errorf("get hosts table (exit %d):\n%s", code, out)
	}

	// Errors: non-zero exit, message on stderr, nothing stored.
	for _, tc := range []struct {
		name, stdin string
		args        []string
		wantErr     string
	}{
		{"delete VPC with subnets", "", []string{"delete", "vpc", "main", "--tenant", "acme"}, "subnet/acme/web"},
		{"malformed YAML", "apiVersion: weft/v1\nkind: Tenant\nmetadata: {name: zz}\n---\nkind: [unclosed\n", []string{"apply", "-f", "-"}, "line"},
		{"unknown field", "apiVersion: weft/v1\nkind: Tenant\nmetadata: {name: zz}\nspc: {}\n", []string{"apply", "-f", "-"}, "spc"},
		{"unknown kind", "", []string{"get", "routers"}, "routers"},
		{"overlapping subnet", "apiVersion: weft/v1\nkind: Subnet\nmetadata: {name: web2, tenant: acme}\nspec: {vpc: main, cidr: 10.0.1.128/25}\n", []string{"apply", "-f", "-"}, "spec.cidr"},
		{"address taken", "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: db-2, tenant: acme}\nspec: {subnet: db, host: h1, ip: 10.0.2.10}\n", []string{"apply", "-f", "-"}, "already taken"},
		{"missing reference", "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: x, tenant: acme}\nspec: {subnet: nope, host: h1}\n", []string{"apply", "-f", "-"}, "spec.subnet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := weft(t, ctl, tc.stdin, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0, want an error")
			}
			if !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr %q does not mention %q", errOut, tc.wantErr)
			}
		})
	}
	out, _, _ = weft(t, ctl, "", "get", "tenants", "-o", "json")
	if strings.Contains(out, `"zz"`) {
		t.Errorf("a failed apply stored tenant zz:\n%s", out)
	}

	// delete -f removes everything, dependents first.
	out, errOut, code = weft(t, ctl, "", "delete", "-f", example)
	if code != 0 {
		t.Fatalf("delete -f: exit %d: %s\n%s", code, errOut, out)
	}
	if n := strings.Count(out, " deleted"); n != 21 {
		t.Errorf("delete -f deleted %d objects, want 21:\n%s", n, out)
	}
	for _, kind := range []string{"endpoints", "subnets", "vpcs", "tenants", "hosts"} {
		out, _, _ = weft(t, ctl, "", "get", kind, "-o", "json")
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("get %s: %v", kind, err)
		}
		if diff := cmp.Diff(0, len(l.Items)); diff != "" {
			t.Errorf("%s left after delete -f (-want +got):\n%s", kind, diff)
		}
	}
	ctl.stop()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := weftBinary(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}
