package ebpf

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/weftnet/weft/datapath"
)

var _ datapath.TrafficReader = (*Driver)(nil)

// Traffic reads the counters the BPF programs keep per local endpoint (a
// per-CPU hash entry per veth, summed here): what it sent (delivered or
// not), what was delivered to it, and the drops of packets from it and,
// for ingress policy, to it, by datapath.DropReason. A counter starts at
// zero when the endpoint is attached (an endpoint whose entry is missing
// reads zero; Set makes it). With Config.FlowSampling, the sampled flows
// too (see "Flows"). It counts no connections (ConnsOut, ConnsIn) and
// keeps no per-VPC drops: every drop it makes belongs to an endpoint.
func (d *Driver) Traffic(ctx context.Context) (*datapath.Traffic, error) {
	type ep struct {
		id      string
		vni     uint32
		ifindex uint32
	}
	d.mu.Lock() // the maps stay open: Close waits
	defer d.mu.Unlock()
	d.smu.Lock()
	closed := d.closed
	d.smu.Unlock()
	if closed {
		return nil, datapath.ErrClosed
	}
	eps := make([]ep, 0, len(d.eps))
	for id, st := range d.eps {
		eps = append(eps, ep{id, st.ep.VNI, uint32(st.ifindex)})
	}
	slices.SortFunc(eps, func(a, b ep) int { return strings.Compare(a.id, b.id) })

	t := &datapath.Traffic{At: time.Now(), Endpoints: make([]datapath.EndpointTraffic, 0, len(eps))}
	var per []weftCounters
	var errs []error
	for _, e := range eps {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("ebpf traffic: %w", err)
		}
		et := datapath.EndpointTraffic{ID: e.id, VNI: e.vni}
		per = per[:0]
		if err := d.objs.Counters.Lookup(e.ifindex, &per); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("counters of %s: %w", e.id, err))
		}
		for _, p := range per {
			et.SentPackets += p.TxPackets
			et.SentBytes += p.TxBytes
			et.ReceivedPackets += p.RxPackets
			et.ReceivedBytes += p.RxBytes
			for r, n := range p.Drops {
				et.Drops[r] += n
			}
		}
		t.Endpoints = append(t.Endpoints, et)
	}
	if t.Sampling = d.cfg.FlowSampling; t.Sampling > 0 {
		flows, err := d.sampledFlows(t.At)
		t.Flows = flows
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return t, fmt.Errorf("ebpf traffic: %w", err)
	}
	return t, nil
}
