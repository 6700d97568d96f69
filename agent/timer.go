package agent

import (
	"sync"
	"time"
)

// kicker is something a kick wakes: a signal channel, or a funcTimer.
type kicker interface{ kick() }

// kick wakes k without blocking.
func kick(k kicker) { k.kick() }

// signal is a wake-up channel of capacity 1: a kick while one is pending
// is absorbed.
type signal chan struct{}

func (s signal) kick() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// funcTimer runs f on a goroutine of its own each time it fires, instead
// of a goroutine per agent waiting on a timer: an idle agent costs a
// runtime timer, no stack. The time.Timer is made on the first reset.
// Runs are counted in wg, so that the agent's Close waits for a run in
// progress; after stop, no run starts.
type funcTimer struct {
	f         func()
	kickDelay func() time.Duration // the delay of a kick
	wg        *sync.WaitGroup

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

// reset makes the timer fire after d (replacing any earlier setting).
func (ft *funcTimer) reset(d time.Duration) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	switch {
	case ft.stopped:
	case ft.t == nil:
		ft.t = time.AfterFunc(d, ft.run)
	default:
		ft.t.Reset(d)
	}
}

// kick makes the timer fire after kickDelay.
func (ft *funcTimer) kick() { ft.reset(ft.kickDelay()) }

// stop stops the timer for good.
func (ft *funcTimer) stop() {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.stopped = true
	if ft.t != nil {
		ft.t.Stop()
	}
}

func (ft *funcTimer) run() {
	ft.mu.Lock()
	if ft.stopped {
		ft.mu.Unlock()
		return
	}
	ft.wg.Add(1) // before stop returns, so Close's Wait sees it
	ft.mu.Unlock()
	defer ft.wg.Done()
	ft.f()
}
