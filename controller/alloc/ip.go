package alloc

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// Block sizing and the tracked range of a Pool.
const (
	// DefaultBlockSize is the number of addresses in a block when NewPool is
	// given 0.
	DefaultBlockSize = 16
	// MinBlocks is the fewest blocks a pool is cut into: for tiny subnets
	// the block size is halved until there are at least this many (down to
	// blocks of one address).
	MinBlocks = 4
	// MaxTrackedBitsV4 caps the tracked range of an IPv4 pool at 2^24
	// addresses (a /8; fully used, about 34 MiB of block state at the
	// default block size). A shorter prefix tracks only its first 2^24
	// addresses.
	MaxTrackedBitsV4 = 24
	// MaxTrackedBitsV6 caps the tracked range of an IPv6 pool at 2^20
	// addresses: a /64 would otherwise need a 2^64-bit bitmap. Addresses
	// are allocated (and Reserve accepts addresses) only among the first
	// 2^20 addresses of the subnet, which is far more than any one subnet
	// hosts, and keeps them unique in their last 32 bits (see MAC).
	MaxTrackedBitsV6 = 20
)

// pageBlocks is the number of blocks whose state is allocated together, on
// first use: a pool costs memory for the pages it touches, not for its whole
// range (an untouched IPv6 /64 pool is a few KiB, not megabytes).
const pageBlocks = 256

// Pool allocates the addresses of one subnet, handing each host whole blocks
// of addresses; see the package documentation for the scheme. A Pool is safe
// for concurrent use.
//
// Lock order: hostState.mu, then Pool.mu, then block.mu. Nothing else is held
// while a lock is taken out of that order.
type Pool struct {
	prefix  netip.Prefix // masked
	gateway netip.Addr   // zero if none
	is4     bool
	size    int // tracked addresses; a power of two
	shift   int // log2(block size)
	usable  int // size minus network, broadcast and gateway
	// Indexes (offsets from the network address) that are never handed
	// out; -1 when absent.
	netIdx, bcastIdx, gwIdx int
	nblocks                 int
	pageShift               int // log2(blocks per page)

	// pages holds the state of the blocks, created on first use (a claim
	// or a Reserve) with Pool.mu held and never removed. A block in a
	// page that does not exist yet is free and unowned.
	pages []atomic.Pointer[page]
	used  atomic.Int64
	// stealNext is where the next search of other hosts' blocks starts.
	stealNext atomic.Int64

	hosts sync.Map // host name -> *hostState

	mu sync.Mutex // guards freeStack, block.freePos, pagesMade, freshPage
	// freeStack holds the unowned blocks with usable addresses of the pages
	// that exist. It is a LIFO stack, so a host that empties a block and
	// then allocates again gets the same block back.
	freeStack []int32
	pagesMade int
	freshPage int // where the search for a page to create starts
}

// page is the state of pageBlocks consecutive blocks (fewer in small pools).
type page struct {
	blocks []block
	// bits holds one bit per address of the page: set when allocated, and
	// permanently set for the network, broadcast and gateway addresses.
	// Bits are changed only with the lock of their block held; they are
	// atomic because blocks smaller than 64 addresses share a word.
	bits []atomic.Uint64
}

// block is a run of 1<<Pool.shift addresses.
//
// Invariants, for a block with usable > 0 in a page that exists: owner == nil
// exactly when the block is on the free stack, and then used == 0. The owner
// changes only with both Pool.mu and block.mu held (and, when set, the new
// owner's lock too).
type block struct {
	mu      sync.Mutex
	owner   *hostState
	used    int32 // allocated addresses
	usable  int32 // addresses that may be allocated
	next    int32 // next-fit cursor, an offset within the block
	freePos int32 // position on Pool.freeStack or -1; guarded by Pool.mu
}

// hostState is one host's claim on a pool.
type hostState struct {
	name string

	mu sync.Mutex
	// blocks lists the blocks the host owns. It may hold stale entries for
	// blocks that Release returned to the pool; they are dropped lazily
	// (compact). No block is listed twice.
	blocks []int32
	cur    int  // position in blocks of the block allocated from last
	dead   bool // removed from Pool.hosts; look the host up again
}

