package sim

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/weftnet/weft/datapath"
)

// Config configures a simulated driver. The zero value is usable.
type Config struct {
	// OnMiss, if set, receives every miss synchronously from Resolve instead
	// of the Misses channel. A harness hosting many drivers uses it to avoid a
	// goroutine per driver. It is called without the driver's lock held, so
	// it may call back into the driver. NotifyMisses replaces it.
	OnMiss func(datapath.Miss)
	// MissBuffer is the capacity of the Misses channel (default 16). The
	// channel is allocated on the first call to Misses.
	MissBuffer int
	// Normalized promises that every Desired given to Set is one that
	// Desired.Normalize returned (validated and in normal form, as an
	// agent's translation is) and that the caller never modifies it
	// afterwards. Set then keeps it as the programmed state instead of
	// validating and copying it again: a simulator of many hosts saves a
	// copy of every host's state and half the work of each Set. A Desired
	// that is visibly not normal (unsorted) is still normalized.
	Normalized bool
	// FlowSampling samples 1 in FlowSampling flows of what Send and
	// Deliver see (Traffic); 0 samples none.
	FlowSampling uint32
	// Underlay, if set, joins the driver to the other drivers of this
	// process on it, by underlay address: a traced probe it encapsulates
	// to a remote host arrives at that host's driver (observe.go). Nil: a
	// probe leaves the host and reaches nobody.
	Underlay *Underlay
}

// Driver is an in-memory datapath.Driver. It starts no goroutines.
type Driver struct {
	normalized bool
	missBuf    int
	missDrops  atomic.Uint64

	mu     sync.Mutex
	onMiss func(datapath.Miss)
	closed bool
	misses chan datapath.Miss
	host   datapath.HostConfig
	// The programmed state: what the last Set normalized, in exactly
	// sized slices (a simulator holds a driver per host, most with a
	// handful of endpoints, where maps would cost several times as much).
	vpcs []datapath.VPC      // sorted by VNI
	eps  []datapath.Endpoint // sorted by ID
	// byIP indexes eps by VNI and IP; built by the first Resolve after a
	// Set (nil: not built).
	byIP    map[datapath.RemoteKey]int
	remotes map[datapath.RemoteKey]*datapath.Remote
	// conns is the connection state (conntrack) of every VPC on the host,
	// made by Send and Deliver (nil: none yet).
	conns map[connKey]*conn
	// failed says why each VPC left as it was by the last Set failed (nil:
	// none).
	failed map[uint32]error
	counts [numKinds][numVerbs]uint64
	// traffic counts the packets of Send and Deliver (nil: none yet);
	// sampling is Config.FlowSampling.
	traffic  *traffic
	sampling uint32
	// obs is the state of traces and captures (nil: none ever asked
	// for); underlay is Config.Underlay.
	obs      *observer
	underlay *Underlay
}

type kind uint8

const (
	kindHost kind = iota
	kindVPC
	kindSubnet
	kindEndpoint
	kindRemote
	kindQoS  // an endpoint's or a VPC's QoS
	kindConn // a connection's state (flushed when a policy stops allowing it)
	numKinds
)

var kindNames = [numKinds]string{"host", "vpc", "subnet", "endpoint", "remote", "qos", "conn"}

type verb uint8

const (
	verbAdd verb = iota
	verbUpdate
	verbDel
	numVerbs
)

var verbNames = [numVerbs]string{"add", "update", "del"}

var (
	_ datapath.Driver      = (*Driver)(nil)
	_ datapath.Counter     = (*Driver)(nil)
	_ datapath.Snapshotter = (*Driver)(nil)
	_ datapath.Observer    = (*Driver)(nil)
)

// New returns an empty simulated driver.
func New(cfg Config) *Driver {
	if cfg.MissBuffer <= 0 {
		cfg.MissBuffer = 16
	}
	return &Driver{onMiss: cfg.OnMiss, missBuf: cfg.MissBuffer, normalized: cfg.Normalized, sampling: cfg.FlowSampling,
		underlay: cfg.Underlay}
}

