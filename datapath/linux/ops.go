package linux

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
)

// op is one kind of write to the kernel; every write goes through
// Driver.write so that Counts sees it.
type op uint8

const (
	opNetnsAdd op = iota
	opNetnsDel
	opLinkAdd
	opLinkSet
	opLinkDel
	opAddrAdd
	opAddrSet
	opAddrDel
	opRouteAdd
	opRouteSet
	opRouteDel
	opNeighAdd
	opNeighSet
	opNeighDel
	opFDBAdd
	opFDBDel
	opSysctlSet
	opQdiscAdd
	opQdiscDel
	opClassAdd
	opClassSet
	opClassDel
	opFilterSet
	opQoSTable
	numOps
)

var opNames = [numOps]string{
	"netns/add", "netns/del",
	"link/add", "link/set", "link/del",
	"addr/add", "addr/set", "addr/del",
	"route/add", "route/set", "route/del",
	"neigh/add", "neigh/set", "neigh/del",
	"fdb/add", "fdb/del",
	"sysctl/set",
	"qdisc/add", "qdisc/del",
	"class/add", "class/set", "class/del",
	"filter/set",
	"qos-table/set",
}

type opCounts [numOps]atomic.Uint64

func (c *opCounts) counts() datapath.Counts {
	out := datapath.Counts{}
	for i := range c {
		if n := c[i].Load(); n != 0 {
			out[opNames[i]] = n
		}
	}
	return out
}

// write counts one write and runs it. Races that leave the kernel as wanted
// (EEXIST on add, ENOENT/ESRCH/ENODEV on delete) count as success.
func (c *opCounts) write(o op, fn func() error) error {
	c[o].Add(1)
	err := fn()
	switch o {
	case opNetnsDel, opLinkDel, opAddrDel, opRouteDel, opNeighDel, opFDBDel, opQdiscDel, opClassDel:
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL) {
			return nil
		}
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
	}
	return err
}

// dump retries a netlink dump that the kernel interrupted (the table
// changed while it was being read).
func dump[T any](what string, fn func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		v, err = fn()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return v, fmt.Errorf("list %s: %w", what, err)
	}
	return v, nil
}