// NewPool returns a pool for the subnet cidr with the given gateway, cutting
// it into blocks of blockSize addresses (0 means DefaultBlockSize; otherwise
// it must be a power of two). The block size is lowered for small subnets so
// that there are at least MinBlocks blocks.
//
// The usable addresses exclude the network address (for prefixes of up to
// /30 or /126; /31 and /127 are point-to-point links where both addresses
// are usable), the IPv4 broadcast address and the gateway. gateway may be the
// zero Addr for a subnet without one; otherwise it must lie inside cidr.
// Only the first 2^MaxTrackedBitsV4 or 2^MaxTrackedBitsV6 addresses of a large
// subnet are used.
func NewPool(cidr netip.Prefix, gateway netip.Addr, blockSize int) (*Pool, error) {
	if !cidr.IsValid() {
		return nil, fmt.Errorf("new pool: invalid prefix %s: %w", cidr, ErrOutOfRange)
	}
	cidr = cidr.Masked()
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if blockSize < 0 || blockSize&(blockSize-1) != 0 {
		return nil, fmt.Errorf("new pool %s: block size %d is not a power of two", cidr, blockSize)
	}
	p := &Pool{prefix: cidr, is4: cidr.Addr().Is4(), netIdx: -1, bcastIdx: -1, gwIdx: -1}
	hostBits := cidr.Addr().BitLen() - cidr.Bits()
	maxBits := MaxTrackedBitsV6
	if p.is4 {
		maxBits = MaxTrackedBitsV4
	}
	trackedBits := min(hostBits, maxBits)
	p.size = 1 << trackedBits

	if hostBits >= 2 {
		p.netIdx = 0
		if p.is4 && trackedBits == hostBits {
			p.bcastIdx = p.size - 1
		}
	}
	if gateway.IsValid() {
		gw := gateway.WithZone("")
		if gw.Is4In6() && p.is4 {
			gw = gw.Unmap()
		}
		if gw.Is4() != p.is4 || !cidr.Contains(gw) {
			return nil, fmt.Errorf("new pool %s: gateway %s is outside the subnet: %w", cidr, gateway, ErrOutOfRange)
		}
		p.gateway = gw
		if idx, ok := p.index(gw); ok && idx != p.netIdx && idx != p.bcastIdx {
			p.gwIdx = idx
		}
	}
	p.usable = p.size
	for _, idx := range p.systemIndexes() {
		if idx >= 0 {
			p.usable--
		}
	}
	if p.usable <= 0 {
		return nil, fmt.Errorf("new pool %s gateway %s: no usable addresses: %w", cidr, gateway, ErrExhausted)
	}

	for blockSize > 1 && p.size/blockSize < MinBlocks {
		blockSize /= 2
	}
	p.shift = bits.TrailingZeros(uint(blockSize))
	p.nblocks = p.size >> p.shift
	p.pageShift = bits.TrailingZeros(uint(min(p.nblocks, pageBlocks)))
	p.pages = make([]atomic.Pointer[page], p.nblocks>>p.pageShift)
	return p, nil
}

// systemIndexes returns the indexes of the network, broadcast and gateway
// addresses, -1 for those the pool has not.
func (p *Pool) systemIndexes() [3]int { return [3]int{p.netIdx, p.bcastIdx, p.gwIdx} }

// block returns the state of block bi, or nil if its page does not exist.
func (p *Pool) block(bi int32) *block {
	pg := p.pages[bi>>p.pageShift].Load()
	if pg == nil {
		return nil
	}
	return &pg.blocks[int(bi)&(1<<p.pageShift-1)]
}

// bit returns the bitmap word and mask of address idx.
func (p *Pool) bit(pg *page, idx int) (*atomic.Uint64, uint64) {
	off := idx & (1<<(p.pageShift+p.shift) - 1)
	return &pg.bits[off/64], 1 << (off % 64)
}

