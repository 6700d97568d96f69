package rest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

const mergePatch = "application/merge-patch+json"

// TestPatchStatus: PATCH .../status applies a JSON merge patch to the
// stored status, step by step on one Host and one Endpoint.
func TestPatchStatus(t *testing.T) {
	_, base := startController(t)
	api := base + "/apis/weft/v1"
	const js = "application/json"
	for _, c := range []struct{ path, body string }{
		{"/tenants", `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"acme"}}`},
		{"/hosts", `{"apiVersion":"weft/v1","kind":"Host","metadata":{"name":"h1"},"spec":{"underlayIP":"192.0.2.1"}}`},
		{"/tenants/acme/vpcs", `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main"},"spec":{"cidrs":["10.0.0.0/16"]}}`},
		{"/tenants/acme/subnets", `{"apiVersion":"weft/v1","kind":"Subnet","metadata":{"name":"a"},"spec":{"vpc":"main","cidr":"10.0.1.0/24"}}`},
		{"/tenants/acme/endpoints", `{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"web"},"spec":{"subnet":"a","host":"h1"}}`},
	} {
		if r := do(t, "POST", api+c.path, js, c.body); r.code != http.StatusCreated {
			t.Fatalf("create %s: %d %s", c.path, r.code, r.body)
		}
	}
	hostPath, epPath := api+"/hosts/h1/status", api+"/tenants/acme/endpoints/web/status"
	var host apiv1.Host
	var ep apiv1.Endpoint
	if err := json.Unmarshal([]byte(do(t, "GET", api+"/hosts/h1", "", "").body), &host); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(do(t, "GET", api+"/tenants/acme/endpoints/web", "", "").body), &ep); err != nil {
		t.Fatal(err)
	}
	h, e := host.Status, ep.Status // allocated: hostID; ip, mac, vni, host (and phase Pending)
	hostWith := func(f func(*apiv1.HostStatus)) *apiv1.HostStatus { f(&h); return &h }
	epWith := func(f func(*apiv1.EndpointStatus)) *apiv1.EndpointStatus { f(&e); return &e }

	for _, tc := range []struct {
		name, path, ctype, body string
		wantCode                int
		wantReason, wantMsg     string
		// want is the status after the step (a *HostStatus or
		// *EndpointStatus, nil if the step fails); built when the step runs.
		want func() any
		// sameRV: the step writes nothing.
		sameRV bool
	}{
		{name: "sets the named fields", path: hostPath, body: `{"status":{"liveness":"Alive","lastSeen":"2026-01-02T03:04:05Z"}}`,
			want: func() any {
				return hostWith(func(s *apiv1.HostStatus) { s.Liveness, s.LastSeen = "Alive", "2026-01-02T03:04:05Z" })
			}},
		{name: "keeps the fields it does not name", path: hostPath, body: `{"status":{"viewVersion":18446744073709551615,"agentVersion":"v1"}}`,
			want: func() any {
				return hostWith(func(s *apiv1.HostStatus) { s.ViewVersion, s.AgentVersion = 1<<64-1, "v1" })
			}},
		{name: "null deletes a field", path: hostPath, body: `{"status":{"lastSeen":null,"nothere":null}}`,
			wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: `unknown field \"status.nothere\"`},
		{name: "null deletes a field, really", path: hostPath, body: `{"status":{"lastSeen":null}}`,
			want: func() any { return hostWith(func(s *apiv1.HostStatus) { s.LastSeen = "" }) }},
		{name: "the same again writes nothing", path: hostPath, body: `{"status":{"lastSeen":null,"liveness":"Alive"}}`,
			want: func() any { return &h }, sameRV: true},
		{name: "allocated host ID can't change", path: hostPath, body: `{"status":{"hostID":999,"lastError":"boom"}}`,
			want: func() any { return hostWith(func(s *apiv1.HostStatus) { s.LastError = "boom" }) }},
		{name: "allocated only: nothing written", path: hostPath, body: `{"status":{"hostID":7}}`,
			want: func() any { return &h }, sameRV: true},
		{name: "allocated address, MAC and placement can't change", path: epPath,
			body: `{"status":{"ip":"10.9.9.9","mac":null,"host":"h2","vni":1,"phase":"Ready","netns":"/run/netns/x"}}`,
			want: func() any {
				return epWith(func(s *apiv1.EndpointStatus) {
					s.Phase, s.Netns = "Ready", "/run/netns/x"
					// Derived: Ready waits for the conditions the agent reports.
					s.Conditions[0].Reason, s.Conditions[0].Message = "Programming", "PolicyProgrammed is not reported yet"
				})
			}},
		{name: "unknown field refused with its path", path: epPath, body: `{"status":{"phase":"Ready","netNS":"/x"}}`,
			wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: `unknown field \"status.netNS\"`},
		{name: "mistyped value refused with its path", path: hostPath, body: `{"status":{"viewVersion":"7"}}`,
			wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: "status.viewVersion: want an integer"},
		{name: "only status", path: hostPath, body: `{"spec":{"underlayIP":"192.0.2.9"},"status":{}}`,
			wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: `only status can be patched here, not \"spec\"`},
		{name: "not an object", path: hostPath, body: `[{"status":{}}]`,
			wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: "want a JSON object"},
		{name: "wrong content type", path: hostPath, ctype: js, body: `{"status":{"liveness":"Dead"}}`,
			wantCode: 415, wantReason: apiv1.ReasonUnsupportedMedia, wantMsg: mergePatch},
		{name: "no content type", path: hostPath, ctype: "-", body: `{"status":{"liveness":"Dead"}}`,
			wantCode: 415, wantReason: apiv1.ReasonUnsupportedMedia, wantMsg: mergePatch},
		{name: "missing object", path: api + "/hosts/h9/status", body: `{"status":{"liveness":"Dead"}}`,
			wantCode: 404, wantReason: apiv1.ReasonNotFound},
		{name: "kind without status", path: api + "/tenants/acme/status", body: `{"status":{}}`,
			wantCode: 400, wantReason: apiv1.ReasonBadRequest, wantMsg: "Tenant has no status"},
		{name: "tenant-scoped kind without tenant", path: api + "/endpoints/web/status", body: `{"status":{}}`,
			wantCode: 404, wantReason: apiv1.ReasonNotFound},
		{name: "the failed steps changed nothing", path: epPath, body: `{}`,
			want: func() any { return &e }, sameRV: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			get := strings.TrimSuffix(tc.path, "/status")
			before := do(t, "GET", get, "", "")
			ctype := tc.ctype
			switch ctype {
			case "":
				ctype = mergePatch
			case "-":
				ctype = ""
			}
			r := do(t, "PATCH", tc.path, ctype, tc.body)
			if tc.want == nil {
				se := statusOf(t, r)
				if r.code != tc.wantCode || se.Reason != tc.wantReason || !strings.Contains(r.body, tc.wantMsg) {
					t.Fatalf("got %d %s %q, want %d %s with %q", r.code, se.Reason, se.Message, tc.wantCode, tc.wantReason, tc.wantMsg)
				}
				return
			}
			if r.code != http.StatusOK {
				t.Fatalf("got %d %s, want 200", r.code, r.body)
			}
			want := tc.want()
			got := map[string]any{}
			for name, body := range map[string]string{"response": r.body, "stored": do(t, "GET", get, "", "").body} {
				var obj struct {
					Metadata apiv1.ObjectMeta `json:"metadata"`
					Status   json.RawMessage  `json:"status"`
				}
				st := func() any {
					if _, ok := want.(*apiv1.HostStatus); ok {
						return &apiv1.HostStatus{}
					}
					return &apiv1.EndpointStatus{}
				}()
				if err := json.Unmarshal([]byte(body), &obj); err != nil || json.Unmarshal(obj.Status, st) != nil {
					t.Fatalf("%s: %v: %s", name, err, body)
				}
				if diff := cmp.Diff(want, st); diff != "" {
					t.Errorf("%s status (-want +got):\n%s", name, diff)
				}
				got[name] = obj.Metadata.ResourceVersion
			}
			var was struct {
				Metadata apiv1.ObjectMeta `json:"metadata"`
			}
			_ = json.Unmarshal([]byte(before.body), &was)
			if same := got["stored"] == was.Metadata.ResourceVersion; same != tc.sameRV {
				t.Errorf("resourceVersion %s -> %s; want unchanged: %v", was.Metadata.ResourceVersion, got["stored"], tc.sameRV)
			}
		})
	}
}

