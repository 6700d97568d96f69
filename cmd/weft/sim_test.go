package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

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
