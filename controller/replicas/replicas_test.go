package replicas

import (
	"context"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/weftnet/weft/controller/store"
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
	a, err := New(Config{Store: env.Store, Prefix: prefix, Self: "10.0.0.1:7444", TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{Store: env.Store, Prefix: prefix, Self: "10.0.0.2:7444", TTL: 2 * time.Second,
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

// cutter is a TCP proxy to etcd whose connections a test cuts, refusing
// new ones while it holds.
type cutter struct {
	ln            net.Listener
	network, addr string // of etcd
	mu            sync.Mutex
	held          bool
	conns         []net.Conn
	wg            sync.WaitGroup
}

func newCutter(t *testing.T, endpoint string) *cutter {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{network: "tcp", addr: u.Host}
	if u.Scheme == "unix" {
		c.network, c.addr = "unix", u.Host+u.Path
	}
	if c.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c.wg.Go(c.accept)
	t.Cleanup(func() {
		c.ln.Close()
		c.hold()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) accept() {
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial(c.network, c.addr)
		c.mu.Lock()
		if err != nil || c.held {
			c.mu.Unlock()
			in.Close()
			if out != nil {
				out.Close()
			}
			continue
		}
		c.conns = append(c.conns, in, out)
		c.mu.Unlock()
		c.wg.Go(func() { io.Copy(out, in); out.Close() })
		c.wg.Go(func() { io.Copy(in, out); in.Close() })
	}
}

// hold cuts every connection and refuses new ones until release.
func (c *cutter) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = true
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

func (c *cutter) release() {
	c.mu.Lock()
	c.held = false
	c.mu.Unlock()
}

// TestMembersAfterCompactedGap: a replica whose connection to etcd is cut
// while a member leaves and another joins, and whose history to resume its
// watch from is then compacted, relists: it forgets the one that left and
// knows the one that joined.
func TestMembersAfterCompactedGap(t *testing.T) {
	env := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const prefix = "/weft/replicas/"
	for _, m := range []string{"10.0.0.1:7444", "10.0.0.2:7444"} {
		if _, err := env.Client.Put(ctx, prefix+m, ""); err != nil {
			t.Fatal(err)
		}
	}
	proxy := newCutter(t, env.Client.Endpoints()[0])
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + proxy.ln.Addr().String()},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	metrics := prometheus.NewRegistry()
	st, err := store.New(store.Config{Client: cli, Registerer: metrics})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := New(Config{Store: st, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got, want := m.Members(), []string{"10.0.0.1:7444", "10.0.0.2:7444"}; !slices.Equal(got, want) {
		t.Fatalf("members %v, want %v", got, want)
	}

	proxy.hold()
	if _, err := env.Client.Delete(ctx, prefix+"10.0.0.1:7444"); err != nil {
		t.Fatal(err)
	}
	put, err := env.Client.Put(ctx, prefix+"10.0.0.3:7444", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatal(err)
	}
	proxy.release()

	want := []string{"10.0.0.2:7444", "10.0.0.3:7444"}
	waitFor(t, "the members after the gap", func() bool { return slices.Equal(m.Members(), want) })
	var resets float64
	mfs, err := metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			if mf.GetName() == "weft_store_follow_resets_total" && s.GetLabel()[0].GetValue() == "replicas" {
				resets += s.GetCounter().GetValue()
			}
		}
	}
	if resets == 0 {
		t.Error("the membership was not reset: the test did not exercise a compacted history")
	}
}
