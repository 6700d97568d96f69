package datapath_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/sim"
)

var (
	a    = netip.MustParseAddr
	p    = netip.MustParsePrefix
	host = datapath.HostConfig{Name: "h1", UnderlayIP: a("192.0.2.11"), UnderlayDev: "eth0"}
)

func base() *datapath.Desired {
	return &datapath.Desired{
		Host: host,
		VPCs: []datapath.VPC{
			{Tenant: "zeta", Name: "main", VNI: 200, Subnets: []datapath.Subnet{{Name: "a", CIDR: p("10.0.1.0/24")}}},
			{Tenant: "acme", Name: "main", VNI: 100, Subnets: []datapath.Subnet{
				{Name: "b", CIDR: p("10.0.2.0/24"), Gateway: a("10.0.2.254")},
				{Name: "a", CIDR: p("10.0.1.0/24")},
			}},
		},
		Endpoints: []datapath.Endpoint{
			{ID: "zeta/x", VNI: 200, Subnet: "a", IP: a("10.0.1.10"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}},
			{ID: "acme/x", VNI: 100, Subnet: "b", IP: a("10.0.2.10"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Netns: "/proc/1/ns/net", IfName: "net1"},
		},
	}
}

func TestNormalize(t *testing.T) {
	got, err := base().Normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := &datapath.Desired{
		Host: host,
		VPCs: []datapath.VPC{
			{Tenant: "acme", Name: "main", VNI: 100, Subnets: []datapath.Subnet{
				{Name: "a", CIDR: p("10.0.1.0/24"), Gateway: a("10.0.1.1")},
				{Name: "b", CIDR: p("10.0.2.0/24"), Gateway: a("10.0.2.254")},
			}},
			{Tenant: "zeta", Name: "main", VNI: 200, Subnets: []datapath.Subnet{{Name: "a", CIDR: p("10.0.1.0/24"), Gateway: a("10.0.1.1")}}},
		},
		Endpoints: []datapath.Endpoint{
			{ID: "acme/x", VNI: 100, Subnet: "b", IP: a("10.0.2.10"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1},
				Gateway: a("10.0.2.254"), Prefix: p("10.0.2.0/24"), Netns: "/proc/1/ns/net", IfName: "net1"},
			{ID: "zeta/x", VNI: 200, Subnet: "a", IP: a("10.0.1.10"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
				Gateway: a("10.0.1.1"), Prefix: p("10.0.1.0/24"), IfName: "eth0"},
		},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("Normalize (-want +got):\n%s", diff)
	}
	// The copy is deep: changing it leaves the input alone.
	in := base()
	n, _ := in.Normalize()
	n.Endpoints[1].MAC[5] = 9
	if in.Endpoints[0].MAC[5] != 2 {
		t.Error("Normalize shares MAC storage with its input")
	}
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(d *datapath.Desired)
		want   string // part of the error
	}{
		{"nil host name", func(d *datapath.Desired) { d.Host.Name = "" }, "empty name"},
		{"no underlay", func(d *datapath.Desired) { d.Host.UnderlayIP = netip.Addr{} }, "no underlay IP"},
		{"tiny MTU", func(d *datapath.Desired) { d.Host.MTU = 600 }, "MTU"},
		{"VNI too large", func(d *datapath.Desired) { d.VPCs[0].VNI = 1 << 24 }, "out of range"},
		{"duplicate VNI", func(d *datapath.Desired) { d.VPCs[0].VNI = 100 }, "duplicate VNI"},
		{"unmasked CIDR", func(d *datapath.Desired) { d.VPCs[0].Subnets[0].CIDR = p("10.0.1.5/24") }, "not a network prefix"},
		{"gateway is network address", func(d *datapath.Desired) { d.VPCs[0].Subnets[0].Gateway = a("10.0.1.0") }, "gateway"},
		{"overlap in VPC", func(d *datapath.Desired) { d.VPCs[1].Subnets[0].CIDR = p("10.0.0.0/16") }, "overlaps"},
		{"duplicate subnet name", func(d *datapath.Desired) { d.VPCs[1].Subnets[0].Name = "a" }, "duplicate subnet"},
		{"no ID", func(d *datapath.Desired) { d.Endpoints[0].ID = "" }, "empty ID"},
		{"duplicate ID", func(d *datapath.Desired) { d.Endpoints[1].ID = "zeta/x" }, "duplicate endpoint"},
		{"unknown subnet", func(d *datapath.Desired) { d.Endpoints[0].Subnet = "c" }, "no subnet"},
		{"IP outside", func(d *datapath.Desired) { d.Endpoints[0].IP = a("10.0.9.1") }, "not a host address"},
		{"prefix mismatch", func(d *datapath.Desired) { d.Endpoints[0].Prefix = p("10.0.0.0/16") }, "prefix"},
		{"gateway mismatch", func(d *datapath.Desired) { d.Endpoints[0].Gateway = a("10.0.1.2") }, "gateway"},
		{"short MAC", func(d *datapath.Desired) { d.Endpoints[0].MAC = net.HardwareAddr{2, 0, 0} }, "MAC"},
		{"zero MAC", func(d *datapath.Desired) { d.Endpoints[0].MAC = make(net.HardwareAddr, 6) }, "MAC"},
		{"long ifname", func(d *datapath.Desired) { d.Endpoints[0].IfName = "abcdefghijklmnop" }, "interface name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := base()
			tc.mutate(d)
			_, err := d.Normalize()
			if !errors.Is(err, datapath.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Normalize = %v; want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
	var nilD *datapath.Desired
	if _, err := nilD.Normalize(); !errors.Is(err, datapath.ErrInvalid) {
		t.Errorf("nil.Normalize = %v", err)
	}
}

func TestCounts(t *testing.T) {
	before := datapath.Counts{"link/add": 2, "route/add": 3}
	after := datapath.Counts{"link/add": 2, "route/add": 5, "route/del": 1, "neigh/del": 4}
	d := after.Sub(before)
	if diff := cmp.Diff(datapath.Counts{"route/add": 2, "route/del": 1, "neigh/del": 4}, d); diff != "" {
		t.Errorf("Sub (-want +got):\n%s", diff)
	}
	if d.Total() != 7 || d.Verb("del") != 5 || d.Verb("add") != 2 {
		t.Errorf("Total %d Verb(del) %d Verb(add) %d", d.Total(), d.Verb("del"), d.Verb("add"))
	}
	if got := d.String(); got != "neigh/del=4 route/add=2 route/del=1" {
		t.Errorf("String = %q", got)
	}
}

func TestRemoteValidate(t *testing.T) {
	good := datapath.Remote{VNI: 1, IP: a("10.0.0.1"), HostUnderlay: a("192.0.2.1")}
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
	for _, r := range []datapath.Remote{
		{IP: a("10.0.0.1"), HostUnderlay: a("192.0.2.1")},
		{VNI: 1, HostUnderlay: a("192.0.2.1")},
		{VNI: 1, IP: a("10.0.0.1")},
	} {
		if err := r.Validate(); !errors.Is(err, datapath.ErrInvalid) {
			t.Errorf("Validate(%+v) = %v", r, err)
		}
	}
}

// The agent hands a driver the whole state of its host, answers misses with
// Learn, and reads endpoint status back.
func Example() {
	ctx := context.Background()
	var d datapath.Driver = sim.New(sim.Config{})
	defer d.Close()
	desired := &datapath.Desired{
		Host: datapath.HostConfig{Name: "h1", UnderlayIP: netip.MustParseAddr("192.0.2.11"), UnderlayDev: "eth0"},
		VPCs: []datapath.VPC{{Tenant: "acme", Name: "main", VNI: 100,
			Subnets: []datapath.Subnet{{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")}}}},
		Endpoints: []datapath.Endpoint{{ID: "acme/web", VNI: 100, Subnet: "a",
			IP: netip.MustParseAddr("10.0.1.10"), MAC: net.HardwareAddr{2, 0, 10, 0, 1, 10}}},
	}
	if err := d.Set(ctx, desired); err != nil {
		fmt.Println(err)
		return
	}
	misses := d.Misses()
	// A packet from acme/web to an unknown peer (the sim resolves it in memory).
	dec, _ := d.(*sim.Driver).Resolve("acme/web", netip.MustParseAddr("10.0.1.20"))
	m := <-misses
	fmt.Println(dec.Verdict, m.VNI, m.IP)
	// The agent asks the controller and answers.
	_ = d.Learn(ctx, []datapath.Remote{{VNI: m.VNI, IP: m.IP, HostUnderlay: netip.MustParseAddr("192.0.2.12"), Epoch: 1}})
	dec, _ = d.(*sim.Driver).Resolve("acme/web", netip.MustParseAddr("10.0.1.20"))
	fmt.Println(dec.Verdict, dec.Host)
	st, _ := d.Status("acme/web")
	fmt.Println(st.Netns)
	// Output:
	// miss 100 10.0.1.20
	// remote 192.0.2.12
	// sim:/h1/acme/web
}

// TestResyncDue: never before the interval's half, always after the
// whole of it, always with a negative interval, and spread by id.
func TestResyncDue(t *testing.T) {
	const r = 20 * time.Second
	now := time.Now()
	due := 0
	for i := range 100 {
		id := fmt.Sprintf("acme/ep-%d", i)
		if datapath.ResyncDue(r, id, now.Add(-r/2+time.Second)) {
			t.Errorf("%s due before half the interval", id)
		}
		if !datapath.ResyncDue(r, id, now.Add(-r)) {
			t.Errorf("%s not due after the interval", id)
		}
		if !datapath.ResyncDue(-1, id, now) {
			t.Errorf("%s not due with a negative interval", id)
		}
		if datapath.ResyncDue(r, id, now.Add(-3*r/4)) {
			due++
		}
	}
	if due < 20 || due > 80 {
		t.Errorf("%d of 100 endpoints due at three quarters of the interval, want them spread (about half)", due)
	}
}
