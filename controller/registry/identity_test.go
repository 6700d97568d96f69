package registry

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
)

// startRegistryGC starts a Registry on st that looks for unused
// identities every interval.
func startRegistryGC(tb testing.TB, st *store.Store, interval time.Duration) *Registry {
	tb.Helper()
	return startRegistryWith(tb, Config{Store: st, IdentityGCInterval: interval})
}

func labelled(ep *apiv1.Endpoint, labels map[string]string) *apiv1.Endpoint {
	ep.Metadata.Labels = labels
	return ep
}

// identityOf returns the identity of a stored endpoint.
func identityOf(t *testing.T, r *Registry, tenant, name string) uint32 {
	t.Helper()
	o, err := r.Get(context.Background(), apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: tenant, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return o.(*apiv1.Endpoint).Status.Identity
}

// identityKeys returns the identity keys of a VPC in etcd, as
// "hash=id", "id#id=hash" and "ref id/endpoint" lines, sorted.
func identityKeys(t *testing.T, r *Registry, k vpcKey) []string {
	t.Helper()
	var out []string
	for _, p := range []struct{ prefix, format string }{
		{identityPrefix(k), "%s=%s"}, {identityIDPrefix(k), "id#%s=%s"}, {identityRefsOf(k), "ref %s%s"},
	} {
		resp, err := r.st.Client().Get(context.Background(), r.st.Key(p.prefix), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			out = append(out, fmt.Sprintf(p.format, strings.TrimPrefix(string(kv.Key), r.st.Key(p.prefix)), kv.Value))
		}
	}
	slices.Sort(out)
	return out
}

// TestIdentities: endpoints of a VPC with equal labels share an identity,
// other label sets (no labels included) get others, each VPC numbers its
// own; a relabel moves the endpoint to the identity of its new labels;
// status writers cannot change it; the keys in etcd say the same.
func TestIdentities(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	web, db := map[string]string{"app": "web"}, map[string]string{"app": "db", "tier": "x"}
	mustCreate(t, r,
		labelled(endpoint("acme", "w1", "a", "h1"), web), labelled(endpoint("acme", "w2", "a", "h2"), web),
		labelled(endpoint("acme", "d1", "a", "h1"), db), endpoint("acme", "bare", "a", "h1"),
		labelled(endpoint("globex", "g1", "a", "h1"), db))
	got := map[string]uint32{}
	for _, n := range []string{"w1", "w2", "d1", "bare"} {
		got[n] = identityOf(t, r, "acme", n)
	}
	got["g1"] = identityOf(t, r, "globex", "g1")
	if diff := cmp.Diff(map[string]uint32{"w1": 1, "w2": 1, "d1": 2, "bare": 3, "g1": 1}, got); diff != "" {
		t.Errorf("identities (-want +got):\n%s", diff)
	}

	// w2 takes d1's labels; a status writer tries to change its identity.
	w2 := labelled(endpoint("acme", "w2", "a", "h2"), db)
	if _, err := r.Update(ctx, w2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.MergePatchStatus(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "w2"},
		[]byte(`{"status":{"identity":77,"phase":"Ready"}}`)); err != nil {
		t.Fatal(err)
	}
	if id := identityOf(t, r, "acme", "w2"); id != 2 {
		t.Errorf("w2 relabelled to d1's labels has identity %d, want 2", id)
	}
	k := vpcKey{"acme", "main"}
	h := func(l map[string]string) string { return labelsHash(l) }
	want := []string{
		h(web) + "=1", h(db) + "=2", h(nil) + "=3",
		"id#1=" + h(web), "id#2=" + h(db), "id#3=" + h(nil),
		"ref 1/w1", "ref 2/d1", "ref 2/w2", "ref 3/bare",
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, identityKeys(t, r, k)); diff != "" {
		t.Errorf("identity keys of acme/main (-want +got):\n%s", diff)
	}
}

// TestIdentityGC: an identity is released once no endpoint has its labels
// (deleted or relabelled), only then, and a released one is not handed out
// again at once.
func TestIdentityGC(t *testing.T) {
	r := startRegistryGC(t, startStore(t, startEtcd(t)), 20*time.Millisecond)
	base(t, r)
	ctx := context.Background()
	k := vpcKey{"acme", "main"}
	mustCreate(t, r, labelled(endpoint("acme", "web", "a", "h1"), map[string]string{"app": "web"}),
		labelled(endpoint("acme", "db", "a", "h1"), map[string]string{"app": "db"}))
	if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	dbKeys := []string{labelsHash(map[string]string{"app": "db"}) + "=2", "id#2=" + labelsHash(map[string]string{"app": "db"}), "ref 2/db"}
	slices.Sort(dbKeys)
	// Released after two sweeps; db's identity, in use, stayed through them.
	eventually(t, "identity keys after web's delete", func() string { return cmp.Diff(dbKeys, identityKeys(t, r, k)) })

	// A relabel releases the old identity; a new label set does not get a
	// released identity back.
	if _, err := r.Update(ctx, labelled(endpoint("acme", "db", "a", "h1"), map[string]string{"app": "db2"})); err != nil {
		t.Fatal(err)
	}
	if id := identityOf(t, r, "acme", "db"); id != 3 {
		t.Errorf("db relabelled has identity %d, want 3 (1 and 2 released or in use)", id)
	}
	eventually(t, "identity keys after db's relabel", func() string {
		h := labelsHash(map[string]string{"app": "db2"})
		return cmp.Diff([]string{h + "=3", "id#3=" + h, "ref 3/db"}, identityKeys(t, r, k))
	})
	mustCreate(t, r, labelled(endpoint("acme", "web", "a", "h1"), map[string]string{"app": "web"}))
	if id := identityOf(t, r, "acme", "web"); id != 4 {
		t.Errorf("web created again has identity %d, want 4 (next fit)", id)
	}
}

// TestIdentitiesSurviveRestart: a controller started again on the same
// etcd gives the stored label sets their identities and new ones others;
// an identity whose last user was deleted by a replica that stopped
// before sweeping is released by another replica.
func TestIdentitiesSurviveRestart(t *testing.T) {
	emb := startEtcd(t)
	st1 := startStore(t, emb)
	r1 := startRegistry(t, st1) // never sweeps in the test
	base(t, r1)
	web, gone := map[string]string{"app": "web"}, map[string]string{"app": "gone"}
	mustCreate(t, r1, labelled(endpoint("acme", "w1", "a", "h1"), web), labelled(endpoint("acme", "g", "a", "h1"), gone))
	if _, err := r1.Delete(context.Background(), apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "g"}); err != nil {
		t.Fatal(err)
	}
	r1.Close()
	st1.Close()

	r2 := startRegistryGC(t, startStore(t, emb), 20*time.Millisecond)
	mustCreate(t, r2, labelled(endpoint("acme", "w2", "a", "h2"), web), labelled(endpoint("acme", "x", "a", "h2"), map[string]string{"app": "x"}))
	// web keeps 1; x gets a new one: 3, or 2 when r2's sweeps (every
	// 20 ms) released gone's before r2 first read the VPC's identities (a
	// replica avoids reusing what it saw released, not what it never saw).
	if w2 := identityOf(t, r2, "acme", "w2"); w2 != 1 {
		t.Errorf("w2 (app=web) has identity %d after the restart, want web's 1", w2)
	}
	if x := identityOf(t, r2, "acme", "x"); x != 2 && x != 3 {
		t.Errorf("x (a new label set) has identity %d after the restart, want a new one (2 if gone's was released first, else 3)", x)
	}
	eventually(t, "gone's identity released", func() string {
		for _, l := range identityKeys(t, r2, vpcKey{"acme", "main"}) {
			if strings.HasPrefix(l, labelsHash(gone)) {
				return "+" + l
			}
		}
		return ""
	})
}

