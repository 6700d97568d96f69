package stream

import "github.com/weftnet/weft/wire"

// Frame size estimates. A frame's body is the JSON of a wire.Delta; these
// bound the bytes each part adds, so that a split frame stays under the
// limit without encoding it twice.
const (
	// frameOverhead covers the frame header, the versions, flags and
	// the view hash.
	frameOverhead = 256
	// entryOverhead covers `{"key":{"type":"","id":""},"data":},` and the
	// like around each resource or deleted key.
	entryOverhead = 48
)

// split cuts d into deltas whose frames fit maxFrame: the same versions,
// Snapshot and CompactData flags, More set on all but the last, which
// carries the view hash. A delta with no resources (an empty snapshot) is
// one frame. A single resource too large for a
// frame goes alone, and its write fails with wire.ErrTooLarge.
func split(d wire.Delta, maxFrame int) []wire.Delta {
	budget := maxFrame - frameOverhead
	part := func() wire.Delta {
		return wire.Delta{FromVersion: d.FromVersion, ToVersion: d.ToVersion, Snapshot: d.Snapshot, More: true, CompactData: d.CompactData}
	}
	var out []wire.Delta
	cur, size := part(), 0
	flush := func(next int) {
		if size > 0 && size+next > budget {
			out = append(out, cur)
			cur, size = part(), 0
		}
		size += next
	}
	for _, r := range d.Upserts {
		flush(len(r.Data) + len(r.Tail) + len(r.Key.Type) + len(r.Key.ID) + entryOverhead)
		cur.Upserts = append(cur.Upserts, r)
	}
	for _, k := range d.Deletes {
		flush(len(k.Type) + len(k.ID) + entryOverhead)
		cur.Deletes = append(cur.Deletes, k)
	}
	cur.More, cur.ViewHash = false, d.ViewHash
	return append(out, cur)
}
