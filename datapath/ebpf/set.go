package ebpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/htb"
	"github.com/weftnet/weft/datapath/internal/writes"
	"github.com/weftnet/weft/internal/netnsfile"
)

// Set implements datapath.Driver. It reads what is programmed (the host
// namespace's links, the pinned links, every map, each endpoint's
// namespace, the uplink's HTB tree) and writes only what differs; a Set
// that only attaches or detaches endpoints soon after one that read
// everything makes or removes them alone (setNewEndpoints).
func (d *Driver) Set(ctx context.Context, desired *datapath.Desired) error {
	n, err := desired.Normalize()
	if err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}
	if err := d.check(n); err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	if done, err := d.setNewEndpoints(ctx, n); done {
		return err
	}
	start := time.Now()
	before := d.ops.Counts()

	mtu := n.Host.MTU
	if mtu == 0 {
		l, err := d.nl.LinkByName(n.Host.UnderlayDev)
		if err != nil {
			return fmt.Errorf("ebpf set: underlay device %q: %w", n.Host.UnderlayDev, err)
		}
		mtu = l.Attrs().MTU
	}
	mtu -= datapath.VXLANOverhead
	refused := refusals(n)

	clsact, qdiscs, err := d.clsactDevices()
	if err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}

	// 1. The VXLAN device, its programs and the config map.
	if err := d.ensureVXLAN(n.Host, mtu, clsact); err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}
	full := d.cfg.MapResync < 0 || d.polCache == nil || time.Since(d.mapsRead) >= d.cfg.MapResync
	readAt := time.Now()
	cur, err := d.readMaps(full)
	if err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}

	// 2. Policies: the classes of every VPC's endpoints go into the
	// policy maps before any endpoint points at them; a VPC whose classes
	// the maps refuse fails alone.
	pols := map[string]*epPolicy{}
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		if _, ok := refused[e.VNI]; !ok {
			pols[e.ID] = d.compilePolicy(e)
		}
	}
	polFailed := d.putPolicies(n, pols, cur, refused)

	// 3. Endpoints: a refused VPC keeps the endpoints programmed before
	// (and gets no new ones); the veths of all others go.
	kept := map[string]*epState{}
	for id, st := range d.eps {
		if _, ok := refused[st.ep.VNI]; ok {
			kept[id] = st
			pols[id] = d.policies[id]
		}
	}
	var wantEPs []*datapath.Endpoint
	wantVeth := map[string]bool{}
	for _, st := range kept {
		wantVeth[st.status.HostIfName] = true
	}
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		if _, ok := refused[e.VNI]; !ok {
			wantEPs = append(wantEPs, e)
			wantVeth[VethName(e.ID)] = true
		}
	}
	links, err := writes.Dump("links", d.nl.LinkList)
	if err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}
	byName := map[string]netlink.Link{}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if isVethName(name) && !wantVeth[name] {
			if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(l) }); err != nil {
				errs = append(errs, fmt.Errorf("delete veth %s (%s): %w", name, l.Attrs().Alias, err))
				continue
			}
			d.log.Info("endpoint removed", "veth", name, "alias", l.Attrs().Alias)
			continue
		}
		byName[name] = l
	}
	pinned, err := d.pinnedLinks()
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range pinned {
		if !isHostHook(name) && !wantVeth[name] {
			errs = append(errs, d.dropLink(name))
		}
	}
	eps := make(map[string]*epState, len(wantEPs)+len(kept))
	for id, st := range kept {
		eps[id] = st
	}
	for _, e := range wantEPs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("ebpf set: %w", err)
		}
		st, err := d.ensureEndpoint(e, d.eps[e.ID], byName[VethName(e.ID)], mtu, clsact)
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %q: %w", e.ID, err))
			delete(pols, e.ID)
			continue
		}
		eps[e.ID] = st
	}

	// 4. The maps, from the endpoints that are attached; then the policy
	// entries no endpoint points at any more; then the uplink.
	vpcOf := func(vni uint32) *datapath.VPC {
		if _, ok := refused[vni]; ok {
			return d.vpcDesired[vni]
		}
		return n.VPC(vni)
	}
	plan, qerr := planQoS(n.Host.CapacityBps, eps, vpcOf, cur)
	remErr := d.convergeMaps(n, eps, refused, pols, plan, cur, full)
	wantPol := policyMapsOf(slices.Collect(maps.Values(pols)))
	polErr := d.deletePolicies(wantPol, cur)
	errs = append(errs, remErr, polErr)
	// The policy maps now hold what the endpoints' classes want, unless a
	// write failed: then the next Set reads them.
	if polFailed || polErr != nil || remErr != nil {
		d.polCache = nil
	} else {
		d.polCache = wantPol
		if full {
			d.mapsRead = readAt
		}
	}
	if qerr == nil {
		qerr = d.convergeQoSTrees(n.Host.UnderlayDev, plan.shaperTree(), plan.uplinkTree(eps), slices.Collect(maps.Values(byName)), qdiscs)
	}
	errs = append(errs, qerr)

	// 5. Connections the policies no longer allow.
	if err := d.flushIfIsolated(eps, pols); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}

	// 6. Endpoint namespaces the driver made and no longer needs.
	ownNS := map[string]bool{}
	for _, st := range eps {
		if st.ep.Netns == "" {
			ownNS[d.names.Endpoint(st.ep.ID)] = true
		}
	}
	for _, e := range n.Endpoints {
		if e.Netns == "" {
			ownNS[d.names.Endpoint(e.ID)] = true // kept even if it failed: retried
		}
	}
	ents, err := os.ReadDir(d.cfg.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, ent := range ents {
		if name := ent.Name(); d.names.IsEndpoint(name) && !ownNS[name] {
			errs = append(errs, d.ops.Write(writes.NetnsDel, func() error { return netnsfile.Delete(d.cfg.NetnsDir, name) }))
		}
	}

	for id, st := range eps {
		st.qos = plan.eps[id] != nil
	}
	programmed := map[uint32]*datapath.VPC{}
	for i := range n.VPCs {
		if v := vpcOf(n.VPCs[i].VNI); v != nil {
			programmed[v.VNI] = v
		}
	}
	d.vpcDesired = programmed
	d.publish(eps, refused, pols, qerr)
	for _, r := range refused {
		errs = append(errs, r.err)
	}
	err = errors.Join(errs...)
	d.last = nil
	if err == nil {
		d.last = &lastSet{host: n.Host, vpcs: n.VPCs, mtu: mtu, read: start}
	}
	if c := d.ops.Counts().Sub(before); len(c) > 0 || err != nil {
		d.log.Info("datapath set", "vpcs", len(n.VPCs), "endpoints", len(n.Endpoints), "writes", c.String(), "took", time.Since(start), "err", err)
	}
	if err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}
	return nil
}

