package linux

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
)

// ensureEndpoint converges the veth of one endpoint and, when needed, the
// inside of its namespace. It returns the VPC-side link.
func (d *Driver) ensureEndpoint(vs *vpcNS, scan *vpcScan, e *datapath.Endpoint, hc hostCfg) (netlink.Link, error) {
	name := VethName(e.ID)
	nsPath := e.Netns
	own := nsPath == ""
	if own {
		nsPath = d.nsPath(d.names.endpoint(e.ID))
	}
	link := scan.links[name]
	if link != nil && link.Type() != "veth" {
		if err := d.ops.write(opLinkDel, func() error { return vs.h.LinkDel(link) }); err != nil {
			return nil, fmt.Errorf("delete non-veth %s: %w", name, err)
		}
		link = nil
	}
	fresh, wentUp := false, false
	for attempt := 0; ; attempt++ {
		if link == nil {
			var err error
			if link, err = d.createVeth(vs, e, name, nsPath, own, hc); err != nil {
				return nil, err
			}
			scan.links[name] = link
			fresh = true
		} else {
			var err error
			if wentUp, err = d.fixHostVeth(vs, link, e, hc); err != nil {
				return nil, err
			}
		}
		st := d.eps[e.ID]
		deep := fresh || wentUp || st == nil || !sameEndpoint(&st.ep, e) || st.hostIndex != link.Attrs().Index || st.mtu != hc.mtu ||
			d.resyncDue(e.ID, st.verified)
		if !deep {
			return link, nil
		}
		err := d.ensureInside(vs, link, e, nsPath, own, hc, fresh, fresh || wentUp)
		if errors.Is(err, errPeerElsewhere) && attempt == 0 {
			// The veth's peer is not in the endpoint's namespace (the
			// namespace changed or was re-made): start over.
			d.log.Info("endpoint veth peer elsewhere, re-creating", "endpoint", e.ID, "netns", nsPath)
			if err := d.ops.write(opLinkDel, func() error { return vs.h.LinkDel(link) }); err != nil {
				return nil, fmt.Errorf("delete veth %s: %w", name, err)
			}
			delete(scan.links, name)
			scan.neighs = dropLink(scan.neighs, link.Attrs().Index)
			scan.routes = dropRoutes(scan.routes, link.Attrs().Index)
			link = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		d.smu.Lock()
		defer d.smu.Unlock()
		d.eps[e.ID] = &epState{
			ep:        cloneEndpoint(e),
			status:    datapath.EndpointStatus{Netns: nsPath, IfName: e.IfName, HostIfName: name},
			hostIndex: link.Attrs().Index,
			mtu:       hc.mtu,
			verified:  time.Now(),
		}
		return link, nil
	}
}

var errPeerElsewhere = errors.New("veth peer is not in the endpoint namespace")

// resyncDue says the inside of endpoint id, last read at verified, is to be
// read again (Config.EndpointResync): after the interval shortened by up
// to half of it, by a hash of id.
func (d *Driver) resyncDue(id string, verified time.Time) bool {
	r := d.cfg.EndpointResync
	if r < 0 {
		return true
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	r -= time.Duration(float64(r/2) * float64(h.Sum32()) / (1 << 32))
	return time.Since(verified) >= r
}

func (d *Driver) createVeth(vs *vpcNS, e *datapath.Endpoint, name, nsPath string, own bool, hc hostCfg) (netlink.Link, error) {
	if own && !isNetns(nsPath) {
		nsName := d.names.endpoint(e.ID)
		if err := d.ops.write(opNetnsAdd, func() error {
			// A leftover file that is not a pinned namespace is replaced.
			if err := deleteNamedNS(d.cfg.NetnsDir, nsName); err != nil {
				return err
			}
			return createNamedNS(d.cfg.NetnsDir, nsName)
		}); err != nil {
			return nil, err
		}
	}
	fd, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer fd.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: name, MTU: hc.mtu, HardwareAddr: GatewayMAC(), Flags: net.FlagUp, Alias: aliasOf(e.ID)},
		PeerName:         e.IfName,
		PeerHardwareAddr: e.MAC,
		PeerMTU:          uint32(hc.mtu),
		PeerNamespace:    netlink.NsFd(fd),
	}
	if err := d.ops.write(opLinkAdd, func() error { return vs.h.LinkAdd(veth) }); err != nil {
		return nil, fmt.Errorf("add veth %s <-> %s in %s: %w", name, e.IfName, nsPath, err)
	}
	link, err := vs.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find new veth %s: %w", name, err)
	}
	if link.Attrs().Alias != aliasOf(e.ID) {
		if err := d.ops.write(opLinkSet, func() error { return vs.h.LinkSetAlias(link, aliasOf(e.ID)) }); err != nil {
			return nil, fmt.Errorf("set alias of %s: %w", name, err)
		}
		link.Attrs().Alias = aliasOf(e.ID)
	}
	d.log.Info("endpoint veth created", "endpoint", e.ID, "vni", e.VNI, "veth", name, "netns", nsPath)
	return link, nil
}

