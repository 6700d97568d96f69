package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkCommit creates keys with ~300-byte values through Commit from
// many goroutines, each Commit durable before it returns, and reports
// txns/s and the mean batch size. The raw etcd baseline is
// BenchmarkPutRateBaseline.
func BenchmarkCommit(b *testing.B) {
	for _, bc := range []struct{ par, inFlight int }{ // par: goroutines per GOMAXPROCS
		{1, 2}, {16, 2}, {64, 1}, {64, 2}, {64, 4},
	} {
		par := bc.par
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS/inflight=%d", par, bc.inFlight), func(b *testing.B) {
			env := newEnv(b, envOpts{cfg: func(c *Config) { c.MaxInFlight = bc.inFlight }})
			s := env.s
			value := strings.Repeat("v", putRateValueBytes)
			var seq atomic.Int64
			b.SetParallelism(par)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					k := s.Key("bench/" + strconv.FormatInt(seq.Add(1), 10))
					res, err := s.Commit(ctx, Txn{
						Compares: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
						Ops:      []clientv3.Op{clientv3.OpPut(k, value)},
					})
					if err != nil || !res.Succeeded {
						b.Errorf("commit: %v %v", err, res.Succeeded)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "txns/s")
			b.ReportMetric(float64(st.Txns)/float64(max(st.Batches, 1)), "txns/batch")
		})
	}
}

// BenchmarkPutRateBaseline reports MeasurePutRate: raw etcd txns of 50 puts.
func BenchmarkPutRateBaseline(b *testing.B) {
	env := newEnv(b, envOpts{})
	var rate float64
	for range b.N {
		r, err := MeasurePutRate(context.Background(), env.cli, "/bench/", time.Second, 50, 4)
		if err != nil {
			b.Fatal(err)
		}
		rate = r
	}
	b.ReportMetric(rate, "puts/s")
}
