package linux

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
)

// QoS on the linux driver; the layout is described in the package
// documentation ("Quality of service").
const (
	// QoSHandle is the major number of every HTB qdisc the driver makes
	// (on the underlay device and on the ifbs of the VPC namespaces), and
	// so of every class in them: 0x7766, "wf".
	QoSHandle = 0x7766
	// QoSTable is the nftables table (family ip) of the host namespace
	// that classifies and marks encapsulated traffic.
	QoSTable = "weft-qos"

	qosRootMinor    = 1 // root class: the uplink's capacity, an ifb's VPC cap
	qosDefaultMinor = 2 // the uplink's best effort
	// Minors from qosFirstMinor on are allocated, host-wide, to the
	// endpoints under QoS and to the VPCs with a guaranteed minimum.
	qosFirstMinor = 0x10
	qosLastMinor  = 0xfffe

	// The ifbs of a VPC namespace: what its endpoints send (redirected
	// from the clsact ingress of their veths) and what they receive
	// (from the clsact egress).
	qosIfbTx = LinkPrefix + "qtx"
	qosIfbRx = LinkPrefix + "qrx"

	// qosFloor is the rate (bytes/s) of a class that is guaranteed
	// nothing: it sends only what it borrows. qosUnlimited is the ceiling
	// of a class without a cap (2^44-1 B/s, about 140 Tbit/s). Neither is
	// a rate a user can ask for (datapath.MinRateBps, MaxRateBps).
	qosFloor     = 1
	qosUnlimited = 1<<44 - 1
)

// qosEP is an endpoint under QoS: it has QoS of its own, or its VPC has.
type qosEP struct {
	e     *datapath.Endpoint
	own   datapath.QoS // zero without QoS of its own
	minor uint16
	// shaped: its traffic goes through the VPC's ifbs (it or its VPC has
	// a cap).
	shaped bool
}

// qosVPC is a VPC with endpoints under QoS on this host.
type qosVPC struct {
	q     datapath.VPCQoS
	eps   []*qosEP
	minor uint16 // its class on the uplink (0: none)
	err   error  // programming its QoS failed
}

// qosPlan is the QoS of one Set: who is under QoS, and the class minors,
// which persist in the kernel (the host table's endpoint map, the uplink's
// classes), so that a restarted driver keeps them.
type qosPlan struct {
	capacity uint64 // uplink rate, bytes/s; 0: not shaped
	eps      []*qosEP
	vpcs     map[uint32]*qosVPC
	host     *hostQoS // the host namespace's QoS state, read at plan time
	err      error    // no plan: the host's state could not be read
}

// planQoS reads the host's QoS state and allocates class minors for the
// desired state, keeping the minors already in the kernel.
func (d *Driver) planQoS(n *datapath.Desired) *qosPlan {
	p := &qosPlan{capacity: n.Host.CapacityBps / 8, vpcs: map[uint32]*qosVPC{}}
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		v := n.VPC(e.VNI)
		if e.QoS == nil && v.QoS == nil {
			continue
		}
		vp := p.vpcs[e.VNI]
		if vp == nil {
			vp = &qosVPC{}
			if v.QoS != nil {
				vp.q = *v.QoS
			}
			p.vpcs[e.VNI] = vp
		}
		qe := &qosEP{e: e}
		if e.QoS != nil {
			qe.own = *e.QoS
		}
		qe.shaped = qe.own.MaxRateBps > 0 || vp.q.MaxRateBps > 0
		vp.eps = append(vp.eps, qe)
		p.eps = append(p.eps, qe)
	}
	c, err := d.nftHost()
	if err == nil {
		p.host, err = readHostQoS(d.host, c, n.Host.UnderlayDev)
	}
	switch {
	case err != nil && len(p.eps) == 0 && p.capacity == 0:
		// Nothing is wanted, and what cannot be read (a kernel without
		// nftables) cannot be ours either.
		d.log.Debug("qos state unreadable, none wanted", "err", err)
		p.host = &hostQoS{}
		return p
	case err != nil:
		p.err = fmt.Errorf("qos: %w", err)
		return p
	}
	p.err = p.allocate()
	return p
}

