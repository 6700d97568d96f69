package ebpf

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/htb"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// Quality of service (see "Quality of service" in the package
// documentation): caps are classes of an HTB tree on the shaper veth,
// minimums and priorities classes of an HTB tree on the uplink, both
// chosen by the skb priority the programs set; DSCP is the tunnel key's
// TOS.

// qosPlan is the QoS of one Set: the uplink's capacity and the class
// minors, kept from the maps (a restarted driver keeps them).
type qosPlan struct {
	capacity uint64 // bytes/s; 0: the uplink is not shaped
	eps      map[string]*epQoS
	vpcs     map[uint32]*vpcQoS
}

// epQoS is an endpoint under QoS (it or its VPC has some).
type epQoS struct {
	cap    uint64 // its own cap, bytes/s
	shaped bool   // it or its VPC has a cap
	// minor is its class on the uplink and, shaped, of what it sends on
	// the shaper; rxMinor of what it receives.
	minor, rxMinor uint16
}

// vpcQoS is a VPC with endpoints under QoS on this host.
type vpcQoS struct {
	q datapath.VPCQoS
	// minor is its class on the uplink (a guaranteed minimum), txMinor
	// and rxMinor on the shaper (a cap); 0: none.
	minor, txMinor, rxMinor uint16
	eps                     []string // its endpoints under QoS, sorted
}

// planQoS says who is under QoS (vpcOf gives the VPC an endpoint is
// programmed in) and allocates the class minors: an endpoint or VPC keeps
// the ones the maps hold (cur), the others get the lowest free.
func planQoS(capacityBps uint64, eps map[string]*epState, vpcOf func(uint32) *datapath.VPC, cur *mapState) (*qosPlan, error) {
	p := &qosPlan{capacity: capacityBps / 8, eps: map[string]*epQoS{}, vpcs: map[uint32]*vpcQoS{}}
	ids := make([]string, 0, len(eps))
	for id, st := range eps {
		v := vpcOf(st.ep.VNI)
		if st.ep.QoS == nil && (v == nil || v.QoS == nil) {
			continue
		}
		vq := p.vpcs[st.ep.VNI]
		if vq == nil {
			vq = &vpcQoS{}
			if v != nil && v.QoS != nil {
				vq.q = *v.QoS
			}
			p.vpcs[st.ep.VNI] = vq
		}
		eq := &epQoS{}
		if q := st.ep.QoS; q != nil {
			eq.cap = q.MaxRateBps / 8
		}
		eq.shaped = eq.cap > 0 || vq.q.MaxRateBps > 0
		p.eps[id] = eq
		vq.eps = append(vq.eps, id)
		ids = append(ids, id)
	}
	slices.Sort(ids)
	vnis := make([]uint32, 0, len(p.vpcs))
	for vni, vq := range p.vpcs {
		slices.Sort(vq.eps)
		vnis = append(vnis, vni)
	}
	slices.Sort(vnis)

	minors := htb.NewMinors()
	take := func(m *uint16, want bool, have uint16) {
		if want && minors.Take(have) {
			*m = have
		}
	}
	for _, id := range ids {
		eq, st := p.eps[id], eps[id]
		take(&eq.minor, true, uint16(cur.ifaces[uint32(st.ifindex)].Priority))
		take(&eq.rxMinor, eq.shaped, uint16(cur.locals[vipOf(&st.ep)].RxClass))
	}
	for _, vni := range vnis {
		vq, have := p.vpcs[vni], cur.vpcs[vni]
		take(&vq.minor, p.capacity > 0 && vq.q.MinRateBps > 0, have.Minor)
		take(&vq.txMinor, vq.q.MaxRateBps > 0, have.TxMinor)
		take(&vq.rxMinor, vq.q.MaxRateBps > 0, have.RxMinor)
	}
	var err error
	alloc := func(m *uint16, want bool) {
		if want && *m == 0 && err == nil {
			*m, err = minors.Alloc()
		}
	}
	for _, vni := range vnis {
		vq := p.vpcs[vni]
		alloc(&vq.minor, p.capacity > 0 && vq.q.MinRateBps > 0)
		alloc(&vq.txMinor, vq.q.MaxRateBps > 0)
		alloc(&vq.rxMinor, vq.q.MaxRateBps > 0)
	}
	for _, id := range ids {
		eq := p.eps[id]
		alloc(&eq.minor, true)
		alloc(&eq.rxMinor, eq.shaped)
	}
	return p, err
}

// uplinkTree is the uplink's HTB tree (htb.Uplink; nil: not shaped).
func (p *qosPlan) uplinkTree(eps map[string]*epState) []htb.Class {
	if p.capacity == 0 {
		return nil
	}
	groups := make([]htb.Group, 0, len(p.vpcs))
	for _, vq := range p.vpcs {
		g := htb.Group{Minor: vq.minor, Min: vq.q.MinRateBps / 8}
		for _, id := range vq.eps {
			l := htb.Leaf{Minor: p.eps[id].minor, Prio: datapath.BestEffortPriority}
			if q := eps[id].ep.QoS; q != nil {
				l.Min, l.Prio = q.MinRateBps/8, uint32(q.Priority)
			}
			g.Leaves = append(g.Leaves, l)
		}
		groups = append(groups, g)
	}
	return htb.Uplink(p.capacity, groups)
}

