package store

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/scaleobjects"
)

// readBenchEndpoints is the size of the cache the read benchmarks read:
// scaleobjects' shape, so 10 endpoints per host, 100 per subnet, 2 tenants
// of 10,000 endpoints each.
const readBenchEndpoints = 20_000

// scaleChanges returns scaleobjects.Objects(n, false) as decoded changes,
// at revisions 2, 3, … as a list from etcd would give them.
func scaleChanges(tb testing.TB, kinds kindTable, n int) ([]change, int64) {
	tb.Helper()
	objs := scaleobjects.Objects(n, false)
	chs := make([]change, 0, len(objs))
	rev := int64(1)
	for _, o := range objs {
		rev++
		k := kinds.mustLookup(o.GetTypeMeta().Kind)
		m := o.GetObjectMeta()
		b, err := EncodeObject(o)
		if err != nil {
			tb.Fatal(err)
		}
		dec, err := decodeObject(k, m.Tenant, m.Name, b, rev)
		if err != nil {
			tb.Fatal(err)
		}
		chs = append(chs, change{kind: k, tenant: m.Tenant, name: m.Name, obj: dec, createRev: rev, rev: rev})
	}
	return chs, rev
}

// benchCacheStore returns a Store without etcd whose cache holds the
// objects of scaleobjects.Objects(n, false).
func benchCacheStore(b *testing.B, n int) *Store {
	b.Helper()
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	s := &Store{prefix: DefaultPrefix, kinds: newKindTable(), metrics: m}
	s.cache = newCache(s.kinds, 1024, m)
	chs, rev := scaleChanges(b, s.kinds, n)
	s.cache.load(chs, rev)
	return s
}

// BenchmarkCacheRead measures the cache's endpoint reads, per call.
func BenchmarkCacheRead(b *testing.B) {
	s := benchCacheStore(b, readBenchEndpoints)
	hosts := readBenchEndpoints / 10
	b.Run("EndpointsByHost/10", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			eps := s.EndpointsByHost("h" + strconv.Itoa(i%hosts))
			if len(eps) != 10 {
				b.Fatalf("%d endpoints on a host, want 10", len(eps))
			}
			i++
		}
	})
	b.Run("Get/endpoint", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e := i % readBenchEndpoints
			k := (e + e/hosts) % (readBenchEndpoints / 100)
			if _, ok := s.Get(apiv1.KindEndpoint, "t"+strconv.Itoa(k/100), "e"+strconv.Itoa(e)); !ok {
				b.Fatalf("endpoint e%d not found", e)
			}
			i++
		}
	})
	b.Run("Get/host", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := s.Get(apiv1.KindHost, "", "h7"); !ok {
				b.Fatal("host not found")
			}
		}
	})
	b.Run("EndpointsBySubnet/100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if eps := s.EndpointsBySubnet("t1", "s150"); len(eps) != 100 {
				b.Fatalf("%d endpoints in a subnet, want 100", len(eps))
			}
		}
	})
	b.Run("EndpointsByLabel/200", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if eps := s.EndpointsByLabel("t0", "app", "app-7"); len(eps) != 200 {
				b.Fatalf("%d endpoints labelled, want 200", len(eps))
			}
		}
	})
	b.Run(fmt.Sprintf("List/tenant/%d", readBenchEndpoints/2), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if objs := s.List(apiv1.KindEndpoint, "t1"); len(objs) != readBenchEndpoints/2 {
				b.Fatalf("%d endpoints listed, want %d", len(objs), readBenchEndpoints/2)
			}
		}
	})
	b.Run(fmt.Sprintf("List/all/%d", readBenchEndpoints), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if objs := s.List(apiv1.KindEndpoint, ""); len(objs) != readBenchEndpoints {
				b.Fatalf("%d endpoints listed, want %d", len(objs), readBenchEndpoints)
			}
		}
	})
}

// BenchmarkCacheLoad measures filling an empty cache with decoded
// endpoints (a cold start's list, without etcd and decoding), per object.
func BenchmarkCacheLoad(b *testing.B) {
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	kinds := newKindTable()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		chs, rev := scaleChanges(b, kinds, readBenchEndpoints)
		c := newCache(kinds, 1024, m)
		b.StartTimer()
		c.load(chs, rev)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*readBenchEndpoints), "ns/endpoint")
}

// BenchmarkCacheApply measures watched updates of endpoints (pending to
// ready, as the controller writes them) applied in batches of 100, each
// published as events to the ring and one subscriber of all kinds, per
// endpoint.
func BenchmarkCacheApply(b *testing.B) {
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	kinds := newKindTable()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		objs := scaleobjects.Objects(readBenchEndpoints, true)
		for _, o := range scaleobjects.Objects(readBenchEndpoints, false) {
			if _, ok := o.(*apiv1.Endpoint); ok {
				objs = append(objs, o)
			}
		}
		var chs []change
		rev := int64(1)
		for _, o := range objs {
			rev++
			k := kinds.mustLookup(o.GetTypeMeta().Kind)
			om := o.GetObjectMeta()
			dec, err := decodeObject(k, om.Tenant, om.Name, []byte(mustEncode(o)), rev)
			if err != nil {
				b.Fatal(err)
			}
			chs = append(chs, change{kind: k, tenant: om.Tenant, name: om.Name, obj: dec, createRev: rev, rev: rev})
		}
		split := len(objs) - readBenchEndpoints
		c := newCache(kinds, 1024, m)
		c.load(chs[:split], chs[split-1].rev)
		sub := &subscriber{backlog: 1 << 30, wake: make(chan struct{}, 1), dropped: m.dropped}
		c.subs[sub] = struct{}{}
		b.StartTimer()
		for i := split; i < len(chs); i += 100 {
			batch := chs[i:min(i+100, len(chs))]
			c.apply(batch, batch[len(batch)-1].rev)
			sub.queue = sub.queue[:0]
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*readBenchEndpoints), "ns/endpoint")
}

// BenchmarkEndpointMemory measures the heap a cache keeps per endpoint,
// without etcd and without the other kinds: the cache of
// scaleobjects.Objects(n) minus that of its other objects, divided by n.
// scanB/endpoint is the part of it the GC scans, objs/endpoint the heap
// objects.
func BenchmarkEndpointMemory(b *testing.B) {
	const n = 100_000
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	kinds := newKindTable()
	build := func(withEndpoints bool) *cache {
		chs, rev := scaleChanges(b, kinds, n)
		if !withEndpoints {
			chs = slices.DeleteFunc(chs, func(ch change) bool { return ch.kind.info.Kind == apiv1.KindEndpoint })
		}
		c := newCache(kinds, 0, m)
		c.load(chs, rev)
		return c
	}
	for b.Loop() {
		base := heapAfterGC()
		others := build(false)
		mid := heapAfterGC()
		all := build(true)
		end := heapAfterGC()
		per := func(f func(heapStats) int64) float64 {
			return float64(f(end)-2*f(mid)+f(base)) / n // (end-mid) - (mid-base)
		}
		b.ReportMetric(per(func(h heapStats) int64 { return h.bytes }), "B/endpoint")
		b.ReportMetric(per(func(h heapStats) int64 { return h.scan }), "scanB/endpoint")
		b.ReportMetric(per(func(h heapStats) int64 { return h.objects }), "objs/endpoint")
		runtime.KeepAlive(others)
		runtime.KeepAlive(all)
	}
}