// makePage creates page pi and puts its blocks on the free stack. p.mu is
// held and the page does not exist.
func (p *Pool) makePage(pi int) *page {
	nb := 1 << p.pageShift
	addrs := nb << p.shift
	pg := &page{blocks: make([]block, nb), bits: make([]atomic.Uint64, (addrs+63)/64)}
	for i := range pg.blocks {
		pg.blocks[i].usable = int32(1 << p.shift)
		pg.blocks[i].freePos = -1
	}
	base := pi * addrs
	for _, idx := range p.systemIndexes() {
		if idx >= base && idx < base+addrs {
			w, m := p.bit(pg, idx)
			w.Or(m)
			pg.blocks[(idx-base)>>p.shift].usable--
		}
	}
	p.pages[pi].Store(pg)
	p.pagesMade++
	// Lowest block on top, so that blocks are claimed in address order.
	for i := nb - 1; i >= 0; i-- {
		if pg.blocks[i].usable > 0 {
			p.pushFree(int32(pi*nb+i), &pg.blocks[i])
		}
	}
	return pg
}

// Prefix returns the subnet of the pool.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// Gateway returns the gateway address, or the zero Addr if there is none.
func (p *Pool) Gateway() netip.Addr { return p.gateway }

// BlockSize returns the number of addresses in a block.
func (p *Pool) BlockSize() int { return 1 << p.shift }

// Free returns the number of usable addresses not allocated.
func (p *Pool) Free() int { return p.usable - int(p.used.Load()) }