// TestIdentityReleaseRacesReuse: a release and a create reusing the
// identity are decided by etcd: the release fails once the create holds a
// reference, and a create that planned with a released identity retries
// with a new one.
func TestIdentityReleaseRacesReuse(t *testing.T) {
	emb := startEtcd(t)
	r1, r2 := startRegistry(t, startStore(t, emb)), startRegistry(t, startStore(t, emb))
	base(t, r1)
	ctx := context.Background()
	web := map[string]string{"app": "web"}
	k, h := vpcKey{"acme", "main"}, labelsHash(web)
	waitFor := func(r *Registry, rev int64) {
		if err := r.st.WaitForRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}

	// Released while a reference exists: refused.
	out, err := r2.Create(ctx, labelled(endpoint("acme", "w1", "a", "h1"), web))
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.releaseIdentity(ctx, idRef{k, 1}, h); err != nil {
		t.Fatal(err)
	}
	if id := identityOf(t, r2, "acme", "w1"); id != 1 || len(identityKeys(t, r1, k)) != 3 {
		t.Fatalf("identity %d, keys %v: want 1, kept", id, identityKeys(t, r1, k))
	}

	// r2 still maps web to 1 when r1 releases it: r2's next create of
	// web loses its compare and takes a new identity.
	del, err := r2.Delete(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "w1"})
	if err != nil || del == nil {
		t.Fatal(err)
	}
	waitFor(r1, revOf(out)+1)
	if err := r1.releaseIdentity(ctx, idRef{k, 1}, h); err != nil {
		t.Fatal(err)
	}
	if keys := identityKeys(t, r1, k); len(keys) != 0 {
		t.Fatalf("keys after the release: %v, want none", keys)
	}
	if _, err := r2.Create(ctx, labelled(endpoint("acme", "w2", "a", "h1"), web)); err != nil {
		t.Fatal(err)
	}
	want := []string{h + "=2", "id#2=" + h, "ref 2/w2"}
	if diff := cmp.Diff(want, identityKeys(t, r1, k)); diff != "" || identityOf(t, r2, "acme", "w2") != 2 {
		t.Errorf("w2 has identity %d, keys (-want +got):\n%s", identityOf(t, r2, "acme", "w2"), diff)
	}
}

