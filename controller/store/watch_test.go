package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

func TestWatchReplaysFromRevision(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ringSize int
	}{
		{"from the ring", 0},
		{"from etcd", 2}, // the ring has lost the revisions asked for
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t, envOpts{cfg: func(c *Config) { c.RingSize = tc.ringSize }})
			s := env.s
			epRef := func(name string) apiv1.Ref { return apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name} }
			put(t, s, endpoint("acme", "e1", "h1", "a", nil))
			from := put(t, s, endpoint("acme", "e2", "h1", "a", nil))
			r3 := put(t, s, endpoint("acme", "e3", "h1", "a", nil))
			put(t, s, endpoint("other", "e1", "h1", "a", nil)) // other tenant
			put(t, s, host("h1", "192.0.2.1"))                 // other kind
			r4 := put(t, s, endpoint("acme", "e2", "h2", "a", nil))
			r5 := del(t, s, epRef("e3"))
			r6 := del(t, s, epRef("e1"))
			waitRev(t, s, r6)

			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			want := []ev{
				{EventAdded, "endpoint/acme/e3", r3},
				{EventModified, "endpoint/acme/e2", r4},
				{EventDeleted, "endpoint/acme/e3", r5},
				{EventDeleted, "endpoint/acme/e1", r6},
			}
			// The tenant's endpoints, and everything of the tenant (which
			// leaves out the cluster-scoped host).
			var chs []<-chan Event
			for _, kind := range []string{"ep", ""} {
				ch, err := s.Watch(ctx, kind, "acme", from)
				if err != nil {
					t.Fatal(err)
				}
				chs = append(chs, ch)
			}
			for i, ch := range chs {
				if diff := cmp.Diff(want, recv(t, ch, len(want))); diff != "" {
					t.Errorf("watch %d replay (-want +got):\n%s", i, diff)
				}
			}
			// Live events follow with nothing in between.
			r7 := put(t, s, endpoint("acme", "e7", "h1", "a", nil))
			for i, ch := range chs {
				if diff := cmp.Diff([]ev{{EventAdded, "endpoint/acme/e7", r7}}, recv(t, ch, 1)); diff != "" {
					t.Errorf("watch %d live (-want +got):\n%s", i, diff)
				}
			}
			cancel()
			for _, ch := range chs {
				for range ch { // closes when ctx ends
				}
			}
		})
	}
}

