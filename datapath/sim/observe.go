package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/time/rate"

	"github.com/weftnet/weft/datapath"
)

// Traces and captures (datapath.Observer), answered from the model the
// way the linux driver reports the kernel's observations, with the same
// hop points, drop reasons and budgets:
//
//   - A probe is judged, when its trace fires, by the state the driver
//     holds: the source endpoint's egress policy (Decide names the rule),
//     the VPC router's lookup (a local endpoint, the gateway, a learned
//     remote, a miss, no route), the encapsulation to the remote host and,
//     on arrival there over the Underlay, the decapsulation, the
//     destination's ingress policy and the delivery, where the probe is
//     consumed. A miss asks for the location as any packet does (Misses)
//     and holds the probe until Learn installs it or LocationHold passes:
//     then it is dropped for the unknown location, as the linux driver
//     reports a neighbour entry that failed.
//   - A live trace follows the next Count packets of its 5-tuple that Send
//     (at the source) and Deliver (at the destination) see, until Until.
//   - A capture records well-formed frames (Ethernet, IPv4, TCP, UDP or
//     ICMP; VXLAN-GBP on the underlay), synthesized from the packets Send
//     and Deliver see at its endpoints and from the probes they send,
//     through its classic BPF program (golang.org/x/net/bpf's VM), under
//     the same rate budget and count as the linux driver. On the underlay
//     it records what this host encapsulates and the probes that arrive
//     (Deliver is not told the sending host). IPv4 only.
//
// None of it costs Send or Deliver more than a nil check while nothing is
// observed, and a driver allocates nothing for it until asked.

// LocationHold is how long a probe to an address whose location is not
// known waits for Learn before it is dropped for the unknown location.
const LocationHold = time.Second

// Buffers of the TraceHops and Captured channels.
const (
	hopBuffer    = 256
	packetBuffer = 1024
)

// probePayload is what a probe carries (as the linux driver's do).
const probePayload = "weft-trace probe"

// Underlay is the simulated underlay network between the drivers of one
// process (Config.Underlay): a probe a driver encapsulates for another
// host's underlay address arrives at the driver attached there. The zero
// value is ready to use; share a pointer.
type Underlay struct {
	// Elsewhere, if set, takes the probes for underlay addresses no
	// driver of this process is attached at: a simulator carries them to
	// the process that holds the destination host, which hands them to
	// its Underlay's Arrive. It is called without any driver's lock held.
	// Set it before the drivers run.
	Elsewhere func(Crossing)

	mu    sync.Mutex
	hosts map[netip.Addr]*Driver
}

// Crossing is a traced probe on the underlay, as it travels between
// processes (Underlay.Elsewhere, Underlay.Arrive).
type Crossing struct {
	From, To netip.Addr // the hosts' underlay addresses
	VNI      uint32
	Identity uint32 // the sender's
	DSCP     uint8
	Src      netip.Addr // the inner source
	Packet   Packet
	Token    uint16
}

// Arrive hands a probe that crossed from another process to the driver
// attached at its destination address, as if it came over this
// Underlay. It reports false if no driver is attached there.
func (u *Underlay) Arrive(c Crossing) bool {
	d := u.at(c.To)
	if d == nil {
		return false
	}
	d.arrive(&arrival{from: c.From, to: c.To, vni: c.VNI, identity: c.Identity, dscp: c.DSCP, src: c.Src, p: c.Packet, token: c.Token})
	return true
}

func (u *Underlay) attach(ip netip.Addr, d *Driver) {
	if !ip.IsValid() {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.hosts == nil {
		u.hosts = map[netip.Addr]*Driver{}
	}
	u.hosts[ip] = d
}

func (u *Underlay) detach(ip netip.Addr, d *Driver) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.hosts[ip] == d {
		delete(u.hosts, ip)
	}
}

func (u *Underlay) at(ip netip.Addr) *Driver {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hosts[ip]
}

// observer is a driver's traces and captures.
type observer struct {
	hops     chan datapath.TraceHop       // nil until TraceHops
	packets  chan datapath.CapturedPacket // nil until Captured
	traces   map[string]*traceRun
	captures map[string]*captureRun
	held     []*heldProbe
	// live counts the live traces that fire.
	live int
}

