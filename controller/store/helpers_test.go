package store

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// helperDirEnv makes the test binary act as a controller that commits and
// then waits to be killed (see TestKill9KeepsCommittedData).
const helperDirEnv = "WEFT_STORE_TEST_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		os.Exit(helperMain(dir))
	}
	goleak.VerifyTestMain(m)
}

// helperMain commits helperObjects hosts, reports the revision on stdout
// and blocks.
func helperMain(dir string) int {
	ctx := context.Background()
	e, err := StartEmbedded(ctx, EmbedConfig{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cli, err := e.Client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := New(Config{Client: cli})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var last int64
	for i := range helperObjects {
		res, err := s.Commit(ctx, createTxn(s, host(fmt.Sprintf("h%03d", i), "192.0.2.1")))
		if err != nil || !res.Succeeded {
			fmt.Fprintln(os.Stderr, "commit", i, err, res.Succeeded)
			return 1
		}
		last = res.Revision
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "committed", last)
	w.Flush()
	select {} // until killed
}

const helperObjects = 50

// env is a started Store on a fresh embedded etcd.
type env struct {
	dir string
	e   *Embedded
	cli *clientv3.Client
	s   *Store
}

type envOpts struct {
	cfg   func(*Config)
	hooks testHooks
	dir   string
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	ctx := testCtx(t)
	if o.dir == "" {
		o.dir = filepath.Join(t.TempDir(), "etcd")
	}
	e, err := StartEmbedded(ctx, EmbedConfig{Dir: o.dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	cfg := Config{Client: cli, Logger: testLogger()}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.hooks = o.hooks
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &env{dir: o.dir, e: e, cli: cli, s: s}
}

func host(name, ip string) *apiv1.Host {
	h := apiv1.MustKind(apiv1.KindHost).New().(*apiv1.Host)
	h.Metadata.Name = name
	h.Spec.UnderlayIP = ip
	return h
}

func endpoint(tenant, name, hostName, subnet string, labels map[string]string) *apiv1.Endpoint {
	ep := apiv1.MustKind(apiv1.KindEndpoint).New().(*apiv1.Endpoint)
	ep.Metadata = apiv1.ObjectMeta{Name: name, Tenant: tenant, Labels: labels}
	ep.Spec = apiv1.EndpointSpec{Host: hostName, Subnet: subnet}
	return ep
}

func subnet(tenant, name, vpc, cidr string) *apiv1.Subnet {
	sn := apiv1.MustKind(apiv1.KindSubnet).New().(*apiv1.Subnet)
	sn.Metadata = apiv1.ObjectMeta{Name: name, Tenant: tenant}
	sn.Spec = apiv1.SubnetSpec{VPC: vpc, CIDR: cidr}
	return sn
}

func mustEncode(o apiv1.Object) string {
	b, err := EncodeObject(o)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// createTxn creates o if it does not exist.
func createTxn(s *Store, o apiv1.Object) Txn {
	key := s.ObjectKey(apiv1.RefOf(o))
	return Txn{
		Compares: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		Ops:      []clientv3.Op{clientv3.OpPut(key, mustEncode(o))},
		Else:     []clientv3.Op{clientv3.OpGet(key)},
	}
}

// put writes o unconditionally and returns the commit revision.
func put(t testing.TB, s *Store, o apiv1.Object) int64 {
	t.Helper()
	res, err := s.Commit(testCtx(t), Txn{Ops: []clientv3.Op{clientv3.OpPut(s.ObjectKey(apiv1.RefOf(o)), mustEncode(o))}})
	if err != nil || !res.Succeeded {
		t.Fatalf("put %s: %v (succeeded %v)", apiv1.RefOf(o), err, res.Succeeded)
	}
	return res.Revision
}

// del deletes an object and returns the commit revision.
func del(t testing.TB, s *Store, r apiv1.Ref) int64 {
	t.Helper()
	res, err := s.Commit(testCtx(t), Txn{Ops: []clientv3.Op{clientv3.OpDelete(s.ObjectKey(r))}})
	if err != nil || !res.Succeeded {
		t.Fatalf("delete %s: %v (succeeded %v)", r, err, res.Succeeded)
	}
	return res.Revision
}

func waitRev(t testing.TB, s *Store, rev int64) {
	t.Helper()
	if err := s.WaitForRevision(testCtx(t), rev); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond; the deadline only turns a hang into a failure.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (b *batcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, p := range b.queue {
		if p.state == queued {
			n++
		}
	}
	return n
}

// ev is an Event reduced to what tests compare.
type ev struct {
	Type, Ref string
	Rev       int64
}

func evOf(e Event) ev {
	return ev{Type: e.Type, Ref: apiv1.RefOf(e.Object).String(), Rev: e.Revision}
}

// recv reads n events, failing on a closed channel or a hang.
func recv(t testing.TB, ch <-chan Event, n int) []ev {
	t.Helper()
	var got []ev
	timeout := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d of %d events: %v", len(got), n, got)
			}
			got = append(got, evOf(e))
		case <-timeout:
			t.Fatalf("timed out after %d of %d events: %v", len(got), n, got)
		}
	}
	return got
}

func rv(rev int64) string { return strconv.FormatInt(rev, 10) }
