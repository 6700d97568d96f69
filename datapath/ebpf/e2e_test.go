package ebpf_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	cebpf "github.com/cilium/ebpf"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// firstPacketBudget is how long the reply to a single probe may take: the
// first retransmission (ping's next echo, TCP's SYN retry) would come at
// about one second, so a reply within this budget means the first packet
// was held and delivered, not lost.
const firstPacketBudget = 900 * time.Millisecond

// controller plays the controller for a set of drivers: it answers each
// driver's misses with Learn from a table of endpoint locations.
type controller struct {
	t     testing.TB
	mu    sync.Mutex
	table map[datapath.RemoteKey]datapath.Remote
	wg    sync.WaitGroup
}

func newController(t testing.TB) *controller {
	return &controller{t: t, table: map[datapath.RemoteKey]datapath.Remote{}}
}

func (c *controller) put(r datapath.Remote) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.table[r.Key()] = r
}

// serve answers d's misses until Misses is closed or ctx ends.
func (c *controller) serve(ctx context.Context, d datapath.Driver) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		misses := d.Misses()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-misses:
				if !ok {
					return
				}
				c.mu.Lock()
				r, found := c.table[datapath.RemoteKey(m)]
				c.mu.Unlock()
				if !found {
					continue
				}
				if err := d.Learn(ctx, []datapath.Remote{r}); err != nil && ctx.Err() == nil && !errors.Is(err, datapath.ErrClosed) {
					c.t.Errorf("Learn(%+v): %v", r, err)
				}
			}
		}
	}()
}

// dc is a data centre under test: hosts with a driver each, a controller
// answering misses, and the desired state of every host.
type dc struct {
	t       testing.TB
	net     *testnet.Net
	drivers []*ebpf.Driver
	ctl     *controller
	vpcs    []datapath.VPC
	eps     map[int][]datapath.Endpoint // by host index
	hostOf  map[string]int              // endpoint ID -> host index
	nsPath  map[string]string           // endpoint ID -> netns, once programmed
	// capacity is each host's uplink capacity (HostConfig.CapacityBps).
	capacity map[int]uint64
	ctx      context.Context
}

func newDC(t *testing.T, hosts int, vpcs []datapath.VPC, mod ...func(*ebpf.Config)) *dc {
	n := nettest.New(t, testnet.Options{Hosts: hosts})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	c := &dc{t: t, net: n, ctl: newController(t), vpcs: vpcs, eps: map[int][]datapath.Endpoint{}, hostOf: map[string]int{}, nsPath: map[string]string{}, capacity: map[int]uint64{}, ctx: ctx}
	for _, h := range n.Hosts() {
		c.drivers = append(c.drivers, startDriver(t, n, h, mod...))
	}
	// Registered after the drivers: runs before their teardown.
	t.Cleanup(func() {
		cancel()
		c.ctl.wg.Wait()
	})
	for _, d := range c.drivers {
		c.ctl.serve(ctx, d)
	}
	return c
}

func epMAC(vni uint32, ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, byte(vni), b[0], b[1], b[2], b[3]}
}

// add places an endpoint on a host and tells the controller where it is.
func (c *dc) add(host int, id string, vni uint32, subnet, ip string) {
	a := netip.MustParseAddr(ip)
	e := datapath.Endpoint{ID: id, VNI: vni, Subnet: subnet, IP: a, MAC: epMAC(vni, a), Identity: vni}
	c.eps[host] = append(c.eps[host], e)
	c.hostOf[id] = host
	c.ctl.put(datapath.Remote{VNI: vni, IP: a, MAC: e.MAC, HostUnderlay: c.net.Host(host).UnderlayIP, Identity: vni, Epoch: 1})
}

func (c *dc) desired(host int) *datapath.Desired {
	hc := hostConfig(c.net.Host(host))
	hc.CapacityBps = c.capacity[host]
	return &datapath.Desired{Host: hc, VPCs: c.vpcs, Endpoints: c.eps[host]}
}