// traceRun is a trace this host takes part in.
type traceRun struct {
	t        datapath.Trace
	injected bool
	// sent and seen number a live trace's packets at the source and at
	// the destination.
	sent, seen int
}

// heldProbe is a probe waiting for its destination's location.
type heldProbe struct {
	run   *traceRun
	src   string // the source endpoint
	p     Packet
	key   datapath.RemoteKey
	timer *time.Timer
}

// captureRun is a capture on this host.
type captureRun struct {
	c      datapath.Capture
	filter *bpf.VM // nil: every packet
	// underlay has a filter per VNI of c.Underlay (nil: every packet).
	underlay map[uint32]*bpf.VM
	limiter  *rate.Limiter
	sent     int
	lost     uint64
}

// observing returns the driver's observer, made on first use. The caller
// holds mu.
func (d *Driver) observing() *observer {
	if d.obs == nil {
		d.obs = &observer{traces: map[string]*traceRun{}, captures: map[string]*captureRun{}}
	}
	return d.obs
}

// TraceHops implements datapath.Observer. The channel is allocated on
// first use; hops nobody asked for are dropped.
func (d *Driver) TraceHops() <-chan datapath.TraceHop {
	d.mu.Lock()
	defer d.mu.Unlock()
	return lazyChan(&d.observing().hops, hopBuffer, d.closed)
}

// Captured implements datapath.Observer. The channel is allocated on first
// use; packets nobody asked for are counted lost.
func (d *Driver) Captured() <-chan datapath.CapturedPacket {
	d.mu.Lock()
	defer d.mu.Unlock()
	return lazyChan(&d.observing().packets, packetBuffer, d.closed)
}

// lazyChan returns *ch, made with capacity n on the first call (and
// closed at once if the driver is closed: its reader ends). The caller
// holds mu.
func lazyChan[T any](ch *chan T, n int, closed bool) <-chan T {
	if *ch == nil {
		*ch = make(chan T, n)
		if closed {
			close(*ch)
		}
	}
	return *ch
}

// Observe implements datapath.Observer: it keeps the traces and captures,
// and sends the probe of each probe trace that fires with a local source,
// once.
func (d *Driver) Observe(ctx context.Context, traces []datapath.Trace, captures []datapath.Capture) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim observe: %w", err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return datapath.ErrClosed
	}
	if d.obs == nil && len(traces) == 0 && len(captures) == 0 {
		d.mu.Unlock()
		return nil
	}
	o := d.observing()
	var errs []error
	keep := make(map[string]bool, len(traces))
	for _, t := range traces {
		if err := d.checkTrace(t); err != nil {
			errs = append(errs, &datapath.ObserveError{ID: t.ID, Err: err})
			continue
		}
		keep[t.ID] = true
		run := o.traces[t.ID]
		if run == nil || run.t.Token != t.Token {
			run = &traceRun{} // another trace of the same name
			o.traces[t.ID] = run
		}
		run.t = t
	}
	for id := range o.traces {
		if !keep[id] {
			delete(o.traces, id)
		}
	}
	o.held = slices.DeleteFunc(o.held, func(h *heldProbe) bool {
		if o.traces[h.run.t.ID] == h.run {
			return false
		}
		h.timer.Stop()
		return true
	})
	errs = append(errs, d.syncCaptures(captures)...)
	o.live = 0
	var fire []*traceRun
	for _, run := range o.traces {
		switch {
		case !run.t.Fire:
		case run.t.Mode == datapath.TraceLive:
			o.live++
		case run.t.Source != "" && !run.injected:
			run.injected = true
			fire = append(fire, run)
		}
	}
	slices.SortFunc(fire, func(a, b *traceRun) int { return cmp.Compare(a.t.ID, b.t.ID) })
	var crossing []arrival
	var misses []datapath.Miss
	var onMiss func(datapath.Miss)
	for _, run := range fire {
		a, miss := d.inject(run)
		if a != nil {
			crossing = append(crossing, *a)
		}
		if miss != nil {
			if f := d.queueMiss(*miss); f != nil {
				onMiss, misses = f, append(misses, *miss)
			}
		}
	}
	d.mu.Unlock()
	for _, m := range misses {
		onMiss(m)
	}
	d.carry(crossing)
	return errors.Join(errs...)
}

