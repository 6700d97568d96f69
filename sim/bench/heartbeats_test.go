package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/sim"
)

func TestMain(m *testing.M) {
	// The benchmarks re-execute this binary for their load generators.
	if len(os.Args) > 1 && os.Args[1] == sim.ChildCommand {
		if err := sim.RunChild(context.Background(), os.Stdin, os.Stdout, os.Stderr, ChildRoles()); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// TestHeartbeatsSmoke runs the whole benchmark at a tiny size, senders in
// a child process and in-process.
func TestHeartbeatsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs about 5 s per mode")
	}
	for _, inProcess := range []bool{false, true} {
		t.Run(fmt.Sprintf("inProcess=%v", inProcess), func(t *testing.T) {
			var progress bytes.Buffer
			rep, err := Heartbeats(context.Background(), HeartbeatsConfig{
				Hosts: 300, Rate: 10, Senders: 1, SocketsPerSender: 2, Duration: 300 * time.Millisecond, Rounds: 1,
				InProcess: inProcess, Progress: &progress,
			})
			if err != nil {
				t.Fatalf("%v\nprogress:\n%s", err, progress.String())
			}
			wantMode := map[bool]string{false: "process", true: "in-process"}[inProcess]
			if rep.SenderMode != wantMode {
				t.Errorf("sender mode %q, want %q", rep.SenderMode, wantMode)
			}
			if rep.SinkRate <= 0 || rep.IngestRate <= 0 || rep.NominalAccepted == 0 {
				t.Errorf("nothing measured: %+v", rep)
			}
			// The host stops sending after its last heartbeat, and is declared
			// dead after both.
			if rep.DeadAfterStopSecs <= 0 || rep.DeadAfterStopSecs > rep.DeadDetectSecs {
				t.Errorf("dead host: %.3fs after its last heartbeat, %.3fs after it stopped", rep.DeadDetectSecs, rep.DeadAfterStopSecs)
			}
			if len(rep.Rejected) != 0 {
				t.Errorf("the ingest rejected datagrams: %v", rep.Rejected)
			}
		})
	}
}
