package quorum

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

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

// fakeEtcd is a member whose leader a test sets: reads succeed while it
// has one and hang until their deadline while it has none, as a member
// cut off from its majority does.
type fakeEtcd struct {
	leader atomic.Uint64 // 0: none
}

func (f *fakeEtcd) Get(ctx context.Context, _ string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if f.leader.Load() != 0 {
		return &clientv3.GetResponse{}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeEtcd) Status(context.Context, string) (*clientv3.StatusResponse, error) {
	return &clientv3.StatusResponse{Leader: f.leader.Load()}, nil
}

func (f *fakeEtcd) AlarmList(context.Context) (*clientv3.AlarmResponse, error) {
	return &clientv3.AlarmResponse{}, nil
}

func (f *fakeEtcd) Endpoints() []string { return []string{"unix://member"} }

// A member that answers without a leader is cut off from its majority (or
// in an election, when no write can commit either): the replica refuses
// writes at once, not after LostAfter, so that its clients move to a
// healthy replica instead of waiting for their timeouts, and not as
// unresponsive (its agents move too). It is writable again as soon as the
// member follows a leader.
func TestNoLeaderUnwritableAtOnce(t *testing.T) {
	f := &fakeEtcd{}
	f.leader.Store(1)
	g, err := New(Config{Client: f, Key: "/probe", Interval: 20 * time.Millisecond, Timeout: 100 * time.Millisecond,
		LostAfter: time.Minute, SilentAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitErr := func(what string, ok func(error) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(10 * time.Second); !ok(g.Err()); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s (Err: %v)", what, g.Err())
			}
		}
		return time.Since(start)
	}
	waitErr("writable with a leader", func(err error) bool { return err == nil })
	f.leader.Store(0)
	took := waitErr("unwritable without a leader", func(err error) bool { return errors.Is(err, ErrNoQuorum) })
	if took > 2*time.Second {
		t.Errorf("unwritable %s after the member lost its leader, want at once (LostAfter is a minute)", took)
	}
	if err := g.Err(); errors.Is(err, ErrUnresponsive) || !strings.Contains(err.Error(), "no leader") {
		t.Errorf("Err = %v, want one saying the member has no leader, not unresponsive", err)
	}
	f.leader.Store(1)
	waitErr("writable again with a leader", func(err error) bool { return err == nil })
}