func (d *Driver) count(k kind, v verb) { d.counts[k][v]++ }

// Set implements datapath.Driver.
func (d *Driver) Set(ctx context.Context, desired *datapath.Desired) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim set: %w", err)
	}
	d.mu.Lock()
	if !d.closed && d.programmed(desired) {
		// The state programmed, already validated and in normal form: a
		// no-op (an agent's periodic re-Set), at no allocation.
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	n := desired
	if !d.normalized || !sorted(desired) {
		var err error
		if n, err = desired.Normalize(); err != nil {
			return fmt.Errorf("sim set: %w", err)
		}
		// Kept until the next Set: exactly sized.
		n.VPCs, n.Endpoints = slices.Clone(n.VPCs), slices.Clone(n.Endpoints)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	var failed error
	d.failed = nil
	if len(n.Invalid) > 0 {
		n, failed = d.keepInvalid(n)
	}
	if d.host != n.Host {
		if d.host == (datapath.HostConfig{}) {
			d.count(kindHost, verbAdd)
		} else {
			d.count(kindHost, verbUpdate)
		}
		if u := d.underlay; u != nil && d.host.UnderlayIP != n.Host.UnderlayIP {
			u.detach(d.host.UnderlayIP, d)
			u.attach(n.Host.UnderlayIP, d)
		}
		d.host = n.Host
	}

	// VPCs and their subnets: both lists are sorted by VNI.
	old := d.vpcs
	for i, j := 0, 0; i < len(old) || j < len(n.VPCs); {
		switch {
		case j == len(n.VPCs) || i < len(old) && old[i].VNI < n.VPCs[j].VNI:
			for range old[i].Subnets {
				d.count(kindSubnet, verbDel)
			}
			d.countQoS(old[i].QoS != nil, false, false)
			d.count(kindVPC, verbDel)
			d.dropRemotes(old[i].VNI)
			i++
		case i == len(old) || n.VPCs[j].VNI < old[i].VNI:
			d.count(kindVPC, verbAdd)
			for range n.VPCs[j].Subnets {
				d.count(kindSubnet, verbAdd)
			}
			d.countQoS(false, n.VPCs[j].QoS != nil, false)
			j++
		default:
			if old[i].Tenant != n.VPCs[j].Tenant || old[i].Name != n.VPCs[j].Name {
				d.count(kindVPC, verbUpdate)
			}
			d.diffSubnets(old[i].Subnets, n.VPCs[j].Subnets)
			d.countQoS(old[i].QoS != nil, n.VPCs[j].QoS != nil, !sameVPCQoS(old[i].QoS, n.VPCs[j].QoS))
			i++
			j++
		}
	}
	d.vpcs = n.VPCs

	// Endpoints: both lists are sorted by ID.
	oldEPs := d.eps
	for i, j := 0, 0; i < len(oldEPs) || j < len(n.Endpoints); {
		switch {
		case j == len(n.Endpoints) || i < len(oldEPs) && oldEPs[i].ID < n.Endpoints[j].ID:
			d.count(kindEndpoint, verbDel)
			d.countQoS(oldEPs[i].QoS != nil, false, false)
			i++
		case i == len(oldEPs) || n.Endpoints[j].ID < oldEPs[i].ID:
			d.count(kindEndpoint, verbAdd)
			d.countQoS(false, n.Endpoints[j].QoS != nil, false)
			j++
		default:
			if !sameEndpoint(&oldEPs[i], &n.Endpoints[j]) {
				d.count(kindEndpoint, verbUpdate)
			}
			d.countQoS(oldEPs[i].QoS != nil, n.Endpoints[j].QoS != nil, !sameQoS(oldEPs[i].QoS, n.Endpoints[j].QoS))
			i++
			j++
		}
	}
	d.eps = n.Endpoints
	d.byIP = nil // endpoints may swap addresses in one Set: rebuilt when needed
	d.flushDenied()
	if failed != nil {
		return fmt.Errorf("sim set: %w", failed)
	}
	return nil
}

// sorted reports whether desired's VPCs and endpoints are in the order
// Normalize puts them in.
func sorted(desired *datapath.Desired) bool {
	return slices.IsSortedFunc(desired.VPCs, func(a, b datapath.VPC) int { return cmp.Compare(a.VNI, b.VNI) }) &&
		slices.IsSortedFunc(desired.Endpoints, func(a, b datapath.Endpoint) int { return strings.Compare(a.ID, b.ID) })
}

// programmed reports whether desired is exactly the programmed state. The
// caller holds mu.
func (d *Driver) programmed(desired *datapath.Desired) bool {
	if desired.Host != d.host || d.host == (datapath.HostConfig{}) || len(desired.Invalid) > 0 ||
		len(desired.VPCs) != len(d.vpcs) || len(desired.Endpoints) != len(d.eps) {
		return false
	}
	for i := range d.vpcs {
		a, b := &desired.VPCs[i], &d.vpcs[i]
		if a.Tenant != b.Tenant || a.Name != b.Name || a.VNI != b.VNI || !slices.Equal(a.Subnets, b.Subnets) || !sameVPCQoS(a.QoS, b.QoS) {
			return false
		}
	}
	for i := range d.eps {
		if !sameEndpoint(&desired.Endpoints[i], &d.eps[i]) || !sameQoS(desired.Endpoints[i].QoS, d.eps[i].QoS) {
			return false
		}
	}
	return true
}

// countQoS counts a QoS that was (had) and is (has) there, and changed.
func (d *Driver) countQoS(had, has, changed bool) {
	switch {
	case !had && has:
		d.count(kindQoS, verbAdd)
	case had && !has:
		d.count(kindQoS, verbDel)
	case had && changed:
		d.count(kindQoS, verbUpdate)
	}
}

func sameQoS(a, b *datapath.QoS) bool       { return a == b || a != nil && b != nil && *a == *b }
func sameVPCQoS(a, b *datapath.VPCQoS) bool { return a == b || a != nil && b != nil && *a == *b }

// dropRemotes forgets the learned remotes of a VPC no longer carried.
func (d *Driver) dropRemotes(vni uint32) {
	for k := range d.remotes {
		if k.VNI == vni {
			delete(d.remotes, k)
			d.count(kindRemote, verbDel)
		}
	}
}

// vpc returns the programmed VPC of a VNI (nil: none). The caller holds mu.
func (d *Driver) vpc(vni uint32) *datapath.VPC {
	i, ok := slices.BinarySearchFunc(d.vpcs, vni, func(v datapath.VPC, vni uint32) int { return cmp.Compare(v.VNI, vni) })
	if !ok {
		return nil
	}
	return &d.vpcs[i]
}

// endpoint returns the programmed endpoint of an ID (nil: none). The caller
// holds mu.
func (d *Driver) endpoint(id string) *datapath.Endpoint {
	i, ok := slices.BinarySearchFunc(d.eps, id, func(e datapath.Endpoint, id string) int { return strings.Compare(e.ID, id) })
	if !ok {
		return nil
	}
	return &d.eps[i]
}

// endpointAt returns the local endpoint holding an address (nil: none). The
// caller holds mu.
func (d *Driver) endpointAt(k datapath.RemoteKey) *datapath.Endpoint {
	if d.byIP == nil {
		d.byIP = make(map[datapath.RemoteKey]int, len(d.eps))
		for i := range d.eps {
			d.byIP[datapath.RemoteKey{VNI: d.eps[i].VNI, IP: d.eps[i].IP}] = i
		}
	}
	i, ok := d.byIP[k]
	if !ok {
		return nil
	}
	return &d.eps[i]
}

func (d *Driver) diffSubnets(old, cur []datapath.Subnet) {
	for _, s := range cur {
		i := slices.IndexFunc(old, func(o datapath.Subnet) bool { return o.Name == s.Name })
		switch {
		case i < 0:
			d.count(kindSubnet, verbAdd)
		case old[i] != s:
			d.count(kindSubnet, verbUpdate)
		}
	}
	for _, o := range old {
		if !slices.ContainsFunc(cur, func(s datapath.Subnet) bool { return s.Name == o.Name }) {
			d.count(kindSubnet, verbDel)
		}
	}
}

func sameEndpoint(a, b *datapath.Endpoint) bool {
	return a.ID == b.ID && a.VNI == b.VNI && a.Subnet == b.Subnet && a.IP == b.IP &&
		bytes.Equal(a.MAC, b.MAC) && a.Gateway == b.Gateway && a.Prefix == b.Prefix &&
		a.Netns == b.Netns && a.IfName == b.IfName && a.Identity == b.Identity && a.Policy.Equal(b.Policy)
}

// Learn implements datapath.Driver.
func (d *Driver) Learn(ctx context.Context, rs []datapath.Remote) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim learn: %w", err)
	}
	// Probes that waited for a learned location cross the underlay once
	// mu is released (deferred calls run last in, first out).
	var crossing []arrival
	defer func() { d.carry(crossing) }()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	var errs []error
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("sim learn: %w", err))
			continue
		}
		if d.vpc(r.VNI) == nil {
			errs = append(errs, fmt.Errorf("sim learn %d/%s: %w", r.VNI, r.IP, datapath.ErrUnknownVNI))
			continue
		}
		if r.HostUnderlay == d.host.UnderlayIP {
			continue // the endpoint is (about to be) local; Set programs it
		}
		k := r.Key()
		cur := d.remotes[k]
		switch {
		case cur == nil:
			d.count(kindRemote, verbAdd)
		case r.Epoch < cur.Epoch:
			continue // a late answer; a newer one is installed
		case cur.HostUnderlay == r.HostUnderlay && cur.Identity == r.Identity && bytes.Equal(cur.MAC, r.MAC):
			cur.Epoch = r.Epoch
			continue
		default:
			d.count(kindRemote, verbUpdate)
		}
		if d.remotes == nil {
			d.remotes = map[datapath.RemoteKey]*datapath.Remote{}
		}
		r.MAC = slices.Clone(r.MAC)
		d.remotes[k] = &r
	}
	if d.obs != nil && len(d.obs.held) > 0 {
		crossing = d.resumeHeld()
	}
	return errors.Join(errs...)
}

