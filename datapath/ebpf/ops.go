package ebpf

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
)

// op is one kind of write to the data plane; every write goes through
// opCounts.write so that Counts sees it.
type op uint8

const (
	opNetnsAdd op = iota
	opNetnsDel
	opLinkAdd
	opLinkSet
	opLinkDel
	opAddrAdd
	opAddrDel
	opRouteAdd
	opRouteDel
	opNeighRelease
	opSysctlSet
	opMapCreate
	opMapPut
	opMapDel
	opProgLoad
	opProgPin
	opProgUnpin
	opBPFLinkAdd
	opBPFLinkSet
	opBPFLinkDel
	opBPFFSMount
	opPinDel
	numOps
)

var opNames = [numOps]string{
	"netns/add", "netns/del",
	"link/add", "link/set", "link/del",
	"addr/add", "addr/del",
	"route/add", "route/del",
	"neigh/release",
	"sysctl/set",
	"map/create", "map/put", "map/del",
	"prog/load", "prog/pin", "prog/unpin",
	"bpflink/add", "bpflink/set", "bpflink/del",
	"bpffs/mount", "pin/del",
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

// write counts one write and runs it. Races that leave the data plane as
// wanted (EEXIST on add, a missing object on delete) count as success.
func (c *opCounts) write(o op, fn func() error) error {
	c[o].Add(1)
	err := fn()
	switch o {
	case opNetnsDel, opLinkDel, opAddrDel, opRouteDel, opMapDel, opProgUnpin, opBPFLinkDel, opPinDel:
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) ||
			errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, ebpf.ErrKeyNotExist) {
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