// setAll programs every host and returns the writes per host.
func (c *dc) setAll() []datapath.Counts {
	c.t.Helper()
	out := make([]datapath.Counts, len(c.drivers))
	for i, d := range c.drivers {
		before := d.Counts()
		if err := d.Set(c.ctx, c.desired(i)); err != nil {
			c.t.Fatalf("Set on %s: %v", c.net.Host(i).Name, err)
		}
		out[i] = d.Counts().Sub(before)
	}
	return out
}

// netns is the endpoint's namespace as its driver reported it (remembered,
// so that it is known while the driver is closed).
func (c *dc) netns(id string) string {
	c.t.Helper()
	if p, ok := c.nsPath[id]; ok {
		return p
	}
	st, ok := c.drivers[c.hostOf[id]].Status(id)
	if !ok {
		c.t.Fatalf("endpoint %q has no status", id)
	}
	c.nsPath[id] = st.Netns
	return st.Netns
}

func (c *dc) ping(from string, to netip.Addr, wait time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(c.ctx, wait)
	defer cancel()
	return testnet.Ping(ctx, c.netns(from), to)
}

func (c *dc) mustReach(t *testing.T, from string, to string) {
	t.Helper()
	if _, err := c.ping(from, netip.MustParseAddr(to), firstPacketBudget); err != nil {
		t.Errorf("%s -> %s: %v", from, to, err)
	}
}

// serveHello runs a TCP server answering its endpoint ID on port 8080 in
// every endpoint.
func (c *dc) serveHello() {
	for _, eps := range c.eps {
		for _, e := range eps {
			l, err := testnet.ListenTCP(c.netns(e.ID), netip.AddrPortFrom(e.IP, 8080).String())
			if err != nil {
				c.t.Fatal(err)
			}
			c.t.Cleanup(testnet.ServeHello(l, e.ID))
		}
	}
}

func (c *dc) hello(from string, to netip.Addr, wait time.Duration) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(c.ctx, wait)
	defer cancel()
	start := time.Now()
	got, err := testnet.Hello(ctx, c.netns(from), netip.AddrPortFrom(to, 8080).String())
	return got, time.Since(start), err
}

