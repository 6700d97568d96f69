package lifecycle_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/internal/lifecycle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartTwiceAndAfterClose(t *testing.T) {
	var g lifecycle.Group
	if _, err := g.Start(); err != nil {
		t.Fatalf("first Start: %v", err)
	}
	if _, err := g.Start(); !errors.Is(err, lifecycle.ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := g.Start(); !errors.Is(err, lifecycle.ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
	var never lifecycle.Group
	if err := never.Close(); err != nil {
		t.Fatalf("Close without Start: %v", err)
	}
	if _, err := never.Start(); !errors.Is(err, lifecycle.ErrClosed) {
		t.Fatalf("Start after Close without Start = %v, want ErrClosed", err)
	}
}

func TestCloseCancelsWaitsAndRunsStopOnce(t *testing.T) {
	var g lifecycle.Group
	ctx, err := g.Start()
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var ended atomic.Int32
	g.Go(func(ctx context.Context) { <-ctx.Done(); ended.Add(1) })
	g.Go(func(context.Context) { <-release; ended.Add(1) }) // ended by stop
	var stops atomic.Int32
	boom := errors.New("boom")
	stop := func() error { stops.Add(1); close(release); return boom }

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = g.Close(stop) })
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("Close #%d = %v, want the first Close's error", i, err)
		}
	}
	if got := stops.Load(); got != 1 {
		t.Errorf("stop ran %d times, want 1", got)
	}
	if got := ended.Load(); got != 2 {
		t.Errorf("%d goroutines ended before Close returned, want 2", got)
	}
	if ctx.Err() == nil {
		t.Error("lifetime context not cancelled by Close")
	}
	if g.Go(func(context.Context) { t.Error("Go ran after Close") }) {
		t.Error("Go after Close reported true")
	}
	if !g.Closed() {
		t.Error("Closed() = false after Close")
	}
}