func TestWatchEventCarriesOldObject(t *testing.T) {
	env := newEnv(t, envOpts{})
	s := env.s
	ch, err := s.Watch(testCtx(t), "Endpoint", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, endpoint("acme", "e1", "h1", "a", nil))
	put(t, s, endpoint("acme", "e1", "h2", "a", nil))
	var hosts []string
	for range 2 {
		e := <-ch
		hosts = append(hosts, e.Object.(*apiv1.Endpoint).Spec.Host)
		if e.Old != nil {
			hosts = append(hosts, "old:"+e.Old.(*apiv1.Endpoint).Spec.Host)
		}
	}
	if diff := cmp.Diff([]string{"h1", "h2", "old:h1"}, hosts); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestWatchCompactedRevision(t *testing.T) {
	env := newEnv(t, envOpts{cfg: func(c *Config) { c.RingSize = 2 }})
	s := env.s
	first := put(t, s, host("h0", "192.0.2.1"))
	var last int64
	for i := range 5 {
		last = put(t, s, host(fmt.Sprintf("h%d", i+1), "192.0.2.1"))
	}
	waitRev(t, s, last)
	if _, err := env.cli.Compact(testCtx(t), last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	_, err := s.Watch(testCtx(t), "Host", "", first)
	if !errors.Is(err, ErrCompacted) {
		t.Fatalf("Watch from a compacted revision: %v, want ErrCompacted", err)
	}
	// The ring still serves what it holds, compaction or not.
	ch, err := s.Watch(testCtx(t), "Host", "", last-1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]ev{{EventAdded, "host/h5", last}}, recv(t, ch, 1)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestWatchBreak breaks the cache's etcd watch and changes objects while
// it is down; with compaction the cache must relist, without it resume.
// Either way subscribers see every change once and the cache equals etcd.
// Hosts are cached as objects, endpoints as records: both are tried.
func TestWatchBreak(t *testing.T) {
	type kindCase struct {
		plural string
		obj    func(name, ip string) apiv1.Object
		ref    func(name string) apiv1.Ref
	}
	for _, kc := range []kindCase{
		{"hosts", func(n, ip string) apiv1.Object { return host(n, ip) },
			func(n string) apiv1.Ref { return apiv1.Ref{Kind: apiv1.KindHost, Name: n} }},
		{"endpoints", func(n, ip string) apiv1.Object {
			ep := endpoint("acme", n, "h"+ip[len("192.0.2."):], "sn", map[string]string{"ip": ip})
			ep.Status.IP = ip
			return ep
		}, func(n string) apiv1.Ref { return apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: n} }},
	} {
		for _, tc := range []struct {
			name    string
			compact bool
		}{
			{"resume", false},
			{"compacted, relist", true},
		} {
			t.Run(kc.plural+"/"+tc.name, func(t *testing.T) { testWatchBreak(t, kc.plural, kc.obj, kc.ref, tc.compact) })
		}
	}
}

func testWatchBreak(t *testing.T, plural string, obj func(name, ip string) apiv1.Object, ref func(string) apiv1.Ref, compact bool) {
	var (
		watches int32
		held    = make(chan int64, 1)
		release = make(chan struct{})
		once    sync.Once
	)
	hooks := testHooks{beforeWatch: func(rev int64) {
		if atomic.AddInt32(&watches, 1) == 2 { // the rewatch after breakWatch
			held <- rev
			<-release
		}
	}}
	env := newEnv(t, envOpts{hooks: hooks})
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before Close, also on failure
	s, cli := env.s, env.cli
	for _, n := range []string{"x1", "x2", "x3", "x6"} {
		put(t, s, obj(n, "192.0.2.1"))
	}
	waitRev(t, s, put(t, s, obj("x0", "192.0.2.1")))
	ch, err := s.Watch(testCtx(t), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}

	waitFor(t, "first watch", func() bool { return atomic.LoadInt32(&watches) == 1 })
	s.breakWatch()
	from := <-held
	name := func(n string) string { return ref(n).String() }
	history := []ev{
		{EventModified, name("x1"), put(t, s, obj("x1", "192.0.2.11"))},
		{EventDeleted, name("x2"), del(t, s, ref("x2"))},
		{EventAdded, name("x4"), put(t, s, obj("x4", "192.0.2.4"))},
		{EventAdded, name("x5"), put(t, s, obj("x5", "192.0.2.5"))},
		{EventDeleted, name("x5"), del(t, s, ref("x5"))},
		{EventModified, name("x3"), put(t, s, obj("x3", "192.0.2.31"))},
		{EventModified, name("x3"), put(t, s, obj("x3", "192.0.2.32"))},
		{EventDeleted, name("x6"), del(t, s, ref("x6"))},
		{EventAdded, name("x6"), put(t, s, obj("x6", "192.0.2.6"))},
	}
	last := history[len(history)-1].Rev
	want, wantRelists := history, int64(0)
	if compact {
		if _, err := cli.Compact(testCtx(t), last, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		// The difference, in key order, at the relist revision.
		want, wantRelists = []ev{
			{EventModified, name("x1"), last},
			{EventModified, name("x3"), last},
			{EventAdded, name("x4"), last},
			{EventDeleted, name("x6"), last}, // deleted and created again: a new object
			{EventAdded, name("x6"), last},
			{EventDeleted, name("x2"), last},
		}, 1
	}
	if s.Revision() != from {
		t.Fatalf("cache moved to %d while its watch was down at %d", s.Revision(), from)
	}
	once.Do(func() { close(release) })

	if diff := cmp.Diff(want, recv(t, ch, len(want))); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	waitRev(t, s, last)

	// The cache equals etcd.
	resp, err := cli.Get(testCtx(t), s.Key("v1/"+plural+"/"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var inEtcd, inCache []string
	for _, kv := range resp.Kvs {
		inEtcd = append(inEtcd, fmt.Sprintf("%s@%d", kv.Key, kv.ModRevision))
	}
	for _, o := range s.List(plural, "") {
		inCache = append(inCache, fmt.Sprintf("%s@%s", s.ObjectKey(apiv1.RefOf(o)), o.GetObjectMeta().ResourceVersion))
		stored, err := decodeObject(s.kinds.mustLookup(plural), o.GetObjectMeta().Tenant, o.GetObjectMeta().Name,
			[]byte(mustEncode(o)), mustRev(t, o))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(stored, o); diff != "" {
			t.Errorf("cached %s (-stored +cached):\n%s", apiv1.RefOf(o), diff)
		}
	}
	if diff := cmp.Diff(inEtcd, inCache); diff != "" {
		t.Errorf("cache vs etcd (-etcd +cache):\n%s", diff)
	}

	// The watch runs again: the next change arrives once, normally.
	r := put(t, s, obj("x7", "192.0.2.7"))
	if diff := cmp.Diff([]ev{{EventAdded, name("x7"), r}}, recv(t, ch, 1)); diff != "" {
		t.Errorf("afterwards (-want +got):\n%s", diff)
	}
	if got := s.Stats().Relists; got != wantRelists {
		t.Errorf("relists %d, want %d", got, wantRelists)
	}

}

// mustRev returns the resourceVersion of o.
func mustRev(t *testing.T, o apiv1.Object) int64 {
	t.Helper()
	rev, err := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", apiv1.RefOf(o), err)
	}
	return rev
}

func TestSlowSubscriberIsDropped(t *testing.T) {
	env := newEnv(t, envOpts{cfg: func(c *Config) { c.SubscriberBacklog = 4 }})
	s := env.s
	slow, err := s.Watch(testCtx(t), "Host", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	var revs []int64
	for i := range n {
		revs = append(revs, put(t, s, host(fmt.Sprintf("h%03d", i), "192.0.2.1")))
	}
	// The cache kept going although nobody read.
	waitRev(t, s, revs[n-1])
	if got := len(s.List("Host", "")); got != n {
		t.Fatalf("cache holds %d hosts, want %d", got, n)
	}
	var got []int64
	for e := range slow { // must end: the channel was closed
		got = append(got, e.Revision)
	}
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("slow subscriber got %d events before its channel closed", len(got))
	}
	if diff := cmp.Diff(revs[:len(got)], got); diff != "" {
		t.Errorf("events before close are not the first ones (-want +got):\n%s", diff)
	}
	if d := s.Stats().DroppedWatchers; d != 1 {
		t.Errorf("dropped watchers %d, want 1", d)
	}
	// Watching again from the last revision received loses nothing.
	again, err := s.Watch(testCtx(t), "Host", "", got[len(got)-1])
	if err != nil {
		t.Fatal(err)
	}
	rest := recv(t, again, n-len(got))
	if rest[0].Rev != revs[len(got)] || rest[len(rest)-1].Rev != revs[n-1] {
		t.Errorf("re-watch delivered %v .. %v, want %d .. %d", rest[0], rest[len(rest)-1], revs[len(got)], revs[n-1])
	}
}

func TestCloseEndsEverything(t *testing.T) {
	env := newEnv(t, envOpts{})
	s := env.s
	ch, err := s.Watch(context.Background(), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for range ch {
	}
	if _, err := s.Commit(testCtx(t), Txn{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v", err)
	}
	if _, err := s.Watch(testCtx(t), "", "", 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v", err)
	}
	if err := s.WaitForRevision(testCtx(t), s.Revision()+1); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitForRevision after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
func TestEventFilter(t *testing.T) {
	ep := func(app string) apiv1.Object {
		return &apiv1.Endpoint{TypeMeta: apiv1.TypeMeta{Kind: apiv1.KindEndpoint},
			Metadata: apiv1.ObjectMeta{Name: "e", Tenant: "t", Labels: map[string]string{"app": app}}}
	}
	web, db := ep("web"), ep("db")
	sel, _ := apiv1.ParseSelector("app=web")
	match := func(o apiv1.Object) bool { return sel.Matches(o.GetObjectMeta().Labels) }
	for _, tc := range []struct {
		name     string
		in       Event
		wantOK   bool
		wantType string
		wantObj  apiv1.Object
		wantOld  apiv1.Object
	}{
		{"added, matching", Event{Type: EventAdded, Object: web}, true, EventAdded, web, nil},
		{"added, not matching", Event{Type: EventAdded, Object: db}, false, "", nil, nil},
		{"modified, matching before and after", Event{Type: EventModified, Object: web, Old: web}, true, EventModified, web, web},
		{"relabelled out of the selector", Event{Type: EventModified, Object: db, Old: web}, true, EventDeleted, web, web},
		{"relabelled into the selector", Event{Type: EventModified, Object: web, Old: db}, true, EventAdded, web, nil},
		{"modified, matching neither", Event{Type: EventModified, Object: db, Old: db}, false, "", nil, nil},
		{"modified, old unknown", Event{Type: EventModified, Object: web}, true, EventAdded, web, nil},
		{"deleted, matching", Event{Type: EventDeleted, Object: web, Old: web}, true, EventDeleted, web, web},
		{"deleted, not matching", Event{Type: EventDeleted, Object: db, Old: db}, false, "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Revision = 7
			got, ok := tc.in.Filter(match)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if got.Type != tc.wantType || got.Object != tc.wantObj || got.Old != tc.wantOld || got.Revision != 7 {
				t.Errorf("got %s %p old %p rev %d, want %s %p old %p rev 7", got.Type, got.Object, got.Old, got.Revision, tc.wantType, tc.wantObj, tc.wantOld)
			}
		})
	}
}
