package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// RuleCostPart is the rulecost phase: a client on one host and a server on
// another, in a VPC of their own per rule count, all installed at once.
type RuleCostPart struct {
	Rounds   int        `json:"rounds"`
	Duration string     `json:"duration"`
	Counts   []RuleCost `json:"counts"`
	// The most rules against the fewest: the median of the rounds'
	// ratios (each round measures every count back to back) and their
	// range, for request/response and for connections.
	RRRatio     float64 `json:"rrRatio"`
	RRRatioMin  float64 `json:"rrRatioMin"`
	RRRatioMax  float64 `json:"rrRatioMax"`
	CRRRatio    float64 `json:"crrRatio"`
	CRRRatioMin float64 `json:"crrRatioMin"`
	CRRRatioMax float64 `json:"crrRatioMax"`
	// SetMs is each host's Set that installed every pair and its rules.
	SetMs []float64 `json:"setMs"`
}

// RuleCost is one rule count's rates, per second: the median over the
// rounds and the range.
type RuleCost struct {
	Rules int `json:"rules"`
	// RR: one byte each way over one connection, as often as it goes
	// (established connections: what conntrack passes).
	RRPerSec float64 `json:"rrPerSec"`
	RRMin    float64 `json:"rrMin"`
	RRMax    float64 `json:"rrMax"`
	// CRR: a connection, one byte each way, a reset (every connection's
	// first packet is judged by the rules on both hosts).
	CRRPerSec float64   `json:"crrPerSec"`
	CRRMin    float64   `json:"crrMin"`
	CRRMax    float64   `json:"crrMax"`
	RRRounds  []float64 `json:"rrRounds"`
	CRRRounds []float64 `json:"crrRounds"`
}

// costPort is the server's port; the only one the rules let the client
// reach.
const costPort = 5000

// costRule is rule i of a direction, which the benchmark's client never
// matches: by identity and port (ingress only), by /32 address, by port
// range, in turn, so that every kind of lookup holds many entries.
func costRule(i int, ingress bool) datapath.Rule {
	kind := i % 3
	if !ingress && kind == 0 {
		kind = 1
	}
	r := datapath.Rule{Name: fmt.Sprintf("bench/cost rule[%d]", i)}
	switch kind {
	case 0:
		r.Identities = []uint32{uint32(100 + i%65000)}
		r.Ports = []datapath.Port{{Protocol: datapath.ProtoTCP, First: uint16(1 + i%60000), ICMPType: -1, ICMPCode: -1}}
	case 1:
		ip := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
		r.Prefixes = []netip.Prefix{netip.PrefixFrom(ip, 32)}
		r.Ports = []datapath.Port{{Protocol: datapath.ProtoTCP, First: costPort, ICMPType: -1, ICMPCode: -1}}
	default:
		first := uint16(10000 + i%50000)
		r.Prefixes = []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}
		r.Ports = []datapath.Port{{Protocol: datapath.ProtoUDP, First: first, Last: first + 50, ICMPType: -1, ICMPCode: -1}}
	}
	return r
}

// costPair is a client (10.0.1.10, identity 10, on host 0) and a server
// (10.0.2.10, identity 20, on host 1) in a VPC of their own, with rules
// rules: half on the server's ingress, half on the client's egress, each
// with one more that allows the client's connections to costPort (by
// identity on the server, by address on the client).
type costPair struct {
	rules          int
	vpc            datapath.VPC
	client, server datapath.Endpoint
}