// Allocate returns a free address for an endpoint on host and marks it used.
// It takes the address from a block the host owns; when those are full it
// claims a free block for the host; when no block is free it takes an
// address from another host's block, so the whole subnet is usable whatever
// the number of hosts. It returns an error wrapping ErrExhausted when the
// subnet is full.
func (p *Pool) Allocate(host string) (netip.Addr, error) {
	// A few rounds, because a concurrent Release can return a block to the
	// free stack just after this host found the stack empty.
	for range 4 {
		if idx, ok := p.allocateForHost(host); ok {
			return p.addr(idx), nil
		}
		if idx, ok := p.steal(); ok {
			return p.addr(idx), nil
		}
		if p.Free() <= 0 {
			break
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate address in %s for host %q: %w", p.prefix, host, ErrExhausted)
}

// allocateForHost allocates from the blocks host owns, or from a block it
// claims from the free stack.
func (p *Pool) allocateForHost(host string) (int, bool) {
	hs := p.lockHost(host)
	defer hs.mu.Unlock()
	if idx, ok := p.allocOwned(hs); ok {
		return idx, true
	}
	if idx, ok := p.claim(hs); ok {
		return idx, true
	}
	p.dropIfEmpty(hs)
	return -1, false
}

// lockHost returns the state of host, locked, creating it if needed.
func (p *Pool) lockHost(host string) *hostState {
	for {
		v, ok := p.hosts.Load(host)
		if !ok {
			v, _ = p.hosts.LoadOrStore(host, &hostState{name: host})
		}
		hs := v.(*hostState)
		hs.mu.Lock()
		if !hs.dead {
			return hs
		}
		hs.mu.Unlock()
	}
}

// dropIfEmpty removes hs from the pool when it owns no block. hs.mu is held.
func (p *Pool) dropIfEmpty(hs *hostState) {
	if len(hs.blocks) == 0 && !hs.dead {
		hs.dead = true
		p.hosts.CompareAndDelete(hs.name, hs)
	}
}

// allocOwned allocates from a block hs owns. hs.mu is held.
func (p *Pool) allocOwned(hs *hostState) (int, bool) {
	if len(hs.blocks) == 0 {
		return -1, false
	}
	// Fast path: the block allocated from last.
	if idx, ok := p.tryBlock(hs, hs.blocks[hs.cur]); ok {
		return idx, true
	}
	// Slow path, once per block filled: drop stale entries, then try every
	// owned block, starting after the current one.
	p.compact(hs)
	n := len(hs.blocks)
	for k := 1; k <= n; k++ {
		j := (hs.cur + k) % n
		if idx, ok := p.tryBlock(hs, hs.blocks[j]); ok {
			hs.cur = j
			return idx, true
		}
	}
	return -1, false
}

// tryBlock allocates from block bi if hs owns it and it has room.
func (p *Pool) tryBlock(hs *hostState, bi int32) (int, bool) {
	b := p.block(bi) // exists: hs listed it
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.owner != hs || b.used >= b.usable {
		return -1, false
	}
	return p.take(b, bi), true
}

// compact drops the blocks hs no longer owns from its list, keeping cur on
// the same block if it is still owned. hs.mu is held.
func (p *Pool) compact(hs *hostState) {
	kept := hs.blocks[:0]
	cur := 0
	for j, bi := range hs.blocks {
		b := p.block(bi)
		b.mu.Lock()
		owned := b.owner == hs
		b.mu.Unlock()
		if !owned {
			continue
		}
		if j == hs.cur {
			cur = len(kept)
		}
		kept = append(kept, bi)
	}
	clear(hs.blocks[len(kept):])
	hs.blocks = kept
	hs.cur = cur
}

// claim takes a block off the free stack for hs, creating a page if the
// stack is empty, and allocates from it. hs.mu is held.
func (p *Pool) claim(hs *hostState) (int, bool) {
	p.mu.Lock()
	for len(p.freeStack) == 0 {
		if p.pagesMade == len(p.pages) {
			p.mu.Unlock()
			return -1, false
		}
		for p.pages[p.freshPage].Load() != nil {
			p.freshPage = (p.freshPage + 1) % len(p.pages)
		}
		p.makePage(p.freshPage)
	}
	bi := p.freeStack[len(p.freeStack)-1]
	b := p.block(bi)
	p.removeFree(b)
	b.mu.Lock()
	b.owner = hs
	p.mu.Unlock()
	idx := p.take(b, bi)
	b.mu.Unlock()
	hs.addBlock(bi)
	return idx, true
}

// addBlock lists bi as owned by hs and makes it the current block. hs.mu is
// held. The list may still hold bi from before the block was released and
// claimed again; it is not listed twice.
func (hs *hostState) addBlock(bi int32) {
	if j := slices.Index(hs.blocks, bi); j >= 0 {
		hs.cur = j
		return
	}
	hs.blocks = append(hs.blocks, bi)
	hs.cur = len(hs.blocks) - 1
}

// steal allocates a free address from any owned block, visiting the pages
// that exist. It holds only one block lock at a time.
func (p *Pool) steal() (int, bool) {
	npages := len(p.pages)
	nb := 1 << p.pageShift
	start := int(p.stealNext.Load()) >> p.pageShift % npages
	for k := range npages {
		pi := (start + k) % npages
		pg := p.pages[pi].Load()
		if pg == nil {
			continue
		}
		for i := range pg.blocks {
			b := &pg.blocks[i]
			b.mu.Lock()
			if b.owner != nil && b.used < b.usable {
				bi := int32(pi*nb + i)
				idx := p.take(b, bi)
				b.mu.Unlock()
				p.stealNext.Store(int64(bi))
				return idx, true
			}
			b.mu.Unlock()
		}
	}
	return -1, false
}

// take marks the next free address of block bi used and returns its index.
// b.mu is held and the block has a free address.
func (p *Pool) take(b *block, bi int32) int {
	pg := p.pages[bi>>p.pageShift].Load()
	size := 1 << p.shift
	pageBase := int(bi>>p.pageShift) << (p.pageShift + p.shift)
	lo := int(bi)<<p.shift - pageBase // offset of the block in its page
	off, ok := findFree(pg.bits, lo+int(b.next), lo+size)
	if !ok {
		off, ok = findFree(pg.bits, lo, lo+int(b.next))
	}
	if !ok {
		panic(fmt.Sprintf("alloc: block %d of %s counts %d of %d used but has no free address", bi, p.prefix, b.used, b.usable))
	}
	pg.bits[off/64].Or(1 << (off % 64))
	b.used++
	b.next = int32((off + 1 - lo) % size)
	p.used.Add(1)
	return pageBase + off
}

// findFree returns the first offset in [lo, hi) whose bit is clear.
func findFree(bitmap []atomic.Uint64, lo, hi int) (int, bool) {
	for i := lo; i < hi; {
		w := i / 64
		free := ^bitmap[w].Load() & (^uint64(0) << (i % 64))
		if end := hi - w*64; end < 64 {
			free &= 1<<end - 1
		}
		if free != 0 {
			return w*64 + bits.TrailingZeros64(free), true
		}
		i = (w + 1) * 64
	}
	return -1, false
}

// Reserve marks ip used on behalf of host: a static address an endpoint asked
// for, or, when the controller restarts, an address recorded in etcd. If the
// block of ip is free it is claimed for host, so seeding a pool with Reserve
// in any order rebuilds the block ownership (a block holding addresses of
// several hosts goes to the first one seen). It returns an error wrapping
// ErrOutOfRange if ip is not a usable address of the pool and ErrInUse if it
// is already used.
func (p *Pool) Reserve(ip netip.Addr, host string) error {
	idx, ok := p.usableIndex(ip)
	if !ok {
		return fmt.Errorf("reserve %s in %s: %w", ip, p.prefix, ErrOutOfRange)
	}
	bi := int32(idx >> p.shift)
	if b := p.block(bi); b != nil {
		b.mu.Lock()
		if b.owner != nil {
			err := p.mark(b, idx)
			b.mu.Unlock()
			if err != nil {
				return fmt.Errorf("reserve %s in %s: %w", ip, p.prefix, err)
			}
			return nil
		}
		b.mu.Unlock()
	}

	// The block is free: claim it for host, taking the locks in order.
	hs := p.lockHost(host)
	defer hs.mu.Unlock()
	p.mu.Lock()
	if pi := int(bi >> p.pageShift); p.pages[pi].Load() == nil {
		p.makePage(pi)
	}
	b := p.block(bi)
	b.mu.Lock()
	if b.owner == nil {
		p.removeFree(b)
		b.owner = hs
		hs.addBlock(bi)
	}
	p.mu.Unlock()
	err := p.mark(b, idx)
	b.mu.Unlock()
	p.dropIfEmpty(hs) // someone else claimed the block meanwhile
	if err != nil {
		return fmt.Errorf("reserve %s in %s: %w", ip, p.prefix, err)
	}
	return nil
}

// mark sets the bit of idx in block b. b.mu is held.
func (p *Pool) mark(b *block, idx int) error {
	w, m := p.bit(p.pages[idx>>(p.pageShift+p.shift)].Load(), idx)
	if w.Load()&m != 0 {
		return ErrInUse
	}
	w.Or(m)
	b.used++
	p.used.Add(1)
	return nil
}

// Release gives ip back. When its block becomes empty the block leaves its
// owner and may be claimed by any host. Releasing a free address or one that
// is not usable does nothing.
func (p *Pool) Release(ip netip.Addr) {
	idx, ok := p.usableIndex(ip)
	if !ok {
		return
	}
	if owner := p.releaseIndex(idx); owner != nil {
		p.prune(owner)
	}
}

// releaseIndex clears the bit of idx and, if that empties its block, returns
// the block to the free stack and returns the block's former owner, whose
// list now holds a stale entry.
func (p *Pool) releaseIndex(idx int) *hostState {
	bi := int32(idx >> p.shift)
	pg := p.pages[bi>>p.pageShift].Load()
	if pg == nil {
		return nil // never allocated
	}
	b := p.block(bi)
	w, m := p.bit(pg, idx)
	b.mu.Lock()
	if w.Load()&m == 0 {
		b.mu.Unlock()
		return nil
	}
	w.And(^m)
	b.used--
	p.used.Add(-1)
	empty := b.used == 0
	b.mu.Unlock()
	if !empty {
		return nil
	}

	// Return the block to the free stack, taking the locks in order and
	// checking again: another address may have been taken meanwhile.
	p.mu.Lock()
	defer p.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	owner := b.owner
	if b.used != 0 || owner == nil {
		return nil
	}
	b.owner = nil
	p.pushFree(bi, b)
	return owner
}

// prune drops the blocks hs no longer owns from its list, and hs itself from
// the pool if it owns none.
func (p *Pool) prune(hs *hostState) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if !hs.dead {
		p.compact(hs)
		p.dropIfEmpty(hs)
	}
}

// InUse reports whether ip is allocated. It is false for addresses that are
// not usable (outside the pool, network, broadcast, gateway).
func (p *Pool) InUse(ip netip.Addr) bool {
	idx, ok := p.usableIndex(ip)
	if !ok {
		return false
	}
	pg := p.pages[idx>>(p.pageShift+p.shift)].Load()
	if pg == nil {
		return false
	}
	w, m := p.bit(pg, idx)
	return w.Load()&m != 0
}

// Blocks returns the blocks host owns, in address order, or nil if it owns
// none. A host may allocate any free address in its blocks; other hosts use
// them only when the pool has no free block left.
func (p *Pool) Blocks(host string) []netip.Prefix {
	v, ok := p.hosts.Load(host)
	if !ok {
		return nil
	}
	hs := v.(*hostState)
	hs.mu.Lock()
	if hs.dead {
		hs.mu.Unlock()
		return nil
	}
	p.compact(hs)
	owned := slices.Clone(hs.blocks)
	hs.mu.Unlock()
	if len(owned) == 0 {
		return nil
	}
	slices.Sort(owned)
	bitLen := p.prefix.Addr().BitLen() - p.shift
	out := make([]netip.Prefix, len(owned))
	for i, bi := range owned {
		out[i] = netip.PrefixFrom(p.addr(int(bi)<<p.shift), bitLen)
	}
	return out
}

// pushFree puts block bi (whose state is b) on the free stack. p.mu is held.
func (p *Pool) pushFree(bi int32, b *block) {
	b.freePos = int32(len(p.freeStack))
	p.freeStack = append(p.freeStack, bi)
}

// removeFree takes block b off the free stack. p.mu is held and b is on it.
func (p *Pool) removeFree(b *block) {
	pos := b.freePos
	last := p.freeStack[len(p.freeStack)-1]
	p.freeStack[pos] = last
	p.block(last).freePos = pos
	p.freeStack = p.freeStack[:len(p.freeStack)-1]
	b.freePos = -1
}

// addr returns the address at offset idx from the network address.
func (p *Pool) addr(idx int) netip.Addr {
	if p.is4 {
		a := p.prefix.Addr().As4()
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+uint32(idx))
		return netip.AddrFrom4(a)
	}
	a := p.prefix.Addr().As16()
	binary.BigEndian.PutUint64(a[8:], binary.BigEndian.Uint64(a[8:])+uint64(idx))
	return netip.AddrFrom16(a)
}