// check rejects what this driver cannot program.
func (d *Driver) check(n *datapath.Desired) error {
	var errs []error
	if n.Host.Name != d.cfg.HostName {
		errs = append(errs, fmt.Errorf("%w: host %q, but the driver runs for %q", datapath.ErrInvalid, n.Host.Name, d.cfg.HostName))
	}
	if !n.Host.UnderlayIP.Is4() {
		errs = append(errs, fmt.Errorf("%w: underlay %s: only IPv4 is supported", datapath.ErrInvalid, n.Host.UnderlayIP))
	}
	if n.Host.MTU == 0 && n.Host.UnderlayDev == "" {
		errs = append(errs, fmt.Errorf("%w: host %q: neither MTU nor underlay device", datapath.ErrInvalid, n.Host.Name))
	}
	if n.Host.CapacityBps > 0 && n.Host.UnderlayDev == "" {
		errs = append(errs, fmt.Errorf("%w: host %q: a capacity without an underlay device to shape", datapath.ErrInvalid, n.Host.Name))
	}
	return errors.Join(errs...)
}

// refusals are the VPCs Normalize found invalid (datapath.Desired.Invalid)
// and those this driver cannot program (an IPv6 subnet): each fails alone
// and keeps what was programmed; the others are programmed.
func refusals(n *datapath.Desired) map[uint32]refusal {
	out := map[uint32]refusal{}
	for _, v := range n.VPCs {
		for _, s := range v.Subnets {
			if !s.CIDR.Addr().Is4() {
				out[v.VNI] = refusal{policy: true, qos: true, err: &datapath.VPCError{VNI: v.VNI,
					Err: fmt.Errorf("%w: subnet %q (%s): only IPv4 is supported", ErrUnsupported, s.Name, s.CIDR)}}
			}
		}
	}
	for vni, err := range n.Invalid {
		out[vni] = refusal{policy: true, err: &datapath.VPCError{VNI: vni, Err: err}}
	}
	return out
}

