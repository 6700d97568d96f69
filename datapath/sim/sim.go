package sim

import (
	"bytes"
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
	// goroutine per driver. It must not call back into the driver.
	OnMiss func(datapath.Miss)
	// MissBuffer is the capacity of the Misses channel (default 16). The
	// channel is allocated on the first call to Misses.
	MissBuffer int
}

// Driver is an in-memory datapath.Driver. It starts no goroutines.
type Driver struct {
	onMiss    func(datapath.Miss)
	missBuf   int
	missDrops atomic.Uint64

	mu      sync.Mutex
	closed  bool
	misses  chan datapath.Miss
	host    datapath.HostConfig
	vpcs    map[uint32]*vpc
	eps     map[string]*datapath.Endpoint
	byIP    map[datapath.RemoteKey]*datapath.Endpoint
	remotes map[datapath.RemoteKey]*datapath.Remote
	counts  [numKinds][numVerbs]uint64
}

type vpc struct {
	v datapath.VPC
}

type kind uint8

const (
	kindHost kind = iota
	kindVPC
	kindSubnet
	kindEndpoint
	kindRemote
	numKinds
)

var kindNames = [numKinds]string{"host", "vpc", "subnet", "endpoint", "remote"}

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
)

// New returns an empty simulated driver.
func New(cfg Config) *Driver {
	if cfg.MissBuffer <= 0 {
		cfg.MissBuffer = 16
	}
	return &Driver{onMiss: cfg.OnMiss, missBuf: cfg.MissBuffer}
}

func (d *Driver) count(k kind, v verb) { d.counts[k][v]++ }

// Set implements datapath.Driver.
func (d *Driver) Set(ctx context.Context, desired *datapath.Desired) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim set: %w", err)
	}
	n, err := desired.Normalize()
	if err != nil {
		return fmt.Errorf("sim set: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	if d.host != n.Host {
		if d.host == (datapath.HostConfig{}) {
			d.count(kindHost, verbAdd)
		} else {
			d.count(kindHost, verbUpdate)
		}
		d.host = n.Host
	}

	// VPCs and their subnets.
	want := make(map[uint32]bool, len(n.VPCs))
	for _, v := range n.VPCs {
		want[v.VNI] = true
		cur := d.vpcs[v.VNI]
		if cur == nil {
			if d.vpcs == nil {
				d.vpcs = map[uint32]*vpc{}
			}
			d.vpcs[v.VNI] = &vpc{v: v}
			d.count(kindVPC, verbAdd)
			for range v.Subnets {
				d.count(kindSubnet, verbAdd)
			}
			continue
		}
		if cur.v.Tenant != v.Tenant || cur.v.Name != v.Name {
			d.count(kindVPC, verbUpdate)
		}
		d.diffSubnets(cur.v.Subnets, v.Subnets)
		cur.v = v
	}
	for vni, cur := range d.vpcs {
		if want[vni] {
			continue
		}
		for range cur.v.Subnets {
			d.count(kindSubnet, verbDel)
		}
		d.count(kindVPC, verbDel)
		delete(d.vpcs, vni)
		for k := range d.remotes {
			if k.VNI == vni {
				delete(d.remotes, k)
				d.count(kindRemote, verbDel)
			}
		}
	}

	// Endpoints.
	wantEP := make(map[string]bool, len(n.Endpoints))
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		wantEP[e.ID] = true
		cur := d.eps[e.ID]
		switch {
		case cur == nil:
			d.count(kindEndpoint, verbAdd)
		case !sameEndpoint(cur, e):
			d.count(kindEndpoint, verbUpdate)
			delete(d.byIP, datapath.RemoteKey{VNI: cur.VNI, IP: cur.IP})
		default:
			continue
		}
		if d.eps == nil {
			d.eps = map[string]*datapath.Endpoint{}
			d.byIP = map[datapath.RemoteKey]*datapath.Endpoint{}
		}
		d.eps[e.ID] = e
	}
	for id := range d.eps {
		if !wantEP[id] {
			d.count(kindEndpoint, verbDel)
			delete(d.eps, id)
		}
	}
	// Rebuild the IP index from scratch: endpoints may swap addresses in one Set.
	clear(d.byIP)
	for _, e := range d.eps {
		d.byIP[datapath.RemoteKey{VNI: e.VNI, IP: e.IP}] = e
	}
	return nil
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
		a.Netns == b.Netns && a.IfName == b.IfName && a.Identity == b.Identity
}

// Learn implements datapath.Driver.
func (d *Driver) Learn(ctx context.Context, rs []datapath.Remote) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim learn: %w", err)
	}
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
		if d.vpcs[r.VNI] == nil {
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
	if d.misses == nil {
		d.misses = make(chan datapath.Miss, d.missBuf)
		if d.closed {
			close(d.misses)
		}
	}
	return d.misses
}

// MissDrops is the number of misses dropped because the Misses channel was
// full or had never been asked for.
func (d *Driver) MissDrops() uint64 { return d.missDrops.Load() }

// Status implements datapath.Driver. A driver-made namespace is reported as
// "sim:/HOST/ID"; it exists only in this process.
func (d *Driver) Status(id string) (datapath.EndpointStatus, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.eps[id]
	if e == nil || d.closed {
		return datapath.EndpointStatus{}, false
	}
	st := datapath.EndpointStatus{Netns: e.Netns, IfName: e.IfName, HostIfName: "sim-" + e.ID}
	if st.Netns == "" {
		st.Netns = "sim:/" + d.host.Name + "/" + e.ID
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
	return nil
}

// Counts implements datapath.Counter. Kinds are host, vpc, subnet, endpoint
// and remote; verbs add, update and del.
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
	for _, v := range d.vpcs {
		sv := datapath.SnapshotVPC{VNI: v.v.VNI}
		for _, sn := range v.v.Subnets {
			sv.CIDRs = append(sv.CIDRs, sn.CIDR)
			sv.Gateways = append(sv.Gateways, sn.Gateway)
		}
		s.VPCs = append(s.VPCs, sv)
	}
	for _, e := range d.eps {
		s.Endpoints = append(s.Endpoints, datapath.SnapshotEndpoint{ID: e.ID, VNI: e.VNI, IP: e.IP, MAC: e.MAC.String()})
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
	}
	for _, v := range d.vpcs {
		lines = append(lines, fmt.Sprintf("vpc %d %s/%s", v.v.VNI, v.v.Tenant, v.v.Name))
		for _, s := range v.v.Subnets {
			lines = append(lines, fmt.Sprintf("vpc %d subnet %s %s gw=%s", v.v.VNI, s.Name, s.CIDR, s.Gateway))
		}
	}
	for _, e := range d.eps {
		lines = append(lines, fmt.Sprintf("endpoint %s vni=%d subnet=%s ip=%s/%d mac=%s gw=%s if=%s netns=%q identity=%d",
			e.ID, e.VNI, e.Subnet, e.IP, e.Prefix.Bits(), e.MAC, e.Gateway, e.IfName, e.Netns, e.Identity))
	}
	for _, r := range d.remotes {
		lines = append(lines, fmt.Sprintf("remote %d %s host=%s mac=%s identity=%d epoch=%d",
			r.VNI, r.IP, r.HostUnderlay, r.MAC, r.Identity, r.Epoch))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
