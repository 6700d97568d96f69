package sim

import (
	"context"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/weftnet/weft/datapath"
)

// Counting what Send and Deliver decide, as the linux driver's counters
// do (datapath.TrafficReader): per endpoint what it sent (delivered or
// not) and what was delivered to it, TCP connections opened (a packet
// that is not Midstream), drops by reason; per VPC the drops of no
// endpoint (no route); and 1 in Config.FlowSampling flows, chosen by a
// hash of the 5-tuple, with their counts.

var _ datapath.TrafficReader = (*Driver)(nil)

// traffic is a driver's counters; nil until the first packet.
type traffic struct {
	eps   map[string]*datapath.EndpointTraffic
	vpcs  map[uint32]*datapath.VPCTraffic
	flows map[datapath.FlowKey]*datapath.FlowSample
}

func (d *Driver) counters() *traffic {
	if d.traffic == nil {
		d.traffic = &traffic{eps: map[string]*datapath.EndpointTraffic{}, vpcs: map[uint32]*datapath.VPCTraffic{}}
	}
	return d.traffic
}

func (t *traffic) ep(e *datapath.Endpoint) *datapath.EndpointTraffic {
	et := t.eps[e.ID]
	if et == nil {
		et = &datapath.EndpointTraffic{ID: e.ID, VNI: e.VNI}
		t.eps[e.ID] = et
	}
	return et
}

// flowKey is p's flow key (ICMP: type and code as the destination port).
func flowKey(vni uint32, src netip.Addr, p Packet) datapath.FlowKey {
	k := datapath.FlowKey{VNI: vni, Src: src, Dst: p.Dst, Proto: p.Proto, SrcPort: p.SrcPort, DstPort: p.DstPort}
	if p.Proto == datapath.ProtoICMP {
		k.SrcPort, k.DstPort = 0, uint16(p.ICMPType)<<8|uint16(p.ICMPCode)
	}
	return k
}

// countPacket records one packet sent by from (nil: a remote sender) to
// to (nil: not a local endpoint) in vni, dropped for reason (DropNone:
// delivered or forwarded) by dropAt's policy (nil: by the VPC's router,
// e.g. no route). The caller holds mu.
func (d *Driver) countPacket(vni uint32, src netip.Addr, from, to *datapath.Endpoint, p Packet, reason datapath.DropReason, dropAt *datapath.Endpoint) {
	t := d.counters()
	n := uint64(p.Bytes)
	opens := p.Proto == datapath.ProtoTCP && !p.Midstream
	if from != nil {
		et := t.ep(from)
		et.SentPackets++
		et.SentBytes += n
		if opens {
			et.ConnsOut++
		}
	}
	if to != nil {
		et := t.ep(to)
		if opens {
			et.ConnsIn++
		}
		if reason == datapath.DropNone {
			et.ReceivedPackets++
			et.ReceivedBytes += n
		}
	}
	switch {
	case reason == datapath.DropNone:
	case dropAt != nil:
		t.ep(dropAt).Drops[reason]++
	default:
		vt := t.vpcs[vni]
		if vt == nil {
			vt = &datapath.VPCTraffic{VNI: vni}
			t.vpcs[vni] = vt
		}
		vt.Drops[reason]++
	}
	if d.sampling == 0 {
		return
	}
	k := flowKey(vni, src, p)
	h := fnv.New32a()
	b := make([]byte, 0, 48)
	b = append(b, k.Src.AsSlice()...)
	b = append(b, k.Dst.AsSlice()...)
	b = append(b, byte(k.Proto), byte(k.SrcPort>>8), byte(k.SrcPort), byte(k.DstPort>>8), byte(k.DstPort))
	h.Write(b)
	if h.Sum32()%d.sampling != 0 {
		return
	}
	if t.flows == nil {
		t.flows = map[datapath.FlowKey]*datapath.FlowSample{}
	}
	f := t.flows[k]
	if f == nil {
		f = &datapath.FlowSample{FlowKey: k}
		t.flows[k] = f
	}
	f.Packets++
	f.Bytes += n
	f.Last = time.Now()
	if reason != datapath.DropNone {
		f.Dropped++
		f.Reason = reason
	}
}

// Traffic implements datapath.TrafficReader: the counters of the
// endpoints and VPCs programmed now, and the sampled flows not idle for
// datapath.FlowIdleTimeout.
func (d *Driver) Traffic(ctx context.Context) (*datapath.Traffic, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, datapath.ErrClosed
	}
	tr := &datapath.Traffic{At: time.Now(), Sampling: d.sampling}
	t := d.traffic
	for i := range d.eps {
		e := &d.eps[i]
		et := datapath.EndpointTraffic{ID: e.ID, VNI: e.VNI}
		if t != nil && t.eps[e.ID] != nil && t.eps[e.ID].VNI == e.VNI {
			et = *t.eps[e.ID]
		}
		tr.Endpoints = append(tr.Endpoints, et)
	}
	for _, v := range d.vpcs {
		vt := datapath.VPCTraffic{VNI: v.VNI}
		if t != nil && t.vpcs[v.VNI] != nil {
			vt = *t.vpcs[v.VNI]
		}
		tr.VPCs = append(tr.VPCs, vt)
	}
	if t != nil {
		for k, f := range t.flows {
			if tr.At.Sub(f.Last) > datapath.FlowIdleTimeout || d.vpc(k.VNI) == nil {
				delete(t.flows, k)
				continue
			}
			tr.Flows = append(tr.Flows, *f)
		}
	}
	return tr, nil
}
