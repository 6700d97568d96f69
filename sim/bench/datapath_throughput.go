package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// ThroughputPart is the throughput phase: the linux driver's tuning table
// (each step adds one change to the kept ones before it, on the first
// underlay MTU) and the final configuration of every driver on every
// underlay MTU, the drivers' overlays measured in the same rounds.
type ThroughputPart struct {
	Tool   string       `json:"tool"`
	Tuning []TputResult `json:"tuning,omitempty"`
	Final  []TputResult `json:"final"`
}

// TputResult is one configuration measured against the veth baseline in
// interleaved rounds.
type TputResult struct {
	Datapath string `json:"datapath"`
	// Variant tells the ebpf driver's variants of a run apart (its flow
	// sampling, DatapathConfig.EBPFFlowSampling; "": the only one), and
	// FlowSampling is the ebpf driver's setting.
	Variant      string  `json:"variant,omitempty"`
	FlowSampling *uint32 `json:"flowSampling,omitempty"`
	// ToFirstVariant is, for a variant after the first of its driver, the
	// median (and range) of the rounds' ratios of its overlay to the first
	// variant's: the A/B of the two, measured in the same rounds.
	ToFirstVariant    float64 `json:"toFirstVariant,omitempty"`
	ToFirstVariantMin float64 `json:"toFirstVariantMin,omitempty"`
	ToFirstVariantMax float64 `json:"toFirstVariantMax,omitempty"`

	Step        string `json:"step"`
	Why         string `json:"why,omitempty"`
	Kept        bool   `json:"kept"`
	UnderlayMTU int    `json:"underlayMTU"`
	OverlayMTU  int    `json:"overlayMTU"`
	// Medians over the rounds, in Gbit/s; Ratio is the median of the
	// rounds' overlay/veth ratios (each round measures both back to back).
	VethGbps    float64 `json:"vethGbps"`
	OverlayGbps float64 `json:"overlayGbps"`
	Ratio       float64 `json:"ratio"`
	RatioMin    float64 `json:"ratioMin"`
	RatioMax    float64 `json:"ratioMax"`
	// UnderlayGbps is TCP between the two host namespaces over the test
	// underlay alone (no overlay): the path the overlay rides on, measured
	// in the same rounds. OverlayToUnderlay is the median of the rounds'
	// overlay/underlay ratios: what the overlay itself costs.
	UnderlayGbps      float64 `json:"underlayGbps"`
	UnderlayRatio     float64 `json:"underlayToVethRatio"`
	OverlayToUnderlay float64 `json:"overlayToUnderlayRatio"`
	// Best is each path's fastest round and BestRatio the overlay's best
	// over the veth pair's: on a shared machine the fastest round is the
	// one least slowed by other work, so this estimates the ratio of the
	// paths' capacities.
	VethBest     float64 `json:"vethBestGbps"`
	UnderlayBest float64 `json:"underlayBestGbps"`
	OverlayBest  float64 `json:"overlayBestGbps"`
	BestRatio    float64 `json:"bestRatio"`
	// Every round's figures, in order.
	VethRounds     []float64 `json:"vethRounds"`
	UnderlayRounds []float64 `json:"underlayRounds"`
	OverlayRounds  []float64 `json:"overlayRounds"`
	// CPU of the sender's and receiver's threads per GB received (median,
	// ms/GB): it includes the softirq work that ran in their context, so it
	// shows the cost of the path even when other load lowers the rate.
	VethCPU    StreamCPU `json:"vethCPU"`
	OverlayCPU StreamCPU `json:"overlayCPU"`
	// Retransmits is the median per stream.
	VethRetrans    float64 `json:"vethRetransmits"`
	OverlayRetrans float64 `json:"overlayRetransmits"`
	// Machine is the whole machine's CPU split (/proc/stat, all CPUs, all
	// processes) during the streams, in percent (medians over the rounds).
	MachineVeth    CPUSplit `json:"machineDuringVeth"`
	MachineOverlay CPUSplit `json:"machineDuringOverlay"`
}

