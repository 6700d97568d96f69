package udp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/wire"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// fakeSource is an in-memory Source whose events the test emits.
type fakeSource struct {
	mu   sync.Mutex
	objs map[apiv1.Ref]apiv1.Object
	rev  int64
	subs []chan store.Event
}

func (f *fakeSource) ListSelector(kind, tenant string, _ func(map[string]string) bool) ([]apiv1.Object, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []apiv1.Object
	for r, o := range f.objs {
		if r.Kind == kind {
			out = append(out, o)
		}
	}
	return out, f.rev
}

func (f *fakeSource) Watch(ctx context.Context, kind, tenant string, fromRev int64) (<-chan store.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan store.Event, 100)
	f.subs = append(f.subs, ch)
	return ch, nil
}

func (f *fakeSource) Get(kind, tenant, name string) (apiv1.Object, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[apiv1.Ref{Kind: kind, Tenant: tenant, Name: name}]
	return o, ok
}

func (f *fakeSource) EndpointsByHost(host string) []*apiv1.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*apiv1.Endpoint
	for _, o := range f.objs {
		if ep, ok := o.(*apiv1.Endpoint); ok && ep.Spec.Host == host {
			out = append(out, ep)
		}
	}
	return out
}

// put stores o at the next revision and emits the event.
func (f *fakeSource) put(o apiv1.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.objs == nil {
		f.objs = map[apiv1.Ref]apiv1.Object{}
	}
	f.rev++
	o.GetObjectMeta().ResourceVersion = strconv.FormatInt(f.rev, 10)
	ref := apiv1.RefOf(o)
	typ := store.EventAdded
	if _, ok := f.objs[ref]; ok {
		typ = store.EventModified
	}
	f.objs[ref] = o
	for _, ch := range f.subs {
		ch <- store.Event{Type: typ, Object: o, Revision: f.rev}
	}
}

// closeWatches closes every watch channel, as the store does with a slow
// subscriber.
func (f *fakeSource) closeWatches() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		close(ch)
	}
	f.subs = nil
}

func startLocator(t *testing.T, src Source) *Locator {
	t.Helper()
	l, err := NewLocator(LocatorConfig{Store: src})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func fakeEndpoint(name, host, ip, mac string, vni uint32) *apiv1.Endpoint {
	ep := endpointObj(name, "a", host)
	ep.Status = apiv1.EndpointStatus{IP: ip, MAC: mac, Host: host, VNI: vni}
	return ep
}

// TestLookupOverUDP asks a batch over a real socket: found, not found,
// and the same address in another VNI.
func TestLookupOverUDP(t *testing.T) {
	r, st := newRegistry(t)
	create(t, r, &apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "acme"}},
		hostObj("h1", "192.0.2.1"), hostObj("h2", "192.0.2.2"),
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "main", Tenant: "acme"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "a", Tenant: "acme"}, Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24"}})
	web := create(t, r, endpointObj("web", "a", "h1"), endpointObj("client", "a", "h2"))[0].(*apiv1.Endpoint)
	if web.Status.Identity == 0 {
		t.Fatal("the registry gave web no identity")
	}
	loc := startLocator(t, st)
	srv := startServer(t, Config{Keys: newKeyring(2), Locator: loc, Sockets: 1})
	a := newAgent(t, 2, srv.LocalAddr())

	ip, vni := netip.MustParseAddr(web.Status.IP), web.Status.VNI
	rv, _ := strconv.ParseUint(web.Metadata.ResourceVersion, 10, 64)
	hw, _ := net.ParseMAC(web.Status.MAC)
	got := a.lookup(
		wire.LookupQuery{RequestID: 1, VNI: vni, IP: ip},
		wire.LookupQuery{RequestID: 2, VNI: vni, IP: netip.MustParseAddr("10.0.1.99")},
		wire.LookupQuery{RequestID: 3, VNI: vni + 1, IP: ip},
	)
	negEpoch := uint64(loc.Revision())
	// Host 2 has an endpoint in vni, none in vni+1: that query is refused.
	want := []wire.LookupAnswer{
		{RequestID: 1, VNI: vni, IP: ip, Found: true, Epoch: rv, TTL: 60,
			Location: wire.Location{HostIP: netip.MustParseAddr("192.0.2.1"), MAC: wire.MACAddr(hw), Identity: web.Status.Identity}},
		{RequestID: 2, VNI: vni, IP: netip.MustParseAddr("10.0.1.99"), Epoch: negEpoch, TTL: 5},
	}
	if diff := cmp.Diff(want, got, addrCmp); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
	if st := srv.Stats(); st.Found != 1 || st.NotFound != 1 || st.OutOfScope != 1 || st.Lookups != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// invalidation is what a test expects an agent to receive.
