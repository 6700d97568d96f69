package registry

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/alloc"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/scaleobjects"
)

// usedAddrs lists the addresses that p marks used.
func usedAddrs(p *alloc.Pool) []string {
	var out []string
	for a := p.Prefix().Addr(); p.Prefix().Contains(a); a = a.Next() {
		if p.InUse(a) {
			out = append(out, a.String())
		}
	}
	return out
}

// liveAddrs lists the addresses that the endpoints of a subnet hold in st's cache.
func liveAddrs(st *store.Store, tenant, subnet string) []string {
	var out []string
	for _, ep := range st.EndpointsBySubnet(tenant, subnet) {
		out = append(out, ep.Status.IP)
	}
	slices.SortFunc(out, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	return out
}

// eventually calls diff until it returns "" or 20 seconds pass.
func eventually(t *testing.T, what string, diff func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		d := diff()
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (-want +got):\n%s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitObserved waits until r's follow goroutine has observed the endpoint
// events up to rev.
func waitObserved(t *testing.T, r *Registry, rev int64) {
	t.Helper()
	eventually(t, "endpoint events observed", func() string {
		if got := r.pools.seenRevision(); got < rev {
			return fmt.Sprintf("-%d\n+%d", rev, got)
		}
		return ""
	})
}

// revOf returns the revision a write returned (0 if none).
func revOf(o apiv1.Object) int64 {
	rev, _ := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	return rev
}

// TestIdleReplicaBuildsNoPools: replicas that follow thousands of endpoint
// events (creates, updates, deletes in 20 subnets) hold no address pool;
// one is built for each subnet a replica writes in, and only then.
func TestIdleReplicaBuildsNoPools(t *testing.T) {
	ctx := context.Background()
	emb := startEtcd(t)
	writer := startRegistry(t, startStore(t, emb))

	tests := []struct {
		name      string
		write     func(r *Registry) error
		wantPools int
	}{
		{"no writes", func(*Registry) error { return nil }, 0},
		{"reads and status writes", func(r *Registry) error {
			if _, err := r.Get(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "t0", Name: "e1"}); err != nil {
				return err
			}
			_, err := r.PatchStatus(ctx, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "t0", Name: "e1"}, func(o apiv1.Object) bool {
				o.(*apiv1.Endpoint).Status.Phase = apiv1.PhaseReady
				return true
			})
			return err
		}, 0},
		{"create in an unknown subnet", func(r *Registry) error {
			if _, err := r.Create(ctx, endpoint("t0", "x", "nope", "h1")); apiv1.ReasonOf(err) != apiv1.ReasonInvalid {
				return fmt.Errorf("create in unknown subnet: %v, want Invalid", err)
			}
			return nil
		}, 0},
		{"static address in one subnet", func(r *Registry) error {
			e := endpoint("t0", "static", "s1", "h1")
			e.Spec.IP = "10.1.200.1"
			_, err := r.Create(ctx, e)
			return err
		}, 1},
		{"addresses in two subnets", func(r *Registry) error {
			for i, sn := range []string{"s2", "s3", "s2"} {
				if _, err := r.Create(ctx, endpoint("t0", fmt.Sprint("dyn", i), sn, "h1")); err != nil {
					return err
				}
			}
			return nil
		}, 2},
	}
	// Every replica starts before the load, so that it sees it as events.
	replicas := make([]*Registry, len(tests))
	for i := range replicas {
		replicas[i] = startRegistry(t, startStore(t, emb))
	}
	objs := scaleobjects.Objects(2000, false)
	loaded := memLoad(t, writer.st, mustClient(t, emb), objs)
	if err := writer.st.WaitForRevision(ctx, loaded); err != nil {
		t.Fatal(err)
	}
	// Deletes through the registry, then a create, whose revision is the
	// last endpoint event.
	for i := range 20 {
		ref := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "t0", Name: fmt.Sprint("e", 100+i)}
		if _, err := writer.Delete(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	last, err := writer.Create(ctx, endpoint("t0", "last", "s0", "h0"))
	if err != nil {
		t.Fatal(err)
	}
	lastRev := revOf(last)

	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := replicas[i]
			waitObserved(t, r, lastRev)
			if n := r.pools.len(); n != 0 {
				t.Fatalf("%d pools built before any write, want 0", n)
			}
			if err := tc.write(r); err != nil {
				t.Fatal(err)
			}
			if n := r.pools.len(); n != tc.wantPools {
				t.Errorf("%d pools after the writes, want %d", n, tc.wantPools)
			}
		})
	}
	if n := writer.pools.len(); n != 1 {
		t.Errorf("the writer built %d pools, want 1 (it allocated in s0 only)", n)
	}
}

