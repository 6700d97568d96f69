package linux_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// TestQuickAttach: a Set that only adds an endpoint soon after a full one
// attaches it without reading the VPC namespace, writing what a full Set
// would; drift is repaired by the next full Set (one that is not only
// attaching).
func TestQuickAttach(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 2})
	ctx := t.Context()
	ep := func(name, ip string) datapath.Endpoint {
		a := netip.MustParseAddr(ip)
		return datapath.Endpoint{ID: "acme/" + name, VNI: 100, Subnet: "a", IP: a, MAC: epMAC(100, a), Identity: 1}
	}
	// The same attach on h1 with every Set reading everything: what the
	// quick one must write.
	var attachWrites [2]datapath.Counts
	var d *linux.Driver
	var desired *datapath.Desired
	for i, resync := range []time.Duration{-1, time.Hour} {
		h := n.Host(i)
		d = startDriver(t, n, h, func(c *linux.Config) { c.VPCResync = resync })
		desired = &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1], Endpoints: []datapath.Endpoint{ep("a", "10.0.1.10")}}
		if err := d.Set(ctx, desired); err != nil {
			t.Fatal(err)
		}
		desired.Endpoints = append(desired.Endpoints, ep("b", "10.0.1.11"))
		before := d.Counts()
		if err := d.Set(ctx, desired); err != nil {
			t.Fatal(err)
		}
		attachWrites[i] = d.Counts().Sub(before)
	}
	if diff := cmp.Diff(attachWrites[0], attachWrites[1]); diff != "" {
		t.Errorf("quick attach writes (-full +quick):\n%s", diff)
	}
	stA, _ := d.Status("acme/a")
	pctx, cancel := context.WithTimeout(ctx, firstPacketBudget)
	defer cancel()
	if _, err := testnet.Ping(pctx, stA.Netns, netip.MustParseAddr("10.0.1.11")); err != nil {
		t.Errorf("a -> b after a quick attach: %v", err)
	}
	// The same state again is a full Set: it writes nothing, and repairs b's
	// /32 route deleted behind the driver's back.
	before := d.Counts()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if c := d.Counts().Sub(before); len(c) != 0 {
		t.Errorf("an unchanged Set wrote %s", c)
	}
	vpc := handleIn(t, n.Dir()+"/"+n.Prefix()+"-h1-v100")
	dst := &net.IPNet{IP: net.IPv4(10, 0, 1, 11), Mask: net.CIDRMask(32, 32)}
	routes, err := vpc.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil || len(routes) != 1 {
		t.Fatalf("route to b: %v, %v", routes, err)
	}
	if err := vpc.RouteDel(&routes[0]); err != nil {
		t.Fatal(err)
	}
	before = d.Counts()
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(datapath.Counts{"route/add": 1}, d.Counts().Sub(before)); diff != "" {
		t.Errorf("repair writes (-want +got):\n%s", diff)
	}
}

// TestWaitingNetns: an endpoint whose given namespace does not exist yet
// is left unattached and reported waiting, without failing the Set; once a
// namespace is bound at its path, the next Set attaches it.
func TestWaitingNetns(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	d := startDriver(t, n, h)
	ctx := t.Context()
	pin := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pin, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	ipA, ipB := netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.11")
	desired := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1], Endpoints: []datapath.Endpoint{
		{ID: "acme/a", VNI: 100, Subnet: "a", IP: ipA, MAC: epMAC(100, ipA)},
		{ID: "acme/pooled", VNI: 100, Subnet: "a", IP: ipB, MAC: epMAC(100, ipB), Netns: pin, IfName: "net1"},
	}}
	if err := d.Set(ctx, desired); err != nil {
		t.Fatalf("Set with a waiting endpoint: %v", err)
	}
	st, ok := d.Status("acme/pooled")
	if !ok || st.Waiting == "" || st.Netns != pin || st.HostIfName != "" {
		t.Errorf("Status of the waiting endpoint = %+v, %v", st, ok)
	}
	if st, _ := d.Status("acme/a"); st.Waiting != "" {
		t.Errorf("acme/a waits: %+v", st)
	}
	// The runtime's namespace, bound at the path.
	ctr, err := n.AddNetns("ctr")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(ctr, pin, "none", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(pin, unix.MNT_DETACH) })
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	st, ok = d.Status("acme/pooled")
	if !ok || st.Waiting != "" || st.HostIfName != linux.VethName("acme/pooled") {
		t.Errorf("Status once bound = %+v, %v", st, ok)
	}
	pctx, cancel := context.WithTimeout(ctx, firstPacketBudget)
	defer cancel()
	if _, err := testnet.Ping(pctx, ctr, ipA); err != nil {
		t.Errorf("ping from the namespace bound at the path: %v", err)
	}
	if _, err := handleIn(t, ctr).LinkByName("net1"); err != nil {
		t.Errorf("net1 in the bound namespace: %v", err)
	}
}

