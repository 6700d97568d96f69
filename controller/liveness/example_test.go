package liveness_test

import (
	"context"
	"fmt"
	"time"

	"github.com/weftnet/weft/controller/liveness"
)

// A table driven by a fake clock: a host heartbeats, goes silent and is
// declared dead.
func Example() {
	var now int64 // the fake monotonic clock, in ns
	sink := liveness.SinkFunc(func(_ context.Context, ts []liveness.Transition) error {
		for _, t := range ts {
			fmt.Printf("host %d: %s -> %s\n", t.HostID, t.From, t.To)
		}
		return nil
	})
	tab, err := liveness.New(liveness.Config{Capacity: 16, Sink: sink, Now: func() int64 { return now }})
	if err != nil {
		panic(err)
	}
	defer tab.Close()
	ctx := context.Background()
	step := int64(250 * time.Millisecond)

	tab.Observe(7, now, 1, 0)
	tab.Sweep(now)
	_ = tab.Flush(ctx)
	for i := 0; i < 12; i++ { // 3 s without heartbeats
		now += step
		tab.Sweep(now)
	}
	_ = tab.Flush(ctx)
	fmt.Println(tab.State(7))
	// Output:
	// host 7: Unknown -> Alive
	// host 7: Alive -> Dead
	// Dead
}