// Pin names of the links of the VXLAN device and of the shaper.
const (
	hookVXLANIn   = "vxlan-ingress"
	hookVXLANOut  = "vxlan-egress"
	hookShaperOut = "shaper-ingress"
)

// isHostHook reports whether a pinned link is one of the host's, not an
// endpoint's.
func isHostHook(name string) bool {
	return name == hookVXLANIn || name == hookVXLANOut || name == hookShaperOut
}

// vxlanSysctls let the kernel hold a miss's packets on the VXLAN device's
// IPv6 neighbour for fd77:7766::<vni>:<ip> and tell no one but userspace
// (which ignores it: the ring buffer carries the miss), and keep IPv6
// addresses off the device.
var vxlanSysctls = []sysctl{
	{"net/ipv6/conf/" + VXLANName + "/addr_gen_mode", "1"},
	{"net/ipv6/neigh/" + VXLANName + "/app_solicit", "1"},
	{"net/ipv6/neigh/" + VXLANName + "/mcast_solicit", "0"},
	{"net/ipv6/neigh/" + VXLANName + "/ucast_solicit", "0"},
}

// ensureVXLAN converges the collect-metadata VXLAN device (GBP, no
// learning, port 4789, the gateway MAC, the overlay MTU, up), its
// programs and the config map. clsact are the devices with a clsact qdisc.
func (d *Driver) ensureVXLAN(h datapath.HostConfig, mtu int, clsact map[int]bool) error {
	l, err := d.nl.LinkByName(VXLANName)
	var nf netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return fmt.Errorf("find %s: %w", VXLANName, err)
	}
	if l != nil {
		if vx, ok := l.(*netlink.Vxlan); !ok || !vx.FlowBased || !vx.GBP || vx.Learning || vx.Port != VXLANPort || vx.VxlanId != 0 {
			d.log.Warn("vxlan device has wrong settings, re-creating", "dev", VXLANName)
			if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(l) }); err != nil {
				return fmt.Errorf("delete %s: %w", VXLANName, err)
			}
			l = nil
		}
	}
	fresh := l == nil
	if fresh {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: VXLANName, MTU: mtu, HardwareAddr: GatewayMAC()},
			FlowBased: true, GBP: true, Learning: false, Port: VXLANPort,
		}
		if err := d.ops.Write(writes.LinkAdd, func() error { return d.nl.LinkAdd(vx) }); err != nil {
			return fmt.Errorf("add %s: %w", VXLANName, err)
		}
		if l, err = d.nl.LinkByName(VXLANName); err != nil {
			return fmt.Errorf("find new %s: %w", VXLANName, err)
		}
	}
	if err := d.convergeSysctls(vxlanSysctls, fresh); err != nil {
		return fmt.Errorf("%s: %w", VXLANName, err)
	}
	a := l.Attrs()
	if a.MTU != mtu {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetMTU(l, mtu) }); err != nil {
			return fmt.Errorf("set %s mtu: %w", VXLANName, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, GatewayMAC()) {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetHardwareAddr(l, GatewayMAC()) }); err != nil {
			return fmt.Errorf("set %s mac: %w", VXLANName, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetUp(l) }); err != nil {
			return fmt.Errorf("set %s up: %w", VXLANName, err)
		}
	}
	for _, hk := range []hook{
		{name: hookVXLANIn, ifindex: a.Index, prog: d.objs.FromVxlan},
		{name: hookVXLANOut, ifindex: a.Index, egress: true, prog: d.objs.ToVxlan},
	} {
		if err := d.ensureHook(hk, clsact); err != nil {
			return err
		}
	}
	shaper, err := d.ensureShaper(mtu, clsact)
	if err != nil {
		return err
	}
	want := weftConfig{VxlanIfindex: uint32(a.Index), Underlay: be32(h.UnderlayIP), ShaperIfindex: uint32(shaper), Sampling: d.cfg.FlowSampling}
	if d.cfg.MissMode == MissHold {
		want.Flags |= cfgHold
	}
	if cur, err := d.lookupConfig(); err != nil || cur != want {
		if err := d.ops.Write(writes.MapPut, func() error { return d.objs.Config.Put(uint32(0), want) }); err != nil {
			return fmt.Errorf("config map: %w", err)
		}
	}
	d.smu.Lock()
	d.vxIndex, d.underlay = a.Index, h.UnderlayIP
	d.smu.Unlock()
	return nil
}

