package linux

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/htb"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// The VPC namespace's part of QoS: the caps. A shaped endpoint's veth gets
// a clsact qdisc; its ingress (what the endpoint sends) and its egress
// (what it receives) each run a qosProgram, which sets the endpoint's
// class, then a mirred action into one of the VPC's two ifbs, where an HTB
// tree holds the VPC's cap and the endpoint's.

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
	if err := d.programVPCQoS(vs, scan, vp); err != nil {
		vp.err = fmt.Errorf("vpc %d: qos: %w", vni, err)
		p.vpcs[vni] = vp
		return vp.err
	}
	return nil
}

func (d *Driver) programVPCQoS(vs *vpcNS, scan *vpcScan, vp *qosVPC) error {
	qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return vs.h.QdiscList(nil) })
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
			if err := htb.Converge(vs.h, &d.ops, ifbs[i], htb.Root(qs, ifbs[i].Attrs().Index), tree, 0); err != nil {
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
		var want *vethQoS
		if qe := shaped[name]; qe != nil {
			want = &vethQoS{qosProgram{netlink.MakeHandle(QoSHandle, qe.minor)}, [2]int{ifbs[0].Attrs().Index, ifbs[1].Attrs().Index}}
		}
		if err := d.convergeVethQoS(vs.h, l, qs, want); err != nil {
			errs = append(errs, fmt.Errorf("endpoint veth %s (%s): %w", name, l.Attrs().Alias, err))
		}
	}
	if err := errors.Join(errs...); err != nil || tree != nil {
		return err
	}
	for _, name := range []string{qosIfbTx, qosIfbRx} {
		if l := scan.links[name]; l != nil {
			if err := d.ops.Write(writes.LinkDel, func() error { return vs.h.LinkDel(l) }); err != nil {
				return fmt.Errorf("delete %s: %w", name, err)
			}
			delete(scan.links, name)
		}
	}
	return nil
}

// qosIfbQueue is the transmit queue length of the ifbs, which is the
// packet limit of the fifo of each HTB class on them: 100 packets (the
// kernel makes ifbs with 32, the library with 0, which drops everything).
const qosIfbQueue = 100

// ensureIfb makes sure the VPC namespace has an ifb named name, up.
func (d *Driver) ensureIfb(vs *vpcNS, scan *vpcScan, name string) (netlink.Link, error) {
	l := scan.links[name]
	if l != nil && l.Type() != "ifb" {
		if err := d.ops.Write(writes.LinkDel, func() error { return vs.h.LinkDel(l) }); err != nil {
			return nil, fmt.Errorf("delete non-ifb %s: %w", name, err)
		}
		l = nil
	}
	if l == nil {
		ifb := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: qosIfbQueue}}
		if err := d.ops.Write(writes.LinkAdd, func() error { return vs.h.LinkAdd(ifb) }); err != nil {
			return nil, fmt.Errorf("add ifb %s: %w", name, err)
		}
		var err error
		if l, err = vs.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("find new ifb %s: %w", name, err)
		}
		scan.links[name] = l
	}
	if l.Attrs().Flags&unix.IFF_UP == 0 {
		if err := d.ops.Write(writes.LinkSet, func() error { return vs.h.LinkSetUp(l) }); err != nil {
			return nil, fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return l, nil
}

// vethQoS is what a shaped endpoint's veth runs: at the clsact ingress
// and egress, the program (filter priority 1), then a redirect to the
// transmit and the receive ifb (u32 matching all, mirred) at priority 2 on
// ingress and 3 on egress: u32 keeps the hash tables of all its filters
// under one qdisc in one list, which the kernel dumps by priority, so
// distinct priorities keep each direction's dump to its own.
type vethQoS struct {
	prog qosProgram
	ifbs [2]int // ifindex of the transmit and the receive ifb
}

var (
	qosParents       = [2]uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS}
	qosRedirectPrios = [2]uint16{2, 3}
)

