package ebpf

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
	"github.com/weftnet/weft/internal/netnsfile"
)

// ensureEndpoint converges one endpoint's veth (host side link, nil if
// absent), the inside of its namespace and the from_ep program on the host
// side.
func (d *Driver) ensureEndpoint(e *datapath.Endpoint, link netlink.Link, mtu int) (*epState, error) {
	name := VethName(e.ID)
	nsPath, own := e.Netns, e.Netns == ""
	if own {
		nsPath = filepath.Join(d.cfg.NetnsDir, d.names.endpoint(e.ID))
	}
	if link != nil && link.Type() != "veth" {
		if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(link) }); err != nil {
			return nil, fmt.Errorf("delete non-veth %s: %w", name, err)
		}
		link = nil
	}
	for attempt := 0; ; attempt++ {
		fresh, wentUp := false, false
		var err error
		if link == nil {
			if link, err = d.createVeth(e, name, nsPath, own, mtu); err != nil {
				return nil, err
			}
			fresh = true
		} else if wentUp, err = d.fixHostVeth(link, e, mtu); err != nil {
			return nil, err
		}
		err = d.ensureInside(link, e, nsPath, own, mtu, fresh || wentUp)
		if errors.Is(err, errPeerElsewhere) && attempt == 0 {
			// The veth's peer is not in the endpoint's namespace (the
			// namespace changed or was re-made): start over.
			d.log.Info("endpoint veth peer elsewhere, re-creating", "endpoint", e.ID, "netns", nsPath)
			if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(link) }); err != nil {
				return nil, fmt.Errorf("delete veth %s: %w", name, err)
			}
			link = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	idx := link.Attrs().Index
	if err := d.ensureLink(tcxHook{name: name, ifindex: idx, attach: ebpf.AttachTCXIngress, prog: d.objs.FromEp}); err != nil {
		return nil, err
	}
	ep := *e
	ep.MAC = bytes.Clone(e.MAC)
	return &epState{ep: ep, ifindex: idx, status: datapath.EndpointStatus{Netns: nsPath, IfName: e.IfName, HostIfName: name}}, nil
}

var errPeerElsewhere = errors.New("veth peer is not in the endpoint namespace")

func (d *Driver) createVeth(e *datapath.Endpoint, name, nsPath string, own bool, mtu int) (netlink.Link, error) {
	if own && !isNetns(nsPath) {
		nsName := filepath.Base(nsPath)
		if err := d.ops.Write(writes.NetnsAdd, func() error {
			// A leftover file that is not a pinned namespace is replaced.
			if err := netnsfile.Delete(d.cfg.NetnsDir, nsName); err != nil {
				return err
			}
			_, err := netnsfile.Create(d.cfg.NetnsDir, nsName)
			return err
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
		LinkAttrs:        netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: GatewayMAC(), Flags: net.FlagUp, Alias: aliasOf(e.ID)},
		PeerName:         e.IfName,
		PeerHardwareAddr: e.MAC,
		PeerMTU:          uint32(mtu),
		PeerNamespace:    netlink.NsFd(fd),
	}
	if err := d.ops.Write(writes.LinkAdd, func() error { return d.nl.LinkAdd(veth) }); err != nil {
		return nil, fmt.Errorf("add veth %s <-> %s in %s: %w", name, e.IfName, nsPath, err)
	}
	link, err := d.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find new veth %s: %w", name, err)
	}
	if link.Attrs().Alias != aliasOf(e.ID) {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetAlias(link, aliasOf(e.ID)) }); err != nil {
			return nil, fmt.Errorf("set alias of %s: %w", name, err)
		}
	}
	d.log.Info("endpoint veth created", "endpoint", e.ID, "vni", e.VNI, "veth", name, "netns", nsPath)
	return link, nil
}

// fixHostVeth converges the host side of an existing veth. It reports
// whether it brought the link up.
func (d *Driver) fixHostVeth(link netlink.Link, e *datapath.Endpoint, mtu int) (wentUp bool, err error) {
	a := link.Attrs()
	if a.MTU != mtu {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetMTU(link, mtu) }); err != nil {
			return false, fmt.Errorf("set %s mtu: %w", a.Name, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, GatewayMAC()) {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetHardwareAddr(link, GatewayMAC()) }); err != nil {
			return false, fmt.Errorf("set %s mac: %w", a.Name, err)
		}
	}
	if a.Alias != aliasOf(e.ID) {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetAlias(link, aliasOf(e.ID)) }); err != nil {
			return false, fmt.Errorf("set %s alias: %w", a.Name, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := d.ops.Write(writes.LinkSet, func() error { return d.nl.LinkSetUp(link) }); err != nil {
			return false, fmt.Errorf("set %s up: %w", a.Name, err)
		}
		return true, nil
	}
	return false, nil
}