// shaperTxQLen is the shaper veth's queue length: each class of its HTB
// tree holds this many packets.
const shaperTxQLen = 100

// ensureShaper converges the shaper veth pair (ShaperName, whose HTB tree
// holds the shaped traffic, and its peer, whose tcx ingress program sends
// it on; overlay MTU, up) and returns the index of ShaperName.
func (d *Driver) ensureShaper(mtu int, clsact map[int]bool) (int, error) {
	l, err := d.nl.LinkByName(ShaperName)
	var nf netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return 0, fmt.Errorf("find %s: %w", ShaperName, err)
	}
	var peer netlink.Link
	if l != nil {
		peer, err = d.nl.LinkByName(shaperPeer)
		if l.Type() != "veth" || err != nil || peer.Attrs().ParentIndex != l.Attrs().Index {
			d.log.Warn("shaper veth has wrong settings, re-creating", "dev", ShaperName)
			if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(l) }); err != nil {
				return 0, fmt.Errorf("delete %s: %w", ShaperName, err)
			}
			l = nil
		}
	}
	if l == nil {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ShaperName, MTU: mtu, TxQLen: shaperTxQLen, Flags: net.FlagUp},
			PeerName: shaperPeer, PeerMTU: uint32(mtu)}
		if err := d.ops.Write(writes.LinkAdd, func() error { return d.nl.LinkAdd(veth) }); err != nil {
			return 0, fmt.Errorf("add %s: %w", ShaperName, err)
		}
		if l, err = d.nl.LinkByName(ShaperName); err != nil {
			return 0, fmt.Errorf("find new %s: %w", ShaperName, err)
		}
		if peer, err = d.nl.LinkByName(shaperPeer); err != nil {
			return 0, fmt.Errorf("find new %s: %w", shaperPeer, err)
		}
	}
	for _, x := range []netlink.Link{l, peer} {
		a := x.Attrs()
		if a.MTU != mtu {
			if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetMTU(x, mtu) }); err != nil {
				return 0, fmt.Errorf("set %s mtu: %w", a.Name, err)
			}
		}
		if a.Flags&net.FlagUp == 0 {
			if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetUp(x) }); err != nil {
				return 0, fmt.Errorf("set %s up: %w", a.Name, err)
			}
		}
	}
	if l.Attrs().TxQLen != shaperTxQLen {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetTxQLen(l, shaperTxQLen) }); err != nil {
			return 0, fmt.Errorf("set %s txqueuelen: %w", ShaperName, err)
		}
	}
	if err := d.ensureHook(hook{name: hookShaperOut, ifindex: peer.Attrs().Index, prog: d.objs.FromShaper}, clsact); err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// cfgHold is the config map's flag for MissHold (CFG_HOLD in weft.c).
const cfgHold = 1

// mapState is what the maps Set converges held when it began.
type mapState struct {
	ifaces map[uint32]weftIface
	locals map[weftVip]weftLocalEp
	vpcs   map[uint32]weftVpc
	pol    *policyMaps
}

