package linux

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
)

// The VPC namespace's part of QoS: the caps. A shaped endpoint's veth gets
// a clsact qdisc whose ingress (what the endpoint sends) and egress (what
// it receives) each run a qosProgram into one of the VPC's two ifbs, where
// an HTB tree holds the VPC's cap and the endpoint's.

// convergeVPCQoS programs the ifbs of one VPC and the filters of its
// endpoints' veths. An error is the VPC's alone: it is recorded in the plan
// (for the endpoints' QoSErr) and returned naming the VPC.
func (d *Driver) convergeVPCQoS(vs *vpcNS, scan *vpcScan, p *qosPlan, vni uint32) error {
	if p.err != nil {
		return nil // the host's state could not be read; convergeHostQoS reports it
	}
	vp := p.vpcs[vni]
	if vp == nil {
		vp = &qosVPC{}
	}
	if err := d.convergeVPCQoSErr(vs, scan, vp); err != nil {
		vp.err = fmt.Errorf("vpc %d: qos: %w", vni, err)
		p.vpcs[vni] = vp
		return vp.err
	}
	return nil
}

func (d *Driver) convergeVPCQoSErr(vs *vpcNS, scan *vpcScan, vp *qosVPC) error {
	qs, err := dump("qdiscs", func() ([]netlink.Qdisc, error) { return vs.h.QdiscList(nil) })
	if err != nil {
		return err
	}
	tree := vp.ifbTree()
	ifbs := [2]netlink.Link{}
	if tree != nil {
		for i, name := range []string{qosIfbTx, qosIfbRx} {
			if ifbs[i], err = d.ensureIfb(vs, scan, name); err != nil {
				return err
			}
			if err := d.convergeHTB(vs.h, ifbs[i], rootQdisc(qs, ifbs[i].Attrs().Index), tree, 0); err != nil {
				return err
			}
		}
	}
	shaped := map[string]*qosEP{}
	for _, qe := range vp.eps {
		if qe.shaped {
			shaped[VethName(qe.e.ID)] = qe
		}
	}
	var errs []error
	for name, l := range scan.links {
		if !strings.HasPrefix(name, vethLinkPrefix) {
			continue
		}
		var progs []qosProgram
		if qe := shaped[name]; qe != nil {
			class := netlink.MakeHandle(QoSHandle, qe.minor)
			progs = []qosProgram{{class, ifbs[0].Attrs().Index}, {class, ifbs[1].Attrs().Index}}
		}
		if err := d.convergeVethQoS(vs.h, l, qs, progs); err != nil {
			errs = append(errs, fmt.Errorf("endpoint veth %s (%s): %w", name, l.Attrs().Alias, err))
		}
	}
	if err := errors.Join(errs...); err != nil || tree != nil {
		return err
	}
	for _, name := range []string{qosIfbTx, qosIfbRx} {
		if l := scan.links[name]; l != nil {
			if err := d.ops.write(opLinkDel, func() error { return vs.h.LinkDel(l) }); err != nil {
				return fmt.Errorf("delete %s: %w", name, err)
			}
			delete(scan.links, name)
		}
	}
	return nil
}

// ensureIfb makes sure the VPC namespace has an ifb named name, up.
func (d *Driver) ensureIfb(vs *vpcNS, scan *vpcScan, name string) (netlink.Link, error) {
	l := scan.links[name]
	if l != nil && l.Type() != "ifb" {
		if err := d.ops.write(opLinkDel, func() error { return vs.h.LinkDel(l) }); err != nil {
			return nil, fmt.Errorf("delete non-ifb %s: %w", name, err)
		}
		l = nil
	}
	if l == nil {
		if err := d.ops.write(opLinkAdd, func() error { return vs.h.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}}) }); err != nil {
			return nil, fmt.Errorf("add ifb %s: %w", name, err)
		}
		var err error
		if l, err = vs.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("find new ifb %s: %w", name, err)
		}
		scan.links[name] = l
	}
	if l.Attrs().Flags&unix.IFF_UP == 0 {
		if err := d.ops.write(opLinkSet, func() error { return vs.h.LinkSetUp(l) }); err != nil {
			return nil, fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return l, nil
}

var qosParents = [2]uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS}

// convergeVethQoS gives a veth a clsact qdisc whose ingress and egress run
// progs[0] and progs[1], and nothing else; no progs: no clsact qdisc.
func (d *Driver) convergeVethQoS(h *netlink.Handle, l netlink.Link, qs []netlink.Qdisc, progs []qosProgram) error {
	var clsact netlink.Qdisc
	for _, q := range qs {
		if q.Attrs().LinkIndex == l.Attrs().Index && q.Attrs().Parent == netlink.HANDLE_CLSACT {
			clsact = q
		}
	}
	if progs == nil {
		if clsact == nil {
			return nil
		}
		return d.ops.write(opQdiscDel, func() error { return h.QdiscDel(clsact) })
	}
	if clsact == nil {
		q := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index,
			Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(netlink.HANDLE_CLSACT>>16, 0)}}
		if err := d.ops.write(opQdiscAdd, func() error { return h.QdiscAdd(q) }); err != nil {
			return fmt.Errorf("add clsact: %w", err)
		}
	}
	for i, parent := range qosParents {
		have, err := dump("filters", func() ([]netlink.Filter, error) { return h.FilterList(l, parent) })
		if err != nil {
			return err
		}
		if len(have) == 1 {
			if f, ok := have[0].(*netlink.BpfFilter); ok && f.Name == qosFilterName && f.DirectAction && progs[i].isTag(f.Tag) {
				continue
			}
		}
		if err := d.ops.write(opFilterSet, func() error { return setQoSFilter(h, l, parent, have, progs[i]) }); err != nil {
			return err
		}
	}
	return nil
}

// setQoSFilter replaces the filters at parent with one running prog.
func setQoSFilter(h *netlink.Handle, l netlink.Link, parent uint32, have []netlink.Filter, prog qosProgram) error {
	for _, f := range have {
		if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete filter: %w", err)
		}
	}
	fd, err := prog.load()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	f := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: parent, Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL},
		Fd:           fd,
		Name:         qosFilterName,
		DirectAction: true,
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("add filter: %w", err)
	}
	return nil
}

// snapshotVPCQoS reads what a VPC namespace enforces: the classes of its
// transmit ifb (nil: none).
func snapshotVPCQoS(h *netlink.Handle, scan *vpcScan) (map[uint16]*netlink.HtbClass, error) {
	l := scan.links[qosIfbTx]
	if l == nil {
		return nil, nil
	}
	return htbClasses(h, l)
}

// vpcQoS reconstructs a VPC's aggregate from the kernel: its cap from the
// root class of its transmit ifb, its minimum from its class on the uplink
// (the parent of its endpoints' classes there).
func (hs *hostQoS) vpcQoS(vni uint32, tx map[uint16]*netlink.HtbClass, capacity uint64) *datapath.VPCQoS {
	var q datapath.VPCQoS
	if c := tx[qosRootMinor]; c != nil && c.Ceil != qosUnlimited {
		q.MaxRateBps = c.Ceil * 8
	}
	for k, m := range hs.minors {
		if c := hs.classes[m]; k.vni == vni && c != nil && uint16(c.Parent) != qosRootMinor {
			if vc := hs.classes[uint16(c.Parent)]; vc != nil {
				q.MinRateBps = vc.Rate * 8
			}
		}
	}
	return q.Enforced(capacity*8, true)
}
