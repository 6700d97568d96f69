package linux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
)

var (
	_ datapath.Driver      = (*Driver)(nil)
	_ datapath.Counter     = (*Driver)(nil)
	_ datapath.Snapshotter = (*Driver)(nil)
)

// Driver programs the Linux data plane of one host. See the package
// documentation for the design.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	names  names
	hostNS netns.NsHandle
	host   *netlink.Handle // in the host namespace: creates VXLAN devices
	ops    writes.Counter

	misses    chan datapath.Miss
	missDrops atomic.Uint64
	wg        sync.WaitGroup // miss listeners

	// mu serializes the reconciler: Set, Teardown, Snapshot, Close. A Set
	// may take long (deleting a veth waits for RCU grace periods), so the
	// fast path (Learn, Forget, Status) does not take it.
	mu sync.Mutex
	// smu guards the state the fast path shares with the reconciler: the
	// vpcs map, each VPC's remotes and FDB references, eps, underlay and
	// closed. Writers hold mu and smu; the reconciler reads under mu alone,
	// the fast path under smu alone. A VPC's netlink handle is safe for
	// concurrent use; it is closed only after its VPC left the map under smu.
	smu      sync.Mutex
	closed   bool
	vpcs     map[uint32]*vpcNS
	eps      map[string]*epState                // programmed endpoints, by ID
	waiting  map[string]datapath.EndpointStatus // endpoints of the last Set waiting for their namespace
	held     map[string]datapath.Endpoint       // the same endpoints, for Attach; mu
	underlay netip.Addr                         // of the last Set
	failed   map[uint32]error                   // the VPCs the last Set left as they were
	last     lastFull                           // what a quick attach trusts (attach.go); mu

	obs  *observer // traces and captures (trace.go)
	pool *nsPool   // empty endpoint namespaces made ahead (nspool.go)

	// policyFault, set by tests only, makes the policy batches of the VPCs
	// it returns true for carry a rule the kernel refuses.
	policyFault func(vni uint32) bool
}

// vpcNS is the driver's handle on one VPC router namespace.
type vpcNS struct {
	vni  uint32
	name string
	path string
	ns   netns.NsHandle
	h    *netlink.Handle

	vxIndex    atomic.Int32 // the VXLAN device, for the miss listener
	conn       *mdnetlink.Conn
	closing    atomic.Bool
	listenDied atomic.Bool // the listener stopped on an error; Set restarts it

	vxChecked bool                   // the VXLAN device's sysctls were verified
	remotes   map[netip.Addr]*remote // learned, by endpoint IP
	fdb       map[netip.Addr]int     // remote host underlay -> remotes using it

	nft *nftConn // to the policy table
	// compiled is the table last compiled, from compiledFor.
	compiled    *policyTable
	compiledFor []policyInput
	// verified is the table last written or found in the kernel, at
	// nftables generation verifiedGen (nil: not known).
	verified    *policyTable
	verifiedGen uint32
	ctChecked   bool // the conntrack sysctls were verified
	// flushPending says a policy change was committed but the connections
	// it no longer allows may not all be flushed yet.
	flushPending bool
}

type remote struct {
	host     netip.Addr
	epoch    uint64
	identity uint32
	mac      net.HardwareAddr
}

// epState is what the driver last programmed for an endpoint.
type epState struct {
	ep        datapath.Endpoint
	status    datapath.EndpointStatus
	hostIndex int       // ifindex of the VPC-side veth
	mtu       int       // overlay MTU it was programmed with
	verified  time.Time // last full check of the endpoint namespace
}

