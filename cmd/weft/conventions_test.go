package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client/clientconfig"
)

func TestGetManyAndFormats(t *testing.T) {
	h := newHarness(t)
	h.seed()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"several names", []string{"get", "ep", "web-1", "db-1", "-n", "acme"}, lines(
			"NAME    SUBNET   HOST   IP          MAC                 PHASE",
			"web-1   a        h1     10.0.1.2    0a:58:0a:00:01:02   Pending",
			"db-1    a        h1     10.0.1.50   0a:58:0a:00:01:32   Pending",
		)},
		{"kind/name", []string{"get", "vpc/main", "sn/a", "-n", "acme"}, lines(
			"NAME       CIDRS         VNI    AGE",
			"vpc/main   10.0.0.0/16   4096   90m",
			"",
			"NAME       VPC    CIDR          GATEWAY",
			"subnet/a   main   10.0.1.0/24   10.0.1.1",
		)},
		{"two kinds", []string{"get", "tenants,hosts"}, lines(
			"NAME          AGE",
			"tenant/acme   90m",
			"tenant/beta   90m",
			"",
			"NAME      UNDERLAY-IP   CAPACITY   LIVENESS   SINCE     VIEW",
			"host/h1   192.0.2.11    10Gbit     <none>     <never>   -",
		)},
		{"-A and -o name", []string{"get", "vpcs", "-A", "-o", "name"}, lines("vpc/main", "vpc/main")},
		{"wide and labels", []string{"get", "ep", "-n", "acme", "-o", "wide", "--show-labels"}, lines(
			"NAME    SUBNET   HOST   IP          MAC                 PHASE     READY   QOS      IDENTITY   NETNS    LABELS",
			"db-1    a        h1     10.0.1.50   0a:58:0a:00:01:32   Pending   False   <none>   2          <none>   app=db",
			"web-1   a        h1     10.0.1.2    0a:58:0a:00:01:02   Pending   False   gold     1          <none>   app=web",
		)},
		{"wide tenants", []string{"get", "tenants", "-o", "wide"}, lines(
			"NAME   AGE   DESCRIPTION",
			"acme   90m   ACME Corp",
			"beta   90m   <none>",
		)},
		{"sort by address", []string{"get", "ep", "-n", "acme", "--sort-by", "{.status.ip}", "-o", "name"}, lines("endpoint/web-1", "endpoint/db-1")},
		{"sort by VNI, descending names", []string{"get", "vpcs", "-A", "--sort-by", ".status.vni", "-o", "jsonpath={range .items[*]}{.metadata.tenant} {end}"}, "acme beta "},
		{"jsonpath of one object", []string{"get", "ep", "web-1", "-n", "acme", "-o", `jsonpath={.spec.qosClass}/{.status.conditions[?(@.type=="Ready")].reason}`}, "gold/Pending"},
		{"jsonpath in quotes", []string{"get", "ep", "-n", "acme", "-o", "jsonpath='{.items[*].metadata.name}'"}, "db-1 web-1"},
		{"field selector", []string{"get", "ep", "-A", "--field-selector", "spec.host=h1,metadata.name!=web-1", "-o", "name"}, lines("endpoint/db-1")},
		{"field selector, none", []string{"get", "ep", "-A", "--field-selector", "status.phase=Ready", "-o", "name"}, ""},
		{"json of several is a List", []string{"get", "tenant/acme", "tenant/beta", "-o", "jsonpath={.kind}:{.items[*].metadata.name}"}, "List:acme beta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkResult(t, h.run(tc.args...), 0, tc.want, "")
		})
	}

	// A name that is missing does not hide the others, but fails the run.
	checkResult(t, h.run("get", "ep", "web-1", "nope", "-n", "acme", "-o", "name"), 1, lines("endpoint/web-1"), "error: endpoint/acme/nope not found\n")
}

