package store

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// listedKey is a listed object as the tests compare it with etcd.
type listedKey struct {
	Key               string
	CreateRev, ModRev int64
}

// listStore returns a Store, not started, on env's etcd whose lists read
// page keys per range request through a countingKV.
func listStore(t *testing.T, env *env, page int) (*Store, *countingKV) {
	t.Helper()
	kv := &countingKV{KV: env.cli}
	s, err := New(Config{Client: env.cli, KV: kv, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s.listPage = page
	t.Cleanup(func() { s.Close() })
	return s, kv
}

// loadListObjects writes n endpoints in two tenants, n/10 hosts and a
// subnet, and a key under the objects' prefix that is not an object.
func loadListObjects(t *testing.T, env *env, n int) {
	t.Helper()
	ctx := testCtx(t)
	var ops []clientv3.Op
	flush := func() {
		if _, err := env.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	add := func(o apiv1.Object) {
		ops = append(ops, clientv3.OpPut(env.s.ObjectKey(apiv1.RefOf(o)), mustEncode(o)))
		if len(ops) == 100 {
			flush()
		}
	}
	// A Tenant object for acme, none for other: tenants cut a list's
	// ranges, but the keys of a tenant without one are listed too.
	tenant := apiv1.MustKind(apiv1.KindTenant).New()
	tenant.GetObjectMeta().Name = "acme"
	add(tenant)
	add(subnet("acme", "a", "main", "10.0.0.0/16"))
	for i := range n / 10 {
		add(host(fmt.Sprintf("h%04d", i), "192.0.2.1"))
	}
	for i := range n {
		add(endpoint([]string{"acme", "other"}[i%2], fmt.Sprintf("e%05d", i), "h0001", "a", map[string]string{"app": "web"}))
	}
	ops = append(ops, clientv3.OpPut(env.s.Key("v1/nokind/x"), "not an object"))
	flush()
}

// etcdObjects returns the object keys under the prefix at rev, read from
// etcd in one request.
func etcdObjects(t *testing.T, s *Store, cli *clientv3.Client, rev int64) []listedKey {
	t.Helper()
	resp, err := cli.Get(testCtx(t), s.prefix+"v1/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	var keys []listedKey
	for _, kv := range resp.Kvs {
		if _, _, _, ok := s.parseKey(string(kv.Key)); ok {
			keys = append(keys, listedKey{string(kv.Key), kv.CreateRevision, kv.ModRevision})
		}
	}
	return keys
}

// listedKeys returns the keys of a list, in its order, and discards it.
func listedKeys(s *Store, snap []change) []listedKey {
	keys := make([]listedKey, 0, len(snap))
	for _, ch := range snap {
		keys = append(keys, listedKey{s.objectKey(ch.kind, ch.tenant, ch.name), ch.createRev, ch.rev})
	}
	s.cache.discard(snap)
	return keys
}

// TestListAcrossPages checks that a list of many pages holds every object
// once, all of them as they were at the list's revision, while other
// writers create, update and delete objects on both sides of the pages
// already read, and when the revision is compacted in the middle of the
// list (it starts over at a new revision).
func TestListAcrossPages(t *testing.T) {
	env := newEnv(t, envOpts{})
	const n, page = 400, 7
	loadListObjects(t, env, n)
	s, kv := listStore(t, env, page)
	ctx := testCtx(t)
	var revs []int64
	pages := map[int64]int{}
	written := 0
	s.hooks.listPage = func(rev int64, p int) {
		if !slices.Contains(revs, rev) {
			revs = append(revs, rev)
		}
		pages[rev]++
		if p != 2 {
			return
		}
		// Writes between the pages: new keys before and after the pages
		// read so far, updates and deletes of keys read and not read yet.
		var ops []clientv3.Op
		for _, name := range []string{"e00000a", "e00399a", "e00200b", fmt.Sprintf("e%05dz", len(revs))} {
			ops = append(ops, clientv3.OpPut(s.ObjectKey(apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name}),
				mustEncode(endpoint("acme", name, "h0002", "a", nil))))
		}
		ops = append(ops,
			clientv3.OpPut(s.ObjectKey(apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "other", Name: "e00301"}),
				mustEncode(endpoint("other", "e00301", "h0003", "a", nil))),
			clientv3.OpDelete(s.ObjectKey(apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: fmt.Sprintf("e%05d", 2*len(revs))})),
			clientv3.OpDelete(s.ObjectKey(apiv1.Ref{Kind: apiv1.KindHost, Name: fmt.Sprintf("h%04d", 30+len(revs))})))
		resp, err := env.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			t.Error(err)
			return
		}
		written++
		if len(revs) == 1 {
			// The list's revision goes: the rest of this list fails.
			if _, err := env.cli.Compact(ctx, resp.Header.Revision); err != nil {
				t.Error(err)
			}
		}
	}
	snap, rev, err := s.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := listedKeys(s, snap)
	if len(revs) != 2 || rev != revs[1] {
		t.Fatalf("list at revisions %v, returned %d: want 2 attempts, the first one compacted", revs, rev)
	}
	if pages[rev] < n/page/2 {
		t.Errorf("%d ranges at revision %d, want at least %d", pages[rev], rev, n/page/2)
	}
	want := etcdObjects(t, s, env.cli, rev)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("list at revision %d differs from etcd's keys at that revision (-etcd +list):\n%s", rev, diff)
	}
	if now := etcdObjects(t, s, env.cli, 0); cmp.Equal(now, got) || written != 2 {
		t.Errorf("the writes during the list (%d) did not change etcd's state: the test tests nothing", written)
	}
	if requests, _ := kv.counts(); requests == 0 {
		t.Error("the list did not read through Config.KV")
	}
}

