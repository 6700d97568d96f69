package ebpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
	"github.com/weftnet/weft/internal/netnsfile"
)

// lastSet is what the last Set that read the host namespace (a full Set)
// found and programmed, for Sets that only attach endpoints
// (setNewEndpoints).
type lastSet struct {
	host datapath.HostConfig
	vpcs []datapath.VPC
	mtu  int       // of the overlay
	read time.Time // when that Set began reading
}

// setNewEndpoints programs a Set whose only change from the last one is
// endpoints more or fewer (none under QoS, on a host and VPCs without
// QoS, nothing refused or invalid) within Config.MapResync of the last
// full Set (and with a non-negative Config.EndpointResync), which read
// the host namespace and the maps and had no error: it trusts what that
// Set read and what the Sets since wrote, removes the endpoints that went
// (veth, hook, namespace, map entries, policy classes no one uses) and
// makes the new ones (veth, inside, hook, map entries, policy classes),
// without dumping the host namespace's links and qdiscs or reading any
// map, so attaching or detaching one endpoint costs the same on a host
// with 10 or 1,000. Anything else, or a failure on the way, is left to
// the full Set (done false), which reads everything and repairs drift, as
// the first Set after the interval does.
func (d *Driver) setNewEndpoints(ctx context.Context, n *datapath.Desired) (done bool, err error) {
	l := d.last
	if l == nil || d.cfg.MapResync < 0 || d.cfg.EndpointResync < 0 || time.Since(l.read) >= d.cfg.MapResync || d.polCache == nil || d.qosErr != nil ||
		len(d.refused) > 0 || len(n.Invalid) > 0 || n.Host != l.host || n.Host.CapacityBps != 0 ||
		!reflect.DeepEqual(n.VPCs, l.vpcs) {
		return false, nil
	}
	for _, v := range n.VPCs {
		if v.QoS != nil {
			return false, nil
		}
	}
	var fresh []*datapath.Endpoint
	kept := 0
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		if prev := d.eps[e.ID]; prev != nil {
			if !reflect.DeepEqual(&prev.ep, e) {
				return false, nil
			}
			kept++
			continue
		}
		if e.QoS != nil {
			return false, nil
		}
		fresh = append(fresh, e)
	}
	gone := make(map[string]*epState, len(d.eps)-kept)
	if kept < len(d.eps) {
		want := make(map[string]bool, len(n.Endpoints))
		for i := range n.Endpoints {
			want[n.Endpoints[i].ID] = true
		}
		for id, st := range d.eps {
			if !want[id] {
				if st.qos || st.ep.QoS != nil {
					return false, nil
				}
				gone[id] = st
			}
		}
	}
	if len(fresh) == 0 && len(gone) == 0 || len(refusals(n)) > 0 {
		return false, nil
	}

	start := time.Now()
	before := d.ops.Counts()
	eps := maps.Clone(d.eps)
	pols := maps.Clone(d.policies)
	// The endpoints that went first: a new one may take the address of
	// one that went (its locals entry).
	for id, st := range gone {
		if err := d.removeEndpoint(st); err != nil {
			d.log.Info("removing an endpoint failed, reading the host", "endpoint", id, "err", err)
			d.last = nil
			d.publish(eps, d.refused, pols, d.qosErr)
			return false, nil
		}
		delete(eps, id)
		delete(pols, id)
	}
	for _, e := range fresh {
		pols[e.ID] = d.compilePolicy(e)
	}
	refused := map[uint32]refusal{}
	if d.putPolicies(n, pols, &mapState{pol: d.polCache}, refused) {
		d.last = nil
		d.publish(eps, d.refused, pols, d.qosErr)
		return false, nil
	}
	clsact := map[int]bool{} // fresh veths have no qdisc
	for _, e := range fresh {
		if err := ctx.Err(); err != nil {
			d.last = nil
			d.publish(eps, d.refused, pols, d.qosErr)
			return true, fmt.Errorf("ebpf set: %w", err)
		}
		st, err := d.ensureEndpoint(e, nil, nil, l.mtu, clsact)
		if err != nil {
			d.log.Info("attaching a new endpoint failed, reading the host", "endpoint", e.ID, "err", err)
			d.last = nil
			d.publish(eps, d.refused, pols, d.qosErr)
			return false, nil
		}
		eps[e.ID] = st
	}
	var errs []error
	for _, e := range fresh {
		st := eps[e.ID]
		loc, f := endpointEntries(st, pols[e.ID], nil)
		ifindex := uint32(st.ifindex)
		errs = append(errs,
			d.ops.Write(writes.MapPut, func() error { return d.objs.Ifaces.Put(ifindex, f) }),
			d.ops.Write(writes.MapPut, func() error { return d.objs.Locals.Put(vipOf(&st.ep), loc) }),
			d.ops.Write(writes.MapPut, func() error {
				err := d.objs.Counters.Update(ifindex, make([]weftCounters, ebpf.MustPossibleCPU()), ebpf.UpdateNoExist)
				if errors.Is(err, ebpf.ErrKeyExist) {
					return nil
				}
				return err
			}))
	}
	if err := errors.Join(errs...); err != nil {
		// The endpoints are made; the full Set writes what is missing.
		d.log.Info("attaching a new endpoint failed, reading the host", "err", err)
		d.last = nil
		d.publish(eps, d.refused, pols, d.qosErr)
		return false, nil
	}
	wantPol := policyMapsOf(slices.Collect(maps.Values(pols)))
	if err := d.deletePolicies(wantPol, &mapState{pol: d.polCache}); err != nil {
		errs = append(errs, err)
		d.polCache = nil
	} else {
		d.polCache = wantPol
	}
	if err := d.flushIfIsolated(eps, pols); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	d.publish(eps, d.refused, pols, d.qosErr)
	err = errors.Join(errs...)
	if err != nil {
		d.last = nil
	}
	d.log.Info("datapath set", "vpcs", len(n.VPCs), "endpoints", len(n.Endpoints), "new", len(fresh), "gone", len(gone),
		"writes", d.ops.Counts().Sub(before).String(), "took", time.Since(start), "err", err)
	if err != nil {
		return true, fmt.Errorf("ebpf set: %w", err)
	}
	return true, nil
}

