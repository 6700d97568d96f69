// Package writes counts a driver's writes to the kernel by kind and verb
// (datapath.Counter): every write goes through Counter.Write, which also
// takes races that leave the kernel as wanted for success.
package writes

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
)

// Op is one kind of write.
type Op uint8

// The writes the drivers make.
const (
	NetnsAdd Op = iota
	NetnsDel
	LinkAdd
	LinkSet
	LinkDel
	AddrAdd
	AddrSet
	AddrDel
	RouteAdd
	RouteSet
	RouteDel
	NeighAdd
	NeighSet
	NeighDel
	NeighRelease
	FDBAdd
	FDBDel
	SysctlSet
	QdiscAdd
	QdiscDel
	ClassAdd
	ClassSet
	ClassDel
	FilterSet
	FilterDel
	QoSTable
	NftCommit
	ConntrackDel
	MapCreate
	MapPut
	MapDel
	ProgLoad
	ProgPin
	ProgUnpin
	BPFLinkAdd
	BPFLinkSet
	BPFLinkDel
	BPFFSMount
	PinDel
	numOps
)

var names = [numOps]string{
	"netns/add", "netns/del",
	"link/add", "link/set", "link/del",
	"addr/add", "addr/set", "addr/del",
	"route/add", "route/set", "route/del",
	"neigh/add", "neigh/set", "neigh/del", "neigh/release",
	"fdb/add", "fdb/del",
	"sysctl/set",
	"qdisc/add", "qdisc/del",
	"class/add", "class/set", "class/del",
	"filter/set", "filter/del",
	"qos-table/set",
	"nftables/commit", "conntrack/del",
	"map/create", "map/put", "map/del",
	"prog/load", "prog/pin", "prog/unpin",
	"bpflink/add", "bpflink/set", "bpflink/del",
	"bpffs/mount", "pin/del",
}

// Counter counts writes; the zero value is ready. It is safe for
// concurrent use.
type Counter [numOps]atomic.Uint64

// Counts returns the writes made so far, without zero entries.
func (c *Counter) Counts() datapath.Counts {
	out := datapath.Counts{}
	for i := range c {
		if n := c[i].Load(); n != 0 {
			out[names[i]] = n
		}
	}
	return out
}

// Add counts n writes made without Write (a batch).
func (c *Counter) Add(o Op, n uint64) { c[o].Add(n) }

// Write counts one write and runs it. Races that leave the kernel as
// wanted (a delete that finds nothing to delete) count as success.
func (c *Counter) Write(o Op, fn func() error) error {
	c[o].Add(1)
	err := fn()
	switch o {
	case NetnsDel, LinkDel, AddrDel, RouteDel, NeighDel, FDBDel, QdiscDel, ClassDel, MapDel, ProgUnpin, BPFLinkDel, PinDel:
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

// Dump retries a netlink dump that the kernel interrupted (the table
// changed while it was being read).
func Dump[T any](what string, fn func() (T, error)) (T, error) {
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
