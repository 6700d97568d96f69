package linux

import (
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath/internal/nlconv"
)

func linkRoute(dst netip.Prefix, index int) netlink.Route {
	return netlink.Route{
		LinkIndex: index,
		Dst:       nlconv.PrefixNet(dst),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
	}
}