// Forget implements datapath.Driver.
func (d *Driver) Forget(ctx context.Context, keys []datapath.RemoteKey) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim forget: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	for _, k := range keys {
		if _, ok := d.remotes[k]; ok {
			delete(d.remotes, k)
			d.count(kindRemote, verbDel)
		}
	}
	return nil
}

// Misses implements datapath.Driver. The channel is allocated on first use;
// with Config.OnMiss set it never receives anything.
func (d *Driver) Misses() <-chan datapath.Miss {
	d.mu.Lock()
	defer d.mu.Unlock()
	return lazyChan(&d.misses, d.missBuf, d.closed)
}

// NotifyMisses makes Resolve hand every miss to f, on its caller's
// goroutine, instead of sending it on the Misses channel (f nil: the
// channel again). An agent uses it so that no goroutine of its own waits on
// the channel.
func (d *Driver) NotifyMisses(f func(datapath.Miss)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onMiss = f
}

// MissDrops is the number of misses dropped because the Misses channel was
// full or had never been asked for.
func (d *Driver) MissDrops() uint64 { return d.missDrops.Load() }

// Status implements datapath.Driver. A driver-made namespace is reported as
// "sim:/HOST/ID"; it exists only in this process.
func (d *Driver) Status(id string) (datapath.EndpointStatus, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.endpoint(id)
	if e == nil || d.closed {
		return datapath.EndpointStatus{}, false
	}
	st := datapath.EndpointStatus{Netns: e.Netns, IfName: e.IfName, HostIfName: hostIf(e.ID)}
	if st.Netns == "" {
		st.Netns = "sim:/" + d.host.Name + "/" + e.ID
	}
	if err := d.failed[e.VNI]; err != nil {
		st.PolicyErr = err.Error()
	}
	return st, true
}

