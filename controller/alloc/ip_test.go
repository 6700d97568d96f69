package alloc

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	ip  = netip.MustParseAddr
	pfx = netip.MustParsePrefix
)

// checkInvariants verifies the pool's internal bookkeeping. The pool must be
// quiescent.
func checkInvariants(t *testing.T, p *Pool) {
	t.Helper()
	bs := 1 << p.shift
	var total int64
	onStack, made := 0, 0
	for i := range p.nblocks {
		bi := int32(i)
		b := p.block(bi)
		if b == nil {
			continue // page not created: free, and counted nowhere
		}
		if i&(1<<p.pageShift-1) == 0 {
			made++
		}
		pg := p.pages[bi>>p.pageShift].Load()
		set := 0
		for idx := i * bs; idx < (i+1)*bs; idx++ {
			w, m := p.bit(pg, idx)
			if w.Load()&m != 0 && idx != p.netIdx && idx != p.bcastIdx && idx != p.gwIdx {
				set++
			}
		}
		if int(b.used) != set {
			t.Errorf("block %d: used = %d, %d bits set", i, b.used, set)
		}
		if b.used < 0 || b.used > b.usable {
			t.Errorf("block %d: used %d of %d", i, b.used, b.usable)
		}
		total += int64(b.used)
		if b.usable == 0 {
			if b.owner != nil || b.freePos != -1 {
				t.Errorf("block %d without usable addresses is owned or free", i)
			}
			continue
		}
		if (b.owner == nil) != (b.freePos >= 0) {
			t.Errorf("block %d: owner %v, free stack position %d", i, b.owner, b.freePos)
		}
		if b.freePos >= 0 && p.freeStack[b.freePos] != bi {
			t.Errorf("block %d: free stack position %d holds block %d", i, b.freePos, p.freeStack[b.freePos])
		}
		if b.owner == nil {
			onStack++
			if b.used != 0 {
				t.Errorf("block %d: unowned with %d used", i, b.used)
			}
			continue
		}
		if b.used == 0 {
			t.Errorf("block %d: owned by %q while empty", i, b.owner.name)
		}
		if b.owner.dead {
			t.Errorf("block %d: owned by a dropped host %q", i, b.owner.name)
		}
		if v, ok := p.hosts.Load(b.owner.name); !ok || v != b.owner {
			t.Errorf("block %d: owner %q is not the pool's host state", i, b.owner.name)
		}
	}
	if onStack != len(p.freeStack) {
		t.Errorf("free stack holds %d blocks, %d blocks are unowned", len(p.freeStack), onStack)
	}
	if made != p.pagesMade {
		t.Errorf("pagesMade = %d, %d pages exist", p.pagesMade, made)
	}
	if total != p.used.Load() {
		t.Errorf("used counter = %d, blocks count %d", p.used.Load(), total)
	}
}