func invalidation(t *testing.T, a *agent) wire.Invalidate {
	t.Helper()
	_, m := a.recv()
	inv, ok := m.(*wire.Invalidate)
	if !ok {
		t.Fatalf("host %d: got %T, want an Invalidate", a.id, m)
	}
	return *inv
}

// TestMigrationInvalidatesExactlyInterested: hosts 1-3 ask where vm is,
// 4 and 5 do not; vm moves from h1 to h2 through the registry; exactly
// 1-3 receive an Invalidate with the new location.
func TestMigrationInvalidatesExactlyInterested(t *testing.T) {
	r, st := newRegistry(t)
	create(t, r, &apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "acme"}})
	for i := 1; i <= 5; i++ {
		create(t, r, hostObj("h"+strconv.Itoa(i), "192.0.2."+strconv.Itoa(i)))
	}
	create(t, r,
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "main", Tenant: "acme"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "a", Tenant: "acme"}, Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24"}})
	// Every host has an endpoint in the VPC: the lookups it may make.
	objs := create(t, r, endpointObj("vm", "a", "h1"), endpointObj("marker", "a", "h5"),
		endpointObj("m2", "a", "h2"), endpointObj("m3", "a", "h3"), endpointObj("m4", "a", "h4"))
	vm, marker := objs[0].(*apiv1.Endpoint), objs[1].(*apiv1.Endpoint)
	loc := startLocator(t, st)
	srv := startServer(t, Config{Keys: newKeyring(1, 2, 3, 4, 5), Locator: loc, Sockets: 2})

	vmQ := wire.LookupQuery{RequestID: 1, VNI: vm.Status.VNI, IP: netip.MustParseAddr(vm.Status.IP)}
	markerQ := wire.LookupQuery{RequestID: 2, VNI: marker.Status.VNI, IP: netip.MustParseAddr(marker.Status.IP)}
	agents := make([]*agent, 6)
	var oldEpoch uint64
	for id := 1; id <= 5; id++ {
		a := newAgent(t, uint32(id), srv.LocalAddr())
		agents[id] = a
		a.heartbeat(1) // every host is known, with an address
		if id <= 3 {
			ans := a.lookup(vmQ, markerQ)
			if !ans[0].Found || ans[0].Location.HostIP != netip.MustParseAddr("192.0.2.1") {
				t.Fatalf("host %d: vm answer %+v", id, ans[0])
			}
			oldEpoch = ans[0].Epoch
		} else {
			a.lookup(markerQ)
		}
	}
	if got := loc.Interested(vmQ.VNI, vmQ.IP); !slices.Equal(sorted(got), []uint32{1, 2, 3}) {
		t.Fatalf("interested in vm before the move: %v", got)
	}

	moved := *vm
	moved.Spec.Host = "h2"
	out, err := r.Update(context.Background(), &moved)
	if err != nil {
		t.Fatal(err)
	}
	newEpoch, _ := strconv.ParseUint(out.GetObjectMeta().ResourceVersion, 10, 64)
	wantMoved := wire.Invalidate{VNI: vmQ.VNI, IP: vmQ.IP, Epoch: newEpoch, HasLocation: true,
		Location: wire.Location{HostIP: netip.MustParseAddr("192.0.2.2"), MAC: mustMAC(t, vm.Status.MAC), Identity: vm.Status.Identity}}
	for id := 1; id <= 3; id++ {
		if diff := cmp.Diff(wantMoved, invalidation(t, agents[id]), addrCmp); diff != "" {
			t.Errorf("host %d: invalidate (-want +got):\n%s", id, diff)
		}
	}
	if newEpoch <= oldEpoch {
		t.Errorf("epoch %d after the move, %d before", newEpoch, oldEpoch)
	}
	// The new location is an answer: hosts 1-3 stay interested.
	if got := loc.Interested(vmQ.VNI, vmQ.IP); !slices.Equal(sorted(got), []uint32{1, 2, 3}) {
		t.Errorf("interested in vm after the move: %v", got)
	}

	// Barrier: deleting marker notifies all five hosts. Datagrams to one
	// host arrive in order, so a vm invalidation sent to 4 or 5 would be
	// read before this one.
	delRev := st.Revision()
	if _, err := r.Delete(context.Background(), apiv1.RefOf(marker)); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= 5; id++ {
		got := invalidation(t, agents[id])
		if got.IP != markerQ.IP || got.HasLocation || got.Epoch <= uint64(delRev) {
			t.Errorf("host %d: got %+v, want marker %s gone after revision %d", id, got, markerQ.IP, delRev)
		}
	}
	if got := loc.Interested(markerQ.VNI, markerQ.IP); len(got) != 0 {
		t.Errorf("interest in the deleted marker: %v", got)
	}
	waitFor(t, "8 invalidations counted", func() bool { return srv.Stats().Invalidations == 8 })
}