// StreamCPU is thread CPU time per GB received: user and system time of
// the sending and receiving threads. Softirq work that runs in their
// context (most of the forwarding path) is accounted as softirq time by
// this kernel, not to them: see CPUSplit for it.
type StreamCPU struct {
	SenderMsPerGB   float64 `json:"senderMsPerGB"`
	ReceiverMsPerGB float64 `json:"receiverMsPerGB"`
}

// CPUSplit is an mpstat-style split of all CPUs' time, in percent, and
// the busiest and quietest CPU's busy (not idle) share.
type CPUSplit struct {
	User     float64 `json:"user"`
	System   float64 `json:"system"`
	SoftIRQ  float64 `json:"softirq"`
	IRQ      float64 `json:"irq"`
	Idle     float64 `json:"idle"`
	Steal    float64 `json:"steal"`
	Busiest  float64 `json:"busiestCPUBusy"`
	Quietest float64 `json:"quietestCPUBusy"`
}

// tputStep is one row of the tuning table: a change on top of the kept
// steps before it.
type tputStep struct {
	name, why string
	keep      bool
	apply     func(*tputSetup)
}

// tputSetup is what a step may change.
type tputSetup struct {
	net     testnet.Options
	dp      variant // datapath "": linux
	untuned bool    // linux.Config.Untuned
	after   []func(context.Context, *overlayPair) error
}

func (r *dpRun) throughput(ctx context.Context) (*ThroughputPart, error) {
	r.iperf3 = false
	if r.cfg.Tool != "go" {
		_, err := exec.LookPath("iperf3")
		r.iperf3 = err == nil
	}
	part := &ThroughputPart{Tool: "go"}
	switch {
	case r.iperf3:
		part.Tool = "iperf3"
	case r.cfg.Tool == "iperf3":
		part.Tool = "go (iperf3 not found)"
	}
	steps := tuningSteps(r.cfg.UnderlayMTUs[0])
	base := tputSetup{net: testnet.Options{Hosts: 2, MTU: r.cfg.UnderlayMTUs[0]}}
	if *r.cfg.Tunings && slices.Contains(r.cfg.Datapaths, DatapathLinux) {
		cur := base
		cur.net.BridgeNetfilter = true
		cur.untuned = true
		for i, st := range steps {
			s := cur
			s.after = slices.Clone(cur.after)
			if st.apply != nil {
				st.apply(&s)
			}
			ress, err := r.measureSetup(ctx, []tputSetup{s}, fmt.Sprintf("tuning %d/%d %s", i+1, len(steps), st.name))
			if err != nil {
				return part, err
			}
			res := ress[0]
			res.Step, res.Why, res.Kept = st.name, st.why, st.keep
			part.Tuning = append(part.Tuning, *res)
			r.status.printf("throughput: %-40s mtu %d: veth %.2f, underlay %.2f, overlay %.2f Gbit/s; overlay/veth %.3f (%.3f..%.3f), overlay/underlay %.3f; best rounds %.3f",
				st.name, res.UnderlayMTU, res.VethGbps, res.UnderlayGbps, res.OverlayGbps, res.Ratio, res.RatioMin, res.RatioMax, res.OverlayToUnderlay, res.BestRatio)
			if st.keep {
				cur = s
			}
		}
	}
	for _, mtu := range r.cfg.UnderlayMTUs {
		var setups []tputSetup
		for _, v := range r.variants() {
			s := base
			s.net.MTU, s.dp = mtu, v
			setups = append(setups, s)
		}
		ress, err := r.measureSetup(ctx, setups, fmt.Sprintf("final mtu %d", mtu))
		if err != nil {
			return part, err
		}
		for _, res := range ress {
			res.Step, res.Kept = "final", true
			part.Final = append(part.Final, *res)
			r.status.printf("throughput: final %s, underlay mtu %d: veth %.2f, underlay %.2f, overlay %.2f Gbit/s; overlay/veth %.3f (%.3f..%.3f), overlay/underlay %.3f; best rounds %.3f; CPU ms/GB sender %.1f receiver %.1f (veth %.1f, %.1f)",
				res.Name(), mtu, res.VethGbps, res.UnderlayGbps, res.OverlayGbps, res.Ratio, res.RatioMin, res.RatioMax, res.OverlayToUnderlay, res.BestRatio,
				res.OverlayCPU.SenderMsPerGB, res.OverlayCPU.ReceiverMsPerGB, res.VethCPU.SenderMsPerGB, res.VethCPU.ReceiverMsPerGB)
			if res.ToFirstVariant > 0 {
				r.status.printf("throughput: %s / %s, underlay mtu %d, same rounds: %.3f (%.3f..%.3f)",
					res.Name(), r.variants()[slices.IndexFunc(r.variants(), func(v variant) bool { return v.datapath == DatapathEBPF })].name(),
					mtu, res.ToFirstVariant, res.ToFirstVariantMin, res.ToFirstVariantMax)
			}
		}
	}
	return part, nil
}

