package linux

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/weftnet/weft/datapath/internal/writes"
	"golang.org/x/sys/unix"
)

func dropLink(ns []netlink.Neigh, index int) []netlink.Neigh {
	out := ns[:0:0]
	for _, n := range ns {
		if n.LinkIndex != index {
			out = append(out, n)
		}
	}
	return out
}

func dropRoutes(rs []netlink.Route, index int) []netlink.Route {
	out := rs[:0:0]
	for _, r := range rs {
		if r.LinkIndex != index {
			out = append(out, r)
		}
	}
	return out
}

func linkRoute(dst netip.Prefix, index int) netlink.Route {
	return netlink.Route{
		LinkIndex: index,
		Dst:       prefixNet(dst),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func netPrefix(n *net.IPNet) netip.Prefix {
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

func ipAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// sameRoute compares the fields the driver sets.
func sameRoute(a, b netlink.Route) bool {
	return netPrefix(a.Dst) == netPrefix(b.Dst) && a.LinkIndex == b.LinkIndex && a.Scope == b.Scope &&
		ipAddr(a.Gw) == ipAddr(b.Gw) && a.Priority == b.Priority && len(a.MultiPath) == 0 && len(b.MultiPath) == 0 &&
		a.Flags&int(netlink.FLAG_ONLINK) == b.Flags&int(netlink.FLAG_ONLINK) && a.Type == b.Type && a.Table == b.Table
}

// convergeRoutes makes the driver's routes (have: protocol RouteProtocol)
// exactly want: wrong ones are deleted first, then missing ones added.
func (d *Driver) convergeRoutes(h *netlink.Handle, have, want []netlink.Route) error {
	matched := make([]bool, len(want))
	var errs []error
	for _, r := range have {
		i := -1
		for j, w := range want {
			if !matched[j] && sameRoute(r, w) {
				i = j
				break
			}
		}
		if i >= 0 {
			matched[i] = true
			continue
		}
		if err := d.ops.Write(writes.RouteDel, func() error { return h.RouteDel(&r) }); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", netPrefix(r.Dst), err))
		}
	}
	for j, w := range want {
		if matched[j] {
			continue
		}
		if err := d.ops.Write(writes.RouteAdd, func() error { return h.RouteReplace(&w) }); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", netPrefix(w.Dst), err))
		}
	}
	return errors.Join(errs...)
}

// convergeAddrs makes the IPv4 addresses of link (other than loopback's
// 127/8) exactly want, with flags.
func (d *Driver) convergeAddrs(h *netlink.Handle, link netlink.Link, have []netlink.Addr, want []netip.Prefix, flags int, isLo bool) error {
	if link == nil {
		return errors.New("no link for addresses")
	}
	matched := make([]bool, len(want))
	var errs []error
	for _, a := range have {
		p := netPrefix(a.IPNet)
		if isLo && p.Addr().IsLoopback() {
			continue
		}
		i := -1
		for j, w := range want {
			if w == p {
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
		if err := d.ops.Write(writes.AddrDel, func() error { return h.AddrDel(link, &a) }); err != nil {
			errs = append(errs, fmt.Errorf("delete address %s: %w", p, err))
		}
	}
	for j, w := range want {
		if matched[j] {
			continue
		}
		o := writes.AddrAdd
		for _, a := range have {
			if netPrefix(a.IPNet) == w {
				o = writes.AddrSet
			}
		}
		addr := &netlink.Addr{IPNet: prefixNet(w), Flags: flags}
		if err := d.ops.Write(o, func() error { return h.AddrReplace(link, addr) }); err != nil {
			errs = append(errs, fmt.Errorf("add address %s: %w", w, err))
		}
	}
	return errors.Join(errs...)
}

// convergePermanentNeighs makes the permanent IPv4 neighbours (among those
// mine selects) exactly want. Entries the kernel made (not permanent) are
// left alone.
func (d *Driver) convergePermanentNeighs(h *netlink.Handle, have, want []netlink.Neigh, mine func(netlink.Neigh) bool) error {
	type key struct {
		index int
		ip    netip.Addr
	}
	cur := map[key]netlink.Neigh{}
	for _, n := range have {
		if mine(n) && n.State&netlink.NUD_PERMANENT != 0 {
			cur[key{n.LinkIndex, ipAddr(n.IP)}] = n
		}
	}
	var errs []error
	for _, w := range want {
		k := key{w.LinkIndex, ipAddr(w.IP)}
		c, ok := cur[k]
		delete(cur, k)
		if ok && bytes.Equal(c.HardwareAddr, w.HardwareAddr) {
			continue
		}
		o := writes.NeighAdd
		if ok {
			o = writes.NeighSet
		}
		if err := d.ops.Write(o, func() error { return h.NeighSet(&w) }); err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s: %w", k.ip, err))
		}
	}
	for k, c := range cur {
		if err := d.ops.Write(writes.NeighDel, func() error { return h.NeighDel(&c) }); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", k.ip, err))
		}
	}
	return errors.Join(errs...)
}