// removeEndpoint removes an endpoint the last Set programmed: its veth
// (with its peer and filter; a veth of that name with another index is
// not ours to delete, and fails it), its pinned link, the namespace the
// driver made for it and its map entries.
func (d *Driver) removeEndpoint(st *epState) error {
	name := st.status.HostIfName
	link, err := d.nl.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
	case err != nil:
		return fmt.Errorf("find veth %s: %w", name, err)
	case link.Attrs().Index != st.ifindex || link.Type() != "veth":
		return fmt.Errorf("veth %s: index %d, type %s, want the veth %d", name, link.Attrs().Index, link.Type(), st.ifindex)
	default:
		if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(link) }); err != nil {
			return fmt.Errorf("delete veth %s: %w", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.pinDir, "links", name)); err == nil {
		if err := d.dropLink(name); err != nil {
			return err
		}
	}
	if st.ep.Netns == "" {
		ns := d.names.Endpoint(st.ep.ID)
		if err := d.ops.Write(writes.NetnsDel, func() error { return netnsfile.Delete(d.cfg.NetnsDir, ns) }); err != nil {
			return err
		}
	}
	ifindex := uint32(st.ifindex)
	for _, del := range []struct {
		m   *ebpf.Map
		key any
	}{{d.objs.Locals, vipOf(&st.ep)}, {d.objs.Ifaces, ifindex}, {d.objs.Counters, ifindex}} {
		if err := d.ops.Write(writes.MapDel, func() error { return del.m.Delete(del.key) }); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete the map entries of %s: %w", st.ep.ID, err)
		}
	}
	d.log.Info("endpoint removed", "veth", name, "endpoint", st.ep.ID)
	return nil
}

// flushIfIsolated deletes the tracked connections the policies no longer
// allow when the endpoints' classes, identities or addresses changed since
// they were last judged. With no endpoint isolated nothing is judged, so
// nothing is read: the first Set that isolates one judges them.
func (d *Driver) flushIfIsolated(eps map[string]*epState, pols map[string]*epPolicy) error {
	isolated := false
	for _, p := range pols {
		if p != nil && p.flags() != 0 {
			isolated = true
			break
		}
	}
	if !isolated {
		return nil
	}
	digest := policyDigest(eps, pols)
	if digest == d.flushedFor {
		return nil
	}
	flushed, err := d.flushConns(eps)
	if err != nil {
		return err
	}
	d.flushedFor = digest
	if flushed > 0 {
		d.log.Info("connections no longer allowed flushed", "connections", flushed)
	}
	return nil
}

// publish makes the programmed state what Status and the fast path read.
func (d *Driver) publish(eps map[string]*epState, refused map[uint32]refusal, pols map[string]*epPolicy, qosErr error) {
	d.smu.Lock()
	defer d.smu.Unlock()
	d.eps, d.refused, d.policies, d.qosErr = eps, refused, pols, qosErr
	for k, t := range d.pending {
		if time.Since(t) > 2*time.Second {
			delete(d.pending, k)
		}
	}
}