// readMaps reads the maps Set converges; the policy maps only when full
// (otherwise what the last Set left in them, d.polCache).
func (d *Driver) readMaps(full bool) (*mapState, error) {
	s := &mapState{pol: d.polCache}
	errs := []error{
		readMap(d.objs.Ifaces, "ifaces", &s.ifaces),
		readMap(d.objs.Locals, "locals", &s.locals),
		readMap(d.objs.Vpcs, "vpcs", &s.vpcs),
	}
	if full {
		s.pol = &policyMaps{}
		errs = append(errs,
			readMap(d.objs.PolIds, "pol_ids", &s.pol.ids),
			readMap(d.objs.PolNets, "pol_nets", &s.pol.nets),
			readMap(d.objs.PolPorts, "pol_ports", &s.pol.ports),
			readMap(d.objs.PolIcmp, "pol_icmp", &s.pol.icmp))
	}
	return s, errors.Join(errs...)
}

// putPolicies puts the policy entries of every VPC's endpoints that the
// maps lack; a VPC whose entries do not go in is refused (failed says one
// was).
func (d *Driver) putPolicies(n *datapath.Desired, pols map[string]*epPolicy, cur *mapState, refused map[uint32]refusal) (failed bool) {
	byVNI := map[uint32][]*epPolicy{}
	for i := range n.Endpoints {
		if p := pols[n.Endpoints[i].ID]; p != nil {
			byVNI[n.Endpoints[i].VNI] = append(byVNI[n.Endpoints[i].VNI], p)
		}
	}
	for vni, ps := range byVNI {
		m := policyMapsOf(ps)
		err := errors.Join(
			putMap(&d.ops, d.objs.PolPorts, "pol_ports", m.ports, cur.pol.ports),
			putMap(&d.ops, d.objs.PolIcmp, "pol_icmp", m.icmp, cur.pol.icmp),
			putMap(&d.ops, d.objs.PolIds, "pol_ids", m.ids, cur.pol.ids),
			putMap(&d.ops, d.objs.PolNets, "pol_nets", m.nets, cur.pol.nets))
		if err != nil {
			failed = true
			refused[vni] = refusal{policy: true, err: &datapath.VPCError{VNI: vni, Err: fmt.Errorf("policy: %w", err)}}
			for i := range n.Endpoints {
				if n.Endpoints[i].VNI == vni {
					delete(pols, n.Endpoints[i].ID)
				}
			}
		}
	}
	return failed
}

// deletePolicies deletes the policy entries that are not wanted.
func (d *Driver) deletePolicies(want *policyMaps, cur *mapState) error {
	return errors.Join(
		delMap(&d.ops, d.objs.PolNets, "pol_nets", want.nets, cur.pol.nets, nil),
		delMap(&d.ops, d.objs.PolIds, "pol_ids", want.ids, cur.pol.ids, nil),
		delMap(&d.ops, d.objs.PolIcmp, "pol_icmp", want.icmp, cur.pol.icmp, nil),
		delMap(&d.ops, d.objs.PolPorts, "pol_ports", want.ports, cur.pol.ports, nil))
}