// allocate gives every endpoint under QoS, and every VPC that needs a
// class on the uplink, a minor: the one the kernel has, or the lowest free.
func (p *qosPlan) allocate() error {
	used := map[uint16]bool{qosRootMinor: true, qosDefaultMinor: true}
	take := func(m uint16) bool {
		if m < qosFirstMinor || m > qosLastMinor || used[m] {
			return false
		}
		used[m] = true
		return true
	}
	for _, qe := range p.eps {
		if m, ok := p.host.minors[qosKey{qe.e.VNI, qe.e.IP}]; ok && take(m) {
			qe.minor = m
		}
	}
	var vnis []uint32
	for vni, vp := range p.vpcs {
		if p.capacity > 0 && vp.q.MinRateBps > 0 {
			vnis = append(vnis, vni)
		}
	}
	slices.Sort(vnis)
	for _, vni := range vnis {
		vp := p.vpcs[vni]
		for _, qe := range vp.eps {
			if c := p.host.classes[qe.minor]; qe.minor != 0 && c != nil {
				if par := uint16(c.Parent); p.host.classes[par] != nil && take(par) {
					vp.minor = par
					break
				}
			}
		}
	}
	next := uint16(qosFirstMinor)
	alloc := func() (uint16, error) {
		for ; next <= qosLastMinor; next++ {
			if take(next) {
				return next, nil
			}
		}
		return 0, errors.New("qos: no free class minor on this host")
	}
	var err error
	for _, vni := range vnis {
		if vp := p.vpcs[vni]; vp.minor == 0 {
			if vp.minor, err = alloc(); err != nil {
				return err
			}
		}
	}
	for _, qe := range p.eps {
		if qe.minor == 0 {
			if qe.minor, err = alloc(); err != nil {
				return err
			}
		}
	}
	return nil
}

// qosKey is an endpoint as the host namespace sees it in an encapsulated
// packet: VNI and inner source address.
type qosKey struct {
	vni uint32
	ip  netip.Addr
}

// htbClass is a class of an HTB tree the driver wants; rates in bytes/s.
type htbClass struct {
	minor, parent uint16 // parent 0: the qdisc
	rate, ceil    uint64
	prio          uint32
}

// uplinkTree is the HTB tree of the underlay device: the root class at
// the capacity, best effort, a class per VPC with a guaranteed minimum,
// and a leaf per endpoint under QoS (under its VPC's class if any), each
// guaranteed its minimum and allowed the whole capacity. Parents come
// before their children.
func (p *qosPlan) uplinkTree() []htbClass {
	c := p.capacity
	out := []htbClass{{minor: qosRootMinor, rate: c, ceil: c}, {}}
	var leaves []htbClass
	var guaranteed uint64
	for _, vp := range p.vpcs {
		parent := uint16(qosRootMinor)
		if vp.minor != 0 {
			out = append(out, htbClass{minor: vp.minor, parent: qosRootMinor, rate: vp.q.MinRateBps / 8, ceil: c})
			guaranteed += vp.q.MinRateBps / 8
			parent = vp.minor
		}
		for _, qe := range vp.eps {
			l := htbClass{minor: qe.minor, parent: parent, rate: max(qosFloor, qe.own.MinRateBps/8), ceil: c, prio: datapath.BestEffortPriority}
			if qe.e.QoS != nil {
				l.prio = uint32(qe.own.Priority)
			}
			if parent == qosRootMinor {
				guaranteed += qe.own.MinRateBps / 8
			}
			leaves = append(leaves, l)
		}
	}
	rest := uint64(qosFloor)
	if guaranteed < c {
		rest = c - guaranteed
	}
	out[1] = htbClass{minor: qosDefaultMinor, parent: qosRootMinor, rate: rest, ceil: c, prio: datapath.BestEffortPriority}
	sortClasses(out[2:])
	sortClasses(leaves)
	return append(out, leaves...)
}

// ifbTree is the HTB tree of both ifbs of a VPC (nil: the VPC needs none):
// the root class at the VPC's cap, and a leaf per shaped endpoint at its
// own cap, guaranteed an equal share of the VPC's.
func (vp *qosVPC) ifbTree() []htbClass {
	var shaped []*qosEP
	for _, qe := range vp.eps {
		if qe.shaped {
			shaped = append(shaped, qe)
		}
	}
	if len(shaped) == 0 {
		return nil
	}
	root := htbClass{minor: qosRootMinor, rate: qosUnlimited, ceil: qosUnlimited}
	if vp.q.MaxRateBps > 0 {
		root.rate, root.ceil = vp.q.MaxRateBps/8, vp.q.MaxRateBps/8
	}
	out := []htbClass{root}
	for _, qe := range shaped {
		l := htbClass{minor: qe.minor, parent: qosRootMinor, ceil: qosUnlimited}
		if qe.own.MaxRateBps > 0 {
			l.ceil = qe.own.MaxRateBps / 8
		}
		l.rate = l.ceil
		if vp.q.MaxRateBps > 0 {
			l.rate = max(qosFloor, min(l.ceil, root.rate/uint64(len(shaped))))
		}
		out = append(out, l)
	}
	sortClasses(out[1:])
	return out
}

func sortClasses(cs []htbClass) {
	slices.SortFunc(cs, func(a, b htbClass) int { return cmp.Compare(a.minor, b.minor) })
}

// ticksPerSec: psched ticks are 64 ns (PSCHED_SHIFT 6 in the kernel).
const ticksPerSec = 1e9 / 64