// index returns the offset of ip from the network address if ip is in the
// tracked range.
func (p *Pool) index(ip netip.Addr) (int, bool) {
	ip = ip.WithZone("")
	if p.is4 {
		ip = ip.Unmap()
	}
	if !ip.IsValid() || ip.Is4() != p.is4 || !p.prefix.Contains(ip) {
		return -1, false
	}
	if p.is4 {
		a, base := ip.As4(), p.prefix.Addr().As4()
		off := binary.BigEndian.Uint32(a[:]) - binary.BigEndian.Uint32(base[:])
		if uint64(off) >= uint64(p.size) {
			return -1, false
		}
		return int(off), true
	}
	a, base := ip.As16(), p.prefix.Addr().As16()
	if [8]byte(a[:8]) != [8]byte(base[:8]) {
		return -1, false
	}
	off := binary.BigEndian.Uint64(a[8:]) - binary.BigEndian.Uint64(base[8:])
	if off >= uint64(p.size) {
		return -1, false
	}
	return int(off), true
}

// usableIndex returns the offset of ip if ip may be allocated.
func (p *Pool) usableIndex(ip netip.Addr) (int, bool) {
	idx, ok := p.index(ip)
	if !ok || idx == p.netIdx || idx == p.bcastIdx || idx == p.gwIdx {
		return -1, false
	}
	return idx, true
}

// Pools holds the pools of all subnets, keyed by a string the caller chooses
// (for example "tenant/subnet"). The zero value is empty and ready to use; a
// Pools is safe for concurrent use and must not be copied after first use.
type Pools struct {
	m sync.Map // key -> *Pool
}

// Get returns the pool stored under key.
func (ps *Pools) Get(key string) (*Pool, bool) {
	v, ok := ps.m.Load(key)
	if !ok {
		return nil, false
	}
	return v.(*Pool), true
}

// Add stores p under key, replacing any pool stored there.
func (ps *Pools) Add(key string, p *Pool) { ps.m.Store(key, p) }

// LoadOrAdd returns the pool already stored under key, with loaded true, or
// stores p and returns it, with loaded false. Use it when two goroutines may
// create the pool of the same subnet.
func (ps *Pools) LoadOrAdd(key string, p *Pool) (actual *Pool, loaded bool) {
	v, loaded := ps.m.LoadOrStore(key, p)
	return v.(*Pool), loaded
}

// Remove deletes the pool stored under key, if any.
func (ps *Pools) Remove(key string) { ps.m.Delete(key) }