func sorted(ids []uint32) []uint32 {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

func mustMAC(t *testing.T, s string) wire.MACAddr {
	t.Helper()
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		t.Fatalf("MAC %q: %v", s, err)
	}
	return wire.MACAddr(hw)
}

// TestLocatorEvents drives the Locator from a fake store: creation after a
// negative answer, a host's address change, a watch re-opened after the
// store closed it.
func TestLocatorEvents(t *testing.T) {
	src := &fakeSource{}
	// Host 7 asks; its endpoint in VNI 100 lets it.
	src.put(hostWithID("h7", "192.0.2.7", 7))
	src.put(fakeEndpoint("client", "h7", "10.0.0.7", "02:00:00:00:00:07", 100))
	src.put(hostObj("h1", "192.0.2.1"))
	src.put(hostObj("h2", "192.0.2.2"))
	loc := startLocator(t, src)
	srv := startServer(t, Config{Keys: newKeyring(7), Locator: loc, Sockets: 1})
	a := newAgent(t, 7, srv.LocalAddr())
	q := wire.LookupQuery{RequestID: 9, VNI: 100, IP: netip.MustParseAddr("10.0.0.5")}
	if ans := a.lookup(q); ans[0].Found || ans[0].TTL != 5 {
		t.Fatalf("before creation: %+v", ans[0])
	}

	withID := func(ep *apiv1.Endpoint, id uint32) *apiv1.Endpoint {
		ep.Status.Identity = id
		return ep
	}
	t.Run("created after a negative answer, with its identity", func(t *testing.T) {
		src.put(withID(fakeEndpoint("e", "h1", "10.0.0.5", "02:00:00:00:00:05", 100), 42))
		got := invalidation(t, a)
		want := wire.Invalidate{VNI: 100, IP: q.IP, Epoch: 5, HasLocation: true,
			Location: wire.Location{HostIP: netip.MustParseAddr("192.0.2.1"), MAC: wire.MACAddr{2, 0, 0, 0, 0, 5}, Identity: 42}}
		if diff := cmp.Diff(want, got, addrCmp); diff != "" {
			t.Errorf("invalidate (-want +got):\n%s", diff)
		}
		if ans := a.lookup(q); !ans[0].Found || ans[0].Location.Identity != 42 {
			t.Errorf("answer %+v, want identity 42", ans[0])
		}
	})
	t.Run("a change that does not move it is silent", func(t *testing.T) {
		ep := withID(fakeEndpoint("e", "h1", "10.0.0.5", "02:00:00:00:00:05", 100), 42)
		ep.Status.Phase = apiv1.PhaseReady
		src.put(ep)
		waitFor(t, "the locator to apply revision 6", func() bool { return loc.Revision() >= 6 })
		if ans := a.lookup(q); !ans[0].Found || ans[0].Epoch != 5 {
			t.Errorf("after a status change: %+v, want epoch 5", ans[0])
		}
	})
	t.Run("a new identity (relabelled) invalidates with it", func(t *testing.T) {
		src.put(withID(fakeEndpoint("e", "h1", "10.0.0.5", "02:00:00:00:00:05", 100), 43))
		got := invalidation(t, a)
		if got.Epoch != 7 || !got.HasLocation || got.Location.Identity != 43 {
			t.Errorf("invalidate: %+v, want epoch 7 with identity 43", got)
		}
		if ans := a.lookup(q); ans[0].Location.Identity != 43 || ans[0].Epoch != 7 {
			t.Errorf("answer %+v, want identity 43 at epoch 7", ans[0])
		}
	})
	t.Run("host address change moves its endpoints", func(t *testing.T) {
		src.put(hostObj("h1", "192.0.2.11"))
		got := invalidation(t, a)
		if got.Epoch != 8 || got.Location.HostIP != netip.MustParseAddr("192.0.2.11") || got.Location.Identity != 43 {
			t.Errorf("invalidate: %+v, want epoch 8 at 192.0.2.11 with identity 43", got)
		}
	})
	t.Run("watch re-opened after the store closed it", func(t *testing.T) {
		src.closeWatches()
		waitFor(t, "a new watch", func() bool {
			src.mu.Lock()
			defer src.mu.Unlock()
			return len(src.subs) == 1
		})
		src.put(fakeEndpoint("e", "h2", "10.0.0.5", "02:00:00:00:00:05", 100))
		got := invalidation(t, a)
		if got.Epoch != 9 || got.Location.HostIP != netip.MustParseAddr("192.0.2.2") {
			t.Errorf("invalidate: %+v, want epoch 9 at 192.0.2.2", got)
		}
	})
}