// fixHostVeth converges the VPC side of an existing veth. It reports
// whether it brought the link up.
func (d *Driver) fixHostVeth(vs *vpcNS, link netlink.Link, e *datapath.Endpoint, hc hostCfg) (wentUp bool, err error) {
	a := link.Attrs()
	if a.MTU != hc.mtu {
		if err := d.ops.write(opLinkSet, func() error { return vs.h.LinkSetMTU(link, hc.mtu) }); err != nil {
			return false, fmt.Errorf("set %s mtu: %w", a.Name, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, GatewayMAC()) {
		if err := d.ops.write(opLinkSet, func() error { return vs.h.LinkSetHardwareAddr(link, GatewayMAC()) }); err != nil {
			return false, fmt.Errorf("set %s mac: %w", a.Name, err)
		}
	}
	if a.Alias != aliasOf(e.ID) {
		if err := d.ops.write(opLinkSet, func() error { return vs.h.LinkSetAlias(link, aliasOf(e.ID)) }); err != nil {
			return false, fmt.Errorf("set %s alias: %w", a.Name, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := d.ops.write(opLinkSet, func() error { return vs.h.LinkSetUp(link) }); err != nil {
			return false, fmt.Errorf("set %s up: %w", a.Name, err)
		}
		return true, nil
	}
	return false, nil
}

// ensureInside converges the endpoint's side: its interface (the veth's
// peer), address IP/prefix without a prefix route, a permanent neighbour for
// the gateway and a default route through it; loopback up in a namespace the
// driver made.
//
// A veth end that is brought up before its peer gets its transmit queue
// activated later, asynchronously, by the kernel's linkwatch work; until
// then it drops what it sends (the first packets to a new endpoint). When
// either end went up, ensureInside therefore finishes with an RTM_GETLINK
// request for each end, which makes the kernel run pending linkwatch work
// for that device (linkwatch_sync_dev in rtnl_getlink) before answering.
//
// A fresh peer (its veth was just created) has no addresses, neighbours
// or routes: they are added without reading first.
func (d *Driver) ensureInside(vs *vpcNS, host netlink.Link, e *datapath.Endpoint, nsPath string, own bool, hc hostCfg, fresh, hostWentUp bool) error {
	fd, err := netns.GetFromPath(nsPath)
	if err != nil {
		if own {
			return errPeerElsewhere // the namespace is gone; the veth points nowhere useful
		}
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer fd.Close()
	// The peer must be in that namespace: same netnsid seen from the VPC
	// namespace, and its peer index must be our veth.
	id, err := vs.h.GetNetNsIdByFd(int(fd))
	if err != nil || id < 0 || id != host.Attrs().NetNsID {
		return errPeerElsewhere
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	peer, err := h.LinkByName(e.IfName)
	if err != nil || peer.Type() != "veth" || peer.Attrs().ParentIndex != host.Attrs().Index {
		return errPeerElsewhere
	}
	a := peer.Attrs()
	if a.MTU != hc.mtu {
		if err := d.ops.write(opLinkSet, func() error { return h.LinkSetMTU(peer, hc.mtu) }); err != nil {
			return fmt.Errorf("set %s mtu: %w", e.IfName, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, e.MAC) {
		if err := d.ops.write(opLinkSet, func() error { return h.LinkSetHardwareAddr(peer, e.MAC) }); err != nil {
			return fmt.Errorf("set %s mac: %w", e.IfName, err)
		}
	}
	sync := hostWentUp
	if a.Flags&net.FlagUp == 0 {
		if err := d.ops.write(opLinkSet, func() error { return h.LinkSetUp(peer) }); err != nil {
			return fmt.Errorf("set %s up: %w", e.IfName, err)
		}
		sync = true
	}
	if sync {
		if _, err := vs.h.LinkByIndex(host.Attrs().Index); err != nil {
			return fmt.Errorf("sync %s: %w", host.Attrs().Name, err)
		}
		if _, err := h.LinkByIndex(a.Index); err != nil {
			return fmt.Errorf("sync %s: %w", e.IfName, err)
		}
	}
	if own {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			if err := d.ops.write(opLinkSet, func() error { return h.LinkSetUp(lo) }); err != nil {
				return fmt.Errorf("set lo up: %w", err)
			}
		}
	}
	var addrs []netlink.Addr
	if !fresh {
		if addrs, err = dump("addresses", func() ([]netlink.Addr, error) { return h.AddrList(peer, netlink.FAMILY_V4) }); err != nil {
			return err
		}
	}
	if err := d.convergeAddrs(h, peer, addrs, []netip.Prefix{netip.PrefixFrom(e.IP, e.Prefix.Bits())}, unix.IFA_F_NOPREFIXROUTE, false); err != nil {
		return err
	}
	var neighs []netlink.Neigh
	if !fresh {
		if neighs, err = dump("neighbours", func() ([]netlink.Neigh, error) { return h.NeighList(peer.Attrs().Index, netlink.FAMILY_V4) }); err != nil {
			return err
		}
	}
	gwNeigh := netlink.Neigh{LinkIndex: peer.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: e.Gateway.AsSlice(), HardwareAddr: GatewayMAC()}
	if err := d.convergePermanentNeighs(h, neighs, []netlink.Neigh{gwNeigh}, func(netlink.Neigh) bool { return true }); err != nil {
		return err
	}
	var routes []netlink.Route
	if !fresh {
		routes, err = dump("routes", func() ([]netlink.Route, error) {
			return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, LinkIndex: peer.Attrs().Index},
				netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
		})
		if err != nil {
			return err
		}
	}
	def := netlink.Route{
		LinkIndex: peer.Attrs().Index,
		Dst:       prefixNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)),
		Gw:        e.Gateway.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
		Scope:     netlink.SCOPE_UNIVERSE,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
	}
	return d.convergeRoutes(h, routes, []netlink.Route{def})
}

func sameEndpoint(a, b *datapath.Endpoint) bool {
	return a.ID == b.ID && a.VNI == b.VNI && a.Subnet == b.Subnet && a.IP == b.IP &&
		bytes.Equal(a.MAC, b.MAC) && a.Gateway == b.Gateway && a.Prefix == b.Prefix &&
		a.Netns == b.Netns && a.IfName == b.IfName && a.Identity == b.Identity
}

func cloneEndpoint(e *datapath.Endpoint) datapath.Endpoint {
	c := *e
	c.MAC = bytes.Clone(e.MAC)
	return c
}
