package linux_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

var (
	policyRounds   = flag.Int("policy.rounds", 15, "BenchmarkPolicyRuleCost: interleaved rounds")
	policyDuration = flag.Duration("policy.duration", time.Second, "BenchmarkPolicyRuleCost: measuring time per rule count, mode and round")
	policyChanges  = flag.Int("policy.changes", 100, "BenchmarkPolicyChange: policy changes timed per configuration")
)

// costRules returns n rules of one direction that do not match the
// benchmark's client: by identity and port (ingress only), by /32 address,
// by port range, in turn.
func costRules(n int, ingress bool) []datapath.Rule {
	rs := make([]datapath.Rule, 0, n)
	for i := range n {
		kind := i % 3
		if !ingress && kind == 0 {
			kind = 1
		}
		switch kind {
		case 0:
			rs = append(rs, datapath.Rule{Identities: []uint32{uint32(100 + i%65000)},
				Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: uint16(1 + i%60000)}}})
		case 1:
			ip := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
			rs = append(rs, datapath.Rule{Prefixes: []netip.Prefix{netip.PrefixFrom(ip, 32)},
				Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5000}}})
		default:
			first := uint16(10000 + i%50000)
			rs = append(rs, datapath.Rule{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")},
				Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: first, Last: first + 50}}})
		}
	}
	return rs
}

// costPair is a client and a server endpoint in a VPC of their own with
// rules rules: half on the server's ingress, half on the client's egress,
// each with one more that lets the client reach the server's port 5000.
// The server admits the client by address, so a connection's first packet
// looks up both the identity and the address map.
type costPair struct {
	rules          int
	vni            uint32
	client, server datapath.Endpoint
}