// checkTrace checks that a trace's local ends are programmed here, in its
// VNI. The caller holds mu.
func (d *Driver) checkTrace(t datapath.Trace) error {
	if d.vpc(t.VNI) == nil {
		return fmt.Errorf("VNI %d is not on this host", t.VNI)
	}
	for _, id := range []string{t.Source, t.Dest} {
		if id == "" {
			continue
		}
		e := d.endpoint(id)
		if e == nil {
			return fmt.Errorf("endpoint %q is not programmed on this host", id)
		}
		if e.VNI != t.VNI {
			return fmt.Errorf("endpoint %q is not in VNI %d", id, t.VNI)
		}
	}
	return nil
}

// inject sends a trace's probe from its source endpoint through the
// model. It returns the probe as it leaves encapsulated for another host,
// or the miss it asks for (the probe is held). The caller holds mu.
func (d *Driver) inject(run *traceRun) (*arrival, *datapath.Miss) {
	t := &run.t
	e := d.endpoint(t.Source)
	p := probePacket(t)
	dec := d.lookup(e.VNI, p.Dst)
	var to *datapath.Endpoint
	if dec.Verdict == VerdictLocal {
		to = d.endpointAt(datapath.RemoteKey{VNI: e.VNI, IP: p.Dst})
	}
	known := d.known(e.VNI, e.IP, p)
	egress := probeVerdict(e, egressFlow(p), false, known)
	var ingress verdict
	if to != nil {
		ingress = probeVerdict(to, ingressFlow(e.IP, e.Identity, p), true, known)
	}
	a := path{d: d, t: t}.out(e, p, dec, to, egress, ingress, true)
	reason := datapath.DropNone
	switch {
	case !egress.allowed || to != nil && !ingress.allowed:
		reason = datapath.DropPolicy
	case dec.Verdict == VerdictDrop:
		reason = datapath.DropNoRoute
	}
	if len(d.obs.captures) > 0 {
		d.captureAt(e, true, &wire{srcMAC: e.MAC, dstMAC: gatewayMAC, src: e.IP, p: p, id: t.Token, probe: true}, reason)
	}
	switch {
	case a != nil:
		a.token = t.Token
		d.captureUnderlay(a, true)
		return a, nil
	case egress.allowed && dec.Verdict == VerdictMiss:
		h := &heldProbe{run: run, src: e.ID, p: p, key: datapath.RemoteKey{VNI: e.VNI, IP: p.Dst}}
		h.timer = time.AfterFunc(LocationHold, func() { d.expire(h) }) // it waits for mu
		d.obs.held = append(d.obs.held, h)
		return nil, &datapath.Miss{VNI: e.VNI, IP: p.Dst}
	}
	return nil, nil
}

// expire drops a held probe whose location was not learned in time.
func (d *Driver) expire(h *heldProbe) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.obs == nil {
		return
	}
	i := slices.Index(d.obs.held, h)
	if i < 0 {
		return
	}
	d.obs.held = slices.Delete(d.obs.held, i, i+1)
	path{d: d, t: &h.run.t}.drop(datapath.DropNoLocation, "",
		fmt.Sprintf("no location for %s in VNI %d: nobody answered where it is within %v", h.p.Dst, h.key.VNI, LocationHold))
}

// resumeHeld sends on the held probes whose location was learned, and
// returns them as they leave encapsulated. The caller holds mu.
func (d *Driver) resumeHeld() []arrival {
	var out []arrival
	d.obs.held = slices.DeleteFunc(d.obs.held, func(h *heldProbe) bool {
		if d.remotes[h.key] == nil {
			return false
		}
		h.timer.Stop()
		e := d.endpoint(h.src)
		if e == nil || e.VNI != h.key.VNI {
			return true
		}
		a := d.encapsulate(e, h.p, d.remotes[h.key].HostUnderlay)
		a.token = h.run.t.Token
		path{d: d, t: &h.run.t}.encap(a)
		d.captureUnderlay(a, true)
		out = append(out, *a)
		return true
	})
	return out
}

