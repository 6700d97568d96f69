package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/lifecycle"
)

// progressTo returns a function that prints one progress line to w (nil:
// none), from any goroutine.
func progressTo(w io.Writer) func(format string, a ...any) {
	var mu sync.Mutex
	return func(format string, a ...any) {
		if w == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, format+"\n", a...)
	}
}

// statusLine prints the current status of a long run once a second, and
// results as they come, each line prefixed with the run's name and age.
type statusLine struct {
	w     io.Writer
	name  string
	start time.Time
	life  lifecycle.Group
	mu    sync.Mutex
	cur   string
}

// newStatusLine starts a status line on w (nil: none); Close stops it.
func newStatusLine(w io.Writer, name string, start time.Time) *statusLine {
	s := &statusLine{w: w, name: name, start: start}
	if w == nil {
		return s
	}
	s.life.Go(func(ctx context.Context) {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.mu.Lock()
				if s.cur != "" {
					s.line(s.cur)
				}
				s.mu.Unlock()
			}
		}
	})
	return s
}

// set replaces the status printed every second.
func (s *statusLine) set(format string, a ...any) {
	s.mu.Lock()
	s.cur = fmt.Sprintf(format, a...)
	s.mu.Unlock()
}

// printf prints a line now.
func (s *statusLine) printf(format string, a ...any) {
	if s.w == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.line(fmt.Sprintf(format, a...))
}

// line prints one line; s.mu is held.
func (s *statusLine) line(text string) {
	fmt.Fprintf(s.w, "%s [%3.0fs] %s\n", s.name, time.Since(s.start).Seconds(), text)
}

// Close stops the status line.
func (s *statusLine) Close() error { return s.life.Close() }