func twoTenants() []datapath.VPC {
	sub := func() []datapath.Subnet {
		return []datapath.Subnet{
			{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")},
			{Name: "b", CIDR: netip.MustParsePrefix("10.0.2.0/24")},
		}
	}
	return []datapath.VPC{
		{Tenant: "acme", Name: "main", VNI: 100, Subnets: sub()},
		{Tenant: "zeta", Name: "main", VNI: 200, Subnets: sub()},
	}
}

type durations []time.Duration

func (ds durations) String() string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("n=%d min=%v median=%v max=%v", len(s), s[0].Round(time.Microsecond), s[len(s)/2].Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
}

// TestConnectivityMatrix: two tenants with the same address space (VNIs
// 100 and 200) on two hosts. Every same-VPC pair reaches each other by
// ICMP and TCP, local and across the VXLAN device, the first packet to a
// never-seen peer is held, not lost, and nothing crosses VPCs, not even to
// the identical IP.
func TestConnectivityMatrix(t *testing.T) {
	c := newDC(t, 2, twoTenants())
	type epRef struct {
		id  string
		vni uint32
		ip  netip.Addr
	}
	var all []epRef
	for i := range 4 {
		subnet, third := "a", 1
		if i%2 == 1 {
			subnet, third = "b", 2
		}
		ip := fmt.Sprintf("10.0.%d.%d", third, 10+i)
		// The same IP lives on different hosts in the two tenants.
		c.add(i%2, fmt.Sprintf("acme/e%d", i), 100, subnet, ip)
		c.add((i+1)%2, fmt.Sprintf("zeta/e%d", i), 200, subnet, ip)
		all = append(all, epRef{fmt.Sprintf("acme/e%d", i), 100, netip.MustParseAddr(ip)}, epRef{fmt.Sprintf("zeta/e%d", i), 200, netip.MustParseAddr(ip)})
	}
	c.add(1, "acme/only", 100, "a", "10.0.1.200")
	all = append(all, epRef{"acme/only", 100, netip.MustParseAddr("10.0.1.200")})
	c.setAll()
	c.serveHello()

	var firstICMP, firstTCP, warm durations
	seen := map[string]bool{}
	firstFor := func(src, dst epRef) bool {
		sh, dh := c.hostOf[src.id], c.hostOf[dst.id]
		k := fmt.Sprintf("%d %d %s", sh, dst.vni, dst.ip)
		first := sh != dh && !seen[k]
		seen[k] = true
		seen[fmt.Sprintf("%d %d %s", dh, src.vni, src.ip)] = true
		return first
	}
	t.Run("same VPC", func(t *testing.T) {
		for _, kind := range []string{"first", "warm"} {
			for _, src := range all {
				for _, dst := range all {
					if src.id == dst.id || src.vni != dst.vni {
						continue
					}
					first := kind == "first" && firstFor(src, dst)
					icmpFirst := src.vni == 100
					if icmpFirst || kind == "warm" {
						rtt, err := c.ping(src.id, dst.ip, firstPacketBudget)
						if err != nil {
							t.Errorf("%s: %s -> %s: %v", kind, src.id, dst.id, err)
						}
						switch {
						case err == nil && first && icmpFirst:
							firstICMP = append(firstICMP, rtt)
						case err == nil && kind == "warm":
							warm = append(warm, rtt)
						}
					}
					got, took, err := c.hello(src.id, dst.ip, firstPacketBudget)
					if err != nil || got != dst.id {
						t.Errorf("%s: %s -> %s:8080 = %q, %v; want %q", kind, src.id, dst.ip, got, err, dst.id)
					} else if first && !icmpFirst {
						firstTCP = append(firstTCP, took)
					}
				}
			}
		}
	})
	t.Logf("first ICMP echo to a never-seen remote (two misses: request and reply): %v", firstICMP)
	t.Logf("first TCP connect to a never-seen remote (two misses: SYN and SYN-ACK): %v", firstTCP)
	t.Logf("ICMP echo to a learned remote or local peer: %v", warm)
	if len(firstICMP) == 0 || len(firstTCP) == 0 {
		t.Errorf("no first-packet probes measured (icmp %d, tcp %d)", len(firstICMP), len(firstTCP))
	}
	for id, vni := range map[string]uint32{"acme/e0": 100, "zeta/e1": 200} {
		tr, err := c.drivers[c.hostOf[id]].Traffic(t.Context())
		if err != nil {
			t.Fatalf("Traffic: %v", err)
		}
		i := slices.IndexFunc(tr.Endpoints, func(e datapath.EndpointTraffic) bool { return e.ID == id })
		if i < 0 {
			t.Errorf("Traffic: no counters of %s in %+v", id, tr.Endpoints)
			continue
		}
		if e := tr.Endpoints[i]; e.SentPackets == 0 || e.ReceivedPackets == 0 || e.SentBytes < e.SentPackets*28 || e.VNI != vni {
			t.Errorf("Traffic of %s = %+v; want traffic both ways in its VPC", id, e)
		}
	}

	t.Run("no cross-VPC", func(t *testing.T) {
		only := netip.MustParseAddr("10.0.1.200")
		var wg sync.WaitGroup
		for _, src := range all {
			if src.vni != 200 {
				continue
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				if _, err := c.ping(src.id, only, 300*time.Millisecond); err == nil {
					t.Errorf("%s reached acme/only at %s", src.id, only)
				}
			}()
			go func() {
				defer wg.Done()
				if got, _, err := c.hello(src.id, only, 300*time.Millisecond); err == nil {
					t.Errorf("%s got TCP answer %q from %s", src.id, got, only)
				}
			}()
		}
		wg.Wait()
	})
}

func twoHostDC(t *testing.T, mod ...func(*ebpf.Config)) *dc {
	c := newDC(t, 2, twoTenants()[:1], mod...)
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(0, "acme/c", 100, "b", "10.0.2.12")
	c.add(1, "acme/b", 100, "b", "10.0.2.11")
	c.setAll()
	return c
}

// handleIn opens a netlink handle in a namespace for the test to play the
// "someone else" who changes things behind the driver's back.
func handleIn(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	fd, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func (c *dc) pinDir(host int) string {
	return ebpf.PinDir("/sys/fs/bpf", c.net.Prefix(), c.net.Host(host).Name)
}

func pinnedMap(t *testing.T, dir, name string) *cebpf.Map {
	t.Helper()
	m, err := cebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestDriftRepair(t *testing.T) {
	// Drift inside an endpoint namespace and in the remotes map is
	// repaired once its resync interval has passed (DefaultEndpointResync
	// and DefaultMapResync without a setting), here shortened so that the
	// test need not wait: the failing pings below take longer.
	c := twoHostDC(t, func(c *ebpf.Config) { c.EndpointResync, c.MapResync = 100*time.Millisecond, 100*time.Millisecond })
	c.mustReach(t, "acme/a", "10.0.2.11")
	c.mustReach(t, "acme/a", "10.0.2.12")
	h0 := handleIn(t, c.net.Host(0).Path)

	// Behind the driver's back on h0: delete acme/c's veth, acme/a's
	// default route inside its namespace, the learned remote 10.0.2.11 and
	// the locals entry of acme/a, detach the VXLAN device's ingress
	// program and set the device down.
	veth, err := h0.LinkByName(ebpf.VethName("acme/c"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h0.LinkDel(veth); err != nil {
		t.Fatal(err)
	}
	epA := handleIn(t, c.netns("acme/a"))
	eth0, err := epA.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := epA.RouteDel(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatal(err)
	}
	dir := c.pinDir(0)
	key := func(ip string) []byte {
		b := make([]byte, 8)
		b[0] = 100
		copy(b[4:], netip.MustParseAddr(ip).AsSlice())
		return b
	}
	if err := pinnedMap(t, dir, "remotes").Delete(key("10.0.2.11")); err != nil {
		t.Fatal(err)
	}
	if err := pinnedMap(t, dir, "locals").Delete(key("10.0.1.10")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "links", "vxlan-ingress")); err != nil {
		t.Fatal(err)
	}
	vx, err := h0.LinkByName(ebpf.VXLANName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h0.LinkSetDown(vx); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{"acme/a", "10.0.2.11"}, {"acme/a", "10.0.2.12"}, {"acme/b", "10.0.1.10"}} {
		if _, err := c.ping(p[0], netip.MustParseAddr(p[1]), 200*time.Millisecond); err == nil {
			t.Errorf("%s -> %s works after the drift", p[0], p[1])
		}
	}

	writes := c.setAll()
	t.Logf("repair writes on h0: %s", writes[0])
	if writes[0].Total() == 0 {
		t.Error("Set repaired nothing on h0")
	}
	c.mustReach(t, "acme/a", "10.0.2.11")
	c.mustReach(t, "acme/a", "10.0.2.12")
	c.mustReach(t, "acme/c", "10.0.2.11")
	c.mustReach(t, "acme/b", "10.0.1.10")
	for i, w := range c.setAll() {
		if len(w) != 0 {
			t.Errorf("host %d: Set after repair wrote %s", i, w)
		}
	}
}

// TestRestartAdoptsWithoutWrites: the agent dies (Close) with a ping
// running across the host, a new driver adopts the pinned state (with a
// policy, a cap, a minimum on the uplink and a tracked connection): New,
// Set of the same state and Learn of the same remotes write nothing, and
// not one ping is lost.
func TestRestartAdoptsWithoutWrites(t *testing.T) {
	c := twoHostDC(t)
	c.capacity[0] = 1000 * mbit
	c.eps[0][0].Policy = &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true,
		Ingress: []datapath.Rule{{Name: "acme", Identities: []uint32{100}}}, Egress: []datapath.Rule{{Name: "vpc", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}}}}
	c.eps[0][0].QoS = &datapath.QoS{MaxRateBps: 500 * mbit, MinRateBps: 100 * mbit, Priority: 2, DSCP: 10}
	c.setAll()
	c.mustReach(t, "acme/a", "10.0.2.11")
	c.mustReach(t, "acme/b", "10.0.1.10")
	desired := c.desired(0)
	snap := func(d *ebpf.Driver) datapath.Snapshot {
		s, err := d.Snapshot(c.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := snap(c.drivers[0])
	if len(before.Remotes) == 0 {
		t.Fatal("nothing learned before the restart")
	}
	for _, id := range []string{"acme/a", "acme/b", "acme/c"} {
		c.netns(id) // remember before the driver is gone
	}
	pinger, err := testnet.StartPinger(c.netns("acme/a"), netip.MustParseAddr("10.0.2.11"), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)

	// The agent dies: forwarding goes on headless.
	if err := c.drivers[0].Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	d := startDriver(t, c.net, c.net.Host(0))
	if n := d.Counts(); len(n) != 0 {
		t.Errorf("New wrote %s", n)
	}
	if err := d.Learn(c.ctx, []datapath.Remote{{VNI: 100, IP: netip.MustParseAddr("10.0.2.11"), HostUnderlay: c.net.Host(1).UnderlayIP, Identity: 100, Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Set(c.ctx, desired); err != nil {
		t.Fatal(err)
	}
	if n := d.Counts(); len(n) != 0 {
		t.Errorf("Set after restart wrote %s; want no writes of correct state", n)
	}
	time.Sleep(500 * time.Millisecond) // pings after the Set, too
	st, err := pinger.Stop(500 * time.Millisecond)
	if err != nil {
		t.Error(err)
	}
	t.Logf("pinger across the restart: sent %d, received %d, max rtt %v", st.Sent, st.Received, st.MaxRTT)
	if len(st.Lost) != 0 || st.Sent < 20 {
		t.Errorf("pings lost across the restart: %v of %d", st.Lost, st.Sent)
	}
	opts := []cmp.Option{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })}
	if diff := cmp.Diff(before, snap(d), opts...); diff != "" {
		t.Errorf("state changed over the restart (-before +after):\n%s", diff)
	}
	for _, id := range []string{"acme/a", "acme/c"} {
		if st, ok := d.Status(id); !ok || st.Netns != c.netns(id) {
			t.Errorf("Status(%s) = %+v, %v after restart", id, st, ok)
		}
	}
	// The adopted remote is managed: Forget removes it, a miss re-learns it.
	c.drivers[0] = d
	c.ctl.serve(c.ctx, d)
	if err := d.Forget(c.ctx, []datapath.RemoteKey{{VNI: 100, IP: netip.MustParseAddr("10.0.2.11")}}); err != nil {
		t.Fatal(err)
	}
	if w := d.Counts(); w["map/del"] != 1 {
		t.Errorf("Forget of an adopted remote wrote %s; want map/del=1", w)
	}
	c.mustReach(t, "acme/a", "10.0.2.11")
}

// kernelObjects are the IDs of every program, map and link a driver pinned.
type kernelObjects struct {
	progs []cebpf.ProgramID
	maps  []cebpf.MapID
	links []link.ID
}

func pinnedObjects(t *testing.T, dir string) kernelObjects {
	t.Helper()
	var o kernelObjects
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		switch {
		case strings.Contains(path, "/links/"):
			l, err := link.LoadPinnedLink(path, nil)
			if err != nil {
				return err
			}
			defer l.Close()
			info, err := l.Info()
			if err != nil {
				return err
			}
			o.links = append(o.links, info.ID)
		case strings.Contains(path, "/progs-"):
			p, err := cebpf.LoadPinnedProgram(path, nil)
			if err != nil {
				return err
			}
			defer p.Close()
			info, err := p.Info()
			if err != nil {
				return err
			}
			id, _ := info.ID()
			o.progs = append(o.progs, id)
		default:
			m, err := cebpf.LoadPinnedMap(path, nil)
			if err != nil {
				return err
			}
			defer m.Close()
			info, err := m.Info()
			if err != nil {
				return err
			}
			id, _ := info.ID()
			o.maps = append(o.maps, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// alive lists the objects of o the kernel still has.
func (o kernelObjects) alive() []string {
	var out []string
	for _, id := range o.progs {
		if p, err := cebpf.NewProgramFromID(id); err == nil {
			p.Close()
			out = append(out, fmt.Sprintf("program %d", id))
		}
	}
	for _, id := range o.maps {
		if m, err := cebpf.NewMapFromID(id); err == nil {
			m.Close()
			out = append(out, fmt.Sprintf("map %d", id))
		}
	}
	for _, id := range o.links {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			out = append(out, fmt.Sprintf("link %d", id))
		}
	}
	return out
}

// TestTeardown: Teardown leaves no program, map, link, pin, device,
// qdisc or namespace of the driver's.
func TestTeardown(t *testing.T) {
	c := twoHostDC(t)
	c.capacity[0] = 1000 * mbit
	c.eps[0][0].QoS = &datapath.QoS{MaxRateBps: 500 * mbit, MinRateBps: 100 * mbit}
	c.setAll()
	c.mustReach(t, "acme/a", "10.0.2.11")
	dir := c.pinDir(0)
	objs := pinnedObjects(t, dir)
	t.Logf("pinned on h0: %d programs, %d maps, %d links", len(objs.progs), len(objs.maps), len(objs.links))
	if len(objs.progs) != 4 || len(objs.maps) != 16 || len(objs.links) != 3 {
		t.Errorf("pinned %d programs, %d maps, %d links; want 4, 16 and 3 (two VXLAN hooks, the shaper's; endpoints have tc filters)", len(objs.progs), len(objs.maps), len(objs.links))
	}
	ns := c.netns("acme/a")
	if err := c.drivers[0].Teardown(c.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s: %v; want it gone", dir, err)
	}
	if _, err := os.Stat(ns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("endpoint namespace %s: %v; want it gone", ns, err)
	}
	h0 := handleIn(t, c.net.Host(0).Path)
	links, err := h0.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, ebpf.LinkPrefix) {
			t.Errorf("link %s left on h0", l.Attrs().Name)
		}
	}
	qs, err := h0.QdiscList(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Attrs().Handle>>16 == 0x7766 {
			t.Errorf("qdisc %s %x left on h0", q.Type(), q.Attrs().Handle)
		}
	}
	// The kernel frees maps after an RCU grace period: wait for it.
	deadline := time.Now().Add(20 * time.Second)
	for left := objs.alive(); len(left) > 0; left = objs.alive() {
		if time.Now().After(deadline) {
			t.Fatalf("left in the kernel after Teardown: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// h1 still works and misses for h0's endpoints go unanswered.
	if _, err := c.ping("acme/b", netip.MustParseAddr("10.0.1.10"), 300*time.Millisecond); err == nil {
		t.Error("acme/b reaches acme/a after h0's teardown")
	}
}

// TestRefusedVPC: a VPC the driver cannot program (an IPv6 subnet) fails
// alone, with the reason in its endpoints' status; it keeps what was
// programmed, and the other VPC is programmed.
func TestRefusedVPC(t *testing.T) {
	c := newDC(t, 1, twoTenants())
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(0, "zeta/a", 200, "a", "10.0.1.10")
	c.setAll()
	d := c.drivers[0]
	before, err := d.Snapshot(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		mutate   func(*datapath.Desired)
		policy   bool
		qos      bool
		contains string
	}{
		{"IPv6 subnet", func(s *datapath.Desired) {
			s.VPCs[1].Subnets = append(s.VPCs[1].Subnets, datapath.Subnet{Name: "v6", CIDR: netip.MustParsePrefix("fd00::/64")})
		}, true, true, "only IPv4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := c.desired(0)
			s.VPCs = twoTenants()
			s.Endpoints = slices.Clone(s.Endpoints)
			// acme gets a new endpoint, zeta a new one too, while zeta is refused.
			s.Endpoints = append(s.Endpoints,
				datapath.Endpoint{ID: "acme/new", VNI: 100, Subnet: "a", IP: netip.MustParseAddr("10.0.1.11"), MAC: epMAC(100, netip.MustParseAddr("10.0.1.11"))},
				datapath.Endpoint{ID: "zeta/new", VNI: 200, Subnet: "a", IP: netip.MustParseAddr("10.0.1.12"), MAC: epMAC(200, netip.MustParseAddr("10.0.1.12"))})
			tc.mutate(s)
			err := d.Set(c.ctx, s)
			if !errors.Is(err, ebpf.ErrUnsupported) || !strings.Contains(err.Error(), "vpc 200") || !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("Set = %v; want ErrUnsupported naming vpc 200 and %q", err, tc.contains)
			}
			st, ok := d.Status("zeta/a")
			if !ok || (st.PolicyErr != "") != tc.policy || (st.QoSErr != "") != tc.qos {
				t.Errorf("Status(zeta/a) = %+v, %v; want policy error %v, QoS error %v", st, ok, tc.policy, tc.qos)
			}
			if st, ok := d.Status("acme/new"); !ok || st.PolicyErr != "" || st.QoSErr != "" {
				t.Errorf("Status(acme/new) = %+v, %v; want programmed without error", st, ok)
			}
			if _, ok := d.Status("zeta/new"); ok {
				t.Error("zeta/new attached in a refused VPC")
			}
			c.mustReach(t, "acme/a", "10.0.1.11")
			c.mustReach(t, "zeta/a", "10.0.1.1")
			got, err := d.Snapshot(c.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(got.Endpoints); n != len(before.Endpoints)+1 {
				t.Errorf("snapshot has %d endpoints, want %d (zeta as before, acme/new added): %+v", n, len(before.Endpoints)+1, got.Endpoints)
			}
			w := d.Counts()
			if err := d.Set(c.ctx, s); !errors.Is(err, ebpf.ErrUnsupported) {
				t.Errorf("second Set = %v", err)
			}
			if n := d.Counts().Sub(w); len(n) != 0 {
				t.Errorf("retried Set of a refused VPC wrote %s", n)
			}
			// Back to what the driver can enforce.
			c.setAll()
			if st, _ := d.Status("zeta/a"); st.PolicyErr != "" || st.QoSErr != "" {
				t.Errorf("Status(zeta/a) = %+v after the fix", st)
			}
		})
	}
}

// TestEndpointResyncCache: within EndpointResync an unchanged endpoint's
// namespace and hook are trusted, not read (what keeps a Set that attaches
// one endpoint from reading every other one); an endpoint whose device
// lost its clsact qdisc is read again and repaired at once, as is every
// endpoint after the interval.
func TestEndpointResyncCache(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	const resync = time.Hour
	d := startDriver(t, n, h, func(c *ebpf.Config) { c.EndpointResync = resync })
	a := netip.MustParseAddr("10.0.1.10")
	desired := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1],
		Endpoints: []datapath.Endpoint{{ID: "acme/a", VNI: 100, Subnet: "a", IP: a, MAC: epMAC(100, a)}}}
	ctx := t.Context()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	st, _ := d.Status("acme/a")
	inside := handleIn(t, st.Netns)
	eth0, err := inside.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	defaultRoute := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
	if err := inside.RouteDel(defaultRoute); err != nil {
		t.Fatal(err)
	}
	set := func(what string, want datapath.Counts) {
		t.Helper()
		before := d.Counts()
		if err := d.Set(ctx, desired); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, d.Counts().Sub(before)); diff != "" {
			t.Errorf("%s: writes (-want +got):\n%s", what, diff)
		}
	}
	// Trusted: the missing route is not seen, and attaching a second
	// endpoint reads and writes only that one.
	set("Set with a fresh cache", datapath.Counts{})
	b := netip.MustParseAddr("10.0.1.11")
	desired.Endpoints = append(desired.Endpoints, datapath.Endpoint{ID: "acme/b", VNI: 100, Subnet: "a", IP: b, MAC: epMAC(100, b)})
	before := d.Counts()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if got := d.Counts().Sub(before)["route/add"]; got != 1 {
		t.Errorf("attaching acme/b added %d routes, want 1 (its own default route; acme/a's is not read)", got)
	}
	// The veth lost its clsact qdisc (and so its program): the endpoint is
	// read again, hook and inside.
	host := handleIn(t, h.Path)
	veth, err := host.LinkByName(ebpf.VethName("acme/a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := host.QdiscDel(&netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{LinkIndex: veth.Attrs().Index,
		Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(netlink.HANDLE_CLSACT>>16, 0)}}); err != nil {
		t.Fatal(err)
	}
	set("Set after the clsact qdisc went", datapath.Counts{"qdisc/add": 1, "filter/set": 1, "route/add": 1})
	if _, err := inside.RouteGet(net.IPv4(10, 0, 2, 1)); err != nil {
		t.Errorf("acme/a has no route after the repair: %v", err)
	}
}

// TestMapResyncCache: within MapResync a Set trusts the remotes map as
// Learn and Forget left it (an entry deleted behind its back is not seen:
// nothing was read) yet still deletes the remotes of a VPC that goes; the
// first Set after the interval reads the map and repairs it.
func TestMapResyncCache(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	const resync = 300 * time.Millisecond
	d := startDriver(t, n, h, func(c *ebpf.Config) { c.MapResync = resync })
	ctx := t.Context()
	desired := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()}
	set := func(what string, want datapath.Counts) {
		t.Helper()
		before := d.Counts()
		if err := d.Set(ctx, desired); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, d.Counts().Sub(before)); diff != "" {
			t.Errorf("%s: writes (-want +got):\n%s", what, diff)
		}
	}
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	var rs []datapath.Remote
	for _, r := range []struct {
		vni uint32
		ip  string
	}{{100, "10.0.2.20"}, {100, "10.0.2.21"}, {200, "10.0.2.20"}} {
		a := netip.MustParseAddr(r.ip)
		rs = append(rs, datapath.Remote{VNI: r.vni, IP: a, MAC: epMAC(r.vni, a), HostUnderlay: netip.MustParseAddr("192.0.2.99"), Epoch: 1})
	}
	if err := d.Learn(ctx, rs); err != nil {
		t.Fatal(err)
	}
	remotes := pinnedMap(t, ebpf.PinDir("/sys/fs/bpf", n.Prefix(), h.Name), "remotes")
	key := func(vni uint32, ip string) []byte {
		b := make([]byte, 8)
		b[0], b[1] = byte(vni), byte(vni>>8)
		copy(b[4:], netip.MustParseAddr(ip).AsSlice())
		return b
	}
	count := func() int {
		n := 0
		var k, v []byte
		for it := remotes.Iterate(); it.Next(&k, &v); {
			n++
		}
		return n
	}
	start := time.Now()
	set("Set of the same state", datapath.Counts{})
	if err := remotes.Delete(key(100, "10.0.2.21")); err != nil {
		t.Fatal(err)
	}
	set("Set within MapResync after a remote went behind its back", datapath.Counts{})
	if time.Since(start) >= resync {
		t.Skipf("the machine is too slow for a %v interval", resync)
	}
	// VNI 200 goes: its remote goes with it, from memory.
	desired.VPCs = desired.VPCs[:1]
	before := d.Counts()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 1 {
		t.Errorf("remotes map holds %d entries after VNI 200 went, want 1 (10.0.2.20 of VNI 100)", got)
	}
	t.Logf("writes when VNI 200 went: %s", d.Counts().Sub(before))
	time.Sleep(resync)
	set("first Set after MapResync", datapath.Counts{"map/put": 1})
	if got := count(); got != 2 {
		t.Errorf("remotes map holds %d entries after the repair, want 2", got)
	}
}
