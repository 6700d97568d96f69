package linux

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/nlconv"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// A Set reads every VPC namespace (links, routes, addresses, neighbours,
// learned remotes, QoS): on a host with many endpoints that is most of
// its cost, and an agent attaching containers one after the other sets a
// state that differs from the last one only by a new endpoint. So a Set
// whose only change since the last full Set is new endpoints (without QoS,
// in VPCs without QoS, on an unchanged host), coming within VPCResync of
// that full Set's reads, attaches them from what that Set read and wrote:
// per endpoint its veth and inside (as a full Set does), its /32 route and
// neighbour, and per VPC the policy table (whose generation still tells
// whether someone else changed it). Anything else, an error included,
// takes a full Set, which repairs drift.

// lastFull is what the last full Set converged without error: what a quick
// attach trusts. The zero value (read zero) trusts nothing.
type lastFull struct {
	read time.Time
	host datapath.HostConfig
	hc   hostCfg
	vpcs []datapath.VPC
}

// errNotQuick makes Set fall back to a full Set.
var errNotQuick = errors.New("not a quick attach")

// addedOnly returns the endpoints of n that the last full Set did not
// have, if they are n's only change since it and may be attached quickly;
// nil otherwise. The caller holds mu.
func (d *Driver) addedOnly(n *datapath.Desired, failed map[uint32]error, hc hostCfg) []*datapath.Endpoint {
	l := &d.last
	if d.cfg.VPCResync < 0 || l.read.IsZero() || time.Since(l.read) >= d.cfg.VPCResync ||
		len(failed) > 0 || len(d.failed) > 0 || n.Host != l.host || hc != l.hc ||
		!slices.EqualFunc(n.VPCs, l.vpcs, sameVPC) || len(n.Endpoints) <= len(d.eps) {
		return nil
	}
	var added []*datapath.Endpoint
	kept := 0
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		st := d.eps[e.ID]
		switch {
		case st == nil && (e.QoS != nil || n.VPC(e.VNI).QoS != nil):
			return nil
		case st == nil:
			added = append(added, e)
		case !sameEndpoint(&st.ep, e) || !st.ep.Policy.Equal(e.Policy) || !sameQoS(st.ep.QoS, e.QoS):
			return nil
		default:
			kept++
		}
	}
	if kept != len(d.eps) {
		return nil // some endpoint left
	}
	return added
}

// attachAdded attaches the endpoints addedOnly found. On an error the
// caller sets in full. The caller holds mu.
func (d *Driver) attachAdded(ctx context.Context, n *datapath.Desired, added []*datapath.Endpoint, hc hostCfg) error {
	byVNI := map[uint32][]*datapath.Endpoint{}
	for i := range n.Endpoints {
		e := &n.Endpoints[i]
		byVNI[e.VNI] = append(byVNI[e.VNI], e)
	}
	done := map[uint32]bool{}
	for _, e := range added {
		if err := ctx.Err(); err != nil {
			return err
		}
		vs := d.vpcs[e.VNI]
		if vs == nil || !sameFile(vs.path, vs.ns) || vs.listenDied.Load() {
			return errNotQuick
		}
		if !done[e.VNI] {
			// The table first, so that the veth comes up with its rules.
			if err := d.ensurePolicy(vs, byVNI[e.VNI]); err != nil {
				return fmt.Errorf("vpc %d: %w", e.VNI, err)
			}
			done[e.VNI] = true
		}
		// What a scan would have found of it: nothing, as the full Set
		// found less than a VPCResync ago. (A veth of that name made
		// since, by someone else, makes the creation fail with EEXIST:
		// then a full Set reads and repairs.)
		scan := &vpcScan{links: map[string]netlink.Link{}}
		link, err := d.ensureEndpoint(vs, scan, e, hc)
		if errors.Is(err, unix.EEXIST) {
			d.smu.Lock()
			delete(d.eps, e.ID)
			d.smu.Unlock()
			return errNotQuick
		}
		if err != nil {
			d.smu.Lock()
			delete(d.eps, e.ID)
			d.smu.Unlock()
			return fmt.Errorf("vpc %d: endpoint %q: %w", e.VNI, e.ID, err)
		}
		idx := link.Attrs().Index
		route := linkRoute(netip.PrefixFrom(e.IP, 32), idx)
		if err := d.ops.Write(writes.RouteAdd, func() error { return vs.h.RouteReplace(&route) }); err != nil {
			return fmt.Errorf("vpc %d: endpoint %q: add route: %w", e.VNI, e.ID, err)
		}
		neigh := netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: e.IP.AsSlice(), HardwareAddr: e.MAC}
		if err := d.ops.Write(writes.NeighAdd, func() error { return vs.h.NeighSet(&neigh) }); err != nil {
			return fmt.Errorf("vpc %d: endpoint %q: set neighbour: %w", e.VNI, e.ID, err)
		}
	}
	return nil
}

