package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"sigs.k8s.io/yaml"
)

func TestGetTable(t *testing.T) {
	h := newHarness(t)
	h.seed()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"tenants", []string{"get", "tenants"}, lines(
			"NAME   AGE",
			"acme   90m",
			"beta   90m",
		)},
		{"hosts", []string{"get", "host"}, lines(
			"NAME   UNDERLAY-IP   CAPACITY   LIVENESS   SINCE     VIEW",
			"h1     192.0.2.11    10Gbit     <none>     <never>   -",
		)},
		{"vpcs across tenants", []string{"get", "vpcs"}, lines(
			"TENANT   NAME   CIDRS         VNI    AGE",
			"acme     main   10.0.0.0/16   4096   90m",
			"beta     main   10.0.0.0/16   4097   90m",
		)},
		{"vpcs in a tenant", []string{"get", "vpcs", "--tenant", "acme"}, lines(
			"NAME   CIDRS         VNI    AGE",
			"main   10.0.0.0/16   4096   90m",
		)},
		{"all tenants wins over tenant", []string{"get", "vpcs", "--tenant", "acme", "--all-tenants"}, lines(
			"TENANT   NAME   CIDRS         VNI    AGE",
			"acme     main   10.0.0.0/16   4096   90m",
			"beta     main   10.0.0.0/16   4097   90m",
		)},
		{"subnets", []string{"get", "sn", "--tenant", "acme"}, lines(
			"NAME   VPC    CIDR          GATEWAY",
			"a      main   10.0.1.0/24   10.0.1.1",
		)},
		{"endpoints", []string{"get", "ep"}, lines(
			"TENANT   NAME    SUBNET   HOST   IP          MAC                 PHASE",
			"acme     db-1    a        h1     10.0.1.50   0a:58:0a:00:01:32   Pending",
			"acme     web-1   a        h1     10.0.1.2    0a:58:0a:00:01:02   Pending",
		)},
		{"endpoints by label", []string{"get", "endpoints", "-l", "app=web", "--all-tenants"}, lines(
			"TENANT   NAME    SUBNET   HOST   IP         MAC                 PHASE",
			"acme     web-1   a        h1     10.0.1.2   0a:58:0a:00:01:02   Pending",
		)},
		{"policies", []string{"get", "policy", "--tenant", "acme"}, lines(
			"NAME     SELECTOR   INGRESS   EGRESS",
			"web-in   app=web    1         0",
		)},
		{"qos", []string{"get", "qos", "--tenant", "acme"}, lines(
			"NAME   MIN     MAX     PRIO   DSCP",
			"gold   1Gbit   5Gbit   4      46",
		)},
		{"one endpoint", []string{"get", "Endpoint", "web-1", "--tenant", "acme"}, lines(
			"NAME    SUBNET   HOST   IP         MAC                 PHASE",
			"web-1   a        h1     10.0.1.2   0a:58:0a:00:01:02   Pending",
		)},
		{"one host, tenant ignored", []string{"get", "hosts", "h1", "--tenant", "acme"}, lines(
			"NAME   UNDERLAY-IP   CAPACITY   LIVENESS   SINCE     VIEW",
			"h1     192.0.2.11    10Gbit     <none>     <never>   -",
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkResult(t, h.run(tc.args...), 0, tc.want, "")
		})
	}
}

func TestGetAppIntentTable(t *testing.T) {
	h := newHarness(t)
	h.seed()
	intent := lines(
		"apiVersion: weft/v1",
		"kind: AppIntent",
		"metadata: {name: shop, tenant: acme}",
		"spec:",
		"  selector: {matchLabels: {app: web}}",
		"  bandwidth: {max: 1Gbit}",
	)
	if r := h.runIn(t.Context(), intent, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %s", r.stderr)
	}
	checkResult(t, h.run("get", "intent", "--tenant", "acme"), 0, lines(
		"NAME   VPC    SELECTOR   OBJECTS   UNMET",
		"shop   main   app=web    0         0",
	), "")
}

func TestGetEmpty(t *testing.T) {
	h := newHarness(t)
	h.seed()
	checkResult(t, h.run("get", "ep", "--tenant", "beta"), 0, "", "No endpoints found in tenant beta.\n")
	checkResult(t, h.run("get", "ep", "--tenant", "beta", "-o", "json"), 0, lines(
		`{`,
		`  "apiVersion": "weft/v1",`,
		`  "kind": "List",`,
		`  "metadata": {`,
		`    "resourceVersion": "`+h.revision()+`"`,
		`  },`,
		`  "items": []`,
		`}`,
	), "")
}

