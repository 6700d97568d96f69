package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// LatencyPart is the latency phase: TCP request/response (one byte each
// way over one open connection, back to back) from an endpoint on one
// host to one on another over each driver's overlay, and over the plain
// veth pair, in interleaved rounds of LatencyDuration on the first
// underlay MTU.
type LatencyPart struct {
	Rounds   int             `json:"rounds"`
	Duration string          `json:"duration"`
	Paths    []LatencyResult `json:"paths"`
}

// LatencyResult is one path's transactions over every round.
type LatencyResult struct {
	// Path is "veth" or "overlay <driver>" (with its variant: "overlay
	// ebpf (no flow sampling)").
	Path         string  `json:"path"`
	Transactions int     `json:"transactions"`
	P50Us        float64 `json:"p50Us"`
	P99Us        float64 `json:"p99Us"`
	MaxUs        float64 `json:"maxUs"`
	// PerSec is the median of the rounds' transaction rates.
	PerSec float64 `json:"perSec"`
}

func (r *dpRun) latency(ctx context.Context) (*LatencyPart, error) {
	part := &LatencyPart{Rounds: r.cfg.Rounds, Duration: r.cfg.LatencyDuration.String()}
	var pairs []*overlayPair
	defer func() {
		for _, o := range pairs {
			o.close()
			r.closeNet(o.net)
		}
	}()
	type path struct {
		name     string
		from, to string
		dst      netip.AddrPort
		rtts     []time.Duration
		rates    []float64
	}
	var paths []*path
	for _, v := range r.variants() {
		o, err := r.buildPair(ctx, tputSetup{net: testnet.Options{Hosts: 2, MTU: r.cfg.UnderlayMTUs[0]}, dp: v})
		if err != nil {
			return part, fmt.Errorf("latency: %w", err)
		}
		pairs = append(pairs, o)
		if len(paths) == 0 {
			paths = append(paths, &path{name: "veth", from: o.veth.APath, to: o.veth.BPath, dst: netip.AddrPortFrom(o.veth.B.Addr(), 5301)})
		}
		paths = append(paths, &path{name: "overlay " + v.name(), from: o.eps[0].Netns, to: o.eps[1].Netns, dst: netip.AddrPortFrom(o.ips[1], 5301)})
	}
	for _, p := range paths {
		l, err := testnet.ListenTCP(p.to, p.dst.String())
		if err != nil {
			return part, fmt.Errorf("latency: %s: %w", p.name, err)
		}
		defer testnet.ServeEcho(l, "")()
	}
	for round := range r.cfg.Rounds {
		for k := range paths {
			p := paths[(round+k)%len(paths)]
			r.status.set("latency: round %d/%d: %s", round+1, r.cfg.Rounds, p.name)
			rtts, err := requestResponse(ctx, p.from, p.dst, r.cfg.LatencyDuration)
			if err != nil {
				return part, fmt.Errorf("latency: %s: %w", p.name, err)
			}
			p.rtts = append(p.rtts, rtts...)
			p.rates = append(p.rates, float64(len(rtts))/r.cfg.LatencyDuration.Seconds())
		}
	}
	us := func(d time.Duration) float64 { return round3(float64(d) / 1e3) }
	for _, p := range paths {
		res := LatencyResult{Path: p.name, Transactions: len(p.rtts), PerSec: round3(median(p.rates))}
		if len(p.rtts) > 0 {
			res.P50Us, res.P99Us, res.MaxUs = us(percentile(p.rtts, 50)), us(percentile(p.rtts, 99)), us(slices.Max(p.rtts))
		}
		part.Paths = append(part.Paths, res)
		r.status.printf("latency: %s: %d transactions, p50 %.1f µs, p99 %.1f µs, max %.1f µs, %.0f/s",
			p.name, res.Transactions, res.P50Us, res.P99Us, res.MaxUs, res.PerSec)
	}
	return part, nil
}

// requestResponse connects from the namespace at ns to dst (an echo
// server) and exchanges one byte each way, back to back, for d; it
// returns each exchange's round trip.
func requestResponse(ctx context.Context, ns string, dst netip.AddrPort, d time.Duration) ([]time.Duration, error) {
	var c net.Conn
	if err := netnsfile.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", dst.String(), 10*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	defer c.Close()
	b := make([]byte, 1)
	var rtts []time.Duration
	for start := time.Now(); time.Since(start) < d && ctx.Err() == nil; {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(t0))
	}
	return rtts, ctx.Err()
}
