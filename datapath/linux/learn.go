package linux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/nlconv"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// remoteNeigh is the neighbour entry that sends traffic for a remote
// endpoint IP to its host's VTEP MAC.
func remoteNeigh(vxIndex int, ip, host netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: vxIndex, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: ip.AsSlice(), HardwareAddr: VTEPMAC(host)}
}

// fdbEntry is the VXLAN FDB entry that sends a host's VTEP MAC to its
// underlay address.
func fdbEntry(vxIndex int, host netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: vxIndex, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		IP: host.AsSlice(), HardwareAddr: VTEPMAC(host)}
}

// Learn implements datapath.Driver. For each remote it installs, in the
// remote's VPC namespace, the FDB entry for its host (once per host) and
// then a permanent neighbour entry IP -> VTEP MAC of the host; the neighbour
// update releases the packets the kernel held since the miss. A Learn that
// changes nothing writes nothing.
func (d *Driver) Learn(ctx context.Context, rs []datapath.Remote) error {
	d.smu.Lock()
	defer d.smu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	var errs []error
	for _, r := range rs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("linux learn: %w", err))
			break
		}
		if err := d.learn(r); err != nil {
			errs = append(errs, fmt.Errorf("linux learn %d/%s: %w", r.VNI, r.IP, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) learn(r datapath.Remote) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if !r.IP.Is4() || !r.HostUnderlay.Is4() {
		return fmt.Errorf("%w: only IPv4 is supported", datapath.ErrInvalid)
	}
	vs := d.vpcs[r.VNI]
	if vs == nil {
		return datapath.ErrUnknownVNI
	}
	idx := int(vs.vxIndex.Load())
	if idx == 0 {
		return fmt.Errorf("%w: vxlan device not programmed", datapath.ErrUnknownVNI)
	}
	if r.HostUnderlay == d.underlay {
		return nil // local: Set programs it
	}
	cur := vs.remotes[r.IP]
	switch {
	case cur != nil && r.Epoch < cur.epoch:
		return nil // a late answer; a newer one is installed
	case cur != nil && cur.host == r.HostUnderlay:
		cur.epoch, cur.identity, cur.mac = r.Epoch, r.Identity, bytes.Clone(r.MAC)
		return nil
	}
	// FDB first, so the packets the neighbour update releases can leave.
	if vs.fdb[r.HostUnderlay] == 0 {
		if err := d.ops.Write(writes.FDBAdd, func() error { return vs.h.NeighSet(fdbEntry(idx, r.HostUnderlay)) }); err != nil {
			return fmt.Errorf("add fdb for host %s: %w", r.HostUnderlay, err)
		}
	}
	vs.fdb[r.HostUnderlay]++
	o := writes.NeighAdd
	if cur != nil {
		o = writes.NeighSet
	}
	if err := d.ops.Write(o, func() error { return vs.h.NeighSet(remoteNeigh(idx, r.IP, r.HostUnderlay)) }); err != nil {
		d.releaseFDB(vs, idx, r.HostUnderlay)
		return fmt.Errorf("set neighbour: %w", err)
	}
	if cur != nil {
		d.releaseFDB(vs, idx, cur.host)
	}
	vs.remotes[r.IP] = &remote{host: r.HostUnderlay, epoch: r.Epoch, identity: r.Identity, mac: bytes.Clone(r.MAC)}
	return nil
}

// releaseFDB drops one reference to a host's FDB entry and deletes the entry
// with the last one.
func (d *Driver) releaseFDB(vs *vpcNS, idx int, host netip.Addr) {
	vs.fdb[host]--
	if vs.fdb[host] > 0 {
		return
	}
	delete(vs.fdb, host)
	if err := d.ops.Write(writes.FDBDel, func() error { return vs.h.NeighDel(fdbEntry(idx, host)) }); err != nil {
		// Set removes unreferenced FDB entries.
		d.log.Warn("cannot delete fdb entry", "vni", vs.vni, "host", host, "err", err)
	}
}

// Forget implements datapath.Driver.
func (d *Driver) Forget(ctx context.Context, keys []datapath.RemoteKey) error {
	d.smu.Lock()
	defer d.smu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	var errs []error
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("linux forget: %w", err))
			break
		}
		vs := d.vpcs[k.VNI]
		if vs == nil {
			continue
		}
		cur := vs.remotes[k.IP]
		if cur == nil {
			continue
		}
		idx := int(vs.vxIndex.Load())
		if err := d.ops.Write(writes.NeighDel, func() error { return vs.h.NeighDel(remoteNeigh(idx, k.IP, cur.host)) }); err != nil {
			errs = append(errs, fmt.Errorf("linux forget %d/%s: %w", k.VNI, k.IP, err))
			continue
		}
		delete(vs.remotes, k.IP)
		d.releaseFDB(vs, idx, cur.host)
	}
	return errors.Join(errs...)
}

