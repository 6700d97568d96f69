package linux

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/nlconv"
)

// Snapshot implements datapath.Snapshotter. It reads the kernel, not the
// driver's memory: VPCs from the VXLAN devices in the driver's namespaces,
// subnets from its routes through them, gateways from loopback addresses,
// endpoints from the veth aliases with their /32 routes and neighbours, and
// remotes from the permanent neighbours and FDB entries of the VXLAN devices,
// QoS from the HTB classes and the host's QoS table.
func (d *Driver) Snapshot(ctx context.Context) (datapath.Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s datapath.Snapshot
	vpcs, _, err := d.listOwned()
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	hq, capacity, err := d.snapshotHostQoS()
	if err != nil {
		return s, fmt.Errorf("snapshot: qos: %w", err)
	}
	for vni, name := range vpcs {
		if err := ctx.Err(); err != nil {
			return s, fmt.Errorf("snapshot: %w", err)
		}
		if err := d.snapshotVPC(&s, vni, name, hq, capacity); err != nil {
			return s, fmt.Errorf("snapshot vpc %d: %w", vni, err)
		}
	}
	s.Sort()
	return s, nil
}

func (d *Driver) snapshotVPC(s *datapath.Snapshot, vni uint32, name string, hq *hostQoS, capacity uint64) error {
	fd, err := netns.GetFromPath(d.nsPath(name))
	if err != nil {
		return err
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return err
	}
	defer h.Close()
	vs := &vpcNS{vni: vni, h: h}
	scan, err := vs.scan(true)
	if err != nil {
		return err
	}
	vx, _ := scan.links[vxlanName(vni)].(*netlink.Vxlan)
	if vx == nil {
		return nil // not a VPC (yet): Set was interrupted
	}
	v := datapath.SnapshotVPC{VNI: uint32(vx.VxlanId)}
	for _, a := range scan.loAddrs {
		if p := nlconv.NetPrefix(a.IPNet); !p.Addr().IsLoopback() {
			v.Gateways = append(v.Gateways, p.Addr())
		}
	}
	epIP := map[int]netip.Addr{}
	for _, r := range scan.routes {
		switch p := nlconv.NetPrefix(r.Dst); {
		case r.LinkIndex == vx.Index:
			v.CIDRs = append(v.CIDRs, p)
		case p.Bits() == 32:
			epIP[r.LinkIndex] = p.Addr()
		}
	}
	tx, err := snapshotVPCQoS(h, scan)
	if err != nil {
		return err
	}
	v.QoS = hq.vpcQoS(v.VNI, tx, capacity)
	s.VPCs = append(s.VPCs, v)
	epMAC := map[int]string{}
	remoteMAC := map[netip.Addr]string{}
	for _, n := range scan.neighs {
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		if n.LinkIndex == vx.Index {
			remoteMAC[nlconv.IPAddr(n.IP)] = n.HardwareAddr.String()
		} else {
			epMAC[n.LinkIndex] = n.HardwareAddr.String()
		}
	}
	for _, l := range scan.links {
		id, ok := strings.CutPrefix(l.Attrs().Alias, AliasPrefix)
		if !ok || l.Type() != "veth" {
			continue
		}
		ip := epIP[l.Attrs().Index]
		s.Endpoints = append(s.Endpoints, datapath.SnapshotEndpoint{ID: id, VNI: v.VNI, IP: ip, MAC: epMAC[l.Attrs().Index],
			QoS: hq.enforcedQoS(qosKey{v.VNI, ip}, tx, capacity)})
	}
	hostOf := map[string]netip.Addr{}
	for _, f := range scan.fdb {
		if f.State&netlink.NUD_PERMANENT != 0 && f.Family == unix.AF_BRIDGE {
			hostOf[f.HardwareAddr.String()] = nlconv.IPAddr(f.IP)
		}
	}
	for ip, mac := range remoteMAC {
		s.Remotes = append(s.Remotes, datapath.SnapshotRemote{VNI: v.VNI, IP: ip, Host: hostOf[mac]})
	}
	return nil
}