// carry hands encapsulated packets to the drivers of the hosts they are
// for, over the Underlay (or to its Elsewhere). The caller does not hold
// mu.
func (d *Driver) carry(as []arrival) {
	if d.underlay == nil {
		return
	}
	for i := range as {
		a := &as[i]
		switch to := d.underlay.at(a.to); {
		case to == d:
		case to != nil:
			to.arrive(a)
		case d.underlay.Elsewhere != nil:
			d.underlay.Elsewhere(Crossing{From: a.from, To: a.to, VNI: a.vni, Identity: a.identity, DSCP: a.dscp, Src: a.src, Packet: a.p, Token: a.token})
		}
	}
}

// arrive takes a probe from the underlay: a trace armed here as its
// destination follows it to the endpoint, where it is consumed; with
// none, it is delivered as any packet.
func (d *Driver) arrive(a *arrival) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	var run *traceRun
	if d.obs != nil {
		for _, r := range d.obs.traces {
			if t := &r.t; t.Mode == datapath.TraceProbe && t.Dest != "" && t.VNI == a.vni && t.Token == a.token {
				run = r
			}
		}
	}
	if run == nil {
		d.mu.Unlock()
		_, _ = d.Deliver(a.vni, a.src, a.identity, a.p)
		return
	}
	defer d.mu.Unlock()
	to := d.endpointAt(datapath.RemoteKey{VNI: a.vni, IP: a.p.Dst})
	var ingress verdict
	if to != nil {
		ingress = probeVerdict(to, ingressFlow(a.src, a.identity, a.p), true, d.known(a.vni, a.src, a.p))
	}
	d.captureUnderlay(a, false)
	path{d: d, t: &run.t}.in(a, to, ingress, true)
}

// observeSent follows a packet Send judged (see Send's arguments to
// countPacket) for the live traces and captures. The caller holds mu.
func (d *Driver) observeSent(e, to *datapath.Endpoint, p Packet, dec Decision, reason datapath.DropReason, at *datapath.Endpoint) {
	o := d.obs
	if o == nil || o.live == 0 && len(o.captures) == 0 || d.closed {
		return
	}
	if run := o.liveRun(e.ID, "", e.IP, p); run != nil {
		pt := path{d: d, t: &run.t, pk: run.sent}
		run.sent++
		egress := judged(e, egressFlow(p), false, reason == datapath.DropPolicy && at == e)
		if dec.Verdict == VerdictDrop || dec.Verdict == VerdictMiss { // routed before any policy judged it
			egress = probeVerdict(e, egressFlow(p), false, d.known(e.VNI, e.IP, p))
		}
		var ingress verdict
		if to != nil {
			ingress = judged(to, ingressFlow(e.IP, e.Identity, p), true, reason == datapath.DropPolicy && at == to)
		}
		pt.out(e, p, dec, to, egress, ingress, false)
	}
	if len(o.captures) == 0 {
		return
	}
	d.captureAt(e, true, &wire{srcMAC: e.MAC, dstMAC: gatewayMAC, src: e.IP, p: p}, reason)
	if to != nil && (reason == datapath.DropNone || at == to) {
		d.captureAt(to, false, &wire{srcMAC: gatewayMAC, dstMAC: to.MAC, src: e.IP, p: p}, reason)
	}
	if dec.Verdict == VerdictRemote && reason == datapath.DropNone {
		d.captureUnderlay(d.encapsulate(e, p, dec.Host), true)
	}
}

// observeDelivered follows a packet Deliver judged for the live traces
// and captures. The caller holds mu.
func (d *Driver) observeDelivered(vni uint32, src netip.Addr, identity uint32, to *datapath.Endpoint, p Packet, reason datapath.DropReason) {
	o := d.obs
	if o == nil || o.live == 0 && len(o.captures) == 0 || d.closed {
		return
	}
	if run := o.liveRun("", to.ID, src, p); run != nil {
		pt := path{d: d, t: &run.t, pk: run.seen}
		run.seen++
		ingress := judged(to, ingressFlow(src, identity, p), true, reason == datapath.DropPolicy)
		pt.in(&arrival{vni: vni, identity: identity, src: src, p: p}, to, ingress, false)
	}
	if len(o.captures) > 0 {
		d.captureAt(to, false, &wire{srcMAC: gatewayMAC, dstMAC: to.MAC, src: src, p: p}, reason)
	}
}