// tuningSteps is the tuning table, in order, for an underlay MTU of mtu.
func tuningSteps(mtu int) []tputStep {
	steps := []tputStep{
		{name: "untuned", keep: true,
			why: "routed overlay without the driver's tunings; br_netfilter hooks on the test bridge (the kernel's default once the module is loaded)"},
		{name: "test bridge without br_netfilter", keep: true,
			why:   "the test underlay plays a physical switch, which runs no iptables on the hosts' CPUs",
			apply: func(s *tputSetup) { s.net.BridgeNetfilter = false }},
		{name: "router namespace without early demux", keep: true,
			why:   "driver tuning: a forwarding-only namespace has no sockets to demux to",
			apply: func(s *tputSetup) { s.untuned = false }},
		{name: "rp_filter off in the router namespaces", keep: false,
			why:   "experiment, not kept: strict reverse-path filtering costs a FIB lookup per packet but stops endpoints from spoofing addresses",
			apply: func(s *tputSetup) { s.after = append(s.after, rpFilterOff) }},
	}
	if mtu != 9000 {
		steps = append(steps, tputStep{name: "jumbo underlay (MTU 9000)", keep: false,
			why:   "overlay MTU 8950; measured for every underlay MTU below",
			apply: func(s *tputSetup) { s.net.MTU = 9000 }})
	}
	return append(steps, tputStep{name: "direct wire (no test bridge)", keep: false,
		why:   "not a tuning: the two hosts joined by one veth pair instead of veth+bridge+veth, to show what the simulated wire costs",
		apply: func(s *tputSetup) { s.net.Direct = true }})
}

// rpFilterOff turns reverse-path filtering off in both router namespaces.
func rpFilterOff(_ context.Context, o *overlayPair) error {
	for _, h := range o.net.Hosts() {
		path := filepath.Join(o.net.Dir(), linux.VPCNetnsName(o.net.Prefix(), h.Name, 100))
		if err := netnsfile.Do(path, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("0"), 0o644)
		}); err != nil {
			return fmt.Errorf("rp_filter off on %s: %w", h.Name, err)
		}
	}
	return nil
}

// overlayPair is the overlay of a throughput measurement: two hosts, one
// endpoint each, learned both ways, and the veth pair to compare with.
type overlayPair struct {
	r       *dpRun
	net     *testnet.Net
	drivers []dataplane
	eps     []datapath.EndpointStatus
	ips     []netip.Addr
	veth    *testnet.VethPair
	mtu     int
	xdp     []io.Closer // XDP_PASS on the underlay devices (variant.xdp)
}

func (o *overlayPair) close() {
	for _, x := range o.xdp {
		x.Close()
	}
	for _, d := range o.drivers {
		o.r.closeDataplane(d)
	}
}

