package datapath

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/net/bpf"
)

// Observer is implemented by drivers that trace and capture packets: the
// linux driver with the kernel's own observations, the sim driver from its
// model. Like Set, Observe is level-based: the agent hands it every trace
// and capture its host takes part in, and the driver sets up what is new,
// tears down what is gone and leaves the rest running. With none, a
// driver keeps nothing of them in the data plane.
type Observer interface {
	// Observe converges the host's traces and captures. One that cannot
	// be set up fails alone (the error names it); the others run.
	Observe(ctx context.Context, traces []Trace, captures []Capture) error
	// TraceHops delivers what the data plane saw of traced packets. It is
	// closed by Close; a hop is dropped rather than block the data plane.
	TraceHops() <-chan TraceHop
	// Captured delivers captured packets, under each capture's budget.
	// It is closed by Close; a packet nobody reads is dropped and counted
	// in the capture's Lost.
	Captured() <-chan CapturedPacket
}

// ObserveError is the failure of one trace or capture in an Observe whose
// others are set up.
type ObserveError struct {
	ID  string
	Err error
}

func (e *ObserveError) Error() string { return e.ID + ": " + e.Err.Error() }

func (e *ObserveError) Unwrap() error { return e.Err }

// TraceMode says how a trace gets its packets.
type TraceMode uint8

// Trace modes.
const (
	// TraceProbe injects one packet at the source endpoint's interface and
	// consumes it at the last hop (it never reaches an application).
	TraceProbe TraceMode = iota
	// TraceLive tags the next Count packets of the 5-tuple the source
	// endpoint sends, until Until.
	TraceLive
)

// Trace is one trace this host takes part in: as the source (the packet
// leaves a local endpoint), as the destination (it arrives at one), or
// both.
type Trace struct {
	// ID names the trace ("tenant/name").
	ID   string
	Mode TraceMode
	// Fire releases an armed trace: the source injects its probe (once) or
	// starts tagging. Until then every role only sets up its observation.
	Fire bool
	VNI  uint32
	// Token marks the trace's packets: a probe's IP identification (and
	// ICMP echo identifier), never 0.
	Token uint16
	Proto Protocol
	// Src and Dst are the packet's addresses; SPort and DPort its ports
	// (TCP, UDP; a live trace's 0 matches any).
	Src, Dst     netip.Addr
	SPort, DPort uint16
	// Source and Dest are the local endpoints (IDs) the packet leaves and
	// reaches; "" when that end is not on this host.
	Source, Dest string
	// SourceIdentity is the source endpoint's security identity.
	SourceIdentity uint32
	// Count bounds the packets a live trace tags; Until ends it.
	Count int
	Until time.Time
}

// Equal reports whether t and o are the same trace in the same state.
func (t Trace) Equal(o Trace) bool { return t == o }

// Hop points, in path order (the same names as the API's TraceHop.Point).
const (
	HopSourceVeth   = "source-veth"
	HopVPCRouter    = "vpc-router"
	HopPolicy       = "policy"
	HopRoute        = "route"
	HopEncap        = "encap"
	HopUnderlay     = "underlay"
	HopDecap        = "decap"
	HopRemotePolicy = "remote-policy"
	HopDeliver      = "deliver"
	HopDrop         = "drop"
)

// TraceHop is one observation of a traced packet.
type TraceHop struct {
	Trace string
	// Packet numbers a live trace's packets, from 0, in the order they
	// were seen here.
	Packet int
	Point  string
	// Verdict: forward, allow, delivered, dropped.
	Verdict string
	// Reason is set for a drop.
	Reason DropReason
	// Rule is the policy rule that allowed the packet, or what denied it.
	Rule   string
	Detail string
	Attrs  map[string]string
	Time   time.Time
	// Final says the packet's path ends here: delivered or dropped.
	Final bool
	// Endpoint is the local endpoint the hop concerns (a policy hop's).
	Endpoint string
}

// Direction of captured packets, seen from the endpoint.
type Direction uint8

// Directions.
const (
	DirBoth Direction = iota
	DirIn             // sent to the endpoint
	DirOut            // sent by the endpoint
)

// Capture is one capture on this host: the interfaces of its local
// endpoints, and with Underlay the host's underlay interface for VNIs.
type Capture struct {
	// ID names the capture ("tenant/name").
	ID string
	// Endpoints are the local endpoints captured (IDs), sorted.
	Endpoints []string
	// Program is the filter, classic BPF over an Ethernet frame; nil
	// takes every packet. Drivers check it (bpf.Disassemble) before use.
	Program []bpf.RawInstruction
	// Underlay maps a VNI to the program selecting its encapsulated
	// packets on the underlay interface; empty captures no underlay.
	Underlay    map[uint32][]bpf.RawInstruction
	Direction   Direction
	DroppedOnly bool
	// Snaplen bounds the bytes kept of a packet.
	Snaplen int
	// Rate is the budget in packets per second; Count bounds the packets
	// delivered in all (0: no bound).
	Rate  int
	Count int
}

// Equal reports whether c and o are the same capture.
func (c *Capture) Equal(o *Capture) bool {
	return c.ID == o.ID && slices.Equal(c.Endpoints, o.Endpoints) && slices.Equal(c.Program, o.Program) &&
		c.Direction == o.Direction && c.DroppedOnly == o.DroppedOnly && c.Snaplen == o.Snaplen &&
		c.Rate == o.Rate && c.Count == o.Count && equalPrograms(c.Underlay, o.Underlay)
}

func equalPrograms(a, b map[uint32][]bpf.RawInstruction) bool {
	if len(a) != len(b) {
		return false
	}
	for k, p := range a {
		if q, ok := b[k]; !ok || !slices.Equal(p, q) {
			return false
		}
	}
	return true
}

// CapturedPacket is one packet a capture recorded.
type CapturedPacket struct {
	Capture string
	// Endpoint is the endpoint whose interface saw it ("" on the underlay).
	Endpoint string
	// Interface is the interface it was captured on.
	Interface string
	// Out says the endpoint sent it (on the underlay: the host sent it).
	Out  bool
	Time time.Time
	// Length is the packet's length on the wire; Data holds at most
	// Snaplen bytes of it, from the Ethernet header.
	Length int
	Data   []byte
	// Drop is why the data plane dropped it (dropped-only captures).
	Drop DropReason
	// Lost counts the capture's packets not delivered before this one
	// (over budget, or not read in time).
	Lost uint64
}

// Decide reports whether p lets its endpoint send (ingress false) or
// accept f, and the name of the first rule that allows it ("" when the
// direction is not isolated or nothing allows it).
func (p *EndpointPolicy) Decide(f Flow, ingress bool) (allowed bool, rule string) {
	if p == nil {
		return true, ""
	}
	isolated, rules := p.EgressIsolated, p.Egress
	if ingress {
		isolated, rules = p.IngressIsolated, p.Ingress
	}
	if !isolated {
		return true, ""
	}
	for _, r := range rules {
		if r.matches(f, ingress) {
			return true, r.Name
		}
	}
	return false, ""
}
