// Package nlconv converges kernel network objects over netlink the way
// both kernel drivers do (datapath/linux, datapath/ebpf): a driver's routes,
// addresses and permanent neighbours made exactly what it wants, and the
// inside of an endpoint's namespace (Inside), each write counted.
package nlconv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/owned"
	"github.com/weftnet/weft/datapath/internal/writes"
	"github.com/weftnet/weft/internal/netnsfile"
)

// RouteProtocol marks the drivers' routes (rtm_protocol; unassigned in
// /etc/iproute2/rt_protos).
const RouteProtocol = netlink.RouteProtocol(87)

// DropLink returns ns without the entries of link index.
func DropLink(ns []netlink.Neigh, index int) []netlink.Neigh {
	out := ns[:0:0]
	for _, n := range ns {
		if n.LinkIndex != index {
			out = append(out, n)
		}
	}
	return out
}

// DropRoutes returns rs without the routes through link index.
func DropRoutes(rs []netlink.Route, index int) []netlink.Route {
	out := rs[:0:0]
	for _, r := range rs {
		if r.LinkIndex != index {
			out = append(out, r)
		}
	}
	return out
}

// PrefixNet converts p.
func PrefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// NetPrefix converts n (nil: the invalid prefix).
func NetPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	a = a.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// IPAddr converts ip (unmapped).
func IPAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// SameRoute compares the fields the drivers set.
func SameRoute(a, b netlink.Route) bool {
	return NetPrefix(a.Dst) == NetPrefix(b.Dst) && a.LinkIndex == b.LinkIndex && a.Scope == b.Scope &&
		IPAddr(a.Gw) == IPAddr(b.Gw) && a.Priority == b.Priority && len(a.MultiPath) == 0 && len(b.MultiPath) == 0 &&
		a.Flags&int(netlink.FLAG_ONLINK) == b.Flags&int(netlink.FLAG_ONLINK) && a.Type == b.Type && a.Table == b.Table
}

// Routes makes a driver's routes (have: protocol RouteProtocol) exactly
// want: wrong ones are deleted first, then missing ones added.
func Routes(h *netlink.Handle, w *writes.Counter, have, want []netlink.Route) error {
	matched := make([]bool, len(want))
	var errs []error
	for _, r := range have {
		i := -1
		for j, wr := range want {
			if !matched[j] && SameRoute(r, wr) {
				i = j
				break
			}
		}
		if i >= 0 {
			matched[i] = true
			continue
		}
		if err := w.Write(writes.RouteDel, func() error { return h.RouteDel(&r) }); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", NetPrefix(r.Dst), err))
		}
	}
	for j, wr := range want {
		if matched[j] {
			continue
		}
		if err := w.Write(writes.RouteAdd, func() error { return h.RouteReplace(&wr) }); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", NetPrefix(wr.Dst), err))
		}
	}
	return errors.Join(errs...)
}

// Addrs makes the IPv4 addresses of link (other than loopback's 127/8)
// exactly want, with flags.
func Addrs(h *netlink.Handle, w *writes.Counter, link netlink.Link, have []netlink.Addr, want []netip.Prefix, flags int, isLo bool) error {
	if link == nil {
		return errors.New("no link for addresses")
	}
	matched := make([]bool, len(want))
	var errs []error
	for _, a := range have {
		p := NetPrefix(a.IPNet)
		if isLo && p.Addr().IsLoopback() {
			continue
		}
		i := -1
		for j, wp := range want {
			if wp == p {
				i = j
			}
		}
		if i >= 0 && a.Flags&flags == flags {
			matched[i] = true
			continue
		}
		if i >= 0 {
			// Right address, wrong flags: replace in place.
			continue
		}
		if err := w.Write(writes.AddrDel, func() error { return h.AddrDel(link, &a) }); err != nil {
			errs = append(errs, fmt.Errorf("delete address %s: %w", p, err))
		}
	}
	for j, wp := range want {
		if matched[j] {
			continue
		}
		o := writes.AddrAdd
		for _, a := range have {
			if NetPrefix(a.IPNet) == wp {
				o = writes.AddrSet
			}
		}
		addr := &netlink.Addr{IPNet: PrefixNet(wp), Flags: flags}
		if err := w.Write(o, func() error { return h.AddrReplace(link, addr) }); err != nil {
			errs = append(errs, fmt.Errorf("add address %s: %w", wp, err))
		}
	}
	return errors.Join(errs...)
}

