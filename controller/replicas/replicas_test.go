package replicas

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
	}
}

// TestRegistersAgainAfterLeaseLoss: a replica whose lease is lost (here
// revoked; in production etcd overloaded past the TTL) leaves the member
// list, then registers again by itself, and the others see it come back.
func TestRegistersAgainAfterLeaseLoss(t *testing.T) {
	env := etcdtest.Start(t)
	ctx := context.Background()
	const prefix = "/test/replicas/"
	var (
		mu      sync.Mutex
		changes []int
	)
	a, err := New(Config{Client: env.Client, Prefix: prefix, Self: "10.0.0.1:7444", TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{Client: env.Client, Prefix: prefix, Self: "10.0.0.2:7444", TTL: 2 * time.Second,
		OnChange: func(m []string) {
			mu.Lock()
			changes = append(changes, len(m))
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	both := func() bool { return slices.Equal(b.Members(), []string{"10.0.0.1:7444", "10.0.0.2:7444"}) }
	waitFor(t, "both members", both)

	resp, err := env.Client.Get(ctx, prefix+"10.0.0.1:7444")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("a's key: %v %v", resp, err)
	}
	if _, err := env.Client.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a registered again", func() bool { return a.LeasesLost() == 1 && both() })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(changes, 1) {
		t.Errorf("b's member counts %v: never saw a leave", changes)
	}
}
