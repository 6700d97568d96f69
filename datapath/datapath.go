package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Driver programs one host's data plane. Every method is safe for
// concurrent use.
type Driver interface {
	// Set converges the data plane to the whole desired state; calling it
	// twice with the same state is a no-op (no writes to the data plane).
	// Remotes learned with Learn survive a Set as long as their VPC is still
	// desired. An error names every object that could not be converged; the
	// rest is programmed, so the caller retries the same state later. A VPC
	// that cannot be programmed as a whole (Desired.Invalid, a capability
	// the driver lacks, rules the kernel refuses) fails alone: Set's error
	// wraps a *VPCError for it, the VPC keeps what was programmed before,
	// and every other VPC is programmed.
	Set(ctx context.Context, d *Desired) error
	// Learn installs or updates the locations of remote endpoints answered by
	// the controller (the fast path, no full Set). A Remote whose Epoch is
	// lower than the installed one for the same key is ignored. Remotes of a
	// VNI the host does not carry fail with ErrUnknownVNI; the others are
	// still installed.
	Learn(ctx context.Context, rs []Remote) error
	// Forget removes learned remotes (controller invalidation, TTL expiry).
	// Unknown keys are not an error.
	Forget(ctx context.Context, keys []RemoteKey) error
	// Misses delivers "someone here wants to reach VNI/IP and we do not know
	// where it is" events. The channel is closed by Close. Events are dropped
	// rather than blocking the data plane when nobody reads.
	Misses() <-chan Miss
	// Status reports how a local endpoint of the last Set is attached; ok is
	// false for an endpoint that is not (yet) programmed.
	Status(id string) (st EndpointStatus, ok bool)
	// Close stops the driver's goroutines and releases its handles. It leaves
	// the data plane in place, so forwarding continues while no agent runs
	// (headless). Close is idempotent; other methods return ErrClosed after it.
	Close() error
}

// Counter is implemented by drivers that count their writes to the data
// plane. Every driver in this repository implements it; the conformance suite
// uses it to prove that Set is idempotent.
type Counter interface {
	// Counts returns a snapshot of the writes made since the driver was created.
	Counts() Counts
}

// Snapshotter is implemented by drivers that can read back what is
// programmed. The linux driver reads the kernel, not its own memory.
type Snapshotter interface {
	Snapshot(ctx context.Context) (Snapshot, error)
}

// Sentinel errors. Test with errors.Is.
var (
	// ErrInvalid marks a desired state, remote or key the driver rejects.
	ErrInvalid = errors.New("datapath: invalid")
	// ErrClosed is returned by every method but Close after Close.
	ErrClosed = errors.New("datapath: driver closed")
	// ErrUnknownVNI is returned for a remote whose VNI the host does not carry.
	ErrUnknownVNI = errors.New("datapath: unknown VNI")
)

// VXLANOverhead is what VXLAN over IPv4 adds to a frame: outer IPv4 (20),
// UDP (8), VXLAN (8) and the inner Ethernet header (14).
const VXLANOverhead = 50

// DefaultIfName is the name of an endpoint's interface inside its namespace
// when Endpoint.IfName is empty.
const DefaultIfName = "eth0"

// Desired is the whole state one host's data plane must have.
type Desired struct {
	Host      HostConfig
	VPCs      []VPC
	Endpoints []Endpoint
	// Invalid is filled by Normalize (its input is ignored): the VPCs, by
	// VNI, whose part of the state is invalid, each error wrapping
	// ErrInvalid. A driver leaves such a VPC as it was programmed and fails
	// it alone (see Driver.Set); nil when every VPC is valid.
	Invalid map[uint32]error
}

// VPCError is the failure of one VPC in a Set whose other VPCs were
// programmed. The VPC keeps the state programmed before (an endpoint new
// in it is not attached), so it stays enforced as it was.
type VPCError struct {
	VNI uint32
	Err error
}

func (e *VPCError) Error() string { return fmt.Sprintf("vpc %d: %v", e.VNI, e.Err) }

func (e *VPCError) Unwrap() error { return e.Err }

