package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// TestSyncSeesOtherWriters: a write acknowledged by etcd before Sync is in
// the cache after it, although it did not go through this Store.
func TestSyncSeesOtherWriters(t *testing.T) {
	env := newEnv(t, envOpts{})
	ctx := testCtx(t)
	h := host("h", "192.0.2.1")
	key := env.s.ObjectKey(apiv1.RefOf(h))
	for i := range 20 {
		h.Metadata.Labels = map[string]string{"v": fmt.Sprint(i)}
		if _, err := env.cli.Put(ctx, key, mustEncode(h)); err != nil {
			t.Fatal(err)
		}
		if err := env.s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		got, ok := env.s.Get(apiv1.KindHost, "", "h")
		if !ok || got.GetObjectMeta().Labels["v"] != fmt.Sprint(i) {
			t.Fatalf("after put %d and Sync the cache has %v (found %v)", i, got, ok)
		}
	}
}

// TestSyncSharesReads: Syncs that arrive while a read is in flight share
// the next one; none is served by a read that began before it.
func TestSyncSharesReads(t *testing.T) {
	const later = 63
	reading, release := make(chan struct{}), make(chan struct{})
	var reads atomic.Int32
	env := newEnv(t, envOpts{hooks: testHooks{syncRead: func() {
		if reads.Add(1) == 1 {
			close(reading)
			<-release
		}
	}}})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2*later+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- env.s.Sync(ctx)
	}()
	<-reading // the first read is in flight
	// A write acknowledged now is after the first read began: the Syncs
	// arriving now must see it.
	h := host("h", "192.0.2.1")
	if _, err := env.cli.Put(ctx, env.s.ObjectKey(apiv1.RefOf(h)), mustEncode(h)); err != nil {
		t.Fatal(err)
	}
	wg.Add(later)
	for range later {
		go func() {
			defer wg.Done()
			errs <- env.s.Sync(ctx)
			if _, ok := env.s.Get(apiv1.KindHost, "", "h"); !ok {
				errs <- errors.New("a Sync that began after the write returned before the cache had it")
			}
		}()
	}
	waitFor(t, "the later Syncs to wait for the next read", func() bool {
		env.s.syncs.mu.Lock()
		defer env.s.syncs.mu.Unlock()
		return env.s.syncs.next != nil && env.s.syncs.next.waiters == later
	})
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := env.s.Stats().SyncReads; got != 2 {
		t.Fatalf("%d Syncs made %d quorum reads, want 2", later+1, got)
	}
}

// TestSyncClosed: a Sync on a closed Store fails with ErrClosed instead of
// waiting for its context.
func TestSyncClosed(t *testing.T) {
	env := newEnv(t, envOpts{})
	env.s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.s.Sync(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
}

// BenchmarkGet is the cost of a linearizable read of one object: a cache
// read alone (not linearizable), after a Sync (the API's GET), and after a
// quorum read of its own (what each GET did before Syncs shared reads).
// "quorum-reads/op" says how many reads the Syncs made per GET.
func BenchmarkGet(b *testing.B) {
	env := newEnv(b, envOpts{})
	h := host("h", "192.0.2.1")
	put(b, env.s, h)
	get := func(b *testing.B) {
		if _, ok := env.s.Get(apiv1.KindHost, "", "h"); !ok {
			b.Fatal("not found")
		}
	}
	ownRead := func(ctx context.Context) error {
		resp, err := env.cli.Get(ctx, env.s.prefix, clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		return env.s.WaitForRevision(ctx, resp.Header.Revision)
	}
	for _, bc := range []struct {
		name string
		sync func(context.Context) error
	}{
		{"cache", nil},
		{"sync", env.s.Sync},
		{"own-read", ownRead},
	} {
		for _, par := range []int{0, 64} { // 0: one goroutine; else goroutines per GOMAXPROCS
			b.Run(fmt.Sprintf("%s/parallel=%d", bc.name, par), func(b *testing.B) {
				ctx := context.Background()
				before := env.s.Stats().SyncReads
				one := func() {
					if bc.sync != nil {
						if err := bc.sync(ctx); err != nil {
							b.Fatal(err)
						}
					}
					get(b)
				}
				if par == 0 {
					for b.Loop() {
						one()
					}
				} else {
					b.SetParallelism(par)
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							one()
						}
					})
				}
				b.ReportMetric(float64(env.s.Stats().SyncReads-before)/float64(b.N), "quorum-reads/op")
			})
		}
	}
}
