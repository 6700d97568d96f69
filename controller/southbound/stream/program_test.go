package stream

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	realagent "github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/datapath"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/wire"
)

// failOnce is a sim driver whose first Set fails; the next waits for
// release, so that the test sees the failure before the retry succeeds.
type failOnce struct {
	*simdp.Driver
	sets    atomic.Int32
	release chan struct{}
}

var errKernel = errors.New("netlink: no buffer space available")

func (f *failOnce) Set(ctx context.Context, d *datapath.Desired) error {
	switch f.sets.Add(1) {
	case 1:
		return errKernel
	case 2:
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.Driver.Set(ctx, d)
}

// TestProgrammingFailureRetriedLocally: a real agent whose first Set fails
// acks its view with the error instead of refusing it, so the controller
// sends no second snapshot; the Host's status shows the error, the agent's
// reconciler retries, and once the retry succeeds the status clears.
func TestProgrammingFailureRetriedLocally(t *testing.T) {
	e := newSenv(t, senvOpts{sink: true})
	e.base(2)
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // heartbeats land here, unread
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	drv := &failOnce{Driver: simdp.New(simdp.Config{}), release: make(chan struct{})}
	defer drv.Close()
	a, err := realagent.New(realagent.Config{
		Host: "h1", StreamAddrs: []string{e.addr}, UDPAddr: udp.LocalAddr().String(), Key: keyOf("h1"), Driver: drv,
		ReconcileInterval: time.Hour, Backoff: backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	_, version := e.compiled("h1")
	h := waitHost(t, e.st, "h1", func(h *apiv1.Host) bool { return h.Status.LastError != "" })
	if !strings.Contains(h.Status.LastError, errKernel.Error()) || h.Status.ViewVersion != version {
		t.Errorf("status: view %d, lastError %q; want view %d and the Set error", h.Status.ViewVersion, h.Status.LastError, version)
	}
	if got := a.ViewVersion(); got != version {
		t.Errorf("the agent holds version %d, want %d (adopted despite the failure)", got, version)
	}
	close(drv.release)
	waitHost(t, e.st, "h1", func(h *apiv1.Host) bool { return h.Status.LastError == "" && h.Status.ViewVersion == version })
	if got := a.AppliedVersion(); got != version {
		t.Errorf("applied version %d, want %d", got, version)
	}
	if got := drv.sets.Load(); got != 2 {
		t.Errorf("%d Sets, want 2 (the failure and the retry)", got)
	}
	if snaps, nacks := e.counter("weft_stream_deltas_total", "snapshot"), e.counter("weft_stream_nacks_total"); snaps != 1 || nacks != 0 {
		t.Errorf("%v snapshots and %v nacks, want 1 and 0", snaps, nacks)
	}
}

// TestStatusAck: an Ack of the version the agent holds is a status report,
// also while a delta is in flight: its programming error reaches the
// Host's status, and the session goes on without a snapshot.
func TestStatusAck(t *testing.T) {
	e := newSenv(t, senvOpts{sink: true})
	e.base(1)
	a := e.connect("h1", 0, nil)
	a.mustNext()
	a.ack()
	held := a.version
	const msg = "program datapath: link vx100: device busy"
	send(t, a.wc, &wire.Ack{Version: held, Error: msg})
	waitHost(t, e.st, "h1", func(h *apiv1.Host) bool { return h.Status.LastError == msg && h.Status.ViewVersion == held })

	e.create(endpoint("acme", "h1-new", "a", "h1"))
	d := a.mustNext() // in flight until acked
	if d.Snapshot || d.FromVersion != held {
		t.Fatalf("got %d→%d snapshot=%v, want a delta from %d", d.FromVersion, d.ToVersion, d.Snapshot, held)
	}
	send(t, a.wc, &wire.Ack{Version: held}) // the retry succeeded
	waitHost(t, e.st, "h1", func(h *apiv1.Host) bool { return h.Status.LastError == "" && h.Status.ViewVersion == held })
	a.ack()
	waitHost(t, e.st, "h1", func(h *apiv1.Host) bool { return h.Status.ViewVersion == d.ToVersion })
	if got := e.counter("weft_stream_deltas_total", "snapshot"); got != 1 {
		t.Errorf("%v snapshots sent, want 1", got)
	}
	if got := e.counter("weft_stream_session_ends_total"); got != 0 {
		t.Errorf("%v sessions ended, want 0", got)
	}
}