// HostConfig describes the host the driver runs on.
type HostConfig struct {
	// Name is the host's name; drivers mark what they create with it.
	Name string
	// UnderlayIP is the address VXLAN traffic is sent from and to.
	UnderlayIP netip.Addr
	// UnderlayDev is the interface that holds UnderlayIP.
	UnderlayDev string
	// MTU is the underlay MTU; 0 means the MTU of UnderlayDev (linux) or
	// 1500 (sim). Overlay interfaces get MTU-VXLANOverhead.
	MTU int
	// CapacityBps is the underlay uplink's bandwidth in bit/s; guaranteed
	// minimum rates (QoS.MinRateBps, VPCQoS.MinRateBps) are shares of it.
	// 0 means unknown: no minimum is guaranteed and the uplink is not
	// shaped.
	CapacityBps uint64
}

// VPC is a tenant network carried by one VNI.
type VPC struct {
	Tenant  string
	Name    string
	VNI     uint32
	Subnets []Subnet
	// QoS is the VPC's aggregate on this host (nil: none).
	QoS *VPCQoS
}

// Subnet is an address range of a VPC with its (distributed) gateway.
type Subnet struct {
	Name string
	CIDR netip.Prefix
	// Gateway defaults to the first address after CIDR's network address.
	Gateway netip.Addr
}

// Endpoint is one local VM or container interface.
type Endpoint struct {
	// ID is "tenant/name"; it is unique on the host and stable over the
	// endpoint's life.
	ID string
	// VNI is the VNI of the endpoint's VPC, which must be in Desired.VPCs.
	VNI uint32
	// Subnet is the name of a Subnet of that VPC.
	Subnet string
	IP     netip.Addr
	MAC    net.HardwareAddr
	// Gateway and Prefix default to the subnet's gateway and CIDR and must
	// equal them when set. The endpoint's address is IP/Prefix.Bits().
	Gateway netip.Addr
	Prefix  netip.Prefix
	// Netns is the path of an existing network namespace to attach to (e.g.
	// /var/run/netns/x or /proc/PID/ns/net); "" means the driver creates one
	// and reports its path in EndpointStatus.
	Netns string
	// IfName is the interface name inside the namespace; "" means DefaultIfName.
	IfName string
	// Identity is the endpoint's security identity (for label-based
	// policy), 0..MaxIdentity; the driver stamps it on the endpoint's
	// packets.
	Identity uint32
	// Policy is the endpoint's security policy (nil: allow everything).
	Policy *EndpointPolicy
	// QoS is the endpoint's quality of service (nil: best effort).
	QoS *QoS
}

// EndpointStatus says how a local endpoint is attached.
type EndpointStatus struct {
	// Netns is a path usable with `nsenter --net=PATH`.
	Netns string
	// IfName is the endpoint's interface inside Netns.
	IfName string
	// HostIfName is the host side of the attachment (the linux driver: a veth
	// in the VPC's router namespace).
	HostIfName string
	// PolicyErr and QoSErr say why the endpoint's policy or QoS of the
	// last Set is not programmed; both are empty once the data plane
	// enforces them (or when the endpoint has none).
	PolicyErr, QoSErr string
	// Waiting, if not empty, says why the endpoint is not attached yet:
	// its Netns names no network namespace (yet). A driver that reports
	// it attaches the endpoint by the first Set after the namespace
	// appears, and does not fail a Set for it.
	Waiting string
}

// Remote is the location of an endpoint on another host, as answered by the
// controller.
type Remote struct {
	VNI uint32
	IP  netip.Addr
	// MAC is the endpoint's own MAC. The linux driver routes to the remote
	// host's VTEP MAC and does not need it; it is kept for drivers that bridge.
	MAC net.HardwareAddr
	// HostUnderlay is the underlay address of the host the endpoint lives on.
	HostUnderlay netip.Addr
	// Identity is the remote endpoint's security identity.
	Identity uint32
	// Epoch orders answers for the same key: a migration bumps it, so a late
	// answer with a lower epoch cannot undo a newer one.
	Epoch uint64
}

// Key returns the remote's key.
func (r Remote) Key() RemoteKey { return RemoteKey{VNI: r.VNI, IP: r.IP} }

// RemoteKey names a learned remote.
type RemoteKey struct {
	VNI uint32
	IP  netip.Addr
}

// Miss reports that a local sender wants to reach IP in VNI and the driver
// does not know where it is. The agent answers with Learn.
type Miss struct {
	VNI uint32
	IP  netip.Addr
}
