package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// TestFollowPolicy drives the retry loop with scripted watches and
// relists: what it calls next, and what it counts.
func TestFollowPolicy(t *testing.T) {
	errDown := errors.New("etcd unreachable")
	type call struct {
		Op   string // "watch" or "reset"
		From int64  // of a watch
	}
	type step struct {
		call
		last int64 // a watch's last delivered revision, a reset's revision
		err  error
	}
	tests := []struct {
		name                      string
		from                      int64
		script                    []step
		rewatches, resets, errors int64
		wantErr                   error
	}{
		{name: "a dropped watch resumes from the last revision delivered", from: 10, script: []step{
			{call{"watch", 10}, 15, nil},
			{call{"watch", 15}, 15, nil}, // dropped before delivering: after a backoff
			{call{"watch", 15}, 16, nil},
		}, rewatches: 3},
		{name: "compacted history is relisted, then followed from the list", from: 10, script: []step{
			{call{"watch", 10}, 12, fmt.Errorf("history: %w", ErrCompacted)},
			{call{"reset", 0}, 40, nil},
			{call{"watch", 40}, 41, nil},
		}, rewatches: 1, resets: 1},
		{name: "failures are retried", from: 10, script: []step{
			{call{"watch", 10}, 10, errDown},
			{call{"watch", 10}, 10, errDown},
			{call{"watch", 10}, 11, nil},
		}, rewatches: 1, errors: 2},
		{name: "from 0 starts with a reset; a failed reset is retried", from: 0, script: []step{
			{call{"reset", 0}, 0, errDown},
			{call{"reset", 0}, 7, nil},
			{call{"watch", 7}, 8, nil},
		}, rewatches: 1, resets: 2, errors: 1},
		{name: "a closed source ends it", from: 10, script: []step{
			{call{"watch", 10}, 10, ErrClosed},
		}, wantErr: ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var got []call
			next := func(c call) step {
				got = append(got, c)
				if len(got) > len(tc.script) {
					cancel() // script done
					return step{last: c.From}
				}
				return tc.script[len(got)-1]
			}
			m, err := newMetrics(nil)
			if err != nil {
				t.Fatal(err)
			}
			err = follow(ctx, "test", testLogger(), m, tc.from,
				func(_ context.Context, from int64) (int64, error) {
					s := next(call{"watch", from})
					return s.last, s.err
				},
				func(context.Context) (int64, error) {
					s := next(call{"reset", 0})
					return s.last, s.err
				})
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("follow = %v, want %v", err, tc.wantErr)
			}
			var want []call
			for _, s := range tc.script {
				want = append(want, s.call)
			}
			if tc.wantErr == nil { // the call that found the script done
				want = append(want, call{"watch", tc.script[len(tc.script)-1].last})
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			var counts []int64
			for _, vec := range m.follow {
				counts = append(counts, int64(counterValue(t, vec.WithLabelValues("test"))))
			}
			if diff := cmp.Diff([]int64{tc.rewatches, tc.resets, tc.errors}, counts); diff != "" {
				t.Errorf("rewatches, resets, errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBackoffBounded(t *testing.T) {
	var b backoff
	for i := range 30 {
		cur := min(backoffMin<<i, backoffMax)
		if d := b.next(); d < cur/2 || d >= cur {
			t.Fatalf("delay %d = %v, want in [%v, %v)", i, d, cur/2, cur)
		}
	}
	b.reset()
	if d := b.next(); d >= backoffMin {
		t.Errorf("delay after reset = %v, want below %v", d, backoffMin)
	}
}

// consumer is the state a follower keeps: objects by name, with their
// resourceVersion.
type consumer struct {
	mu     sync.Mutex
	objs   map[string]string
	revs   []int64 // of every event delivered
	resets int
	hold   chan struct{} // if set, the next OnEvents waits for it to close
}

func (c *consumer) onEvents(evs []Event) {
	c.mu.Lock()
	hold := c.hold
	c.hold = nil
	c.mu.Unlock()
	if hold != nil {
		<-hold
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range evs {
		c.revs = append(c.revs, ev.Revision)
		m := ev.Object.GetObjectMeta()
		if ev.Type == EventDeleted {
			delete(c.objs, m.Name)
		} else {
			c.objs[m.Name] = m.ResourceVersion
		}
	}
}

func (c *consumer) onReset(objs []apiv1.Object, _ int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resets++
	c.objs = map[string]string{}
	for _, o := range objs {
		c.objs[o.GetObjectMeta().Name] = o.GetObjectMeta().ResourceVersion
	}
}

func (c *consumer) state() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for k, v := range c.objs {
		out[k] = v
	}
	return out
}

// TestFollowStore follows Hosts in a store that drops slow subscribers
// and keeps little history: the consumer is held while more than its
// backlog happens, and in the compaction case the store also loses, unseen
// by the consumer, one host's delete and another's create.
func TestFollowStore(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact bool
	}{
		{"dropped", false},
		{"dropped and compacted", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			env := newEnv(t, envOpts{cfg: func(c *Config) { c.RingSize, c.SubscriberBacklog, c.Registerer = 4, 4, reg }})
			s := env.s
			put(t, s, host("a", "192.0.2.1"))
			rev := put(t, s, host("b", "192.0.2.2"))
			waitRev(t, s, rev)
			objs, rev := s.ListSelector(apiv1.KindHost, "", nil)
			c := &consumer{hold: make(chan struct{})}
			c.onReset(objs, rev)
			c.resets = 0
			hold := c.hold
			ctx, cancel := context.WithCancel(testCtx(t))
			done := make(chan error, 1)
			go func() {
				done <- Follow(ctx, s, FollowConfig{Name: "hosts", Kind: apiv1.KindHost, From: rev,
					OnEvents: c.onEvents, OnReset: c.onReset, Logger: testLogger()})
			}()
			var last int64
			for i := range 12 {
				last = put(t, s, host("a", fmt.Sprintf("192.0.2.%d", 10+i)))
			}
			waitRev(t, s, last)
			if tc.compact {
				del(t, s, apiv1.Ref{Kind: apiv1.KindHost, Name: "b"})
				put(t, s, host("c", "192.0.2.3"))
				for i := range 6 {
					last = put(t, s, host("a", fmt.Sprintf("192.0.2.%d", 30+i)))
				}
				if _, err := env.cli.Compact(testCtx(t), last); err != nil {
					t.Fatal(err)
				}
				waitRev(t, s, last)
			}
			close(hold)

			want := func() map[string]string {
				out := map[string]string{}
				for _, o := range s.List(apiv1.KindHost, "") {
					out[o.GetObjectMeta().Name] = o.GetObjectMeta().ResourceVersion
				}
				return out
			}()
			waitFor(t, "the consumer to catch up", func() bool { return cmp.Equal(want, c.state()) })
			c.mu.Lock()
			for i := 1; i < len(c.revs); i++ {
				if c.revs[i] <= c.revs[i-1] {
					t.Errorf("event revisions out of order or repeated: %v", c.revs)
					break
				}
			}
			c.mu.Unlock()
			wantResets := 0.0
			if tc.compact {
				wantResets = 1
			}
			if got := counterValue(t, s.metrics.follow[followRewatch].WithLabelValues("hosts")); got < 1 {
				t.Errorf("rewatches = %v, want at least 1", got)
			}
			if got := counterValue(t, s.metrics.follow[followReset].WithLabelValues("hosts")); got != wantResets {
				t.Errorf("resets = %v, want %v", got, wantResets)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Follow after ctx ended = %v, want nil", err)
			}
		})
	}
}

// TestFollowEnds: Follow returns when its ctx ends and when the store
// closes, also while it waits to retry.
func TestFollowEnds(t *testing.T) {
	env := newEnv(t, envOpts{})
	follow := func(ctx context.Context) chan error {
		done := make(chan error, 1)
		go func() {
			done <- Follow(ctx, env.s, FollowConfig{Name: "t", From: env.s.Revision(),
				OnEvents: func([]Event) {}, OnReset: func([]apiv1.Object, int64) {}})
		}()
		return done
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	byCtx := follow(ctx)
	cancel()
	if err := <-byCtx; err != nil {
		t.Errorf("Follow after ctx ended = %v, want nil", err)
	}
	byClose := follow(testCtx(t))
	env.s.Close()
	if err := <-byClose; !errors.Is(err, ErrClosed) {
		t.Errorf("Follow after the store closed = %v, want ErrClosed", err)
	}
}

// TestFollowKeys follows raw keys from a compacted revision: it starts
// with the current keys, then their changes.
func TestFollowKeys(t *testing.T) {
	env := newEnv(t, envOpts{})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	const prefix = "/test/keys/"
	first, err := env.cli.Put(ctx, prefix+"a", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.cli.Put(ctx, prefix+"b", "1"); err != nil {
		t.Fatal(err)
	}
	cur, err := env.cli.Delete(ctx, prefix+"a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.cli.Compact(ctx, cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	keys := map[string]bool{}
	done := make(chan error, 1)
	go func() {
		done <- env.s.FollowKeys(ctx, KeysConfig{Name: "keys", Prefix: prefix, From: first.Header.Revision,
			OnEvents: func(evs []*clientv3.Event) {
				mu.Lock()
				defer mu.Unlock()
				for _, ev := range evs {
					if ev.Type == clientv3.EventTypeDelete {
						delete(keys, string(ev.Kv.Key))
					} else {
						keys[string(ev.Kv.Key)] = true
					}
				}
			},
			OnReset: func(kvs []*mvccpb.KeyValue, _ int64) {
				mu.Lock()
				defer mu.Unlock()
				clear(keys)
				for _, kv := range kvs {
					keys[string(kv.Key)] = true
				}
			}})
	}()
	if _, err := env.cli.Put(ctx, prefix+"c", "1"); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{prefix + "b": true, prefix + "c": true}
	waitFor(t, "keys b and c", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return cmp.Equal(want, keys)
	})
	if got := counterValue(t, env.s.metrics.follow[followReset].WithLabelValues("keys")); got != 1 {
		t.Errorf("resets = %v, want 1", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("FollowKeys after ctx ended = %v", err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
