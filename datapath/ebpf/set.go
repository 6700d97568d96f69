package ebpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/netnsfile"
)

// Set implements datapath.Driver. It reads what is programmed (the host
// namespace's links, the pinned links, every map, each endpoint's
// namespace) and writes only what differs.
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
	start := time.Now()
	before := d.ops.counts()

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

	// 1. The VXLAN device, its programs and the config map.
	if err := d.ensureVXLAN(n.Host, mtu); err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}

	// 2. Endpoints: a refused VPC keeps the endpoints programmed before
	// (and gets no new ones); the veths of all others go.
	kept := map[string]*epState{}
	for id, st := range d.eps {
		if _, ok := refused[st.ep.VNI]; ok {
			kept[id] = st
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
	links, err := dump("links", d.nl.LinkList)
	if err != nil {
		return fmt.Errorf("ebpf set: %w", err)
	}
	byName := map[string]netlink.Link{}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if isVethName(name) && !wantVeth[name] {
			if err := d.ops.write(opLinkDel, func() error { return d.nl.LinkDel(l) }); err != nil {
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
		if name != hookVXLANIn && name != hookVXLANOut && !wantVeth[name] {
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
		st, err := d.ensureEndpoint(e, byName[VethName(e.ID)], mtu)
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %q: %w", e.ID, err))
			continue
		}
		eps[e.ID] = st
	}

	// 3. The maps, from the endpoints that are attached.
	errs = append(errs, d.convergeMaps(n, eps, refused))

	// 4. Endpoint namespaces the driver made and no longer needs.
	ownNS := map[string]bool{}
	for _, st := range eps {
		if st.ep.Netns == "" {
			ownNS[d.names.endpoint(st.ep.ID)] = true
		}
	}
	for _, e := range n.Endpoints {
		if e.Netns == "" {
			ownNS[d.names.endpoint(e.ID)] = true // kept even if it failed: retried
		}
	}
	ents, err := os.ReadDir(d.cfg.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, ent := range ents {
		if name := ent.Name(); d.names.isEndpoint(name) && !ownNS[name] {
			errs = append(errs, d.ops.write(opNetnsDel, func() error { return netnsfile.Delete(d.cfg.NetnsDir, name) }))
		}
	}

	d.smu.Lock()
	d.eps, d.refused = eps, refused
	for k, t := range d.pending {
		if time.Since(t) > 2*time.Second {
			delete(d.pending, k)
		}
	}
	d.smu.Unlock()
	for _, r := range refused {
		errs = append(errs, r.err)
	}
	err = errors.Join(errs...)
	if c := d.ops.counts().Sub(before); len(c) > 0 || err != nil {
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
	for _, v := range n.VPCs {
		for _, s := range v.Subnets {
			if !s.CIDR.Addr().Is4() {
				errs = append(errs, fmt.Errorf("%w: vpc %d subnet %q: only IPv4 is supported", datapath.ErrInvalid, v.VNI, s.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// refusals are the VPCs that ask for what the driver cannot enforce yet:
// an isolating security policy or a QoS that is more than best effort
// (datapath.QoS.Enforced). Each fails alone; the others are programmed.
func refusals(n *datapath.Desired) map[uint32]refusal {
	out := map[uint32]refusal{}
	why := map[uint32][]string{}
	local := map[uint32]bool{}
	for _, e := range n.Endpoints {
		local[e.VNI] = true
	}
	for _, v := range n.VPCs {
		if v.QoS.Enforced(n.Host.CapacityBps, local[v.VNI]) != nil {
			r := out[v.VNI]
			r.qos = true
			out[v.VNI] = r
			why[v.VNI] = append(why[v.VNI], "the VPC's QoS")
		}
	}
	for _, e := range n.Endpoints {
		r := out[e.VNI]
		if p := e.Policy; p != nil && (p.IngressIsolated || p.EgressIsolated) {
			r.policy = true
			why[e.VNI] = append(why[e.VNI], fmt.Sprintf("the security policy of %s", e.ID))
		}
		if e.QoS.Enforced(n.Host.CapacityBps) != nil {
			r.qos = true
			why[e.VNI] = append(why[e.VNI], fmt.Sprintf("the QoS of %s", e.ID))
		}
		if r.policy || r.qos {
			out[e.VNI] = r
		}
	}
	for vni, r := range out {
		w := why[vni]
		if len(w) > 3 {
			w = append(w[:3], fmt.Sprintf("%d more", len(why[vni])-3))
		}
		r.err = fmt.Errorf("%w: vpc %d refused: %s cannot be enforced by the ebpf datapath yet", ErrUnsupported, vni, strings.Join(w, ", "))
		out[vni] = r
	}
	return out
}

// Pin names of the VXLAN device's links.
const (
	hookVXLANIn  = "vxlan-ingress"
	hookVXLANOut = "vxlan-egress"
)

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
// learning, port 4789, the gateway MAC, the overlay MTU, up), its tcx
// programs and the config map.
func (d *Driver) ensureVXLAN(h datapath.HostConfig, mtu int) error {
	l, err := d.nl.LinkByName(VXLANName)
	var nf netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return fmt.Errorf("find %s: %w", VXLANName, err)
	}
	if l != nil {
		if vx, ok := l.(*netlink.Vxlan); !ok || !vx.FlowBased || !vx.GBP || vx.Learning || vx.Port != VXLANPort || vx.VxlanId != 0 {
			d.log.Warn("vxlan device has wrong settings, re-creating", "dev", VXLANName)
			if err := d.ops.write(opLinkDel, func() error { return d.nl.LinkDel(l) }); err != nil {
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
		if err := d.ops.write(opLinkAdd, func() error { return d.nl.LinkAdd(vx) }); err != nil {
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
		if err := d.ops.write(opLinkSet, func() error { return d.nl.LinkSetMTU(l, mtu) }); err != nil {
			return fmt.Errorf("set %s mtu: %w", VXLANName, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, GatewayMAC()) {
		if err := d.ops.write(opLinkSet, func() error { return d.nl.LinkSetHardwareAddr(l, GatewayMAC()) }); err != nil {
			return fmt.Errorf("set %s mac: %w", VXLANName, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := d.ops.write(opLinkSet, func() error { return d.nl.LinkSetUp(l) }); err != nil {
			return fmt.Errorf("set %s up: %w", VXLANName, err)
		}
	}
	for _, hk := range []tcxHook{
		{name: hookVXLANIn, ifindex: a.Index, attach: ebpf.AttachTCXIngress, prog: d.objs.FromVxlan},
		{name: hookVXLANOut, ifindex: a.Index, attach: ebpf.AttachTCXEgress, prog: d.objs.ToVxlan},
	} {
		if err := d.ensureLink(hk); err != nil {
			return err
		}
	}
	want := weftConfig{VxlanIfindex: uint32(a.Index), Underlay: be32(h.UnderlayIP)}
	if d.cfg.MissMode == MissHold {
		want.Flags |= cfgHold
	}
	if cur, err := d.lookupConfig(); err != nil || cur != want {
		if err := d.ops.write(opMapPut, func() error { return d.objs.Config.Put(uint32(0), want) }); err != nil {
			return fmt.Errorf("config map: %w", err)
		}
	}
	d.smu.Lock()
	d.vxIndex, d.underlay = a.Index, h.UnderlayIP
	d.smu.Unlock()
	return nil
}

// cfgHold is the config map's flag for MissHold (CFG_HOLD in weft.c).
const cfgHold = 1

// convergeMaps makes the vpcs, subnets, locals, ifaces and counters maps
// exactly what the VPCs and attached endpoints want (a refused VPC keeps
// its entries), then the remotes map what Learn installed.
func (d *Driver) convergeMaps(n *datapath.Desired, eps map[string]*epState, refused map[uint32]refusal) error {
	isRefused := func(vni uint32) bool { _, ok := refused[vni]; return ok }
	vpcs := map[uint32]weftVpc{}
	subnets := map[weftSubnetKey]weftSubnet{}
	for _, v := range n.VPCs {
		if isRefused(v.VNI) {
			continue
		}
		vpcs[v.VNI] = weftVpc{}
		for _, s := range v.Subnets {
			subnets[weftSubnetKey{Prefixlen: 32 + uint32(s.CIDR.Bits()), Vni: v.VNI, Ip: be32(s.CIDR.Addr())}] = weftSubnet{Gateway: be32(s.Gateway)}
		}
	}
	locals := map[weftVip]weftLocalEp{}
	ifaces := map[uint32]weftIface{}
	for _, st := range eps {
		e := &st.ep
		var mac [6]byte
		copy(mac[:], e.MAC)
		locals[weftVip{Vni: e.VNI, Ip: be32(e.IP)}] = weftLocalEp{Ifindex: uint32(st.ifindex), Mac: mac}
		ifaces[uint32(st.ifindex)] = weftIface{Vni: e.VNI, Ip: be32(e.IP), Identity: e.Identity, Mac: mac}
	}
	var errs []error
	errs = append(errs,
		convergeMap(&d.ops, d.objs.Vpcs, "vpcs", vpcs, func(k uint32, _ weftVpc) bool { return isRefused(k) }),
		convergeMap(&d.ops, d.objs.Subnets, "subnets", subnets, func(k weftSubnetKey, _ weftSubnet) bool { return isRefused(k.Vni) }),
		convergeMap(&d.ops, d.objs.Ifaces, "ifaces", ifaces, nil),
		convergeMap(&d.ops, d.objs.Locals, "locals", locals, nil),
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
	d.vpcs = next
	errs = append(errs, convergeMap(&d.ops, d.objs.Remotes, "remotes", want, nil))
	return errors.Join(errs...)
}

// convergeMap makes m hold exactly want, plus the entries keep selects:
// changed entries are put first, then stale ones deleted.
func convergeMap[K, V comparable](ops *opCounts, m *ebpf.Map, what string, want map[K]V, keep func(K, V) bool) error {
	cur := map[K]V{}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		cur[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s map: %w", what, err)
	}
	var errs []error
	for k, v := range want {
		if c, ok := cur[k]; ok && c == v {
			continue
		}
		if err := ops.write(opMapPut, func() error { return m.Put(k, v) }); err != nil {
			errs = append(errs, fmt.Errorf("put %s entry %+v: %w", what, k, err))
		}
	}
	for k, v := range cur {
		if _, ok := want[k]; ok || (keep != nil && keep(k, v)) {
			continue
		}
		if err := ops.write(opMapDel, func() error { return m.Delete(k) }); err != nil {
			errs = append(errs, fmt.Errorf("delete %s entry %+v: %w", what, k, err))
		}
	}
	return errors.Join(errs...)
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
		if err := d.ops.write(opMapPut, func() error { return d.objs.Counters.Update(k, zero, ebpf.UpdateNoExist) }); err != nil {
			errs = append(errs, fmt.Errorf("counters of ifindex %d: %w", k, err))
		}
	}
	for k := range cur {
		if _, ok := ifaces[k]; !ok {
			errs = append(errs, d.ops.write(opMapDel, func() error { return d.objs.Counters.Delete(k) }))
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
			if err := d.ops.write(opSysctlSet, func() error { return os.WriteFile(path, []byte(k.value), 0o644) }); err != nil {
				return fmt.Errorf("write sysctl %s=%s: %w", k.key, k.value, err)
			}
		}
		return nil
	})
}