// PermanentNeighs makes the permanent IPv4 neighbours (among those mine
// selects) exactly want. Entries the kernel made (not permanent) are left
// alone.
func PermanentNeighs(h *netlink.Handle, w *writes.Counter, have, want []netlink.Neigh, mine func(netlink.Neigh) bool) error {
	type key struct {
		index int
		ip    netip.Addr
	}
	cur := map[key]netlink.Neigh{}
	for _, n := range have {
		if mine(n) && n.State&netlink.NUD_PERMANENT != 0 {
			cur[key{n.LinkIndex, IPAddr(n.IP)}] = n
		}
	}
	var errs []error
	for _, wn := range want {
		k := key{wn.LinkIndex, IPAddr(wn.IP)}
		c, ok := cur[k]
		delete(cur, k)
		if ok && bytes.Equal(c.HardwareAddr, wn.HardwareAddr) {
			continue
		}
		o := writes.NeighAdd
		if ok {
			o = writes.NeighSet
		}
		if err := w.Write(o, func() error { return h.NeighSet(&wn) }); err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s: %w", k.ip, err))
		}
	}
	for k, c := range cur {
		if err := w.Write(writes.NeighDel, func() error { return h.NeighDel(&c) }); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", k.ip, err))
		}
	}
	return errors.Join(errs...)
}

// ErrPeerElsewhere says that an endpoint's veth has no peer in the
// endpoint's namespace (the namespace changed or was made again): the
// driver makes the veth again.
var ErrPeerElsewhere = errors.New("veth peer is not in the endpoint namespace")

// Inside is the endpoint's end of its veth, as a driver converges it.
type Inside struct {
	// Outer and OuterLink are a handle in the namespace of the veth's
	// other end (the driver's) and that end; OuterWentUp says it was just
	// brought up.
	Outer       *netlink.Handle
	OuterLink   netlink.Link
	OuterWentUp bool
	Endpoint    *datapath.Endpoint
	// Netns is the endpoint's namespace; Own says the driver made it
	// (then its loopback is the driver's to bring up).
	Netns string
	Own   bool
	// Fresh says the veth was just created: its peer has no addresses,
	// neighbours or routes, so they are added without reading first.
	Fresh bool
	MTU   int
	// GatewayMAC is what the endpoint's gateway resolves to.
	GatewayMAC net.HardwareAddr
}

// ConvergeInside converges the endpoint's side: its interface (the veth's
// peer, ErrPeerElsewhere if it is not there), address IP/prefix without a
// prefix route, a permanent neighbour for the gateway and a default route
// through it; loopback up in a namespace the driver made.
//
// A veth end that is brought up before its peer gets its transmit queue
// activated later, asynchronously, by the kernel's linkwatch work; until
// then it drops what it sends (the first packets to a new endpoint). When
// either end went up, ConvergeInside therefore finishes with an
// RTM_GETLINK request for each end, which makes the kernel run pending
// linkwatch work for that device (linkwatch_sync_dev in rtnl_getlink)
// before answering.
func ConvergeInside(w *writes.Counter, in Inside) error {
	e, host := in.Endpoint, in.OuterLink
	fd, err := netns.GetFromPath(in.Netns)
	if err != nil {
		if in.Own {
			return ErrPeerElsewhere // the namespace is gone; the veth points nowhere useful
		}
		return fmt.Errorf("open netns %s: %w", in.Netns, err)
	}
	defer fd.Close()
	// The peer must be in that namespace: same netnsid seen from the
	// outer namespace, and its peer index must be our veth.
	id, err := in.Outer.GetNetNsIdByFd(int(fd))
	if err != nil || id < 0 || id != host.Attrs().NetNsID {
		return ErrPeerElsewhere
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", in.Netns, err)
	}
	defer h.Close()
	peer, err := h.LinkByName(e.IfName)
	if err != nil || peer.Type() != "veth" || peer.Attrs().ParentIndex != host.Attrs().Index {
		return ErrPeerElsewhere
	}
	a := peer.Attrs()
	if a.MTU != in.MTU {
		if err := w.Write(writes.LinkSet, func() error { return h.LinkSetMTU(peer, in.MTU) }); err != nil {
			return fmt.Errorf("set %s mtu: %w", e.IfName, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, e.MAC) {
		if err := w.Write(writes.LinkSet, func() error { return h.LinkSetHardwareAddr(peer, e.MAC) }); err != nil {
			return fmt.Errorf("set %s mac: %w", e.IfName, err)
		}
	}
	sync := in.OuterWentUp
	if a.Flags&net.FlagUp == 0 {
		if err := w.Write(writes.LinkSet, func() error { return h.LinkSetUp(peer) }); err != nil {
			return fmt.Errorf("set %s up: %w", e.IfName, err)
		}
		sync = true
	}
	if sync {
		if _, err := in.Outer.LinkByIndex(host.Attrs().Index); err != nil {
			return fmt.Errorf("sync %s: %w", host.Attrs().Name, err)
		}
		if _, err := h.LinkByIndex(a.Index); err != nil {
			return fmt.Errorf("sync %s: %w", e.IfName, err)
		}
	}
	if in.Own {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			if err := w.Write(writes.LinkSet, func() error { return h.LinkSetUp(lo) }); err != nil {
				return fmt.Errorf("set lo up: %w", err)
			}
		}
	}
	var addrs []netlink.Addr
	var neighs []netlink.Neigh
	var routes []netlink.Route
	if !in.Fresh {
		if addrs, err = writes.Dump("addresses", func() ([]netlink.Addr, error) { return h.AddrList(peer, netlink.FAMILY_V4) }); err != nil {
			return err
		}
	}
	if err := Addrs(h, w, peer, addrs, []netip.Prefix{netip.PrefixFrom(e.IP, e.Prefix.Bits())}, unix.IFA_F_NOPREFIXROUTE, false); err != nil {
		return err
	}
	if !in.Fresh {
		if neighs, err = writes.Dump("neighbours", func() ([]netlink.Neigh, error) { return h.NeighList(peer.Attrs().Index, netlink.FAMILY_V4) }); err != nil {
			return err
		}
	}
	gwNeigh := netlink.Neigh{LinkIndex: peer.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: e.Gateway.AsSlice(), HardwareAddr: in.GatewayMAC}
	if err := PermanentNeighs(h, w, neighs, []netlink.Neigh{gwNeigh}, func(netlink.Neigh) bool { return true }); err != nil {
		return err
	}
	if !in.Fresh {
		routes, err = writes.Dump("routes", func() ([]netlink.Route, error) {
			return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, LinkIndex: peer.Attrs().Index},
				netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
		})
		if err != nil {
			return err
		}
	}
	def := netlink.Route{
		LinkIndex: peer.Attrs().Index,
		Dst:       PrefixNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)),
		Gw:        e.Gateway.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
		Scope:     netlink.SCOPE_UNIVERSE,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
	}
	return Routes(h, w, routes, []netlink.Route{def})
}

