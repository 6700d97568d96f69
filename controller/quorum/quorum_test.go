package quorum

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftnet/weft/controller/store"
)

// startGuard runs a Guard against a fresh embedded etcd; stop closes the
// etcd server (the client stays), as a crashed member would.
func startGuard(t *testing.T, cfg Config) (g *Guard, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	emb, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	cli, err := emb.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	cfg.Client, cfg.Key = cli, "/quorum-test/probe"
	cfg.Interval, cfg.LostAfter = 20*time.Millisecond, 200*time.Millisecond
	g, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, func() { emb.Close() }
}

// A busy etcd answers linearizable reads after the probe's timeout; its
// member still follows a leader, so the replica stays writable. Every
// read times out here (a 1 ns timeout) while the status is answered.
func TestBusyEtcdKeepsQuorum(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, _ := startGuard(t, Config{Timeout: time.Nanosecond, StatusTimeout: 5 * time.Second, Registerer: reg})
	time.Sleep(1 * time.Second) // five times LostAfter
	if err := g.Err(); err != nil {
		t.Fatalf("a busy etcd was taken for a lost quorum: %v", err)
	}
	if n := testutil.ToFloat64(g.busy); n == 0 {
		t.Error("no probe was counted as answered by the members' status")
	}
}

// A member that is gone answers neither reads nor status: the replica
// cannot tell a saturated etcd from a lost one, waits SilentAfter rather
// than LostAfter, then becomes unwritable, unresponsive (so the controller
// keeps its agents), and says why.
func TestLostEtcdLosesQuorum(t *testing.T) {
	g, stop := startGuard(t, Config{Timeout: 100 * time.Millisecond, StatusTimeout: 100 * time.Millisecond,
		SilentAfter: 5 * time.Second})
	time.Sleep(100 * time.Millisecond)
	if err := g.Err(); err != nil {
		t.Fatalf("writable etcd: %v", err)
	}
	stop()
	time.Sleep(time.Second) // five times LostAfter, a fifth of SilentAfter
	if err := g.Err(); err != nil {
		t.Errorf("lost before SilentAfter although nothing answered: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !errors.Is(g.Err(), ErrNoQuorum) || !errors.Is(g.Err(), ErrUnresponsive) {
		if time.Now().After(deadline) {
			t.Fatalf("no ErrNoQuorum 30s after etcd stopped (Err: %v)", g.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