// convergeVethQoS gives a veth exactly the clsact qdisc and filters of want
// (nil: no clsact qdisc). Filters that differ are not patched: the clsact
// qdisc is made afresh.
func (d *Driver) convergeVethQoS(h *netlink.Handle, l netlink.Link, qs []netlink.Qdisc, want *vethQoS) error {
	var clsact netlink.Qdisc
	for _, q := range qs {
		if q.Attrs().LinkIndex == l.Attrs().Index && q.Attrs().Parent == netlink.HANDLE_CLSACT {
			clsact = q
		}
	}
	if clsact != nil {
		ok := want != nil
		for i := 0; ok && i < 2; i++ {
			have, err := writes.Dump("filters", func() ([]netlink.Filter, error) { return h.FilterList(l, qosParents[i]) })
			if err != nil {
				return err
			}
			ok = want.filtersOK(have, qosRedirectPrios[i], want.ifbs[i])
		}
		if ok {
			return nil
		}
		if err := d.ops.Write(writes.QdiscDel, func() error { return h.QdiscDel(clsact) }); err != nil {
			return fmt.Errorf("delete clsact: %w", err)
		}
	}
	if want == nil {
		return nil
	}
	q := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index,
		Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(netlink.HANDLE_CLSACT>>16, 0)}}
	if err := d.ops.Write(writes.QdiscAdd, func() error { return h.QdiscAdd(q) }); err != nil {
		return fmt.Errorf("add clsact: %w", err)
	}
	fd, err := want.prog.load()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for i, parent := range qosParents {
		attrs := func(prio uint16) netlink.FilterAttrs {
			return netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: parent, Handle: 1, Priority: prio, Protocol: unix.ETH_P_ALL}
		}
		bpf := &netlink.BpfFilter{FilterAttrs: attrs(1), Fd: fd, Name: qosFilterName, DirectAction: true}
		redirect := &netlink.U32{FilterAttrs: attrs(qosRedirectPrios[i]), Actions: []netlink.Action{netlink.NewMirredAction(want.ifbs[i])}}
		redirect.Handle = 0 // u32 numbers its own
		if err := d.ops.Write(writes.FilterSet, func() error { return errors.Join(h.FilterAdd(bpf), h.FilterAdd(redirect)) }); err != nil {
			return fmt.Errorf("add filters: %w", err)
		}
	}
	return nil
}

// filtersOK reports whether the filters at a clsact parent are exactly
// ours: the program, then the redirect to ifb.
func (w *vethQoS) filtersOK(have []netlink.Filter, prio uint16, ifb int) bool {
	prog, redirect := false, false
	for _, f := range have {
		switch f := f.(type) {
		case *netlink.BpfFilter:
			if prog || f.Priority != 1 || f.Name != qosFilterName || !f.DirectAction || !w.prog.isTag(f.Tag) {
				return false
			}
			prog = true
		case *netlink.U32:
			if f.Priority != prio {
				return false
			}
			if len(f.Actions) == 0 && f.Sel == nil {
				continue // the u32 hash table the filter lives in
			}
			m, ok := f.Actions[0].(*netlink.MirredAction)
			if redirect || len(f.Actions) != 1 || !ok || m.MirredAction != netlink.TCA_EGRESS_REDIR || m.Ifindex != ifb || m.Action != netlink.TC_ACT_STOLEN {
				return false
			}
			redirect = true
		default:
			return false
		}
	}
	return prog && redirect
}

// snapshotVPCQoS reads what a VPC namespace enforces: the classes of its
// transmit ifb (nil: none).
func snapshotVPCQoS(h *netlink.Handle, scan *vpcScan) (map[uint16]*netlink.HtbClass, error) {
	l := scan.links[qosIfbTx]
	if l == nil {
		return nil, nil
	}
	return htb.Classes(h, l)
}

// vpcQoS reconstructs a VPC's aggregate from the kernel: its cap from the
// root class of its transmit ifb, its minimum from its class on the uplink
// (the parent of its endpoints' classes there).
func (hs *hostQoS) vpcQoS(vni uint32, tx map[uint16]*netlink.HtbClass, capacity uint64) *datapath.VPCQoS {
	var q datapath.VPCQoS
	if c := tx[htb.RootMinor]; c != nil && c.Ceil != htb.Unlimited {
		q.MaxRateBps = c.Ceil * 8
	}
	for k, m := range hs.minors {
		if c := hs.classes[m]; k.vni == vni && c != nil && uint16(c.Parent) != htb.RootMinor {
			if vc := hs.classes[uint16(c.Parent)]; vc != nil {
				q.MinRateBps = vc.Rate * 8
			}
		}
	}
	return q.Enforced(capacity*8, true)
}
