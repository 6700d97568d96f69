package ebpf

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftnet/weft/datapath"
)

// Snapshot implements datapath.Snapshotter. It reads the maps, not the
// driver's memory: VPCs from the vpcs and subnets maps, endpoints from the
// locals map (their IDs from the aliases of the host-side veths), remotes
// from the remotes map.
func (d *Driver) Snapshot(ctx context.Context) (datapath.Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s datapath.Snapshot
	if d.closed {
		return s, datapath.ErrClosed
	}
	vpcs := map[uint32]*datapath.SnapshotVPC{}
	var vni uint32
	var v weftVpc
	it := d.objs.Vpcs.Iterate()
	for it.Next(&vni, &v) {
		vpcs[vni] = &datapath.SnapshotVPC{VNI: vni}
	}
	if err := it.Err(); err != nil {
		return s, fmt.Errorf("snapshot: vpcs: %w", err)
	}
	var sk weftSubnetKey
	var sn weftSubnet
	it = d.objs.Subnets.Iterate()
	for it.Next(&sk, &sn) {
		if sv := vpcs[sk.Vni]; sv != nil {
			sv.CIDRs = append(sv.CIDRs, netip.PrefixFrom(addrOf(sk.Ip), int(sk.Prefixlen)-32))
			sv.Gateways = append(sv.Gateways, addrOf(sn.Gateway))
		}
	}
	if err := it.Err(); err != nil {
		return s, fmt.Errorf("snapshot: subnets: %w", err)
	}
	for _, sv := range vpcs {
		s.VPCs = append(s.VPCs, *sv)
	}
	if err := ctx.Err(); err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	links, err := dump("links", d.nl.LinkList)
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	idOf := map[uint32]string{}
	for _, l := range links {
		if id, ok := strings.CutPrefix(l.Attrs().Alias, AliasPrefix); ok {
			idOf[uint32(l.Attrs().Index)] = id
		}
	}
	var k weftVip
	var l weftLocalEp
	it = d.objs.Locals.Iterate()
	for it.Next(&k, &l) {
		mac := l.Mac
		s.Endpoints = append(s.Endpoints, datapath.SnapshotEndpoint{ID: idOf[l.Ifindex], VNI: k.Vni, IP: addrOf(k.Ip), MAC: macString(mac)})
	}
	if err := it.Err(); err != nil {
		return s, fmt.Errorf("snapshot: locals: %w", err)
	}
	var r weftRemoteEp
	it = d.objs.Remotes.Iterate()
	for it.Next(&k, &r) {
		s.Remotes = append(s.Remotes, datapath.SnapshotRemote{VNI: k.Vni, IP: addrOf(k.Ip), Host: addrOf(r.Host)})
	}
	if err := it.Err(); err != nil {
		return s, fmt.Errorf("snapshot: remotes: %w", err)
	}
	s.Sort()
	return s, nil
}
