package ebpf

import (
	"fmt"

	"github.com/weftnet/weft/datapath"
)

// EndpointCounters is an endpoint's traffic as the BPF programs counted it
// since it was attached: Tx is what it sent, Rx what was delivered to it,
// Drops what was dropped of what it sent, by reason.
type EndpointCounters struct {
	TxPackets, TxBytes uint64
	RxPackets, RxBytes uint64
	Drops              map[datapath.DropReason]uint64
}

// Counters reads the counters of a programmed endpoint (summed over CPUs);
// ok is false for an endpoint that is not programmed.
func (d *Driver) Counters(id string) (c EndpointCounters, ok bool, err error) {
	d.smu.Lock()
	st := d.eps[id]
	closed := d.closed
	d.smu.Unlock()
	if st == nil || closed {
		return c, false, nil
	}
	var per []weftCounters
	if err := d.objs.Counters.Lookup(uint32(st.ifindex), &per); err != nil {
		return c, false, fmt.Errorf("counters of %s: %w", id, err)
	}
	c.Drops = map[datapath.DropReason]uint64{}
	for _, p := range per {
		c.TxPackets += p.TxPackets
		c.TxBytes += p.TxBytes
		c.RxPackets += p.RxPackets
		c.RxBytes += p.RxBytes
		for r, n := range p.Drops {
			if n != 0 {
				c.Drops[datapath.DropReason(r)] += n
			}
		}
	}
	return c, true, nil
}
