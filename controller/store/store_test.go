package store

import (
	"bufio"
	stdcmp "cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

func TestConfigValidate(t *testing.T) {
	cli := &clientv3.Client{}
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "defaults", cfg: Config{Client: cli}},
		{name: "no client", cfg: Config{}, wantErr: "Client is required"},
		{name: "prefix without slash", cfg: Config{Client: cli, Prefix: "/weft"}, wantErr: "must end in /"},
		{name: "negative batch", cfg: Config{Client: cli, MaxBatchOps: -1}, wantErr: "MaxBatchOps -1 is negative"},
		{name: "negative in flight", cfg: Config{Client: cli, MaxInFlight: -2}, wantErr: "MaxInFlight -2 is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tc.wantErr == "") != (err == nil) || !strings.Contains(got, tc.wantErr) {
				t.Errorf("Validate() = %q, want %q", got, tc.wantErr)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	s, err := New(Config{Client: &clientv3.Client{}, Prefix: "/p/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ref  apiv1.Ref
		key  string
	}{
		{"namespaced", apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web-1"}, "/p/v1/endpoints/acme/web-1"},
		{"cluster scoped", apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}, "/p/v1/hosts/h1"},
		{"plural kind", apiv1.Ref{Kind: "vpcs", Tenant: "acme", Name: "main"}, "/p/v1/vpcs/acme/main"},
		{"lower-case kind", apiv1.Ref{Kind: "securitypolicy", Tenant: "t", Name: "p"}, "/p/v1/securitypolicies/t/p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := s.ObjectKey(tc.ref)
			if key != tc.key {
				t.Fatalf("ObjectKey = %q, want %q", key, tc.key)
			}
			k, tenant, name, ok := s.parseKey(key)
			if !ok {
				t.Fatalf("parseKey(%q) failed", key)
			}
			want := apiv1.MustKind(tc.ref.Kind)
			if diff := cmp.Diff([]string{want.Kind, tc.ref.Tenant, tc.ref.Name}, []string{k.info.Kind, tenant, name}); diff != "" {
				t.Errorf("parseKey (-want +got):\n%s", diff)
			}
		})
	}
	for _, key := range []string{"/p/ipam/x", "/p/v1/endpoints/acme", "/p/v1/endpoints/acme/a/b", "/p/v1/nothings/a", "/q/v1/hosts/h1", "/p/v1/hosts/"} {
		t.Run("not an object "+key, func(t *testing.T) {
			if _, _, _, ok := s.parseKey(key); ok {
				t.Errorf("parseKey(%q) ok", key)
			}
		})
	}
	if got := s.Key("ipam/vni/7"); got != "/p/ipam/vni/7" {
		t.Errorf("Key = %q", got)
	}
}

func TestEncodeObjectDropsResourceVersion(t *testing.T) {
	h := host("h1", "192.0.2.1")
	h.Metadata.ResourceVersion = "42"
	b, err := EncodeObject(h)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "resourceVersion") {
		t.Errorf("encoded %s", b)
	}
	if h.Metadata.ResourceVersion != "42" {
		t.Errorf("EncodeObject modified its argument")
	}
	kt := newKindTable()
	k, _ := kt.lookup("Host")
	got, err := decodeObject(k, "", "h1", b, 7)
	if err != nil {
		t.Fatal(err)
	}
	h.Metadata.ResourceVersion = "7"
	if diff := cmp.Diff(apiv1.Object(h), got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestCommitReadYourWrites(t *testing.T) {
	env := newEnv(t, envOpts{})
	s := env.s
	ep := endpoint("acme", "web-1", "h1", "a", map[string]string{"app": "web"})
	res, err := s.Commit(testCtx(t), createTxn(s, ep))
	if err != nil || !res.Succeeded {
		t.Fatalf("commit: %v %+v", err, res)
	}
	waitRev(t, s, res.Revision)
	if s.Revision() < res.Revision {
		t.Fatalf("Revision %d < %d after WaitForRevision", s.Revision(), res.Revision)
	}
	got, ok := s.Get("Endpoint", "acme", "web-1")
	if !ok {
		t.Fatal("not in cache")
	}
	want := endpoint("acme", "web-1", "h1", "a", map[string]string{"app": "web"})
	want.Metadata.ResourceVersion = rv(res.Revision)
	if diff := cmp.Diff(apiv1.Object(want), got); diff != "" {
		t.Errorf("Get (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]apiv1.Object{want}, s.List("ep", "")); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	// Creating it again fails on its compare; Else tells why.
	res, err = s.Commit(testCtx(t), createTxn(s, ep))
	if err != nil {
		t.Fatal(err)
	}
	if res.Succeeded || len(res.Else) != 1 || len(res.Else[0].GetResponseRange().Kvs) != 1 {
		t.Errorf("second create: %+v", res)
	}
}

func TestWaitForRevisionOutsidePrefix(t *testing.T) {
	env := newEnv(t, envOpts{})
	// A write outside the prefix produces no watch event: the cache learns
	// that it has seen everything up to it from a progress notification.
	resp, err := env.cli.Put(testCtx(t), "/elsewhere/x", "1")
	if err != nil {
		t.Fatal(err)
	}
	waitRev(t, env.s, resp.Header.Revision)
}

func TestCommitConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	env := newEnv(t, envOpts{cfg: func(c *Config) { c.Registerer = reg }})
	s := env.s
	const workers, txns = 64, 5000
	ctx := testCtx(t)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		maxRev int64
		errs   []error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < txns; i += workers {
				res, err := s.Commit(ctx, createTxn(s, host(fmt.Sprintf("h%05d", i), "192.0.2.1")))
				mu.Lock()
				if err == nil && !res.Succeeded {
					err = fmt.Errorf("txn %d failed its compare", i)
				}
				if err != nil {
					errs = append(errs, err)
				}
				maxRev = max(maxRev, res.Revision)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	waitRev(t, s, maxRev)
	if got := len(s.List("Host", "")); got != txns {
		t.Errorf("cache holds %d hosts, want %d", got, txns)
	}
	resp, err := env.cli.Get(testCtx(t), s.Key("v1/hosts/"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != txns {
		t.Errorf("etcd holds %d hosts, want %d", resp.Count, txns)
	}
	st := s.Stats()
	t.Logf("stats: %+v (%.1f txns per batch)", st, float64(st.Txns)/float64(st.Batches))
	if st.Txns != txns || st.MaxBatch < 2 || st.Batches >= txns {
		t.Errorf("no group commit: %+v", st)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		switch {
		case m.GetHistogram() != nil:
			counts[mf.GetName()] = m.GetHistogram().GetSampleCount()
		case m.GetCounter() != nil:
			counts[mf.GetName()] = uint64(m.GetCounter().GetValue())
		default:
			counts[mf.GetName()] = uint64(min(m.GetGauge().GetValue(), 1)) // revision > 0
		}
	}
	if n := counts["weft_store_watch_lag_seconds"]; n == 0 {
		t.Errorf("no watch lag samples")
	}
	counts["weft_store_watch_lag_seconds"] = 1 // how many depends on timing
	want := map[string]uint64{
		"weft_store_commit_seconds":         txns,
		"weft_store_batch_size":             uint64(st.Batches),
		"weft_store_etcd_txn_seconds":       uint64(st.Batches),
		"weft_store_cache_revision":         1,
		"weft_store_watch_lag_seconds":      1,
		"weft_store_relists_total":          0,
		"weft_store_watchers_dropped_total": 0,
		"weft_store_decode_errors_total":    0,
		"weft_store_sync_reads_total":       0,
	}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// holdFirstBatch returns hooks that stop the first batch until release is
// called (idempotent), and the sizes of all batches sent.
func holdFirstBatch() (hooks testHooks, release func(), sizes func() []int) {
	gate := make(chan struct{})
	var (
		once sync.Once
		mu   sync.Mutex
		got  []int
	)
	hooks.beforeSend = func(n int) {
		mu.Lock()
		got = append(got, n)
		first := len(got) == 1
		mu.Unlock()
		if first {
			<-gate
		}
	}
	return hooks, func() { once.Do(func() { close(gate) }) }, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), got...)
	}
}

type commitResult struct {
	res Result
	err error
}

// commitAsync starts a Commit.
func commitAsync(t *testing.T, s *Store, txn Txn) <-chan commitResult {
	ctx := testCtx(t)
	ch := make(chan commitResult, 1)
	go func() {
		res, err := s.Commit(ctx, txn)
		ch <- commitResult{res, err}
	}()
	return ch
}

// commitQueued starts a Commit and waits until it is queued behind a held batch.
func commitQueued(t *testing.T, s *Store, txn Txn) <-chan commitResult {
	t.Helper()
	n := s.batcher.queued()
	ch := commitAsync(t, s, txn)
	waitFor(t, "commit queued", func() bool { return s.batcher.queued() > n })
	return ch
}

func TestNestedFailureIsolation(t *testing.T) {
	hooks, release, sizes := holdFirstBatch()
	env := newEnv(t, envOpts{hooks: hooks, cfg: func(c *Config) { c.MaxInFlight = 1 }})
	t.Cleanup(release) // before Close, also on failure
	s := env.s
	if _, err := env.cli.Put(testCtx(t), s.Key("t/b"), "x"); err != nil {
		t.Fatal(err)
	}
	blocker := commitAsync(t, s, Txn{Ops: []clientv3.Op{clientv3.OpPut(s.Key("t/blocker"), "1")}})
	waitFor(t, "first batch sent", func() bool { return len(sizes()) == 1 })
	a := commitQueued(t, s, Txn{Ops: []clientv3.Op{clientv3.OpPut(s.Key("t/a"), "1")}})
	b := commitQueued(t, s, Txn{
		Compares: []clientv3.Cmp{clientv3.Compare(clientv3.Value(s.Key("t/b")), "=", "nope")},
		Ops:      []clientv3.Op{clientv3.OpPut(s.Key("t/b"), "2")},
		Else:     []clientv3.Op{clientv3.OpGet(s.Key("t/b"))},
	})
	// c compares only what it writes itself: it may share b's batch (a
	// compare of t/b would not: b writes it).
	c := commitQueued(t, s, Txn{
		Compares: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.Key("t/c")), "=", 0)},
		Ops:      []clientv3.Op{clientv3.OpPut(s.Key("t/c"), "1")},
	})
	release()
	for _, r := range []<-chan commitResult{blocker, a, c} {
		if got := <-r; got.err != nil || !got.res.Succeeded {
			t.Errorf("commit: %v %+v", got.err, got.res)
		}
	}
	got := <-b
	if got.err != nil || got.res.Succeeded {
		t.Fatalf("failing txn: %v %+v", got.err, got.res)
	}
	if kvs := got.res.Else[0].GetResponseRange().Kvs; len(kvs) != 1 || string(kvs[0].Value) != "x" {
		t.Errorf("else response: %v", kvs)
	}
	if diff := cmp.Diff([]int{1, 3}, sizes()); diff != "" {
		t.Errorf("batch sizes (-want +got):\n%s", diff)
	}
	resp, err := env.cli.Get(testCtx(t), s.Key("t/"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, x := range resp.Kvs {
		kv[strings.TrimPrefix(string(x.Key), s.Key("t/"))] = string(x.Value)
	}
	if diff := cmp.Diff(map[string]string{"a": "1", "b": "x", "blocker": "1", "c": "1"}, kv); diff != "" {
		t.Errorf("etcd (-want +got):\n%s", diff)
	}
}

func TestSameKeyTxnsCommitInOrder(t *testing.T) {
	hooks, release, sizes := holdFirstBatch()
	env := newEnv(t, envOpts{hooks: hooks, cfg: func(c *Config) { c.MaxInFlight = 1 }})
	t.Cleanup(release) // before Close, also on failure
	s := env.s
	k, j := s.Key("t/k"), s.Key("t/j")
	blocker := commitAsync(t, s, Txn{Ops: []clientv3.Op{clientv3.OpPut(s.Key("t/blocker"), "1")}})
	waitFor(t, "first batch sent", func() bool { return len(sizes()) == 1 })
	first := commitQueued(t, s, Txn{Ops: []clientv3.Op{clientv3.OpPut(k, "v1")}})
	second := commitQueued(t, s, Txn{Ops: []clientv3.Op{clientv3.OpPut(k, "v2"), clientv3.OpPut(j, "x")}})
	third := commitQueued(t, s, Txn{Ops: []clientv3.Op{clientv3.OpPut(j, "y")}})
	other := commitQueued(t, s, Txn{Ops: []clientv3.Op{clientv3.OpPut(s.Key("t/other"), "1")}})
	release()
	var res []Result
	for _, r := range []<-chan commitResult{blocker, first, second, third, other} {
		got := <-r
		if got.err != nil || !got.res.Succeeded {
			t.Fatalf("commit: %v %+v", got.err, got.res)
		}
		res = append(res, got.res)
	}
	// first and other share a batch; second waits for first, third
	// (on second's key j) for second.
	if !(res[1].Revision < res[2].Revision && res[2].Revision < res[3].Revision && res[4].Revision == res[1].Revision) {
		t.Errorf("revisions blocker %d first %d second %d third %d other %d",
			res[0].Revision, res[1].Revision, res[2].Revision, res[3].Revision, res[4].Revision)
	}
	if diff := cmp.Diff([]int{1, 2, 1, 1}, sizes()); diff != "" {
		t.Errorf("batch sizes (-want +got):\n%s", diff)
	}
	for key, want := range map[string]string{k: "v2", j: "y"} {
		resp, err := env.cli.Get(testCtx(t), key)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
			t.Errorf("%s = %v, %v; want %s", key, resp, err, want)
		}
	}
}

func TestFormBatch(t *testing.T) {
	p := func(name string, keys ...string) *pending {
		return &pending{keys: keys, size: 10, txn: Txn{Else: []clientv3.Op{clientv3.OpGet(name)}}}
	}
	barrier := func(name string) *pending {
		b := p(name)
		b.barrier = true
		return b
	}
	reader := func(name string, reads []string, ranges [][2]string, keys ...string) *pending {
		r := p(name, keys...)
		r.reads = reads
		for _, rg := range ranges {
			r.readRanges = append(r.readRanges, keyRange{start: rg[0], end: rg[1]})
		}
		return r
	}
	cancelledP := func(name string, keys ...string) *pending {
		c := p(name, keys...)
		c.state = cancelled
		return c
	}
	names := func(ps []*pending) []string {
		var out []string
		for _, x := range ps {
			out = append(out, string(x.txn.Else[0].KeyBytes()))
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		queue     []*pending
		inflight  []string
		barrierIn bool
		maxOps    int
		maxBytes  int
		wantBatch []string
		wantQueue []string
	}{
		{name: "independent", queue: []*pending{p("a", "1"), p("b", "2"), p("c", "3")},
			wantBatch: []string{"a", "b", "c"}},
		{name: "same key waits, and so does everything after it on that key",
			queue:     []*pending{p("a", "1"), p("b", "1", "2"), p("c", "2"), p("d", "3")},
			wantBatch: []string{"a", "d"}, wantQueue: []string{"b", "c"}},
		{name: "key in flight", queue: []*pending{p("a", "1"), p("b", "2")}, inflight: []string{"1"},
			wantBatch: []string{"b"}, wantQueue: []string{"a"}},
		{name: "max ops", maxOps: 2, queue: []*pending{p("a", "1"), p("b", "2"), p("c", "3")},
			wantBatch: []string{"a", "b"}, wantQueue: []string{"c"}},
		{name: "max bytes", maxBytes: 25, queue: []*pending{p("a", "1"), p("b", "2"), p("c", "3")},
			wantBatch: []string{"a", "b"}, wantQueue: []string{"c"}},
		{name: "cancelled dropped", queue: []*pending{cancelledP("a", "1"), p("b", "1")},
			wantBatch: []string{"b"}},
		{name: "barrier at head goes alone", queue: []*pending{barrier("a"), p("b", "2")},
			wantBatch: []string{"a"}, wantQueue: []string{"b"}},
		{name: "barrier waits for batches in flight", queue: []*pending{barrier("a"), p("b", "2")}, inflight: []string{"9"},
			wantQueue: []string{"a", "b"}},
		{name: "barrier ends the batch", queue: []*pending{p("a", "1"), barrier("b"), p("c", "2")},
			wantBatch: []string{"a"}, wantQueue: []string{"b", "c"}},
		{name: "nothing while a barrier is in flight", queue: []*pending{p("a", "1")}, barrierIn: true,
			wantQueue: []string{"a"}},
		// etcd evaluates all compares of a batch before any write: a Txn
		// must not share a batch with a write to what it compares.
		{name: "compare of a key written earlier in the batch waits",
			queue:     []*pending{p("a", "k1"), reader("b", []string{"k1"}, nil, "k2"), p("c", "k3")},
			wantBatch: []string{"a", "c"}, wantQueue: []string{"b"}},
		{name: "write of a key compared earlier in the batch waits",
			queue:     []*pending{reader("a", []string{"k1"}, nil, "k2"), p("b", "k1"), p("c", "k3")},
			wantBatch: []string{"a", "c"}, wantQueue: []string{"b"}},
		{name: "write inside a compared prefix waits",
			queue:     []*pending{reader("a", nil, [][2]string{{"pre/", "pre0"}}, "x"), p("b", "pre/s2"), p("c", "other")},
			wantBatch: []string{"a", "c"}, wantQueue: []string{"b"}},
		{name: "prefix compare over a key written earlier waits",
			queue:     []*pending{p("a", "pre/s1"), reader("b", nil, [][2]string{{"pre/", "pre0"}}, "y")},
			wantBatch: []string{"a"}, wantQueue: []string{"b"}},
		{name: "shared reads do not conflict",
			queue:     []*pending{reader("a", []string{"subnet"}, nil, "e1"), reader("b", []string{"subnet"}, nil, "e2")},
			wantBatch: []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBatcher(stdcmp.Or(tc.maxOps, 128), stdcmp.Or(tc.maxBytes, 1<<20))
			b.queue = tc.queue
			for _, k := range tc.inflight {
				b.inflightKeys[k] = struct{}{}
				b.inflight = 1
			}
			b.barrierInFlight = tc.barrierIn
			batch := b.form()
			if diff := cmp.Diff(tc.wantBatch, names(batch)); diff != "" {
				t.Errorf("batch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantQueue, names(b.queue)); diff != "" {
				t.Errorf("queue (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCommitRejectsInvalidTxn(t *testing.T) {
	env := newEnv(t, envOpts{cfg: func(c *Config) { c.MaxBatchOps = 4 }})
	s := env.s
	for _, tc := range []struct {
		name string
		txn  Txn
	}{
		{"same key twice", Txn{Ops: []clientv3.Op{clientv3.OpPut(s.Key("x"), "1"), clientv3.OpDelete(s.Key("x"))}}},
		{"too many ops", Txn{Ops: []clientv3.Op{
			clientv3.OpPut(s.Key("1"), ""), clientv3.OpPut(s.Key("2"), ""), clientv3.OpPut(s.Key("3"), ""),
			clientv3.OpPut(s.Key("4"), ""), clientv3.OpPut(s.Key("5"), "")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Commit(testCtx(t), tc.txn); !errors.Is(err, ErrInvalidTxn) {
				t.Errorf("Commit error %v, want ErrInvalidTxn", err)
			}
		})
	}
}

func TestOptimisticConcurrency(t *testing.T) {
	env := newEnv(t, envOpts{})
	s := env.s
	waitRev(t, s, put(t, s, host("h1", "192.0.2.1")))
	cur, _ := s.Get("Host", "", "h1")
	rev := cur.GetObjectMeta().ResourceVersion
	key := s.ObjectKey(apiv1.RefOf(cur))
	update := func(ip string) Result {
		t.Helper()
		res, err := s.Commit(testCtx(t), Txn{
			Compares: []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", mustAtoi(t, rev))},
			Ops:      []clientv3.Op{clientv3.OpPut(key, mustEncode(host("h1", ip)))},
			Else:     []clientv3.Op{clientv3.OpGet(key)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := update("192.0.2.2")
	second := update("192.0.2.3") // based on the same, now stale, version
	if !first.Succeeded || second.Succeeded {
		t.Fatalf("first %v second %v: want true false", first.Succeeded, second.Succeeded)
	}
	if kv := second.Else[0].GetResponseRange().Kvs[0]; kv.ModRevision != first.Revision {
		t.Errorf("conflicting version %d, want %d", kv.ModRevision, first.Revision)
	}
	waitRev(t, s, first.Revision)
	got, _ := s.Get("Host", "", "h1")
	if ip := got.(*apiv1.Host).Spec.UnderlayIP; ip != "192.0.2.2" {
		t.Errorf("underlay ip %s", ip)
	}
}

func mustAtoi(t testing.TB, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIndexes(t *testing.T) {
	env := newEnv(t, envOpts{})
	s := env.s
	objs := []apiv1.Object{
		subnet("acme", "a", "v1", "10.0.1.0/24"),
		subnet("acme", "b", "v1", "10.0.2.0/24"),
		subnet("acme", "c", "v2", "10.1.1.0/24"),
		subnet("other", "a", "v1", "10.0.1.0/24"),
		endpoint("acme", "e1", "h1", "a", map[string]string{"app": "web", "tier": "front"}),
		endpoint("acme", "e2", "h1", "b", map[string]string{"app": "db"}),
		endpoint("acme", "e3", "h2", "a", map[string]string{"app": "web"}),
		endpoint("other", "e1", "h1", "a", map[string]string{"app": "web"}),
	}
	var last int64
	for _, o := range objs {
		last = put(t, s, o)
	}
	waitRev(t, s, last)

	epNames := func(eps []*apiv1.Endpoint) []string {
		var out []string
		for _, e := range eps {
			out = append(out, e.Metadata.Tenant+"/"+e.Metadata.Name)
		}
		return out
	}
	snNames := func(sns []*apiv1.Subnet) []string {
		var out []string
		for _, e := range sns {
			out = append(out, e.Metadata.Tenant+"/"+e.Metadata.Name)
		}
		return out
	}
	type query struct {
		name string
		run  func() []string
	}
	queries := []query{
		{"host h1", func() []string { return epNames(s.EndpointsByHost("h1")) }},
		{"host h2", func() []string { return epNames(s.EndpointsByHost("h2")) }},
		{"subnet acme/a", func() []string { return epNames(s.EndpointsBySubnet("acme", "a")) }},
		{"subnet acme/b", func() []string { return epNames(s.EndpointsBySubnet("acme", "b")) }},
		{"label acme app=web", func() []string { return epNames(s.EndpointsByLabel("acme", "app", "web")) }},
		{"label acme app=api", func() []string { return epNames(s.EndpointsByLabel("acme", "app", "api")) }},
		{"vpc acme/v1", func() []string { return snNames(s.SubnetsByVPC("acme", "v1")) }},
		{"vpc acme/v2", func() []string { return snNames(s.SubnetsByVPC("acme", "v2")) }},
		{"list acme endpoints", func() []string { return refs(s.List("Endpoint", "acme")) }},
		{"list all endpoints", func() []string { return refs(s.List("Endpoint", "")) }},
		{"select tier=front", func() []string {
			objs, _ := s.ListSelector("Endpoint", "", func(l map[string]string) bool { return l["tier"] == "front" })
			return refs(objs)
		}},
	}
	check := func(t *testing.T, want map[string][]string) {
		for _, q := range queries {
			t.Run(q.name, func(t *testing.T) {
				if diff := cmp.Diff(want[q.name], q.run()); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			})
		}
	}
	t.Run("initial", func(t *testing.T) {
		check(t, map[string][]string{
			"host h1":             {"acme/e1", "acme/e2", "other/e1"},
			"host h2":             {"acme/e3"},
			"subnet acme/a":       {"acme/e1", "acme/e3"},
			"subnet acme/b":       {"acme/e2"},
			"label acme app=web":  {"acme/e1", "acme/e3"},
			"vpc acme/v1":         {"acme/a", "acme/b"},
			"vpc acme/v2":         {"acme/c"},
			"list acme endpoints": {"endpoint/acme/e1", "endpoint/acme/e2", "endpoint/acme/e3"},
			"list all endpoints":  {"endpoint/acme/e1", "endpoint/acme/e2", "endpoint/acme/e3", "endpoint/other/e1"},
			"select tier=front":   {"endpoint/acme/e1"},
		})
	})

	// Migrate e1 to h2 and relabel it, delete e2 and subnet c, move e3 to subnet b.
	put(t, s, endpoint("acme", "e1", "h2", "a", map[string]string{"app": "api"}))
	put(t, s, endpoint("acme", "e3", "h2", "b", map[string]string{"app": "web"}))
	del(t, s, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "e2"})
	waitRev(t, s, del(t, s, apiv1.Ref{Kind: apiv1.KindSubnet, Tenant: "acme", Name: "c"}))
	t.Run("after updates", func(t *testing.T) {
		check(t, map[string][]string{
			"host h1":             {"other/e1"},
			"host h2":             {"acme/e1", "acme/e3"},
			"subnet acme/a":       {"acme/e1"},
			"subnet acme/b":       {"acme/e3"},
			"label acme app=web":  {"acme/e3"},
			"label acme app=api":  {"acme/e1"},
			"vpc acme/v1":         {"acme/a", "acme/b"},
			"list acme endpoints": {"endpoint/acme/e1", "endpoint/acme/e3"},
			"list all endpoints":  {"endpoint/acme/e1", "endpoint/acme/e3", "endpoint/other/e1"},
		})
	})
	// Empty index buckets are removed, not left behind.
	s.cache.mu.RLock()
	defer s.cache.mu.RUnlock()
	if _, ok := s.cache.snByVPC[tn{"acme", "v2"}]; ok {
		t.Error("empty vpc bucket kept")
	}
	if n := len(s.cache.eps.byLabel); n != 3 { // acme app=api, acme app=web, other app=web
		t.Errorf("%d label buckets, want 3 (acme tier=front kept?)", n)
	}
}

func refs(objs []apiv1.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, apiv1.RefOf(o).String())
	}
	return out
}

func TestRestartKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	func() {
		env := newEnv(t, envOpts{dir: dir})
		waitRev(t, env.s, put(t, env.s, host("h1", "192.0.2.1")))
		env.s.Close()
		env.cli.Close()
		env.e.Close()
		env.e.Close() // idempotent
	}()
	env := newEnv(t, envOpts{dir: dir})
	if _, ok := env.s.Get("Host", "", "h1"); !ok {
		t.Error("h1 lost across restart")
	}
}

func TestKill9KeepsCommittedData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	// SIGKILL right after the Commits returned: what they acknowledged must
	// be on disk.
	if kerr := cmd.Process.Kill(); kerr != nil {
		t.Fatal(kerr)
	}
	_ = cmd.Wait()
	if err != nil {
		t.Fatalf("helper output %q: %v", line, err)
	}
	var rev int64
	if _, err := fmt.Sscanf(line, "committed %d", &rev); err != nil {
		t.Fatalf("helper output %q: %v", line, err)
	}
	env := newEnv(t, envOpts{dir: dir})
	if env.s.Revision() < rev {
		t.Errorf("revision %d after restart, helper committed %d", env.s.Revision(), rev)
	}
	if got := len(env.s.List("Host", "")); got != helperObjects {
		t.Errorf("%d hosts after kill -9, want %d", got, helperObjects)
	}
}

func TestMeasurePutRate(t *testing.T) {
	env := newEnv(t, envOpts{})
	rate, err := MeasurePutRate(testCtx(t), env.cli, "/bench/", 300e6, 50, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.0f puts/s in txns of 50 (2 goroutines)", rate)
	if rate <= 0 {
		t.Errorf("rate %v", rate)
	}
	resp, err := env.cli.Get(testCtx(t), "/bench/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d keys left behind", resp.Count)
	}
}

func TestUndecodableValueIsDropped(t *testing.T) {
	env := newEnv(t, envOpts{})
	s := env.s
	put(t, s, host("h1", "192.0.2.1"))
	key := s.ObjectKey(apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"})
	for i, value := range []string{"{not json", `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"h1"}}`, mustEncode(host("h2", "192.0.2.2"))} {
		resp, err := env.cli.Put(testCtx(t), key, value)
		if err != nil {
			t.Fatal(err)
		}
		waitRev(t, s, resp.Header.Revision)
		if _, ok := s.Get("Host", "", "h1"); ok {
			t.Errorf("value %d: undecodable h1 still served", i)
		}
	}
	if got := s.Stats().DecodeErrors; got != 3 {
		t.Errorf("decode errors %d, want 3", got)
	}
}