// liveRun returns the live trace that follows a packet from src (an
// address) sent by local endpoint from or to local endpoint to (one of
// them ""), if any still does.
func (o *observer) liveRun(from, to string, src netip.Addr, p Packet) *traceRun {
	if o.live == 0 {
		return nil
	}
	now := time.Now()
	for _, run := range o.traces {
		t := &run.t
		if t.Mode != datapath.TraceLive || !t.Fire || !t.Until.IsZero() && now.After(t.Until) ||
			from != "" && (t.Source != from || run.sent >= max(t.Count, 1)) ||
			to != "" && (t.Dest != to || run.seen >= max(t.Count, 1)) ||
			t.Src != src || t.Dst != p.Dst || t.Proto != p.Proto {
			continue
		}
		if t.Proto != datapath.ProtoICMP && (t.SPort != 0 && t.SPort != p.SrcPort || t.DPort != 0 && t.DPort != p.DstPort) {
			continue
		}
		return run
	}
	return nil
}

// verdict is a policy's judgement of a traced packet.
type verdict struct {
	allowed bool
	// rule is the rule that allowed it; none when the direction is not
	// isolated or a known connection let it pass (established).
	rule        string
	established bool
}

// judged is the verdict on a packet the policy denied or let pass.
func judged(ep *datapath.Endpoint, f datapath.Flow, ingress, denied bool) verdict {
	if denied {
		return verdict{}
	}
	ok, rule := ep.Policy.Decide(f, ingress)
	return verdict{allowed: true, rule: rule, established: !ok}
}

// probeVerdict is the verdict of ep's policy on a probe, which belongs to
// a known connection or starts none (it is consumed).
func probeVerdict(ep *datapath.Endpoint, f datapath.Flow, ingress, known bool) verdict {
	ok, _ := ep.Policy.Decide(f, ingress)
	return judged(ep, f, ingress, !ok && !known)
}

// known reports whether p belongs to a connection the driver tracks. The
// caller holds mu.
func (d *Driver) known(vni uint32, src netip.Addr, p Packet) bool {
	k := key(vni, src, p)
	return d.conns[k] != nil || d.conns[k.reverse()] != nil
}

func egressFlow(p Packet) datapath.Flow {
	f := flow(p)
	f.Peer = p.Dst
	return f
}

func ingressFlow(src netip.Addr, identity uint32, p Packet) datapath.Flow {
	f := flow(p)
	f.Peer, f.PeerIdentity = src, identity
	return f
}

// probePacket is a trace's probe: an ICMP echo request, a UDP datagram or
// a TCP SYN.
func probePacket(t *datapath.Trace) Packet {
	if t.Proto == datapath.ProtoICMP {
		return Packet{Dst: t.Dst, Proto: t.Proto, ICMPType: 8}
	}
	return Packet{Dst: t.Dst, Proto: t.Proto, SrcPort: t.SPort, DstPort: t.DPort}
}

// arrival is a packet on the simulated underlay.
type arrival struct {
	from, to netip.Addr // the hosts' underlay addresses
	vni      uint32
	identity uint32 // the sender's
	dscp     uint8
	src      netip.Addr // the inner source
	p        Packet
	token    uint16 // a probe's; 0 for other packets
}

// encapsulate is e's packet p as it leaves for host. The caller holds mu.
func (d *Driver) encapsulate(e *datapath.Endpoint, p Packet, host netip.Addr) *arrival {
	a := &arrival{from: d.host.UnderlayIP, to: host, vni: e.VNI, identity: e.Identity, src: e.IP, p: p}
	if e.QoS != nil {
		a.dscp = e.QoS.DSCP
	}
	return a
}

func (a *arrival) attrs() map[string]string {
	m := map[string]string{"vni": strconv.Itoa(int(a.vni)), "dscp": strconv.Itoa(int(a.dscp))}
	if a.from.IsValid() {
		m["outerSrc"], m["outerDst"] = a.from.String(), a.to.String()
	}
	return m
}

// path emits the hops of one traced packet on this host. The caller holds
// mu.
type path struct {
	d  *Driver
	t  *datapath.Trace
	pk int
}

func (pt path) hop(h datapath.TraceHop) {
	h.Trace, h.Packet, h.Time = pt.t.ID, pt.pk, time.Now()
	select {
	case pt.d.obs.hops <- h:
	default: // nobody reads (or asked for them: a nil channel)
	}
}

