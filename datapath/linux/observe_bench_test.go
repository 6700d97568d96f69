package linux_test

import (
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/testnet"
)

// streamState is one state of the data path a stream benchmark compares:
// set puts it in place.
type streamState struct {
	name string
	set  func()
}

// compareStreams measures one TCP stream from one netns to another
// (internal/testnet Stream, as the data plane benchmark does) in each
// state, rounds times, the states taking turns (interleaved, each round
// starting with the next), and reports each state's throughput and CPU
// per byte (the stream threads', the softirq work in their context
// included) against the first state's: the median of the per-round ratios
// with their range, as the metric unit names (units[i] for states[i]; the
// first is the baseline and has none). With WEFT_STREAM_WINDOWS set it
// logs each round's CLOCK_MONOTONIC window and bytes, so that a system
// profile can be cut by state (CPU per byte of a hook's functions, which
// other work on the machine does not inflate the way it does throughput).
func compareStreams(b *testing.B, rounds int, from, to string, addr netip.AddrPort, states []streamState, units []string) {
	sc, rc := -1, -1
	if runtime.NumCPU() > 1 {
		sc, rc = 0, 1
	}
	windows := os.Getenv("WEFT_STREAM_WINDOWS") != ""
	gbps := make([][]float64, len(states))
	cpuPerGB := make([][]float64, len(states)) // CPU seconds of the stream's threads per GB
	for b.Loop() {
		for r := range rounds {
			for k := range states {
				i := (r + k) % len(states)
				states[i].set()
				t0 := monotonic()
				res, err := testnet.Stream(b.Context(), testnet.StreamOptions{From: from, To: to,
					Addr: addr, Warmup: 200 * time.Millisecond, Duration: time.Second, SenderCPU: sc, ReceiverCPU: rc})
				if err != nil {
					b.Fatalf("%s: %v", states[i].name, err)
				}
				if windows {
					// For a profile taken with `perf record -k CLOCK_MONOTONIC`:
					// the state's window and what it carried.
					b.Logf("window %q %d %d %d", states[i].name, t0, monotonic(), res.Bytes)
				}
				gbps[i] = append(gbps[i], res.Gbps())
				cpuPerGB[i] = append(cpuPerGB[i], (res.SenderCPU+res.ReceiverCPU).Seconds()/(float64(res.Bytes)/1e9))
			}
		}
	}
	for i := range states {
		b.Logf("%-24s Gbit/s: median %.2f, rounds %.2f", states[i].name, median(gbps[i]), gbps[i])
		b.Logf("%-24s CPU s/GB: median %.3f", states[i].name, median(cpuPerGB[i]))
	}
	for i := 1; i < len(states); i++ {
		unit := units[i]
		var ratios []float64
		for r := range gbps[0] {
			ratios = append(ratios, gbps[i][r]/gbps[0][r])
		}
		b.Logf("%s: median %.3f, range %.3f..%.3f over %d rounds", unit, median(ratios), slices.Min(ratios), slices.Max(ratios), len(ratios))
		b.ReportMetric(median(ratios), unit)
		var cost []float64 // CPU per byte without / with: >= 0.99 is at most 1% more work
		for r := range cpuPerGB[0] {
			cost = append(cost, cpuPerGB[0][r]/cpuPerGB[i][r])
		}
		b.Logf("%s, CPU per byte without/with: median %.3f, range %.3f..%.3f", unit, median(cost), slices.Min(cost), slices.Max(cost))
		b.ReportMetric(median(cost), unit+"-cpu")
	}
}

// monotonic reads CLOCK_MONOTONIC in nanoseconds.
func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// BenchmarkObserveHooks is the cost of traces and captures to the traffic
// they do not select: one TCP stream between endpoints on two hosts while
// nothing is observed, while a live trace of another endpoint of the same
// VPC on the sending host is armed and firing (its trace table is in the
// VPC router's namespace and every packet passes its chains), while a
// capture of that endpoint runs (a packet socket on its veth, with a
// filter taking everything), and while a dropped-only capture of it runs
// (trace rules in the VPC router, like a trace). Goals (issue 13): idle
// hooks >= 0.99 of without; with a capture on one endpoint, the others
// >= 0.95. The report is as BenchmarkFlowHooks's.
//
//	go test ./datapath/linux -run '^$' -bench ObserveHooks -benchtime 1x -v
//
// WEFT_OBSERVE_ROUNDS sets the rounds (default 15).
func BenchmarkObserveHooks(b *testing.B) {
	rounds := envInt(b, "WEFT_OBSERVE_ROUNDS", 15)
	c := newBenchDC(b)
	n := c.net
	for _, h := range n.Hosts() {
		c.drivers = append(c.drivers, startDriver(b, n, h))
	}
	c.add(0, "acme/tp0", 100, "a", "10.0.1.10")
	c.add(0, "acme/other", 100, "a", "10.0.1.11")
	c.add(1, "acme/tp1", 100, "a", "10.0.1.20")
	for h, d := range c.drivers {
		if err := d.Set(c.ctx, c.desired(h)); err != nil {
			b.Fatal(err)
		}
	}
	for i, d := range c.drivers {
		for _, e := range c.eps[1-i] {
			if err := d.Learn(c.ctx, []datapath.Remote{{VNI: 100, IP: e.IP, MAC: e.MAC, HostUnderlay: n.Host(1 - i).UnderlayIP, Epoch: 1}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The drivers' observations must be read.
	for _, d := range c.drivers {
		go func() {
			for range d.TraceHops() {
			}
		}()
		go func() {
			for range d.Captured() {
			}
		}()
	}
	observe := func(tr []datapath.Trace, cp []datapath.Capture) func() {
		return func() {
			if err := c.drivers[0].Observe(c.ctx, tr, cp); err != nil {
				b.Fatal(err)
			}
		}
	}
	live := datapath.Trace{ID: "acme/live", Mode: datapath.TraceLive, Fire: true, VNI: 100, Token: 7, Proto: datapath.ProtoUDP,
		Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.1.20"), DPort: 53, Source: "acme/other",
		Count: 100, Until: time.Now().Add(time.Hour)}
	states := []streamState{
		{"without", observe(nil, nil)},
		{"trace on another", observe([]datapath.Trace{live}, nil)},
		{"capture on another", observe(nil, []datapath.Capture{{ID: "acme/cap", Endpoints: []string{"acme/other"}, Snaplen: 128, Rate: 1000, Count: 1 << 30}})},
		{"dropped-only on another", observe(nil, []datapath.Capture{{ID: "acme/drops", Endpoints: []string{"acme/other"}, DroppedOnly: true, Snaplen: 128, Rate: 1000, Count: 1 << 30}})},
	}
	from, _ := c.drivers[0].Status("acme/tp0")
	to, _ := c.drivers[1].Status("acme/tp1")
	compareStreams(b, rounds, from.Netns, to.Netns, netip.MustParseAddrPort("10.0.1.20:5201"), states,
		[]string{"", "trace-elsewhere/without", "capture-elsewhere/without", "dropped-only-elsewhere/without"})
}