func TestNewPool(t *testing.T) {
	type summary struct {
		Free, BlockSize, Blocks int
		First                   netip.Addr
	}
	tests := []struct {
		name      string
		cidr      netip.Prefix
		gw        netip.Addr
		blockSize int
		want      summary
		wantErr   error
	}{
		{name: "/24", cidr: pfx("10.0.1.0/24"), gw: ip("10.0.1.1"),
			want: summary{Free: 253, BlockSize: 16, Blocks: 16, First: ip("10.0.1.2")}},
		{name: "/30", cidr: pfx("10.0.1.4/30"), gw: ip("10.0.1.5"),
			want: summary{Free: 1, BlockSize: 1, Blocks: 4, First: ip("10.0.1.6")}},
		{name: "/29", cidr: pfx("10.0.1.8/29"), gw: ip("10.0.1.9"),
			want: summary{Free: 5, BlockSize: 2, Blocks: 4, First: ip("10.0.1.10")}},
		{name: "/28 gateway in the middle", cidr: pfx("10.0.1.16/28"), gw: ip("10.0.1.24"),
			want: summary{Free: 13, BlockSize: 4, Blocks: 4, First: ip("10.0.1.17")}},
		{name: "/28 without gateway", cidr: pfx("10.0.1.16/28"),
			want: summary{Free: 14, BlockSize: 4, Blocks: 4, First: ip("10.0.1.17")}},
		{name: "/16", cidr: pfx("172.16.0.0/16"), gw: ip("172.16.0.1"),
			want: summary{Free: 65533, BlockSize: 16, Blocks: 4096, First: ip("172.16.0.2")}},
		{name: "unmasked prefix", cidr: pfx("10.0.1.77/24"), gw: ip("10.0.1.1"),
			want: summary{Free: 253, BlockSize: 16, Blocks: 16, First: ip("10.0.1.2")}},
		{name: "/31 point to point", cidr: pfx("10.0.1.0/31"),
			want: summary{Free: 2, BlockSize: 1, Blocks: 2, First: ip("10.0.1.0")}},
		{name: "/32", cidr: pfx("10.0.1.9/32"),
			want: summary{Free: 1, BlockSize: 1, Blocks: 1, First: ip("10.0.1.9")}},
		{name: "/7 capped at 2^24", cidr: pfx("10.0.0.0/7"), gw: ip("10.0.0.1"),
			want: summary{Free: 1<<24 - 2, BlockSize: 16, Blocks: 1 << 20, First: ip("10.0.0.2")}},
		{name: "block size 64", cidr: pfx("10.0.1.0/24"), gw: ip("10.0.1.1"), blockSize: 64,
			want: summary{Free: 253, BlockSize: 64, Blocks: 4, First: ip("10.0.1.2")}},
		{name: "block size 128 lowered", cidr: pfx("10.0.1.0/24"), gw: ip("10.0.1.1"), blockSize: 128,
			want: summary{Free: 253, BlockSize: 64, Blocks: 4, First: ip("10.0.1.2")}},
		{name: "block size 1", cidr: pfx("10.0.1.0/24"), gw: ip("10.0.1.1"), blockSize: 1,
			want: summary{Free: 253, BlockSize: 1, Blocks: 256, First: ip("10.0.1.2")}},
		{name: "ipv6 /64 capped at 2^20", cidr: pfx("fd00:0:0:1::/64"), gw: ip("fd00:0:0:1::1"),
			want: summary{Free: 1<<20 - 2, BlockSize: 16, Blocks: 1 << 16, First: ip("fd00:0:0:1::2")}},
		{name: "ipv6 /120", cidr: pfx("fd00::100/120"), gw: ip("fd00::101"),
			want: summary{Free: 254, BlockSize: 16, Blocks: 16, First: ip("fd00::102")}},
		{name: "ipv6 /127", cidr: pfx("fd00::/127"),
			want: summary{Free: 2, BlockSize: 1, Blocks: 2, First: ip("fd00::")}},
		{name: "gateway outside", cidr: pfx("10.0.1.0/24"), gw: ip("10.0.2.1"), wantErr: ErrOutOfRange},
		{name: "gateway of the other family", cidr: pfx("10.0.1.0/24"), gw: ip("fd00::1"), wantErr: ErrOutOfRange},
		{name: "invalid prefix", cidr: netip.Prefix{}, wantErr: ErrOutOfRange},
		{name: "block size not a power of two", cidr: pfx("10.0.1.0/24"), blockSize: 12, wantErr: errAny},
		{name: "negative block size", cidr: pfx("10.0.1.0/24"), blockSize: -16, wantErr: errAny},
		{name: "/32 that is the gateway", cidr: pfx("10.0.1.9/32"), gw: ip("10.0.1.9"), wantErr: ErrExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPool(tt.cidr, tt.gw, tt.blockSize)
			if tt.wantErr != nil {
				if err == nil || (tt.wantErr != errAny && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("NewPool() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewPool() error = %v", err)
			}
			first, err := p.Allocate("h1")
			if err != nil {
				t.Fatalf("Allocate() error = %v", err)
			}
			got := summary{Free: p.Free() + 1, BlockSize: p.BlockSize(), Blocks: p.nblocks, First: first}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("pool (-want +got):\n%s", diff)
			}
			if got := p.Prefix(); got != tt.cidr.Masked() {
				t.Errorf("Prefix() = %s, want %s", got, tt.cidr.Masked())
			}
			if got := p.Gateway(); got != tt.gw {
				t.Errorf("Gateway() = %s, want %s", got, tt.gw)
			}
		})
	}
}