// shaperTree is the HTB tree of the shaper veth (nil: nothing is
// shaped): under an unlimited root, per VPC with a cap a class for what
// its endpoints send and one for what they receive, each holding the
// classes of its shaped endpoints (htb.CapTree); shaped endpoints of a VPC
// without a cap hang under the root.
func (p *qosPlan) shaperTree() []htb.Class {
	root := htb.Class{Minor: htb.RootMinor, Rate: htb.Unlimited, Ceil: htb.Unlimited}
	out := []htb.Class{root}
	for _, vq := range p.vpcs {
		var tx, rx []htb.Capped
		for _, id := range vq.eps {
			if eq := p.eps[id]; eq.shaped {
				tx = append(tx, htb.Capped{Minor: eq.minor, Cap: eq.cap})
				rx = append(rx, htb.Capped{Minor: eq.rxMinor, Cap: eq.cap})
			}
		}
		if len(tx) == 0 {
			continue
		}
		if vq.txMinor == 0 {
			out = append(out, htb.CapTree(root, tx)[1:]...)
			out = append(out, htb.CapTree(root, rx)[1:]...)
			continue
		}
		c := vq.q.MaxRateBps / 8
		out = append(out, htb.CapTree(htb.Class{Minor: vq.txMinor, Parent: htb.RootMinor, Rate: c, Ceil: c}, tx)...)
		out = append(out, htb.CapTree(htb.Class{Minor: vq.rxMinor, Parent: htb.RootMinor, Rate: c, Ceil: c}, rx)...)
	}
	if len(out) == 1 {
		return nil
	}
	return out
}

// convergeQoSTrees makes the shaper's tree and the uplink's on the
// underlay device what they should be (none of ours elsewhere).
//
// links and qs are the host namespace's links and qdiscs as Set read them
// (before it made the shaper, if it did: a fresh device has no root
// qdisc; endpoint veths, made or deleted since, hold no tree of ours).
func (d *Driver) convergeQoSTrees(dev string, shaper, uplink []htb.Class, links []netlink.Link, qs []netlink.Qdisc) error {
	var errs []error
	found := false
	for _, l := range links {
		root := htb.Root(qs, l.Attrs().Index)
		switch name := l.Attrs().Name; {
		case name == ShaperName:
			if err := htb.Converge(d.nl, &d.ops, l, root, shaper, 0); err != nil {
				errs = append(errs, fmt.Errorf("shaper: %w", err))
			}
		case uplink != nil && name == dev:
			found = true
			if err := htb.Converge(d.nl, &d.ops, l, root, uplink, htb.DefaultMinor); err != nil {
				errs = append(errs, fmt.Errorf("uplink: %w", err))
			}
		case htb.Ours(root):
			errs = append(errs, htb.Converge(d.nl, &d.ops, l, root, nil, 0))
		}
	}
	if uplink != nil && !found {
		errs = append(errs, fmt.Errorf("uplink: underlay device %q not found", dev))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	return nil
}

// qosTrees reads the HTB trees of ours: the shaper's classes, the
// uplink's, and the uplink's capacity (bit/s, 0: none).
func (d *Driver) qosTrees() (shaper, uplink map[uint16]*netlink.HtbClass, capacity uint64, err error) {
	qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return d.nl.QdiscList(nil) })
	if err != nil {
		return nil, nil, 0, err
	}
	for _, q := range qs {
		if q.Attrs().Parent != netlink.HANDLE_ROOT || !htb.Ours(q) {
			continue
		}
		l, err := d.nl.LinkByIndex(q.Attrs().LinkIndex)
		if err != nil {
			return nil, nil, 0, err
		}
		cs, err := htb.Classes(d.nl, l)
		if err != nil {
			return nil, nil, 0, err
		}
		if l.Attrs().Name == ShaperName {
			shaper = cs
			continue
		}
		uplink = cs
		if r := cs[htb.RootMinor]; r != nil {
			capacity = r.Rate * 8
		}
	}
	return shaper, uplink, capacity, nil
}

// enforcedQoS is what the data plane enforces of an endpoint's QoS: its
// outer DSCP from its iface entry, its cap from its class on the shaper,
// its minimum and priority from its class on the uplink.
func enforcedQoS(f weftIface, shaper, uplink map[uint16]*netlink.HtbClass, capacity uint64) *datapath.QoS {
	q := datapath.QoS{DSCP: f.Tos >> 2, Priority: datapath.BestEffortPriority}
	if f.Priority>>16 != htb.Handle {
		return q.Enforced(capacity)
	}
	m := uint16(f.Priority)
	if c := shaper[m]; c != nil && c.Ceil != htb.Unlimited {
		q.MaxRateBps = c.Ceil * 8
	}
	if c := uplink[m]; c != nil {
		q.Priority = int(c.Prio)
		if c.Rate != htb.Floor {
			q.MinRateBps = c.Rate * 8
		}
	}
	return q.Enforced(capacity)
}

// enforcedVPCQoS is what the data plane enforces of a VPC's QoS.
func enforcedVPCQoS(v weftVpc, shaper, uplink map[uint16]*netlink.HtbClass, capacity uint64, local bool) *datapath.VPCQoS {
	var q datapath.VPCQoS
	if c := shaper[v.TxMinor]; v.TxMinor != 0 && c != nil {
		q.MaxRateBps = c.Rate * 8
	}
	if c := uplink[v.Minor]; v.Minor != 0 && c != nil {
		q.MinRateBps = c.Rate * 8
	}
	return q.Enforced(capacity, local)
}
