package client_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func TestPatch(t *testing.T) {
	c, srv := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"), vpc("acme", "main", map[string]string{"app": "web"}, "10.0.0.0/16"))
	out, err := c.Patch(ctx, "vpc", "acme", "main", apiv1.MergePatchType, []byte(`{"metadata":{"labels":{"app":null,"tier":"a"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]string{"tier": "a"}, out.GetObjectMeta().Labels); d != "" {
		t.Errorf("labels after the merge patch (-want +got):\n%s", d)
	}
	out, err = c.Patch(ctx, "vpcs", "acme", "main", apiv1.JSONPatchType, []byte(`[{"op":"add","path":"/spec/cidrs/-","value":"10.1.0.0/16"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if got := out.(*apiv1.VPC).Spec.CIDRs; !cmp.Equal(got, []string{"10.0.0.0/16", "10.1.0.0/16"}) {
		t.Errorf("cidrs after the JSON patch: %v", got)
	}
	_, err = c.Patch(ctx, "vpc", "acme", "main", apiv1.JSONPatchType, []byte(`[{"op":"test","path":"/spec/cidrs/0","value":"10.9.0.0/16"}]`))
	if apiv1.ReasonOf(err) != apiv1.ReasonInvalid {
		t.Errorf("a failed test: %v, want Invalid", err)
	}
	rv := srv.Env.Registry.Revision()
	if _, err := c.Patch(ctx, "vpc", "acme", "main", apiv1.MergePatchType, []byte(`{"spec":{"cidrs":["10.0.0.0/8"]}}`), apiv1.WithDryRun()); err != nil {
		t.Fatal(err)
	}
	if srv.Env.Registry.Revision() != rv {
		t.Error("a dry-run patch wrote")
	}
	if w := srv.Writes(); !strings.HasSuffix(w[len(w)-1], "?dryRun=All") {
		t.Errorf("last write %q, want a dry run", w[len(w)-1])
	}
}

func TestServerSideApply(t *testing.T) {
	c, _ := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"))
	manifest := []byte("apiVersion: weft/v1\nkind: VPC\nmetadata: {name: main, labels: {app: web}}\nspec: {cidrs: [10.0.0.0/16]}\n")
	res, out, err := c.ServerSideApply(ctx, manifest, "acme")
	if err != nil || res != client.Created || out.GetObjectMeta().Tenant != "acme" {
		t.Fatalf("first apply: %s %v %v", res, out, err)
	}
	// Another writer labels it; the next apply keeps that label.
	if _, err := c.Patch(ctx, "vpc", "acme", "main", apiv1.MergePatchType, []byte(`{"metadata":{"labels":{"owner":"ops"}}}`)); err != nil {
		t.Fatal(err)
	}
	manifest = []byte("apiVersion: weft/v1\nkind: VPC\nmetadata: {name: main, tenant: acme, labels: {app: shop}}\nspec: {cidrs: [10.0.0.0/16, 10.1.0.0/16]}\n")
	res, out, err = c.ServerSideApply(ctx, manifest, "")
	if err != nil || res != client.Configured {
		t.Fatalf("second apply: %s %v", res, err)
	}
	if d := cmp.Diff(map[string]string{"app": "shop", "owner": "ops"}, out.GetObjectMeta().Labels); d != "" {
		t.Errorf("labels (-want +got):\n%s", d)
	}
	if _, _, err := c.ServerSideApply(ctx, []byte("apiVersion: weft/v1\nkind: VPC\nmetadata: {name: x}\nspec: {cidrs: [10.0.0.0/16]}\n"), ""); err == nil {
		t.Error("a tenant-scoped manifest without a tenant was applied")
	}
}

func TestDryRunAndFieldSelector(t *testing.T) {
	c, srv := newClient(t)
	ctx := t.Context()
	mustCreate(t, c, tenant("acme"), host("h1", "192.0.2.1"), host("h2", "192.0.2.2"), vpc("acme", "main", nil, "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"), endpoint("acme", "e1", "a", "h1"), endpoint("acme", "e2", "a", "h2"))
	rv := srv.Env.Registry.Revision()
	dry := apiv1.WithDryRun()
	if out, err := c.Create(ctx, endpoint("acme", "e3", "a", "h1"), dry); err != nil || out.(*apiv1.Endpoint).Status.IP == "" {
		t.Errorf("dry-run create: %v %v", out, err)
	}
	if res, _, err := c.Apply(ctx, vpc("acme", "main", map[string]string{"x": "y"}, "10.0.0.0/16"), dry); err != nil || res != client.Configured {
		t.Errorf("dry-run apply: %s %v", res, err)
	}
	if _, err := c.Delete(ctx, "ep", "acme", "e1", dry); err != nil {
		t.Errorf("dry-run delete: %v", err)
	}
	if _, err := c.Delete(ctx, "subnet", "acme", "a", dry); !apiv1.IsConflict(err) {
		t.Errorf("dry-run delete of a subnet in use: %v, want Conflict", err)
	}
	if srv.Env.Registry.Revision() != rv {
		t.Error("dry runs wrote")
	}

	objs, _, err := c.List(ctx, "endpoints", "", "", client.WithFieldSelector("spec.host=h2"))
	if err != nil || len(objs) != 1 || objs[0].GetObjectMeta().Name != "e2" {
		t.Errorf("endpoints on h2: %v %v", objs, err)
	}
	_, _, err = c.List(ctx, "endpoints", "", "", client.WithFieldSelector("spec.ip=1"))
	if apiv1.ReasonOf(err) != apiv1.ReasonBadRequest {
		t.Errorf("an unknown field: %v, want BadRequest", err)
	}

	// A watch by field and label: e2 moved onto h1 comes in as ADDED,
	// relabelled out as DELETED.
	events, err := c.Watch(ctx, "endpoints", "acme", "!x", "", client.WithFieldSelector("spec.host=h1"))
	if err != nil {
		t.Fatal(err)
	}
	got := []string{eventString(next(t, events))}
	e2 := endpoint("acme", "e2", "a", "h1")
	if _, err := c.Update(ctx, e2); err != nil {
		t.Fatal(err)
	}
	got = append(got, eventString(next(t, events)))
	e2.Metadata.Labels = map[string]string{"x": "1"}
	if _, err := c.Update(ctx, e2); err != nil {
		t.Fatal(err)
	}
	got = append(got, eventString(next(t, events)))
	want := []string{"ADDED endpoint/acme/e1 map[]", "ADDED endpoint/acme/e2 map[]", "DELETED endpoint/acme/e2 map[]"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}
