package store

import (
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// newTestCache returns a Store whose cache is fed by the test, without etcd.
func newTestCache(t *testing.T) *Store {
	t.Helper()
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{prefix: DefaultPrefix, kinds: newKindTable(), metrics: m}
	s.cache = newCache(s.kinds, 16, m)
	return s
}

// putChange applies o as decoded from etcd at rev.
func putChange(t *testing.T, s *Store, o apiv1.Object, rev int64) {
	t.Helper()
	k := s.kinds.mustLookup(o.GetTypeMeta().Kind)
	m := o.GetObjectMeta()
	dec, err := decodeObject(k, m.Tenant, m.Name, []byte(mustEncode(o)), rev)
	if err != nil {
		t.Fatal(err)
	}
	s.cache.apply([]change{{kind: k, tenant: m.Tenant, name: m.Name, obj: dec, createRev: rev, rev: rev}}, rev)
}

func delChange(t *testing.T, s *Store, r apiv1.Ref, rev int64) {
	t.Helper()
	k := s.kinds.mustLookup(r.Kind)
	s.cache.apply([]change{{kind: k, tenant: r.Tenant, name: r.Name, rev: rev}}, rev)
}

func mapID(m map[string]string) uintptr { return reflect.ValueOf(m).Pointer() }

// TestCacheSharesAndForgets checks that cached endpoints share equal label
// sets and repeated strings, that the indexes follow updates, and that
// nothing is left in the interner once the endpoints are gone.
func TestCacheSharesAndForgets(t *testing.T) {
	s := newTestCache(t)
	rev := int64(0)
	next := func() int64 { rev++; return rev }
	for i := range 4 {
		ep := endpoint("acme", "e"+strconv.Itoa(i), "h1", "sn", map[string]string{"app": "web", "tier": "fe"})
		ep.Status = apiv1.EndpointStatus{IP: "10.0.0." + strconv.Itoa(i), MAC: "02:00:00:00:00:0" + strconv.Itoa(i), Host: "h1", VNI: 7, Phase: apiv1.PhaseReady}
		ep.Metadata.UID = "uid-" + strconv.Itoa(i)
		putChange(t, s, ep, next())
	}
	get := func(name string) *apiv1.Endpoint {
		o, ok := s.Get(apiv1.KindEndpoint, "acme", name)
		if !ok {
			t.Fatalf("endpoint %s not cached", name)
		}
		return o.(*apiv1.Endpoint)
	}
	e0, e1 := get("e0"), get("e1")
	if mapID(e0.Metadata.Labels) != mapID(e1.Metadata.Labels) {
		t.Error("equal label sets are not shared")
	}
	if e0.Metadata.UID != "uid-0" || e0.Status.MAC != "02:00:00:00:00:00" || e0.Metadata.ResourceVersion != "1" || e0.Status.IP != "10.0.0.0" {
		t.Errorf("e0 changed by compaction: %+v", e0)
	}
	names := func(eps []*apiv1.Endpoint) []string {
		var ns []string
		for _, ep := range eps {
			ns = append(ns, ep.Metadata.Name)
		}
		return ns
	}

	// Relabel and move e1.
	ep := endpoint("acme", "e1", "h2", "sn", map[string]string{"app": "db"})
	putChange(t, s, ep, next())
	for _, tc := range []struct {
		name string
		got  []*apiv1.Endpoint
		want []string
	}{
		{"host h1", s.EndpointsByHost("h1"), []string{"e0", "e2", "e3"}},
		{"host h2", s.EndpointsByHost("h2"), []string{"e1"}},
		{"subnet", s.EndpointsBySubnet("acme", "sn"), []string{"e0", "e1", "e2", "e3"}},
		{"app=web", s.EndpointsByLabel("acme", "app", "web"), []string{"e0", "e2", "e3"}},
		{"app=db", s.EndpointsByLabel("acme", "app", "db"), []string{"e1"}},
		{"tier=fe", s.EndpointsByLabel("acme", "tier", "fe"), []string{"e0", "e2", "e3"}},
	} {
		if diff := cmp.Diff(tc.want, names(tc.got)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	if got := get("e1"); got.Spec.Host != "h2" || got.Metadata.Labels["app"] != "db" || len(got.Metadata.Labels) != 1 {
		t.Errorf("e1 = %+v", got)
	}

	for i := range 4 {
		delChange(t, s, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "e" + strconv.Itoa(i)}, next())
	}
	c := s.cache
	eps := c.eps
	if len(eps.byHost)+len(eps.bySubnet)+len(eps.byLabel)+len(eps.byTenant)+eps.byKey.len() != 0 || c.len() != 0 {
		t.Errorf("indexes not empty: %d hosts, %d subnets, %d labels, %d tenants, %d keys, %d objects",
			len(eps.byHost), len(eps.bySubnet), len(eps.byLabel), len(eps.byTenant), eps.byKey.len(), c.len())
	}
	// The ring's events still hold the old records, and so their values.
	if eps.strs.len() == 0 || eps.labels.len() == 0 {
		t.Errorf("values of the ring's events forgotten: %d strings, %d label sets", eps.strs.len(), eps.labels.len())
	}
	if got := c.eps.endpoint(c.ring.at(c.ring.n - 1).obj.(*epRecord)); got.Metadata.Name != "e3" || got.Spec.Host != "h1" {
		t.Errorf("last event's endpoint = %+v", got)
	}
	for i := range len(c.ring.buf) { // push them out
		putChange(t, s, host("h"+strconv.Itoa(i), "192.0.2.1"), next())
	}
	if eps.strs.len() != 0 || eps.labels.len() != 0 {
		t.Errorf("%d strings, %d label sets interned after every endpoint went: %v", eps.strs.len(), eps.labels.len(), eps.strs.ids)
	}
}

// TestEntryMapChains drives entryMap with every key on one hash, as
// colliding keys would be.
func TestEntryMapChains(t *testing.T) {
	em := newEntryMap()
	mk := func(tenant, name string, rev int64) *entry {
		return newEntry(&apiv1.Endpoint{Metadata: apiv1.ObjectMeta{Tenant: tenant, Name: name}}, rev, rev)
	}
	keys := []tn{{"a", "x"}, {"b", "x"}, {"a", "y"}, {"", "x"}}
	for i, k := range keys {
		em.putHashed(0, mk(k.tenant, k.name, int64(i)))
	}
	em.putHashed(0, mk("b", "x", 10)) // replaces in the middle of the chain
	check := func(want map[tn]int64) {
		t.Helper()
		if em.len() != len(want) {
			t.Errorf("len %d, want %d", em.len(), len(want))
		}
		for _, k := range keys {
			e := em.getHashed(0, k)
			w, ok := want[k]
			switch {
			case !ok && e != nil:
				t.Errorf("%v still there", k)
			case ok && (e == nil || e.modRev != w):
				t.Errorf("%v = %+v, want revision %d", k, e, w)
			}
		}
	}
	check(map[tn]int64{{"a", "x"}: 0, {"b", "x"}: 10, {"a", "y"}: 2, {"", "x"}: 3})
	em.delHashed(0, tn{"a", "y"})   // middle
	em.delHashed(0, tn{"", "x"})    // head (last put)
	em.delHashed(0, tn{"zz", "no"}) // absent
	check(map[tn]int64{{"a", "x"}: 0, {"b", "x"}: 10})
	em.delHashed(0, tn{"a", "x"})
	em.delHashed(0, tn{"b", "x"})
	check(map[tn]int64{})
	if len(em.m) != 0 {
		t.Errorf("map keeps %d chains", len(em.m))
	}
}

// TestPrepareDiscard checks that the records of a list that is not
// applied (a failed list) and of changes seen already leave nothing
// interned.
func TestPrepareDiscard(t *testing.T) {
	s := newTestCache(t)
	c := s.cache
	chs, rev := scaleChanges(t, s.kinds, 200)
	c.prepare(chs)
	if c.eps.strs.len() == 0 || c.eps.labels.len() == 0 {
		t.Fatal("prepare interned nothing")
	}
	for _, ch := range chs {
		if _, ok := ch.obj.(*apiv1.Endpoint); ok || (ch.kind == c.epKind) != (ch.rec != nil) {
			t.Fatalf("change %s/%s not prepared: obj %T, rec %v", ch.tenant, ch.name, ch.obj, ch.rec != nil)
		}
	}
	c.discard(chs)
	if n, m := c.eps.strs.len(), c.eps.labels.len(); n != 0 || m != 0 {
		t.Errorf("%d strings, %d label sets interned after discard", n, m)
	}

	// Loaded twice, the second time at older revisions: seen already.
	chs, rev = scaleChanges(t, s.kinds, 200)
	c.load(chs, rev)
	before := c.eps.strs.len()
	old, _ := scaleChanges(t, s.kinds, 200)
	for i := range old {
		old[i].rev = 1
	}
	c.prepare(old)
	c.apply(old, rev)
	if got := c.eps.strs.len(); got != before {
		t.Errorf("%d strings interned, want %d", got, before)
	}
}

// TestCacheConcurrentReads reads endpoints while they change, for the race
// detector; the cache holds enough endpoints for a list of all to be
// built without the lock.
func TestCacheConcurrentReads(t *testing.T) {
	s := newTestCache(t)
	chs, rev := scaleChanges(t, s.kinds, buildLockedMax+100)
	s.cache.load(chs, rev)
	all := s.List(apiv1.KindEndpoint, "")
	if len(all) <= buildLockedMax {
		t.Fatalf("%d endpoints listed, want more than %d", len(all), buildLockedMax)
	}
	for _, o := range all {
		m := o.GetObjectMeta()
		got, _ := s.Get(apiv1.KindEndpoint, m.Tenant, m.Name)
		if diff := cmp.Diff(got, o); diff != "" {
			t.Fatalf("listed %s (-got +listed):\n%s", apiv1.RefOf(o), diff)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, ep := range s.EndpointsByHost("h1") {
					_ = ep.Status.IP + ep.Metadata.Labels["app"]
				}
				s.EndpointsBySubnet("acme", "sn")
				s.EndpointsByLabel("acme", "app", "web")
				s.List(apiv1.KindEndpoint, "")
				s.Get(apiv1.KindEndpoint, "acme", "e1")
			}
		})
	}
	for i := range 500 {
		rev++
		name := "e" + strconv.Itoa(i%20)
		if i%7 == 6 {
			delChange(t, s, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: name}, rev)
			continue
		}
		ep := endpoint("acme", name, "h"+strconv.Itoa(i%3), "sn", map[string]string{"app": []string{"web", "db"}[i%2]})
		ep.Status.IP = "10.0.0." + strconv.Itoa(i%250)
		putChange(t, s, ep, rev)
	}
	close(stop)
	wg.Wait()
}
