package sim

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/datapath"
)

// ErrUnknownEndpoint is returned by Resolve for a source that is not a local
// endpoint.
var ErrUnknownEndpoint = errors.New("sim: unknown endpoint")

// Verdict is what the simulated data plane does with a packet.
type Verdict uint8

// Verdicts, in the order the data plane checks them.
const (
	// VerdictDrop: no route (the destination is outside every subnet of the VPC).
	VerdictDrop Verdict = iota
	// VerdictLocal: delivered to a local endpoint of the same VPC.
	VerdictLocal
	// VerdictGateway: addressed to the VPC's distributed gateway on this host.
	VerdictGateway
	// VerdictRemote: encapsulated to the host that holds the destination.
	VerdictRemote
	// VerdictMiss: the location is unknown; a Miss was emitted and the packet
	// is held (the real driver holds it until Learn or a 1 s timeout).
	VerdictMiss
	// VerdictDenied: dropped by policy (Send, Deliver).
	VerdictDenied
)

func (v Verdict) String() string {
	switch v {
	case VerdictDrop:
		return "drop"
	case VerdictLocal:
		return "local"
	case VerdictGateway:
		return "gateway"
	case VerdictRemote:
		return "remote"
	case VerdictMiss:
		return "miss"
	case VerdictDenied:
		return "denied"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Decision is the fate of one packet.
type Decision struct {
	Verdict Verdict
	VNI     uint32
	// Endpoint is the destination endpoint's ID (VerdictLocal).
	Endpoint string
	// Host is the destination host's underlay address (VerdictRemote).
	Host netip.Addr
	// Identity is the destination's security identity (VerdictLocal, VerdictRemote).
	Identity uint32
	// Reason explains a drop.
	Reason string
}

// Resolve decides the fate of a packet sent by local endpoint src to dst,
// the way the linux driver's VPC router does: local endpoints and the
// gateway first, then learned remotes, then a miss for an address inside one
// of the VPC's subnets, else a drop. Only the source's VPC is consulted, so
// VPCs are isolated even when their addresses overlap.
func (d *Driver) Resolve(src string, dst netip.Addr) (Decision, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return Decision{}, datapath.ErrClosed
	}
	e := d.endpoint(src)
	if e == nil {
		d.mu.Unlock()
		return Decision{}, fmt.Errorf("resolve from %q: %w", src, ErrUnknownEndpoint)
	}
	dec := d.lookup(e.VNI, dst)
	var onMiss func(datapath.Miss)
	m := datapath.Miss{VNI: e.VNI, IP: dst}
	if dec.Verdict == VerdictMiss {
		onMiss = d.queueMiss(m)
	}
	d.mu.Unlock()
	if onMiss != nil {
		onMiss(m)
	}
	return dec, nil
}

// lookup is Resolve's decision in VPC vni, without the miss. The caller
// holds mu.
func (d *Driver) lookup(vni uint32, dst netip.Addr) Decision {
	k := datapath.RemoteKey{VNI: vni, IP: dst}
	if to := d.endpointAt(k); to != nil {
		return Decision{Verdict: VerdictLocal, VNI: vni, Endpoint: to.ID, Identity: to.Identity}
	}
	inside := false
	if v := d.vpc(vni); v != nil {
		for _, s := range v.Subnets {
			if s.Gateway == dst {
				return Decision{Verdict: VerdictGateway, VNI: vni}
			}
			inside = inside || s.CIDR.Contains(dst)
		}
	}
	if r := d.remotes[k]; r != nil {
		return Decision{Verdict: VerdictRemote, VNI: vni, Host: r.HostUnderlay, Identity: r.Identity}
	}
	if !inside {
		return Decision{Verdict: VerdictDrop, VNI: vni, Reason: "no route"}
	}
	return Decision{Verdict: VerdictMiss, VNI: vni}
}

// queueMiss sends a miss on the Misses channel (dropped and counted when
// it is full or was never asked for), or returns Config.OnMiss for the
// caller to call once it has released mu. The caller holds mu, so Close
// cannot close the channel under it.
func (d *Driver) queueMiss(m datapath.Miss) func(datapath.Miss) {
	switch {
	case d.onMiss != nil:
		return d.onMiss
	case d.misses == nil:
		d.missDrops.Add(1)
		return nil
	}
	select {
	case d.misses <- m:
	default:
		d.missDrops.Add(1)
	}
	return nil
}
