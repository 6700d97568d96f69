package ebpf_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// overlay is one endpoint on each of two test hosts, learned both ways,
// programmed by some driver.
type overlay struct {
	from, to string // endpoint namespaces
	dst      netip.Addr
}

func pairState(h *testnet.Host, i int) (*datapath.Desired, datapath.Endpoint) {
	ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(10 + i)})
	e := datapath.Endpoint{ID: fmt.Sprintf("bench/tp%d", i), VNI: 100, Subnet: "a", IP: ip, MAC: epMAC(100, ip), Identity: 100}
	return &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1], Endpoints: []datapath.Endpoint{e}}, e
}

// buildPair programs the two hosts of n with newDriver and learns each
// endpoint on the other host.
func buildPair(b *testing.B, n *testnet.Net, newDriver func(h *testnet.Host) datapath.Driver) overlay {
	var ds []datapath.Driver
	var eps []datapath.Endpoint
	var ns []string
	for i, h := range n.Hosts() {
		d := newDriver(h)
		st, e := pairState(h, i)
		if err := d.Set(b.Context(), st); err != nil {
			b.Fatal(err)
		}
		s, _ := d.Status(e.ID)
		ds, eps, ns = append(ds, d), append(eps, e), append(ns, s.Netns)
	}
	for i, d := range ds {
		j := 1 - i
		if err := d.Learn(b.Context(), []datapath.Remote{{VNI: 100, IP: eps[j].IP, MAC: eps[j].MAC, HostUnderlay: n.Host(j).UnderlayIP, Identity: 100, Epoch: 1}}); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(b.Context(), 2*time.Second)
	defer cancel()
	if _, err := testnet.Ping(ctx, ns[0], eps[1].IP); err != nil {
		b.Fatal(err)
	}
	return overlay{from: ns[0], to: ns[1], dst: eps[1].IP}
}

// BenchmarkThroughput measures one TCP stream over the ebpf driver's
// overlay, the linux driver's overlay and a plain veth pair, in
// interleaved rounds (WEFT_BENCH_ROUNDS, default 15), each round starting
// with another path, as sim/bench's datapath throughput phase does. It
// reports the medians and the ranges of the per-round ratios to the veth
// pair. Run it alone: go test -run - -bench Throughput -benchtime 1x.
func BenchmarkThroughput(b *testing.B) {
	for _, mtu := range []int{1500, 9000} {
		b.Run(fmt.Sprintf("mtu=%d", mtu), func(b *testing.B) {
			rounds := envInt("WEFT_BENCH_ROUNDS", 15)
			en := nettest.New(b, testnet.Options{Hosts: 2, MTU: mtu})
			eo := buildPair(b, en, func(h *testnet.Host) datapath.Driver { return startDriver(b, en, h) })
			ln := nettest.New(b, testnet.Options{Hosts: 2, MTU: mtu})
			lo := buildPair(b, ln, func(h *testnet.Host) datapath.Driver {
				d, err := linux.New(b.Context(), linux.Config{HostName: h.Name, Prefix: ln.Prefix(), HostNetns: h.Path, NetnsDir: ln.Dir(), Logger: logger(b)})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					_ = d.Teardown(ctx)
					d.Close()
				})
				return d
			})
			vp, err := en.AddVethPair("vp", netip.MustParsePrefix("10.255.0.1/24"), netip.MustParsePrefix("10.255.0.2/24"), 0)
			if err != nil {
				b.Fatal(err)
			}
			type path struct {
				name     string
				from, to string
				dst      netip.Addr
				gbps     []float64
				sndCPU   []float64 // ms per GB
				rcvCPU   []float64
			}
			paths := []*path{
				{name: "veth", from: vp.APath, to: vp.BPath, dst: vp.B.Addr()},
				{name: "ebpf", from: eo.from, to: eo.to, dst: eo.dst},
				{name: "linux", from: lo.from, to: lo.to, dst: lo.dst},
			}
			load := loadAvg()
			for b.Loop() {
				for r := range rounds {
					for k := range paths {
						p := paths[(r+k)%len(paths)]
						res, err := testnet.Stream(b.Context(), testnet.StreamOptions{From: p.from, To: p.to, Addr: netip.AddrPortFrom(p.dst, 5201), SenderCPU: -1, ReceiverCPU: -1})
						if err != nil {
							b.Fatalf("%s: %v", p.name, err)
						}
						gb := float64(res.Bytes) / 1e9
						p.gbps = append(p.gbps, res.Gbps())
						p.sndCPU = append(p.sndCPU, float64(res.SenderCPU.Milliseconds())/gb)
						p.rcvCPU = append(p.rcvCPU, float64(res.ReceiverCPU.Milliseconds())/gb)
					}
				}
			}
			veth := paths[0]
			b.Logf("load average %s at the start, %s at the end; %d rounds", load, loadAvg(), rounds)
			for _, p := range paths {
				ratios := make([]float64, len(p.gbps))
				for i := range p.gbps {
					ratios[i] = p.gbps[i] / veth.gbps[i]
				}
				b.Logf("%-5s %6.2f Gbit/s (%.2f..%.2f), /veth %.3f (%.3f..%.3f), CPU ms/GB sender %.0f receiver %.0f",
					p.name, median(p.gbps), slices.Min(p.gbps), slices.Max(p.gbps), median(ratios), slices.Min(ratios), slices.Max(ratios),
					median(p.sndCPU), median(p.rcvCPU))
				b.ReportMetric(median(p.gbps), p.name+"-Gbit/s")
				if p != veth {
					b.ReportMetric(median(ratios), p.name+"/veth")
				}
			}
		})
	}
}

