package alloc

import (
	"fmt"
	"math/bits"
	"sync"
)

// VNI range limits. VXLAN carries a 24-bit VNI; 0 is not used.
const (
	// MinVNI is the smallest valid VXLAN network identifier.
	MinVNI uint32 = 1
	// MaxVNI is the largest valid VXLAN network identifier (2^24 - 1).
	MaxVNI uint32 = 1<<24 - 1
	// DefaultMinVNI is the start of the controller's default VNI range;
	// the VNIs below it are left for operators and static configuration.
	DefaultMinVNI uint32 = 4096
)

// VNIs allocates VXLAN network identifiers from the range [min, max].
//
// It is a bitmap with a next-fit cursor: Allocate scans forward from just
// after the last value it handed out, a word (64 values) at a time, and wraps
// at the end of the range. A value that was just released is therefore not
// handed out again until the cursor comes round, which keeps a failed etcd
// transaction or a slow delete from reusing a VNI that hosts may still have
// programmed. Allocation is O(1) amortised; the whole default range costs
// 2 MiB. A VNIs is safe for concurrent use.
type VNIs struct {
	min, max uint32

	mu   sync.Mutex
	bits []uint64 // bit i set: min+i in use; bits past the range are set
	next uint32   // offset of the next candidate, in [0, size)
	used int
}

// NewVNIs returns an allocator for the VNIs min..max inclusive, which must lie
// within MinVNI..MaxVNI.
func NewVNIs(min, max uint32) (*VNIs, error) {
	if min < MinVNI || max > MaxVNI || min > max {
		return nil, fmt.Errorf("new vni allocator %d-%d: range must lie within %d-%d: %w",
			min, max, MinVNI, MaxVNI, ErrOutOfRange)
	}
	size := max - min + 1
	v := &VNIs{min: min, max: max, bits: make([]uint64, (size+63)/64)}
	if tail := size % 64; tail != 0 {
		// Mark the bits past the end of the range as used so that the
		// word scan never returns them.
		v.bits[len(v.bits)-1] = ^uint64(0) << tail
	}
	return v, nil
}

// Allocate returns a free VNI and marks it used. It returns an error wrapping
// ErrExhausted when every VNI in the range is used.
func (v *VNIs) Allocate() (uint32, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	size := v.max - v.min + 1
	if uint32(v.used) == size {
		return 0, fmt.Errorf("allocate vni in %d-%d: %w", v.min, v.max, ErrExhausted)
	}
	off, ok := v.findFree(v.next)
	if !ok {
		// Unreachable while used is accurate; report rather than panic.
		return 0, fmt.Errorf("allocate vni in %d-%d: %w", v.min, v.max, ErrExhausted)
	}
	v.bits[off/64] |= 1 << (off % 64)
	v.used++
	v.next = off + 1
	if v.next == size {
		v.next = 0
	}
	return v.min + off, nil
}

// findFree returns the offset of the first clear bit at or after from,
// wrapping round to the start of the bitmap.
func (v *VNIs) findFree(from uint32) (uint32, bool) {
	n := uint32(len(v.bits))
	w := from / 64
	// The first word: only the bits at or after from.
	if free := ^v.bits[w] & (^uint64(0) << (from % 64)); free != 0 {
		return w*64 + uint32(bits.TrailingZeros64(free)), true
	}
	// The other words, then the first one again in full (its low bits).
	for i := uint32(1); i <= n; i++ {
		wi := (w + i) % n
		if free := ^v.bits[wi]; free != 0 {
			return wi*64 + uint32(bits.TrailingZeros64(free)), true
		}
	}
	return 0, false
}

// Reserve marks a specific VNI used, for example one recorded in etcd when the
// controller restarts or one an operator asked for. It returns an error
// wrapping ErrOutOfRange if vni is outside the range and ErrInUse if it is
// already used.
func (v *VNIs) Reserve(vni uint32) error {
	if vni < v.min || vni > v.max {
		return fmt.Errorf("reserve vni %d: not in %d-%d: %w", vni, v.min, v.max, ErrOutOfRange)
	}
	off := vni - v.min
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bits[off/64]&(1<<(off%64)) != 0 {
		return fmt.Errorf("reserve vni %d: %w", vni, ErrInUse)
	}
	v.bits[off/64] |= 1 << (off % 64)
	v.used++
	return nil
}

// Release gives vni back. Releasing a free or out-of-range VNI does nothing.
func (v *VNIs) Release(vni uint32) {
	if vni < v.min || vni > v.max {
		return
	}
	off := vni - v.min
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bits[off/64]&(1<<(off%64)) == 0 {
		return
	}
	v.bits[off/64] &^= 1 << (off % 64)
	v.used--
}

// InUse reports whether vni is allocated or reserved. It is false for VNIs
// outside the range.
func (v *VNIs) InUse(vni uint32) bool {
	if vni < v.min || vni > v.max {
		return false
	}
	off := vni - v.min
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.bits[off/64]&(1<<(off%64)) != 0
}

// Used returns the number of VNIs in use.
func (v *VNIs) Used() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.used
}

// Range returns the first and last VNI of the range.
func (v *VNIs) Range() (min, max uint32) { return v.min, v.max }

// IDs allocates small integer identifiers other than VNIs from the same
// kind of bitmap; the controller uses one for host IDs (the UDP channel's
// compact host identifier), within 1..MaxVNI.
type IDs = VNIs

// NewIDs returns an allocator for the IDs min..max inclusive (1..MaxVNI).
func NewIDs(min, max uint32) (*IDs, error) { return NewVNIs(min, max) }
