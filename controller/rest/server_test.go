package rest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		// Idle keep-alive connections of http.DefaultClient.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func startController(t *testing.T) (*controller.Controller, string) {
	t.Helper()
	return startControllerIn(t, t.TempDir())
}

func startControllerIn(t *testing.T, dir string) (*controller.Controller, string) {
	t.Helper()
	// API only: a fixed southbound port would clash with other tests. Plain
	// HTTP without credentials: the API's security is tested in auth_test.go.
	c, err := controller.New(controller.Config{DataDir: dir, APIListen: "127.0.0.1:0", AgentListen: "off", InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		c.Close()
	})
	return c, "http://" + c.APIAddr()
}

type response struct {
	code int
	body string
}

func do(t *testing.T, method, url, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b)}
}

func statusOf(t *testing.T, r response) apiv1.StatusError {
	t.Helper()
	var se apiv1.StatusError
	if err := json.Unmarshal([]byte(r.body), &se); err != nil {
		t.Fatalf("error body is not a StatusError: %v: %s", err, r.body)
	}
	return se
}

func TestAPI(t *testing.T) {
	_, base := startController(t)
	api := base + "/apis/weft/v1"
	const js = "application/json"
	mustOK := func(r response, code int) {
		t.Helper()
		if r.code != code {
			t.Fatalf("got %d, want %d: %s", r.code, code, r.body)
		}
	}
	mustOK(do(t, "POST", api+"/tenants", js, `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"acme"}}`), 201)
	mustOK(do(t, "POST", api+"/hosts", "application/yaml", "apiVersion: weft/v1\nkind: Host\nmetadata: {name: h1}\nspec: {underlayIP: 192.0.2.1}\n"), 201)
	r := do(t, "POST", api+"/tenants/acme/vpcs", js, `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main"},"spec":{"cidrs":["10.0.0.0/16"]}}`)
	mustOK(r, 201)
	var vpc apiv1.VPC
	if err := json.Unmarshal([]byte(r.body), &vpc); err != nil || vpc.Status.VNI == 0 || vpc.Metadata.Tenant != "acme" {
		t.Fatalf("created VPC: %v %+v", err, vpc)
	}

	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantReason               string
		wantField                string
	}{
		{"overlapping cidrs", "POST", "/tenants/acme/vpcs", `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"x"},"spec":{"cidrs":["10.0.0.0/16","10.0.1.0/24"]}}`, 422, apiv1.ReasonInvalid, "spec.cidrs[1]"},
		{"unknown field", "POST", "/tenants/acme/vpcs", `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"x"},"spec":{"cidr":["10.0.0.0/16"]}}`, 400, apiv1.ReasonBadRequest, ""},
		{"malformed json", "POST", "/tenants/acme/vpcs", `{"apiVersion":`, 400, apiv1.ReasonBadRequest, ""},
		{"kind mismatch", "POST", "/tenants/acme/vpcs", `{"apiVersion":"weft/v1","kind":"Subnet","metadata":{"name":"x"},"spec":{"vpc":"main","cidr":"10.0.1.0/24"}}`, 400, apiv1.ReasonBadRequest, ""},
		{"tenant mismatch", "POST", "/tenants/acme/vpcs", `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"x","tenant":"globex"},"spec":{"cidrs":["10.0.0.0/16"]}}`, 400, apiv1.ReasonBadRequest, ""},
		{"wrong apiVersion", "POST", "/tenants", `{"apiVersion":"weft/v2","kind":"Tenant","metadata":{"name":"x"}}`, 400, apiv1.ReasonBadRequest, ""},
		{"unknown resource", "GET", "/routers", "", 404, apiv1.ReasonNotFound, ""},
		{"tenant-scoped without tenant", "POST", "/vpcs", `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"x","tenant":"acme"},"spec":{"cidrs":["10.0.0.0/16"]}}`, 405, apiv1.ReasonMethodNotAllowed, ""},
		{"missing object", "GET", "/tenants/acme/vpcs/nope", "", 404, apiv1.ReasonNotFound, ""},
		{"duplicate", "POST", "/tenants", `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"acme"}}`, 409, apiv1.ReasonAlreadyExists, ""},
		{"stale resourceVersion", "PUT", "/tenants/acme/vpcs/main", `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main","resourceVersion":"2"},"spec":{"cidrs":["10.0.0.0/16","10.1.0.0/16"]}}`, 409, apiv1.ReasonConflict, ""},
		{"missing reference", "POST", "/tenants/acme/subnets", `{"apiVersion":"weft/v1","kind":"Subnet","metadata":{"name":"s"},"spec":{"vpc":"nope","cidr":"10.0.1.0/24"}}`, 422, apiv1.ReasonInvalid, "spec.vpc"},
		{"bad selector", "GET", "/tenants/acme/vpcs?labelSelector=a+in+(", "", 400, apiv1.ReasonBadRequest, ""},
		{"oversized body", "POST", "/tenants", `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"big"},"spec":{"description":"` + strings.Repeat("x", 4<<20) + `"}}`, 413, apiv1.ReasonTooLarge, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, api+tc.path, js, tc.body)
			se := statusOf(t, r)
			if r.code != tc.wantCode || se.Code != tc.wantCode || se.Reason != tc.wantReason {
				t.Fatalf("got %d %s (%s), want %d %s", r.code, se.Reason, se.Message, tc.wantCode, tc.wantReason)
			}
			if tc.wantField != "" && (len(se.Causes) == 0 || se.Causes[0].Field != tc.wantField) {
				t.Errorf("causes %+v, want field %s", se.Causes, tc.wantField)
			}
		})
	}
	// Nothing from the failed requests was stored.
	r = do(t, "GET", api+"/vpcs", "", "")
	mustOK(r, 200)
	var list struct {
		Kind  string      `json:"kind"`
		Items []apiv1.VPC `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Kind != "List" {
		t.Errorf("VPCs after failed requests: %d (%s)", len(list.Items), list.Kind)
	}

	for _, p := range []string{"/healthz", "/readyz", "/version"} {
		mustOK(do(t, "GET", base+p, "", ""), 200)
	}
	r = do(t, "GET", base+"/openapi.json", "", "")
	mustOK(r, 200)
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil || doc.OpenAPI == "" {
		t.Fatalf("openapi: %v", err)
	}
	for _, p := range []string{"/apis/weft/v1/tenants/{tenant}/endpoints/{name}", "/apis/weft/v1/tokens", "/apis/weft/v1/enroll"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("openapi lacks %s", p)
		}
	}
	r = do(t, "GET", base+"/metrics", "", "")
	mustOK(r, 200)
	for _, m := range []string{"weft_api_requests_total", "weft_api_request_seconds", "weft_store_commit_seconds"} {
		if !strings.Contains(r.body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

type event struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

func TestWatch(t *testing.T) {
	_, base := startController(t)
	api := base + "/apis/weft/v1"
	const js = "application/json"
	do(t, "POST", api+"/tenants", js, `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a","labels":{"x":"1"}}}`)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", api+"/tenants?watch=true&labelSelector=x%3D1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() event {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("watch ended: %v", lines.Err())
		}
		var ev event
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("watch line %q: %v", lines.Text(), err)
		}
		return ev
	}
	var got []string
	name := func(ev event) string {
		var m struct {
			Metadata apiv1.ObjectMeta `json:"metadata"`
		}
		_ = json.Unmarshal(ev.Object, &m)
		return ev.Type + " " + m.Metadata.Name
	}
	got = append(got, name(next()))
	do(t, "POST", api+"/tenants", js, `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"b"}}`) // filtered out
	do(t, "POST", api+"/tenants", js, `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"c","labels":{"x":"1"}}}`)
	do(t, "DELETE", api+"/tenants/a", "", "")
	got = append(got, name(next()), name(next()))
	if diff := cmp.Diff([]string{"ADDED a", "ADDED c", "DELETED a"}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestWatchCompacted: a watch from a revision that etcd compacted and the
// replica's memory does not hold answers 410 Gone.
func TestWatchCompacted(t *testing.T) {
	dir := t.TempDir()
	c, base := startControllerIn(t, dir)
	api := base + "/apis/weft/v1"
	for _, n := range []string{"a", "b", "c"} {
		do(t, "POST", api+"/tenants", "application/json", `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"`+n+`"}}`)
	}
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(context.Background(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
	c.Close()
	// A fresh replica remembers no history: it must ask etcd, which compacted it.
	_, base = startControllerIn(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/apis/weft/v1/tenants?watch=true&resourceVersion=1", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if se := statusOf(t, response{res.StatusCode, string(b)}); res.StatusCode != http.StatusGone || se.Reason != apiv1.ReasonGone {
		t.Errorf("watch from compacted revision: %d %s, want 410 Gone", res.StatusCode, se.Reason)
	}
}
