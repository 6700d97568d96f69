package bench

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"testing"
)

// The benchmarks below run Heartbeats and Lookup at full size, once per
// b.N iteration (use -benchtime 1x), and report their figures as metrics;
// -v also prints the progress lines and the JSON report. They take about
// a minute each:
//
//	go test -run '^$' -bench 'Heartbeats|Lookup' -benchtime 1x -v ./sim/bench

func progressOut() io.Writer {
	if testing.Verbose() {
		return os.Stdout
	}
	return io.Discard
}

func BenchmarkHeartbeats(b *testing.B) {
	for _, tc := range []struct {
		name               string
		sockets, readBatch int
	}{
		{"default", 0, 0},     // SO_REUSEPORT sockets = GOMAXPROCS, recvmmsg of 64
		{"sockets=1", 1, 0},   // one socket: does SO_REUSEPORT pay?
		{"readbatch=1", 0, 1}, // one recvmsg per datagram: does recvmmsg pay?
	} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				rep, err := Heartbeats(context.Background(), HeartbeatsConfig{
					Sockets: tc.sockets, ReadBatch: tc.readBatch, Progress: progressOut()})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(rep.SinkRate, "sink-datagrams/s")
				b.ReportMetric(rep.IngestRate, "ingest-heartbeats/s")
				b.ReportMetric(rep.IngestRatio, "ingest/sink")
				b.ReportMetric(rep.IngestCPUMicros, "ingest-cpu-µs/heartbeat")
				b.ReportMetric(rep.Cores, "cores@100k-hosts")
				b.ReportMetric(rep.DeadDetectSecs, "dead-detect-s")
				logJSON(b, rep)
			}
		})
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, tc := range []struct {
		name  string
		batch int
	}{
		{"batch=1", 1},   // one query per datagram: the ARP-like miss
		{"batch=16", 16}, // full batches
	} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				rep, err := Lookup(context.Background(), LookupConfig{Batch: tc.batch, Progress: progressOut()})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(rep.Rate, "lookups/s")
				b.ReportMetric(rep.P50Ms, "p50-ms")
				b.ReportMetric(rep.P99Ms, "p99-ms")
				b.ReportMetric(float64(rep.Lost), "lost")
				logJSON(b, rep)
			}
		})
	}
}

func logJSON(b *testing.B, v any) {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s", js)
}

// envInt returns the integer in environment variable k, or d. (Other
// benchmark drivers of this package use it.)
func envInt(k string, d int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return d
}
