package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiv1 "github.com/weftnet/weft/api/v1"
)

var networkCreated = lines(
	"tenant/acme created",
	"host/h1 created",
	"qosclass/acme/gold created",
	"vpc/acme/main created",
	"subnet/acme/a created",
	"securitypolicy/acme/web-in created",
	"endpoint/acme/web-1 created",
	"endpoint/acme/db-1 created",
)

func TestApply(t *testing.T) {
	h := newHarness(t)

	// Dependency order, file order within a kind.
	checkResult(t, h.run("apply", "-f", "testdata/network.yaml"), 0, networkCreated, "")

	// Again: nothing to do, and nothing written.
	writes := len(h.srv.Writes())
	checkResult(t, h.run("apply", "-f", "testdata/network.yaml"), 0,
		strings.ReplaceAll(networkCreated, "created", "unchanged"), "")
	if n := len(h.srv.Writes()) - writes; n != 0 {
		t.Errorf("re-applying wrote %d times: %v", n, h.srv.Writes()[writes:])
	}

	// One edited object is configured, from stdin this time.
	data, err := os.ReadFile("testdata/network.yaml")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), "labels: {env: prod}", "labels: {env: staging}", 1)
	r := h.runIn(t.Context(), edited, "apply", "-f", "-")
	checkResult(t, r, 0, strings.Replace(strings.ReplaceAll(networkCreated, "created", "unchanged"),
		"vpc/acme/main unchanged", "vpc/acme/main configured", 1), "")
	if o := h.stored("vpc", "acme", "main"); o.GetObjectMeta().Labels["env"] != "staging" {
		t.Errorf("stored labels %v, want env=staging", o.GetObjectMeta().Labels)
	}
}

func TestApplyDirectory(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	for name, content := range map[string]string{
		"b-vpc.yml":  "apiVersion: weft/v1\nkind: VPC\nmetadata: {name: v, tenant: t1}\nspec: {cidrs: [10.0.0.0/16]}\n",
		"a-ten.json": `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"t1"}}`,
		"notes.txt":  "not a manifest",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil { // a directory is skipped
		t.Fatal(err)
	}
	checkResult(t, h.run("apply", "-f", dir), 0, lines("tenant/t1 created", "vpc/t1/v created"), "")
}

func TestApplyMalformedAppliesNothing(t *testing.T) {
	h := newHarness(t)
	// A good file first, then one whose second document is malformed.
	r := h.run("apply", "-f", "testdata/beta.json", "-f", "testdata/malformed.yaml")
	checkResult(t, r, 1, "", "error: testdata/malformed.yaml: document 2 (line 5): unknown field \"spec.cidrz\"\n")
	if w := h.srv.Writes(); len(w) != 0 {
		t.Errorf("a malformed input still wrote: %v", w)
	}
}

func TestApplyContinuesAfterAPIError(t *testing.T) {
	h := newHarness(t)
	input := `apiVersion: weft/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: weft/v1
kind: VPC
metadata: {name: bad, tenant: acme}
spec: {cidrs: [10.0.0.0/16, 10.0.128.0/17]}
---
apiVersion: weft/v1
kind: VPC
metadata: {name: good, tenant: acme}
spec: {cidrs: [10.1.0.0/16]}
`
	r := h.runIn(t.Context(), input, "apply", "-f", "-")
	checkResult(t, r, 1, lines("tenant/acme created", "vpc/acme/good created"), lines(
		"error: vpc/acme/bad is invalid",
		"  spec.cidrs[1]: overlaps 10.0.0.0/16 (spec.cidrs[0])",
		"error: 1 of 3 objects failed to apply",
	))
}

func TestApplyTenant(t *testing.T) {
	noTenant := "apiVersion: weft/v1\nkind: VPC\nmetadata: {name: v}\nspec: {cidrs: [10.0.0.0/16]}\n"
	inBeta := "apiVersion: weft/v1\nkind: VPC\nmetadata: {name: v, tenant: beta}\nspec: {cidrs: [10.0.0.0/16]}\n"
	for _, tc := range []struct {
		name, input string
		args        []string
		envTenant   string
		want        result
	}{
		{name: "from --tenant", input: noTenant, args: []string{"--tenant", "acme"},
			want: result{stdout: "vpc/acme/v created\n"}},
		{name: "from WEFT_TENANT", input: noTenant, envTenant: "acme",
			want: result{stdout: "vpc/acme/v created\n"}},
		{name: "missing", input: noTenant, want: result{code: 1,
			stderr: "error: <stdin>: vpc/v: metadata.tenant is not set: set it in the file or pass --tenant\n"}},
		{name: "file beats WEFT_TENANT", input: inBeta, envTenant: "acme",
			want: result{stdout: "vpc/beta/v created\n"}},
		{name: "file contradicts --tenant", input: inBeta, args: []string{"--tenant", "acme"}, want: result{code: 1,
			stderr: "error: <stdin>: vpc/beta/v: its tenant differs from --tenant \"acme\"\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.ok("apply", "-f", "testdata/beta.json")
			if _, err := h.srv.Env.Registry.Create(t.Context(), mustDecode(t, "apiVersion: weft/v1\nkind: Tenant\nmetadata: {name: acme}\n")); err != nil {
				t.Fatal(err)
			}
			h.env["WEFT_TENANT"] = tc.envTenant
			r := h.runIn(t.Context(), tc.input, append(tc.args, "apply", "-f", "-")...)
			checkResult(t, r, tc.want.code, tc.want.stdout, tc.want.stderr)
		})
	}
}

func TestApplyGetRoundTrip(t *testing.T) {
	// What get -o yaml|json prints, apply takes back unchanged.
	h := newHarness(t)
	h.seed()
	for _, format := range []string{"yaml", "json"} {
		t.Run(format, func(t *testing.T) {
			var all strings.Builder
			for _, kind := range []string{"tenants", "hosts", "qosclasses", "vpcs", "subnets", "securitypolicies", "endpoints"} {
				all.WriteString(h.ok("get", kind, "-o", format))
				if format == "yaml" {
					all.WriteString("---\n")
				}
			}
			r := h.runIn(t.Context(), all.String(), "apply", "-f", "-")
			if r.code != 0 || strings.Count(r.stdout, " unchanged\n") != 10 || strings.Contains(r.stdout, "configured") {
				t.Errorf("re-applying get -o %s output:\n%s%s", format, r.stdout, r.stderr)
			}
		})
	}
	if diff := cmp.Diff([]string(nil), unchangedWrites(h)); diff != "" {
		t.Errorf("writes after seeding (-want +got):\n%s", diff)
	}
}

// unchangedWrites returns the writes after the seed's 10 creates.
func unchangedWrites(h *harness) []string {
	w := h.srv.Writes()
	if len(w) <= 10 {
		return nil
	}
	return w[10:]
}

func mustDecode(t *testing.T, s string) apiv1.Object {
	t.Helper()
	o, err := apiv1.DecodeObject([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return o
}