func newCostPair(rules int, vni uint32) costPair {
	vpc := datapath.VPC{Tenant: "bench", Name: fmt.Sprintf("cost%d", rules), VNI: vni, Subnets: []datapath.Subnet{
		{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")}, {Name: "b", CIDR: netip.MustParsePrefix("10.0.2.0/24")}}}
	mk := func(id, subnet string, ip netip.Addr, identity uint32) datapath.Endpoint {
		b := ip.As4()
		return datapath.Endpoint{ID: id, VNI: vni, Subnet: subnet, IP: ip, Identity: identity,
			MAC: net.HardwareAddr{0x02, 0x00, byte(vni), b[1], b[2], b[3]}}
	}
	p := costPair{rules: rules, vpc: vpc,
		client: mk(fmt.Sprintf("bench/client%d", rules), "a", netip.MustParseAddr("10.0.1.10"), 10),
		server: mk(fmt.Sprintf("bench/server%d", rules), "b", netip.MustParseAddr("10.0.2.10"), 20)}
	port := []datapath.Port{{Protocol: datapath.ProtoTCP, First: costPort, ICMPType: -1, ICMPCode: -1}}
	in := make([]datapath.Rule, 0, rules/2+1)
	for i := range rules / 2 {
		in = append(in, costRule(i, true))
	}
	out := make([]datapath.Rule, 0, rules-rules/2+1)
	for i := range rules - rules/2 {
		out = append(out, costRule(i, false))
	}
	p.server.Policy = &datapath.EndpointPolicy{IngressIsolated: true,
		Ingress: append(in, datapath.Rule{Name: "bench/cost allow", Identities: []uint32{10}, Ports: port})}
	p.client.Policy = &datapath.EndpointPolicy{EgressIsolated: true,
		Egress: append(out, datapath.Rule{Name: "bench/cost allow", Prefixes: []netip.Prefix{netip.PrefixFrom(p.server.IP, 32)}, Ports: port})}
	return p
}

func (r *dpRun) ruleCost(ctx context.Context, cfg *PolicyConfig) (*RuleCostPart, error) {
	part := &RuleCostPart{Rounds: cfg.Rounds, Duration: cfg.Duration.String()}
	n, err := r.newNet(testnet.Options{Hosts: 2})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	var pairs []costPair
	desired := []*datapath.Desired{{Host: hostOf(n.Host(0))}, {Host: hostOf(n.Host(1))}}
	for i, c := range cfg.RuleCounts {
		p := newCostPair(c, uint32(101+i))
		pairs = append(pairs, p)
		desired[0].VPCs, desired[0].Endpoints = append(desired[0].VPCs, p.vpc), append(desired[0].Endpoints, p.client)
		desired[1].VPCs, desired[1].Endpoints = append(desired[1].VPCs, p.vpc), append(desired[1].Endpoints, p.server)
	}
	var ds []*linux.Driver
	defer func() {
		for _, d := range ds {
			d.Close()
		}
	}()
	for i, h := range n.Hosts() {
		d, err := r.newDriver(ctx, n, h, linux.Config{})
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		r.status.set("rulecost: installing %d pairs and their rules on %s", len(pairs), h.Name)
		start := time.Now()
		if err := d.Set(ctx, desired[i]); err != nil {
			return nil, err
		}
		part.SetMs = append(part.SetMs, msOf(time.Since(start)))
	}
	for _, p := range pairs {
		for i, d := range ds {
			e, h := p.server, n.Host(1)
			if i == 1 {
				e, h = p.client, n.Host(0)
			}
			if err := d.Learn(ctx, []datapath.Remote{{VNI: p.vpc.VNI, IP: e.IP, MAC: e.MAC, HostUnderlay: h.UnderlayIP, Identity: e.Identity, Epoch: 1}}); err != nil {
				return nil, err
			}
		}
	}
	ns := func(d *linux.Driver, id string) string { st, _ := d.Status(id); return st.Netns }
	dst := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.10"), costPort).String()
	for _, p := range pairs {
		l, err := testnet.ListenTCP(ns(ds[1], p.server.ID), dst)
		if err != nil {
			return nil, err
		}
		defer testnet.ServeEcho(l, "")()
		// The allowed port answers; another is closed to the client.
		if _, err := crr(ctx, ns(ds[0], p.client.ID), dst, 100*time.Millisecond); err != nil {
			return nil, fmt.Errorf("%d rules: %w", p.rules, err)
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		c, err := testnet.DialTCP(cctx, ns(ds[0], p.client.ID), netip.AddrPortFrom(p.server.IP, costPort+1).String())
		cancel()
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%d rules: the client reached a port no rule allows", p.rules)
		}
	}
	rr := make([][]float64, len(pairs))
	conns := make([][]float64, len(pairs))
	for round := range cfg.Rounds {
		for k := range pairs {
			i := (k + round) % len(pairs)
			p := pairs[i]
			r.status.set("rulecost: round %d/%d: %d rules", round+1, cfg.Rounds, p.rules)
			c, err := crr(ctx, ns(ds[0], p.client.ID), dst, cfg.Duration)
			if err != nil {
				return nil, fmt.Errorf("round %d, %d rules: %w", round, p.rules, err)
			}
			t, err := rrRate(ctx, ns(ds[0], p.client.ID), dst, cfg.Duration)
			if err != nil {
				return nil, fmt.Errorf("round %d, %d rules: %w", round, p.rules, err)
			}
			conns[i], rr[i] = append(conns[i], round3(c)), append(rr[i], round3(t))
		}
	}
	for i, p := range pairs {
		c := RuleCost{Rules: p.rules, RRRounds: rr[i], CRRRounds: conns[i]}
		c.RRPerSec, c.RRMin, c.RRMax = spreadOf(rr[i])
		c.CRRPerSec, c.CRRMin, c.CRRMax = spreadOf(conns[i])
		part.Counts = append(part.Counts, c)
		r.status.printf("rulecost: %7d rules: request/response %.0f/s (%.0f..%.0f), connections %.0f/s (%.0f..%.0f)",
			p.rules, c.RRPerSec, c.RRMin, c.RRMax, c.CRRPerSec, c.CRRMin, c.CRRMax)
	}
	last := len(pairs) - 1
	part.RRRatio, part.RRRatioMin, part.RRRatioMax = spreadOf(roundRatios(rr[last], rr[0]))
	part.CRRRatio, part.CRRRatioMin, part.CRRRatioMax = spreadOf(roundRatios(conns[last], conns[0]))
	r.status.printf("rulecost: %d/%d rules: request/response ratio %.3f (%.3f..%.3f), connections %.3f (%.3f..%.3f) (goal ≥ %.2f)",
		pairs[last].rules, pairs[0].rules, part.RRRatio, part.RRRatioMin, part.RRRatioMax, part.CRRRatio, part.CRRRatioMin, part.CRRRatioMax, GoalRuleCostRatio)
	return part, nil
}

// crr opens a connection, exchanges one byte each way and closes it with
// a reset (no TIME_WAIT left), as often as it can for d from inside the
// namespace ns, and returns the rate per second.
func crr(ctx context.Context, ns, dst string, d time.Duration) (float64, error) {
	n := 0
	err := netnsfile.Do(ns, func() error {
		b := make([]byte, 1)
		for start := time.Now(); time.Since(start) < d && ctx.Err() == nil; n++ {
			c, err := net.DialTimeout("tcp", dst, 10*time.Second)
			if err != nil {
				return err
			}
			_, err = c.Write(b)
			if err == nil {
				_, err = io.ReadFull(c, b)
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	return float64(n) / d.Seconds(), err
}

// rrRate exchanges one byte each way over one connection as often as it
// can for d and returns the rate per second.
func rrRate(ctx context.Context, ns, dst string, d time.Duration) (float64, error) {
	var c net.Conn
	if err := netnsfile.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", dst, 10*time.Second)
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	b := make([]byte, 1)
	n := 0
	for start := time.Now(); time.Since(start) < d && ctx.Err() == nil; n++ {
		if _, err := c.Write(b); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, err
		}
	}
	return float64(n) / d.Seconds(), nil
}