// underlayXDP attaches a program that passes every packet (XDP_PASS) to
// the underlay device of every host of o, in native mode (the veth's).
func (o *overlayPair) underlayXDP() error {
	prog, err := cebpf.NewProgram(&cebpf.ProgramSpec{Name: "weft_bench_pass", Type: cebpf.XDP, License: "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()}})
	if err != nil {
		return fmt.Errorf("load XDP_PASS: %w", err)
	}
	defer prog.Close() // the links hold it
	for _, h := range o.net.Hosts() {
		err := netnsfile.Do(h.Path, func() error {
			dev, err := net.InterfaceByName(h.UnderlayDev)
			if err != nil {
				return err
			}
			l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: dev.Index, Flags: link.XDPDriverMode})
			if err != nil {
				return err
			}
			o.xdp = append(o.xdp, l)
			return nil
		})
		if err != nil {
			return fmt.Errorf("XDP_PASS on %s of %s: %w", h.UnderlayDev, h.Name, err)
		}
	}
	return nil
}

func (r *dpRun) buildPair(ctx context.Context, s tputSetup) (*overlayPair, error) {
	n, err := r.newNet(s.net)
	if err != nil {
		return nil, err
	}
	o := &overlayPair{r: r, net: n, mtu: s.net.MTU - datapath.VXLANOverhead}
	ok := false
	defer func() {
		if !ok {
			o.close()
			r.closeNet(n)
		}
	}()
	vpc := benchVPC(100, 0)
	var eps []datapath.Endpoint
	for i, h := range n.Hosts() {
		d, err := r.newVariant(ctx, s.dp, n, h, linux.Config{Untuned: s.untuned})
		if err != nil {
			return nil, err
		}
		o.drivers = append(o.drivers, d)
		ep := benchEndpoint(fmt.Sprintf("bench/tp%d", i), vpc.VNI, 0, i)
		eps = append(eps, ep)
		if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{ep}}); err != nil {
			return nil, err
		}
		st, _ := d.Status(ep.ID)
		o.eps = append(o.eps, st)
		o.ips = append(o.ips, ep.IP)
	}
	for i, d := range o.drivers {
		j := 1 - i
		if err := d.Learn(ctx, []datapath.Remote{{VNI: vpc.VNI, IP: eps[j].IP, MAC: eps[j].MAC, HostUnderlay: n.Host(j).UnderlayIP, Epoch: 1}}); err != nil {
			return nil, err
		}
	}
	if s.dp.xdp {
		if err := o.underlayXDP(); err != nil {
			return nil, err
		}
	}
	if o.veth, err = n.AddVethPair("vp", netip.MustParsePrefix("10.255.0.1/24"), netip.MustParsePrefix("10.255.0.2/24"), 0); err != nil {
		return nil, err
	}
	for _, f := range s.after {
		if err := f(ctx, o); err != nil {
			return nil, err
		}
	}
	if cc := r.cfg.CongestionControl; cc != "" {
		for _, ns := range []string{o.eps[0].Netns, o.eps[1].Netns, o.veth.APath, o.veth.BPath, n.Host(0).Path, n.Host(1).Path} {
			if err := netnsfile.Do(ns, func() error {
				return os.WriteFile("/proc/sys/net/ipv4/tcp_congestion_control", []byte(cc), 0o644)
			}); err != nil {
				return nil, fmt.Errorf("congestion control %q: %w", cc, err)
			}
		}
	}
	// Every path answers before anything is measured.
	h0, h1 := n.Host(0), n.Host(1)
	for _, p := range []struct {
		from string
		to   netip.Addr
	}{{o.eps[0].Netns, o.ips[1]}, {o.veth.APath, o.veth.B.Addr()}, {h0.Path, h1.UnderlayIP}} {
		if err := pathCheck(ctx, p.from, p.to); err != nil {
			return nil, err
		}
	}
	ok = true
	return o, nil
}