func TestInterestTable(t *testing.T) {
	var it interestTable
	sec := int64(time.Second)
	k := newLocKey(1, netip.MustParseAddr("10.0.0.1"))
	if k != newLocKey(1, netip.MustParseAddr("::ffff:10.0.0.1")) {
		t.Error("an IPv4 address and its mapped form are different keys")
	}
	for id := uint32(0); id < 100; id++ {
		it.add(k, id, int64(id)*sec+sec/2) // expires at id+1 s (rounded up)
	}
	it.add(k, 5, 200*sec) // extends
	it.add(k, 6, 0)       // never shortens
	if got := len(it.hosts(k, 50*sec)); got != 51 {
		t.Errorf("interested at 50s: %d, want 50 unexpired + host 5", got)
	}
	if n := it.expire(50 * sec); n != 51 {
		t.Errorf("after expiry: %d remain, want 51", n)
	}
	it.add(k, 3, 500*sec) // expired, then back
	got := sorted(it.take(nil, k, 60*sec))
	want := []uint32{3, 5}
	for id := uint32(60); id < 100; id++ {
		want = append(want, id)
	}
	if diff := cmp.Diff(sorted(want), got); diff != "" {
		t.Errorf("take (-want +got):\n%s", diff)
	}
	if got := it.hosts(k, 0); len(got) != 0 {
		t.Errorf("after take: %v", got)
	}
	if n := it.expire(0); n != 0 {
		t.Errorf("after take: %d interests remain", n)
	}
}

