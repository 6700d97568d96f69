package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/sim"
)

// TestSimCmd runs a tiny in-process simulation through the command and
// checks its JSON report.
func TestSimCmd(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int // hosts programmed
		// wantPolicies and wantIdentities loaded (identities are counted
		// only with policies; 5 of the 6 apps, 3 per VPC, have endpoints).
		wantPolicies, wantIdentities int
	}{
		{"tiny", []string{"--in-process", "--hosts", "5", "--endpoints", "10", "--vpcs", "2", "--hold", "1s", "--backoff", "50ms", "-o", "json"}, 5, 0, 0},
		{"policies", []string{"--in-process", "--hosts", "5", "--endpoints", "10", "--vpcs", "2", "--policies", "6", "--hold", "1s", "--backoff", "50ms", "-o", "json"}, 5, 6, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			cmd := newSimCmd()
			cmd.SetArgs(tt.args)
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			if err := cmd.ExecuteContext(ctx); err != nil {
				t.Fatalf("weft sim: %v\nstderr:\n%s", err, errOut.String())
			}
			var rep sim.Report
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("decode report %q: %v", out.String(), err)
			}
			if rep.Programmed != tt.want || rep.ProgrammedSeconds <= 0 {
				t.Errorf("programmed %d in %v s, want %d", rep.Programmed, rep.ProgrammedSeconds, tt.want)
			}
			if rep.Policies != tt.wantPolicies || rep.Identities != tt.wantIdentities {
				t.Errorf("%d policies, %d identities; want %d, %d", rep.Policies, rep.Identities, tt.wantPolicies, tt.wantIdentities)
			}
		})
	}
}

// TestSimTrace runs `weft trace` against a running `weft sim`, as its help
// says: at the API address of its progress lines, a probe from e0 (on h0)
// to e1 (on h1) is delivered, with the hops of both hosts.
func TestSimTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	simCtx, stop := context.WithCancel(ctx)
	defer stop()
	progress := newSyncBuffer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(simCtx, []string{"sim", "--in-process", "--hosts", "3", "--endpoints", "6", "--vpcs", "1", "--hold", "5m", "--backoff", "50ms"},
			io.Discard, progress)
	}()
	defer func() {
		stop()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("weft sim did not stop within 60 s of its interrupt")
		}
	}()
	if !progress.waitFor(ctx, "all 3 agents programmed") {
		t.Fatalf("weft sim never had its agents programmed:\n%s", progress.String())
	}
	m := regexp.MustCompile(`replica 0 up \(pid \d+, api (\S+),`).FindStringSubmatch(progress.String())
	if m == nil {
		t.Fatalf("no API address in the progress:\n%s", progress.String())
	}
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"--server", "http://" + m[1], "--insecure-http", "trace", "--tenant", "t0",
		"--from", "e0", "--to", "e1", "--proto", "tcp", "--dport", "80", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("weft trace: exit %d: %s", code, errOut.String())
	}
	var tr apiv1.Trace
	if err := json.Unmarshal(out.Bytes(), &tr); err != nil {
		t.Fatalf("decode the trace %q: %v", out.String(), err)
	}
	var points []string
	for _, h := range tr.Status.Hops {
		points = append(points, h.Host+" "+h.Point)
	}
	want := []string{"h0 source-veth", "h0 vpc-router", "h0 policy", "h0 route", "h0 encap", "h0 underlay",
		"h1 underlay", "h1 decap", "h1 remote-policy", "h1 deliver"}
	if d := cmp.Diff(want, points); d != "" || tr.Status.Verdict != apiv1.VerdictDelivered {
		t.Errorf("trace %s (%s); hops (-want +got):\n%s", tr.Status.Verdict, tr.Status.Reason, d)
	}
}
