package cniserver

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/internal/lifecycle"
)

// TestPoolTarget: the pool holds the attaches expected within Horizon at
// the recent rate, between Min and Max, and empties a selection unused
// for Idle.
func TestPoolTarget(t *testing.T) {
	p := &pool{s: &Server{}, cfg: PoolConfig{Min: 2, Max: 50, Horizon: 2 * time.Second, Idle: time.Minute}}
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name    string
		perSec  int           // attaches per second for the next 30 s
		idle    time.Duration // since the last attach
		atLeast int
		atMost  int
	}{
		{"quiet", 0, 0, 2, 2},
		{"10/s", 10, 0, 15, 20},
		{"1000/s capped", 1000, 0, 50, 50},
		{"idle", 0, 2 * time.Minute, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &poolKey{at: t0, lastUse: t0}
			now := t0
			for range 30 {
				now = now.Add(time.Second)
				k.count += tc.perSec
				p.target(k, now)
			}
			k.lastUse = now.Add(-tc.idle)
			if got := p.target(k, now); got < tc.atLeast || got > tc.atMost {
				t.Errorf("target = %d, want %d..%d (rate %.1f/s)", got, tc.atLeast, tc.atMost, k.rate)
			}
		})
	}
}

// slowAgent records its Attaches, each taking a while.
type slowAgent struct {
	mu      sync.Mutex
	batches [][]string
}

func (a *slowAgent) Attach(ctx context.Context, ids []string) error {
	a.mu.Lock()
	a.batches = append(a.batches, ids)
	a.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	return nil
}

func (a *slowAgent) attached() (batches int, ids map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids = map[string]int{}
	for _, b := range a.batches {
		for _, id := range b {
			ids[id]++
		}
	}
	return len(a.batches), ids
}

// TestProgrammerCoalesces: claims that ask while an Attach runs share the
// next one, which attaches each of their endpoints once; each waits for
// one that began after it asked.
func TestProgrammerCoalesces(t *testing.T) {
	a := &slowAgent{}
	g := &programmer{agent: a}
	var life lifecycle.Group
	defer life.Close()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := g.do(t.Context(), &life, fmt.Sprintf("acme/ep-%d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n, ids := a.attached()
	if n < 1 || n > 10 {
		t.Errorf("%d Attaches for 50 claims", n)
	}
	for i := range 50 {
		if id := fmt.Sprintf("acme/ep-%d", i); ids[id] != 1 {
			t.Errorf("%s attached %d times, want once", id, ids[id])
		}
	}
	if err := g.do(t.Context(), &life, "acme/last"); err != nil {
		t.Fatal(err)
	}
	if after, ids := a.attached(); after != n+1 || ids["acme/last"] != 1 {
		t.Errorf("a claim after the others did not get an Attach of its own (%d Attaches, %v)", after-n, ids["acme/last"])
	}
}

func TestTapWait(t *testing.T) {
	ctx := t.Context()
	tap := NewTap(nopReporter{})
	report := func(r agent.EndpointReport) {
		if err := tap.ReportEndpoints(ctx, []agent.EndpointReport{r}); err != nil {
			t.Fatal(err)
		}
	}
	ready := agent.EndpointReport{ID: "acme/x", UID: "u2", Generation: 2, Phase: agent.PhaseReady}
	for _, tc := range []struct {
		name   string
		before []agent.EndpointReport // written before the wait
		after  []agent.EndpointReport // written while it waits
		phase  string                 // the report that decides ("": none)
	}{
		{"written before", []agent.EndpointReport{ready}, nil, agent.PhaseReady},
		{"written after", nil, []agent.EndpointReport{ready}, agent.PhaseReady},
		{"another incarnation", []agent.EndpointReport{{ID: "acme/x", UID: "u1", Generation: 5, Phase: agent.PhaseReady}}, nil, ""},
		{"an older generation", []agent.EndpointReport{{ID: "acme/x", UID: "u2", Generation: 1, Phase: agent.PhaseReady}}, nil, ""},
		{"not programmed", nil, []agent.EndpointReport{{ID: "acme/x", UID: "u2", Generation: 2, Phase: agent.PhaseReady, QoSErr: "x"}}, ""},
		{"pending", nil, []agent.EndpointReport{{ID: "acme/x", UID: "u2", Generation: 2, Phase: agent.PhasePending}}, ""},
		{"failed", nil, []agent.EndpointReport{{ID: "acme/x", UID: "u2", Generation: 2, Phase: agent.PhaseFailed}}, agent.PhaseFailed},
		{"gone", []agent.EndpointReport{ready, {ID: "acme/x", Gone: true}}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report(agent.EndpointReport{ID: "acme/x", Gone: true})
			for _, r := range tc.before {
				report(r)
			}
			wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			go func() {
				for _, r := range tc.after {
					report(r)
				}
			}()
			r, err := tap.Wait(wctx, "acme/x", "u2", 2)
			if tc.phase == "" {
				if err == nil {
					t.Errorf("Wait decided by %+v", r)
				}
				return
			}
			if err != nil || r.Phase != tc.phase {
				t.Errorf("Wait = %+v, %v; want phase %s", r, err, tc.phase)
			}
		})
	}
}
