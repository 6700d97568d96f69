package linux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/nlconv"
	"github.com/weftnet/weft/datapath/internal/writes"
)

var nativeEndian = binary.NativeEndian

// Set implements datapath.Driver. It reads the kernel state of every VPC
// namespace (links, routes, addresses, neighbours, FDB), and of the
// endpoint namespaces that Config.EndpointResync does not let it trust,
// and writes only what differs; a Set that only attaches new endpoints
// soon after a full one skips the reads (attach.go).
func (d *Driver) Set(ctx context.Context, desired *datapath.Desired) error {
	n, err := desired.Normalize()
	if err != nil {
		return fmt.Errorf("linux set: %w", err)
	}
	failed, err := d.check(n)
	if err != nil {
		return fmt.Errorf("linux set: %w", err)
	}
	all := n
	n, waiting := splitWaiting(n)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	d.smu.Lock()
	d.waiting = waiting
	d.smu.Unlock()
	d.held = make(map[string]datapath.Endpoint, len(waiting))
	for i := range all.Endpoints {
		if e := &all.Endpoints[i]; waiting[e.ID].Waiting != "" {
			d.held[e.ID] = cloneEndpoint(e)
		}
	}
	start := time.Now()
	before := d.ops.Counts()

	mtu := n.Host.MTU
	if mtu == 0 {
		l, err := d.host.LinkByName(n.Host.UnderlayDev)
		if err != nil {
			return fmt.Errorf("linux set: underlay device %q: %w", n.Host.UnderlayDev, err)
		}
		mtu = l.Attrs().MTU
	}
	d.smu.Lock()
	d.underlay = n.Host.UnderlayIP
	d.smu.Unlock()
	hc := hostCfg{underlay: n.Host.UnderlayIP, mtu: mtu - datapath.VXLANOverhead}

	if added := d.addedOnly(n, failed, hc); added != nil {
		err := d.attachAdded(ctx, n, added, hc)
		if err == nil {
			d.log.Info("datapath set", "vpcs", len(n.VPCs), "endpoints", len(n.Endpoints), "attached", len(added),
				"writes", d.ops.Counts().Sub(before).String(), "took", time.Since(start))
			return nil
		}
		if !errors.Is(err, errNotQuick) {
			d.log.Info("quick attach failed, setting in full", "err", err)
		}
	}
	d.last = lastFull{}

	onDisk, epNS, err := d.listOwned()
	if err != nil {
		return fmt.Errorf("linux set: %w", err)
	}
	var errs []error

	// 1. VPCs that are no longer wanted.
	for vni := range d.vpcs {
		onDisk[vni] = d.names.vpc(vni)
	}
	for vni := range onDisk {
		if n.VPC(vni) == nil {
			errs = append(errs, d.removeVPC(vni))
		}
	}

	// 2. Each wanted VPC: the namespace and its VXLAN device, then the
	// endpoints that left it (before any is created elsewhere, so an
	// endpoint that changes VPC frees its interface name first).
	byVNI := map[uint32][]*datapath.Endpoint{}
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		byVNI[e.VNI] = append(byVNI[e.VNI], e)
	}
	type pass struct {
		vs   *vpcNS
		scan *vpcScan
		v    datapath.VPC
	}
	// Every VPC's policy first, so that a change is in force after a
	// namespace operation or two per VPC, not after reading every VPC;
	// and before its endpoints, so that a new endpoint's veth comes up
	// with its rules in place. If the kernel refuses a VPC's rules, the
	// VPC is left as it was (the transaction is atomic).
	opened := map[uint32]*vpcNS{}
	for _, v := range n.VPCs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("linux set: %w", err)
		}
		if ferr := failed[v.VNI]; ferr != nil {
			// Left as programmed: its endpoints keep their rules.
			errs = append(errs, &datapath.VPCError{VNI: v.VNI, Err: ferr})
			continue
		}
		vs, err := d.openedVPC(v)
		if err == nil {
			err = d.ensurePolicy(vs, byVNI[v.VNI])
			if err != nil {
				failed[v.VNI] = err
				errs = append(errs, &datapath.VPCError{VNI: v.VNI, Err: err})
				continue
			}
		}
		if err != nil {
			errs = append(errs, err)
			d.forgetEndpoints(byVNI[v.VNI])
			continue
		}
		opened[v.VNI] = vs
	}
	var passes []pass
	for _, v := range n.VPCs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("linux set: %w", err)
		}
		vs := opened[v.VNI]
		if vs == nil {
			continue
		}
		scan, err := d.ensureVPC(vs, hc)
		if err != nil {
			errs = append(errs, err)
			d.forgetEndpoints(byVNI[v.VNI])
			continue
		}
		errs = append(errs, d.removeStaleEndpoints(vs, scan, byVNI[v.VNI]))
		passes = append(passes, pass{vs, scan, v})
	}
	// Forget endpoints that are gone everywhere (a failed VPC keeps its
	// own).
	wantEP := map[string]bool{}
	for _, e := range n.Endpoints {
		wantEP[e.ID] = true
	}
	d.smu.Lock()
	for id, st := range d.eps {
		if !wantEP[id] && failed[st.ep.VNI] == nil {
			delete(d.eps, id)
		}
	}
	d.failed = failed
	d.smu.Unlock()

	// 3. Endpoints, then the routes and neighbours of each VPC namespace,
	// then its QoS; then the host's QoS (see qos.go), which counts a failed
	// VPC's endpoints as they are programmed.
	qos := d.planQoS(d.asProgrammed(n, failed))
	for _, p := range passes {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("linux set: %w", err)
		}
		errs = append(errs, d.convergeVPC(ctx, p.vs, p.scan, p.v, byVNI[p.v.VNI], hc))
		errs = append(errs, d.convergeVPCQoS(p.vs, p.scan, qos, p.v.VNI))
	}
	errs = append(errs, d.convergeHostQoS(qos))

	// 4. Endpoint namespaces the driver made and no longer needs.
	ownNS := map[string]bool{}
	for _, e := range n.Endpoints {
		if e.Netns == "" {
			ownNS[d.names.Endpoint(e.ID)] = true
		}
	}
	for id, st := range d.eps {
		if failed[st.ep.VNI] != nil && st.ep.Netns == "" {
			ownNS[d.names.Endpoint(id)] = true
		}
	}
	for name := range epNS {
		if !ownNS[name] {
			errs = append(errs, d.ops.Write(writes.NetnsDel, func() error { return deleteNamedNS(d.cfg.NetnsDir, name) }))
		}
	}

	err = errors.Join(errs...)
	if err == nil && len(failed) == 0 {
		d.last = lastFull{read: start, host: n.Host, hc: hc, vpcs: n.VPCs}
	}
	if c := d.ops.Counts().Sub(before); len(c) > 0 || err != nil {
		d.log.Info("datapath set", "vpcs", len(n.VPCs), "endpoints", len(n.Endpoints), "writes", c.String(), "took", time.Since(start), "err", err)
	}
	if err != nil {
		return fmt.Errorf("linux set: %w", err)
	}
	return nil
}

