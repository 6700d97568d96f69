package ebpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
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
// endpoints more (without QoS, on a host and VPCs without QoS, nothing
// refused or invalid) within Config.MapResync of the last full Set (and
// with a non-negative Config.EndpointResync), which
// read the host namespace and the maps and had no error: it trusts what
// that Set read and what the Sets since wrote, and makes only the new
// endpoints (veth, inside, hook, their map entries and policy classes),
// without dumping the host namespace's links and qdiscs or reading any
// map, so attaching one endpoint costs the same on a host with 10 or
// 1,000. Anything else, or a failure on the way, is left to the full Set
// (done false), which reads everything and repairs drift, as the first
// Set after the interval does.
func (d *Driver) setNewEndpoints(ctx context.Context, n *datapath.Desired) (done bool, err error) {
	l := d.last
	if l == nil || d.cfg.MapResync < 0 || d.cfg.EndpointResync < 0 || time.Since(l.read) >= d.cfg.MapResync || d.polCache == nil || d.qosErr != nil ||
		len(d.refused) > 0 || len(n.Invalid) > 0 || n.Host != l.host || n.Host.CapacityBps != 0 ||
		len(n.Endpoints) <= len(d.eps) || !reflect.DeepEqual(n.VPCs, l.vpcs) {
		return false, nil
	}
	for _, v := range n.VPCs {
		if v.QoS != nil {
			return false, nil
		}
	}
	var fresh []*datapath.Endpoint
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		if prev := d.eps[e.ID]; prev != nil {
			if !reflect.DeepEqual(&prev.ep, e) {
				return false, nil
			}
			continue
		}
		if e.QoS != nil {
			return false, nil
		}
		fresh = append(fresh, e)
	}
	if len(fresh) != len(n.Endpoints)-len(d.eps) {
		return false, nil // an endpoint went
	}
	if len(refusals(n)) > 0 {
		return false, nil
	}

	start := time.Now()
	before := d.ops.Counts()
	pols := maps.Clone(d.policies)
	for _, e := range fresh {
		pols[e.ID] = d.compilePolicy(e)
	}
	refused := map[uint32]refusal{}
	if d.putPolicies(n, pols, &mapState{pol: d.polCache}, refused) {
		return false, nil
	}
	eps := maps.Clone(d.eps)
	clsact := map[int]bool{} // fresh veths have no qdisc
	for _, e := range fresh {
		if err := ctx.Err(); err != nil {
			return true, fmt.Errorf("ebpf set: %w", err)
		}
		st, err := d.ensureEndpoint(e, nil, nil, l.mtu, clsact)
		if err != nil {
			d.log.Info("attaching a new endpoint failed, reading the host", "endpoint", e.ID, "err", err)
			d.last = nil
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
	d.polCache = policyMapsOf(slices.Collect(maps.Values(pols)))
	if err := d.flushIfIsolated(eps, pols); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	d.publish(eps, d.refused, pols, d.qosErr)
	err = errors.Join(errs...)
	if err != nil {
		d.last = nil
	}
	d.log.Info("datapath set", "vpcs", len(n.VPCs), "endpoints", len(n.Endpoints), "new", len(fresh),
		"writes", d.ops.Counts().Sub(before).String(), "took", time.Since(start), "err", err)
	if err != nil {
		return true, fmt.Errorf("ebpf set: %w", err)
	}
	return true, nil
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
