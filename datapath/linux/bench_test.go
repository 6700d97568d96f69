package linux_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

func benchState(h *testnet.Host, endpoints int) *datapath.Desired {
	d := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()}
	for i := range endpoints {
		vni := uint32(100 + 100*(i%2))
		ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(10 + i)})
		d.Endpoints = append(d.Endpoints, datapath.Endpoint{ID: fmt.Sprintf("t/e%d", i), VNI: vni, Subnet: "a", IP: ip, MAC: epMAC(vni, ip)})
	}
	return d
}

func reportWrites(b *testing.B, d *linux.Driver, before datapath.Counts) {
	b.ReportMetric(float64(d.Counts().Sub(before).Total())/float64(b.N), "writes/op")
}

// BenchmarkSetUnchanged is the cost of a Set that finds nothing to do: the
// reads of every VPC namespace, and of every endpoint namespace unless
// EndpointResync lets the driver trust its cache.
func BenchmarkSetUnchanged(b *testing.B) {
	for _, n := range []int{10, 50} {
		for _, resync := range []time.Duration{0, time.Minute} {
			b.Run(fmt.Sprintf("endpoints=%d/resync=%v", n, resync), func(b *testing.B) {
				tn := nettest.New(b, testnet.Options{})
				h := tn.Host(0)
				d := startDriver(b, tn, h, func(c *linux.Config) { c.EndpointResync = resync })
				st := benchState(h, n)
				if err := d.Set(b.Context(), st); err != nil {
					b.Fatal(err)
				}
				before := d.Counts()
				for b.Loop() {
					if err := d.Set(b.Context(), st); err != nil {
						b.Fatal(err)
					}
				}
				reportWrites(b, d, before)
			})
		}
	}
}

// BenchmarkEndpointAddRemove adds one endpoint (with a namespace the driver
// makes) to a host with 10 and removes it again: two Sets.
func BenchmarkEndpointAddRemove(b *testing.B) {
	tn := nettest.New(b, testnet.Options{})
	h := tn.Host(0)
	d := startDriver(b, tn, h, func(c *linux.Config) { c.EndpointResync = time.Minute })
	without := benchState(h, 10)
	with := benchState(h, 11)
	if err := d.Set(b.Context(), without); err != nil {
		b.Fatal(err)
	}
	before := d.Counts()
	for b.Loop() {
		if err := d.Set(b.Context(), with); err != nil {
			b.Fatal(err)
		}
		if err := d.Set(b.Context(), without); err != nil {
			b.Fatal(err)
		}
	}
	reportWrites(b, d, before)
}

// BenchmarkVPCAddRemove adds a VPC with one endpoint and removes it.
func BenchmarkVPCAddRemove(b *testing.B) {
	tn := nettest.New(b, testnet.Options{})
	h := tn.Host(0)
	d := startDriver(b, tn, h)
	empty := &datapath.Desired{Host: hostConfig(h)}
	one := benchState(h, 1)
	one.VPCs = one.VPCs[:1]
	before := d.Counts()
	for b.Loop() {
		if err := d.Set(b.Context(), one); err != nil {
			b.Fatal(err)
		}
		if err := d.Set(b.Context(), empty); err != nil {
			b.Fatal(err)
		}
	}
	reportWrites(b, d, before)
}

// BenchmarkFirstPacket is the round trip of an ICMP echo to a remote
// endpoint neither host has learned: the request is held on the sender's
// host until the (in-process) controller answers its miss, and the reply on
// the receiver's host likewise.
func BenchmarkFirstPacket(b *testing.B) {
	tn := nettest.New(b, testnet.Options{Hosts: 2})
	ctx, cancel := context.WithCancel(b.Context())
	ctl := newController(b)
	var ds []*linux.Driver
	ips := []netip.Addr{netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.1.11")}
	for i, h := range tn.Hosts() {
		d := startDriver(b, tn, h)
		ds = append(ds, d)
		st := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1],
			Endpoints: []datapath.Endpoint{{ID: fmt.Sprintf("acme/e%d", i), VNI: 100, Subnet: "a", IP: ips[i], MAC: epMAC(100, ips[i])}}}
		if err := d.Set(ctx, st); err != nil {
			b.Fatal(err)
		}
		ctl.put(datapath.Remote{VNI: 100, IP: ips[i], MAC: epMAC(100, ips[i]), HostUnderlay: h.UnderlayIP, Epoch: 1})
		ctl.serve(ctx, h.Name, d)
	}
	b.Cleanup(func() {
		cancel()
		ctl.wg.Wait()
	})
	st, _ := ds[0].Status("acme/e0")
	for b.Loop() {
		b.StopTimer()
		for i, d := range ds {
			if err := d.Forget(ctx, []datapath.RemoteKey{{VNI: 100, IP: ips[1-i]}}); err != nil {
				b.Fatal(err)
			}
		}
		pctx, pcancel := context.WithTimeout(ctx, firstPacketBudget)
		b.StartTimer()
		_, err := testnet.Ping(pctx, st.Netns, ips[1])
		pcancel()
		if err != nil {
			b.Fatalf("first packet lost: %v", err)
		}
	}
}