func TestGetJSONAndYAML(t *testing.T) {
	h := newHarness(t)
	h.seed()

	// One object: the object itself, as the API returns it.
	want := h.stored("vpc", "acme", "main")
	for _, format := range []string{"json", "yaml"} {
		t.Run("one "+format, func(t *testing.T) {
			out := h.ok("get", "vpc", "main", "--tenant", "acme", "-o", format)
			got := mustDecode(t, out)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decoded output (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("one json exactly", func(t *testing.T) {
		m := h.stored("tenant", "", "beta").GetObjectMeta() // what the controller set
		checkResult(t, h.run("get", "tenant", "beta", "-o", "json"), 0, lines(
			`{`,
			`  "apiVersion": "weft/v1",`,
			`  "kind": "Tenant",`,
			`  "metadata": {`,
			`    "name": "beta",`,
			`    "uid": "`+m.UID+`",`,
			`    "resourceVersion": "`+m.ResourceVersion+`",`,
			`    "generation": 1,`,
			`    "creationTimestamp": "`+m.CreationTimestamp+`"`,
			`  },`,
			`  "spec": {}`,
			`}`,
		), "")
	})

	// A list: a List object with the list's resourceVersion.
	for _, format := range []string{"json", "yaml"} {
		t.Run("list "+format, func(t *testing.T) {
			out := h.ok("get", "vpcs", "-o", format)
			data := []byte(out)
			if format == "yaml" {
				var err error
				if data, err = yaml.YAMLToJSON(data); err != nil {
					t.Fatal(err)
				}
			}
			var list struct {
				Kind     string `json:"kind"`
				Metadata struct {
					ResourceVersion string `json:"resourceVersion"`
				} `json:"metadata"`
				Items []json.RawMessage `json:"items"`
			}
			if err := json.Unmarshal(data, &list); err != nil {
				t.Fatal(err)
			}
			if rev := h.revision(); list.Kind != "List" || list.Metadata.ResourceVersion != rev || len(list.Items) != 2 {
				t.Errorf("got kind %q resourceVersion %q with %d items, want a List at %s with 2 items:\n%s",
					list.Kind, list.Metadata.ResourceVersion, len(list.Items), rev, out)
			}
			objs, err := apiv1.DecodeDocuments([]byte(out))
			if err != nil {
				t.Fatal(err)
			}
			var refs []string
			for _, o := range objs {
				refs = append(refs, apiv1.RefOf(o).String())
			}
			if diff := cmp.Diff([]string{"vpc/acme/main", "vpc/beta/main"}, refs); diff != "" {
				t.Errorf("items (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGetWatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		waits []string // output to await, in order: the first after the start, the rest after the change
	}{
		{
			name: "table",
			args: []string{"get", "vpcs", "-w"},
			waits: []string{
				lines(
					"EVENT      TENANT   NAME   CIDRS         VNI    AGE",
					"ADDED      acme     main   10.0.0.0/16   4096   90m",
					"ADDED      beta     main   10.0.0.0/16   4097   90m",
				),
				"\nMODIFIED   acme     main   10.0.0.0/16   4096   90m\n",
			},
		},
		{
			name: "json",
			args: []string{"get", "vpc", "main", "-w", "-o", "json", "--tenant", "acme"},
			waits: []string{
				`{"type":"ADDED","object":{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main","tenant":"acme","labels":{"env":"prod"}`,
				`{"type":"MODIFIED","object":{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main","tenant":"acme","labels":{"env":"dev"}`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			// The deadline only turns a broken watch into a failure instead of a hang.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			out, errOut := newSyncBuffer(), newSyncBuffer()
			done := make(chan int)
			go func() { done <- runEnv(ctx, tc.args, out, errOut, h.envWith("")) }()

			if !out.waitFor(ctx, tc.waits[0]) {
				t.Fatalf("initial output never came; got:\n%s%s", out, errOut)
			}
			// Change the VPC through the API.
			c, err := client.New(h.url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			o, err := c.Get(ctx, "vpc", "acme", "main")
			if err != nil {
				t.Fatal(err)
			}
			o.GetObjectMeta().Labels = map[string]string{"env": "dev"}
			if _, err := c.Update(ctx, o); err != nil {
				t.Fatal(err)
			}
			if !out.waitFor(ctx, tc.waits[1]) {
				t.Fatalf("change never printed; got:\n%s%s", out, errOut)
			}
			if !strings.HasPrefix(out.String(), tc.waits[0]) {
				t.Errorf("output does not start with the current objects:\n%s", out)
			}
			cancel() // like ^C: a watch ends successfully
			if code := <-done; code != 0 || errOut.String() != "" {
				t.Errorf("exit %d, stderr %q; want 0 and nothing", code, errOut.String())
			}
			if strings.Contains(out.String(), "beta") && tc.name == "json" {
				t.Errorf("watch of one name printed others:\n%s", out)
			}
		})
	}
}
