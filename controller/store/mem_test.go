package store

import (
	"context"
	"fmt"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/scaleobjects"
)

// BenchmarkCacheMemory measures the live heap a Store's cache keeps per
// endpoint, in the sim's shape scaled to N endpoints: N/10 hosts, N/100
// VPCs with one subnet each, 100 VPCs per tenant, and endpoints as the
// controller leaves them (uid, timestamps, 2 labels, status
// IP/MAC/host/VNI/phase). Run it once per size:
//
//	WEFT_MEM_ENDPOINTS=100000 go test -run XXX -bench CacheMemory -benchtime 1x ./controller/store/
//
// "list" is a cold start: the Store lists state that is already in etcd.
// "watch" is a Store that saw every object created and then updated
// through its watch, so that its event ring is full too. The retained heap
// is the difference made by closing the Store (after forced GCs), so the
// embedded etcd's own heap is not counted; B/endpoint counts everything
// the Store keeps (hosts and subnets included), divided by N; scanB/endpoint
// is the part of it the GC must scan for pointers, objs/endpoint the heap
// objects.
func BenchmarkCacheMemory(b *testing.B) {
	n := scaleobjects.Endpoints(b, 100_000)
	for _, mode := range []string{"list", "watch"} {
		b.Run(fmt.Sprintf("mode=%s/endpoints=%d", mode, n), func(b *testing.B) {
			e := newEnv(b, envOpts{})
			e.s.Close() // only the measured Store holds a cache
			for range b.N {
				var s *Store
				var objs []apiv1.Object
				if mode == "list" {
					objs = memLoad(b, e.cli, n, false)
				}
				base := heapAfterGC().bytes
				s = memStore(b, e)
				if mode == "watch" {
					objs = memLoad(b, e.cli, n, true)
					waitForObjects(b, s, len(objs))
				}
				objs = nil
				held := heapAfterGC()
				if p := os.Getenv("WEFT_MEM_PROFILE"); p != "" {
					writeHeapProfile(b, p+"."+mode)
				}
				objects := s.cache.len()
				s.Close()
				s.cli.Close()
				s = nil
				after := heapAfterGC()
				b.ReportMetric(float64(held.bytes-after.bytes)/float64(n), "B/endpoint")
				b.ReportMetric(float64(held.bytes-base)/float64(n), "B/endpoint-grown")
				b.ReportMetric(float64(held.scan-after.scan)/float64(n), "scanB/endpoint")
				b.ReportMetric(float64(held.objects-after.objects)/float64(n), "objs/endpoint")
				b.ReportMetric(float64(objects), "objects")
				runtime.KeepAlive(objs)
			}
		})
	}
}

// writeHeapProfile writes the live heap to path (inuse_space shows what
// the Store holds).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// heapStats describes the live heap.
type heapStats struct {
	bytes   int64 // allocated
	scan    int64 // scannable: what the GC's mark phase reads
	objects int64
}

func heapAfterGC() heapStats {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	samples := []rtmetrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	rtmetrics.Read(samples)
	return heapStats{bytes: int64(ms.HeapAlloc), scan: int64(samples[0].Value.Uint64()), objects: int64(ms.HeapObjects)}
}

// memStore starts a Store on a client of its own, as a replica has.
func memStore(b *testing.B, e *env) *Store {
	b.Helper()
	cli, err := e.e.Client()
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Client: cli, Logger: testLogger()})
	if err != nil {
		cli.Close()
		b.Fatal(err)
	}
	if err := s.Start(testCtx(b)); err != nil {
		cli.Close()
		b.Fatal(err)
	}
	return s
}

func waitForObjects(b *testing.B, s *Store, n int) {
	b.Helper()
	rev, err := s.cli.Get(testCtx(b), "/", clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	waitRev(b, s, rev.Header.Revision)
	if got := s.cache.len(); got < n {
		b.Fatalf("store has %d objects, want %d", got, n)
	}
}

// memLoad writes the objects of scaleobjects.Objects(n) with raw etcd txns; twice
// (pending, then ready) if update is set. It returns the objects.
func memLoad(b *testing.B, cli *clientv3.Client, n int, update bool) []apiv1.Object {
	b.Helper()
	s := &Store{prefix: DefaultPrefix, kinds: newKindTable()}
	write := func(objs []apiv1.Object) {
		const perTxn, writers = 128, 4
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		next := make(chan []apiv1.Object)
		for range writers {
			wg.Go(func() {
				for chunk := range next {
					ops := make([]clientv3.Op, 0, len(chunk))
					for _, o := range chunk {
						ops = append(ops, clientv3.OpPut(s.ObjectKey(apiv1.RefOf(o)), mustEncode(o)))
					}
					if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		for i := 0; i < len(objs); i += perTxn {
			next <- objs[i:min(i+perTxn, len(objs))]
		}
		close(next)
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	if update {
		write(scaleobjects.Objects(n, true))
	}
	objs := scaleobjects.Objects(n, false)
	write(objs)
	return objs
}

// len returns the number of cached objects.
func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := c.eps.len()
	for _, kc := range c.byKind {
		if kc != nil {
			n += kc.items.len()
		}
	}
	return n
}