// IsNetns reports whether path is a pinned network namespace.
func IsNetns(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.NSFS_MAGIC
}

// Veth is the driver's end of an endpoint's veth: Name in the namespace of
// Outer, with the gateway's MAC, the endpoint's alias (owned.Alias) and
// MTU; its peer is the endpoint's interface.
type Veth struct {
	Outer      *netlink.Handle
	Name       string
	Endpoint   *datapath.Endpoint
	MTU        int
	GatewayMAC net.HardwareAddr
}

// Create makes the veth with its peer in the namespace at nsPath; own, the
// namespace is the driver's, made (as nsPath's base name in dir) unless it
// is one already.
func (v Veth) Create(w *writes.Counter, nsPath string, own bool, dir string) (netlink.Link, error) {
	e := v.Endpoint
	if own && !IsNetns(nsPath) {
		nsName := filepath.Base(nsPath)
		if err := w.Write(writes.NetnsAdd, func() error {
			// A leftover file that is not a pinned namespace is replaced.
			if err := netnsfile.Delete(dir, nsName); err != nil {
				return err
			}
			_, err := netnsfile.Create(dir, nsName)
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
		LinkAttrs:        netlink.LinkAttrs{Name: v.Name, MTU: v.MTU, HardwareAddr: v.GatewayMAC, Flags: net.FlagUp, Alias: owned.Alias(e.ID)},
		PeerName:         e.IfName,
		PeerHardwareAddr: e.MAC,
		PeerMTU:          uint32(v.MTU),
		PeerNamespace:    netlink.NsFd(fd),
	}
	if err := w.Write(writes.LinkAdd, func() error { return v.Outer.LinkAdd(veth) }); err != nil {
		return nil, fmt.Errorf("add veth %s <-> %s in %s: %w", v.Name, e.IfName, nsPath, err)
	}
	link, err := v.Outer.LinkByName(v.Name)
	if err != nil {
		return nil, fmt.Errorf("find new veth %s: %w", v.Name, err)
	}
	if link.Attrs().Alias != owned.Alias(e.ID) {
		if err := w.Write(writes.LinkSet, func() error { return v.Outer.LinkSetAlias(link, owned.Alias(e.ID)) }); err != nil {
			return nil, fmt.Errorf("set alias of %s: %w", v.Name, err)
		}
		link.Attrs().Alias = owned.Alias(e.ID)
	}
	return link, nil
}

// Fix converges the driver's end of an existing veth, link. It reports
// whether it brought the link up.
func (v Veth) Fix(w *writes.Counter, link netlink.Link) (wentUp bool, err error) {
	a, alias := link.Attrs(), owned.Alias(v.Endpoint.ID)
	if a.MTU != v.MTU {
		if err := w.Write(writes.LinkSet, func() error { return v.Outer.LinkSetMTU(link, v.MTU) }); err != nil {
			return false, fmt.Errorf("set %s mtu: %w", a.Name, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, v.GatewayMAC) {
		if err := w.Write(writes.LinkSet, func() error { return v.Outer.LinkSetHardwareAddr(link, v.GatewayMAC) }); err != nil {
			return false, fmt.Errorf("set %s mac: %w", a.Name, err)
		}
	}
	if a.Alias != alias {
		if err := w.Write(writes.LinkSet, func() error { return v.Outer.LinkSetAlias(link, alias) }); err != nil {
			return false, fmt.Errorf("set %s alias: %w", a.Name, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := w.Write(writes.LinkSet, func() error { return v.Outer.LinkSetUp(link) }); err != nil {
			return false, fmt.Errorf("set %s up: %w", a.Name, err)
		}
		return true, nil
	}
	return false, nil
}
