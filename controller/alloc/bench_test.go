package alloc

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
)

// BenchmarkAllocateParallel measures Allocate with 16 goroutines per
// GOMAXPROCS, each for its own host, on one /12. Each goroutine keeps its
// last 64 addresses and releases the oldest once it has 64, so one op is
// one Allocate plus (in steady state) one Release, and blocks are claimed
// and given back as they fill and empty.
func BenchmarkAllocateParallel(b *testing.B) {
	p, err := NewPool(netip.MustParsePrefix("10.0.0.0/12"), netip.MustParseAddr("10.0.0.1"), 0)
	if err != nil {
		b.Fatal(err)
	}
	var hostSeq atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		host := fmt.Sprintf("host-%d", hostSeq.Add(1))
		var ring [64]netip.Addr
		n := 0
		for pb.Next() {
			a, err := p.Allocate(host)
			if err != nil {
				b.Error(err)
				return
			}
			slot := n % len(ring)
			if n >= len(ring) {
				p.Release(ring[slot])
			}
			ring[slot] = a
			n++
		}
	})
}

// BenchmarkVNIAllocate measures VNIs.Allocate over the default range,
// keeping the last 1024 VNIs and releasing the oldest (one Allocate plus one
// Release per op in steady state).
func BenchmarkVNIAllocate(b *testing.B) {
	v, err := NewVNIs(DefaultMinVNI, MaxVNI)
	if err != nil {
		b.Fatal(err)
	}
	var ring [1024]uint32
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		x, err := v.Allocate()
		if err != nil {
			b.Fatal(err)
		}
		slot := n % len(ring)
		if n >= len(ring) {
			v.Release(ring[slot])
		}
		ring[slot] = x
		n++
	}
}