func newCostPair(rules int, vni uint32) costPair {
	p := costPair{rules: rules, vni: vni}
	mk := func(id, subnet, ip string, identity uint32) datapath.Endpoint {
		a := netip.MustParseAddr(ip)
		return datapath.Endpoint{ID: id, VNI: vni, Subnet: subnet, IP: a, MAC: epMAC(vni, a), Identity: identity}
	}
	p.client = mk(fmt.Sprintf("bench/client%d", rules), "a", "10.0.1.10", 10)
	p.server = mk(fmt.Sprintf("bench/server%d", rules), "b", "10.0.2.10", 20)
	port := []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5000}}
	p.server.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: append(costRules(rules/2, true),
		datapath.Rule{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.10/32")}, Ports: port})}
	p.client.Policy = &datapath.EndpointPolicy{EgressIsolated: true, Egress: append(costRules(rules-rules/2, false),
		datapath.Rule{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.2.10/32")}, Ports: port})}
	return p
}

// rate is what one measuring window saw: transactions per second, and the
// median transaction time (a robust figure on a loaded machine, where a
// lost SYN costs one window a second-long retransmission).
type rate struct {
	perSec float64
	median time.Duration
	slow   int // transactions that took over 500 ms
}

func rateOf(ts []time.Duration, d time.Duration) rate {
	r := rate{perSec: float64(len(ts)) / d.Seconds()}
	if len(ts) > 0 {
		slices.Sort(ts)
		r.median = ts[len(ts)/2]
		for _, t := range ts {
			if t > 500*time.Millisecond {
				r.slow++
			}
		}
	}
	return r
}

// crr opens a connection, exchanges one byte each way and closes it (with
// a reset, so that no TIME_WAIT is left), as often as it can for d, from
// inside the client namespace.
func crr(ctx context.Context, ns string, dst string, d time.Duration) (rate, error) {
	var ts []time.Duration
	err := netnsfile.Do(ns, func() error {
		b := make([]byte, 1)
		start := time.Now()
		for time.Since(start) < d && ctx.Err() == nil {
			t0 := time.Now()
			c, err := net.DialTimeout("tcp", dst, 10*time.Second)
			if err != nil {
				return err
			}
			if _, err := c.Write(b); err != nil {
				c.Close()
				return err
			}
			if _, err := io.ReadFull(c, b); err != nil {
				c.Close()
				return err
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			ts = append(ts, time.Since(t0))
		}
		return nil
	})
	return rateOf(ts, d), err
}

// rr exchanges one byte each way over one connection as often as it can
// for d.
func rr(ctx context.Context, ns string, dst string, d time.Duration) (rate, error) {
	var c net.Conn
	if err := netnsfile.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", dst, 10*time.Second)
		return err
	}); err != nil {
		return rate{}, err
	}
	defer c.Close()
	b := make([]byte, 1)
	var ts []time.Duration
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return rate{}, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return rate{}, err
		}
		ts = append(ts, time.Since(t0))
	}
	return rateOf(ts, d), nil
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

type spread struct{ median, min, max float64 }

func spreadOf(v []float64) spread {
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{m, s[0], s[len(s)-1]}
}

// BenchmarkPolicyRuleCost measures whether a packet's cost grows with the
// number of rules: TCP connection rate (a connection, one byte each way,
// reset: every connection's first packet is judged on both hosts) and
// request/response rate over one connection, between a client on one
// host and a server on another, with 10, 1k, 10k and 100k rules in their
// VPC. Each rule count has a VPC of its own, all installed at once; the
// rounds interleave them (each round starting with another), so that they
// share the machine's background load. Run it once:
//
//	go test ./datapath/linux -run '^$' -bench PolicyRuleCost -benchtime 1x [-policy.rounds 15 -policy.duration 1s]
func BenchmarkPolicyRuleCost(b *testing.B) {
	nettest.RequireRoot(b)
	counts := []int{10, 1000, 10000, 100000}
	n := nettest.New(b, testnet.Options{Hosts: 2})
	ctl := newController(b)
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	var drivers []*linux.Driver
	for _, h := range n.Hosts() {
		d := startDriver(b, n, h)
		ctl.serve(ctx, h.Name, d)
		drivers = append(drivers, d)
	}
	b.Cleanup(func() { cancel(); ctl.wg.Wait() })
	var pairs []costPair
	desired := []*datapath.Desired{{Host: hostConfig(n.Host(0))}, {Host: hostConfig(n.Host(1))}}
	for i, c := range counts {
		p := newCostPair(c, uint32(101+i))
		pairs = append(pairs, p)
		vpc := datapath.VPC{Tenant: "bench", Name: fmt.Sprint(c), VNI: p.vni, Subnets: []datapath.Subnet{
			{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")}, {Name: "b", CIDR: netip.MustParsePrefix("10.0.2.0/24")}}}
		for h, e := range []datapath.Endpoint{p.client, p.server} {
			desired[h].VPCs = append(desired[h].VPCs, vpc)
			desired[h].Endpoints = append(desired[h].Endpoints, e)
			ctl.put(datapath.Remote{VNI: p.vni, IP: e.IP, MAC: e.MAC, HostUnderlay: n.Host(h).UnderlayIP, Identity: e.Identity, Epoch: 1})
		}
	}
	for h, d := range drivers {
		start := time.Now()
		if err := d.Set(ctx, desired[h]); err != nil {
			b.Fatal(err)
		}
		b.Logf("host %d: Set of the 4 VPCs with their rules: %v", h, time.Since(start).Round(time.Millisecond))
	}
	ns := func(h int, id string) string {
		st, ok := drivers[h].Status(id)
		if !ok {
			b.Fatalf("%s not programmed", id)
		}
		return st.Netns
	}
	dst := "10.0.2.10:5000"
	for _, p := range pairs {
		l, err := testnet.ListenTCP(ns(1, p.server.ID), dst)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(testnet.ServeEcho(l, ""))
		// Warm: the first packets learn the remote.
		if _, err := crr(ctx, ns(0, p.client.ID), dst, 100*time.Millisecond); err != nil {
			b.Fatalf("%d rules: %v", p.rules, err)
		}
		// The other ports are closed to the client.
		if _, err := testnet.DialTCP(withTimeout(ctx, 300*time.Millisecond), ns(0, p.client.ID), "10.0.2.10:5001"); err == nil {
			b.Fatalf("%d rules: the client reached a port no rule allows", p.rules)
		}
	}
	load := loadavg()
	modes := []string{"connections", "round trips"}
	rates := [2][][]rate{make([][]rate, len(pairs)), make([][]rate, len(pairs))}
	for r := range *policyRounds {
		for k := range pairs {
			i := (k + r) % len(pairs)
			p := pairs[i]
			c, err := crr(ctx, ns(0, p.client.ID), dst, *policyDuration)
			if err != nil {
				b.Fatalf("round %d, %d rules: %v", r, p.rules, err)
			}
			t, err := rr(ctx, ns(0, p.client.ID), dst, *policyDuration)
			if err != nil {
				b.Fatalf("round %d, %d rules: %v", r, p.rules, err)
			}
			rates[0][i] = append(rates[0][i], c)
			rates[1][i] = append(rates[1][i], t)
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%d interleaved rounds of %v per rule count and mode; load average %s before, %s after\n", *policyRounds, *policyDuration, load, loadavg())
	fmt.Fprintf(&out, "per round: transactions/s counted, and 1/(median transaction time); median and range over the rounds\n")
	for m, mode := range modes {
		counted := func(i int) []float64 {
			var v []float64
			for _, r := range rates[m][i] {
				v = append(v, r.perSec)
			}
			return v
		}
		fromMedian := func(i int) []float64 {
			var v []float64
			for _, r := range rates[m][i] {
				v = append(v, 1/r.median.Seconds())
			}
			return v
		}
		for i, p := range pairs {
			c, f := spreadOf(counted(i)), spreadOf(fromMedian(i))
			slow := 0
			for _, r := range rates[m][i] {
				slow += r.slow
			}
			fmt.Fprintf(&out, "%-11s rules=%-6d counted median %6.0f/s range %6.0f..%6.0f | 1/median %6.0f/s range %6.0f..%6.0f | over 500ms: %d\n",
				mode, p.rules, c.median, c.min, c.max, f.median, f.min, f.max, slow)
		}
		for _, series := range []struct {
			name string
			of   func(int) []float64
		}{{"counted", counted}, {"1/median", fromMedian}} {
			base, top := series.of(0), series.of(len(pairs)-1)
			var ratios []float64
			for r := range base {
				ratios = append(ratios, top[r]/base[r])
			}
			rs := spreadOf(ratios)
			fmt.Fprintf(&out, "%-11s ratio %d/%d (%s): of the medians %.3f; per round median %.3f range %.3f..%.3f\n", mode,
				counts[len(counts)-1], counts[0], series.name, spreadOf(top).median/spreadOf(base).median, rs.median, rs.min, rs.max)
		}
		base, top := fromMedian(0), fromMedian(len(pairs)-1)
		b.ReportMetric(spreadOf(top).median/spreadOf(base).median, "ratio-"+strings.ReplaceAll(mode, " ", "-")+"-100k/10")
	}
	b.Log("\n" + out.String())
}

func withTimeout(ctx context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(ctx, d)
	context.AfterFunc(ctx, cancel)
	return ctx
}

// BenchmarkPolicyChange times Sets that change one endpoint's policy on a
// host with 1,000 endpoints (10 VPCs of 100): the Set returns once the new
// rules are committed and the connections they no longer allow are
// flushed, so its duration is the time to enforcement on this host. It
// runs with the driver re-reading every endpoint namespace on every Set
// (EndpointResync 0, the default) and trusting its cache for a minute.
//
//	go test ./datapath/linux -run '^$' -bench PolicyChange -benchtime 1x [-policy.changes 100]
func BenchmarkPolicyChange(b *testing.B) {
	nettest.RequireRoot(b)
	n := nettest.New(b, testnet.Options{})
	h := n.Host(0)
	d := &datapath.Desired{Host: hostConfig(h)}
	for v := range 10 {
		vni := uint32(200 + v)
		d.VPCs = append(d.VPCs, datapath.VPC{Tenant: "bench", Name: fmt.Sprint(v), VNI: vni,
			Subnets: []datapath.Subnet{{Name: "a", CIDR: netip.MustParsePrefix("10.1.0.0/16")}}})
		for i := range 100 {
			ip := netip.AddrFrom4([4]byte{10, 1, byte(i / 200), byte(10 + i%200)})
			e := datapath.Endpoint{ID: fmt.Sprintf("bench/v%d-e%d", v, i), VNI: vni, Subnet: "a", IP: ip, MAC: epMAC(vni, ip), Identity: uint32(1 + i%5)}
			// Every endpoint has a policy: ingress from identity 1, 53 and
			// 80 from its subnet.
			e.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{
				{Identities: []uint32{1}},
				{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, Ports: []datapath.Port{{Protocol: datapath.ProtoUDP, First: 53}, {Protocol: datapath.ProtoTCP, First: 80}}},
			}}
			d.Endpoints = append(d.Endpoints, e)
		}
	}
	first := startDriver(b, n, h, func(c *linux.Config) { c.EndpointResync = time.Minute })
	start := time.Now()
	if err := first.Set(b.Context(), d); err != nil {
		b.Fatal(err)
	}
	b.Logf("1,000 endpoints in 10 VPCs attached in %v", time.Since(start).Round(time.Millisecond))
	// The endpoint whose policy changes, back and forth: in the VPC the
	// Set converges last, the worst case.
	target := &d.Endpoints[len(d.Endpoints)-1]
	policies := []*datapath.EndpointPolicy{
		{IngressIsolated: true, Ingress: []datapath.Rule{{Identities: []uint32{2}, Ports: []datapath.Port{{Protocol: datapath.ProtoTCP, First: 5432}}}}},
		target.Policy,
	}
	var out strings.Builder
	fmt.Fprintf(&out, "load average %s\n", loadavg())
	for _, resync := range []time.Duration{time.Minute, 0} {
		drv := first
		if resync == 0 {
			// A second driver adopts the same state (Close leaves it).
			if err := first.Close(); err != nil {
				b.Fatal(err)
			}
			drv = startDriver(b, n, h)
		}
		changes := *policyChanges
		if resync == 0 {
			changes = max(changes/3, 10)
		}
		// Each change is followed by a Set of the same state: what a Set
		// costs that changes nothing, for comparison. The change is in
		// force once its transaction is committed, which a watcher sees
		// as a new nftables generation in the target's VPC namespace
		// (the Set goes on with the other VPCs).
		gen, done, err := linux.NftGenerations(n.Dir() + "/" + linux.VPCNetnsName(n.Prefix(), h.Name, target.VNI))
		if err != nil {
			b.Fatal(err)
		}
		var took, same, committed []time.Duration
		for i := range changes {
			target.Policy = policies[i%2]
			gen0, err := gen()
			if err != nil {
				b.Fatal(err)
			}
			seen := make(chan time.Duration, 1)
			stop := make(chan struct{})
			start := time.Now()
			go func() {
				for {
					select {
					case <-stop:
						seen <- 0
						return
					default:
					}
					if g, err := gen(); err == nil && g != gen0 {
						seen <- time.Since(start)
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()
			before := drv.Counts()
			if err := drv.Set(b.Context(), d); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(start))
			close(stop)
			if c := <-seen; c > 0 {
				committed = append(committed, c)
			}
			if w := drv.Counts().Sub(before); w["nftables/commit"] != 1 {
				b.Fatalf("a policy change wrote %s", w)
			}
			start = time.Now()
			if err := drv.Set(b.Context(), d); err != nil {
				b.Fatal(err)
			}
			same = append(same, time.Since(start))
		}
		done()
		fmt.Fprintf(&out, "EndpointResync %-4v %d changes, Set returned: %s\n", resync, changes, pcts(took))
		fmt.Fprintf(&out, "EndpointResync %-4v %d changes, committed:    %s (%d seen)\n", resync, changes, pcts(committed), len(committed))
		fmt.Fprintf(&out, "EndpointResync %-4v unchanged Set: %s\n", resync, pcts(same))
	}
	fmt.Fprintf(&out, "load average %s\n", loadavg())
	b.Log("\n" + out.String())
	// Tear down here: 1,000 namespaces take longer than the cleanup allows.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := first.Teardown(ctx); err != nil {
		b.Error(err)
	}
}

func pcts(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	p := func(q float64) time.Duration {
		return s[min(len(s)-1, int(q*float64(len(s))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %v p99 %v max %v", p(0.5), p(0.99), s[len(s)-1].Round(10*time.Microsecond))
}
