// Package htb converges the HTB trees the drivers shape with: an uplink's
// (minimum rates and priorities of endpoints and VPCs out of the host's
// capacity) and the linux driver's ifbs. Every qdisc and class of ours has
// the major number Handle; a tree is compared with the kernel's class by
// class and only what differs is written.
package htb

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
)

const (
	// Handle is the major number of every HTB qdisc of ours, and so of
	// every class in them: 0x7766, "wf".
	Handle = 0x7766
	// RootMinor is the root class: the uplink's capacity (an ifb's VPC
	// cap); DefaultMinor the uplink's best effort.
	RootMinor    = 1
	DefaultMinor = 2
	// Minors from FirstMinor to LastMinor are allocated, host-wide, to the
	// endpoints under QoS and to the VPCs with a guaranteed minimum.
	FirstMinor = 0x10
	LastMinor  = 0xfffe

	// Floor is the rate (bytes/s) of a class that is guaranteed nothing:
	// it sends only what it borrows. Unlimited is the ceiling of a class
	// without a cap (2^44-1 B/s, about 140 Tbit/s). Neither is a rate a
	// user can ask for (datapath.MinRateBps, MaxRateBps).
	Floor     = 1
	Unlimited = 1<<44 - 1
)

// ClassID is the handle (and skb priority) of the class with minor m.
func ClassID(m uint16) uint32 { return netlink.MakeHandle(Handle, m) }

// Class is a class of an HTB tree a driver wants; rates in bytes/s.
type Class struct {
	Minor, Parent uint16 // Parent 0: the qdisc
	Rate, Ceil    uint64
	Prio          uint32
}

// Sort orders classes by minor.
func Sort(cs []Class) {
	slices.SortFunc(cs, func(a, b Class) int { return cmp.Compare(a.Minor, b.Minor) })
}

// Group is a VPC's part of an uplink: its class (Minor 0: none, its
// leaves hang under the root) with its guaranteed minimum, and its
// endpoints' leaves.
type Group struct {
	Minor  uint16
	Min    uint64 // bytes/s
	Leaves []Leaf
}

// Leaf is an endpoint under QoS on an uplink: its guaranteed minimum
// (bytes/s, 0: none) and priority.
type Leaf struct {
	Minor uint16
	Min   uint64
	Prio  uint32
}

// Uplink is the HTB tree of an underlay device of capacity bytes/s: the
// root class at the capacity, best effort, a class per group with a
// minor, and a leaf per endpoint (under its group's class if any), each
// guaranteed its minimum and allowed the whole capacity. Parents come
// before their children.
func Uplink(capacity uint64, groups []Group) []Class {
	c := capacity
	out := []Class{{Minor: RootMinor, Rate: c, Ceil: c}, {}}
	var leaves []Class
	var guaranteed uint64
	for _, g := range groups {
		parent := uint16(RootMinor)
		if g.Minor != 0 {
			out = append(out, Class{Minor: g.Minor, Parent: RootMinor, Rate: g.Min, Ceil: c})
			guaranteed += g.Min
			parent = g.Minor
		}
		for _, l := range g.Leaves {
			leaves = append(leaves, Class{Minor: l.Minor, Parent: parent, Rate: max(Floor, l.Min), Ceil: c, Prio: l.Prio})
			if parent == RootMinor {
				guaranteed += l.Min
			}
		}
	}
	rest := uint64(Floor)
	if guaranteed < c {
		rest = c - guaranteed
	}
	out[1] = Class{Minor: DefaultMinor, Parent: RootMinor, Rate: rest, Ceil: c, Prio: datapath.BestEffortPriority}
	Sort(out[2:])
	Sort(leaves)
	return append(out, leaves...)
}

// Capped is an endpoint held to a cap: its class and its own cap
// (bytes/s, 0: none, only its group's).
type Capped struct {
	Minor uint16
	Cap   uint64
}

// CapTree is group and, under it, a class per capped endpoint whose
// ceiling is the endpoint's cap; a group with a cap (Ceil below
// Unlimited) guarantees each endpoint an equal share of it. The group
// comes first.
func CapTree(group Class, leaves []Capped) []Class {
	out := []Class{group}
	for _, l := range leaves {
		c := Class{Minor: l.Minor, Parent: group.Minor, Ceil: Unlimited}
		if l.Cap > 0 {
			c.Ceil = l.Cap
		}
		c.Rate = c.Ceil
		if group.Ceil != Unlimited {
			c.Rate = max(Floor, min(c.Ceil, group.Rate/uint64(len(leaves))))
		}
		out = append(out, c)
	}
	Sort(out[1:])
	return out
}

// Minors allocates class minors on one host: the ones the kernel has are
// taken back first, then the lowest free.
type Minors struct {
	used map[uint16]bool
	next uint16
}

// NewMinors returns an allocator with the root and default minors taken.
func NewMinors() *Minors {
	return &Minors{used: map[uint16]bool{RootMinor: true, DefaultMinor: true}, next: FirstMinor}
}

// Take takes m if it is an allocatable minor not taken yet.
func (a *Minors) Take(m uint16) bool {
	if m < FirstMinor || m > LastMinor || a.used[m] {
		return false
	}
	a.used[m] = true
	return true
}

// Alloc takes the lowest free minor.
func (a *Minors) Alloc() (uint16, error) {
	for ; a.next <= LastMinor; a.next++ {
		if a.Take(a.next) {
			return a.next, nil
		}
	}
	return 0, errors.New("qos: no free class minor on this host")
}

// ticksPerSec: psched ticks are 64 ns (PSCHED_SHIFT 6 in the kernel).
const ticksPerSec = 1e9 / 64