// TestLocatorResetAfterCompactedGap: a Locator that loses its watch (the
// store drops it as a slow subscriber) while an endpoint is deleted and
// another created, and whose history to resume from is then compacted,
// forgets the deleted one and answers for the new one.
func TestLocatorResetAfterCompactedGap(t *testing.T) {
	metrics := prometheus.NewRegistry()
	env := etcdtest.Start(t, etcdtest.Options{Store: func(c *store.Config) {
		c.RingSize, c.SubscriberBacklog, c.Registerer = 4, 4, metrics
	}})
	r, st := env.Registry, env.Store
	create(t, r, &apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "acme"}},
		hostObj("h1", "192.0.2.1"), hostObj("h2", "192.0.2.2"),
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "main", Tenant: "acme"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "a", Tenant: "acme"}, Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24"}})
	query := func(o apiv1.Object) wire.LookupQuery {
		ep := o.(*apiv1.Endpoint)
		return wire.LookupQuery{VNI: ep.Status.VNI, IP: netip.MustParseAddr(ep.Status.IP)}
	}
	old := query(create(t, r, endpointObj("old", "a", "h1"))[0])
	loc := startLocator(t, st)
	if !loc.Lookup(1, old).Found {
		t.Fatal("the locator does not know acme/old after Start")
	}

	// Hold the follow goroutine in its first endpoint event (it indexes
	// under the shard locks) while more than its backlog happens, then
	// delete old and create added unseen, and compact the history.
	for i := range loc.index {
		loc.index[i].mu.Lock()
	}
	unlock := func() {
		for i := range loc.index {
			loc.index[i].mu.Unlock()
		}
	}
	for i := range 12 {
		if _, err := r.Create(context.Background(), endpointObj(fmt.Sprint("burst-", i), "a", "h2")); err != nil {
			unlock()
			t.Fatal(err)
		}
	}
	_, err := r.Delete(context.Background(), apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "old"})
	var added wire.LookupQuery
	if err == nil {
		var out apiv1.Object
		if out, err = r.Create(context.Background(), endpointObj("added", "a", "h2")); err == nil {
			added = query(out)
			for i := 0; i < 5 && err == nil; i++ {
				_, err = r.Create(context.Background(), endpointObj(fmt.Sprint("after-", i), "a", "h1"))
			}
		}
	}
	if err == nil {
		_, err = env.Client.Compact(context.Background(), st.Revision())
	}
	unlock()
	if err != nil {
		t.Fatal(err)
	}

	waitFor(t, "old forgotten, added known", func() bool { return !loc.Lookup(1, old).Found && loc.Lookup(1, added).Found })
	mfs, err := metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	resets := 0.0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "weft_store_follow_resets_total" && m.GetLabel()[0].GetValue() == "udp-locator" {
				resets += m.GetCounter().GetValue()
			}
		}
	}
	if resets == 0 {
		t.Error("the locator was not reset: the test did not exercise a compacted history")
	}
}

// del deletes o at the next revision and emits the event.
func (f *fakeSource) del(o apiv1.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	delete(f.objs, apiv1.RefOf(o))
	for _, ch := range f.subs {
		ch <- store.Event{Type: store.EventDeleted, Object: o, Revision: f.rev}
	}
}