// TestAttachWaiting: Attach attaches a waiting endpoint once its
// namespace is bound at its path, without a Set and even with every Set
// reading everything (VPCResync < 0); it writes what a Set would (the Set
// after it writes nothing), and refuses, changing nothing, an endpoint
// whose namespace does not exist yet.
func TestAttachWaiting(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	d := startDriver(t, n, h, func(c *linux.Config) { c.VPCResync = -1 })
	ctx := t.Context()
	dir := t.TempDir()
	pins := [2]string{filepath.Join(dir, "pin0"), filepath.Join(dir, "pin1")}
	for _, p := range pins {
		if err := os.WriteFile(p, nil, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	ips := [3]netip.Addr{netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.11"), netip.MustParseAddr("10.0.1.12")}
	desired := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1], Endpoints: []datapath.Endpoint{
		{ID: "acme/a", VNI: 100, Subnet: "a", IP: ips[0], MAC: epMAC(100, ips[0]), Identity: 1},
		{ID: "acme/p0", VNI: 100, Subnet: "a", IP: ips[1], MAC: epMAC(100, ips[1]), Identity: 2, Netns: pins[0]},
		{ID: "acme/p1", VNI: 100, Subnet: "a", IP: ips[2], MAC: epMAC(100, ips[2]), Identity: 3, Netns: pins[1]},
	}}
	if err := d.Set(ctx, desired); err != nil {
		t.Fatal(err)
	}
	before := d.Counts()
	if err := d.Attach(ctx, []string{"acme/p0"}); err == nil {
		t.Error("Attach of an endpoint whose namespace does not exist succeeded")
	}
	if st, _ := d.Status("acme/p0"); st.Waiting == "" || len(d.Counts().Sub(before)) != 0 {
		t.Errorf("a refused Attach changed something: status %+v, writes %s", st, d.Counts().Sub(before))
	}
	ctr, err := n.AddNetns("ctr")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(ctr, pins[0], "none", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(pins[0], unix.MNT_DETACH) })
	if err := d.Attach(ctx, []string{"acme/p0"}); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if st, ok := d.Status("acme/p0"); !ok || st.Waiting != "" || st.Netns != pins[0] || st.HostIfName != linux.VethName("acme/p0") {
		t.Errorf("Status after Attach = %+v, %v", st, ok)
	}
	if st, _ := d.Status("acme/p1"); st.Waiting == "" {
		t.Errorf("acme/p1 no longer waits: %+v", st)
	}
	pctx, cancel := context.WithTimeout(ctx, firstPacketBudget)
	defer cancel()
	if _, err := testnet.Ping(pctx, ctr, ips[0]); err != nil {
		t.Errorf("ping from the attached namespace: %v", err)
	}
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"Attach again", func() error { return d.Attach(ctx, []string{"acme/p0"}) }},
		{"the Set after it", func() error { return d.Set(ctx, desired) }},
	} {
		before := d.Counts()
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if c := d.Counts().Sub(before); len(c) != 0 {
			t.Errorf("%s wrote %s, want nothing", step.name, c)
		}
	}
}