// adoptRemotes reads back the remotes an earlier driver learned in a VPC
// namespace it finds at start: permanent neighbours on the VXLAN device
// whose MAC is the VTEPMAC of an FDB entry's destination. Their epoch is
// unknown (0), so any answer replaces them.
func (d *Driver) adoptRemotes(vs *vpcNS) error {
	vx, err := vs.h.LinkByName(vxlanName(vs.vni))
	if err != nil {
		return nil // no VXLAN device: nothing learned; Set creates it
	}
	idx := vx.Attrs().Index
	neighs, fdb, err := vs.readRemotes(idx)
	if err != nil {
		return err
	}
	hostOf := map[string]netip.Addr{}
	for _, f := range fdb {
		if dst := nlconv.IPAddr(f.IP); dst.IsValid() && f.LinkIndex == idx {
			hostOf[f.HardwareAddr.String()] = dst
		}
	}
	for _, n := range neighs {
		if n.LinkIndex != idx || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		host, ok := hostOf[n.HardwareAddr.String()]
		if !ok || !bytes.Equal(VTEPMAC(host), n.HardwareAddr) {
			continue // not one of ours: the next Set removes it
		}
		vs.remotes[nlconv.IPAddr(n.IP)] = &remote{host: host}
		vs.fdb[host]++
	}
	vs.vxIndex.Store(int32(idx))
	if len(vs.remotes) > 0 {
		d.log.Info("adopted learned remotes", "vni", vs.vni, "remotes", len(vs.remotes), "hosts", len(vs.fdb))
	}
	return nil
}

func (vs *vpcNS) readRemotes(vxIndex int) (neighs, fdb []netlink.Neigh, err error) {
	neighs, err = writes.Dump("neighbours", func() ([]netlink.Neigh, error) { return vs.h.NeighList(vxIndex, netlink.FAMILY_V4) })
	if err != nil {
		return nil, nil, err
	}
	fdb, err = writes.Dump("fdb", func() ([]netlink.Neigh, error) { return vs.h.NeighList(vxIndex, unix.AF_BRIDGE) })
	return neighs, fdb, err
}

// convergeRemotes repairs the neighbour and FDB entries of learned remotes
// from the driver's memory. It reads the VXLAN device's entries afresh under
// the fast-path lock, so a Learn or Forget that ran during the Set is not
// mistaken for drift.
func (d *Driver) convergeRemotes(vs *vpcNS, vxIndex int) error {
	d.smu.Lock()
	defer d.smu.Unlock()
	neighs, fdb, err := vs.readRemotes(vxIndex)
	if err != nil {
		return err
	}
	// FDB first: a repaired neighbour releases queued packets at once.
	var errs []error
	wantFDB := map[string]netip.Addr{}
	for host := range vs.fdb {
		wantFDB[VTEPMAC(host).String()] = host
	}
	for _, f := range fdb {
		dst := nlconv.IPAddr(f.IP)
		if f.LinkIndex != vxIndex || !dst.IsValid() {
			continue
		}
		mac := f.HardwareAddr.String()
		if host, ok := wantFDB[mac]; ok && host == dst && f.State&netlink.NUD_PERMANENT != 0 {
			delete(wantFDB, mac)
			continue
		}
		if err := d.ops.Write(writes.FDBDel, func() error { return vs.h.NeighDel(&f) }); err != nil {
			errs = append(errs, fmt.Errorf("delete fdb %s: %w", mac, err))
		}
	}
	for _, host := range wantFDB {
		if err := d.ops.Write(writes.FDBAdd, func() error { return vs.h.NeighSet(fdbEntry(vxIndex, host)) }); err != nil {
			errs = append(errs, fmt.Errorf("add fdb for host %s: %w", host, err))
		}
	}
	want := make([]netlink.Neigh, 0, len(vs.remotes))
	for ip, r := range vs.remotes {
		want = append(want, *remoteNeigh(vxIndex, ip, r.host))
	}
	errs = append(errs, nlconv.PermanentNeighs(vs.h, &d.ops, neighs, want, func(n netlink.Neigh) bool { return n.LinkIndex == vxIndex }))
	return errors.Join(errs...)
}
