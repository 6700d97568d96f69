package bench

import (
	"context"
	"testing"
	"time"
)

// TestRolloutSmoke rolls out a few endpoints on a few simulated hosts: every
// one is programmed, and the figures are consistent.
func TestRolloutSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	rep, err := Rollout(ctx, RolloutConfig{SimConfig: tinySim(t, 10, 20, 2), Creates: 50, Concurrency: 8, Settle: -1})
	if err != nil {
		t.Fatalf("Rollout: %v", err)
	}
	if rep.Programmed != 50 || rep.Lost != 0 || rep.Error != "" {
		t.Errorf("programmed %d, lost %d of 50 (error %q)", rep.Programmed, rep.Lost, rep.Error)
	}
	if rep.PerSec <= 0 || rep.APIPerSec <= 0 || rep.P50Ms <= 0 || rep.P99Ms < rep.P50Ms || rep.MaxMs < rep.P99Ms {
		t.Errorf("rates %v/s (API %v/s), p50 %v ms, p99 %v ms, max %v ms: want positive rates and p50 <= p99 <= max",
			rep.PerSec, rep.APIPerSec, rep.P50Ms, rep.P99Ms, rep.MaxMs)
	}
}