func (pt path) drop(reason datapath.DropReason, endpoint, detail string) {
	pt.hop(datapath.TraceHop{Point: datapath.HopDrop, Verdict: "dropped", Reason: reason, Endpoint: endpoint, Detail: detail, Final: true})
}

// out emits the hops of a traced packet p that local endpoint e sends, as
// far as this host takes it: dec is the VPC router's decision, egress the
// verdict of e's policy and ingress that of to, the local destination.
// It returns the packet as it leaves encapsulated (VerdictRemote).
func (pt path) out(e *datapath.Endpoint, p Packet, dec Decision, to *datapath.Endpoint, egress, ingress verdict, probe bool) *arrival {
	pt.hop(datapath.TraceHop{Point: datapath.HopSourceVeth, Verdict: "forward",
		Detail: fmt.Sprintf("received on %s from endpoint %s: %s", hostIf(e.ID), e.ID, describe(e.IP, p))})
	pt.hop(datapath.TraceHop{Point: datapath.HopVPCRouter, Verdict: "forward",
		Detail: fmt.Sprintf("VPC router of VNI %d: marked with identity %d", e.VNI, e.Identity)})
	if !pt.policy(e, egress, false) {
		return nil
	}
	route := func(detail string, args ...any) {
		pt.hop(datapath.TraceHop{Point: datapath.HopRoute, Verdict: "forward", Detail: fmt.Sprintf(detail, args...)})
	}
	switch dec.Verdict {
	case VerdictDrop:
		pt.drop(datapath.DropNoRoute, "", fmt.Sprintf("no route to %s in the VPC router of VNI %d", p.Dst, e.VNI))
	case VerdictGateway:
		route("%s is the VPC's gateway: the router takes it", p.Dst)
		pt.hop(datapath.TraceHop{Point: datapath.HopDeliver, Verdict: "delivered", Final: true,
			Detail: fmt.Sprintf("reached the VPC router of VNI %d at %s", e.VNI, p.Dst)})
	case VerdictLocal:
		if to == nil { // it left between the lookup and now
			pt.drop(datapath.DropNoRoute, "", fmt.Sprintf("no endpoint %s in VNI %d on this host", p.Dst, e.VNI))
			return nil
		}
		route("%s via %s to endpoint %s on this host", p.Dst, hostIf(to.ID), to.ID)
		if pt.policy(to, ingress, true) {
			pt.deliver(to, probe)
		}
	case VerdictMiss:
		route("%s via VXLAN (VNI %d): its location is not known here, asked for", p.Dst, e.VNI)
	case VerdictRemote:
		route("%s via VXLAN (VNI %d) to host %s", p.Dst, e.VNI, dec.Host)
		a := pt.d.encapsulate(e, p, dec.Host)
		pt.encap(a)
		return a
	}
	return nil
}

// encap emits the encapsulation and underlay hops of a packet leaving.
func (pt path) encap(a *arrival) {
	pt.hop(datapath.TraceHop{Point: datapath.HopEncap, Verdict: "forward", Attrs: a.attrs(),
		Detail: fmt.Sprintf("VXLAN VNI %d, GBP identity %d, %s → %s", a.vni, a.identity, a.from, a.to)})
	pt.hop(datapath.TraceHop{Point: datapath.HopUnderlay, Verdict: "forward", Attrs: a.attrs(),
		Detail: fmt.Sprintf("sent on %s: %s → %s, DSCP %d", pt.d.underlayDev(), a.from, a.to, a.dscp)})
}

// in emits the hops of a traced packet that arrived encapsulated, for to
// (nil: no such local endpoint).
func (pt path) in(a *arrival, to *datapath.Endpoint, ingress verdict, probe bool) {
	detail := fmt.Sprintf("received on %s, VNI %d", pt.d.underlayDev(), a.vni)
	if a.from.IsValid() {
		detail = fmt.Sprintf("received on %s: %s → %s, VNI %d", pt.d.underlayDev(), a.from, a.to, a.vni)
	}
	pt.hop(datapath.TraceHop{Point: datapath.HopUnderlay, Verdict: "forward", Attrs: a.attrs(), Detail: detail})
	pt.hop(datapath.TraceHop{Point: datapath.HopDecap, Verdict: "forward",
		Attrs:  map[string]string{"vni": strconv.Itoa(int(a.vni)), "identity": strconv.Itoa(int(a.identity))},
		Detail: fmt.Sprintf("decapsulated (VNI %d), sender identity %d", a.vni, a.identity)})
	if to == nil {
		pt.drop(datapath.DropNoRoute, "", fmt.Sprintf("no endpoint %s in VNI %d on this host", a.p.Dst, a.vni))
		return
	}
	if pt.policy(to, ingress, true) {
		pt.deliver(to, probe)
	}
}

