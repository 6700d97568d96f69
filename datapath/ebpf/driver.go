package ebpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/htb"
	"github.com/weftnet/weft/datapath/internal/owned"
	"github.com/weftnet/weft/datapath/internal/writes"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/internal/netnsfile"
)

var (
	_ datapath.Driver      = (*Driver)(nil)
	_ datapath.Counter     = (*Driver)(nil)
	_ datapath.Snapshotter = (*Driver)(nil)
)

// ErrUnsupported marks a VPC the driver refuses because it cannot program
// what it asks for (today: an IPv6 subnet).
var ErrUnsupported = errors.New("ebpf datapath: not supported")

// Driver programs the eBPF data plane of one host. See the package
// documentation for the design.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	names  owned.Netns
	pinDir string
	hostNS netns.NsHandle
	nl     *netlink.Handle // in the host namespace
	objs   *objects
	ring   *ringbuf.Reader
	ops    writes.Counter
	life   lifecycle.Group // the miss reader

	misses    chan datapath.Miss
	missDrops atomic.Uint64

	// mu serializes the reconciler: Set, Snapshot, Close. The fast path
	// (Learn, Forget, Status) does not take it.
	mu sync.Mutex
	// smu guards what the fast path shares with the reconciler. Writers
	// hold mu and smu; the reconciler reads under mu alone.
	smu      sync.Mutex
	closed   bool
	vpcs     map[uint32]*vpcState // programmed VPCs
	eps      map[string]*epState  // programmed endpoints, by ID
	policies map[string]*epPolicy // their compiled policies, by ID
	// vpcDesired are the programmed VPCs as last asked for (a refused
	// VPC's QoS stays as it was).
	vpcDesired map[uint32]*datapath.VPC
	refused    map[uint32]refusal // VPCs of the last Set that failed alone
	qosErr     error              // why the uplink's QoS is not programmed
	underlay   netip.Addr         // of the last Set
	vxIndex    int                // the VXLAN device
	// pending are the misses reported since about a second (how long the
	// kernel holds their packets), to be released by Learn.
	pending map[datapath.RemoteKey]time.Time
	// noTCX says an attach found the kernel without tcx (HooksAuto then
	// uses legacy tc everywhere). Set's alone.
	noTCX bool
	// flushedFor is the policy digest the tracked connections were last
	// judged by (policyDigest).
	flushedFor string
	// polCache is what the policy maps hold as the last Set left them
	// (nil: unknown, read them) and mapsRead when a Set last read them and
	// the remotes map (Config.MapResync). Set's alone.
	polCache *policyMaps
	mapsRead time.Time
	// last is what the last full Set read and programmed, if it had no
	// error (setNewEndpoints). Set's alone.
	last *lastSet
}

type vpcState struct {
	remotes map[netip.Addr]remote // learned, by endpoint IP
}

type remote struct {
	host     netip.Addr
	identity uint32
	epoch    uint64
}

// epState is what the driver last programmed for an endpoint.
type epState struct {
	ep      datapath.Endpoint
	status  datapath.EndpointStatus
	ifindex int  // of the host-side veth
	qos     bool // under QoS: it or its VPC has some
	mtu     int  // of its veth
	// verified is when its namespace and hook were last read
	// (Config.EndpointResync).
	verified time.Time
}

// refusal is why a VPC is not programmed as asked, and whether its
// endpoints report it as a policy error, a QoS error or both.
type refusal struct {
	policy, qos bool
	err         error
}