// TestListWalksLinear checks that the index work of a list is linear in
// the number of keys: etcd walks every key of a request's range to count
// it, so a list that pages through [last key, end of prefix) walks
// about n²/(2·page) keys: here fifty times the objects. (The list walks
// them at most five times: the first request, the counts of its ranges,
// a keys-only read of the largest and the pages.)
func TestListWalksLinear(t *testing.T) {
	env := newEnv(t, envOpts{})
	const n, page = 1000, 10
	loadListObjects(t, env, n)
	for _, tc := range []struct {
		name string
		page int
	}{
		{"one page", 2 * n},
		{"many pages", page},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, kv := listStore(t, env, tc.page)
			snap, rev, err := s.list(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			got := listedKeys(s, snap)
			if diff := cmp.Diff(etcdObjects(t, s, env.cli, rev), got); diff != "" {
				t.Fatalf("list differs from etcd (-etcd +list):\n%s", diff)
			}
			requests, walked := kv.counts()
			keys := int64(len(got) + 1) // and the key that is not an object
			t.Logf("%d objects, page %d: %d requests walked %d keys (%.2f per key)", len(got), tc.page, requests, walked, float64(walked)/float64(keys))
			if walked > 5*keys {
				t.Errorf("etcd walked %d keys for a list of %d keys, want at most 5 per key", walked, keys)
			}
			if maxReq := 2*int(keys)/tc.page + 2*len(s.kinds.all) + 10; requests > maxReq {
				t.Errorf("%d range requests, want at most %d", requests, maxReq)
			}
		})
	}
}

// TestListFailsCleanly checks that a list that fails leaves no records
// behind and ends every reader it started.
func TestListFailsCleanly(t *testing.T) {
	env := newEnv(t, envOpts{})
	loadListObjects(t, env, 300)
	s, _ := listStore(t, env, 7)
	ctx, cancel := context.WithCancel(testCtx(t))
	s.hooks.listPage = func(_ int64, p int) {
		if p == 3 {
			cancel()
		}
	}
	snap, _, err := s.list(ctx)
	if err == nil || snap != nil {
		t.Fatalf("list with its context cancelled: %d changes, err %v; want an error", len(snap), err)
	}
	s.cache.mu.RLock()
	defer s.cache.mu.RUnlock()
	if n := s.cache.eps.strs.len(); n != 0 {
		t.Errorf("%d interned strings after a failed list, want 0", n)
	}
}