// convergeMaps makes the vpcs, subnets, locals, ifaces and counters maps
// exactly what the VPCs and attached endpoints want (a refused VPC keeps
// its entries), then the remotes map what Learn installed: read and
// repaired when full, else trusted to hold what Learn and Forget wrote
// (only the entries of VPCs that go are deleted).
func (d *Driver) convergeMaps(n *datapath.Desired, eps map[string]*epState, refused map[uint32]refusal, pols map[string]*epPolicy, plan *qosPlan, cur *mapState, full bool) error {
	isRefused := func(vni uint32) bool { _, ok := refused[vni]; return ok }
	vpcs := map[uint32]weftVpc{}
	subnets := map[weftSubnetKey]weftSubnet{}
	for _, v := range n.VPCs {
		if isRefused(v.VNI) {
			continue
		}
		var vv weftVpc
		if vq := plan.vpcs[v.VNI]; vq != nil {
			vv.Minor, vv.TxMinor, vv.RxMinor = vq.minor, vq.txMinor, vq.rxMinor
		}
		vpcs[v.VNI] = vv
		for _, s := range v.Subnets {
			subnets[weftSubnetKey{Prefixlen: 32 + uint32(s.CIDR.Bits()), Vni: v.VNI, Ip: be32(s.CIDR.Addr())}] = weftSubnet{Gateway: be32(s.Gateway)}
		}
	}
	locals := map[weftVip]weftLocalEp{}
	ifaces := map[uint32]weftIface{}
	for id, st := range eps {
		l, f := endpointEntries(st, pols[id], plan.eps[id])
		locals[vipOf(&st.ep)] = l
		ifaces[uint32(st.ifindex)] = f
	}
	var errs []error
	errs = append(errs,
		// vpcs, ifaces and locals as Set read them at its start (only Set
		// writes them, under mu).
		convergeFrom(&d.ops, d.objs.Vpcs, "vpcs", vpcs, cur.vpcs, func(k uint32, _ weftVpc) bool { return isRefused(k) }),
		convergeMap(&d.ops, d.objs.Subnets, "subnets", subnets, func(k weftSubnetKey, _ weftSubnet) bool { return isRefused(k.Vni) }),
		convergeFrom(&d.ops, d.objs.Ifaces, "ifaces", ifaces, cur.ifaces, nil),
		convergeFrom(&d.ops, d.objs.Locals, "locals", locals, cur.locals, nil),
		d.convergeCounters(ifaces),
	)

	// Learned remotes follow their VPC; drift is repaired from memory. Read
	// under the fast-path lock, so a Learn during the Set is not drift.
	d.smu.Lock()
	defer d.smu.Unlock()
	next := map[uint32]*vpcState{}
	for vni := range vpcs {
		next[vni] = d.vpcs[vni]
	}
	for vni := range refused {
		if d.vpcs[vni] != nil {
			next[vni] = d.vpcs[vni]
		}
	}
	want := map[weftVip]weftRemoteEp{}
	for vni, vs := range next {
		if vs == nil {
			vs = &vpcState{remotes: map[netip.Addr]remote{}}
			next[vni] = vs
		}
		for ip, r := range vs.remotes {
			want[weftVip{Vni: vni, Ip: be32(ip)}] = weftRemoteEp{Host: be32(r.host), Identity: r.identity, Epoch: r.epoch}
		}
	}
	if full {
		errs = append(errs, convergeMap(&d.ops, d.objs.Remotes, "remotes", want, nil))
	} else {
		for vni, vs := range d.vpcs {
			if next[vni] != nil {
				continue
			}
			for ip := range vs.remotes {
				k := weftVip{Vni: vni, Ip: be32(ip)}
				if err := d.ops.Write(writes.MapDel, func() error { return d.objs.Remotes.Delete(k) }); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					errs = append(errs, fmt.Errorf("delete remotes entry %+v: %w", k, err))
				}
			}
		}
	}
	d.vpcs = next
	return errors.Join(errs...)
}

// endpointEntries are an attached endpoint's locals and ifaces entries:
// its policy classes (p, nil: none) and QoS classes (eq, nil: none).
func endpointEntries(st *epState, p *epPolicy, eq *epQoS) (weftLocalEp, weftIface) {
	e := &st.ep
	var mac [6]byte
	copy(mac[:], e.MAC)
	if p == nil {
		p = &epPolicy{}
	}
	l := weftLocalEp{Ifindex: uint32(st.ifindex), Mac: mac, Flags: p.flags(), InClass: classID(p.ingress)}
	f := weftIface{Vni: e.VNI, Ip: be32(e.IP), Identity: e.Identity, Mac: mac, Flags: p.flags(), EgClass: classID(p.egress)}
	if e.QoS != nil {
		f.Tos = e.QoS.DSCP << 2
	}
	if eq != nil {
		f.Priority = htb.ClassID(eq.minor)
		if eq.shaped {
			f.Flags |= epTxShaped
			l.Flags |= epRxShaped
			l.RxClass = htb.ClassID(eq.rxMinor)
		}
	}
	return l, f
}