// TestLookupScope: a host may look up addresses only in the VNIs where it
// has an endpoint; a refused query is counted, answered with nothing and
// leaves no interest behind.
func TestLookupScope(t *testing.T) {
	src := &fakeSource{}
	src.put(hostWithID("h1", "192.0.2.1", 1))
	src.put(hostWithID("h2", "192.0.2.2", 2))
	src.put(fakeEndpoint("web", "h1", "10.0.0.5", "02:00:00:00:00:05", 100))
	src.put(fakeEndpoint("other", "h2", "10.1.0.5", "02:00:00:00:01:05", 200))
	loc := startLocator(t, src)
	srv := startServer(t, Config{Keys: newKeyring(2), Locator: loc, Sockets: 1})
	a := newAgent(t, 2, srv.LocalAddr())
	web := wire.LookupQuery{RequestID: 1, VNI: 100, IP: netip.MustParseAddr("10.0.0.5")}
	own := wire.LookupQuery{RequestID: 2, VNI: 200, IP: netip.MustParseAddr("10.1.0.9")}

	refused := func(what string, want uint64) {
		t.Helper()
		a.send(&wire.LookupRequest{Queries: []wire.LookupQuery{web}})
		waitFor(t, what, func() bool { return srv.Stats().OutOfScope == want })
	}
	refused("a query in another VNI refused", 1)
	if got := loc.Interested(web.VNI, web.IP); len(got) != 0 {
		t.Errorf("interest %v registered for a refused query", got)
	}
	if ans := a.lookup(web, own); len(ans) != 1 || ans[0].RequestID != 2 {
		t.Errorf("a batch across VNIs: answers %+v, want the one in the host's VNI", ans)
	}
	if n := srv.Stats().OutOfScope; n != 2 {
		t.Errorf("%d queries out of scope, want 2", n)
	}

	joined := fakeEndpoint("joined", "h2", "10.0.0.9", "02:00:00:00:00:09", 100)
	src.put(joined)
	waitFor(t, "host 2 in VNI 100", func() bool { return loc.Scope(2, 100) })
	if ans := a.lookup(web); !ans[0].Found {
		t.Errorf("once host 2 has an endpoint in VNI 100: %+v, want found", ans[0])
	}
	src.del(joined)
	waitFor(t, "host 2 out of VNI 100", func() bool { return !loc.Scope(2, 100) })
	refused("a query in a VNI the host left", 3)
}

// TestTenantRateLimit: the lookups in one tenant's VNIs share a bucket;
// another tenant's hosts are not held back by it.
func TestTenantRateLimit(t *testing.T) {
	src := &fakeSource{}
	for id := uint32(1); id <= 3; id++ {
		src.put(hostWithID(fmt.Sprint("h", id), fmt.Sprint("192.0.2.", id), id))
	}
	src.put(fakeEndpoint("a1", "h1", "10.0.0.1", "02:00:00:00:00:01", 100))
	src.put(fakeEndpoint("a3", "h3", "10.0.0.3", "02:00:00:00:00:03", 100))
	globex := fakeEndpoint("g2", "h2", "10.0.0.2", "02:00:00:00:00:02", 200)
	globex.Metadata.Tenant = "globex"
	src.put(globex)
	loc := startLocator(t, src)
	srv := startServer(t, Config{Keys: newKeyring(1, 2, 3), Locator: loc, Sockets: 1,
		TenantRateLimit: RateLimit{PerSecond: 1, Burst: 3}})
	q := func(vni uint32) wire.LookupQuery {
		return wire.LookupQuery{VNI: vni, IP: netip.MustParseAddr("10.0.0.9")}
	}
	h1, h2, h3 := newAgent(t, 1, srv.LocalAddr()), newAgent(t, 2, srv.LocalAddr()), newAgent(t, 3, srv.LocalAddr())
	if ans := h1.lookup(q(100), q(100), q(100)); len(ans) != 3 { // acme's whole burst
		t.Fatalf("acme's first lookups: %d answers, want 3", len(ans))
	}
	h3.send(&wire.LookupRequest{Queries: []wire.LookupQuery{q(100)}})
	waitFor(t, "acme's limit", func() bool { return srv.Stats().TenantLimited == 1 })
	if ans := h2.lookup(q(200), q(200), q(200)); len(ans) != 3 {
		t.Errorf("globex: %d answers, want 3", len(ans))
	}
}
