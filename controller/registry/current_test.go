package registry

import (
	"context"
	"strconv"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
)

// TestAnswersAreCurrent: what another writer (another replica; here a
// plain etcd client) had acknowledged before a call, the call's answer
// reflects, although the registry reads its cache, which follows etcd
// with a delay: a get returns the write, a create of the object deleted
// elsewhere succeeds, a delete of one created elsewhere succeeds, an
// update to the value this cache still holds is written.
func TestAnswersAreCurrent(t *testing.T) {
	r, st := newRegistry(t)
	cli := st.Client()
	ref := apiv1.RefOf(tenant("t"))
	key := st.ObjectKey(ref)
	version := func(v int) *apiv1.Tenant {
		o := tenant("t")
		o.Metadata.Labels = map[string]string{"v": strconv.Itoa(v)}
		return o
	}
	// elsewhere writes o (nil: deletes it) as another replica would.
	elsewhere := func(t *testing.T, o apiv1.Object) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if o == nil {
			_, err = cli.Delete(ctx, key)
		} else {
			var b []byte
			if b, err = store.EncodeObject(o); err == nil {
				_, err = cli.Put(ctx, key, string(b))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	stored := func(t *testing.T) string {
		t.Helper()
		resp, err := cli.Get(context.Background(), key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("read %s: %v (%d keys)", key, err, len(resp.Kvs))
		}
		o, err := apiv1.DecodeInto(resp.Kvs[0].Value, apiv1.KindTenant)
		if err != nil {
			t.Fatal(err)
		}
		return o.GetObjectMeta().Labels["v"]
	}
	const rounds = 30
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, i int)
	}{
		{"get", func(t *testing.T, i int) {
			elsewhere(t, version(i))
			got, err := r.Get(context.Background(), ref)
			if err != nil || got.GetObjectMeta().Labels["v"] != strconv.Itoa(i) {
				t.Fatalf("get after the write of v=%d elsewhere: %v, %v", i, got, err)
			}
		}},
		{"create after a delete", func(t *testing.T, i int) {
			elsewhere(t, version(i))
			waitCached(t, st, ref, true)
			elsewhere(t, nil)
			if _, err := r.Create(context.Background(), version(i)); err != nil {
				t.Fatalf("create after the delete elsewhere: %v", err)
			}
		}},
		{"delete after a create", func(t *testing.T, i int) {
			elsewhere(t, nil)
			waitCached(t, st, ref, false)
			elsewhere(t, version(i))
			if _, err := r.Delete(context.Background(), ref); err != nil {
				t.Fatalf("delete after the create elsewhere: %v", err)
			}
		}},
		{"update to the cached value", func(t *testing.T, i int) {
			elsewhere(t, version(i))
			waitCached(t, st, ref, true)
			elsewhere(t, version(i+1))
			if _, err := r.Update(context.Background(), version(i)); err != nil {
				t.Fatal(err)
			}
			if got := stored(t); got != strconv.Itoa(i) {
				t.Fatalf("update to v=%d after v=%d elsewhere: stored v=%s", i, i+1, got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range rounds {
				tc.run(t, i)
			}
		})
	}
}

// waitCached waits until the cache has (or has not) the object of ref.
func waitCached(t *testing.T, st *store.Store, ref apiv1.Ref, present bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := st.Get(ref.Kind, ref.Tenant, ref.Name); ok == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the cache to have %s: %v", ref, present)
		}
		time.Sleep(time.Millisecond)
	}
}