// TestGetFollowsTheContextTenant: without -n, get lists the tenant of the
// current context, as kubectl follows the namespace; -A lists them all.
func TestGetFollowsTheContextTenant(t *testing.T) {
	h := newHarness(t)
	h.seed()
	cfg, err := clientconfig.Load(h.env[clientconfig.EnvPath])
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[0]
	ctx.Tenant = "beta"
	cfg.SetContext(ctx)
	if err := cfg.Save(); err != nil {
		t.Fatal(err)
	}
	checkResult(t, h.run("get", "vpcs"), 0, lines(
		"NAME   CIDRS         VNI    AGE",
		"main   10.0.0.0/16   4097   90m",
	), "")
	checkResult(t, h.run("get", "vpcs", "-A", "-o", "name"), 0, lines("vpc/main", "vpc/main"), "")
	checkResult(t, h.run("get", "sn", "-n", "acme", "-o", "name"), 0, lines("subnet/a"), "")
	checkResult(t, h.run("get", "sn"), 0, "", "No subnets found in tenant beta.\n")
}

// TestAnnotationsRoundTrip: annotations that GitOps tools write are kept
// through apply and shown by get.
func TestAnnotationsRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.seed()
	manifest := lines(
		"apiVersion: weft/v1",
		"kind: VPC",
		"metadata:",
		"  name: main",
		"  tenant: beta",
		"  annotations:",
		"    argocd.argoproj.io/sync-wave: \"2\"",
		"    kubectl.kubernetes.io/last-applied-configuration: '{\"spec\":{}}'",
		"spec: {cidrs: [10.0.0.0/16]}",
	)
	checkResult(t, h.runIn(t.Context(), manifest, "apply", "-f", "-"), 0, "vpc/beta/main configured\n", "")
	out := h.ok("get", "vpc", "main", "-n", "beta", "-o", "yaml")
	for _, want := range []string{"argocd.argoproj.io/sync-wave: \"2\"", `kubectl.kubernetes.io/last-applied-configuration: '{"spec":{}}'`} {
		if !strings.Contains(out, want) {
			t.Errorf("get -o yaml lacks %s:\n%s", want, out)
		}
	}
	checkResult(t, h.runIn(t.Context(), manifest, "apply", "-f", "-"), 0, "vpc/beta/main unchanged\n", "")
}