// readMap reads every entry of m into *out.
func readMap[K comparable, V any](m *ebpf.Map, what string, out *map[K]V) error {
	*out = map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		(*out)[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s map: %w", what, err)
	}
	return nil
}

// putMap puts the entries of want that cur lacks or holds otherwise.
func putMap[K, V comparable](ops *writes.Counter, m *ebpf.Map, what string, want, cur map[K]V) error {
	var errs []error
	for k, v := range want {
		if c, ok := cur[k]; ok && c == v {
			continue
		}
		if err := ops.Write(writes.MapPut, func() error { return m.Put(k, v) }); err != nil {
			errs = append(errs, fmt.Errorf("put %s entry %+v: %w", what, k, err))
		}
	}
	return errors.Join(errs...)
}

// delMap deletes the entries of cur that want lacks, but those keep
// selects.
func delMap[K, V comparable](ops *writes.Counter, m *ebpf.Map, what string, want, cur map[K]V, keep func(K, V) bool) error {
	var errs []error
	for k, v := range cur {
		if _, ok := want[k]; ok || (keep != nil && keep(k, v)) {
			continue
		}
		if err := ops.Write(writes.MapDel, func() error { return m.Delete(k) }); err != nil {
			errs = append(errs, fmt.Errorf("delete %s entry %+v: %w", what, k, err))
		}
	}
	return errors.Join(errs...)
}

// convergeMap makes m hold exactly want, plus the entries keep selects:
// changed entries are put first, then stale ones deleted.
func convergeMap[K, V comparable](ops *writes.Counter, m *ebpf.Map, what string, want map[K]V, keep func(K, V) bool) error {
	var cur map[K]V
	if err := readMap(m, what, &cur); err != nil {
		return err
	}
	return convergeFrom(ops, m, what, want, cur, keep)
}

// convergeFrom is convergeMap with m's entries read already (cur).
func convergeFrom[K, V comparable](ops *writes.Counter, m *ebpf.Map, what string, want, cur map[K]V, keep func(K, V) bool) error {
	return errors.Join(putMap(ops, m, what, want, cur), delMap(ops, m, what, want, cur, keep))
}

// convergeCounters gives every attached endpoint a (zeroed) counters
// entry, leaving existing ones alone, and deletes the others.
func (d *Driver) convergeCounters(ifaces map[uint32]weftIface) error {
	cur := map[uint32]bool{}
	var k uint32
	var v []weftCounters
	it := d.objs.Counters.Iterate()
	for it.Next(&k, &v) {
		cur[k] = true
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read counters map: %w", err)
	}
	var errs []error
	zero := make([]weftCounters, ebpf.MustPossibleCPU())
	for k := range ifaces {
		if cur[k] {
			continue
		}
		if err := d.ops.Write(writes.MapPut, func() error { return d.objs.Counters.Update(k, zero, ebpf.UpdateNoExist) }); err != nil {
			errs = append(errs, fmt.Errorf("counters of ifindex %d: %w", k, err))
		}
	}
	for k := range cur {
		if _, ok := ifaces[k]; !ok {
			errs = append(errs, d.ops.Write(writes.MapDel, func() error { return d.objs.Counters.Delete(k) }))
		}
	}
	return errors.Join(errs...)
}

// sysctl is one /proc/sys/net setting of the host namespace.
type sysctl struct{ key, value string }

// convergeSysctls writes the settings that differ (all of them when fresh,
// without reading first).
func (d *Driver) convergeSysctls(keys []sysctl, fresh bool) error {
	return netnsfile.DoFd(int(d.hostNS), func() error {
		for _, k := range keys {
			path := "/proc/sys/" + k.key
			if !fresh {
				b, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("read sysctl %s: %w", k.key, err)
				}
				if strings.TrimSpace(string(b)) == k.value {
					continue
				}
			}
			if err := d.ops.Write(writes.SysctlSet, func() error { return os.WriteFile(path, []byte(k.value), 0o644) }); err != nil {
				return fmt.Errorf("write sysctl %s=%s: %w", k.key, k.value, err)
			}
		}
		return nil
	})
}
