package view

// Resource types of the observability kinds: a trace or capture that
// concerns the host. They carry what the host's data plane needs and
// nothing it must work out again: a trace's resolved addresses and token,
// a capture's compiled filter.
const (
	TypeTrace   = "trace"
	TypeCapture = "capture"
)

// Trace is a trace the host takes part in (apiv1.Trace); ID
// "tenant/name". A host is the source when the packet leaves one of its
// endpoints, the destination when it arrives at one, or both.
type Trace struct {
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	// UID is the trace's metadata.uid, which the host's reports carry.
	UID string `json:"uid"`
	// Mode is "probe" or "live".
	Mode string `json:"mode"`
	// Fire releases the trace once every host is armed.
	Fire  bool   `json:"fire,omitempty"`
	VNI   uint32 `json:"vni"`
	Token uint16 `json:"token"`
	// Proto is the IP protocol number (1, 6, 17).
	Proto uint8  `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	SPort uint16 `json:"sport,omitempty"`
	DPort uint16 `json:"dport,omitempty"`
	// Source and Dest name the local endpoints at either end ("" when
	// that end is elsewhere).
	Source         string `json:"source,omitempty"`
	Dest           string `json:"dest,omitempty"`
	SourceIdentity uint32 `json:"sourceIdentity,omitempty"`
	// Count and Until bound a live trace (Until in RFC 3339).
	Count int    `json:"count,omitempty"`
	Until string `json:"until,omitempty"`
}

// Capture is a capture of local endpoints (apiv1.Capture); ID
// "tenant/name".
type Capture struct {
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	// UID is the capture's metadata.uid, which the host's upload carries.
	UID string `json:"uid"`
	// Endpoints are the local endpoints it selects (names), sorted.
	Endpoints []string `json:"endpoints"`
	// Program is the compiled filter ([code, jt, jf, k] per instruction);
	// empty takes every packet.
	Program [][4]uint32 `json:"program,omitempty"`
	// Underlay selects the encapsulated packets of the endpoints' VNIs on
	// the underlay interface, one program per VNI.
	Underlay    []UnderlayProgram `json:"underlay,omitempty"`
	Direction   string            `json:"direction"`
	DroppedOnly bool              `json:"droppedOnly,omitempty"`
	Snaplen     int               `json:"snaplen"`
	// Rate is the host's budget in packets per second, Count the most
	// packets the host sends.
	Rate  int `json:"rate"`
	Count int `json:"count"`
	// Collector is the API address the packets go to; Until ends the
	// capture (RFC 3339).
	Collector string `json:"collector,omitempty"`
	Until     string `json:"until"`
}

// UnderlayProgram selects one VNI's packets on the underlay.
type UnderlayProgram struct {
	VNI     uint32      `json:"vni"`
	Program [][4]uint32 `json:"program"`
}
