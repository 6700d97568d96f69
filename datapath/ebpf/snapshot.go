package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// Snapshot implements datapath.Snapshotter. It reads the maps and the
// uplink, not the driver's memory: VPCs from the vpcs and subnets maps,
// endpoints from the locals and ifaces maps (their IDs from the aliases of
// the host-side veths), remotes from the remotes map, QoS from the HTB
// classes the maps name.
func (d *Driver) Snapshot(ctx context.Context) (datapath.Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s datapath.Snapshot
	if d.closed {
		return s, datapath.ErrClosed
	}
	var (
		vpcs    map[uint32]weftVpc
		subnets map[weftSubnetKey]weftSubnet
		locals  map[weftVip]weftLocalEp
		ifaces  map[uint32]weftIface
		remotes map[weftVip]weftRemoteEp
	)
	for _, err := range []error{
		readMap(d.objs.Vpcs, "vpcs", &vpcs),
		readMap(d.objs.Subnets, "subnets", &subnets),
		readMap(d.objs.Locals, "locals", &locals),
		readMap(d.objs.Ifaces, "ifaces", &ifaces),
		readMap(d.objs.Remotes, "remotes", &remotes),
	} {
		if err != nil {
			return s, fmt.Errorf("snapshot: %w", err)
		}
	}
	shaper, uplink, capacity, err := d.qosTrees()
	if err != nil {
		return s, fmt.Errorf("snapshot: qos: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	links, err := writes.Dump("links", d.nl.LinkList)
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	idOf := map[uint32]string{}
	for _, l := range links {
		if id, ok := strings.CutPrefix(l.Attrs().Alias, AliasPrefix); ok {
			idOf[uint32(l.Attrs().Index)] = id
		}
	}
	local := map[uint32]bool{}
	for k, l := range locals {
		local[k.Vni] = true
		s.Endpoints = append(s.Endpoints, datapath.SnapshotEndpoint{ID: idOf[l.Ifindex], VNI: k.Vni, IP: addrOf(k.Ip), MAC: macString(l.Mac),
			QoS: enforcedQoS(ifaces[l.Ifindex], shaper, uplink, capacity)})
	}
	byVNI := map[uint32]*datapath.SnapshotVPC{}
	for vni, v := range vpcs {
		byVNI[vni] = &datapath.SnapshotVPC{VNI: vni, QoS: enforcedVPCQoS(v, shaper, uplink, capacity, local[vni])}
	}
	for k, sn := range subnets {
		if sv := byVNI[k.Vni]; sv != nil {
			sv.CIDRs = append(sv.CIDRs, netip.PrefixFrom(addrOf(k.Ip), int(k.Prefixlen)-32))
			sv.Gateways = append(sv.Gateways, addrOf(sn.Gateway))
		}
	}
	for _, sv := range byVNI {
		s.VPCs = append(s.VPCs, *sv)
	}
	for k, r := range remotes {
		s.Remotes = append(s.Remotes, datapath.SnapshotRemote{VNI: k.Vni, IP: addrOf(k.Ip), Host: addrOf(r.Host)})
	}
	s.Sort()
	return s, nil
}

// LookupRemote reads, from the maps a driver pinned in pinDir (PinDir),
// the host that the data plane sends VNI k.VNI's packets for k.IP to: a
// learned remote's underlay address. ok is false when it has none. It is
// for tools and tests that watch a running agent's data plane.
func LookupRemote(pinDir string, k datapath.RemoteKey) (host netip.Addr, ok bool, err error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "remotes"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return host, false, fmt.Errorf("open remotes map: %w", err)
	}
	defer m.Close()
	var r weftRemoteEp
	switch err := m.Lookup(weftVip{Vni: k.VNI, Ip: be32(k.IP)}, &r); {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return host, false, nil
	case err != nil:
		return host, false, fmt.Errorf("look up %d/%s: %w", k.VNI, k.IP, err)
	}
	return addrOf(r.Host), true, nil
}