// TestIdentityReplicas: two replicas create, relabel and delete endpoints
// of a few label sets concurrently while both sweep: a label set never
// has two identities nor an identity two label sets, every endpoint's
// identity is recorded with its reference, and once the endpoints are
// gone so are the identities.
func TestIdentityReplicas(t *testing.T) {
	emb := startEtcd(t)
	rs := []*Registry{
		startRegistryGC(t, startStore(t, emb), 5*time.Millisecond),
		startRegistryGC(t, startStore(t, emb), 7*time.Millisecond),
	}
	base(t, rs[0])
	ctx := context.Background()
	// The second replica validates against its cache: let it see the base.
	if err := rs[1].st.WaitForRevision(ctx, rs[0].st.Revision()); err != nil {
		t.Fatal(err)
	}
	sets := []map[string]string{{"app": "a"}, {"app": "b"}, {"app": "c"}, {"app": "a", "v": "2"}}
	const workers, rounds = 6, 15
	var g errgroup.Group
	for w := range workers {
		r := rs[w%2]
		g.Go(func() error {
			for i := range rounds {
				name := fmt.Sprint("e", w, "-", i)
				if _, err := r.Create(ctx, labelled(endpoint("acme", name, "a", "h1"), sets[(w+i)%len(sets)])); err != nil {
					return fmt.Errorf("create %s: %w", name, err)
				}
				if i%3 == 1 {
					if _, err := r.Update(ctx, labelled(endpoint("acme", name, "a", "h1"), sets[(w+i+1)%len(sets)])); err != nil {
						return fmt.Errorf("relabel %s: %w", name, err)
					}
				}
				if i%2 == 0 {
					if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name}); err != nil {
						return fmt.Errorf("delete %s: %w", name, err)
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if err := r.st.WaitForRevision(ctx, rs[1].st.Revision()); err != nil {
		t.Fatal(err)
	}
	k := vpcKey{"acme", "main"}
	check := func() string {
		keys := identityKeys(t, r, k)
		byHash, byID, refs := map[string]string{}, map[string]string{}, map[string]bool{}
		for _, l := range keys {
			switch {
			case strings.HasPrefix(l, "ref "):
				refs[strings.TrimPrefix(l, "ref ")] = true
			case strings.HasPrefix(l, "id#"):
				id, hash, _ := strings.Cut(strings.TrimPrefix(l, "id#"), "=")
				byID[id] = hash
			default:
				hash, id, _ := strings.Cut(l, "=")
				byHash[hash] = id
			}
		}
		var problems []string
		for hash, id := range byHash {
			if byID[id] != hash {
				problems = append(problems, fmt.Sprintf("label set %s has identity %s, which is %q's", hash, id, byID[id]))
			}
		}
		eps := r.st.EndpointsBySubnet("acme", "a")
		for _, ep := range eps {
			id := strconv.FormatUint(uint64(ep.Status.Identity), 10)
			if byHash[labelsHash(ep.Metadata.Labels)] != id || !refs[id+"/"+ep.Metadata.Name] {
				problems = append(problems, fmt.Sprintf("endpoint %s %v has identity %s: not recorded", ep.Metadata.Name, ep.Metadata.Labels, id))
			}
		}
		if len(refs) != len(eps) {
			problems = append(problems, fmt.Sprintf("%d references for %d endpoints", len(refs), len(eps)))
		}
		return strings.Join(problems, "\n")
	}
	if p := check(); p != "" {
		t.Fatal(p)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ep := range r.st.EndpointsBySubnet("acme", "a") {
		wg.Go(func() {
			if _, err := r.Delete(ctx, apiv1.RefOf(ep)); err != nil {
				mu.Lock()
				t.Error(err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	eventually(t, "identity keys once every endpoint is gone", func() string { return cmp.Diff([]string(nil), identityKeys(t, r, k)) })
}

// TestIdentityCeiling: a VPC's 65,536th distinct label set is refused with
// 422; a label set that has an identity is still accepted; once an
// identity loses its last reference a new label set gets it at once.
func TestIdentityCeiling(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 196,605 keys")
	}
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	k := vpcKey{"acme", "main"}
	labels := func(i int) map[string]string { return map[string]string{"n": strconv.Itoa(i)} }
	// MaxIdentity label sets, each with a reference, written as the
	// registry writes them.
	var g errgroup.Group
	g.SetLimit(32)
	for start := 1; start <= MaxIdentity; start += 40 {
		g.Go(func() error {
			var ops []clientv3.Op
			for id := start; id < start+40 && id <= MaxIdentity; id++ {
				h := labelsHash(labels(id))
				ops = append(ops,
					clientv3.OpPut(r.st.Key(identityKey(k, h)), strconv.Itoa(id)),
					clientv3.OpPut(r.st.Key(identityIDKey(k, uint32(id))), h),
					clientv3.OpPut(r.st.Key(identityRefKey(k, uint32(id), "pre"+strconv.Itoa(id))), ""))
			}
			_, err := r.st.Client().Txn(ctx).Then(ops...).Commit()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	_, err := r.Create(ctx, labelled(endpoint("acme", "new", "a", "h1"), map[string]string{"n": "new"}))
	se, ok := err.(*apiv1.StatusError)
	if !ok || se.Code != 422 || len(se.Causes) != 1 || se.Causes[0].Field != "metadata.labels" ||
		!strings.Contains(se.Causes[0].Message, "65535 distinct label sets") {
		t.Fatalf("65,536th label set: %v, want 422 on metadata.labels naming the limit", err)
	}
	mustCreate(t, r, labelled(endpoint("acme", "old", "a", "h1"), labels(7)))
	if id := identityOf(t, r, "acme", "old"); id != 7 {
		t.Errorf("endpoint with an allocated label set has identity %d, want 7", id)
	}
	if _, err := r.st.Client().Delete(ctx, r.st.Key(identityRefKey(k, 9, "pre9"))); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, r, labelled(endpoint("acme", "new", "a", "h1"), map[string]string{"n": "new"}))
	if id := identityOf(t, r, "acme", "new"); id != 9 {
		t.Errorf("new label set has identity %d, want 9 (released for it)", id)
	}
}
