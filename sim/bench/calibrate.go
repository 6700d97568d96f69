package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/controller/store"
)

// Calibration constants: each measurement's length and shape.
const (
	calibrationSeconds     = 1
	calibrationDialers     = 8
	calibrationOpsPerTxn   = 50
	calibrationEtcdWriters = 8
)

// Calibration is what this machine does in two fixed tasks that bound a
// scale benchmark, measured in the same run, so that runs on different
// machines of one kind compare (a 50,000-host cold start has measured 10 s
// on one 2-core machine and 33-37 s on another): loopback TCP connects per
// second (the config streams' connect storm) and raw puts per second into
// a fresh embedded etcd with fsync on (the store's writes). A figure is
// comparable between runs as its ratio to these.
type Calibration struct {
	// TCPConnectsPerSec: connections opened and closed on 127.0.0.1 by
	// calibrationDialers goroutines, the listener accepting and closing.
	TCPConnectsPerSec float64 `json:"tcpConnectsPerSec"`
	// EtcdPutsPerSec: puts of ~300-byte values in EtcdOpsPerTxn-put
	// transactions by calibrationEtcdWriters writers (store.MeasurePutRate).
	EtcdPutsPerSec float64 `json:"etcdPutsPerSec"`
	EtcdOpsPerTxn  int     `json:"etcdOpsPerTxn"`
	// Seconds is each measurement's length.
	Seconds float64 `json:"seconds"`
	// LoadAvg is /proc/loadavg when the calibration started.
	LoadAvg string `json:"loadAvg"`
}

// String is the line benchmarks print.
func (c Calibration) String() string {
	return fmt.Sprintf("calibration: loopback TCP %.0f connects/s (%d dialers), etcd %.0f puts/s (%d-put txns, %d writers, fsync), %.0f s each, load %s",
		c.TCPConnectsPerSec, calibrationDialers, c.EtcdPutsPerSec, c.EtcdOpsPerTxn, calibrationEtcdWriters, c.Seconds, c.LoadAvg)
}

// Calibrate measures the machine (see Calibration); it takes about
// 2*calibrationSeconds plus an etcd start.
func Calibrate(ctx context.Context) (Calibration, error) {
	d := calibrationSeconds * time.Second
	c := Calibration{EtcdOpsPerTxn: calibrationOpsPerTxn, Seconds: d.Seconds(), LoadAvg: loadAvg()}
	var err error
	if c.TCPConnectsPerSec, err = measureConnects(ctx, d, calibrationDialers); err != nil {
		return c, fmt.Errorf("calibrate: %w", err)
	}
	if c.EtcdPutsPerSec, err = measureEtcdPuts(ctx, d); err != nil {
		return c, fmt.Errorf("calibrate: %w", err)
	}
	return c, nil
}

// measureConnects opens and closes loopback TCP connections from dialers
// goroutines for d and returns the connects per second. The dialers close
// with a reset (linger 0), so the run leaves no TIME_WAIT sockets behind
// to take the ephemeral ports the benchmark's agents need.
func measureConnects(ctx context.Context, d time.Duration, dialers int) (float64, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("loopback listener: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	defer wg.Wait()
	defer l.Close()
	addr := l.Addr().String()
	var n atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	end := start.Add(d)
	var dw sync.WaitGroup
	for range dialers {
		dw.Go(func() {
			var dl net.Dialer
			for time.Now().Before(end) && ctx.Err() == nil {
				c, err := dl.DialContext(ctx, "tcp", addr)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				c.Close()
				n.Add(1)
			}
		})
	}
	dw.Wait()
	if err := errors.Join(ctx.Err(), firstErr); err != nil {
		return 0, fmt.Errorf("loopback connects: %w", err)
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// measureEtcdPuts starts an embedded etcd in a temporary directory and
// measures its raw put rate for d.
func measureEtcdPuts(ctx context.Context, d time.Duration) (rate float64, err error) {
	dir, err := os.MkdirTemp("", "weft-calibrate-")
	if err != nil {
		return 0, fmt.Errorf("etcd puts: %w", err)
	}
	defer os.RemoveAll(dir)
	e, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: dir})
	if err != nil {
		return 0, fmt.Errorf("etcd puts: %w", err)
	}
	defer func() { err = errors.Join(err, e.Close()) }()
	cli, err := e.Client()
	if err != nil {
		return 0, fmt.Errorf("etcd puts: %w", err)
	}
	defer cli.Close()
	rate, err = store.MeasurePutRate(ctx, cli, "/calibrate/", d, calibrationOpsPerTxn, calibrationEtcdWriters)
	if err != nil {
		return 0, fmt.Errorf("etcd puts: %w", err)
	}
	return rate, nil
}
