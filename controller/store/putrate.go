package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// putRateValueBytes is the size of each value MeasurePutRate writes, about
// that of an Endpoint.
const putRateValueBytes = 300

// MeasurePutRate measures raw etcd throughput for d: concurrency goroutines
// each commit txns of opsPerTxn puts of ~300-byte values under
// prefix+"putrate/", back to back. It deletes its keys afterwards and
// returns the puts per second. This is the baseline benchmarks compare the
// store's own rates with.
func MeasurePutRate(ctx context.Context, cli *clientv3.Client, prefix string, d time.Duration, opsPerTxn, concurrency int) (putsPerSec float64, err error) {
	if d <= 0 || opsPerTxn < 1 || concurrency < 1 {
		return 0, fmt.Errorf("measure put rate: need d > 0, opsPerTxn >= 1, concurrency >= 1 (got %v, %d, %d)", d, opsPerTxn, concurrency)
	}
	base := prefix + "putrate/"
	value := strings.Repeat("v", putRateValueBytes)
	// Each goroutine overwrites its own keys in a bounded key space, as a
	// churn of creates and deletes would, without growing the database.
	keySpace := opsPerTxn * ((1024 + opsPerTxn - 1) / opsPerTxn)

	defer func() {
		// Clean up even if ctx ended, but not forever.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, derr := cli.Delete(dctx, base, clientv3.WithPrefix()); derr != nil {
			err = errors.Join(err, fmt.Errorf("measure put rate: delete %s: %w", base, derr))
		}
	}()

	var puts atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	end := start.Add(d)
	for w := range concurrency {
		g.Go(func() error {
			keys := make([]string, keySpace)
			for i := range keys {
				keys[i] = base + strconv.Itoa(w) + "/" + strconv.Itoa(i)
			}
			ops := make([]clientv3.Op, opsPerTxn)
			// No deadline on the requests: etcd would report one as a
			// failure ("request timed out") before the client's ctx ends.
			for n := 0; time.Now().Before(end); n++ {
				for i := range ops {
					ops[i] = clientv3.OpPut(keys[(n*opsPerTxn+i)%keySpace], value)
				}
				if _, err := cli.Txn(gctx).Then(ops...).Commit(); err != nil {
					return fmt.Errorf("txn of %d puts: %w", opsPerTxn, err)
				}
				puts.Add(int64(opsPerTxn))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, fmt.Errorf("measure put rate: %w", err)
	}
	return float64(puts.Load()) / time.Since(start).Seconds(), nil
}
