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
// documentation): caps are token buckets in the programs, minimums and
// priorities an HTB tree on the uplink that classifies by the skb
// priority from_ep sets, DSCP the tunnel key's TOS.

// capBurst is how far ahead of its rate a capped sender may run: 64 KiB
// (a whole GSO packet) plus this long at the rate.
const capBurstMs = 5

// rateOf is the token bucket of a cap of bps bit/s (0: none).
func rateOf(bps uint64) weftRate {
	if bps == 0 {
		return weftRate{}
	}
	b := bps / 8
	burst := float64(64<<10) + float64(b)*capBurstMs/1000
	return weftRate{BytesPerSec: b, BurstNs: uint64(burst / float64(b) * 1e9)}
}

// qosPlan is the QoS of one Set: the uplink's capacity and the class
// minors of the endpoints and VPCs on it, kept from the maps (a
// restarted driver keeps them).
type qosPlan struct {
	capacity uint64            // bytes/s; 0: the uplink is not shaped
	eps      map[string]uint16 // by endpoint ID: its uplink class
	vpcs     map[uint32]uint16 // a VPC with a guaranteed minimum: its class
}

// underQoS reports whether an endpoint of VPC v needs a class of its own
// on the uplink: it or its VPC has QoS.
func underQoS(e *datapath.Endpoint, v *datapath.VPC) bool {
	return e.QoS != nil || v != nil && v.QoS != nil
}

// planQoS allocates the uplink class minors: an endpoint or VPC keeps the
// one the maps hold (curIf: the ifaces map by ifindex, curVPC the vpcs
// map), the others get the lowest free.
func planQoS(n *datapath.Desired, eps map[string]*epState, curIf map[uint32]weftIface, curVPC map[uint32]weftVpc) (*qosPlan, error) {
	p := &qosPlan{capacity: n.Host.CapacityBps / 8, eps: map[string]uint16{}, vpcs: map[uint32]uint16{}}
	if p.capacity == 0 {
		return p, nil
	}
	minors := htb.NewMinors()
	ids := make([]string, 0, len(eps))
	for id, st := range eps {
		if underQoS(&st.ep, n.VPC(st.ep.VNI)) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		if cur, ok := curIf[uint32(eps[id].ifindex)]; ok && cur.Priority>>16 == htb.Handle && minors.Take(uint16(cur.Priority)) {
			p.eps[id] = uint16(cur.Priority)
		}
	}
	var vnis []uint32
	for _, v := range n.VPCs {
		if v.QoS != nil && v.QoS.MinRateBps > 0 {
			vnis = append(vnis, v.VNI)
		}
	}
	for _, vni := range vnis {
		if m := uint16(curVPC[vni].Minor); minors.Take(m) {
			p.vpcs[vni] = m
		}
	}
	var err error
	alloc := func(m *uint16) {
		if *m == 0 && err == nil {
			*m, err = minors.Alloc()
		}
	}
	for _, vni := range vnis {
		m := p.vpcs[vni]
		alloc(&m)
		p.vpcs[vni] = m
	}
	for _, id := range ids {
		m := p.eps[id]
		alloc(&m)
		p.eps[id] = m
	}
	return p, err
}

// uplinkTree is the uplink's HTB tree (nil: not shaped).
func (p *qosPlan) uplinkTree(n *datapath.Desired, eps map[string]*epState) []htb.Class {
	if p.capacity == 0 {
		return nil
	}
	groups := map[uint32]*htb.Group{}
	for id, m := range p.eps {
		e := &eps[id].ep
		g := groups[e.VNI]
		if g == nil {
			g = &htb.Group{Minor: p.vpcs[e.VNI]}
			if v := n.VPC(e.VNI); g.Minor != 0 && v != nil {
				g.Min = v.QoS.MinRateBps / 8
			}
			groups[e.VNI] = g
		}
		l := htb.Leaf{Minor: m, Prio: datapath.BestEffortPriority}
		if e.QoS != nil {
			l.Min, l.Prio = e.QoS.MinRateBps/8, uint32(e.QoS.Priority)
		}
		g.Leaves = append(g.Leaves, l)
	}
	list := make([]htb.Group, 0, len(groups))
	for _, g := range groups {
		list = append(list, *g)
	}
	return htb.Uplink(p.capacity, list)
}

// convergeUplink makes the uplink's HTB tree what p wants: on the
// underlay device, with a capacity; no HTB of ours anywhere without one.
func (d *Driver) convergeUplink(dev string, tree []htb.Class) error {
	links, err := writes.Dump("links", d.nl.LinkList)
	if err != nil {
		return err
	}
	qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return d.nl.QdiscList(nil) })
	if err != nil {
		return err
	}
	var errs []error
	found := false
	for _, l := range links {
		root := htb.Root(qs, l.Attrs().Index)
		if tree != nil && l.Attrs().Name == dev {
			found = true
			errs = append(errs, htb.Converge(d.nl, &d.ops, l, root, tree, htb.DefaultMinor))
		} else if htb.Ours(root) {
			errs = append(errs, htb.Converge(d.nl, &d.ops, l, root, nil, 0))
		}
	}
	if tree != nil && !found {
		errs = append(errs, fmt.Errorf("underlay device %q not found", dev))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("qos: uplink: %w", err)
	}
	return nil
}

// uplinkClasses reads the uplink's HTB tree of ours: its classes and the
// capacity (bit/s, 0: none).
func (d *Driver) uplinkClasses() (map[uint16]*netlink.HtbClass, uint64, error) {
	qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return d.nl.QdiscList(nil) })
	if err != nil {
		return nil, 0, err
	}
	for _, q := range qs {
		if q.Attrs().Parent != netlink.HANDLE_ROOT || !htb.Ours(q) {
			continue
		}
		l, err := d.nl.LinkByIndex(q.Attrs().LinkIndex)
		if err != nil {
			return nil, 0, err
		}
		cs, err := htb.Classes(d.nl, l)
		if err != nil {
			return nil, 0, err
		}
		var capacity uint64
		if r := cs[htb.RootMinor]; r != nil {
			capacity = r.Rate * 8
		}
		return cs, capacity, nil
	}
	return nil, 0, nil
}

// enforcedQoS is what the data plane enforces of an endpoint's QoS: its
// cap and outer DSCP from its iface entry, its minimum and priority from
// its class on the uplink.
func enforcedQoS(f weftIface, classes map[uint16]*netlink.HtbClass, capacity uint64) *datapath.QoS {
	q := datapath.QoS{MaxRateBps: f.Tx.BytesPerSec * 8, DSCP: f.Tos >> 2, Priority: datapath.BestEffortPriority}
	if c := classes[uint16(f.Priority)]; f.Priority>>16 == htb.Handle && c != nil {
		q.Priority = int(c.Prio)
		if c.Rate != htb.Floor {
			q.MinRateBps = c.Rate * 8
		}
	}
	return q.Enforced(capacity)
}

// enforcedVPCQoS is what the data plane enforces of a VPC's QoS.
func enforcedVPCQoS(v weftVpc, classes map[uint16]*netlink.HtbClass, capacity uint64, local bool) *datapath.VPCQoS {
	q := datapath.VPCQoS{MaxRateBps: v.Tx.BytesPerSec * 8}
	if c := classes[uint16(v.Minor)]; v.Minor != 0 && c != nil {
		q.MinRateBps = c.Rate * 8
	}
	return q.Enforced(capacity, local)
}
