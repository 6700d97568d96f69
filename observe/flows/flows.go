// Package flows turns a data plane's sampled flows into flow records
// (5-tuple, bytes, packets, verdict, start and end), ranks them (top
// talkers) and exports them as IPFIX (RFC 7011) to a collector.
//
// A driver that implements datapath.TrafficReader reports the flows it
// sampled (1 in N by a hash of the 5-tuple, so a sampled flow is counted
// whole, on every host it crosses) with cumulative counters. A Tracker
// turns successive snapshots into records of what each flow did since
// the previous one, the way a NetFlow/IPFIX meter exports active flows
// every interval:
//
//	var t flows.Tracker
//	for range ticker.C {
//		tr, _ := driver.(datapath.TrafficReader).Traffic(ctx)
//		recs := t.Update(tr) // deltas since the last Update
//		exporter.Export(recs)
//	}
//
// Records carry the VNI; who a VNI belongs to (tenant, VPC) is the
// controller's to say.
package flows

import (
	"cmp"
	"slices"
	"time"

	"github.com/weftnet/weft/datapath"
)

// Record is what one flow did in one interval (or, merged, over several).
type Record struct {
	datapath.FlowKey
	// Bytes and Packets count the interval's traffic; Dropped the packets
	// of it the data plane dropped, for Reason.
	Bytes, Packets, Dropped uint64
	Reason                  datapath.DropReason
	// Start is when the flow was first seen (its first record's Start);
	// End when its last packet was.
	Start, End time.Time
}

// Verdict is "drop" when the data plane dropped all of the record's
// packets, "allow" when it dropped none, "partial" otherwise.
func (r *Record) Verdict() string {
	switch {
	case r.Dropped == 0:
		return "allow"
	case r.Dropped >= r.Packets:
		return "drop"
	}
	return "partial"
}

// Duration is End - Start.
func (r *Record) Duration() time.Duration { return r.End.Sub(r.Start) }

// Merge adds o (a later record of the same flow) to r.
func (r *Record) Merge(o *Record) {
	r.Bytes += o.Bytes
	r.Packets += o.Packets
	r.Dropped += o.Dropped
	if o.Reason != datapath.DropNone {
		r.Reason = o.Reason
	}
	if r.Start.IsZero() || !o.Start.IsZero() && o.Start.Before(r.Start) {
		r.Start = o.Start
	}
	if o.End.After(r.End) {
		r.End = o.End
	}
}

// Top returns the n records with the most bytes (all if n <= 0), most
// first; ties go to the earlier start. rs is reordered.
func Top(rs []Record, n int) []Record {
	slices.SortFunc(rs, func(a, b Record) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), a.Start.Compare(b.Start), cmp.Compare(a.Src.String(), b.Src.String()))
	})
	if n > 0 && len(rs) > n {
		rs = rs[:n]
	}
	return rs
}

// Tracker follows the sampled flows of one data plane between snapshots.
// The zero value is ready; it is not safe for concurrent use.
type Tracker struct {
	seen map[datapath.FlowKey]*tracked
}

type tracked struct {
	packets, bytes, dropped uint64
	start                   time.Time
}

// Update takes the next snapshot and returns a record for every flow that
// moved since the previous one. A flow seen for the first time starts at
// its first packet if the data plane knows it, else at the previous
// snapshot's time at the latest. Flows the data plane no longer holds are
// forgotten: their last record was their final one.
func (t *Tracker) Update(tr *datapath.Traffic) []Record {
	if t.seen == nil {
		t.seen = map[datapath.FlowKey]*tracked{}
	}
	next := make(map[datapath.FlowKey]*tracked, len(tr.Flows))
	var out []Record
	for i := range tr.Flows {
		f := &tr.Flows[i]
		prev := t.seen[f.FlowKey]
		if prev != nil && (f.Packets < prev.packets || f.Bytes < prev.bytes) {
			prev = nil // the data plane forgot it and counts anew
		}
		cur := &tracked{packets: f.Packets, bytes: f.Bytes, dropped: f.Dropped}
		r := Record{FlowKey: f.FlowKey, Packets: f.Packets, Bytes: f.Bytes, Dropped: f.Dropped, Reason: f.Reason, End: f.Last}
		if prev != nil {
			cur.start = prev.start
			r.Packets -= prev.packets
			r.Bytes -= prev.bytes
			r.Dropped -= min(prev.dropped, f.Dropped)
		} else {
			cur.start = f.Last
		}
		if r.End.IsZero() {
			r.End = tr.At
		}
		r.Start = cur.start
		if r.Start.IsZero() {
			r.Start = r.End
		}
		next[f.FlowKey] = cur
		if r.Packets > 0 || r.Bytes > 0 {
			if r.Dropped == 0 {
				r.Reason = datapath.DropNone
			}
			out = append(out, r)
		}
	}
	t.seen = next
	return out
}
