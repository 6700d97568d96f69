package bench

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"
)

// The policy and QoS benchmarks at tiny sizes, so that CI exercises them:
// they check that the runs work and that the figures are consistent, not
// how fast anything is.

func TestPolicySimSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := Policy(ctx, PolicyConfig{Phases: []string{PhaseSim}, SimConfig: tinySim(t, 20, 60, 3), Changes: 4, Settle: -1})
	if err != nil {
		t.Fatalf("Policy: %v", err)
	}
	s := rep.Sim
	if s == nil || s.Changes != 4 || s.Incomplete != 0 || s.AffectedHosts < 1 {
		t.Fatalf("sim part %+v, want 4 complete changes reaching hosts", s)
	}
	if s.P99Ms <= 0 || s.P99Ms < s.P50Ms || s.HostP99Ms > s.MaxMs {
		t.Errorf("p50 %v, p99 %v, max %v, per host p99 %v ms: inconsistent", s.P50Ms, s.P99Ms, s.MaxMs, s.HostP99Ms)
	}
}

func TestPolicyKernelSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the policy benchmark's kernel phases create network namespaces")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	rep, err := Policy(ctx, PolicyConfig{Phases: []string{PhaseRuleCost, PhaseKernel}, RuleCounts: []int{10, 1000},
		Rounds: 2, Duration: 100 * time.Millisecond, KernelEndpoints: 30, Changes: 3, SimConfig: SimConfig{Progress: t.Output()}})
	if err != nil {
		t.Fatalf("Policy: %v", err)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("report:\n%s", b)
	rc := rep.RuleCost
	if rc == nil || len(rc.Counts) != 2 || len(rc.SetMs) != 2 {
		t.Fatalf("rule cost %+v, want two counts and two hosts' Sets", rc)
	}
	for _, c := range rc.Counts {
		if c.RRPerSec <= 0 || c.CRRPerSec <= 0 || len(c.RRRounds) != 2 || c.RRMin > c.RRPerSec || c.RRPerSec > c.RRMax {
			t.Errorf("%d rules: %+v", c.Rules, c)
		}
	}
	if rc.RRRatio <= 0 || rc.CRRRatio <= 0 {
		t.Errorf("ratios %v %v", rc.RRRatio, rc.CRRRatio)
	}
	k := rep.Kernel
	if k == nil || k.Changes != 3 || k.Incomplete != 0 || k.AffectedHosts != 2 || k.P99Ms <= 0 || k.SetP99Ms <= 0 {
		t.Errorf("kernel part %+v, want 3 complete changes reaching both hosts", k)
	}
	leftOver(t)
}

func TestQoSSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the QoS benchmark creates network namespaces")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rep, err := QoS(ctx, QoSConfig{Rounds: 2, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond, Progress: t.Output()})
	if err != nil {
		t.Fatalf("QoS: %v", err)
	}
	if len(rep.WithRounds) != 2 || len(rep.WithoutRounds) != 2 || rep.WithGbps <= 0 || rep.WithoutGbps <= 0 || rep.Ratio <= 0 {
		t.Errorf("report %+v", rep)
	}
	leftOver(t)
}
