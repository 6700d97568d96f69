package ebpf

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// Learn implements datapath.Driver: one remotes map entry per remote
// (VNI, IP → host underlay, identity, epoch). A learned destination whose
// packets are held (a miss within the last second) is then released: the
// driver resolves the hold neighbour, which sends the queued packets
// through to_vxlan, and deletes it. A Learn that changes nothing writes
// nothing.
func (d *Driver) Learn(ctx context.Context, rs []datapath.Remote) error {
	d.smu.Lock()
	defer d.smu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	var errs []error
	for _, r := range rs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf learn: %w", err))
			break
		}
		if err := d.learn(r); err != nil {
			errs = append(errs, fmt.Errorf("ebpf learn %d/%s: %w", r.VNI, r.IP, err))
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
	if r.HostUnderlay == d.underlay {
		return nil // local: Set programs it
	}
	cur, ok := vs.remotes[r.IP]
	if ok && r.Epoch < cur.epoch {
		return nil // a late answer; a newer one is installed
	}
	want := remote{host: r.HostUnderlay, identity: r.Identity, epoch: r.Epoch}
	if !ok || cur != want {
		k, v := weftVip{Vni: r.VNI, Ip: be32(r.IP)}, weftRemoteEp{Host: be32(r.HostUnderlay), Identity: r.Identity, Epoch: r.Epoch}
		if err := d.ops.Write(writes.MapPut, func() error { return d.objs.Remotes.Put(k, v) }); err != nil {
			return fmt.Errorf("put remote: %w", err)
		}
		vs.remotes[r.IP] = want
	}
	d.releaseHeld(r.Key())
	return nil
}

// releaseHeld sends the packets the kernel holds for k, if a miss for it is
// pending: resolving the hold neighbour transmits its queue (synchronously)
// through the VXLAN device, whose egress program finds the remote just
// learned.
func (d *Driver) releaseHeld(k datapath.RemoteKey) {
	t, ok := d.pending[k]
	if !ok {
		return
	}
	delete(d.pending, k)
	if time.Since(t) > 2*time.Second {
		return // the neighbour failed long ago: its queue was dropped
	}
	n := &netlink.Neigh{LinkIndex: d.vxIndex, Family: unix.AF_INET6, State: netlink.NUD_REACHABLE,
		IP: holdAddr(k.VNI, k.IP), HardwareAddr: holdMAC(k.VNI)}
	// One counted write, counted before the packets go: whoever sees them
	// arrive sees the count.
	if err := d.ops.Write(writes.NeighRelease, func() error {
		if err := d.nl.NeighSet(n); err != nil {
			return err
		}
		return d.nl.NeighDel(n)
	}); err != nil {
		d.log.Warn("cannot release held packets", "vni", k.VNI, "ip", k.IP, "err", err)
	}
}

// Forget implements datapath.Driver. It also clears the destination's miss
// rate limit, so its next packet asks again at once.
func (d *Driver) Forget(ctx context.Context, keys []datapath.RemoteKey) error {
	d.smu.Lock()
	defer d.smu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	var errs []error
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf forget: %w", err))
			break
		}
		vs := d.vpcs[k.VNI]
		if vs == nil {
			continue
		}
		if _, ok := vs.remotes[k.IP]; !ok {
			continue
		}
		key := weftVip{Vni: k.VNI, Ip: be32(k.IP)}
		if err := d.ops.Write(writes.MapDel, func() error { return d.objs.Remotes.Delete(key) }); err != nil {
			errs = append(errs, fmt.Errorf("ebpf forget %d/%s: %w", k.VNI, k.IP, err))
			continue
		}
		delete(vs.remotes, k.IP)
		// A rate limit, not forwarding state: not counted.
		_ = d.objs.MissSeen.Delete(key)
	}
	return errors.Join(errs...)
}
