package linux_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// firstPacketBudget is how long the reply to a single probe may take: the
// first retransmission (ping's next echo, TCP's SYN retry) would come at
// about one second, so a reply within this budget means the first packet
// was held and delivered, not lost.
const firstPacketBudget = 900 * time.Millisecond

// dc is a data centre under test: hosts with a driver each, a controller
// answering misses, and the desired state of every host.
type dc struct {
	t       *testing.T
	net     *testnet.Net
	drivers []*linux.Driver
	ctl     *controller
	vpcs    []datapath.VPC
	eps     map[int][]datapath.Endpoint // by host index
	hostOf  map[string]int              // endpoint ID -> host index
	nsPath  map[string]string           // endpoint ID -> netns, once programmed
	cancel  context.CancelFunc
	ctx     context.Context
}

func newDC(t *testing.T, hosts int, vpcs []datapath.VPC, mod ...func(*linux.Config)) *dc {
	n := nettest.New(t, testnet.Options{Hosts: hosts})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	c := &dc{t: t, net: n, ctl: newController(t), vpcs: vpcs, eps: map[int][]datapath.Endpoint{}, hostOf: map[string]int{}, nsPath: map[string]string{}, ctx: ctx, cancel: cancel}
	for _, h := range n.Hosts() {
		c.drivers = append(c.drivers, startDriver(t, n, h, mod...))
	}
	// Registered after the drivers: runs before their teardown.
	t.Cleanup(func() {
		cancel()
		c.ctl.wg.Wait()
	})
	for i, d := range c.drivers {
		c.ctl.serve(ctx, n.Host(i).Name, d)
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
	return &datapath.Desired{Host: hostConfig(c.net.Host(host)), VPCs: c.vpcs, Endpoints: c.eps[host]}
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

// TestConnectivityMatrix: two tenants with the same address space (VNIs 100
// and 200), three hosts, eight endpoints per tenant over two subnets. Every
// same-VPC pair reaches each other by ICMP and TCP, the first packet to a
// never-seen peer is not lost, and nothing crosses VPCs, not even to the
// identical IP.
func TestConnectivityMatrix(t *testing.T) {
	c := newDC(t, 3, twoTenants())
	type epRef struct {
		id  string
		vni uint32
		ip  netip.Addr
	}
	var all []epRef
	for i := range 8 {
		subnet, third := "a", 1
		if i%2 == 1 {
			subnet, third = "b", 2
		}
		ip := fmt.Sprintf("10.0.%d.%d", third, 10+i)
		// The same IP lives on different hosts in the two tenants.
		c.add(i%3, fmt.Sprintf("acme/e%d", i), 100, subnet, ip)
		c.add((i+1)%3, fmt.Sprintf("zeta/e%d", i), 200, subnet, ip)
		all = append(all, epRef{fmt.Sprintf("acme/e%d", i), 100, netip.MustParseAddr(ip)}, epRef{fmt.Sprintf("zeta/e%d", i), 200, netip.MustParseAddr(ip)})
	}
	// An address only acme has, on host 2.
	c.add(2, "acme/only", 100, "a", "10.0.1.200")
	all = append(all, epRef{"acme/only", 100, netip.MustParseAddr("10.0.1.200")})
	c.setAll()
	c.serveHello()

	// ICMP first in acme and TCP first in zeta, so that both kinds of first
	// packet meet never-seen peers.
	var firstICMP, firstTCP, warm durations
	seen := map[string]bool{} // "srcHost vni ip" learned by the source host
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
							t.Errorf("%s: ping %s (%s): %v", kind, dst.ip, dst.id, err)
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

	t.Run("no cross-VPC", func(t *testing.T) {
		// acme's only address from every zeta endpoint: zeta's miss finds
		// nothing in VNI 200, so no reply, nor a TCP answer. Probes run in
		// parallel: each waits its full timeout.
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

// TestVXLANSocketInHostNamespace: the VXLAN device lives in the VPC
// namespace but its UDP socket stays in the host namespace, on the
// underlay.
func TestVXLANSocketInHostNamespace(t *testing.T) {
	c := newDC(t, 1, twoTenants()[:1])
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.setAll()
	const port = ":12B5" // 4789 in /proc/thread-self/net/udp
	udp := func(path string) string {
		var b []byte
		if err := netnsfile.Do(path, func() error {
			var err error
			b, err = os.ReadFile("/proc/thread-self/net/udp")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if s := udp(c.net.Host(0).Path); !strings.Contains(s, port) {
		t.Errorf("host namespace has no UDP socket on 4789:\n%s", s)
	}
	vpcNS := c.net.Dir() + "/" + c.net.Prefix() + "-h0-v100"
	if s := udp(vpcNS); strings.Contains(s, port) {
		t.Errorf("VPC namespace has a UDP socket on 4789:\n%s", s)
	}
}

// handleIn opens a netlink handle in a namespace for the test to play the
// "someone else" who changes things behind the driver's back.
func handleIn(t *testing.T, path string) *netlink.Handle {
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

func twoHostDC(t *testing.T, mod ...func(*linux.Config)) *dc {
	c := newDC(t, 2, twoTenants()[:1], mod...)
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(0, "acme/c", 100, "b", "10.0.2.12")
	c.add(1, "acme/b", 100, "b", "10.0.2.11")
	c.setAll()
	return c
}

func (c *dc) mustReach(t *testing.T, from string, to string) {
	t.Helper()
	if _, err := c.ping(from, netip.MustParseAddr(to), firstPacketBudget); err != nil {
		t.Errorf("%s -> %s: %v", from, to, err)
	}
}

func TestDriftRepair(t *testing.T) {
	// Drift inside an endpoint namespace is repaired once its resync
	// interval has passed (DefaultEndpointResync without a setting), here
	// shortened so that the test need not wait.
	const resync = 100 * time.Millisecond
	c := twoHostDC(t, func(c *linux.Config) { c.EndpointResync = resync })
	c.mustReach(t, "acme/a", "10.0.2.11")
	c.mustReach(t, "acme/a", "10.0.2.12")
	p := c.net.Dir() + "/" + c.net.Prefix()
	vpc0 := handleIn(t, p+"-h0-v100")

	// Behind the driver's back: delete acme/c's veth, the subnet route to
	// remote 10.0.1.0/24 on h0, acme/a's default route inside its namespace,
	// and set h0's VXLAN device down.
	veth, err := vpc0.LinkByName(linux.VethName("acme/c"))
	if err != nil {
		t.Fatal(err)
	}
	if err := vpc0.LinkDel(veth); err != nil {
		t.Fatal(err)
	}
	routes, err := vpc0.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: linux.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for _, r := range routes {
		if r.Dst.String() == "10.0.2.0/24" {
			if err := vpc0.RouteDel(&r); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
	}
	if deleted != 1 {
		t.Fatalf("found %d routes to 10.0.2.0/24 in %v", deleted, routes)
	}
	epA := handleIn(t, c.netns("acme/a"))
	eth0, err := epA.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := epA.RouteDel(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatal(err)
	}
	vx, err := vpc0.LinkByName("wftx100")
	if err != nil {
		t.Fatal(err)
	}
	if err := vpc0.LinkSetDown(vx); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"10.0.2.11", "10.0.2.12"} {
		if _, err := c.ping("acme/a", netip.MustParseAddr(to), 200*time.Millisecond); err == nil {
			t.Errorf("acme/a -> %s works after the drift", to)
		}
	}

	time.Sleep(resync)
	writes := c.setAll()
	t.Logf("repair writes on h0: %s", writes[0])
	if writes[0].Total() == 0 {
		t.Error("Set repaired nothing on h0")
	}
	c.mustReach(t, "acme/a", "10.0.2.11")
	c.mustReach(t, "acme/a", "10.0.2.12")
	c.mustReach(t, "acme/c", "10.0.2.11")
	for i, w := range c.setAll() {
		if len(w) != 0 {
			t.Errorf("host %d: Set after repair wrote %s", i, w)
		}
	}

	t.Run("VPC namespace unpinned", func(t *testing.T) {
		if err := netnsfile.Delete(c.net.Dir(), c.net.Prefix()+"-h1-v100"); err != nil {
			t.Fatal(err)
		}
		writes := c.setAll()
		t.Logf("repair writes on h1: %s", writes[1])
		if writes[1]["netns/add"] != 1 {
			t.Errorf("h1 did not re-create its VPC namespace: %s", writes[1])
		}
		c.mustReach(t, "acme/a", "10.0.2.11")
		c.mustReach(t, "acme/b", "10.0.1.10")
	})
}

func TestRestartAdoptsWithoutWrites(t *testing.T) {
	c := twoHostDC(t)
	c.mustReach(t, "acme/a", "10.0.2.11")
	desired := c.desired(0)
	snap := func(d *linux.Driver) datapath.Snapshot {
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
	// The agent dies: forwarding goes on headless.
	if err := c.drivers[0].Close(); err != nil {
		t.Fatal(err)
	}
	c.mustReach(t, "acme/a", "10.0.2.11")

	d := startDriver(t, c.net, c.net.Host(0))
	if n := d.Counts(); len(n) != 0 {
		t.Errorf("New wrote %s", n)
	}
	// New adopted the learned remote: the same answer again changes nothing.
	if err := d.Learn(c.ctx, []datapath.Remote{{VNI: 100, IP: netip.MustParseAddr("10.0.2.11"), HostUnderlay: c.net.Host(1).UnderlayIP, Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Set(c.ctx, desired); err != nil {
		t.Fatal(err)
	}
	if n := d.Counts(); len(n) != 0 {
		t.Errorf("Set after restart wrote %s; want no deletes or re-adds of correct state", n)
	}
	opts := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	if diff := cmp.Diff(before, snap(d), opts, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("state changed over the restart (-before +after):\n%s", diff)
	}
	for _, id := range []string{"acme/a", "acme/c"} {
		if st, ok := d.Status(id); !ok || st.Netns != c.netns(id) {
			t.Errorf("Status(%s) = %+v, %v after restart", id, st, ok)
		}
	}
	c.mustReach(t, "acme/a", "10.0.2.11")

	// The adopted remote is managed: Forget removes it, a miss re-learns it.
	c.drivers[0] = d
	c.ctl.serve(c.ctx, "h0-restarted", d)
	if err := d.Forget(c.ctx, []datapath.RemoteKey{{VNI: 100, IP: netip.MustParseAddr("10.0.2.11")}}); err != nil {
		t.Fatal(err)
	}
	w := d.Counts()
	if w["neigh/del"] != 1 || w["fdb/del"] != 1 {
		t.Errorf("Forget of an adopted remote wrote %s; want neigh/del=1 fdb/del=1", w)
	}
	c.mustReach(t, "acme/a", "10.0.2.11")
}

func TestTeardown(t *testing.T) {
	c := twoHostDC(t)
	c.mustReach(t, "acme/a", "10.0.2.11")
	own := c.net.Prefix() + "-h0-"
	if err := c.drivers[0].Teardown(c.ctx); err != nil {
		t.Fatal(err)
	}
	names, err := c.net.Names()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, own) {
			t.Errorf("namespace %s left after Teardown", n)
		}
	}
	host := handleIn(t, c.net.Host(0).Path)
	links, err := host.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, linux.LinkPrefix) {
			t.Errorf("link %s left in the host namespace", l.Attrs().Name)
		}
	}
	routes, err := host.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: linux.RouteProtocol, Table: 0}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 0 {
		t.Errorf("routes of protocol %d left: %v", linux.RouteProtocol, routes)
	}
	neighs, err := host.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 {
			t.Errorf("permanent neighbour left in the host namespace: %+v", n)
		}
	}
	var udp []byte
	if err := c.net.Host(0).Do(func() error {
		udp, err = os.ReadFile("/proc/thread-self/net/udp")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(udp), ":12B5") {
		t.Errorf("VXLAN socket left in the host namespace:\n%s", udp)
	}
	// The other host is untouched, and h0 can be programmed again.
	if _, ok := c.drivers[1].Status("acme/b"); !ok {
		t.Error("h1 lost its endpoint")
	}
	c.setAll()
	c.mustReach(t, "acme/a", "10.0.2.11")
}

// TestEndpointResyncCache: with EndpointResync set, an unchanged endpoint's
// namespace is trusted (not re-read) until the interval passes; drift in the
// VPC namespace is still repaired on every Set.
func TestEndpointResyncCache(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	d := startDriver(t, n, h, func(c *linux.Config) { c.EndpointResync = time.Hour })
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
	if err := inside.RouteDel(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatal(err)
	}
	vpc := handleIn(t, n.Dir()+"/"+n.Prefix()+"-h0-v100")
	lo, err := vpc.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 0, 1, 1), Mask: net.CIDRMask(32, 32)}}
	if err := vpc.AddrDel(lo, gw); err != nil {
		t.Fatal(err)
	}
	before := d.Counts()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(datapath.Counts{"addr/add": 1}, d.Counts().Sub(before)); diff != "" {
		t.Errorf("Set with a fresh cache: writes (-want +got):\n%s", diff)
	}
	// A changed endpoint is re-read even within the interval (its new
	// identity is stamped by the policy table).
	desired.Endpoints[0].Identity = 7
	before = d.Counts()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(datapath.Counts{"route/add": 1, "nftables/commit": 1}, d.Counts().Sub(before)); diff != "" {
		t.Errorf("Set of a changed endpoint: writes (-want +got):\n%s", diff)
	}
}

// TestGivenNetns attaches an endpoint to a namespace someone else made (as a
// container runtime would, through CNI) and detaches it again.
func TestGivenNetns(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	d := startDriver(t, n, h)
	ctr, err := n.AddNetns("ctr1")
	if err != nil {
		t.Fatal(err)
	}
	ipA, ipB := netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.2.10")
	given := datapath.Endpoint{ID: "acme/ctr", VNI: 100, Subnet: "a", IP: ipA, MAC: epMAC(100, ipA), Netns: ctr, IfName: "net1"}
	own := datapath.Endpoint{ID: "acme/vm", VNI: 100, Subnet: "b", IP: ipB, MAC: epMAC(100, ipB)}
	desired := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1], Endpoints: []datapath.Endpoint{given, own}}
	ctx := t.Context()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	st, ok := d.Status("acme/ctr")
	if want := (datapath.EndpointStatus{Netns: ctr, IfName: "net1", HostIfName: linux.VethName("acme/ctr")}); !ok || st != want {
		t.Errorf("Status = %+v, %v; want %+v", st, ok, want)
	}
	pctx, cancel := context.WithTimeout(ctx, firstPacketBudget)
	defer cancel()
	if _, err := testnet.Ping(pctx, ctr, ipB); err != nil {
		t.Errorf("ping from the given namespace: %v", err)
	}

	desired.Endpoints = desired.Endpoints[1:]
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Status("acme/ctr"); ok {
		t.Error("detached endpoint still has a status")
	}
	if _, err := handleIn(t, ctr).LinkByName("net1"); err == nil {
		t.Error("net1 still in the given namespace after detach")
	}
	if names, _ := n.Names(); !slices.Contains(names, n.Prefix()+"-ctr1") {
		t.Errorf("the given namespace was deleted: %v", names)
	}
}
