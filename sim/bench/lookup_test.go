package bench

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// TestLookupSmoke runs the lookup benchmark at a tiny size, clients in a
// child process and in-process.
func TestLookupSmoke(t *testing.T) {
	for _, inProcess := range []bool{false, true} {
		t.Run(fmt.Sprintf("inProcess=%v", inProcess), func(t *testing.T) { lookupSmoke(t, inProcess) })
	}
}

func lookupSmoke(t *testing.T, inProcess bool) {
	var progress bytes.Buffer
	rep, err := Lookup(context.Background(), LookupConfig{
		Rate: 2000, Batch: 4, Clients: 20, ClientSockets: 2, Endpoints: 500, EndpointHosts: 10,
		Misses: 0.25, Duration: 1500 * time.Millisecond, InProcess: inProcess, Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	if want := map[bool]string{false: "process", true: "in-process"}[inProcess]; rep.ClientMode != want {
		t.Errorf("client mode %q, want %q", rep.ClientMode, want)
	}
	if rep.Answered == 0 || rep.Found == 0 || rep.Found == rep.Answered {
		t.Errorf("answered %d, found %d: want both found and not-found answers", rep.Answered, rep.Found)
	}
	if rep.P99Ms <= 0 || rep.P50Ms > rep.P99Ms {
		t.Errorf("latencies p50 %v p99 %v", rep.P50Ms, rep.P99Ms)
	}
	if len(rep.Rejected) != 0 {
		t.Errorf("the server rejected datagrams: %v", rep.Rejected)
	}
}
