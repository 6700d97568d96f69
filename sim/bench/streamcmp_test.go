package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStreamCompareSmoke(t *testing.T) {
	for _, child := range []bool{false, true} {
		t.Run(fmt.Sprintf("agentsInChild=%v", child), func(t *testing.T) {
			testStreamCompareSmoke(t, child)
		})
	}
}

func testStreamCompareSmoke(t *testing.T, child bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var progress strings.Builder
	cfg := StreamCompareConfig{N: 50, K: 3, Timeout: 20 * time.Second, Progress: &progress}
	cfg.AgentsInChild = child
	rep, err := StreamCompare(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	type shape struct {
		Transport string
		N, K      int
		AllRTTs   bool
	}
	var got []shape
	for _, r := range rep.Results {
		got = append(got, shape{r.Transport, r.N, r.K, r.RTTP50 > 0 && r.SnapshotRTTP50 > 0 && r.OpenTime > 0})
	}
	want := []shape{{TransportLean, 50, 3, true}, {TransportGRPC, 50, 3, true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if rep.SnapshotBytes < 2000 || rep.SnapshotBytes > 3500 {
		t.Errorf("snapshot is %d bytes, want a realistic 2-3.5 KB view", rep.SnapshotBytes)
	}
	t.Log(rep)
}

func TestStreamCompareUnknownTransport(t *testing.T) {
	_, err := StreamCompare(context.Background(), StreamCompareConfig{Transports: []string{"carrier-pigeon"}, N: 1})
	if err == nil || !strings.Contains(err.Error(), "carrier-pigeon") {
		t.Errorf("StreamCompare(carrier-pigeon) = %v, want an unknown transport error", err)
	}
}

// BenchmarkStreamCompare runs StreamCompare at full size (N=9000 unless
// WEFT_STREAMCMP_N says otherwise; WEFT_STREAMCMP_TRANSPORTS=lean,grpc;
// WEFT_STREAMCMP_CHILD=1 runs the agents in a child process, so that the
// figures are the server's alone):
//
//	go test -run '^$' -bench StreamCompare -benchtime 1x -v ./sim/bench
func BenchmarkStreamCompare(b *testing.B) {
	cfg := StreamCompareConfig{Progress: progressOut()}
	if s := os.Getenv("WEFT_STREAMCMP_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("WEFT_STREAMCMP_N: %v", err)
		}
		cfg.N = n
	}
	cfg.AgentsInChild = os.Getenv("WEFT_STREAMCMP_CHILD") != ""
	if s := os.Getenv("WEFT_STREAMCMP_TRANSPORTS"); s != "" {
		cfg.Transports = strings.Split(s, ",")
	}
	for i := 0; i < b.N; i++ {
		rep, err := StreamCompare(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range rep.Results {
			b.ReportMetric(r.HeapPerConnActive/1024, r.Transport+"-heap-KiB/conn")
			b.ReportMetric(r.RSSPerConnActive/1024, r.Transport+"-rss-KiB/conn")
			b.ReportMetric(float64(r.CPUPerDelta.Microseconds()), r.Transport+"-cpu-µs/delta")
		}
		b.Log("\n" + rep.String())
		logJSON(b, rep)
	}
}
