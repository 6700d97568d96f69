package store

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// putAll writes objs in transactions of up to 100 puts and returns the
// revision after the last.
func putAll(t *testing.T, e *env, objs []apiv1.Object) int64 {
	t.Helper()
	var rev int64
	for len(objs) > 0 {
		n := min(len(objs), 100)
		ops := make([]clientv3.Op, n)
		for i, o := range objs[:n] {
			ops[i] = clientv3.OpPut(e.s.ObjectKey(apiv1.RefOf(o)), mustEncode(o))
		}
		resp, err := e.cli.Txn(testCtx(t)).Then(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		rev, objs = resp.Header.Revision, objs[n:]
	}
	return rev
}

func tenantObj(name string) *apiv1.Tenant {
	tn := apiv1.MustKind(apiv1.KindTenant).New().(*apiv1.Tenant)
	tn.Metadata.Name = name
	return tn
}

// pages follows the pages of q from the beginning and returns every
// object's ref and the objects each page decoded.
func pages(t *testing.T, e *env, q PageQuery) (all []string, decoded []int) {
	t.Helper()
	for {
		p, err := e.s.ListAt(testCtx(t), q)
		if err != nil {
			t.Fatal(err)
		}
		all, decoded = append(all, refs(p.Objects)...), append(decoded, p.Decoded)
		if !p.More {
			return all, decoded
		}
		m := p.Objects[len(p.Objects)-1].GetObjectMeta()
		q.AfterTenant, q.AfterName = m.Tenant, m.Name
	}
}

// TestListAtOrderAndRevision: the pages of a list, read at the first
// page's revision, give every object once in List's order (tenant, then
// name: tenant "a" before "a-b", although key "a-b/" sorts before "a/"),
// unchanged by writes after that revision; a compacted revision gives
// ErrCompacted.
func TestListAtOrderAndRevision(t *testing.T) {
	e := newEnv(t, envOpts{})
	var objs []apiv1.Object
	for _, tn := range []string{"a", "a-b", "b", "empty"} {
		objs = append(objs, tenantObj(tn))
		if tn == "empty" {
			continue
		}
		for i := range 5 {
			objs = append(objs, endpoint(tn, fmt.Sprintf("ep-%d", i), "h1", "s", map[string]string{"i": fmt.Sprint(i % 2)}))
		}
	}
	rev := putAll(t, e, objs)
	waitRev(t, e.s, rev)
	want := refs(e.s.List(apiv1.KindEndpoint, ""))
	odd := func(o apiv1.Object) bool { return o.GetObjectMeta().Labels["i"] == "1" }
	var wantOdd []string
	for _, o := range e.s.List(apiv1.KindEndpoint, "") {
		if odd(o) {
			wantOdd = append(wantOdd, apiv1.RefOf(o).String())
		}
	}
	// A first page from the cache whose Keep refuses most objects reads on
	// from etcd at the cache's revision; the next pages follow at it. Keep
	// may read the Store (the cache's lock is not held).
	head, err := e.s.ListHead(testCtx(t), PageQuery{Kind: apiv1.KindEndpoint, Limit: 2, Keep: func(o apiv1.Object) bool {
		_, ok := e.s.Get(apiv1.KindTenant, "", o.GetObjectMeta().Tenant)
		return ok && odd(o)
	}})
	if err != nil || head.Rev != rev || !head.More {
		t.Fatalf("first page: %v at %d (more %v), want more at %d", err, head.Rev, head.More, rev)
	}
	m := head.Objects[len(head.Objects)-1].GetObjectMeta()
	got, _ := pages(t, e, PageQuery{Kind: apiv1.KindEndpoint, Rev: rev, Limit: 2, Keep: odd, AfterTenant: m.Tenant, AfterName: m.Name})
	if diff := cmp.Diff(wantOdd, append(refs(head.Objects), got...)); diff != "" {
		t.Errorf("filtered pages (-want +got):\n%s", diff)
	}
	// Writes after rev: a page of the list at rev does not show them.
	put(t, e.s, endpoint("a", "ep-00", "h1", "s", nil))
	del(t, e.s, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "b", Name: "ep-4"})
	for _, limit := range []int{1, 2, 3, 7, 100} {
		got, _ := pages(t, e, PageQuery{Kind: apiv1.KindEndpoint, Rev: rev, Limit: limit})
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("limit %d: pages differ from the list at revision %d (-want +got):\n%s", limit, rev, diff)
		}
	}
	got, _ = pages(t, e, PageQuery{Kind: apiv1.KindEndpoint, Tenant: "a-b", Rev: rev, Limit: 1, Keep: odd})
	if diff := cmp.Diff([]string{"endpoint/a-b/ep-1", "endpoint/a-b/ep-3"}, got); diff != "" {
		t.Errorf("one tenant, filtered (-want +got):\n%s", diff)
	}

	if _, err := e.cli.Compact(testCtx(t), rev+1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.ListAt(testCtx(t), PageQuery{Kind: apiv1.KindEndpoint, Rev: rev, Limit: 2, AfterTenant: "a", AfterName: "ep-1"}); !errors.Is(err, ErrCompacted) {
		t.Errorf("a page at compacted revision %d: %v, want ErrCompacted", rev, err)
	}
}

// TestListAtCostFlat: a page decodes about as many objects as it holds,
// whether the kind has 100 or 2,000 objects; a first page (ListHead)
// looks at no more than it holds plus one.
func TestListAtCostFlat(t *testing.T) {
	e := newEnv(t, envOpts{})
	const limit = 10
	var objs []apiv1.Object
	decodedAt := map[int]int{}
	for _, n := range []int{100, 2000} {
		for i := len(objs); i < n; i++ {
			objs = append(objs, host(fmt.Sprintf("h%05d", i), "192.0.2.1"))
		}
		rev := putAll(t, e, objs)
		// A page in the middle of the kind.
		p, err := e.s.ListAt(testCtx(t), PageQuery{Kind: apiv1.KindHost, Rev: rev, Limit: limit, AfterName: fmt.Sprintf("h%05d", n/2)})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Objects) != limit || !p.More {
			t.Fatalf("%d hosts: page of %d objects (more %v), want %d and more", n, len(p.Objects), p.More, limit)
		}
		decodedAt[n] = p.Decoded
		waitRev(t, e.s, rev)
		head, err := e.s.ListHead(testCtx(t), PageQuery{Kind: apiv1.KindHost, Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(head.Objects) != limit || !head.More || head.Rev < rev || head.Decoded > limit+1 {
			t.Errorf("%d hosts: first page of %d objects (more %v) at revision %d, looked at %d; want %d, more, at %d or later, looked at <= %d",
				n, len(head.Objects), head.More, head.Rev, head.Decoded, limit, rev, limit+1)
		}
	}
	// limit+1 objects are enough to fill a page and tell that more follow;
	// reads come in chunks of at least pageChunkMin.
	for n, d := range decodedAt {
		if d > max(limit+1, pageChunkMin) {
			t.Errorf("a page of %d of %d hosts decoded %d objects, want at most %d", limit, n, d, max(limit+1, pageChunkMin))
		}
	}
}
