package ebpf_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

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

// BenchmarkConntrackCost measures what policy costs a connection's
// packets: TCP request/response (one byte each way, back to back) between
// endpoints on two hosts, in interleaved rounds (WEFT_BENCH_ROUNDS,
// default 15, of 1 s), with no policy and with both ends isolated by a
// policy that allows everything (every packet is looked up in the
// connection map on both hosts, and the first one judged). Run it alone:
// go test -run - -bench ConntrackCost -benchtime 1x.
func BenchmarkConntrackCost(b *testing.B) {
	c := newBenchDC(b)
	a, z := c.eps[0][0], c.eps[1][0]
	l, err := testnet.ListenTCP(c.netns(z.ID), netip.AddrPortFrom(z.IP, 7000).String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(testnet.ServeEcho(l, ""))
	open := &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true,
		Ingress: []datapath.Rule{{Name: "all", AllPeers: true}}, Egress: []datapath.Rule{{Name: "all", AllPeers: true}}}
	modes := []struct {
		name   string
		policy *datapath.EndpointPolicy
		rates  []float64
	}{{name: "none"}, {name: "isolated, allow all", policy: open}}
	load := loadAvg()
	rounds := envInt("WEFT_BENCH_ROUNDS", 15)
	for b.Loop() {
		for round := range rounds {
			for k := range modes {
				m := &modes[(round+k)%len(modes)]
				for h := range c.eps {
					c.eps[h][0].Policy = m.policy
				}
				c.setAll()
				rate, err := rrRate(c.ctx, c.netns(a.ID), netip.AddrPortFrom(z.IP, 7000), time.Second)
				if err != nil {
					b.Fatal(err)
				}
				m.rates = append(m.rates, rate)
			}
		}
	}
	med := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	var ratios []float64
	for i := range modes[0].rates {
		ratios = append(ratios, modes[1].rates[i]/modes[0].rates[i])
	}
	b.Logf("load average %s at the start, %s at the end", load, loadAvg())
	b.Logf("request/response per s, median of %d rounds: no policy %.0f, isolated %.0f; ratio %.3f (%.3f..%.3f)",
		rounds, med(modes[0].rates), med(modes[1].rates), med(ratios), slices.Min(ratios), slices.Max(ratios))
	b.ReportMetric(med(ratios), "isolated/none")
}

// newBenchDC is two hosts with one endpoint each, learned both ways.
func newBenchDC(b *testing.B) *dc {
	n := nettest.New(b, testnet.Options{Hosts: 2})
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	b.Cleanup(cancel)
	c := &dc{t: b, net: n, ctl: newController(b), vpcs: twoTenants()[:1], eps: map[int][]datapath.Endpoint{}, hostOf: map[string]int{},
		nsPath: map[string]string{}, capacity: map[int]uint64{}, ctx: ctx}
	for _, h := range n.Hosts() {
		c.drivers = append(c.drivers, startDriver(b, n, h))
	}
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(1, "acme/z", 100, "b", "10.0.2.10")
	for i, d := range c.drivers {
		if err := d.Set(ctx, c.desired(i)); err != nil {
			b.Fatal(err)
		}
	}
	for i, d := range c.drivers {
		j := 1 - i
		e := c.eps[j][0]
		if err := d.Learn(ctx, []datapath.Remote{{VNI: 100, IP: e.IP, MAC: e.MAC, HostUnderlay: n.Host(j).UnderlayIP, Identity: 100, Epoch: 1}}); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// rrRate exchanges one byte each way over one connection from the
// namespace at ns to dst, back to back, for d: the rate per second.
func rrRate(ctx context.Context, ns string, dst netip.AddrPort, d time.Duration) (float64, error) {
	conn, err := testnet.DialTCP(ctx, ns, dst.String())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	buf := make([]byte, 1)
	n := 0
	for start := time.Now(); time.Since(start) < d; n++ {
		if _, err := conn.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return 0, err
		}
	}
	return float64(n) / d.Seconds(), nil
}

// BenchmarkAttach measures one Set attaching WEFT_BENCH_ATTACH endpoints
// (default 100) on a host with nothing attached, for each hook mode, in
// interleaved rounds (WEFT_BENCH_ROUNDS, default 3; a driver torn down
// after each): a tcx link costs each endpoint an RCU grace period, legacy
// tc does not. Run it alone: go test -run - -bench Attach -benchtime 1x.
func BenchmarkAttach(b *testing.B) {
	n := nettest.New(b, testnet.Options{Hosts: 1})
	h := n.Host(0)
	vpcs := twoTenants()[:1]
	var eps []datapath.Endpoint
	for i := range envInt("WEFT_BENCH_ATTACH", 100) {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(1 + i/200), byte(10 + i%200)})
		subnet := "a"
		if i >= 200 {
			subnet = "b"
		}
		eps = append(eps, datapath.Endpoint{ID: fmt.Sprintf("bench/a%d", i), VNI: 100, Subnet: subnet, IP: ip, MAC: epMAC(100, ip)})
	}
	modes := []ebpf.Hooks{ebpf.HooksTCX, ebpf.HooksTC, ebpf.HooksAuto}
	rates := map[ebpf.Hooks][]float64{}
	load := loadAvg()
	rounds := envInt("WEFT_BENCH_ROUNDS", 3)
	for b.Loop() {
		for round := range rounds {
			for k := range modes {
				m := modes[(round+k)%len(modes)]
				cfg := config(n, h, b)
				cfg.Hooks = m
				d, err := ebpf.New(b.Context(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				hc := hostConfig(h)
				if err := d.Set(b.Context(), &datapath.Desired{Host: hc, VPCs: vpcs}); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				err = d.Set(b.Context(), &datapath.Desired{Host: hc, VPCs: vpcs, Endpoints: eps})
				took := time.Since(start)
				if terr := d.Teardown(context.Background()); err != nil || terr != nil {
					b.Fatal(err, terr)
				}
				rates[m] = append(rates[m], float64(len(eps))/took.Seconds())
			}
		}
	}
	b.Logf("load average %s at the start, %s at the end", load, loadAvg())
	for _, m := range modes {
		r := slices.Clone(rates[m])
		slices.Sort(r)
		b.Logf("hooks %s: one Set of %d endpoints, endpoints/s median %.1f (%.1f..%.1f) of %d rounds", m, len(eps), r[len(r)/2], r[0], r[len(r)-1], len(r))
		b.ReportMetric(r[len(r)/2], string(m)+"-endpoints/s")
	}
}
