// Package lifecycle is weft's one guard for the component lifecycle
// New → Start(ctx) → Close:
//
//   - Start(ctx) is startup only: ctx bounds the work Start does before it
//     returns (an initial list, a listen, a first connection) and nothing
//     after. A component that Start returned nil for runs until Close.
//   - Close ends the lifetime: it is idempotent and safe to call
//     concurrently, cancels the component's lifetime context, stops every
//     goroutine the component started and waits for them. Close without
//     Start, and Close after a failed Start, are fine.
//   - Start twice, or Start after Close, is an error.
//
// A component embeds or holds a Group, calls Group.Start at the top of its
// own Start, runs its goroutines with Group.Go (they get the lifetime
// context) and implements Close with Group.Close.
package lifecycle

import (
	"context"
	"errors"
	"sync"
)

// Errors of a Group.
var (
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("lifecycle: already started")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("lifecycle: closed")
)

// Group owns one component's lifetime: its lifetime context and the
// goroutines it started. The zero value is ready to use; a Group must not
// be copied after first use.
type Group struct {
	mu      sync.Mutex
	started bool
	closing bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{} // closed when the first Close has finished
	err     error         // the first Close's result
}

// init creates the lifetime context; g.mu must be held.
func (g *Group) init() {
	if g.ctx == nil {
		g.ctx, g.cancel = context.WithCancel(context.Background())
		g.done = make(chan struct{})
	}
}

// Start marks the component started and returns its lifetime context,
// which Close cancels. It fails with ErrStarted on a second call and with
// ErrClosed after Close.
func (g *Group) Start() (context.Context, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	switch {
	case g.closing:
		return nil, ErrClosed
	case g.started:
		return nil, ErrStarted
	}
	g.started = true
	return g.ctx, nil
}

// Context returns the lifetime context: it ends when Close begins.
func (g *Group) Context() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	return g.ctx
}

// Go runs f in a goroutine that the Group owns: f gets the lifetime
// context and Close waits for f to return. After Close has begun, Go
// does not run f and reports false.
func (g *Group) Go(f func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	if g.closing {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f(g.ctx)
	}()
	return true
}

// Closed reports whether Close has begun.
func (g *Group) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// Close ends the lifetime once: it cancels the lifetime context, calls
// stop (which releases what the goroutines wait on: listeners, sockets,
// queues) in order, waits for every goroutine started with Go, and
// returns the joined errors of stop. Later and concurrent calls wait for
// the first to finish and return its result.
func (g *Group) Close(stop ...func() error) error {
	g.mu.Lock()
	g.init()
	if g.closing {
		g.mu.Unlock()
		<-g.done
		return g.err
	}
	g.closing = true
	g.mu.Unlock()

	g.cancel()
	var errs []error
	for _, f := range stop {
		if f != nil {
			errs = append(errs, f())
		}
	}
	g.wg.Wait()
	g.err = errors.Join(errs...)
	close(g.done)
	return g.err
}