// splitWaiting returns n without the endpoints whose given namespace does
// not exist (yet), which Set leaves unattached, and their status.
func splitWaiting(n *datapath.Desired) (*datapath.Desired, map[string]datapath.EndpointStatus) {
	var waiting map[string]datapath.EndpointStatus
	for _, e := range n.Endpoints {
		if e.Netns != "" && !nlconv.IsNetns(e.Netns) {
			if waiting == nil {
				waiting = map[string]datapath.EndpointStatus{}
			}
			waiting[e.ID] = datapath.EndpointStatus{Netns: e.Netns, IfName: e.IfName,
				Waiting: fmt.Sprintf("waiting for a network namespace at %s", e.Netns)}
		}
	}
	if waiting == nil {
		return n, nil
	}
	m := *n
	m.Endpoints = make([]datapath.Endpoint, 0, len(n.Endpoints)-len(waiting))
	for _, e := range n.Endpoints {
		if _, ok := waiting[e.ID]; !ok {
			m.Endpoints = append(m.Endpoints, e)
		}
	}
	return &m, waiting
}

// forgetEndpoints drops the state of endpoints whose VPC could not be
// set up: they are not programmed.
func (d *Driver) forgetEndpoints(eps []*datapath.Endpoint) {
	d.smu.Lock()
	defer d.smu.Unlock()
	for _, e := range eps {
		delete(d.eps, e.ID)
	}
}

