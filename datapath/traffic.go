package datapath

import (
	"context"
	"net/netip"
	"time"
)

// TrafficReader is implemented by drivers that count their traffic: per
// local endpoint and per VPC, and a 1-in-N sample of flows with the
// kernel's (or the simulation's) own counts. Every counter is cumulative
// since the object was programmed; a counter that goes back means the
// object was made anew (an agent computes rates from differences).
type TrafficReader interface {
	Traffic(ctx context.Context) (*Traffic, error)
}

// NumDropReasons bounds the DropReason values (the length of a drop
// counter array).
const NumDropReasons = 8

// Traffic is a snapshot of a host's counters.
type Traffic struct {
	// At is when the counters were read.
	At        time.Time
	Endpoints []EndpointTraffic
	VPCs      []VPCTraffic
	// Flows are the sampled flows the data plane holds now: 1 in
	// Sampling flows, chosen by a hash of the 5-tuple (so every packet of
	// a sampled flow is counted, in both hosts it crosses). A flow idle
	// for FlowIdleTimeout is forgotten by the data plane.
	Flows []FlowSample
	// Sampling is N of 1-in-N; 0 means flows are not sampled.
	Sampling uint32
}

// FlowIdleTimeout is how long a data plane keeps an idle sampled flow.
const FlowIdleTimeout = 30 * time.Second

// EndpointTraffic counts what one local endpoint sent and received.
type EndpointTraffic struct {
	ID  string
	VNI uint32
	// Sent counts what the endpoint sent, whether delivered or dropped;
	// Received what was delivered to it. A packet is what the data plane
	// handles as one (a GSO super-packet counts once, with all its bytes).
	SentPackets, SentBytes         uint64
	ReceivedPackets, ReceivedBytes uint64
	// ConnsOut and ConnsIn count TCP connections the endpoint opened and
	// was asked to accept (SYNs without ACK), allowed or not.
	ConnsOut, ConnsIn uint64
	// Drops counts packets from or to the endpoint dropped, by reason.
	Drops [NumDropReasons]uint64
}

// VPCTraffic counts the drops of a VPC's router on this host that belong
// to no one endpoint (no route, MTU, QoS of the VPC's aggregate).
type VPCTraffic struct {
	VNI   uint32
	Drops [NumDropReasons]uint64
}

// FlowKey is a flow's 5-tuple within its VPC. For ICMP, SrcPort is 0 and
// DstPort is type<<8|code (as NetFlow and IPFIX put them).
type FlowKey struct {
	VNI              uint32
	Src, Dst         netip.Addr
	Proto            Protocol
	SrcPort, DstPort uint16
}

// FlowSample is a sampled flow with its counts so far.
type FlowSample struct {
	FlowKey
	Packets, Bytes uint64
	// Dropped counts its packets the data plane dropped (DropReason
	// Reason), included in Packets.
	Dropped uint64
	Reason  DropReason
	// Last is when its last packet was seen (as precisely as the data
	// plane tells).
	Last time.Time
}