// ensureInside converges the endpoint's side: its interface (the veth's
// peer), the address IP/prefix without a prefix route and a default route
// through the gateway (whose ARP the BPF program answers); loopback up in
// a namespace the driver made.
//
// A veth end that goes up before its peer gets its transmit queue
// activated later by the kernel's linkwatch work and drops what it sends
// until then; when either end went up, an RTM_GETLINK for each end makes
// the kernel run that work now (as the linux driver does).
func (d *Driver) ensureInside(host netlink.Link, e *datapath.Endpoint, nsPath string, own bool, mtu int, hostWentUp bool) error {
	fd, err := netns.GetFromPath(nsPath)
	if err != nil {
		if own {
			return errPeerElsewhere // the namespace is gone; the veth points nowhere useful
		}
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer fd.Close()
	id, err := d.nl.GetNetNsIdByFd(int(fd))
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
	if a.MTU != mtu {
		if err := d.ops.Write(writes.LinkSet, func() error { return h.LinkSetMTU(peer, mtu) }); err != nil {
			return fmt.Errorf("set %s mtu: %w", e.IfName, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, e.MAC) {
		if err := d.ops.Write(writes.LinkSet, func() error { return h.LinkSetHardwareAddr(peer, e.MAC) }); err != nil {
			return fmt.Errorf("set %s mac: %w", e.IfName, err)
		}
	}
	sync := hostWentUp
	if a.Flags&net.FlagUp == 0 {
		if err := d.ops.Write(writes.LinkSet, func() error { return h.LinkSetUp(peer) }); err != nil {
			return fmt.Errorf("set %s up: %w", e.IfName, err)
		}
		sync = true
	}
	if sync {
		if _, err := d.nl.LinkByIndex(host.Attrs().Index); err != nil {
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
			if err := d.ops.Write(writes.LinkSet, func() error { return h.LinkSetUp(lo) }); err != nil {
				return fmt.Errorf("set lo up: %w", err)
			}
		}
	}
	if err := d.convergeAddr(h, peer, netip.PrefixFrom(e.IP, e.Prefix.Bits())); err != nil {
		return err
	}
	return d.convergeDefaultRoute(h, peer, e.Gateway)
}

// convergeAddr makes want (without a prefix route) the peer's only IPv4
// address.
func (d *Driver) convergeAddr(h *netlink.Handle, peer netlink.Link, want netip.Prefix) error {
	addrs, err := writes.Dump("addresses", func() ([]netlink.Addr, error) { return h.AddrList(peer, netlink.FAMILY_V4) })
	if err != nil {
		return err
	}
	have := false
	for _, a := range addrs {
		if prefixOf(a.IPNet) == want && a.Flags&unix.IFA_F_NOPREFIXROUTE != 0 {
			have = true
			continue
		}
		if err := d.ops.Write(writes.AddrDel, func() error { return h.AddrDel(peer, &a) }); err != nil {
			return fmt.Errorf("delete address %s: %w", prefixOf(a.IPNet), err)
		}
	}
	if have {
		return nil
	}
	addr := &netlink.Addr{IPNet: ipNet(want), Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := d.ops.Write(writes.AddrAdd, func() error { return h.AddrReplace(peer, addr) }); err != nil {
		return fmt.Errorf("add address %s: %w", want, err)
	}
	return nil
}

// convergeDefaultRoute makes "default via gw onlink" the only route of
// ours through peer.
func (d *Driver) convergeDefaultRoute(h *netlink.Handle, peer netlink.Link, gw netip.Addr) error {
	idx := peer.Attrs().Index
	routes, err := writes.Dump("routes", func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, LinkIndex: idx},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return err
	}
	have := false
	for _, r := range routes {
		gwOf, _ := netip.AddrFromSlice(r.Gw)
		if !have && prefixOf(r.Dst).Bits() == 0 && gwOf.Unmap() == gw && r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			have = true
			continue
		}
		if err := d.ops.Write(writes.RouteDel, func() error { return h.RouteDel(&r) }); err != nil {
			return fmt.Errorf("delete route %s: %w", prefixOf(r.Dst), err)
		}
	}
	if have {
		return nil
	}
	def := &netlink.Route{
		LinkIndex: idx,
		Dst:       ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)),
		Gw:        gw.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
		Scope:     netlink.SCOPE_UNIVERSE,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
	}
	if err := d.ops.Write(writes.RouteAdd, func() error { return h.RouteReplace(def) }); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// prefixOf converts n; a nil n (a default route) is 0.0.0.0/0.
func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// isNetns reports whether path is a pinned network namespace.
func isNetns(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.NSFS_MAGIC
}
