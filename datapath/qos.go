package datapath

import "fmt"

// Bounds of QoS values a driver accepts (see Desired.Normalize).
const (
	// BestEffortPriority is the priority of traffic without QoS: the
	// lowest, so that every class with a priority is served before it
	// when the uplink is contended.
	BestEffortPriority = 7
	// MinRateBps and MaxRateBps bound a nonzero rate: below 1 kbit/s a
	// shaper cannot do anything meaningful, above 100 Tbit/s nothing on a
	// host is that fast.
	MinRateBps = 1000
	MaxRateBps = 100_000_000_000_000
	// MaxDSCP is the largest 6-bit DSCP value.
	MaxDSCP = 63
)

// Enforced is what a driver enforces of an endpoint's QoS q on a host whose
// uplink capacity is capacityBps (0: unknown), and what its Snapshot
// reports. Without a capacity the uplink is not shaped, so MinRateBps and
// Priority mean nothing there and are dropped. A QoS that asks for nothing
// beyond best effort (no cap, no marking, and no minimum and
// BestEffortPriority, or no capacity) is nil, like no QoS at all.
func (q *QoS) Enforced(capacityBps uint64) *QoS {
	if q == nil {
		return nil
	}
	e := QoS{MaxRateBps: q.MaxRateBps, DSCP: q.DSCP}
	if capacityBps > 0 {
		e.MinRateBps, e.Priority = q.MinRateBps, q.Priority
	}
	if e == (QoS{}) && capacityBps == 0 || e == (QoS{Priority: BestEffortPriority}) {
		return nil
	}
	return &e
}

// Enforced is what a driver enforces of a VPC's QoS q on a host whose
// uplink capacity is capacityBps (0: unknown) and where the VPC has
// endpoints (local) or not: an aggregate is shared by the VPC's endpoints
// on the host, so without any there is nothing to enforce. nil when that is
// nothing.
func (q *VPCQoS) Enforced(capacityBps uint64, local bool) *VPCQoS {
	if q == nil || !local {
		return nil
	}
	e := VPCQoS{MaxRateBps: q.MaxRateBps}
	if capacityBps > 0 {
		e.MinRateBps = q.MinRateBps
	}
	if e == (VPCQoS{}) {
		return nil
	}
	return &e
}

// normQoS returns a copy of q with its rates rounded down to whole bytes
// per second (what a kernel shaper stores), or an error.
func normQoS(q *QoS) (*QoS, error) {
	if q == nil {
		return nil, nil
	}
	n := *q
	var err error
	if n.MaxRateBps, n.MinRateBps, err = normRates(q.MaxRateBps, q.MinRateBps); err != nil {
		return nil, err
	}
	if q.Priority < 0 || q.Priority > BestEffortPriority {
		return nil, fmt.Errorf("priority %d out of range 0..%d", q.Priority, BestEffortPriority)
	}
	if q.DSCP > MaxDSCP {
		return nil, fmt.Errorf("DSCP %d out of range 0..%d", q.DSCP, MaxDSCP)
	}
	return &n, nil
}

// normVPCQoS is normQoS for a VPC's aggregate.
func normVPCQoS(q *VPCQoS) (*VPCQoS, error) {
	if q == nil {
		return nil, nil
	}
	n := *q
	var err error
	if n.MaxRateBps, n.MinRateBps, err = normRates(q.MaxRateBps, q.MinRateBps); err != nil {
		return nil, err
	}
	return &n, nil
}

func normRates(max, min uint64) (uint64, uint64, error) {
	for _, r := range []uint64{max, min} {
		if r != 0 && (r < MinRateBps || r > MaxRateBps) {
			return 0, 0, fmt.Errorf("rate %d bit/s out of range %d..%d", r, uint64(MinRateBps), uint64(MaxRateBps))
		}
	}
	if max != 0 && min > max {
		return 0, 0, fmt.Errorf("minimum rate %d bit/s above maximum %d bit/s", min, max)
	}
	return max &^ 7, min &^ 7, nil
}
