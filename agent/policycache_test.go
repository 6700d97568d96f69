package agent

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// TestPolicyCacheShared translates the views of two hosts that hold one
// policy, applying to other endpoints, with a cache they share: the
// second finds the first's translation and the result is what it is
// without a cache; a policy changed since, and a policy resource the
// cache cannot split, are translated afresh.
func TestPolicyCacheShared(t *testing.T) {
	pol := func(applies ...string) *view.Policy {
		return &view.Policy{Tenant: "acme", Name: "db", VPC: "main", IngressIsolated: true, EgressIsolated: true,
			Ingress: []view.Rule{{Name: "acme/db ingress[0]", Identities: []uint32{4, 9},
				Ports: []view.Port{{Protocol: 6, First: 5432, Last: 5432, ICMPType: -1, ICMPCode: -1}}}},
			Egress:  []view.Rule{{Name: "acme/db egress[0]", Prefixes: []string{"10.0.1.7/32", "192.0.2.0/24"}}},
			Applies: applies}
	}
	snapshot := func(p wire.Resource, eps ...string) *wire.Delta {
		res := []wire.Resource{hostRes(t), vpcRes(t, "acme", 100), p}
		for i, name := range eps {
			res = append(res, epRes(t, "acme", name, 100, byte(10+i)))
		}
		return &wire.Delta{ToVersion: 1, Snapshot: true, Upserts: res}
	}
	cache := NewPolicyCache(0)
	plain := &Config{Host: testHost, UnderlayIP: netip.MustParseAddr("100.64.0.1")}
	shared := &Config{Host: testHost, UnderlayIP: netip.MustParseAddr("100.64.0.1"), PolicyCache: cache}
	changed := pol("acme/a", "acme/b")
	changed.Ingress[0].Identities = []uint32{4}
	escaped := mustRes(t, pol("acme/b"))
	escaped.Data = append(escaped.Data[:len(escaped.Data)-len(`"acme/b"]}`):len(escaped.Data)-len(`"acme/b"]}`)], `"acme\/b"]}`...)
	for i, step := range []struct {
		name         string
		snap         *wire.Delta
		hits, misses uint64
	}{
		{"first host", snapshot(mustRes(t, pol("acme/a")), "a", "b"), 0, 1},
		{"second host", snapshot(mustRes(t, pol("acme/a", "acme/b")), "a", "b"), 1, 1},
		{"third host, applies to nothing here", snapshot(mustRes(t, pol("acme/z")), "a"), 2, 1},
		{"policy changed", snapshot(mustRes(t, changed), "a", "b"), 2, 2},
		{"escaped applies", snapshot(escaped, "a", "b"), 2, 2},
	} {
		t.Run(fmt.Sprint(i, " ", step.name), func(t *testing.T) {
			v := viewOf(t, step.snap.Upserts...)
			want, err := translate(v, plain)
			if err != nil {
				t.Fatal(err)
			}
			got, err := translate(v, shared)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("desired with the cache (-without +with):\n%s", diff)
			}
			if st := cache.Stats(); st.Hits != step.hits || st.Misses != step.misses {
				t.Errorf("cache %+v, want %d hits and %d misses", st, step.hits, step.misses)
			}
		})
	}
}

// TestPolicyCacheBounded checks that a cache holds at most two
// generations and keeps what is used.
func TestPolicyCacheBounded(t *testing.T) {
	c := NewPolicyCache(2)
	key := func(i int) []byte { return fmt.Appendf(nil, `{"name":"p%d",`, i) }
	for i := range 10 {
		c.put(key(i), &sharedPolicy{name: fmt.Sprint(i)})
		if c.get(key(0)) == nil { // used all along: kept
			t.Fatalf("after %d puts, the policy used all along is gone", i+1)
		}
		if n := c.Stats().Entries; n > 4 {
			t.Fatalf("after %d puts the cache holds %d, want at most 4", i+1, n)
		}
	}
	if c.get(key(1)) != nil {
		t.Error("a policy unused for 8 puts is still there")
	}
	if p := c.get(key(9)); p == nil || p.name != "9" {
		t.Errorf("the last policy put: %+v", p)
	}
}