// htb is the class as the kernel gets and reports it (a root class's
// parent is TC_H_ROOT). The burst (Buffer, Cbuffer: the time to send it at
// the rate) is 64 KiB plus a millisecond at the rate, so that a whole GSO
// packet fits; the quantum, which shares borrowed bandwidth between the
// classes of a priority, is the kernel's default made explicit: rate/10
// within 2,000..200,000 bytes.
func (c htbClass) htb(link int) *netlink.HtbClass {
	burst := func(rate uint64) uint32 {
		b := 64<<10 + rate/1000
		return uint32(min(b*ticksPerSec/rate, 1<<32-1))
	}
	parent := uint32(netlink.HANDLE_ROOT)
	if c.parent != 0 {
		parent = netlink.MakeHandle(QoSHandle, c.parent)
	}
	// The library sends the low 32 bits of a rate in the 32-bit field
	// (and the rest in TCA_HTB_RATE64); the kernel refuses a zero there.
	nonzero := func(r uint64) uint64 {
		if uint32(r) == 0 {
			return r + 1
		}
		return r
	}
	c.rate, c.ceil = nonzero(c.rate), nonzero(c.ceil)
	return &netlink.HtbClass{
		ClassAttrs: netlink.ClassAttrs{LinkIndex: link, Handle: netlink.MakeHandle(QoSHandle, c.minor), Parent: parent},
		Rate:       c.rate,
		Ceil:       c.ceil,
		Buffer:     burst(c.rate),
		Cbuffer:    burst(c.ceil),
		Quantum:    uint32(min(max(c.rate/10, 2000), 200_000)),
		Prio:       c.prio,
	}
}

func sameClass(a, b *netlink.HtbClass) bool {
	return a.Parent == b.Parent && a.Rate == b.Rate && a.Ceil == b.Ceil && a.Buffer == b.Buffer &&
		a.Cbuffer == b.Cbuffer && a.Quantum == b.Quantum && a.Prio == b.Prio
}

// rootQdisc returns the root qdisc of a link among qs (nil: none listed).
func rootQdisc(qs []netlink.Qdisc, index int) netlink.Qdisc {
	for _, q := range qs {
		if q.Attrs().LinkIndex == index && q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q
		}
	}
	return nil
}

// htbClasses lists our classes of a link, by minor.
func htbClasses(h *netlink.Handle, link netlink.Link) (map[uint16]*netlink.HtbClass, error) {
	cs, err := dump("classes", func() ([]netlink.Class, error) { return h.ClassList(link, netlink.MakeHandle(QoSHandle, 0)) })
	if err != nil {
		return nil, err
	}
	out := map[uint16]*netlink.HtbClass{}
	for _, c := range cs {
		if hc, ok := c.(*netlink.HtbClass); ok && hc.Handle>>16 == QoSHandle {
			out[uint16(hc.Handle)] = hc
		}
	}
	return out, nil
}

// convergeHTB makes the root qdisc of link our HTB with exactly the classes
// want (nil: no HTB of ours). A root qdisc that is neither the kernel's
// default (handle 0) nor ours is someone else's: left alone, an error.
func (d *Driver) convergeHTB(h *netlink.Handle, link netlink.Link, root netlink.Qdisc, want []htbClass, defcls uint32) error {
	name, index := link.Attrs().Name, link.Attrs().Index
	handle := netlink.MakeHandle(QoSHandle, 0)
	ours := root != nil && root.Attrs().Handle == handle
	if want == nil {
		if !ours {
			return nil
		}
		if err := d.ops.write(opQdiscDel, func() error { return h.QdiscDel(root) }); err != nil {
			return fmt.Errorf("delete qdisc of %s: %w", name, err)
		}
		return nil
	}
	if root != nil && !ours && root.Attrs().Handle != 0 {
		return fmt.Errorf("%s: root qdisc %s %x: is not ours", name, root.Type(), root.Attrs().Handle)
	}
	if htb, ok := root.(*netlink.Htb); !ours || !ok || htb.Defcls != defcls {
		q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: index, Handle: handle, Parent: netlink.HANDLE_ROOT})
		q.Defcls = defcls
		if err := d.ops.write(opQdiscAdd, func() error { return h.QdiscReplace(q) }); err != nil {
			return fmt.Errorf("add htb to %s: %w", name, err)
		}
	}
	have, err := htbClasses(h, link)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	wantBy := map[uint16]*netlink.HtbClass{}
	for _, c := range want {
		wantBy[c.minor] = c.htb(index)
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
		if w := wantBy[m]; w == nil || w.Parent != c.Parent {
			del = append(del, m)
		}
	}
	slices.SortFunc(del, func(a, b uint16) int { return cmp.Compare(depth(b), depth(a)) })
	var errs []error
	for _, m := range del {
		if err := d.ops.write(opClassDel, func() error { return h.ClassDel(have[m]) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: delete class %x: %w", name, have[m].Handle, err))
		}
		delete(have, m)
	}
	for _, c := range want {
		w, cur := wantBy[c.minor], have[c.minor]
		if cur != nil && sameClass(cur, w) {
			continue
		}
		o := opClassAdd
		if cur != nil {
			o = opClassSet
		}
		if err := d.ops.write(o, func() error { return h.ClassReplace(w) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: set class %x: %w", name, w.Handle, err))
		}
	}
	return errors.Join(errs...)
}
