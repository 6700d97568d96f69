package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/scaleobjects"
)

// countingKV counts a Store's range requests and the keys etcd walked for
// them: etcd visits every key of a request's range in its index (to
// return Count) whatever the limit, so the sum of the responses' Counts
// is the index work of a list.
type countingKV struct {
	clientv3.KV
	mu       sync.Mutex
	requests int
	walked   int64
}

func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := c.KV.Get(ctx, key, opts...)
	if err == nil {
		c.mu.Lock()
		c.requests++
		c.walked += resp.Count
		c.mu.Unlock()
	}
	return resp, err
}

func (c *countingKV) counts() (requests int, walked int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests, c.walked
}

// BenchmarkList measures a cold start's list of the objects of
// scaleobjects.Objects(N) (N endpoints, N/10 hosts, N/100 VPCs and
// subnets) from an embedded etcd, through the server's in-process KV as a
// replica with an embedded etcd reads it, per list. keys-walked/object is
// the index work etcd did per object listed (see countingKV); it stays
// near 3 at any N for a list whose cost is linear in N.
//
//	WEFT_MEM_ENDPOINTS=1000000 go test -run XXX -bench BenchmarkList -benchtime 3x ./controller/store/
func BenchmarkList(b *testing.B) {
	n := scaleobjects.Endpoints(b, 100_000)
	b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
		e := newEnv(b, envOpts{})
		e.s.Close()
		memLoad(b, e.cli, n, false)
		var objects int
		var elapsed time.Duration
		kv := &countingKV{KV: e.e.KV()}
		for b.Loop() {
			s, err := New(Config{Client: e.cli, KV: kv, Logger: testLogger()})
			if err != nil {
				b.Fatal(err)
			}
			// A bound for a quadratic list of a million keys on a slow
			// machine, not only for this one's.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			start := time.Now()
			snap, _, err := s.list(ctx)
			elapsed += time.Since(start)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			objects = len(snap)
			s.cache.discard(snap)
		}
		requests, walked := kv.counts()
		b.ReportMetric(float64(walked)/float64(objects)/float64(b.N), "keys-walked/object")
		b.ReportMetric(float64(requests)/float64(b.N), "requests/list")
		b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/list")
		b.ReportMetric(float64(objects), "objects")
	})
}
