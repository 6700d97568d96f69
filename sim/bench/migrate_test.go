package bench

import (
	"context"
	"testing"
	"time"
)

func TestMigrateSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Migrate(ctx, MigrateConfig{SimConfig: tinySim(t, 20, 100, 2), Moves: 5, Interested: 3, Settle: -1})
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if rep.Registered != 15 {
		t.Errorf("registered %d interests, want 5 moves × 3", rep.Registered)
	}
	if rep.Incomplete != 0 || rep.P99Ms <= 0 {
		t.Errorf("%d incomplete moves, p99 %v ms", rep.Incomplete, rep.P99Ms)
	}
}