// TestPatchStatusConcurrentWriters: writers that each own one field of a
// Host's status patch it over the API at the same time, many rounds each;
// at the end every field holds its writer's last value. (Writers that read
// the status and PUT it back whole lose each other's fields here.)
func TestPatchStatusConcurrentWriters(t *testing.T) {
	_, base := startController(t)
	c, err := client.New(base)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if _, err := c.Create(ctx, &apiv1.Host{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindHost},
		Metadata: apiv1.ObjectMeta{Name: "h1"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	const rounds = 25
	fields := []string{"liveness", "agentVersion", "lastError", "replica"}
	var g errgroup.Group
	for _, f := range fields {
		g.Go(func() error {
			for i := range rounds {
				if _, err := c.PatchStatus(ctx, "hosts", "", "h1", map[string]string{f: fmt.Sprint(f, i)}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	o, err := c.Get(ctx, "hosts", "", "h1")
	if err != nil {
		t.Fatal(err)
	}
	st := o.(*apiv1.Host).Status
	got := []string{st.Liveness, st.AgentVersion, st.LastError, st.Replica}
	var want []string
	for _, f := range fields {
		want = append(want, fmt.Sprint(f, rounds-1))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status fields (-want +got): a writer overwrote another's\n%s", diff)
	}
	if st.HostID == 0 {
		t.Error("the allocated host ID was lost")
	}
}