// Netlink is the class as the kernel gets and reports it (a root class's
// parent is TC_H_ROOT). The burst (Buffer, Cbuffer: the time to send it at
// the rate) is 64 KiB plus a millisecond at the rate, so that a whole GSO
// packet fits; the quantum, which shares borrowed bandwidth between the
// classes of a priority, is the kernel's default made explicit: rate/10
// within 2,000..200,000 bytes.
func (c Class) Netlink(link int) *netlink.HtbClass {
	burst := func(rate uint64) uint32 {
		b := 64<<10 + rate/1000
		return uint32(min(b*ticksPerSec/rate, 1<<32-1))
	}
	parent := uint32(netlink.HANDLE_ROOT)
	if c.Parent != 0 {
		parent = ClassID(c.Parent)
	}
	// The library sends the low 32 bits of a rate in the 32-bit field
	// (and the rest in TCA_HTB_RATE64); the kernel refuses a zero there.
	nonzero := func(r uint64) uint64 {
		if uint32(r) == 0 {
			return r + 1
		}
		return r
	}
	c.Rate, c.Ceil = nonzero(c.Rate), nonzero(c.Ceil)
	return &netlink.HtbClass{
		ClassAttrs: netlink.ClassAttrs{LinkIndex: link, Handle: ClassID(c.Minor), Parent: parent},
		Rate:       c.Rate,
		Ceil:       c.Ceil,
		Buffer:     burst(c.Rate),
		Cbuffer:    burst(c.Ceil),
		Quantum:    uint32(min(max(c.Rate/10, 2000), 200_000)),
		Prio:       c.Prio,
	}
}

// Same reports whether two classes are configured alike.
func Same(a, b *netlink.HtbClass) bool {
	return a.Parent == b.Parent && a.Rate == b.Rate && a.Ceil == b.Ceil && a.Buffer == b.Buffer &&
		a.Cbuffer == b.Cbuffer && a.Quantum == b.Quantum && a.Prio == b.Prio
}

// Root returns the root qdisc of a link among qs (nil: none listed).
func Root(qs []netlink.Qdisc, index int) netlink.Qdisc {
	for _, q := range qs {
		if q.Attrs().LinkIndex == index && q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q
		}
	}
	return nil
}

// Ours reports whether q is an HTB qdisc of ours.
func Ours(q netlink.Qdisc) bool { return q != nil && q.Attrs().Handle == netlink.MakeHandle(Handle, 0) }

// Classes lists our classes of a link, by minor.
func Classes(h *netlink.Handle, link netlink.Link) (map[uint16]*netlink.HtbClass, error) {
	cs, err := writes.Dump("classes", func() ([]netlink.Class, error) { return h.ClassList(link, netlink.MakeHandle(Handle, 0)) })
	if err != nil {
		return nil, err
	}
	out := map[uint16]*netlink.HtbClass{}
	for _, c := range cs {
		if hc, ok := c.(*netlink.HtbClass); ok && hc.Handle>>16 == Handle {
			out[uint16(hc.Handle)] = hc
		}
	}
	return out, nil
}

// Converge makes the root qdisc of link our HTB with exactly the classes
// want (nil: no HTB of ours), counting its writes in w. A root qdisc that
// is neither the kernel's default (handle 0) nor ours is someone else's:
// left alone, an error.
func Converge(h *netlink.Handle, w *writes.Counter, link netlink.Link, root netlink.Qdisc, want []Class, defcls uint32) error {
	name, index := link.Attrs().Name, link.Attrs().Index
	handle := netlink.MakeHandle(Handle, 0)
	ours := Ours(root)
	if want == nil {
		if !ours {
			return nil
		}
		if err := w.Write(writes.QdiscDel, func() error { return h.QdiscDel(root) }); err != nil {
			return fmt.Errorf("delete qdisc of %s: %w", name, err)
		}
		return nil
	}
	if root != nil && !ours && root.Attrs().Handle != 0 {
		return fmt.Errorf("%s: root qdisc %s %x: is not ours", name, root.Type(), root.Attrs().Handle)
	}
	if q, ok := root.(*netlink.Htb); !ours || !ok || q.Defcls != defcls {
		q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: index, Handle: handle, Parent: netlink.HANDLE_ROOT})
		q.Defcls = defcls
		if err := w.Write(writes.QdiscAdd, func() error { return h.QdiscReplace(q) }); err != nil {
			return fmt.Errorf("add htb to %s: %w", name, err)
		}
	}
	have, err := Classes(h, link)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	wantBy := map[uint16]*netlink.HtbClass{}
	for _, c := range want {
		wantBy[c.Minor] = c.Netlink(index)
	}
	// Delete what is not wanted, or wanted under another parent (a class
	// cannot move), children first.
	depth := func(m uint16) int {
		n := 0
		for c := have[m]; c != nil && n < 8; c = have[uint16(c.Parent)] {
			n++
		}
		return n
	}
	var del []uint16
	for m, c := range have {
		if wc := wantBy[m]; wc == nil || wc.Parent != c.Parent {
			del = append(del, m)
		}
	}
	slices.SortFunc(del, func(a, b uint16) int { return cmp.Compare(depth(b), depth(a)) })
	var errs []error
	for _, m := range del {
		if err := w.Write(writes.ClassDel, func() error { return h.ClassDel(have[m]) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: delete class %x: %w", name, have[m].Handle, err))
		}
		delete(have, m)
	}
	for _, c := range want {
		wc, cur := wantBy[c.Minor], have[c.Minor]
		if cur != nil && Same(cur, wc) {
			continue
		}
		o := writes.ClassAdd
		if cur != nil {
			o = writes.ClassSet
		}
		if err := w.Write(o, func() error { return h.ClassReplace(wc) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: set class %x: %w", name, wc.Handle, err))
		}
	}
	return errors.Join(errs...)
}