// BenchmarkFirstPacket measures the first exchange with a never-seen peer
// on another host, whose host has not learned the sender either (request
// and reply both miss), in both miss modes: an ICMP echo (one packet, so
// only a held one can come back) and a TCP connect (a dropped SYN or
// SYN-ACK is retransmitted after a second). WEFT_BENCH_PEERS peers
// (default 100; a tenth of them in drop mode, where each takes seconds).
// Run it alone: go test -run - -bench FirstPacket -benchtime 1x.
func BenchmarkFirstPacket(b *testing.B) {
	for _, mode := range []ebpf.MissMode{ebpf.MissHold, ebpf.MissDrop} {
		b.Run(string(mode), func(b *testing.B) {
			peers := envInt("WEFT_BENCH_PEERS", 100)
			if mode == ebpf.MissDrop {
				peers = max(1, peers/10)
			}
			n := nettest.New(b, testnet.Options{Hosts: 2})
			ctl := newController(b)
			ctx, cancel := context.WithCancel(b.Context())
			var ds []*ebpf.Driver
			for _, h := range n.Hosts() {
				ds = append(ds, startDriver(b, n, h, func(c *ebpf.Config) { c.MissMode = mode }))
			}
			b.Cleanup(func() {
				cancel()
				ctl.wg.Wait()
			})
			src := datapath.Endpoint{ID: "bench/src", VNI: 100, Subnet: "a", IP: netip.MustParseAddr("10.0.1.5"), MAC: epMAC(100, netip.MustParseAddr("10.0.1.5"))}
			var dsts []datapath.Endpoint
			for i := range peers {
				ip := netip.AddrFrom4([4]byte{10, 0, 2, byte(10 + i)})
				dsts = append(dsts, datapath.Endpoint{ID: fmt.Sprintf("bench/p%d", i), VNI: 100, Subnet: "b", IP: ip, MAC: epMAC(100, ip)})
			}
			for i, eps := range [][]datapath.Endpoint{{src}, dsts} {
				if err := ds[i].Set(ctx, &datapath.Desired{Host: hostConfig(n.Host(i)), VPCs: twoTenants()[:1], Endpoints: eps}); err != nil {
					b.Fatal(err)
				}
				for _, e := range eps {
					ctl.put(datapath.Remote{VNI: 100, IP: e.IP, MAC: e.MAC, HostUnderlay: n.Host(i).UnderlayIP, Epoch: 1})
				}
				ctl.serve(ctx, ds[i])
			}
			srcNS := func() string { s, _ := ds[0].Status(src.ID); return s.Netns }()
			for _, e := range dsts {
				s, _ := ds[1].Status(e.ID)
				l, err := testnet.ListenTCP(s.Netns, netip.AddrPortFrom(e.IP, 8080).String())
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(testnet.ServeHello(l, e.ID))
			}
			forget := func(e datapath.Endpoint) {
				if err := ds[0].Forget(ctx, []datapath.RemoteKey{{VNI: 100, IP: e.IP}}); err != nil {
					b.Fatal(err)
				}
				if err := ds[1].Forget(ctx, []datapath.RemoteKey{{VNI: 100, IP: src.IP}}); err != nil {
					b.Fatal(err)
				}
			}
			var icmp, tcp durations
			lost := 0
			load := loadAvg()
			for b.Loop() {
				for _, e := range dsts {
					if mode == ebpf.MissHold {
						forget(e)
						pctx, pcancel := context.WithTimeout(ctx, firstPacketBudget)
						rtt, err := testnet.Ping(pctx, srcNS, e.IP)
						pcancel()
						if err != nil {
							lost++
						} else {
							icmp = append(icmp, rtt)
						}
					}
					forget(e)
					cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
					start := time.Now()
					got, err := testnet.Hello(cctx, srcNS, netip.AddrPortFrom(e.IP, 8080).String())
					ccancel()
					if err != nil || got != e.ID {
						b.Fatalf("hello %s: %q, %v", e.IP, got, err)
					}
					tcp = append(tcp, time.Since(start))
				}
			}
			b.Logf("load average %s at the start, %s at the end", load, loadAvg())
			if mode == ebpf.MissHold {
				b.Logf("ICMP echo, first to a never-seen peer (%d lost): %v p99=%v", lost, icmp, percentile(icmp, 99))
				b.ReportMetric(float64(percentile(icmp, 50).Microseconds())/1e3, "icmp-p50-ms")
				b.ReportMetric(float64(percentile(icmp, 99).Microseconds())/1e3, "icmp-p99-ms")
			}
			b.Logf("TCP connect+hello, first to a never-seen peer: %v p99=%v", tcp, percentile(tcp, 99))
			b.ReportMetric(float64(percentile(tcp, 50).Microseconds())/1e3, "tcp-p50-ms")
			b.ReportMetric(float64(percentile(tcp, 99).Microseconds())/1e3, "tcp-p99-ms")
		})
	}
}