// tputPath is one of the three paths measured in each round.
type tputPath struct {
	name     string
	from, to string
	dst      netip.AddrPort
	gbps     []float64
	cpu      []StreamCPU
	retrans  []float64
	split    []CPUSplit
}

// pathCheck pings dst from the namespace at from, up to three times.
func pathCheck(ctx context.Context, from string, dst netip.Addr) error {
	var err error
	for range 3 {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = testnet.Ping(pctx, from, dst)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("path check: %w", err)
	}
	return nil
}

// measureSetup builds a pair for each setup (their test nets alike but
// for the driver) and measures, in interleaved rounds, the veth pair and
// the underlay of the first and every pair's overlay: a result per setup,
// the baselines shared.
func (r *dpRun) measureSetup(ctx context.Context, setups []tputSetup, label string) ([]*TputResult, error) {
	var pairs []*overlayPair
	defer func() {
		for _, o := range pairs {
			o.close()
			r.closeNet(o.net)
		}
	}()
	for _, s := range setups {
		o, err := r.buildPair(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		pairs = append(pairs, o)
	}
	o := pairs[0]
	h0, h1 := o.net.Host(0), o.net.Host(1)
	paths := []*tputPath{
		{name: "veth", from: o.veth.APath, to: o.veth.BPath, dst: netip.AddrPortFrom(o.veth.B.Addr(), 5201)},
		{name: "underlay", from: h0.Path, to: h1.Path, dst: netip.AddrPortFrom(h1.UnderlayIP, 5201)},
	}
	for i, p := range pairs {
		paths = append(paths, &tputPath{name: "overlay " + dpName(setups[i].dp).name(), from: p.eps[0].Netns, to: p.eps[1].Netns, dst: netip.AddrPortFrom(p.ips[1], 5201)})
	}
	for round := range r.cfg.Rounds {
		// Each round starts with another path, so that none is always
		// measured right after the same one.
		for k := range paths {
			p := paths[(round+k)%len(paths)]
			r.status.set("throughput: %s: round %d/%d: %s", label, round+1, r.cfg.Rounds, p.name)
			before := readCPUStat()
			sr, err := r.stream(ctx, p.from, p.to, p.dst)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", label, p.name, err)
			}
			split := readCPUStat().since(before)
			c := StreamCPU{}
			if gb := float64(sr.Bytes) / 1e9; gb > 0 && sr.SenderCPU > 0 {
				c = StreamCPU{SenderMsPerGB: msOf(sr.SenderCPU) / gb, ReceiverMsPerGB: msOf(sr.ReceiverCPU) / gb}
			}
			p.gbps = append(p.gbps, round3(sr.Gbps()))
			p.cpu, p.retrans, p.split = append(p.cpu, c), append(p.retrans, float64(sr.Retransmits)), append(p.split, split)
		}
		line := fmt.Sprintf("throughput: %s: round %d/%d:", label, round+1, r.cfg.Rounds)
		for _, p := range paths {
			line += fmt.Sprintf(" %s %.2f", p.name, p.gbps[round])
		}
		r.status.set("%s Gbit/s", line)
	}
	v, u := paths[0], paths[1]
	var out []*TputResult
	for i, ov := range paths[2:] {
		ratios := roundRatios(ov.gbps, v.gbps)
		res := &TputResult{Datapath: dpName(setups[i].dp).datapath, Variant: setups[i].dp.label, UnderlayMTU: setups[i].net.MTU, OverlayMTU: pairs[i].mtu,
			VethGbps: round3(median(v.gbps)), UnderlayGbps: round3(median(u.gbps)), OverlayGbps: round3(median(ov.gbps)),
			Ratio: round3(median(ratios)), RatioMin: round3(slices.Min(ratios)), RatioMax: round3(slices.Max(ratios)),
			UnderlayRatio:     round3(median(roundRatios(u.gbps, v.gbps))),
			OverlayToUnderlay: round3(median(roundRatios(ov.gbps, u.gbps))),
			VethBest:          slices.Max(v.gbps), UnderlayBest: slices.Max(u.gbps), OverlayBest: slices.Max(ov.gbps),
			VethRounds: v.gbps, UnderlayRounds: u.gbps, OverlayRounds: ov.gbps,
			VethCPU: medianCPU(v.cpu), OverlayCPU: medianCPU(ov.cpu),
			VethRetrans: median(v.retrans), OverlayRetrans: median(ov.retrans),
			MachineVeth: medianSplit(v.split), MachineOverlay: medianSplit(ov.split)}
		if res.VethBest > 0 {
			res.BestRatio = round3(res.OverlayBest / res.VethBest)
		}
		if dp := setups[i].dp; dp.datapath == DatapathEBPF {
			res.FlowSampling = &dp.sampling
			if first := slices.IndexFunc(setups, func(s tputSetup) bool { return s.dp.datapath == DatapathEBPF }); first < i {
				ab := roundRatios(ov.gbps, paths[2+first].gbps)
				res.ToFirstVariant, res.ToFirstVariantMin, res.ToFirstVariantMax = round3(median(ab)), round3(slices.Min(ab)), round3(slices.Max(ab))
			}
		}
		out = append(out, res)
	}
	return out, nil
}

