package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath/internal/writes"
)

// hook is one program on the ingress or egress of one device.
type hook struct {
	// name is the pin name of its tcx link (links/<name>).
	name    string
	ifindex int
	egress  bool
	prog    *ebpf.Program
	// endpoint says the device is an endpoint's veth (see HooksAuto).
	endpoint bool
}

// The legacy tc filter of a hook: alone at this priority and handle of
// its clsact direction, direct-action, named filterPrefix and the
// program's name.
const (
	filterPrio   = 1
	filterHandle = 1
	filterPrefix = "weft-"
)

// legacy says whether h is attached with legacy tc rather than tcx.
func (d *Driver) legacy(h hook) bool {
	switch d.cfg.Hooks {
	case HooksTC:
		return true
	case HooksTCX:
		return false
	}
	return h.endpoint || d.noTCX
}

// ensureHook attaches h as the hook mode says, then removes what the other
// mode left on the device (an agent restarted in another mode, or after a
// kernel change). The new attachment comes first, so no packet passes
// unhandled in between: a tcx program runs before tc's filters and ours
// never hand a packet on to them. clsact are the devices with a clsact
// qdisc when Set began (clsactDevices): devices made since have none.
func (d *Driver) ensureHook(h hook, clsact map[int]bool) error {
	if !d.legacy(h) {
		err := d.ensureLink(h)
		if errors.Is(err, ebpf.ErrNotSupported) && d.cfg.Hooks == HooksAuto {
			d.log.Warn("kernel has no tcx, attaching with legacy tc", "err", err)
			d.noTCX = true
			return d.ensureHook(h, clsact)
		}
		if err != nil || !clsact[h.ifindex] {
			return err
		}
		return d.dropFilter(h)
	}
	if err := d.ensureFilter(h, clsact); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(d.pinDir, "links", h.name)); err == nil {
		return d.dropLink(h.name)
	}
	return nil
}

// parent is the clsact direction of h.
func (h hook) parent() uint32 {
	if h.egress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

// filter is h's cls_bpf filter.
func (d *Driver) filter(h hook) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: h.ifindex, Parent: h.parent(), Handle: filterHandle, Priority: filterPrio, Protocol: unix.ETH_P_ALL},
		Fd:          h.prog.FD(), Name: filterPrefix + d.objs.names[h.prog], DirectAction: true,
	}
}

// filters lists the filters of h's clsact direction (none without a
// clsact qdisc).
func (d *Driver) filters(h hook) ([]netlink.Filter, error) {
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: h.ifindex}}
	return writes.Dump("filters", func() ([]netlink.Filter, error) { return d.nl.FilterList(dev, h.parent()) })
}

// ensureFilter makes sure h is attached with legacy tc: a clsact qdisc on
// the device and, in h's direction, our filter running the current
// program (one of another build is replaced in place, atomically).
// Filters of others on our devices are left alone: ours comes first and
// decides every packet. A device without a clsact qdisc has no filter:
// nothing is read.
func (d *Driver) ensureFilter(h hook, clsact map[int]bool) error {
	want := d.filter(h)
	if clsact[h.ifindex] {
		have, err := d.filters(h)
		if err != nil {
			return fmt.Errorf("hook %s: %w", h.name, err)
		}
		for _, f := range have {
			if b, ok := f.(*netlink.BpfFilter); ok && isOurs(b, want) {
				if ebpf.ProgramID(b.Id) == d.objs.ids[h.prog] {
					return nil
				}
				if err := d.ops.Write(writes.FilterSet, func() error { return d.nl.FilterReplace(want) }); err != nil {
					return fmt.Errorf("hook %s: replace filter: %w", h.name, err)
				}
				return nil
			}
		}
	} else {
		q := clsactOf(h.ifindex)
		if err := d.ops.Write(writes.QdiscAdd, func() error { return d.nl.QdiscAdd(q) }); err != nil {
			return fmt.Errorf("hook %s: add clsact: %w", h.name, err)
		}
		clsact[h.ifindex] = true
	}
	if err := d.ops.Write(writes.FilterSet, func() error { return d.nl.FilterReplace(want) }); err != nil {
		return fmt.Errorf("hook %s: add filter: %w", h.name, err)
	}
	return nil
}

// isOurs reports whether f is the filter want names, whatever program it
// runs.
func isOurs(f, want *netlink.BpfFilter) bool {
	return f.Priority == want.Priority && f.Handle == want.Handle && f.Name == want.Name && f.DirectAction
}

// dropFilter removes a legacy tc filter of ours in h's direction. Its
// clsact qdisc stays (empty, on a device of ours that Teardown deletes):
// deleting a clsact qdisc can lose a packet passing the device.
func (d *Driver) dropFilter(h hook) error {
	have, err := d.filters(h)
	if err != nil {
		return fmt.Errorf("hook %s: %w", h.name, err)
	}
	for _, f := range have {
		if b, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(b.Name, filterPrefix) {
			if err := d.ops.Write(writes.FilterDel, func() error { return d.nl.FilterDel(b) }); err != nil {
				return fmt.Errorf("hook %s: delete legacy filter: %w", h.name, err)
			}
			return nil
		}
	}
	return nil
}

// clsactDevices are the devices of the host namespace with a clsact
// qdisc (by ifindex), and every qdisc of it.
func (d *Driver) clsactDevices() (map[int]bool, []netlink.Qdisc, error) {
	qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return d.nl.QdiscList(nil) })
	if err != nil {
		return nil, nil, err
	}
	out := map[int]bool{}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_CLSACT {
			out[q.Attrs().LinkIndex] = true
		}
	}
	return out, qs, nil
}

// clsactOf is the clsact qdisc of a device.
func clsactOf(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex,
		Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(netlink.HANDLE_CLSACT>>16, 0)}}
}