// errAny in a table means "any non-nil error".
var errAny = errors.New("any error")

// TestExhaustion allocates whole subnets, over one host, a few, and more hosts
// than blocks, and checks every usable address comes out exactly once.
func TestExhaustion(t *testing.T) {
	tests := []struct {
		name      string
		cidr      netip.Prefix
		gw        netip.Addr
		blockSize int
		hosts     int
		want      int
	}{
		{name: "/28 one host", cidr: pfx("10.0.0.0/28"), gw: ip("10.0.0.1"), hosts: 1, want: 13},
		{name: "/28 three hosts", cidr: pfx("10.0.0.0/28"), gw: ip("10.0.0.1"), hosts: 3, want: 13},
		{name: "/28 more hosts than blocks", cidr: pfx("10.0.0.0/28"), gw: ip("10.0.0.1"), hosts: 20, want: 13},
		{name: "/28 gateway in the middle", cidr: pfx("10.0.0.0/28"), gw: ip("10.0.0.7"), hosts: 5, want: 13},
		{name: "/30", cidr: pfx("10.0.0.0/30"), gw: ip("10.0.0.1"), hosts: 2, want: 1},
		{name: "/24 many hosts", cidr: pfx("10.0.0.0/24"), gw: ip("10.0.0.1"), hosts: 50, want: 253},
		{name: "ipv6 /122", cidr: pfx("fd00::/122"), gw: ip("fd00::1"), hosts: 7, want: 62},
		{name: "/20 in blocks of 4 over 4 pages, 300 hosts", cidr: pfx("10.0.0.0/20"), gw: ip("10.0.0.1"),
			blockSize: 4, hosts: 300, want: 4093},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPool(tt.cidr, tt.gw, tt.blockSize)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[netip.Addr]string{}
			for i := 0; ; i++ {
				host := fmt.Sprintf("h%d", i%tt.hosts)
				a, err := p.Allocate(host)
				if errors.Is(err, ErrExhausted) {
					break
				}
				if err != nil {
					t.Fatalf("Allocate(%s): %v", host, err)
				}
				if prev, dup := seen[a]; dup {
					t.Fatalf("Allocate(%s) = %s, already given to %s", host, a, prev)
				}
				if !tt.cidr.Contains(a) || a == tt.gw || a == tt.cidr.Addr() ||
					(a.Is4() && tt.cidr.Bits() <= 30 && a == lastAddr(tt.cidr)) {
					t.Fatalf("Allocate(%s) = %s: not a usable address of %s", host, a, tt.cidr)
				}
				seen[a] = host
				if len(seen) > tt.want {
					t.Fatalf("allocated %d addresses, want %d", len(seen), tt.want)
				}
			}
			if len(seen) != tt.want {
				t.Errorf("allocated %d addresses, want %d", len(seen), tt.want)
			}
			if p.Free() != 0 {
				t.Errorf("Free() = %d on a full pool", p.Free())
			}
			checkInvariants(t, p)
			for a := range seen {
				p.Release(a)
			}
			if p.Free() != tt.want {
				t.Errorf("Free() after releasing all = %d, want %d", p.Free(), tt.want)
			}
			for h := range tt.hosts {
				if b := p.Blocks(fmt.Sprintf("h%d", h)); b != nil {
					t.Errorf("Blocks(h%d) after releasing all = %v", h, b)
				}
			}
			checkInvariants(t, p)
			if n := countHosts(p); n != 0 {
				t.Errorf("%d host states left after releasing all", n)
			}
		})
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	n := binary32(a) | (1<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func binary32(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}

func countHosts(p *Pool) int {
	n := 0
	p.hosts.Range(func(any, any) bool { n++; return true })
	return n
}

func TestReserve(t *testing.T) {
	p, err := NewPool(pfx("10.0.1.0/24"), ip("10.0.1.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	allocated, err := p.Allocate("h1") // 10.0.1.2, claims 10.0.1.0/28 for h1
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ip      netip.Addr
		host    string
		wantErr error
	}{
		{name: "free address in a free block", ip: ip("10.0.1.40"), host: "h2"},
		{name: "same address again", ip: ip("10.0.1.40"), host: "h2", wantErr: ErrInUse},
		{name: "same address for another host", ip: ip("10.0.1.40"), host: "h3", wantErr: ErrInUse},
		{name: "allocated address", ip: allocated, host: "h3", wantErr: ErrInUse},
		{name: "free address in another host's block", ip: ip("10.0.1.3"), host: "h3"},
		{name: "ipv4-mapped", ip: ip("::ffff:10.0.1.41"), host: "h2"},
		{name: "gateway", ip: ip("10.0.1.1"), host: "h2", wantErr: ErrOutOfRange},
		{name: "network", ip: ip("10.0.1.0"), host: "h2", wantErr: ErrOutOfRange},
		{name: "broadcast", ip: ip("10.0.1.255"), host: "h2", wantErr: ErrOutOfRange},
		{name: "outside", ip: ip("10.0.2.5"), host: "h2", wantErr: ErrOutOfRange},
		{name: "other family", ip: ip("fd00::5"), host: "h2", wantErr: ErrOutOfRange},
		{name: "zero addr", ip: netip.Addr{}, host: "h2", wantErr: ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.Reserve(tt.ip, tt.host); !errors.Is(err, tt.wantErr) {
				t.Errorf("Reserve(%s, %s) error = %v, want %v", tt.ip, tt.host, err, tt.wantErr)
			}
		})
	}
	for _, a := range []netip.Addr{allocated, ip("10.0.1.3"), ip("10.0.1.40"), ip("10.0.1.41")} {
		if !p.InUse(a) {
			t.Errorf("InUse(%s) = false", a)
		}
	}
	for _, a := range []netip.Addr{ip("10.0.1.4"), ip("10.0.1.1"), ip("10.0.1.0"), ip("10.0.2.5")} {
		if p.InUse(a) {
			t.Errorf("InUse(%s) = true", a)
		}
	}
	want := map[string][]netip.Prefix{
		"h1": {pfx("10.0.1.0/28")},
		"h2": {pfx("10.0.1.32/28")},
		"h3": nil, // its address went into h1's block
	}
	got := map[string][]netip.Prefix{}
	for h := range want {
		got[h] = p.Blocks(h)
	}
	if diff := cmp.Diff(want, got, cmpPrefix); diff != "" {
		t.Errorf("Blocks (-want +got):\n%s", diff)
	}
	if p.Free() != 253-4 {
		t.Errorf("Free() = %d, want %d", p.Free(), 253-4)
	}
	checkInvariants(t, p)
}

var cmpPrefix = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestReleaseAndReuse(t *testing.T) {
	// /29: .2-.6 usable, blocks of 2.
	p, err := NewPool(pfx("10.0.0.0/29"), ip("10.0.0.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Addr
	for range 5 {
		a, err := p.Allocate("h")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	want := []netip.Addr{ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.6")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("allocations (-want +got):\n%s", diff)
	}
	p.Release(ip("10.0.0.4"))
	p.Release(ip("10.0.0.4")) // twice: a no-op
	p.Release(ip("10.0.0.1")) // gateway: a no-op
	p.Release(ip("10.0.0.7")) // broadcast: a no-op
	p.Release(ip("10.9.9.9")) // outside: a no-op
	if p.Free() != 1 {
		t.Fatalf("Free() = %d, want 1", p.Free())
	}
	if p.InUse(ip("10.0.0.4")) {
		t.Errorf("InUse(10.0.0.4) after Release")
	}
	a, err := p.Allocate("other")
	if err != nil || a != ip("10.0.0.4") {
		t.Errorf("Allocate() = %s, %v; want the released 10.0.0.4", a, err)
	}
	if _, err := p.Allocate("h"); !errors.Is(err, ErrExhausted) {
		t.Errorf("Allocate() on a full pool: error = %v, want ErrExhausted", err)
	}
	checkInvariants(t, p)
}

// TestNextFitInBlock checks a released address is not handed out again
// before the rest of its block.
func TestNextFitInBlock(t *testing.T) {
	p, err := NewPool(pfx("10.0.0.0/24"), ip("10.0.0.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // .2 .3 .4
		if _, err := p.Allocate("h"); err != nil {
			t.Fatal(err)
		}
	}
	p.Release(ip("10.0.0.3"))
	if a, _ := p.Allocate("h"); a != ip("10.0.0.5") {
		t.Errorf("Allocate() after releasing .3 = %s, want 10.0.0.5", a)
	}
}

func TestBlockReclaim(t *testing.T) {
	p, err := NewPool(pfx("10.0.1.0/24"), ip("10.0.1.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	var h1 []netip.Addr
	for range 14 { // fills 10.0.1.0/28 (.2-.15)
		a, err := p.Allocate("h1")
		if err != nil {
			t.Fatal(err)
		}
		h1 = append(h1, a)
	}
	steps := []struct {
		name string
		do   func(t *testing.T)
		want map[string][]netip.Prefix
	}{
		{
			name: "first block full",
			do:   func(t *testing.T) {},
			want: map[string][]netip.Prefix{"h1": {pfx("10.0.1.0/28")}},
		},
		{
			name: "second block claimed",
			do: func(t *testing.T) {
				a, err := p.Allocate("h1")
				if err != nil || a != ip("10.0.1.16") {
					t.Fatalf("Allocate(h1) = %s, %v; want 10.0.1.16", a, err)
				}
			},
			want: map[string][]netip.Prefix{"h1": {pfx("10.0.1.0/28"), pfx("10.0.1.16/28")}},
		},
		{
			name: "emptied block released",
			do:   func(t *testing.T) { p.Release(ip("10.0.1.16")) },
			want: map[string][]netip.Prefix{"h1": {pfx("10.0.1.0/28")}},
		},
		{
			name: "released block moves to another host",
			do: func(t *testing.T) {
				a, err := p.Allocate("h2")
				if err != nil || !pfx("10.0.1.16/28").Contains(a) {
					t.Fatalf("Allocate(h2) = %s, %v; want an address of 10.0.1.16/28", a, err)
				}
			},
			want: map[string][]netip.Prefix{"h1": {pfx("10.0.1.0/28")}, "h2": {pfx("10.0.1.16/28")}},
		},
		{
			name: "host empties its only block",
			do: func(t *testing.T) {
				for _, a := range h1 {
					p.Release(a)
				}
			},
			want: map[string][]netip.Prefix{"h1": nil, "h2": {pfx("10.0.1.16/28")}},
		},
		{
			name: "host comes back",
			do: func(t *testing.T) {
				a, err := p.Allocate("h1")
				if err != nil || !pfx("10.0.1.0/28").Contains(a) {
					t.Fatalf("Allocate(h1) = %s, %v; want an address of the block it gave back", a, err)
				}
			},
			want: map[string][]netip.Prefix{"h1": {pfx("10.0.1.0/28")}, "h2": {pfx("10.0.1.16/28")}},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do(t)
			got := map[string][]netip.Prefix{}
			for h := range s.want {
				got[h] = p.Blocks(h)
			}
			if diff := cmp.Diff(s.want, got, cmpPrefix); diff != "" {
				t.Errorf("Blocks (-want +got):\n%s", diff)
			}
			checkInvariants(t, p)
		})
	}
}

// TestStealWhenNoBlockIsFree: with every block owned, a new host takes a
// free address from another host's block without owning it.
func TestStealWhenNoBlockIsFree(t *testing.T) {
	p, err := NewPool(pfx("10.0.0.0/28"), ip("10.0.0.1"), 0) // 4 blocks of 4
	if err != nil {
		t.Fatal(err)
	}
	for h := range 4 {
		if _, err := p.Allocate(fmt.Sprintf("h%d", h)); err != nil {
			t.Fatal(err)
		}
	}
	a, err := p.Allocate("late")
	if err != nil {
		t.Fatalf("Allocate(late) with all blocks owned: %v", err)
	}
	if b := p.Blocks("late"); b != nil {
		t.Errorf("Blocks(late) = %v, want none", b)
	}
	if n := countHosts(p); n != 4 {
		t.Errorf("%d host states, want 4 (no state kept for a host without blocks)", n)
	}
	// Releasing the stolen address leaves the block with its owner.
	p.Release(a)
	checkInvariants(t, p)
}

// TestSeedRandomOrder reserves part of a subnet in random order, as a
// restarted controller does from etcd, then allocates the rest.
func TestSeedRandomOrder(t *testing.T) {
	tests := []struct {
		name      string
		cidr      netip.Prefix
		blockSize int
	}{
		{name: "/22 one page", cidr: pfx("10.8.0.0/22"), blockSize: 16},
		{name: "/18 in blocks of 4, 16 pages", cidr: pfx("10.8.0.0/18"), blockSize: 4},
	}
	for _, tt := range tests {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s seed %d", tt.name, seed), func(t *testing.T) {
				testSeed(t, tt.cidr, tt.blockSize, seed)
			})
		}
	}
}

func testSeed(t *testing.T, cidr netip.Prefix, blockSize int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	gw := cidr.Addr().Next()
	p, err := NewPool(cidr, gw, blockSize)
	if err != nil {
		t.Fatal(err)
	}
	if p.BlockSize() != blockSize {
		t.Fatalf("BlockSize() = %d, want %d", p.BlockSize(), blockSize)
	}
	usable := p.Free()
	hosts := []string{"a", "b", "c", "d", "e", "f", "g", "h"}

	// Pick addresses to seed, each with a host, in random order.
	type seedEntry struct {
		ip   netip.Addr
		host string
	}
	var seeds []seedEntry
	for a := cidr.Addr().Next(); cidr.Contains(a); a = a.Next() {
		if a == gw || a == lastAddr(cidr) || rng.IntN(10) >= 4 {
			continue
		}
		seeds = append(seeds, seedEntry{a, hosts[rng.IntN(len(hosts))]})
	}
	rng.Shuffle(len(seeds), func(i, j int) { seeds[i], seeds[j] = seeds[j], seeds[i] })

	seeded := map[netip.Addr]bool{}
	wantBlocks := map[string][]netip.Prefix{}
	blockOwner := map[netip.Prefix]string{}
	for _, s := range seeds {
		if err := p.Reserve(s.ip, s.host); err != nil {
			t.Fatalf("Reserve(%s, %s): %v", s.ip, s.host, err)
		}
		seeded[s.ip] = true
		blk, _ := s.ip.Prefix(32 - bits.TrailingZeros(uint(blockSize)))
		if _, ok := blockOwner[blk]; !ok {
			blockOwner[blk] = s.host
			wantBlocks[s.host] = append(wantBlocks[s.host], blk)
		}
	}
	for _, blks := range wantBlocks {
		sortPrefixes(blks)
	}
	gotBlocks := map[string][]netip.Prefix{}
	for _, h := range hosts {
		if b := p.Blocks(h); b != nil {
			gotBlocks[h] = b
		}
	}
	if diff := cmp.Diff(wantBlocks, gotBlocks, cmpPrefix); diff != "" {
		t.Errorf("block ownership after seeding (-want +got):\n%s", diff)
	}
	if p.Free() != usable-len(seeds) {
		t.Errorf("Free() = %d after seeding %d of %d", p.Free(), len(seeds), usable)
	}
	checkInvariants(t, p)

	n := 0
	for i := 0; ; i++ {
		a, err := p.Allocate(hosts[i%len(hosts)] + "-new")
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if seeded[a] {
			t.Fatalf("Allocate() = %s, a seeded address", a)
		}
		seeded[a] = true
		n++
	}
	if n != usable-len(seeds) {
		t.Errorf("allocated %d after seeding %d, want %d", n, len(seeds), usable-len(seeds))
	}
	checkInvariants(t, p)
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
}

func TestPools(t *testing.T) {
	var ps Pools
	a, err := NewPool(pfx("10.0.1.0/24"), ip("10.0.1.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewPool(pfx("10.0.2.0/24"), ip("10.0.2.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ps.Get("acme/web-a"); ok {
		t.Fatal("Get on an empty Pools found a pool")
	}
	ps.Add("acme/web-a", a)
	if got, ok := ps.Get("acme/web-a"); !ok || got != a {
		t.Errorf("Get(acme/web-a) = %v, %v; want the added pool", got, ok)
	}
	if got, loaded := ps.LoadOrAdd("acme/web-a", b); !loaded || got != a {
		t.Errorf("LoadOrAdd on an existing key = %v, %v; want the first pool, true", got, loaded)
	}
	if got, loaded := ps.LoadOrAdd("acme/web-b", b); loaded || got != b {
		t.Errorf("LoadOrAdd on a new key = %v, %v; want the new pool, false", got, loaded)
	}
	ps.Add("acme/web-a", b)
	if got, _ := ps.Get("acme/web-a"); got != b {
		t.Errorf("Add did not replace the pool")
	}
	ps.Remove("acme/web-a")
	ps.Remove("nonexistent")
	if _, ok := ps.Get("acme/web-a"); ok {
		t.Errorf("Get after Remove found a pool")
	}
	if _, ok := ps.Get("acme/web-b"); !ok {
		t.Errorf("Remove removed another key")
	}
}

// TestReclaimBeforePrune replays an interleaving of Allocate and Release by
// hand: Allocate(h) finds its blocks full (allocOwned) and, before it claims
// a free block, a Release empties one of h's blocks and returns it to the
// pool without having pruned h's list yet. The claim then pops that same
// block (the free stack is LIFO): h must list it once, not twice.
func TestReclaimBeforePrune(t *testing.T) {
	p, err := NewPool(pfx("10.0.0.0/24"), ip("10.0.0.1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 14 { // fill 10.0.0.0/28
		if _, err := p.Allocate("h"); err != nil {
			t.Fatal(err)
		}
	}
	a, err := p.Allocate("h") // claims 10.0.0.16/28
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := p.usableIndex(a)
	if owner := p.releaseIndex(idx); owner == nil || owner.name != "h" {
		t.Fatalf("releaseIndex(%s) = %v, want h's state", a, owner)
	}
	hs := p.lockHost("h")
	_, ok := p.claim(hs)
	n := len(hs.blocks)
	hs.mu.Unlock()
	if !ok {
		t.Fatal("claim found no free block")
	}
	if n != 2 {
		t.Errorf("h lists %d blocks, want 2", n)
	}
	want := []netip.Prefix{pfx("10.0.0.0/28"), pfx("10.0.0.16/28")}
	if diff := cmp.Diff(want, p.Blocks("h"), cmpPrefix); diff != "" {
		t.Errorf("Blocks(h) (-want +got):\n%s", diff)
	}
	checkInvariants(t, p)
}

// TestLazyPages checks that block state is created only for the pages that
// are used.
func TestLazyPages(t *testing.T) {
	p, err := NewPool(pfx("fd00:0:0:7::/64"), ip("fd00:0:0:7::1"), 0) // 2^16 blocks, 256 pages
	if err != nil {
		t.Fatal(err)
	}
	if p.pagesMade != 0 {
		t.Fatalf("a new pool has %d pages", p.pagesMade)
	}
	far := ip("fd00:0:0:7::f:ff00") // in the last page
	if p.InUse(far) {
		t.Errorf("InUse(%s) in an untouched page", far)
	}
	p.Release(far) // no-op on an untouched page
	for i := range 100 {
		if _, err := p.Allocate(fmt.Sprintf("h%d", i%10)); err != nil {
			t.Fatal(err)
		}
	}
	if p.pagesMade != 1 {
		t.Errorf("100 allocations made %d pages, want 1", p.pagesMade)
	}
	if err := p.Reserve(far, "h1"); err != nil {
		t.Fatal(err)
	}
	if p.pagesMade != 2 || !p.InUse(far) {
		t.Errorf("after Reserve(%s): %d pages, InUse %v; want 2, true", far, p.pagesMade, p.InUse(far))
	}
	if diff := cmp.Diff([]netip.Prefix{pfx("fd00:0:0:7::10/124"), pfx("fd00:0:0:7::f:ff00/124")}, p.Blocks("h1"), cmpPrefix); diff != "" {
		t.Errorf("Blocks(h1) (-want +got):\n%s", diff)
	}
	checkInvariants(t, p)
}
