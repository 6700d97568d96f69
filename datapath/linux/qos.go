package linux

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/htb"
)

// QoS on the linux driver; the layout is described in the package
// documentation ("Quality of service").
const (
	// QoSHandle is the major number of every HTB qdisc the driver makes
	// (on the underlay device and on the ifbs of the VPC namespaces), and
	// so of every class in them: 0x7766, "wf".
	QoSHandle = htb.Handle
	// QoSTable is the nftables table (family ip) of the host namespace
	// that classifies and marks encapsulated traffic.
	QoSTable = "weft-qos"

	// The ifbs of a VPC namespace: what its endpoints send (redirected
	// from the clsact ingress of their veths) and what they receive
	// (from the clsact egress).
	qosIfbTx = LinkPrefix + "qtx"
	qosIfbRx = LinkPrefix + "qrx"
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
	minors := htb.NewMinors()
	for _, qe := range p.eps {
		if m, ok := p.host.minors[qosKey{qe.e.VNI, qe.e.IP}]; ok && minors.Take(m) {
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
				if par := uint16(c.Parent); p.host.classes[par] != nil && minors.Take(par) {
					vp.minor = par
					break
				}
			}
		}
	}
	var err error
	for _, vni := range vnis {
		if vp := p.vpcs[vni]; vp.minor == 0 {
			if vp.minor, err = minors.Alloc(); err != nil {
				return err
			}
		}
	}
	for _, qe := range p.eps {
		if qe.minor == 0 {
			if qe.minor, err = minors.Alloc(); err != nil {
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

// uplinkTree is the HTB tree of the underlay device (htb.Uplink): a
// group per VPC, its class if it has a guaranteed minimum, a leaf per
// endpoint under QoS.
func (p *qosPlan) uplinkTree() []htb.Class {
	groups := make([]htb.Group, 0, len(p.vpcs))
	for _, vp := range p.vpcs {
		g := htb.Group{Minor: vp.minor, Min: vp.q.MinRateBps / 8}
		for _, qe := range vp.eps {
			l := htb.Leaf{Minor: qe.minor, Min: qe.own.MinRateBps / 8, Prio: datapath.BestEffortPriority}
			if qe.e.QoS != nil {
				l.Prio = uint32(qe.own.Priority)
			}
			g.Leaves = append(g.Leaves, l)
		}
		groups = append(groups, g)
	}
	return htb.Uplink(p.capacity, groups)
}

// ifbTree is the HTB tree of both ifbs of a VPC (nil: the VPC needs none):
// the root class at the VPC's cap, and a leaf per shaped endpoint at its
// own cap, guaranteed an equal share of the VPC's.
func (vp *qosVPC) ifbTree() []htb.Class {
	var shaped []htb.Capped
	for _, qe := range vp.eps {
		if qe.shaped {
			shaped = append(shaped, htb.Capped{Minor: qe.minor, Cap: qe.own.MaxRateBps / 8})
		}
	}
	if len(shaped) == 0 {
		return nil
	}
	root := htb.Class{Minor: htb.RootMinor, Rate: htb.Unlimited, Ceil: htb.Unlimited}
	if vp.q.MaxRateBps > 0 {
		root.Rate, root.Ceil = vp.q.MaxRateBps/8, vp.q.MaxRateBps/8
	}
	return htb.CapTree(root, shaped)
}