// New mounts bpffs if needed, adopts the maps, programs and links an
// earlier driver of the same host and prefix pinned (loading and pinning
// what is missing), reads back the VPCs and learned remotes from the maps
// and starts the miss reader. Adopting intact state writes nothing.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Driver{
		cfg:      cfg,
		log:      cfg.Logger.With("subsystem", "datapath/ebpf", "host", cfg.HostName),
		names:    owned.NewNetns(cfg.Prefix, cfg.HostName),
		pinDir:   PinDir(cfg.BPFFS, cfg.Prefix, cfg.HostName),
		misses:   make(chan datapath.Miss, cfg.MissBuffer),
		vpcs:     map[uint32]*vpcState{},
		eps:      map[string]*epState{},
		policies: map[string]*epPolicy{},
		refused:  map[uint32]refusal{},
		pending:  map[datapath.RemoteKey]time.Time{},
		hostNS:   -1,
	}
	ok := false
	defer func() {
		if !ok {
			d.release()
		}
	}()
	var err error
	if d.hostNS, err = netns.GetFromPath(cfg.HostNetns); err != nil {
		return nil, fmt.Errorf("open host netns %s: %w", cfg.HostNetns, err)
	}
	if d.nl, err = netlink.NewHandleAt(d.hostNS); err != nil {
		return nil, fmt.Errorf("netlink in host netns: %w", err)
	}
	if err := ensureBPFFS(cfg.BPFFS, &d.ops); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d.objs, err = loadObjects(d.pinDir, &d.ops, d.log); err != nil {
		return nil, err
	}
	if err := d.adopt(); err != nil {
		return nil, err
	}
	if d.ring, err = ringbuf.NewReader(d.objs.Events); err != nil {
		return nil, fmt.Errorf("open miss ring buffer: %w", err)
	}
	if _, err := d.life.Start(); err != nil {
		return nil, err
	}
	d.life.Go(d.readMisses)
	ok = true
	d.log.Info("datapath started", "pins", d.pinDir, "adopted_vpcs", len(d.vpcs))
	return d, nil
}

// adopt reads back the VPCs and learned remotes (with their epochs) an
// earlier driver left in the maps, so that Learn works before the first Set.
func (d *Driver) adopt() error {
	var vni uint32
	var v weftVpc
	it := d.objs.Vpcs.Iterate()
	for it.Next(&vni, &v) {
		d.vpcs[vni] = &vpcState{remotes: map[netip.Addr]remote{}}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vpcs: %w", err)
	}
	var k weftVip
	var r weftRemoteEp
	it = d.objs.Remotes.Iterate()
	for it.Next(&k, &r) {
		if vs := d.vpcs[k.Vni]; vs != nil {
			vs.remotes[addrOf(k.Ip)] = remote{host: addrOf(r.Host), identity: r.Identity, epoch: r.Epoch}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read remotes: %w", err)
	}
	var cfg weftConfig
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err == nil {
		d.vxIndex = int(cfg.VxlanIfindex)
		d.underlay = addrOf(cfg.Underlay)
	}
	return nil
}

// readMisses turns the BPF programs' ring buffer records into Misses.
func (d *Driver) readMisses(ctx context.Context) {
	var rec ringbuf.Record
	for {
		if err := d.ring.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
				return
			}
			d.log.Warn("miss ring buffer", "err", err)
			continue
		}
		if len(rec.RawSample) < 8 {
			continue
		}
		m := datapath.Miss{VNI: binary.NativeEndian.Uint32(rec.RawSample), IP: addrOf(binary.NativeEndian.Uint32(rec.RawSample[4:]))}
		if d.cfg.MissMode == MissHold {
			d.smu.Lock()
			d.pending[datapath.RemoteKey(m)] = time.Now()
			d.smu.Unlock()
		}
		select {
		case d.misses <- m:
		default:
			d.missDrops.Add(1)
		}
	}
}

// Misses implements datapath.Driver.
func (d *Driver) Misses() <-chan datapath.Miss { return d.misses }

// MissDrops is the number of misses dropped because nobody read Misses.
func (d *Driver) MissDrops() uint64 { return d.missDrops.Load() }

// Counts implements datapath.Counter: every write to the maps, links,
// namespaces and pins since New.
func (d *Driver) Counts() datapath.Counts { return d.ops.Counts() }

