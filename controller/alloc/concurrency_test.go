package alloc

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// TestConcurrentAllocate runs 20,480 address allocations from 64 goroutines
// for 128 hosts on one /16 (goroutines share hosts, so same-host allocations
// race too) together with VNI allocations, then a churn phase of releases and
// allocations, and checks no value is ever held twice. Run with -race.
func TestConcurrentAllocate(t *testing.T) {
	const (
		goroutines   = 64
		hosts        = 128
		perGoroutine = 320
		vnisEach     = 50
	)
	p, err := NewPool(pfx("10.20.0.0/16"), ip("10.20.0.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	vnis, err := NewVNIs(DefaultMinVNI, MaxVNI)
	if err != nil {
		t.Fatal(err)
	}
	usable := p.Free()

	type result struct {
		ips  []netip.Addr
		vnis []uint32
		err  error
	}
	results := make([]result, goroutines)
	run := func(body func(g int, r *result)) {
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() { body(g, &results[g]) })
		}
		wg.Wait()
		for g, r := range results {
			if r.err != nil {
				t.Fatalf("goroutine %d: %v", g, r.err)
			}
		}
	}

	// Phase 1: allocations only; every value returned must be distinct.
	run(func(g int, r *result) {
		for i := range perGoroutine {
			host := fmt.Sprintf("host-%d", (g*7+i)%hosts)
			a, err := p.Allocate(host)
			if err != nil {
				r.err = fmt.Errorf("allocate for %s: %w", host, err)
				return
			}
			r.ips = append(r.ips, a)
			if i%(perGoroutine/vnisEach) == 0 && len(r.vnis) < vnisEach {
				v, err := vnis.Allocate()
				if err != nil {
					r.err = fmt.Errorf("allocate vni: %w", err)
					return
				}
				r.vnis = append(r.vnis, v)
			}
		}
	})
	checkDistinct(t, results, func(r result) ([]netip.Addr, []uint32) { return r.ips, r.vnis })
	if got, want := p.Free(), usable-goroutines*perGoroutine; got != want {
		t.Errorf("Free() after phase 1 = %d, want %d", got, want)
	}
	if got, want := vnis.Used(), goroutines*vnisEach; got != want {
		t.Errorf("VNIs Used() = %d, want %d", got, want)
	}
	checkInvariants(t, p)

	// Phase 2: each goroutine releases two thirds of its addresses and VNIs
	// and allocates as many again, while others read Blocks and InUse. The
	// values held at the end must still be distinct.
	run(func(g int, r *result) {
		var keep []netip.Addr
		released := 0
		for i, a := range r.ips {
			if i%3 == 0 {
				keep = append(keep, a)
				continue
			}
			p.Release(a)
			released++
		}
		for i := range released {
			host := fmt.Sprintf("host-%d", (g*13+i)%hosts)
			a, err := p.Allocate(host)
			if err != nil {
				r.err = fmt.Errorf("reallocate for %s: %w", host, err)
				return
			}
			keep = append(keep, a)
			if i%10 == 0 {
				_ = p.Blocks(host)
				if !p.InUse(a) {
					r.err = fmt.Errorf("InUse(%s) = false right after Allocate", a)
					return
				}
			}
		}
		r.ips = keep
		var vkeep []uint32
		for i, v := range r.vnis {
			if i%3 == 0 {
				vkeep = append(vkeep, v)
				continue
			}
			vnis.Release(v)
			v, err := vnis.Allocate()
			if err != nil {
				r.err = fmt.Errorf("reallocate vni: %w", err)
				return
			}
			vkeep = append(vkeep, v)
		}
		r.vnis = vkeep
	})
	checkDistinct(t, results, func(r result) ([]netip.Addr, []uint32) { return r.ips, r.vnis })
	if got, want := p.Free(), usable-goroutines*perGoroutine; got != want {
		t.Errorf("Free() after phase 2 = %d, want %d", got, want)
	}
	checkInvariants(t, p)

	// Blocks of different hosts never overlap.
	owner := map[netip.Prefix]string{}
	for h := range hosts {
		host := fmt.Sprintf("host-%d", h)
		for _, b := range p.Blocks(host) {
			if prev, ok := owner[b]; ok {
				t.Errorf("block %s owned by %s and %s", b, prev, host)
			}
			owner[b] = host
		}
	}
}

func checkDistinct[R any](t *testing.T, results []R, values func(R) ([]netip.Addr, []uint32)) {
	t.Helper()
	ips := map[netip.Addr]int{}
	vs := map[uint32]int{}
	for g, r := range results {
		as, ns := values(r)
		for _, a := range as {
			if prev, dup := ips[a]; dup {
				t.Fatalf("address %s held by goroutines %d and %d", a, prev, g)
			}
			ips[a] = g
		}
		for _, v := range ns {
			if prev, dup := vs[v]; dup {
				t.Fatalf("VNI %d held by goroutines %d and %d", v, prev, g)
			}
			vs[v] = g
		}
	}
}

// TestConcurrentExhaustion lets 200 hosts race for a /24 (16 blocks) until it
// is full: the steal path must hand out every address exactly once.
func TestConcurrentExhaustion(t *testing.T) {
	const goroutines = 16
	p, err := NewPool(pfx("10.30.0.0/24"), ip("10.30.0.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([][]netip.Addr, goroutines)
	errs := make([]error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := 0; ; i++ {
				a, err := p.Allocate(fmt.Sprintf("h%d", (g+goroutines*i)%200))
				if errors.Is(err, ErrExhausted) {
					return
				}
				if err != nil {
					errs[g] = err
					return
				}
				got[g] = append(got[g], a)
			}
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for g := range goroutines {
		if errs[g] != nil {
			t.Fatalf("goroutine %d: %v", g, errs[g])
		}
		for _, a := range got[g] {
			if seen[a] {
				t.Fatalf("address %s allocated twice", a)
			}
			seen[a] = true
		}
	}
	if len(seen) != 253 {
		t.Errorf("allocated %d addresses of a /24, want 253", len(seen))
	}
	checkInvariants(t, p)

	// Release everything concurrently: all blocks go back to the pool.
	for g := range goroutines {
		wg.Go(func() {
			for _, a := range got[g] {
				p.Release(a)
			}
		})
	}
	wg.Wait()
	if p.Free() != 253 || len(p.freeStack) != 16 || countHosts(p) != 0 {
		t.Errorf("after releasing all: Free() = %d, %d free blocks, %d host states; want 253, 16, 0",
			p.Free(), len(p.freeStack), countHosts(p))
	}
	checkInvariants(t, p)
}
