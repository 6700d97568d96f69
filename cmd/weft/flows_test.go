package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/flowagg"
)

// TestFlows runs `weft flows` against an API whose flows endpoint answers
// from a fixed list: the query it sends, the table, JSON, and the errors.
func TestFlows(t *testing.T) {
	h := newHarness(t)
	list := flowagg.FlowList{APIVersion: apiv1.APIVersion, Kind: "FlowList", Tenant: "acme", Window: "5m0s", Items: []flowagg.Flow{
		{VPC: "main", Src: "10.0.1.2", Dst: "10.0.1.50", SrcPort: 41000, DstPort: 5432, Proto: "tcp", SrcEndpoint: "web-1", DstEndpoint: "db-1",
			Bytes: 912000, Packets: 640, Verdict: "allow", Duration: "2m10s", Start: time.Unix(0, 0).UTC(), End: time.Unix(130, 0).UTC()},
		{VPC: "main", Src: "10.0.1.2", Dst: "10.0.9.9", Proto: "icmp", DstPort: 8 << 8, Bytes: 840, Packets: 10, Dropped: 10,
			Verdict: "drop", Reason: "policy", Duration: "9s"},
	}}
	var queries []string
	h.srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/flows") {
			return false
		}
		queries = append(queries, r.URL.RequestURI())
		if r.URL.Query().Get("endpoint") == "nope" {
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "no such endpoint %q", "nope"))
			return true
		}
		_ = json.NewEncoder(w).Encode(list)
		return true
	})
	got := h.ok("flows", "--tenant", "acme", "--top", "5", "--endpoint", "web-1")
	want := lines(
		"#   SOURCE                   DESTINATION              PROTO   BYTES    PACKETS   VERDICT         DURATION   VPC",
		"1   web-1 (10.0.1.2:41000)   db-1 (10.0.1.50:5432)    tcp     912000   640       allow           2m10s      main",
		"2   10.0.1.2                 10.0.9.9 type 8 code 0   icmp    840      10        drop (policy)   9s         main",
	)
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	if len(queries) != 1 || queries[0] != "/apis/weft/v1/tenants/acme/flows?endpoint=web-1&top=5" {
		t.Errorf("queries %q", queries)
	}
	var back flowagg.FlowList
	if err := json.Unmarshal([]byte(h.ok("flows", "--tenant", "acme", "-o", "json")), &back); err != nil || len(back.Items) != 2 {
		t.Errorf("-o json: %v, %d items", err, len(back.Items))
	}
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no tenant", []string{"flows"}, "pass --tenant"},
		{"bad top", []string{"flows", "--tenant", "acme", "--top", "0"}, "--top 0"},
		{"unknown endpoint", []string{"flows", "--tenant", "acme", "--endpoint", "nope"}, `no such endpoint "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("exit %d, stderr %q: want failure mentioning %q", r.code, r.stderr, tc.stderr)
			}
		})
	}
}
