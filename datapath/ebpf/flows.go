package ebpf

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
)

// sampledFlows reads the flows map (see "Flows"): the flows seen within
// datapath.FlowIdleTimeout before at. Older ones are deleted (forgotten,
// as the linux driver's set elements time out; not counted as writes: the
// maps' state is the programs' here).
func (d *Driver) sampledFlows(at time.Time) ([]datapath.FlowSample, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil { // bpf_ktime_get_coarse_ns's clock
		return nil, fmt.Errorf("read monotonic clock: %w", err)
	}
	now := ts.Nano()
	var (
		k     weftCtKey
		v     weftFlow
		out   []datapath.FlowSample
		stale []weftCtKey
	)
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		age := time.Duration(max(0, now-int64(v.Last)))
		if age > datapath.FlowIdleTimeout {
			stale = append(stale, k)
			continue
		}
		f := datapath.FlowSample{
			FlowKey: datapath.FlowKey{VNI: k.Vni, Src: addrOf(k.Src), Dst: addrOf(k.Dst), Proto: datapath.Protocol(k.Proto),
				SrcPort: ntohs(k.Sport), DstPort: ntohs(k.Dport)},
			Packets: v.Packets, Bytes: v.Bytes, Last: at.Add(-age),
		}
		if v.Dropped > 0 {
			f.Dropped, f.Reason = min(v.Dropped, v.Packets), datapath.DropReason(v.Reason)
		}
		out = append(out, f)
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read flows map: %w", err)
	}
	for _, k := range stale {
		_ = d.objs.Flows.Delete(k)
	}
	return out, nil
}