func mustClient(t *testing.T, emb *store.Embedded) *clientv3.Client {
	t.Helper()
	cli, err := emb.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestPoolSkipsEventsItHolds: a pool built at revision S reflects every
// endpoint as of S; endpoint events at S or before (a replayed watch)
// must not change it, events after S must. The dangerous replay: endpoint
// A is deleted at revision r, endpoint B takes A's address at r+1; a
// replayed delete of A would free the address that B holds.
func TestPoolSkipsEventsItHolds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	emb := startEtcd(t)
	writer := startRegistry(t, startStore(t, emb))
	st := startStore(t, emb)
	r := startRegistry(t, st)
	base(t, writer)

	evs, err := st.Watch(ctx, apiv1.KindEndpoint, "acme", writer.Revision())
	if err != nil {
		t.Fatal(err)
	}
	x := netip.MustParseAddr("10.0.1.77")
	a := endpoint("acme", "a", "a", "h1")
	a.Spec.IP = x.String()
	b := endpoint("acme", "b", "a", "h2")
	b.Spec.IP = x.String()
	mustCreate(t, writer, a)
	if _, err := writer.Delete(ctx, apiv1.RefOf(a)); err != nil {
		t.Fatal(err)
	}
	out, err := writer.Create(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	rb := revOf(out)
	var history []store.Event // A added, A deleted, B added
	for len(history) < 3 {
		history = append(history, <-evs)
	}
	if history[1].Type != store.EventDeleted || history[2].Revision != rb {
		t.Fatalf("unexpected history %+v", history)
	}
	if err := st.WaitForRevision(ctx, rb); err != nil {
		t.Fatal(err)
	}

	ep := func(name, ip string) *apiv1.Endpoint {
		e := endpoint("acme", name, "a", "h1")
		e.Status.IP = ip
		return e
	}
	y := netip.MustParseAddr("10.0.1.88")
	type step struct {
		ev      store.Event
		rel     int64 // revision relative to the pool's (history: 0 = as recorded)
		wantX   bool  // x in use afterwards
		wantY   bool  // y in use afterwards
		comment string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"replayed history", []step{
			{ev: history[0], wantX: true},
			{ev: history[1], wantX: true, comment: "the replayed delete of A must not free B's address"},
			{ev: history[2], wantX: true},
			{ev: history[1], wantX: true},
		}},
		{"relist batch: create before delete at one newer revision", []step{
			{ev: store.Event{Type: store.EventAdded, Object: ep("c", y.String())}, rel: 1, wantX: true, wantY: true},
			{ev: store.Event{Type: store.EventDeleted, Object: ep("d", y.String())}, rel: 1, wantX: true, wantY: true, comment: "C holds y at the same revision"},
			{ev: store.Event{Type: store.EventDeleted, Object: ep("c", y.String())}, rel: 2, wantX: true, wantY: false},
		}},
		{"newer events change the pool", []step{
			{ev: store.Event{Type: store.EventAdded, Object: ep("c", y.String())}, rel: 1, wantX: true, wantY: true},
			{ev: store.Event{Type: store.EventDeleted, Object: history[2].Object}, rel: 2, wantX: false, wantY: true},
			{ev: store.Event{Type: store.EventModified, Object: ep("c", x.String()), Old: ep("c", y.String())}, rel: 3, wantX: true, wantY: false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.resetPools()
			p, err := r.pool("acme", "a")
			if err != nil {
				t.Fatal(err)
			}
			poolRev := r.pools.m[subnetKey{"acme", "a"}].rev
			if poolRev < rb {
				t.Fatalf("pool built at revision %d, before B's create at %d", poolRev, rb)
			}
			if !p.InUse(x) {
				t.Fatalf("%s not in use in a pool built after B took it", x)
			}
			for i, s := range tc.steps {
				ev := s.ev
				if s.rel != 0 {
					ev.Revision = poolRev + s.rel
				}
				r.observe(ev)
				if gotX, gotY := p.InUse(x), p.InUse(y); gotX != s.wantX || gotY != s.wantY {
					t.Fatalf("after step %d (%s %s at %d; %s): in use %s=%v %s=%v, want %v %v",
						i, ev.Type, ev.Object.GetObjectMeta().Name, ev.Revision, s.comment, x, gotX, y, gotY, s.wantX, s.wantY)
				}
			}
			if tc.name != "replayed history" {
				return
			}
			// No allocation returns B's address, down to the last free one.
			free := p.Free()
			for range free {
				got, err := p.Allocate("h1")
				if err != nil {
					t.Fatal(err)
				}
				if got == x {
					t.Fatalf("Allocate returned %s, which B holds", x)
				}
			}
			if _, err := p.Allocate("h1"); err == nil {
				t.Errorf("allocated more than the %d free addresses", free)
			}
		})
	}
}

// TestReplicasAllocateConcurrently: two replicas on one etcd create and
// delete endpoints of one subnet for the same hosts at the same time, each
// building its pool lazily while the other writes. No address is held
// twice, and afterwards both replicas' pools hold exactly the addresses of
// the stored endpoints.
func TestReplicasAllocateConcurrently(t *testing.T) {
	ctx := context.Background()
	emb := startEtcd(t)
	reps := []*Registry{startRegistry(t, startStore(t, emb)), startRegistry(t, startStore(t, emb))}
	base(t, reps[0])
	mustCreate(t, reps[0], subnet("acme", "big", "main", "10.0.64.0/22"), host("h3", "192.0.2.3"), host("h4", "192.0.2.4"))
	if err := reps[1].st.WaitForRevision(ctx, reps[0].Revision()); err != nil {
		t.Fatal(err)
	}
	const workers, per = 6, 30
	var (
		mu   sync.Mutex
		live = map[string]string{} // ip -> endpoint
	)
	var g errgroup.Group
	for ri, r := range reps {
		other := reps[1-ri]
		for w := range workers {
			g.Go(func() error {
				for i := range per {
					name := fmt.Sprintf("r%d-w%d-%d", ri, w, i)
					out, err := r.Create(ctx, endpoint("acme", name, "big", fmt.Sprintf("h%d", 1+(w+i)%4)))
					if err != nil {
						return fmt.Errorf("create %s: %w", name, err)
					}
					ip := out.(*apiv1.Endpoint).Status.IP
					mu.Lock()
					if holder, dup := live[ip]; dup {
						mu.Unlock()
						return fmt.Errorf("%s got %s, which %s holds", name, ip, holder)
					}
					live[ip] = name
					mu.Unlock()
					if i%3 != 0 {
						continue
					}
					// Every third is deleted, through the other replica.
					if err := other.st.WaitForRevision(ctx, revOf(out)); err != nil {
						return err
					}
					mu.Lock()
					delete(live, ip) // before the delete commits: no one else may take it earlier
					mu.Unlock()
					if _, err := other.Delete(ctx, apiv1.RefOf(out)); err != nil {
						return fmt.Errorf("delete %s: %w", name, err)
					}
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// A write after all of them: both caches are complete at its revision.
	marker, err := reps[0].Create(ctx, tenant("marker"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if err := r.st.WaitForRevision(ctx, revOf(marker)); err != nil {
			t.Fatal(err)
		}
	}
	want := liveAddrs(reps[0].st, "acme", "big")
	if len(want) != len(live) {
		t.Errorf("%d endpoints stored, want %d", len(want), len(live))
	}
	for ri, r := range reps {
		p, ok := r.pools.get("acme", "big")
		if !ok {
			t.Fatalf("replica %d built no pool", ri)
		}
		eventually(t, fmt.Sprintf("replica %d: addresses in use", ri), func() string {
			return cmp.Diff(liveAddrs(r.st, "acme", "big"), usedAddrs(p))
		})
	}
}

// TestLazyPoolHoldsExistingAddresses: a pool built after endpoints exist
// (or while they are being created and deleted) holds each of their
// addresses, and never hands one out.
func TestLazyPoolHoldsExistingAddresses(t *testing.T) {
	const n = 160
	tests := []struct {
		name string
		// when: "before" the reader starts, "during" the writes, "after" them.
		when string
	}{
		{"reader started after the writes", "after"},
		{"reader following the writes builds after them", "following"},
		{"reader builds during the writes", "during"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			emb := startEtcd(t)
			writer := startRegistry(t, startStore(t, emb))
			base(t, writer)
			mustCreate(t, writer, subnet("acme", "b", "main", "10.0.2.0/23"))
			var reader *Registry
			if tc.when != "after" {
				reader = startRegistry(t, startStore(t, emb))
			}
			var g errgroup.Group
			built := make(chan error, 1)
			var lastRev int64
			var mu sync.Mutex
			for w := range 8 {
				g.Go(func() error {
					for i := range n / 8 {
						out, err := writer.Create(ctx, endpoint("acme", fmt.Sprintf("e%d-%d", w, i), "b", fmt.Sprintf("h%d", 1+i%2)))
						if err != nil {
							return err
						}
						mu.Lock()
						lastRev = max(lastRev, revOf(out))
						mu.Unlock()
						if w == 0 && i == n/16 && tc.when == "during" {
							_, err := reader.pool("acme", "b")
							built <- err
						}
						if i%4 == 1 {
							if _, err := writer.Delete(ctx, apiv1.RefOf(out)); err != nil {
								return err
							}
						}
					}
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			// The last write: its event is the last endpoint event.
			out, err := writer.Create(ctx, endpoint("acme", "last", "b", "h1"))
			if err != nil {
				t.Fatal(err)
			}
			lastRev = max(lastRev, revOf(out))
			if tc.when == "after" {
				reader = startRegistry(t, startStore(t, emb))
			}
			if err := reader.st.WaitForRevision(ctx, lastRev); err != nil {
				t.Fatal(err)
			}
			if tc.when == "during" {
				if err := <-built; err != nil {
					t.Fatal(err)
				}
				waitObserved(t, reader, lastRev)
			}
			p, err := reader.pool("acme", "b")
			if err != nil {
				t.Fatal(err)
			}
			want := liveAddrs(reader.st, "acme", "b")
			if len(want) != n-n/4+1 {
				t.Fatalf("%d endpoints stored, want %d", len(want), n-n/4+1)
			}
			if diff := cmp.Diff(want, usedAddrs(p)); diff != "" {
				t.Fatalf("addresses in use (-stored +pool):\n%s", diff)
			}
			held := map[netip.Addr]bool{}
			for _, a := range want {
				held[netip.MustParseAddr(a)] = true
			}
			free := p.Free()
			if wantFree := 509 - len(want); free != wantFree { // a /23 less network, broadcast, gateway
				t.Errorf("%d free addresses, want %d", free, wantFree)
			}
			for range free {
				a, err := p.Allocate("h2")
				if err != nil {
					t.Fatal(err)
				}
				if held[a] {
					t.Fatalf("Allocate returned %s, which an endpoint holds", a)
				}
			}
		})
	}
}

// TestPoolBuildInterleavesWithFollow: endpoint events that the cache
// applies while a pool is being built (after its snapshot was read) reach
// the pool through the follow goroutine, exactly once: the follow
// goroutine cannot pass them while the pool is unregistered.
func TestPoolBuildInterleavesWithFollow(t *testing.T) {
	ctx := context.Background()
	emb := startEtcd(t)
	writer := startRegistry(t, startStore(t, emb))
	reader := startRegistry(t, startStore(t, emb))
	base(t, writer)
	a, err := writer.Create(ctx, endpoint("acme", "a", "a", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := reader.st.WaitForRevision(ctx, revOf(a)); err != nil {
		t.Fatal(err)
	}
	var lastRev int64
	reader.hooks.poolSnapshot = func(rev int64) {
		reader.hooks.poolSnapshot = nil
		if _, err := writer.Delete(ctx, apiv1.RefOf(a)); err != nil {
			t.Error(err)
			return
		}
		b, err := writer.Create(ctx, endpoint("acme", "b", "a", "h2"))
		if err != nil {
			t.Error(err)
			return
		}
		lastRev = revOf(b)
		if err := reader.st.WaitForRevision(ctx, lastRev); err != nil {
			t.Error(err)
			return
		}
		// Give the follow goroutine the chance to pass the events (it must
		// not: it waits for the pool).
		deadline := time.Now().Add(300 * time.Millisecond)
		for reader.pools.seenRevision() < lastRev && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	p, err := reader.pool("acme", "a")
	if err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	waitObserved(t, reader, lastRev)
	if diff := cmp.Diff(liveAddrs(reader.st, "acme", "a"), usedAddrs(p)); diff != "" {
		t.Errorf("addresses in use (-stored +pool):\n%s", diff)
	}
}

// TestResetAfterCompactedGap: a replica that loses its watch (the store
// drops it as a slow subscriber) while endpoints and a Host are deleted and
// others created, and whose history to resume from is then compacted, may
// have missed deletes: it drops its pools, which are rebuilt, exact, on
// next use, and releases the deleted Host's ID while it knows the new one's.
func TestResetAfterCompactedGap(t *testing.T) {
	ctx := context.Background()
	emb := startEtcd(t)
	writer := startRegistry(t, startStore(t, emb))
	cli := mustClient(t, emb)
	st, err := store.New(store.Config{Client: cli, RingSize: 4, SubscriberBacklog: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reader := startRegistry(t, st)
	base(t, writer)
	createHost := func(name, ip string) uint32 {
		t.Helper()
		out, err := writer.Create(ctx, host(name, ip))
		if err != nil {
			t.Fatal(err)
		}
		return out.(*apiv1.Host).Status.HostID
	}
	gone := createHost("h8", "192.0.2.8")
	var eps []apiv1.Object
	for i := range 4 {
		out, err := writer.Create(ctx, endpoint("acme", fmt.Sprint("e", i), "a", "h1"))
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, out)
	}
	if err := st.WaitForRevision(ctx, revOf(eps[3])); err != nil {
		t.Fatal(err)
	}
	p, err := reader.pool("acme", "a")
	if err != nil {
		t.Fatal(err)
	}
	waitObserved(t, reader, revOf(eps[3]))
	if !reader.hostIDs.InUse(gone) {
		t.Fatalf("reader does not hold h8's host ID %d", gone)
	}

	// Stall the reader's follow goroutine while more than its backlog
	// happens (it is dropped), delete h8 and create h9 unseen, then compact
	// the history it would resume from.
	var added uint32
	func() {
		reader.pools.mu.Lock()
		defer reader.pools.mu.Unlock()
		for _, ep := range eps[:3] {
			if _, err := writer.Delete(ctx, apiv1.RefOf(ep)); err != nil {
				t.Fatal(err)
			}
		}
		var last apiv1.Object
		for i := range 8 {
			if last, err = writer.Create(ctx, endpoint("acme", fmt.Sprint("f", i), "a", "h2")); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.WaitForRevision(ctx, revOf(last)); err != nil {
			t.Fatal(err)
		}
		if _, err := writer.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h8"}); err != nil {
			t.Fatal(err)
		}
		added = createHost("h9", "192.0.2.9")
		for i := range 4 {
			if last, err = writer.Create(ctx, endpoint("acme", fmt.Sprint("g", i), "a", "h2")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cli.Compact(ctx, revOf(last)); err != nil {
			t.Fatal(err)
		}
		if err := st.WaitForRevision(ctx, revOf(last)); err != nil {
			t.Fatal(err)
		}
	}()
	if t.Failed() {
		t.FailNow()
	}

	eventually(t, "pools after the reset", func() string { return cmp.Diff(0, reader.pools.len()) })
	eventually(t, "host IDs (h8's, h9's) in use after the reset", func() string {
		return cmp.Diff([]bool{false, true}, []bool{reader.hostIDs.InUse(gone), reader.hostIDs.InUse(added)})
	})
	p2, err := reader.pool("acme", "a")
	if err != nil {
		t.Fatal(err)
	}
	if p2 == p {
		t.Fatal("the pool was not rebuilt")
	}
	if diff := cmp.Diff(liveAddrs(st, "acme", "a"), usedAddrs(p2)); diff != "" {
		t.Errorf("addresses in use (-stored +pool):\n%s", diff)
	}
}

// TestSubnetRecreatedGetsNewPool: deleting a subnet drops its pool; a
// subnet created again under the same name gets a pool of its own CIDR,
// even before the delete event reaches the replica that allocates.
func TestSubnetRecreatedGetsNewPool(t *testing.T) {
	ctx := context.Background()
	emb := startEtcd(t)
	writer := startRegistry(t, startStore(t, emb))
	reader := startRegistry(t, startStore(t, emb))
	base(t, writer)
	mustCreate(t, writer, subnet("acme", "b", "main", "10.0.2.0/24"))
	if err := reader.st.WaitForRevision(ctx, writer.Revision()); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.pool("acme", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Delete(ctx, apiv1.Ref{Kind: apiv1.KindSubnet, Tenant: "acme", Name: "b"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pools after the subnet delete", func() string { return cmp.Diff(0, reader.pools.len()) })

	if _, err := reader.pool("acme", "a"); err != nil {
		t.Fatal(err)
	}
	// Recreate a with another CIDR while the reader still holds a pool of
	// the old one (its Subnet follow goroutine is stalled).
	reader.pools.mu.Lock()
	_, err := writer.Delete(ctx, apiv1.Ref{Kind: apiv1.KindSubnet, Tenant: "acme", Name: "a"})
	if err == nil {
		_, err = writer.Create(ctx, subnet("acme", "a", "main", "10.0.3.0/24"))
	}
	if err == nil {
		err = reader.st.WaitForRevision(ctx, writer.Revision())
	}
	reader.pools.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	p, err := reader.pool("acme", "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Prefix(), netip.MustParsePrefix("10.0.3.0/24"); got != want {
		t.Errorf("pool of the recreated subnet is of %s, want %s", got, want)
	}
	out, err := reader.Create(ctx, endpoint("acme", "e", "a", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	if ip := out.(*apiv1.Endpoint).Status.IP; !netip.MustParsePrefix("10.0.3.0/24").Contains(netip.MustParseAddr(ip)) {
		t.Errorf("address %s outside the recreated subnet", ip)
	}
}