// Close implements datapath.Driver.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.misses != nil {
		close(d.misses)
	}
	d.closeObserver()
	if d.underlay != nil {
		d.underlay.detach(d.host.UnderlayIP, d)
	}
	return nil
}

// Counts implements datapath.Counter. Kinds are host, vpc, subnet, endpoint,
// remote, qos (of an endpoint or a VPC) and conn; verbs add, update and
// del (conn: del only, a connection flushed because a policy no longer
// allows it).
func (d *Driver) Counts() datapath.Counts {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := datapath.Counts{}
	for k := range numKinds {
		for v := range numVerbs {
			if n := d.counts[k][v]; n != 0 {
				c[kindNames[k]+"/"+verbNames[v]] = n
			}
		}
	}
	return c
}

// Snapshot implements datapath.Snapshotter.
func (d *Driver) Snapshot(ctx context.Context) (datapath.Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s datapath.Snapshot
	local := map[uint32]bool{}
	for _, e := range d.eps {
		local[e.VNI] = true
	}
	for _, v := range d.vpcs {
		sv := datapath.SnapshotVPC{VNI: v.VNI, QoS: v.QoS.Enforced(d.host.CapacityBps, local[v.VNI])}
		for _, sn := range v.Subnets {
			sv.CIDRs = append(sv.CIDRs, sn.CIDR)
			sv.Gateways = append(sv.Gateways, sn.Gateway)
		}
		s.VPCs = append(s.VPCs, sv)
	}
	for _, e := range d.eps {
		s.Endpoints = append(s.Endpoints, datapath.SnapshotEndpoint{ID: e.ID, VNI: e.VNI, IP: e.IP, MAC: e.MAC.String(),
			QoS: e.QoS.Enforced(d.host.CapacityBps)})
	}
	for _, r := range d.remotes {
		s.Remotes = append(s.Remotes, datapath.SnapshotRemote{VNI: r.VNI, IP: r.IP, Host: r.HostUnderlay})
	}
	s.Sort()
	return s, nil
}