// policy emits a policy verdict: the egress of the source (policy) or the
// ingress of the destination (remote-policy); false when it denied.
func (pt path) policy(ep *datapath.Endpoint, v verdict, ingress bool) bool {
	dir, point := "egress", datapath.HopPolicy
	if ingress {
		dir, point = "ingress", datapath.HopRemotePolicy
	}
	if !v.allowed {
		pt.drop(datapath.DropPolicy, ep.ID, dir+" of "+ep.ID+": not allowed by its policy")
		return false
	}
	isolated := ep.Policy != nil && (ingress && ep.Policy.IngressIsolated || !ingress && ep.Policy.EgressIsolated)
	detail := dir + " of " + ep.ID + " not isolated: allowed"
	switch {
	case isolated && v.established:
		detail = dir + " of " + ep.ID + " allowed: the packet belongs to an established connection"
	case isolated:
		detail = dir + " of " + ep.ID + " allowed by " + v.rule
	}
	pt.hop(datapath.TraceHop{Point: point, Verdict: "allow", Rule: v.rule, Endpoint: ep.ID, Detail: detail})
	return true
}

func (pt path) deliver(to *datapath.Endpoint, probe bool) {
	detail := fmt.Sprintf("sent on %s to endpoint %s", hostIf(to.ID), to.ID)
	if probe {
		detail = fmt.Sprintf("reached %s, the interface of endpoint %s; the probe is consumed there", hostIf(to.ID), to.ID)
	}
	pt.hop(datapath.TraceHop{Point: datapath.HopDeliver, Verdict: "delivered", Endpoint: to.ID, Detail: detail, Final: true})
}

// describe prints a packet's header for a hop.
func describe(src netip.Addr, p Packet) string {
	switch p.Proto {
	case datapath.ProtoTCP:
		return fmt.Sprintf("%s:%d → %s:%d tcp", src, p.SrcPort, p.Dst, p.DstPort)
	case datapath.ProtoUDP:
		return fmt.Sprintf("%s:%d → %s:%d udp", src, p.SrcPort, p.Dst, p.DstPort)
	case datapath.ProtoICMP:
		return fmt.Sprintf("%s → %s icmp type %d", src, p.Dst, p.ICMPType)
	}
	return fmt.Sprintf("%s → %s proto %d", src, p.Dst, p.Proto)
}

// hostIf names the host side of an endpoint's interface (EndpointStatus.HostIfName).
func hostIf(id string) string { return "sim-" + id }

// underlayDev names the host's underlay interface.
func (d *Driver) underlayDev() string { return cmp.Or(d.host.UnderlayDev, "underlay") }

// syncCaptures starts the new captures, restarts the changed ones and
// forgets those that are gone. The caller holds mu.
func (d *Driver) syncCaptures(want []datapath.Capture) []error {
	o := d.obs
	keep := make(map[string]bool, len(want))
	var errs []error
	for i := range want {
		c := want[i]
		keep[c.ID] = true
		if cur := o.captures[c.ID]; cur != nil && cur.c.Equal(&c) {
			continue
		}
		delete(o.captures, c.ID)
		run, err := d.newCapture(c)
		if err != nil {
			errs = append(errs, &datapath.ObserveError{ID: c.ID, Err: err})
			continue
		}
		o.captures[c.ID] = run
	}
	for id := range o.captures {
		if !keep[id] {
			delete(o.captures, id)
		}
	}
	return errs
}