// New opens the host namespace, adopts what an earlier driver of the same
// host and prefix left (VPC namespaces and their learned remotes), and
// starts a miss listener per VPC. It writes nothing to the kernel.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hostNS, err := netns.GetFromPath(cfg.HostNetns)
	if err != nil {
		return nil, fmt.Errorf("open host netns %s: %w", cfg.HostNetns, err)
	}
	host, err := netlink.NewHandleAt(hostNS)
	if err != nil {
		hostNS.Close()
		return nil, fmt.Errorf("netlink in host netns: %w", err)
	}
	d := &Driver{
		cfg:    cfg,
		log:    cfg.Logger.With("subsystem", "datapath/linux", "host", cfg.HostName),
		names:  newNames(cfg.Prefix, cfg.HostName),
		hostNS: hostNS,
		host:   host,
		misses: make(chan datapath.Miss, cfg.MissBuffer),
		obs:    newObserver(),
		vpcs:   map[uint32]*vpcNS{},
		eps:    map[string]*epState{},
	}
	d.pool = newNSPool(cfg.NetnsDir, d.names.Base()+"p", cfg.NetnsPool, d.log)
	vpcNames, _, err := d.listOwned()
	if err != nil {
		d.Close()
		return nil, err
	}
	for vni := range vpcNames {
		if err := ctx.Err(); err != nil {
			d.Close()
			return nil, fmt.Errorf("adopt: %w", err)
		}
		if _, err := d.openVPC(vni, false); err != nil {
			// Set repairs or replaces it.
			d.log.Warn("cannot adopt VPC namespace", "vni", vni, "err", err)
		}
	}
	d.log.Info("datapath started", "adopted_vpcs", len(d.vpcs))
	return d, nil
}

// listOwned lists the namespaces of this host and prefix.
func (d *Driver) listOwned() (vpcs map[uint32]string, eps map[string]bool, err error) {
	vpcs, eps = map[uint32]string{}, map[string]bool{}
	ents, err := os.ReadDir(d.cfg.NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return vpcs, eps, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", d.cfg.NetnsDir, err)
	}
	for _, e := range ents {
		vni, ep := d.names.parse(e.Name())
		switch {
		case vni != 0:
			vpcs[vni] = e.Name()
		case ep:
			eps[e.Name()] = true
		}
	}
	return vpcs, eps, nil
}

func (d *Driver) nsPath(name string) string { return filepath.Join(d.cfg.NetnsDir, name) }

// vpcSysctls are the VPC namespace settings; conf/default ones come before
// any device exists.
func (d *Driver) vpcSysctls() []sysctl {
	s := []sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/rp_filter", "1"}, // strict: an endpoint cannot spoof another's address
		{"net/ipv4/conf/all/send_redirects", "0"},
		{"net/ipv4/conf/default/send_redirects", "0"},
	}
	if !d.cfg.Untuned {
		// The router namespace only forwards: early demux would look up a
		// local socket for every packet before routing it, and never find
		// one (see "Tuning" in the package documentation).
		s = append(s, sysctl{"net/ipv4/ip_early_demux", "0"})
	}
	return s
}

// vxlanSysctls make the kernel hold packets to an unresolved remote and ask
// userspace (RTM_GETNEIGH) instead of sending ARP.
func vxlanSysctls(vni uint32) []sysctl {
	p := "net/ipv4/neigh/" + vxlanName(vni) + "/"
	return []sysctl{{p + "app_solicit", "1"}, {p + "mcast_solicit", "0"}, {p + "ucast_solicit", "0"}}
}

// openVPC opens (and with create, makes) the namespace of a VPC, converges
// its namespace-wide sysctls and starts its miss listener.
func (d *Driver) openVPC(vni uint32, create bool) (*vpcNS, error) {
	name := d.names.vpc(vni)
	path := d.nsPath(name)
	created := false
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if !create {
			return nil, fmt.Errorf("vpc %d: %w", vni, err)
		}
		if err := d.ops.Write(writes.NetnsAdd, func() error { return createNamedNS(d.cfg.NetnsDir, name) }); err != nil {
			return nil, fmt.Errorf("vpc %d: %w", vni, err)
		}
		created = true
	}
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("vpc %d: open netns: %w", vni, err)
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("vpc %d: netlink: %w", vni, err)
	}
	vs := &vpcNS{vni: vni, name: name, path: path, ns: fd, h: h, remotes: map[netip.Addr]*remote{}, fdb: map[netip.Addr]int{}}
	ok := false
	defer func() {
		if !ok {
			vs.close()
		}
	}()
	if err := d.convergeSysctls(vs.ns, d.vpcSysctls(), created); err != nil {
		return nil, fmt.Errorf("vpc %d: %w", vni, err)
	}
	if !created {
		if err := d.adoptRemotes(vs); err != nil {
			return nil, fmt.Errorf("vpc %d: %w", vni, err)
		}
	}
	if err := d.startListener(vs); err != nil {
		return nil, fmt.Errorf("vpc %d: %w", vni, err)
	}
	d.smu.Lock()
	d.vpcs[vni] = vs
	d.smu.Unlock()
	ok = true
	return vs, nil
}

