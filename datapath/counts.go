package datapath

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Counts maps "kind/verb" (e.g. "route/add", "neigh/del", "endpoint/update")
// to how many such writes a driver made. Kinds and verbs are the driver's
// own; zero entries are omitted.
type Counts map[string]uint64

// Total is the sum of all counts.
func (c Counts) Total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// Sub returns c minus before, without zero entries: the writes made between
// two snapshots.
func (c Counts) Sub(before Counts) Counts {
	out := Counts{}
	for k, v := range c {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// Verb sums the counts of every kind for one verb ("add", "del", ...).
func (c Counts) Verb(verb string) uint64 {
	var n uint64
	for k, v := range c {
		if strings.HasSuffix(k, "/"+verb) {
			n += v
		}
	}
	return n
}

// String prints the counts sorted by key, e.g. "link/add=2 route/add=3".
func (c Counts) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, c[k])
	}
	return b.String()
}

// Snapshot is what a driver has programmed, read back from its data plane,
// in canonical order (VPCs by VNI, endpoints by ID, remotes by VNI then IP).
// It carries only what every driver can read back.
type Snapshot struct {
	VPCs      []SnapshotVPC
	Endpoints []SnapshotEndpoint
	Remotes   []SnapshotRemote
}

// SnapshotVPC is a programmed VPC.
type SnapshotVPC struct {
	VNI      uint32
	CIDRs    []netip.Prefix // sorted
	Gateways []netip.Addr   // sorted
	// QoS is the aggregate enforced on this host (VPCQoS.Enforced).
	QoS *VPCQoS
}

// SnapshotEndpoint is a programmed local endpoint.
type SnapshotEndpoint struct {
	ID  string
	VNI uint32
	IP  netip.Addr
	MAC string
	// QoS is what is enforced of the endpoint's QoS (QoS.Enforced).
	QoS *QoS
}

// SnapshotRemote is a programmed remote location.
type SnapshotRemote struct {
	VNI  uint32
	IP   netip.Addr
	Host netip.Addr
}

// Sort puts s in canonical order.
func (s *Snapshot) Sort() {
	for i := range s.VPCs {
		slices.SortFunc(s.VPCs[i].CIDRs, ComparePrefix)
		slices.SortFunc(s.VPCs[i].Gateways, netip.Addr.Compare)
	}
	slices.SortFunc(s.VPCs, func(a, b SnapshotVPC) int { return cmp.Compare(a.VNI, b.VNI) })
	slices.SortFunc(s.Endpoints, func(a, b SnapshotEndpoint) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(s.Remotes, func(a, b SnapshotRemote) int {
		if c := cmp.Compare(a.VNI, b.VNI); c != 0 {
			return c
		}
		return a.IP.Compare(b.IP)
	})
}

// ComparePrefix orders prefixes by address, then length.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