// Attach attaches endpoints of the last Set that waited for their
// namespace (EndpointStatus.Waiting) and whose namespace exists now, as a
// quick attach does, without a Set: the agent's CNI server binds a
// container's namespace where a warm-pool endpoint waited, and the claim
// then costs that endpoint's own writes (its veth and inside, /32 route,
// neighbour, the VPC's policy table), not a Set's pass over the host's
// state, however long ago the last full Set read the VPC namespaces (a
// periodic Set repairs drift as before). Endpoints attached already are
// skipped. Unless the last full Set converged without error and every
// endpoint waited for a namespace that exists now, has no QoS and is in a
// VPC without QoS, it fails and changes nothing; after a failure in the
// kernel, the next Set reads everything. Either way the caller Sets the
// whole state.
func (d *Driver) Attach(ctx context.Context, ids []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return datapath.ErrClosed
	}
	l := &d.last
	if l.read.IsZero() || len(d.failed) > 0 {
		return fmt.Errorf("linux attach: %w: the last full Set did not converge", errNotQuick)
	}
	var added []*datapath.Endpoint
	vnis := map[uint32]bool{}
	for _, id := range ids {
		if d.eps[id] != nil {
			continue
		}
		e, ok := d.held[id]
		if !ok || !nlconv.IsNetns(e.Netns) {
			return fmt.Errorf("linux attach: %w: endpoint %q does not wait for a namespace that exists", errNotQuick, id)
		}
		i := slices.IndexFunc(l.vpcs, func(v datapath.VPC) bool { return v.VNI == e.VNI })
		if e.QoS != nil || i < 0 || l.vpcs[i].QoS != nil {
			return fmt.Errorf("linux attach: %w: endpoint %q has QoS or its VPC changed", errNotQuick, id)
		}
		added = append(added, &e)
		vnis[e.VNI] = true
	}
	if len(added) == 0 {
		return nil
	}
	// The endpoints of their VPCs as attached after this, in Set's order
	// (by ID): what their policy tables are compiled from.
	n := &datapath.Desired{}
	for _, st := range d.eps {
		if vnis[st.ep.VNI] {
			n.Endpoints = append(n.Endpoints, st.ep)
		}
	}
	for _, e := range added {
		n.Endpoints = append(n.Endpoints, *e)
	}
	slices.SortFunc(n.Endpoints, func(a, b datapath.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	start, before := time.Now(), d.ops.Counts()
	if err := d.attachAdded(ctx, n, added, l.hc); err != nil {
		d.last = lastFull{}
		return fmt.Errorf("linux attach: %w", err)
	}
	d.smu.Lock()
	for _, e := range added {
		delete(d.waiting, e.ID)
		delete(d.held, e.ID)
	}
	d.smu.Unlock()
	d.log.Info("datapath attach", "attached", len(added), "writes", d.ops.Counts().Sub(before).String(), "took", time.Since(start))
	return nil
}

func sameVPC(a, b datapath.VPC) bool {
	return a.Tenant == b.Tenant && a.Name == b.Name && a.VNI == b.VNI && slices.Equal(a.Subnets, b.Subnets) &&
		(a.QoS == b.QoS || a.QoS != nil && b.QoS != nil && *a.QoS == *b.QoS)
}

func sameQoS(a, b *datapath.QoS) bool { return a == b || a != nil && b != nil && *a == *b }