// convergeSysctls writes keys that differ (all of them when fresh, without
// reading first).
func (d *Driver) convergeSysctls(ns netns.NsHandle, keys []sysctl, fresh bool) error {
	var todo []sysctl
	if fresh {
		todo = keys
	} else {
		vals, err := readSysctls(ns, keys)
		if err != nil {
			return err
		}
		for i, k := range keys {
			if vals[i] != k.value {
				todo = append(todo, k)
			}
		}
	}
	if len(todo) == 0 {
		return nil
	}
	d.ops.Add(writes.SysctlSet, uint64(len(todo)))
	return writeSysctls(ns, todo)
}

// close stops the listener and releases the handles (the kernel state stays).
func (vs *vpcNS) close() {
	vs.stopListener()
	if vs.h != nil {
		vs.h.Close()
		vs.h = nil
	}
	if vs.nft != nil {
		_ = vs.nft.CloseLasting()
		vs.nft = nil
	}
	vs.ns.Close()
}

func (vs *vpcNS) stopListener() {
	if vs.conn != nil {
		vs.closing.Store(true)
		vs.conn.Close()
		vs.conn = nil
	}
}

// startListener subscribes to neighbour events in the VPC namespace and
// turns the kernel's RTM_GETNEIGH requests on the VXLAN device into Misses.
func (d *Driver) startListener(vs *vpcNS) error {
	conn, err := mdnetlink.Dial(unix.NETLINK_ROUTE, &mdnetlink.Config{NetNS: int(vs.ns), Groups: 1 << (unix.RTNLGRP_NEIGH - 1)})
	if err != nil {
		return fmt.Errorf("subscribe to neighbour events: %w", err)
	}
	// Best effort: a burst of misses should not overflow the socket.
	_ = conn.SetReadBuffer(1 << 20)
	vs.conn = conn
	vs.closing.Store(false)
	vs.listenDied.Store(false)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.listen(vs, conn)
	}()
	return nil
}

func (d *Driver) listen(vs *vpcNS, conn *mdnetlink.Conn) {
	for {
		msgs, err := conn.Receive()
		if err != nil {
			if vs.closing.Load() {
				return
			}
			if errors.Is(err, unix.ENOBUFS) {
				// Events were lost; the kernel asks again for the next
				// packet once the entry has failed.
				d.log.Warn("neighbour events lost", "vni", vs.vni)
				continue
			}
			d.log.Error("miss listener stopped", "vni", vs.vni, "err", err)
			vs.listenDied.Store(true)
			return
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_GETNEIGH {
				continue
			}
			ip, ifindex, ok := parseNeighMsg(m.Data)
			if !ok || ifindex != vs.vxIndex.Load() {
				continue
			}
			select {
			case d.misses <- datapath.Miss{VNI: vs.vni, IP: ip}:
			default:
				d.missDrops.Add(1)
			}
		}
	}
}

// parseNeighMsg decodes the destination and ifindex of an ndmsg.
func parseNeighMsg(b []byte) (netip.Addr, int32, bool) {
	const ndmsgLen = 12
	if len(b) < ndmsgLen || b[0] != unix.AF_INET {
		return netip.Addr{}, 0, false
	}
	ifindex := int32(nativeEndian.Uint32(b[4:8]))
	ad, err := mdnetlink.NewAttributeDecoder(b[ndmsgLen:])
	if err != nil {
		return netip.Addr{}, 0, false
	}
	var ip netip.Addr
	for ad.Next() {
		if ad.Type() == unix.NDA_DST {
			ip, _ = netip.AddrFromSlice(ad.Bytes())
		}
	}
	return ip, ifindex, ip.IsValid() && ad.Err() == nil
}

// Misses implements datapath.Driver.
func (d *Driver) Misses() <-chan datapath.Miss { return d.misses }