// Status implements datapath.Driver.
func (d *Driver) Status(id string) (datapath.EndpointStatus, bool) {
	d.smu.Lock()
	defer d.smu.Unlock()
	st := d.eps[id]
	if st == nil || d.closed {
		return datapath.EndpointStatus{}, false
	}
	s := st.status
	if d.qosErr != nil && st.qos {
		s.QoSErr = d.qosErr.Error()
	}
	if r, ok := d.refused[st.ep.VNI]; ok {
		if r.policy {
			s.PolicyErr = r.err.Error()
		}
		if r.qos {
			s.QoSErr = r.err.Error()
		}
	}
	return s, true
}

// Close implements datapath.Driver: it stops the miss reader and closes
// its handles; the programs, maps and links stay pinned, so forwarding
// goes on while no agent runs (headless).
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.smu.Lock()
	if d.closed {
		d.smu.Unlock()
		return nil
	}
	d.closed = true
	d.smu.Unlock()
	d.release()
	d.log.Info("datapath closed")
	return nil
}

// release stops the reader and closes every handle (not the pins).
func (d *Driver) release() {
	_ = d.life.Close(func() error {
		if d.ring != nil {
			return d.ring.Close()
		}
		return nil
	})
	close(d.misses) // its one sender, the reader, has stopped
	if d.objs != nil {
		d.objs.close()
	}
	if d.nl != nil {
		d.nl.Close()
	}
	if d.hostNS >= 0 {
		d.hostNS.Close()
	}
}

// Teardown removes everything the driver owns on this host: the VXLAN
// device, the shaper veth, every host-side veth (with its peer; endpoint
// namespaces the driver made are deleted), the uplink's HTB tree, every
// link, program and map pinned in its pin directory, and the directory. It closes the driver first and works
// without a Set, so a restarted agent can clean up what an earlier one
// left.
func (d *Driver) Teardown(ctx context.Context) error {
	if err := d.Close(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	hostNS, err := netns.GetFromPath(d.cfg.HostNetns)
	if err != nil {
		return fmt.Errorf("teardown: open host netns: %w", err)
	}
	defer hostNS.Close()
	nl, err := netlink.NewHandleAt(hostNS)
	if err != nil {
		return fmt.Errorf("teardown: netlink: %w", err)
	}
	defer nl.Close()
	var errs []error
	links, err := writes.Dump("links", nl.LinkList)
	if err != nil {
		errs = append(errs, err)
	}
	qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return nl.QdiscList(nil) })
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		if name := l.Attrs().Name; name == VXLANName || name == ShaperName || isVethName(name) {
			errs = append(errs, d.ops.Write(writes.LinkDel, func() error { return nl.LinkDel(l) }))
		} else if root := htb.Root(qs, l.Attrs().Index); htb.Ours(root) {
			errs = append(errs, htb.Converge(nl, &d.ops, l, root, nil, 0))
		}
	}
	ents, err := os.ReadDir(d.cfg.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if d.names.IsEndpoint(e.Name()) {
			errs = append(errs, d.ops.Write(writes.NetnsDel, func() error { return netnsfile.Delete(d.cfg.NetnsDir, e.Name()) }))
		}
	}
	// Unpinning the links detaches them; the programs and maps go with
	// their last reference. The pins go even when ctx ended while the
	// devices went (a host of many endpoints, a short deadline): left,
	// they would hold the programs and maps in the kernel until a later
	// Teardown, and removing them takes microseconds.
	errs = append(errs, ctx.Err(), d.ops.Write(writes.PinDel, func() error { return os.RemoveAll(d.pinDir) }))
	_ = os.Remove(filepath.Dir(d.pinDir)) // the shared "weft" directory, once empty
	d.smu.Lock()
	clear(d.eps)
	clear(d.vpcs)
	d.smu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	d.log.Info("datapath torn down")
	return nil
}

// lookupConfig reads the config map's one entry.
func (d *Driver) lookupConfig() (weftConfig, error) {
	var c weftConfig
	err := d.objs.Config.Lookup(uint32(0), &c)
	return c, err
}