// newCapture checks a capture (its endpoints are programmed here, its
// programs run in the VM) and sets up its budget: the linux driver's.
func (d *Driver) newCapture(c datapath.Capture) (*captureRun, error) {
	for _, id := range c.Endpoints {
		if d.endpoint(id) == nil {
			return nil, fmt.Errorf("endpoint %q is not programmed on this host", id)
		}
	}
	run := &captureRun{c: c, limiter: rate.NewLimiter(rate.Limit(max(c.Rate, 1)), max(c.Rate/10, 1))}
	var err error
	if run.filter, err = filterOf(c.Program); err != nil {
		return nil, err
	}
	for vni, prog := range c.Underlay {
		vm, err := filterOf(prog)
		if err != nil {
			return nil, fmt.Errorf("underlay program of VNI %d: %w", vni, err)
		}
		if run.underlay == nil {
			run.underlay = map[uint32]*bpf.VM{}
		}
		run.underlay[vni] = vm
	}
	return run, nil
}

// filterOf loads a capture program into a VM (nil: no program).
func filterOf(prog []bpf.RawInstruction) (*bpf.VM, error) {
	if prog == nil {
		return nil, nil
	}
	insns, ok := bpf.Disassemble(prog)
	if !ok || len(prog) > 4096 {
		return nil, fmt.Errorf("%w: capture program does not decode", datapath.ErrInvalid)
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		return nil, fmt.Errorf("%w: capture program: %v", datapath.ErrInvalid, err)
	}
	return vm, nil
}

// captureAt records a packet at local endpoint ep's interface, sent by it
// (out) or to it, dropped for reason (DropNone: it passed). The interface
// sees all that its endpoint sends, and what is sent to it once it
// passed; a dropped-only capture records the drops only. The caller holds
// mu.
func (d *Driver) captureAt(ep *datapath.Endpoint, out bool, w *wire, reason datapath.DropReason) {
	var frame []byte
	for _, run := range d.obs.captures {
		c := &run.c
		if !slices.Contains(c.Endpoints, ep.ID) || out && c.Direction == datapath.DirIn || !out && c.Direction == datapath.DirOut ||
			c.DroppedOnly && reason == datapath.DropNone || !c.DroppedOnly && !out && reason != datapath.DropNone {
			continue
		}
		if frame == nil {
			if frame = w.frame(); frame == nil {
				return
			}
		}
		drop := datapath.DropNone
		if c.DroppedOnly {
			drop = reason
		}
		d.record(run, run.filter, frame, datapath.CapturedPacket{Capture: c.ID, Endpoint: ep.ID, Interface: hostIf(ep.ID), Out: out, Drop: drop})
	}
}

// captureUnderlay records an encapsulated packet on the underlay, leaving
// (out) or arriving, for the captures of its VNI. The caller holds mu.
func (d *Driver) captureUnderlay(a *arrival, out bool) {
	var frame []byte
	for _, run := range d.obs.captures {
		vm, ok := run.underlay[a.vni]
		if !ok || run.c.DroppedOnly {
			continue
		}
		if frame == nil {
			if frame = a.frame(); frame == nil {
				return
			}
		}
		d.record(run, vm, frame, datapath.CapturedPacket{Capture: run.c.ID, Interface: d.underlayDev(), Out: out})
	}
}

// record hands over a frame that filter takes, as p, under the capture's
// count and budget; what exceeds them or finds nobody reading is counted
// lost, as the linux driver does.
func (d *Driver) record(run *captureRun, filter *bpf.VM, frame []byte, p datapath.CapturedPacket) {
	n := len(frame)
	if filter != nil {
		var err error
		if n, err = filter.Run(frame); err != nil || n == 0 {
			return
		}
	}
	if run.c.Count > 0 && run.sent >= run.c.Count {
		return
	}
	if !run.limiter.Allow() {
		run.lost++
		return
	}
	n = min(n, len(frame), max(run.c.Snaplen, 64))
	p.Time, p.Length, p.Data, p.Lost = time.Now(), len(frame), frame[:n:n], run.lost
	select {
	case d.obs.packets <- p:
		run.sent++
	default:
		run.lost++
	}
}

// closeObserver stops the held probes' timers and closes the channels. The
// caller holds mu and closes the driver.
func (d *Driver) closeObserver() {
	o := d.obs
	if o == nil {
		return
	}
	for _, h := range o.held {
		h.timer.Stop()
	}
	o.held = nil
	clear(o.traces)
	clear(o.captures)
	if o.hops != nil {
		close(o.hops)
	}
	if o.packets != nil {
		close(o.packets)
	}
}