// MissDrops is the number of misses dropped because nobody read Misses.
func (d *Driver) MissDrops() uint64 { return d.missDrops.Load() }

// Counts implements datapath.Counter: every netlink write, namespace
// add/delete and sysctl write since New.
func (d *Driver) Counts() datapath.Counts { return d.ops.Counts() }

// Status implements datapath.Driver.
func (d *Driver) Status(id string) (datapath.EndpointStatus, bool) {
	d.smu.Lock()
	defer d.smu.Unlock()
	st := d.eps[id]
	if d.closed {
		return datapath.EndpointStatus{}, false
	}
	if st == nil {
		w, ok := d.waiting[id]
		return w, ok
	}
	s := st.status
	if err := d.failed[st.ep.VNI]; err != nil {
		s.PolicyErr = err.Error()
	}
	return s, true
}

// Close implements datapath.Driver: it stops the miss listeners and closes
// the handles, and leaves the data plane in place.
func (d *Driver) Close() error {
	d.closeObserver()
	if err := d.pool.close(false); err != nil {
		d.log.Warn("delete pooled namespaces", "err", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.smu.Lock()
	defer d.smu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	for _, vs := range d.vpcs {
		vs.stopListener()
	}
	d.wg.Wait()
	close(d.misses)
	for _, vs := range d.vpcs {
		vs.close()
	}
	d.vpcs = nil
	d.host.Close()
	d.hostNS.Close()
	d.log.Info("datapath closed")
	return nil
}

// Teardown removes everything the driver owns on this host: every VPC
// namespace with its devices, the host's QoS table and uplink qdisc, and
// every endpoint namespace it made (veths into namespaces it was given are
// deleted with their VPC side). It works on a closed driver too, so an
// agent can clean up after Close.
func (d *Driver) Teardown(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	vpcs, eps, err := d.listOwned()
	if err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	var errs []error
	for vni := range d.vpcs {
		vpcs[vni] = d.names.vpc(vni)
	}
	for vni := range vpcs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("teardown: %w", err)
		}
		errs = append(errs, d.removeVPC(vni))
	}
	for name := range eps {
		errs = append(errs, d.ops.Write(writes.NetnsDel, func() error { return deleteNamedNS(d.cfg.NetnsDir, name) }))
	}
	errs = append(errs, d.teardownHostQoS(), d.pool.close(true))
	d.smu.Lock()
	clear(d.eps)
	d.smu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	d.log.Info("datapath torn down", "vpcs", len(vpcs), "endpoint_namespaces", len(eps))
	return nil
}

// removeVPC deletes a VPC namespace and every device in it. Devices are
// deleted explicitly before the namespace is unpinned: namespace destruction
// is asynchronous, and a VXLAN device left to it would keep its VNI (and
// UDP port registration) in the host namespace for a while.
func (d *Driver) removeVPC(vni uint32) error {
	d.smu.Lock()
	vs := d.vpcs[vni]
	delete(d.vpcs, vni)
	d.smu.Unlock()
	var h *netlink.Handle
	if vs != nil {
		vs.stopListener()
		h = vs.h
	} else if fd, err := netns.GetFromPath(d.nsPath(d.names.vpc(vni))); err == nil {
		h, err = netlink.NewHandleAt(fd)
		fd.Close()
		if err != nil {
			return fmt.Errorf("remove vpc %d: netlink: %w", vni, err)
		}
		defer h.Close()
	}
	var errs []error
	if h != nil {
		links, err := writes.Dump("links", h.LinkList)
		if err != nil {
			errs = append(errs, err)
		}
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			errs = append(errs, d.ops.Write(writes.LinkDel, func() error { return h.LinkDel(l) }))
		}
	}
	if vs != nil {
		vs.close()
	}
	name := d.names.vpc(vni)
	errs = append(errs, d.ops.Write(writes.NetnsDel, func() error { return deleteNamedNS(d.cfg.NetnsDir, name) }))
	d.smu.Lock()
	for id, st := range d.eps {
		if st.ep.VNI == vni {
			delete(d.eps, id)
		}
	}
	d.smu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove vpc %d: %w", vni, err)
	}
	d.log.Info("vpc removed", "vni", vni)
	return nil
}