func TestApplyServerSideAndDryRun(t *testing.T) {
	h := newHarness(t)
	h.seed()
	rev := h.revision()
	ep := lines(
		"apiVersion: weft/v1",
		"kind: Endpoint",
		"metadata: {name: app-1, labels: {app: shop}}",
		"spec: {subnet: a, host: h1}",
	)
	checkResult(t, h.runIn(t.Context(), ep, "apply", "-f", "-", "-n", "acme", "--dry-run=server"), 0,
		"endpoint/acme/app-1 created (server dry run)\n", "")
	checkResult(t, h.runIn(t.Context(), ep, "apply", "-f", "-", "-n", "acme", "--dry-run"), 0,
		"endpoint/acme/app-1 created (server dry run)\n", "")
	checkResult(t, h.run("delete", "ep", "web-1", "-n", "acme", "--dry-run=server"), 0, "endpoint/acme/web-1 deleted (server dry run)\n", "")
	if h.revision() != rev {
		t.Fatal("dry runs wrote")
	}
	checkResult(t, h.runIn(t.Context(), ep, "apply", "--server-side", "-f", "-", "-n", "acme"), 0, "endpoint/acme/app-1 created\n", "")
	// Another tool labels it; a server-side apply keeps that label, a
	// client-side apply replaces the labels.
	if _, err := h.srv.Client.Patch(t.Context(), "ep", "acme", "app-1", apiv1.MergePatchType, []byte(`{"metadata":{"labels":{"team":"x"}}}`)); err != nil {
		t.Fatal(err)
	}
	checkResult(t, h.runIn(t.Context(), ep, "apply", "--server-side", "-f", "-", "-n", "acme"), 0, "endpoint/acme/app-1 configured\n", "")
	if got := h.stored("ep", "acme", "app-1").GetObjectMeta().Labels; !cmp.Equal(got, map[string]string{"app": "shop", "team": "x"}) {
		t.Errorf("labels after a server-side apply: %v", got)
	}
	checkResult(t, h.runIn(t.Context(), ep, "apply", "-f", "-", "-n", "acme"), 0, "endpoint/acme/app-1 configured\n", "")
	if got := h.stored("ep", "acme", "app-1").GetObjectMeta().Labels; !cmp.Equal(got, map[string]string{"app": "shop"}) {
		t.Errorf("labels after a client-side apply: %v", got)
	}
	// A dry run reports what the controller refuses.
	bad := strings.Replace(ep, "subnet: a", "subnet: zz", 1)
	if r := h.runIn(t.Context(), bad, "apply", "-f", "-", "-n", "acme", "--dry-run=server"); r.code != 1 || !strings.Contains(r.stderr, "spec.subnet") {
		t.Errorf("dry run of an invalid endpoint: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestDiff(t *testing.T) {
	h := newHarness(t)
	h.seed()
	checkResult(t, h.run("diff", "-f", "testdata/network.yaml"), 0, "", "")
	changed := lines(
		"apiVersion: weft/v1",
		"kind: VPC",
		"metadata: {name: main, tenant: acme, labels: {env: prod}}",
		"spec: {cidrs: [10.0.0.0/16, 10.1.0.0/16]}",
		"---",
		"apiVersion: weft/v1",
		"kind: Tenant",
		"metadata: {name: acme}",
		"spec: {description: ACME Corp}",
		"---",
		"apiVersion: weft/v1",
		"kind: Tenant",
		"metadata: {name: gamma}",
	)
	rev := h.revision()
	r := h.runIn(t.Context(), changed, "diff", "-f", "-")
	if r.code != 1 || r.stderr != "" {
		t.Fatalf("diff: exit %d\n%s\nstderr %q", r.code, r.stdout, r.stderr)
	}
	// The new tenant is all additions; the VPC's new generation and CIDR
	// are hunks of their own; tenant acme is unchanged (not shown).
	for _, want := range []string{
		"--- tenant/gamma (live)\n+++ tenant/gamma (after apply)\n@@ -0,0 +1,8 @@\n+apiVersion: weft/v1\n+kind: Tenant\n",
		"--- vpc/acme/main (live)\n+++ vpc/acme/main (after apply)\n@@ -2,7 +2,7 @@\n",
		"-  generation: 1\n+  generation: 2\n",
		"@@ -12,6 +12,7 @@\n spec:\n   cidrs:\n   - 10.0.0.0/16\n+  - 10.1.0.0/16\n   defaultPolicy: allow\n status:\n   vni: 4096\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("diff lacks\n%s\ngot\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "tenant/acme") {
		t.Errorf("an unchanged object is in the diff:\n%s", r.stdout)
	}
	if h.revision() != rev {
		t.Error("diff wrote")
	}
	if r := h.run("diff", "-f", "testdata/nope.yaml"); r.code != 2 {
		t.Errorf("diff of a missing file: exit %d, want 2", r.code)
	}
}

func TestUnifiedDiff(t *testing.T) {
	for _, tc := range []struct {
		name, a, b, want string
	}{
		{"equal", "a\nb\n", "a\nb\n", ""},
		{"new file", "", "a\nb\n", "--- A\n+++ B\n@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"one change in the middle", "1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\nx\n6\n7\n8\n9\n",
			"--- A\n+++ B\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+x\n 6\n 7\n 8\n"},
		{"two hunks", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n",
			"--- A\n+++ B\n@@ -1,3 +1,4 @@\n+0\n 1\n 2\n 3\n@@ -9,4 +10,3 @@\n 9\n 10\n 11\n-12\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := unifiedDiff(tc.a, tc.b, "A", "B")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
		})
	}
	// Whatever the texts, the hunks turn the first into the second.
	texts := []string{"", "a\n", "a\nb\nc\n", "b\nc\nd\n", "a\nx\nc\nx\ne\nf\ng\nh\ni\nj\nk\nx\nm\n", "x\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\n"}
	for _, a := range texts {
		for _, b := range texts {
			if got := patchLines(t, a, unifiedDiff(a, b, "A", "B")); got != b {
				t.Errorf("patching %q with its diff to %q gave %q", a, b, got)
			}
		}
	}
}

// patchLines applies a unified diff to a.
func patchLines(t *testing.T, a, diff string) string {
	t.Helper()
	if diff == "" {
		return a
	}
	src, out := splitLines(a), []string{}
	next := 0 // the next line of src not yet copied
	for _, l := range splitLines(diff)[2:] {
		switch {
		case strings.HasPrefix(l, "@@"):
			startA, n, err := hunkStart(strings.Fields(l)[1][1:])
			if err != nil {
				t.Fatalf("hunk %q: %v", l, err)
			}
			if n == 0 {
				startA++ // "-k,0": after line k
			}
			out = append(out, src[next:startA-1]...)
			next = startA - 1
		case l[0] == ' ':
			out, next = append(out, src[next]), next+1
		case l[0] == '-':
			next++
		case l[0] == '+':
			out = append(out, l[1:])
		}
	}
	out = append(out, src[next:]...)
	if len(out) == 0 {
		return ""
	}
	return strings.Join(out, "\n") + "\n"
}

// hunkStart reads "start[,count]" (count 1 if absent).
func hunkStart(s string) (start, n int, err error) {
	a, b, ok := strings.Cut(s, ",")
	if start, err = strconv.Atoi(a); err != nil || !ok {
		return start, 1, err
	}
	n, err = strconv.Atoi(b)
	return start, n, err
}

func TestWait(t *testing.T) {
	h := newHarness(t)
	h.seed()
	ctx := t.Context()
	reg := h.srv.Env.Registry
	ready := func(name string, gen int) {
		t.Helper()
		patch := `{"status":{"phase":"Ready","conditions":[
			{"type":"PolicyProgrammed","status":"True","reason":"Programmed","observedGeneration":` + strconv.Itoa(gen) + `},
			{"type":"QoSProgrammed","status":"True","reason":"Programmed","observedGeneration":` + strconv.Itoa(gen) + `}]}}`
		if _, err := reg.MergePatchStatus(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name}, []byte(patch)); err != nil {
			t.Fatal(err)
		}
	}
	// start runs weft wait in the background; done returns its result.
	start := func(args ...string) (out *syncBuffer, done func() result) {
		out, errOut := newSyncBuffer(), newSyncBuffer()
		ch := make(chan int, 1)
		go func() { ch <- runEnv(ctx, args, out, errOut, h.envWith("")) }()
		return out, func() result {
			select {
			case code := <-ch:
				return result{out.String(), errOut.String(), code}
			case <-time.After(time.Minute):
				t.Fatalf("weft %s did not end", strings.Join(args, " "))
				return result{}
			}
		}
	}
	// The server saw the watch of a wait, which then waits on it.
	watching := func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			w := 0
			for _, r := range h.srv.Requests() {
				if strings.Contains(r, "watch=true") {
					w++
				}
			}
			if w >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no watch after 30s: %v", h.srv.Requests())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	_, done := start("wait", "--for=condition=Ready", "endpoint/web-1", "-n", "acme", "--timeout", "60s")
	watching(1)
	ready("web-1", 1)
	checkResult(t, done(), 0, "endpoint/web-1 condition met\n", "")

	// Met already: no watch needed.
	checkResult(t, h.run("wait", "--for=condition=Ready", "ep", "web-1", "-n", "acme"), 0, "endpoint/web-1 condition met\n", "")

	// A new generation is not Ready until it is programmed.
	if _, err := h.srv.Client.Patch(ctx, "ep", "acme", "web-1", apiv1.MergePatchType, []byte(`{"metadata":{"labels":{"v":"2"}}}`)); err != nil {
		t.Fatal(err)
	}
	_, done = start("wait", "--for=condition=Ready", "ep", "-l", "app in (web,db)", "-n", "acme", "--timeout", "60s")
	watching(2)
	ready("db-1", 1)
	ready("web-1", 2)
	r := done()
	if r.code != 0 || !strings.Contains(r.stdout, "endpoint/web-1 condition met\n") || !strings.Contains(r.stdout, "endpoint/db-1 condition met\n") {
		t.Errorf("wait -l: %+v", r)
	}

	// Delete: one exists, one does not.
	_, done = start("wait", "--for=delete", "ep/web-1", "ep/gone", "-n", "acme", "--timeout", "60s")
	watching(3)
	h.ok("delete", "ep", "web-1", "-n", "acme")
	r = done()
	if r.code != 0 || !strings.Contains(r.stdout, "endpoint/gone deleted\n") || !strings.Contains(r.stdout, "endpoint/web-1 deleted\n") {
		t.Errorf("wait --for=delete: %+v", r)
	}

	// A condition that never comes: the timeout names what was waited for.
	r = h.run("wait", "--for=condition=Ready=False", "ep/db-1", "-n", "acme", "--timeout", "200ms")
	if r.code != 1 || !strings.Contains(r.stderr, "timed out after 200ms waiting for endpoint/db-1") {
		t.Errorf("timeout: %+v", r)
	}
	checkResult(t, h.run("wait", "--for=condition=Ready", "ep/nope", "-n", "acme"), 1, "", "error: endpoint/acme/nope not found\n")
	checkResult(t, h.run("wait", "--for=condition=Alive", "host", "h1", "--timeout", "100ms"), 1, "",
		"error: timed out after 100ms waiting for host/h1: context deadline exceeded\n")
}

