package bench

import (
	"context"
	"testing"
	"time"
)

func TestProgramSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Program(ctx, ProgramConfig{SimConfig: tinySim(t, 20, 40, 2), Writes: 10, Settle: -1})
	if err != nil {
		t.Fatalf("Program: %v", err)
	}
	if rep.Applied != 10 || rep.Lost != 0 {
		t.Errorf("applied %d, lost %d of 10 writes", rep.Applied, rep.Lost)
	}
	if rep.P99Ms <= 0 || rep.P99Ms < rep.P50Ms {
		t.Errorf("p50 %v ms, p99 %v ms: want 0 < p50 <= p99", rep.P50Ms, rep.P99Ms)
	}
}
