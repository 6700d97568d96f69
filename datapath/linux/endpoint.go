package linux

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/nlconv"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// ensureEndpoint converges the veth of one endpoint and, when needed, the
// inside of its namespace. It returns the VPC-side link.
func (d *Driver) ensureEndpoint(vs *vpcNS, scan *vpcScan, e *datapath.Endpoint, hc hostCfg) (netlink.Link, error) {
	name := VethName(e.ID)
	nsPath := e.Netns
	own := nsPath == ""
	if own {
		nsPath = d.nsPath(d.names.Endpoint(e.ID))
	}
	link := scan.links[name]
	if link != nil && link.Type() != "veth" {
		if err := d.ops.Write(writes.LinkDel, func() error { return vs.h.LinkDel(link) }); err != nil {
			return nil, fmt.Errorf("delete non-veth %s: %w", name, err)
		}
		link = nil
	}
	fresh, wentUp := false, false
	for attempt := 0; ; attempt++ {
		if link == nil {
			var err error
			if link, err = d.createVeth(vs, e, name, nsPath, own, hc); err != nil {
				return nil, err
			}
			scan.links[name] = link
			fresh = true
		} else {
			var err error
			if wentUp, err = d.fixHostVeth(vs, link, e, hc); err != nil {
				return nil, err
			}
		}
		st := d.eps[e.ID]
		deep := fresh || wentUp || st == nil || !sameEndpoint(&st.ep, e) || st.hostIndex != link.Attrs().Index || st.mtu != hc.mtu ||
			d.resyncDue(e.ID, st.verified)
		if !deep {
			return link, nil
		}
		err := d.ensureInside(vs, link, e, nsPath, own, hc, fresh, fresh || wentUp)
		if errors.Is(err, nlconv.ErrPeerElsewhere) && attempt == 0 {
			// The veth's peer is not in the endpoint's namespace (the
			// namespace changed or was re-made): start over.
			d.log.Info("endpoint veth peer elsewhere, re-creating", "endpoint", e.ID, "netns", nsPath)
			if err := d.ops.Write(writes.LinkDel, func() error { return vs.h.LinkDel(link) }); err != nil {
				return nil, fmt.Errorf("delete veth %s: %w", name, err)
			}
			delete(scan.links, name)
			scan.neighs = nlconv.DropLink(scan.neighs, link.Attrs().Index)
			scan.routes = nlconv.DropRoutes(scan.routes, link.Attrs().Index)
			link = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		d.smu.Lock()
		defer d.smu.Unlock()
		d.eps[e.ID] = &epState{
			ep:        cloneEndpoint(e),
			status:    datapath.EndpointStatus{Netns: nsPath, IfName: e.IfName, HostIfName: name},
			hostIndex: link.Attrs().Index,
			mtu:       hc.mtu,
			verified:  time.Now(),
		}
		return link, nil
	}
}

// resyncDue says the kernel state of endpoint id, last verified at
// verified, is to be read again (Config.EndpointResync).
func (d *Driver) resyncDue(id string, verified time.Time) bool {
	return datapath.ResyncDue(d.cfg.EndpointResync, id, verified)
}

// createVeth makes the endpoint's veth (nlconv.Veth.Create).
func (d *Driver) createVeth(vs *vpcNS, e *datapath.Endpoint, name, nsPath string, own bool, hc hostCfg) (netlink.Link, error) {
	if own && !nlconv.IsNetns(nsPath) && d.pool.take(nsPath) {
		d.ops.Add(writes.NetnsAdd, 1)
	}
	link, err := d.veth(vs, e, name, hc).Create(&d.ops, nsPath, own, d.cfg.NetnsDir)
	if err == nil {
		d.log.Info("endpoint veth created", "endpoint", e.ID, "vni", e.VNI, "veth", name, "netns", nsPath)
	}
	return link, err
}

// fixHostVeth converges the VPC side of an existing veth (nlconv.Veth.Fix).
func (d *Driver) fixHostVeth(vs *vpcNS, link netlink.Link, e *datapath.Endpoint, hc hostCfg) (wentUp bool, err error) {
	return d.veth(vs, e, link.Attrs().Name, hc).Fix(&d.ops, link)
}

func (d *Driver) veth(vs *vpcNS, e *datapath.Endpoint, name string, hc hostCfg) nlconv.Veth {
	return nlconv.Veth{Outer: vs.h, Name: name, Endpoint: e, MTU: hc.mtu, GatewayMAC: GatewayMAC()}
}

// ensureInside converges the endpoint's side (nlconv.ConvergeInside); a
// fresh peer (its veth was just created) is not read first.
func (d *Driver) ensureInside(vs *vpcNS, host netlink.Link, e *datapath.Endpoint, nsPath string, own bool, hc hostCfg, fresh, hostWentUp bool) error {
	return nlconv.ConvergeInside(&d.ops, nlconv.Inside{Outer: vs.h, OuterLink: host, OuterWentUp: hostWentUp, Endpoint: e,
		Netns: nsPath, Own: own, Fresh: fresh, MTU: hc.mtu, GatewayMAC: GatewayMAC()})
}

func sameEndpoint(a, b *datapath.Endpoint) bool {
	return a.ID == b.ID && a.VNI == b.VNI && a.Subnet == b.Subnet && a.IP == b.IP &&
		bytes.Equal(a.MAC, b.MAC) && a.Gateway == b.Gateway && a.Prefix == b.Prefix &&
		a.Netns == b.Netns && a.IfName == b.IfName && a.Identity == b.Identity
}

func cloneEndpoint(e *datapath.Endpoint) datapath.Endpoint {
	c := *e
	c.MAC = bytes.Clone(e.MAC)
	return c
}