// asProgrammed returns n with the endpoints of the failed VPCs as they
// are programmed (n itself when none failed). The caller holds mu.
func (d *Driver) asProgrammed(n *datapath.Desired, failed map[uint32]error) *datapath.Desired {
	if len(failed) == 0 {
		return n
	}
	p := *n
	p.Endpoints = make([]datapath.Endpoint, 0, len(n.Endpoints))
	ids := make(map[string]bool, len(n.Endpoints))
	for _, e := range n.Endpoints {
		if failed[e.VNI] == nil {
			p.Endpoints = append(p.Endpoints, e)
			ids[e.ID] = true
		}
	}
	for _, st := range d.eps {
		if failed[st.ep.VNI] != nil && n.VPC(st.ep.VNI) != nil && !ids[st.ep.ID] {
			p.Endpoints = append(p.Endpoints, st.ep)
		}
	}
	slices.SortFunc(p.Endpoints, func(a, b datapath.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return &p
}

// check rejects what this driver cannot program yet: the whole state, or
// (failed, with Normalize's Invalid) single VPCs.
func (d *Driver) check(n *datapath.Desired) (failed map[uint32]error, err error) {
	failed = make(map[uint32]error, len(n.Invalid))
	for vni, err := range n.Invalid {
		failed[vni] = err
	}
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
			if !s.CIDR.Addr().Is4() && failed[v.VNI] == nil {
				failed[v.VNI] = fmt.Errorf("%w: subnet %q: only IPv4 is supported", datapath.ErrInvalid, s.Name)
			}
		}
	}
	return failed, errors.Join(errs...)
}

type hostCfg struct {
	underlay netip.Addr
	mtu      int // overlay MTU
}

// vpcScan is the kernel state of a VPC namespace read at the start of a Set.
type vpcScan struct {
	links   map[string]netlink.Link
	routes  []netlink.Route // protocol RouteProtocol, main table
	loAddrs []netlink.Addr
	neighs  []netlink.Neigh // IPv4, every link
	fdb     []netlink.Neigh // of the VXLAN device, only withFDB
}