// dpName is a setup's driver with its name (datapath "": linux).
func dpName(v variant) variant {
	if v.datapath == "" {
		v.datapath = DatapathLinux
	}
	return v
}

// Name is the result's driver and variant, as the report prints it.
func (t TputResult) Name() string {
	return variant{datapath: t.Datapath, label: t.Variant}.name()
}

// roundRatios divides a by b round by round.
func roundRatios(a, b []float64) []float64 {
	out := []float64{}
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	if len(out) == 0 {
		out = append(out, 0)
	}
	return out
}

func (r *dpRun) stream(ctx context.Context, from, to string, dst netip.AddrPort) (testnet.StreamResult, error) {
	sc, rc := -1, -1
	if r.cfg.PinCPUs && runtime.NumCPU() > 1 {
		sc, rc = 0, 1
	}
	if !r.iperf3 {
		return testnet.Stream(ctx, testnet.StreamOptions{From: from, To: to, Addr: dst, Warmup: r.cfg.Warmup,
			Duration: r.cfg.Duration, WriteSize: r.cfg.WriteSize, SenderCPU: sc, ReceiverCPU: rc})
	}
	return iperf3Stream(ctx, from, to, dst, r.cfg, sc, rc)
}

// iperf3Stream runs one iperf3 client/server pair (server in to, client in
// from) and returns the receiver's rate over the measured time.
func iperf3Stream(ctx context.Context, from, to string, dst netip.AddrPort, cfg *DatapathConfig, sc, rc int) (testnet.StreamResult, error) {
	port := strconv.Itoa(int(dst.Port()))
	sargs := []string{"-s", "-1", "-p", port, "-B", dst.Addr().String()}
	if rc >= 0 {
		sargs = append(sargs, "-A", strconv.Itoa(rc))
	}
	srv := exec.CommandContext(ctx, "iperf3", sargs...)
	if err := netnsfile.Do(to, srv.Start); err != nil {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}()
	secs := int((cfg.Duration + time.Second - 1) / time.Second)
	omit := int((cfg.Warmup + time.Second - 1) / time.Second)
	cargs := []string{"-c", dst.Addr().String(), "-p", port, "-t", strconv.Itoa(secs), "-O", strconv.Itoa(omit), "-J",
		"-l", strconv.Itoa(cfg.WriteSize)}
	if sc >= 0 {
		cargs = append(cargs, "-A", strconv.Itoa(sc))
	}
	var out []byte
	var err error
	for attempt := range 20 { // the server needs a moment to listen
		err = netnsfile.Do(from, func() error {
			var err error
			out, err = exec.CommandContext(ctx, "iperf3", cargs...).Output()
			return err
		})
		if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "connect") {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	if err != nil {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 client: %w: %s", err, out)
	}
	var j struct {
		End struct {
			Sent struct {
				Bytes       float64 `json:"bytes"`
				Seconds     float64 `json:"seconds"`
				Retransmits uint32  `json:"retransmits"`
			} `json:"sum_sent"`
			Recv struct {
				Bytes   float64 `json:"bytes"`
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 output: %w", err)
	}
	e := j.End
	if e.Recv.Bytes == 0 || e.Recv.Seconds == 0 {
		return testnet.StreamResult{}, fmt.Errorf("iperf3 reported no data received: %.300s", out)
	}
	el := time.Duration(e.Recv.Seconds * float64(time.Second))
	return testnet.StreamResult{Bytes: uint64(e.Recv.Bytes), Elapsed: el, Retransmits: e.Sent.Retransmits,
		SenderCPU:   time.Duration(e.CPU.Host / 100 * float64(el)),
		ReceiverCPU: time.Duration(e.CPU.Remote / 100 * float64(el))}, nil
}

// cpuStat is /proc/stat's "cpu" lines, in ticks: the aggregate first, then
// each CPU (user, nice, system, idle, iowait, irq, softirq, steal).
type cpuStat [][8]uint64

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	var out cpuStat
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		var v [8]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		out = append(out, v)
	}
	return out
}

func (c cpuStat) since(b cpuStat) CPUSplit {
	if len(c) == 0 || len(c) != len(b) {
		return CPUSplit{}
	}
	delta := func(i int) (d [8]uint64, total float64) {
		for k := range d {
			d[k] = c[i][k] - b[i][k]
			total += float64(d[k])
		}
		return d, total
	}
	d, total := delta(0)
	if total == 0 {
		return CPUSplit{}
	}
	p := func(x uint64) float64 { return round3(100 * float64(x) / total) }
	out := CPUSplit{User: p(d[0] + d[1]), System: p(d[2]), Idle: p(d[3] + d[4]), IRQ: p(d[5]), SoftIRQ: p(d[6]), Steal: p(d[7])}
	out.Quietest = 100
	for i := 1; i < len(c); i++ {
		d, t := delta(i)
		if t == 0 {
			continue
		}
		busy := round3(100 * (1 - float64(d[3]+d[4])/t))
		out.Busiest, out.Quietest = max(out.Busiest, busy), min(out.Quietest, busy)
	}
	return out
}

func medianSplit(s []CPUSplit) CPUSplit {
	col := func(f func(CPUSplit) float64) float64 {
		v := make([]float64, len(s))
		for i, x := range s {
			v[i] = f(x)
		}
		return round3(median(v))
	}
	return CPUSplit{User: col(func(c CPUSplit) float64 { return c.User }), System: col(func(c CPUSplit) float64 { return c.System }),
		SoftIRQ: col(func(c CPUSplit) float64 { return c.SoftIRQ }), IRQ: col(func(c CPUSplit) float64 { return c.IRQ }),
		Idle: col(func(c CPUSplit) float64 { return c.Idle }), Steal: col(func(c CPUSplit) float64 { return c.Steal }),
		Busiest: col(func(c CPUSplit) float64 { return c.Busiest }), Quietest: col(func(c CPUSplit) float64 { return c.Quietest })}
}

func medianCPU(s []StreamCPU) StreamCPU {
	snd := make([]float64, len(s))
	rcv := make([]float64, len(s))
	for i, x := range s {
		snd[i], rcv[i] = x.SenderMsPerGB, x.ReceiverMsPerGB
	}
	return StreamCPU{SenderMsPerGB: round3(median(snd)), ReceiverMsPerGB: round3(median(rcv))}
}
