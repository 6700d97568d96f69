package linux_test

import (
	"net/netip"
	"testing"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
)

// BenchmarkFlowHooks is the cost of the flow hooks to the data path when
// nothing reads them: one TCP stream between endpoints on two hosts
// (internal/testnet Stream, as the data plane benchmark measures) with
// the policy tables as they are without flow hooks, with them sampling
// every flow (the agent's default) and sampling 1 in 64 (a hash of every
// packet's 5-tuple). The states take turns in every round (interleaved,
// each round starting with the next); the report is the median of the
// per-round ratios with their range. Goal (issue 13): with/without >= 0.99.
// On a machine shared with other work, throughput measures the CPU share
// the stream gets more than the path's cost; the benchmark also reports
// the stream threads' CPU time per byte (sender and receiver, the softirq
// work done in their context included), whose ratio without/with is the
// same goal seen as cost.
//
//	go test ./datapath/linux -run '^$' -bench FlowHooks -benchtime 1x -v
//
// WEFT_FLOW_ROUNDS sets the rounds (default 15).
func BenchmarkFlowHooks(b *testing.B) {
	rounds := envInt(b, "WEFT_FLOW_ROUNDS", 15)
	c := newBenchDC(b)
	n := c.net
	states := []struct {
		name     string
		sampling uint32
		drivers  []*linux.Driver
	}{{name: "without flow hooks"}, {name: "flow hooks, every flow", sampling: 1}, {name: "flow hooks, 1 in 64", sampling: 64}}
	for i := range states {
		for _, h := range n.Hosts() {
			// One driver per state and host over the same namespaces:
			// each Set rewrites the policy tables to its own hooks.
			states[i].drivers = append(states[i].drivers, startDriver(b, n, h, func(cfg *linux.Config) { cfg.FlowSampling = states[i].sampling }))
		}
	}
	c.add(0, "acme/tp0", 100, "a", "10.0.1.10")
	c.add(1, "acme/tp1", 100, "a", "10.0.1.20")
	set := func(i int) {
		for h, d := range states[i].drivers {
			if err := d.Set(c.ctx, c.desired(h)); err != nil {
				b.Fatal(err)
			}
		}
	}
	set(0)
	c.drivers = states[0].drivers
	for i, d := range c.drivers {
		for _, e := range c.eps[1-i] {
			if err := d.Learn(c.ctx, []datapath.Remote{{VNI: 100, IP: e.IP, MAC: e.MAC, HostUnderlay: n.Host(1 - i).UnderlayIP, Epoch: 1}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	from, _ := c.drivers[0].Status("acme/tp0")
	to, _ := c.drivers[1].Status("acme/tp1")
	bs := make([]streamState, len(states))
	for i := range states {
		bs[i] = streamState{states[i].name, func() { set(i) }}
	}
	compareStreams(b, rounds, from.Netns, to.Netns, netip.MustParseAddrPort("10.0.1.20:5201"), bs, []string{"", "every-flow/without", "1-in-64/without"})
}