// scan reads the VPC namespace. Set does not need the FDB here: the remotes
// are re-read under the fast-path lock (see convergeRemotes).
func (vs *vpcNS) scan(withFDB bool) (*vpcScan, error) {
	s := &vpcScan{links: map[string]netlink.Link{}}
	links, err := writes.Dump("links", vs.h.LinkList)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		s.links[l.Attrs().Name] = l
	}
	s.routes, err = writes.Dump("routes", func() ([]netlink.Route, error) {
		return vs.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	if lo := s.links["lo"]; lo != nil {
		if s.loAddrs, err = writes.Dump("addresses", func() ([]netlink.Addr, error) { return vs.h.AddrList(lo, netlink.FAMILY_V4) }); err != nil {
			return nil, err
		}
	}
	if s.neighs, err = writes.Dump("neighbours", func() ([]netlink.Neigh, error) { return vs.h.NeighList(0, netlink.FAMILY_V4) }); err != nil {
		return nil, err
	}
	if vx := s.links[vxlanName(vs.vni)]; vx != nil && withFDB {
		if s.fdb, err = writes.Dump("fdb", func() ([]netlink.Neigh, error) { return vs.h.NeighList(vx.Attrs().Index, unix.AF_BRIDGE) }); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// openedVPC opens (or makes) the VPC's namespace and its miss listener.
func (d *Driver) openedVPC(v datapath.VPC) (*vpcNS, error) {
	vs := d.vpcs[v.VNI]
	if vs != nil && !sameFile(vs.path, vs.ns) {
		// Someone deleted (or replaced) the namespace behind our back.
		d.log.Warn("vpc namespace replaced, re-creating", "vni", v.VNI)
		d.dropDetached(vs)
		vs = nil
	}
	if vs == nil {
		var err error
		if vs, err = d.openVPC(v.VNI, true); err != nil {
			return nil, err
		}
	}
	if vs.listenDied.Load() {
		d.log.Warn("restarting miss listener", "vni", v.VNI)
		vs.stopListener()
		if err := d.startListener(vs); err != nil {
			return nil, fmt.Errorf("vpc %d: %w", v.VNI, err)
		}
	}
	return vs, nil
}

// ensureVPC makes sure the VPC namespace (opened by openedVPC) has a
// correct, up VXLAN device and an up loopback, and returns its scan.
func (d *Driver) ensureVPC(vs *vpcNS, hc hostCfg) (*vpcScan, error) {
	scan, err := vs.scan(false)
	if err != nil {
		return nil, fmt.Errorf("vpc %d: %w", vs.vni, err)
	}
	if lo := scan.links["lo"]; lo != nil && lo.Attrs().Flags&net.FlagUp == 0 {
		if err := d.ops.Write(writes.LinkSet, func() error { return vs.h.LinkSetUp(lo) }); err != nil {
			return nil, fmt.Errorf("vpc %d: set lo up: %w", vs.vni, err)
		}
	}
	if err := d.ensureVXLAN(vs, scan, hc); err != nil {
		return nil, fmt.Errorf("vpc %d: %w", vs.vni, err)
	}
	return scan, nil
}

// dropDetached forgets a VPC namespace whose pin was removed by someone
// else, deleting its devices first so that its VNI is free again.
func (d *Driver) dropDetached(vs *vpcNS) {
	if links, err := writes.Dump("links", vs.h.LinkList); err == nil {
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				_ = d.ops.Write(writes.LinkDel, func() error { return vs.h.LinkDel(l) })
			}
		}
	}
	d.smu.Lock()
	delete(d.vpcs, vs.vni)
	d.smu.Unlock()
	vs.close()
}

func (d *Driver) ensureVXLAN(vs *vpcNS, scan *vpcScan, hc hostCfg) error {
	name := vxlanName(vs.vni)
	mac := VTEPMAC(hc.underlay)
	cur, _ := scan.links[name].(*netlink.Vxlan)
	if l := scan.links[name]; l != nil && (cur == nil || !vxlanImmutableOK(cur, vs.vni, hc.underlay)) {
		d.log.Warn("vxlan device has wrong settings, re-creating", "vni", vs.vni)
		if err := d.ops.Write(writes.LinkDel, func() error { return vs.h.LinkDel(l) }); err != nil {
			return fmt.Errorf("delete vxlan: %w", err)
		}
		delete(scan.links, name)
		scan.neighs, scan.fdb = nlconv.DropLink(scan.neighs, l.Attrs().Index), nil
		cur = nil
	}
	if cur == nil {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: name, MTU: hc.mtu, HardwareAddr: mac, Namespace: netlink.NsFd(vs.ns)},
			VxlanId:   int(vs.vni),
			SrcAddr:   hc.underlay.AsSlice(),
			Port:      VXLANPort,
			Learning:  false,
			GBP:       true, // the sender's identity travels in the packet
		}
		// Created through the host namespace's socket, so its UDP socket
		// lives there (on the underlay), and placed in the VPC namespace.
		if err := d.ops.Write(writes.LinkAdd, func() error { return d.host.LinkAdd(vx) }); err != nil {
			return fmt.Errorf("add vxlan %s: %w", name, err)
		}
		l, err := vs.h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find new vxlan %s: %w", name, err)
		}
		if err := d.convergeSysctls(vs.ns, vxlanSysctls(vs.vni), true); err != nil {
			return err
		}
		if err := d.ops.Write(writes.LinkSet, func() error { return vs.h.LinkSetUp(l) }); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
		vs.vxIndex.Store(int32(l.Attrs().Index))
		scan.links[name] = l
		// A new device has no neighbours or FDB: learned remotes are gone.
		d.smu.Lock()
		vs.remotes, vs.fdb, vs.vxChecked = map[netip.Addr]*remote{}, map[netip.Addr]int{}, true
		d.smu.Unlock()
		return nil
	}
	vs.vxIndex.Store(int32(cur.Index))
	if !vs.vxChecked {
		if err := d.convergeSysctls(vs.ns, vxlanSysctls(vs.vni), false); err != nil {
			return err
		}
		vs.vxChecked = true
	}
	if cur.MTU != hc.mtu {
		if err := d.ops.Write(writes.LinkSet, func() error { return vs.h.LinkSetMTU(cur, hc.mtu) }); err != nil {
			return fmt.Errorf("set %s mtu: %w", name, err)
		}
	}
	if !bytes.Equal(cur.HardwareAddr, mac) {
		if err := d.ops.Write(writes.LinkSet, func() error { return vs.h.LinkSetHardwareAddr(cur, mac) }); err != nil {
			return fmt.Errorf("set %s mac: %w", name, err)
		}
	}
	if cur.Flags&net.FlagUp == 0 {
		if err := d.ops.Write(writes.LinkSet, func() error { return vs.h.LinkSetUp(cur) }); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return nil
}

