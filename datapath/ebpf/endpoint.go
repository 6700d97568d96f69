package ebpf

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/nlconv"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// ensureEndpoint converges one endpoint's veth (host side link, nil if
// absent), the inside of its namespace and the from_ep program on the host
// side (clsact: the devices with a clsact qdisc). prev is what the last Set
// programmed for it (nil: nothing): an unchanged endpoint whose namespace
// and hook prev verified within Config.EndpointResync is trusted, and
// only its host side (already read) is checked.
func (d *Driver) ensureEndpoint(e *datapath.Endpoint, prev *epState, link netlink.Link, mtu int, clsact map[int]bool) (*epState, error) {
	name := VethName(e.ID)
	nsPath, own := e.Netns, e.Netns == ""
	if own {
		nsPath = filepath.Join(d.cfg.NetnsDir, d.names.Endpoint(e.ID))
	}
	if prev != nil && link != nil && link.Type() == "veth" && link.Attrs().Index == prev.ifindex && prev.mtu == mtu &&
		clsact[prev.ifindex] == d.legacy(hook{endpoint: true}) && sameEndpoint(&prev.ep, e) && !d.resyncDue(e.ID, prev.verified) {
		wentUp, err := d.fixHostVeth(link, e, mtu)
		if err != nil {
			return nil, err
		}
		if !wentUp {
			st := *prev
			st.ep = *e // its identity, policy and QoS, which the maps take, may differ
			st.ep.MAC = bytes.Clone(e.MAC)
			return &st, nil
		}
		// Its host side was down: the inside is read too (and the queue
		// of the veth's ends activated, see nlconv.ConvergeInside).
	}
	if link != nil && link.Type() != "veth" {
		if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(link) }); err != nil {
			return nil, fmt.Errorf("delete non-veth %s: %w", name, err)
		}
		link = nil
	}
	for attempt := 0; ; attempt++ {
		fresh, wentUp := false, false
		var err error
		if link == nil {
			if link, err = d.createVeth(e, name, nsPath, own, mtu); err != nil {
				return nil, err
			}
			fresh = true
		} else if wentUp, err = d.fixHostVeth(link, e, mtu); err != nil {
			return nil, err
		}
		err = d.ensureInside(link, e, nsPath, own, mtu, fresh, fresh || wentUp)
		if errors.Is(err, nlconv.ErrPeerElsewhere) && attempt == 0 {
			// The veth's peer is not in the endpoint's namespace (the
			// namespace changed or was re-made): start over.
			d.log.Info("endpoint veth peer elsewhere, re-creating", "endpoint", e.ID, "netns", nsPath)
			if err := d.ops.Write(writes.LinkDel, func() error { return d.nl.LinkDel(link) }); err != nil {
				return nil, fmt.Errorf("delete veth %s: %w", name, err)
			}
			link = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	idx := link.Attrs().Index
	if err := d.ensureHook(hook{name: name, ifindex: idx, prog: d.objs.FromEp, endpoint: true}, clsact); err != nil {
		return nil, err
	}
	ep := *e
	ep.MAC = bytes.Clone(e.MAC)
	return &epState{ep: ep, ifindex: idx, mtu: mtu, verified: time.Now(),
		status: datapath.EndpointStatus{Netns: nsPath, IfName: e.IfName, HostIfName: name}}, nil
}

// resyncDue says the kernel state of endpoint id, last verified at
// verified, is to be read again (Config.EndpointResync).
func (d *Driver) resyncDue(id string, verified time.Time) bool {
	return datapath.ResyncDue(d.cfg.EndpointResync, id, verified)
}

// sameEndpoint says a and b program the same veth and inside.
func sameEndpoint(a, b *datapath.Endpoint) bool {
	return a.ID == b.ID && a.VNI == b.VNI && a.Subnet == b.Subnet && a.IP == b.IP &&
		bytes.Equal(a.MAC, b.MAC) && a.Gateway == b.Gateway && a.Prefix == b.Prefix &&
		a.Netns == b.Netns && a.IfName == b.IfName
}

// createVeth makes the endpoint's veth (nlconv.Veth.Create).
func (d *Driver) createVeth(e *datapath.Endpoint, name, nsPath string, own bool, mtu int) (netlink.Link, error) {
	link, err := d.veth(e, name, mtu).Create(&d.ops, nsPath, own, d.cfg.NetnsDir)
	if err == nil {
		d.log.Info("endpoint veth created", "endpoint", e.ID, "vni", e.VNI, "veth", name, "netns", nsPath)
	}
	return link, err
}

// fixHostVeth converges the host side of an existing veth (nlconv.Veth.Fix).
func (d *Driver) fixHostVeth(link netlink.Link, e *datapath.Endpoint, mtu int) (wentUp bool, err error) {
	return d.veth(e, link.Attrs().Name, mtu).Fix(&d.ops, link)
}

func (d *Driver) veth(e *datapath.Endpoint, name string, mtu int) nlconv.Veth {
	return nlconv.Veth{Outer: d.nl, Name: name, Endpoint: e, MTU: mtu, GatewayMAC: GatewayMAC()}
}

// ensureInside converges the endpoint's side (nlconv.ConvergeInside); a
// fresh peer (its veth was just created) is written without reading.
func (d *Driver) ensureInside(host netlink.Link, e *datapath.Endpoint, nsPath string, own bool, mtu int, fresh, hostWentUp bool) error {
	return nlconv.ConvergeInside(&d.ops, nlconv.Inside{Outer: d.nl, OuterLink: host, OuterWentUp: hostWentUp, Endpoint: e,
		Netns: nsPath, Own: own, Fresh: fresh, MTU: mtu, GatewayMAC: GatewayMAC()})
}
