package registry

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/scaleobjects"
)

// BenchmarkRegistryMemory measures the live heap that a Registry keeps for
// a replica that serves no writes, in the sim's shape scaled to N
// endpoints (N/100 subnets, N/10 hosts, one endpoint per host per subnet;
// see scaleobjects). The objects are in etcd and in the Store's cache
// before the Registry starts; the retained heap (MiB-held, B/endpoint) is
// what closing and dropping the Registry frees (after forced GCs). It then
// builds the address pool of every subnet, as a replica that allocates in
// all of them would, and reports their heap (MiB-all-pools) and the time
// a build takes. Run it with:
//
//	WEFT_MEM_ENDPOINTS=100000 go test -run XXX -bench RegistryMemory -benchtime 1x ./controller/registry/
func BenchmarkRegistryMemory(b *testing.B) {
	n := scaleobjects.Endpoints(b, 100_000)
	b.Run("endpoints="+strconv.Itoa(n), func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		emb := startEtcd(b)
		st := startStore(b, emb)
		cli, err := emb.Client()
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		rev := memLoad(b, st, cli, scaleobjects.Objects(n, false))
		if err := st.WaitForRevision(ctx, rev); err != nil {
			b.Fatal(err)
		}
		for range b.N {
			base := heapAfterGC()
			r, err := New(Config{Store: st})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := r.Start(ctx); err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			held := heapAfterGC()
			pools := r.pools.len()
			// A replica that writes in every subnet: build every pool.
			subnets := st.List(apiv1.KindSubnet, "")
			start = time.Now()
			for _, sn := range subnets {
				m := sn.GetObjectMeta()
				if _, err := r.pool(m.Tenant, m.Name); err != nil {
					b.Fatal(err)
				}
			}
			build := time.Since(start)
			all := heapAfterGC()
			r.Close()
			r = nil
			freed := held - heapAfterGC()
			b.ReportMetric(float64(freed)/(1<<20), "MiB-held")
			b.ReportMetric(float64(freed)/float64(n), "B/endpoint")
			b.ReportMetric(float64(held-base)/(1<<20), "MiB-grown")
			b.ReportMetric(float64(pools), "pools")
			b.ReportMetric(took.Seconds()*1000, "ms-start")
			b.ReportMetric(float64(all-held)/(1<<20), "MiB-all-pools")
			b.ReportMetric(float64(build.Microseconds())/float64(len(subnets)), "µs/pool-build")
		}
	})
}

func heapAfterGC() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// memLoad writes objs, defaulted as the registry would store them, with
// raw etcd transactions, and returns the revision of the last one.
func memLoad(tb testing.TB, st *store.Store, cli *clientv3.Client, objs []apiv1.Object) int64 {
	tb.Helper()
	const perTxn, writers = 128, 4
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last int64
		errs = make(chan error, writers)
		next = make(chan []apiv1.Object)
	)
	for range writers {
		wg.Go(func() {
			for chunk := range next {
				ops := make([]clientv3.Op, 0, len(chunk))
				for _, o := range chunk {
					apiv1.Default(o)
					val, err := encode(o)
					if err != nil {
						errs <- err
						return
					}
					ops = append(ops, clientv3.OpPut(st.ObjectKey(apiv1.RefOf(o)), val))
				}
				resp, err := cli.Txn(context.Background()).Then(ops...).Commit()
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				last = max(last, resp.Header.Revision)
				mu.Unlock()
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
		tb.Fatal(err)
	}
	return last
}