func vxlanImmutableOK(vx *netlink.Vxlan, vni uint32, underlay netip.Addr) bool {
	groupOK := len(vx.Group) == 0 || vx.Group.IsUnspecified()
	return vx.VxlanId == int(vni) && nlconv.IPAddr(vx.SrcAddr) == underlay && vx.Port == VXLANPort &&
		!vx.Learning && !vx.FlowBased && groupOK && vx.GBP
}

// removeStaleEndpoints deletes the veths of endpoints that are no longer
// wanted in this VPC (the peer in the endpoint namespace goes with it).
func (d *Driver) removeStaleEndpoints(vs *vpcNS, scan *vpcScan, eps []*datapath.Endpoint) error {
	want := map[string]bool{}
	for _, e := range eps {
		want[VethName(e.ID)] = true
	}
	var errs []error
	for name, l := range scan.links {
		if !strings.HasPrefix(name, vethLinkPrefix) || want[name] {
			continue
		}
		if err := d.ops.Write(writes.LinkDel, func() error { return vs.h.LinkDel(l) }); err != nil {
			errs = append(errs, fmt.Errorf("vpc %d: delete endpoint veth %s (%s): %w", vs.vni, name, l.Attrs().Alias, err))
			continue
		}
		d.log.Info("endpoint removed", "vni", vs.vni, "veth", name, "alias", l.Attrs().Alias)
		delete(scan.links, name)
		scan.neighs = nlconv.DropLink(scan.neighs, l.Attrs().Index)
		scan.routes = nlconv.DropRoutes(scan.routes, l.Attrs().Index)
	}
	return errors.Join(errs...)
}

// convergeVPC programs the endpoints of one VPC, then its gateway addresses,
// routes, neighbours and learned remotes.
func (d *Driver) convergeVPC(ctx context.Context, vs *vpcNS, scan *vpcScan, v datapath.VPC, eps []*datapath.Endpoint, hc hostCfg) error {
	var errs []error
	vx := scan.links[vxlanName(vs.vni)]
	routes := make([]netlink.Route, 0, len(v.Subnets)+len(eps))
	neighs := make([]netlink.Neigh, 0, len(eps))
	for _, s := range v.Subnets {
		routes = append(routes, linkRoute(s.CIDR, vx.Attrs().Index))
	}
	for _, e := range eps {
		if err := ctx.Err(); err != nil {
			return err
		}
		link, err := d.ensureEndpoint(vs, scan, e, hc)
		if err != nil {
			d.smu.Lock()
			delete(d.eps, e.ID)
			d.smu.Unlock()
			errs = append(errs, fmt.Errorf("endpoint %q: %w", e.ID, err))
			continue
		}
		idx := link.Attrs().Index
		routes = append(routes, linkRoute(netip.PrefixFrom(e.IP, 32), idx))
		neighs = append(neighs, netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: e.IP.AsSlice(), HardwareAddr: e.MAC})
	}

	gws := make([]netip.Prefix, 0, len(v.Subnets))
	for _, s := range v.Subnets {
		gws = append(gws, netip.PrefixFrom(s.Gateway, 32))
	}
	errs = append(errs, nlconv.Addrs(vs.h, &d.ops, scan.links["lo"], scan.loAddrs, gws, 0, true))
	errs = append(errs, nlconv.Routes(vs.h, &d.ops, scan.routes, routes))
	errs = append(errs, nlconv.PermanentNeighs(vs.h, &d.ops, scan.neighs, neighs, func(n netlink.Neigh) bool {
		return n.LinkIndex != vx.Attrs().Index
	}))
	errs = append(errs, d.convergeRemotes(vs, vx.Attrs().Index))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vpc %d: %w", vs.vni, err)
	}
	return nil
}