// State prints the driver's whole state as sorted lines, for tests.
func (d *Driver) State() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lines []string
	if d.host != (datapath.HostConfig{}) {
		h := d.host
		lines = append(lines, fmt.Sprintf("host %s underlay=%s dev=%s mtu=%d", h.Name, h.UnderlayIP, h.UnderlayDev, h.MTU))
		if h.CapacityBps != 0 {
			lines = append(lines, fmt.Sprintf("host %s capacity=%d", h.Name, h.CapacityBps))
		}
	}
	for _, v := range d.vpcs {
		lines = append(lines, fmt.Sprintf("vpc %d %s/%s", v.VNI, v.Tenant, v.Name))
		if q := v.QoS; q != nil {
			lines = append(lines, fmt.Sprintf("vpc %d qos max=%d min=%d", v.VNI, q.MaxRateBps, q.MinRateBps))
		}
		for _, s := range v.Subnets {
			lines = append(lines, fmt.Sprintf("vpc %d subnet %s %s gw=%s", v.VNI, s.Name, s.CIDR, s.Gateway))
		}
	}
	for _, e := range d.eps {
		lines = append(lines, fmt.Sprintf("endpoint %s vni=%d subnet=%s ip=%s/%d mac=%s gw=%s if=%s netns=%q identity=%d",
			e.ID, e.VNI, e.Subnet, e.IP, e.Prefix.Bits(), e.MAC, e.Gateway, e.IfName, e.Netns, e.Identity))
		if q := e.QoS; q != nil {
			lines = append(lines, fmt.Sprintf("endpoint %s qos max=%d min=%d priority=%d dscp=%d", e.ID, q.MaxRateBps, q.MinRateBps, q.Priority, q.DSCP))
		}
	}
	for _, r := range d.remotes {
		lines = append(lines, fmt.Sprintf("remote %d %s host=%s mac=%s identity=%d epoch=%d",
			r.VNI, r.IP, r.HostUnderlay, r.MAC, r.Identity, r.Epoch))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