func TestDeleteBySelector(t *testing.T) {
	h := newHarness(t)
	h.seed()
	checkResult(t, h.run("delete", "ep", "-n", "acme", "-l", "app=web"), 0, "endpoint/acme/web-1 deleted\n", "")
	checkResult(t, h.run("delete", "ep", "-n", "acme", "-l", "app=web"), 0, "", "No objects selected.\n")
	checkResult(t, h.run("delete", "ep", "-A", "--field-selector", "spec.host=h1"), 0, "endpoint/acme/db-1 deleted\n", "")
	checkResult(t, h.run("delete", "securitypolicy/web-in", "qos/gold", "-n", "acme"), 0,
		lines("securitypolicy/acme/web-in deleted", "qosclass/acme/gold deleted"), "")
}

func TestCompletion(t *testing.T) {
	h := newHarness(t)
	h.seed()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"kinds", []string{"__complete", "get", "e"}, []string{"endpoints", "endpoint", "ep"}},
		{"a second kind", []string{"__complete", "get", "vpcs,s"}, []string{"vpcs,subnets", "vpcs,subnet", "vpcs,sn", "vpcs,securitypolicies", "vpcs,securitypolicy", "vpcs,sp"}},
		{"names in the tenant", []string{"__complete", "get", "ep", "-n", "acme", ""}, []string{"db-1", "web-1"}},
		{"names not given yet", []string{"__complete", "delete", "ep", "db-1", "-n", "acme", ""}, []string{"web-1"}},
		{"kind/name", []string{"__complete", "describe", "host/"}, []string{"host/h1"}},
		{"tenants", []string{"__complete", "get", "vpcs", "--tenant", ""}, []string{"acme", "beta"}},
		{"-o", []string{"__complete", "get", "vpcs", "-o", "j"}, []string{"json", "jsonpath="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := h.ok(tc.args...)
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if !strings.HasPrefix(l, ":") && !strings.HasPrefix(l, "Completion ended") {
					got = append(got, strings.SplitN(l, "\t", 2)[0])
				}
			}
			if tc.name == "-o" {
				got = slicesFilter(got, "j")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
		})
	}
	if out := h.ok("completion", "bash"); !strings.Contains(out, "__start_weft") {
		t.Errorf("completion bash printed no script:\n%.200s", out)
	}
	if out := h.ok("--help"); !strings.Contains(out, "completion") {
		t.Errorf("completion is not in the help:\n%s", out)
	}
}

func slicesFilter(l []string, prefix string) []string {
	var out []string
	for _, s := range l {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// TestRequestTimeout: --request-timeout bounds each request.
func TestRequestTimeout(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
		return true
	})
	defer h.srv.Intercept(nil)
	r := h.runIn(context.Background(), "", "get", "tenants", "--request-timeout", "100ms")
	if r.code != 1 || !strings.Contains(r.stderr, "did not answer within 100ms") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
