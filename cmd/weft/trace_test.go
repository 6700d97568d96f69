package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// completeOnGet answers a GET of a stored object of acme's plural with
// it as the observe controller would have completed it (status by fill).
// Other requests go to other, if not nil.
func completeOnGet(h *harness, plural string, fill func(apiv1.Object), other func(w http.ResponseWriter, r *http.Request) bool) {
	h.srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if other != nil && other(w, r) {
			return true
		}
		dir, name := filepath.Split(r.URL.Path)
		if r.Method != http.MethodGet || dir != "/apis/weft/v1/tenants/acme/"+plural+"/" {
			return false
		}
		kind := map[string]string{"traces": apiv1.KindTrace, "captures": apiv1.KindCapture}[plural]
		o := h.stored(kind, "acme", name)
		fill(o)
		_ = json.NewEncoder(w).Encode(o)
		return true
	})
}

// TestTraceCmd runs `weft trace` against an API whose Trace completes on
// its first read: the object it creates, the table and JSON, and the
// usage errors.
func TestTraceCmd(t *testing.T) {
	h := newHarness(t)
	h.seed()
	completeOnGet(h, "traces", func(o apiv1.Object) {
		tr := o.(*apiv1.Trace)
		tr.Status = apiv1.TraceStatus{Phase: apiv1.PhaseCompleted, Verdict: apiv1.VerdictDropped, Reason: "policy",
			Source:      &apiv1.TraceEnd{Endpoint: "web-1", Host: "h1", IP: "10.0.1.2"},
			Destination: &apiv1.TraceEnd{Endpoint: "db-1", Host: "h1", IP: "10.0.1.50"},
			Hops: []apiv1.TraceHop{
				{Host: "h1", Point: apiv1.HopSourceVeth, Verdict: "forward", Detail: "received"},
				{Host: "h1", Point: apiv1.HopDrop, Verdict: "dropped", Rule: "acme/web-in ingress[0]", Reason: "policy", Attrs: map[string]string{"vni": "4096"}},
			}}
	}, nil)
	got := h.ok("trace", "--tenant", "acme", "--from", "web-1", "--to", "db-1", "--proto", "tcp", "--dport", "80", "--name", "t1")
	want := lines(
		"Trace t1: web-1 (10.0.1.2) on h1 -> db-1 (10.0.1.50) on h1: Dropped (policy)",
		"#   HOST   POINT         VERDICT   RULE/REASON                     DETAIL",
		"1   h1     source-veth   forward   <none>                          received",
		"2   h1     drop          dropped   acme/web-in ingress[0] policy   vni=4096",
	)
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	tr := h.stored(apiv1.KindTrace, "acme", "t1").(*apiv1.Trace)
	if s := tr.Spec; s.From != "web-1" || s.To != "db-1" || s.Proto != "tcp" || s.DPort != 80 {
		t.Errorf("created spec %+v", s)
	}
	var back apiv1.Trace
	if err := json.Unmarshal([]byte(h.ok("trace", "--tenant", "acme", "--from", "web-1", "--to", "db-1", "--name", "t2", "-o", "json")), &back); err != nil ||
		back.Metadata.Name != "t2" || back.Status.Verdict != apiv1.VerdictDropped || len(back.Status.Hops) != 2 {
		t.Errorf("-o json: %v, %+v", err, back)
	}
	if r := h.run("trace", "--tenant", "acme", "--from", "web-1", "--to", "db-1", "--name", "t1"); r.code == 0 || !strings.Contains(r.stderr, "t1") {
		t.Errorf("a second trace t1: exit %d, %q", r.code, r.stderr)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no tenant", []string{"trace", "--from", "web-1", "--to", "db-1"}, "pass --tenant"},
		{"no ends", []string{"trace", "--tenant", "acme", "--from", "web-1"}, "--to"},
		{"bad format", []string{"trace", "--tenant", "acme", "--from", "web-1", "--to", "db-1", "-o", "xml"}, `-o "xml"`},
		{"unknown endpoint", []string{"trace", "--tenant", "acme", "--from", "nope", "--to", "db-1"}, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("exit %d, stderr %q: want failure mentioning %q", r.code, r.stderr, tc.stderr)
			}
		})
	}
}

// TestCaptureCmd runs `weft capture` against an API that serves a fixed
// pcapng stream and completes the Capture: the file, the summary, the
// object it creates, and the usage errors.
func TestCaptureCmd(t *testing.T) {
	h := newHarness(t)
	h.seed()
	pcapng := func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/captures/c1/pcapng") {
			return false
		}
		if r.URL.Query().Get("follow") != "true" {
			t.Errorf("download %s without follow", r.URL)
		}
		_, _ = w.Write([]byte("pcapng bytes"))
		return true
	}
	completeOnGet(h, "captures", func(o apiv1.Object) {
		o.(*apiv1.Capture).Status = apiv1.CaptureStatus{Phase: apiv1.PhaseCompleted, Packets: 3, Bytes: 180, Hosts: []string{"h1"}, Message: "stopped: count reached"}
	}, pcapng)
	file := filepath.Join(t.TempDir(), "out.pcapng")
	got := h.ok("capture", "--tenant", "acme", "-l", "app=web", "--filter", "tcp port 80", "--count", "3", "--name", "c1", "-w", file)
	if want := "Capture c1: 3 packets (180 bytes) from hosts h1, 0 not recorded; written to " + file + ". stopped: count reached\n"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "pcapng bytes" {
		t.Errorf("file: %q, %v", b, err)
	}
	cp := h.stored(apiv1.KindCapture, "acme", "c1").(*apiv1.Capture)
	if s := cp.Spec; s.Selector == nil || s.Selector.MatchLabels["app"] != "web" || s.Filter != "tcp port 80" || s.Count != 3 {
		t.Errorf("created spec %+v", s)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no tenant", []string{"capture", "--endpoint", "web-1", "-w", file}, "pass --tenant"},
		{"no selection", []string{"capture", "--tenant", "acme", "-w", file}, "exactly one of"},
		{"two selections", []string{"capture", "--tenant", "acme", "--endpoint", "web-1", "--vpc", "main", "-w", file}, "exactly one of"},
		{"no file", []string{"capture", "--tenant", "acme", "--endpoint", "web-1"}, "-w FILE"},
		{"bad selector", []string{"capture", "--tenant", "acme", "-l", "a in (", "-w", file}, "-l"},
		{"over the bounds", []string{"capture", "--tenant", "acme", "--endpoint", "web-1", "--count", "2000000", "-w", file}, "spec.count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("exit %d, stderr %q: want failure mentioning %q", r.code, r.stderr, tc.stderr)
			}
		})
	}
}
