package linux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/nftables/expr"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/netnsfile"
)

// Captures: a packet socket (AF_PACKET) per captured interface, with the
// capture's program attached, so the kernel hands over only what the
// filter takes, and only from that interface; a dropped-only capture
// instead traces the endpoints' packets in the trace table and records
// those the data plane drops. See "Trace and capture" in the package documentation.

// captureRun is a capture on this host.
type captureRun struct {
	c       datapath.Capture
	n       int // its number, for its chain in the trace table
	socks   []*packetSock
	limiter *rate.Limiter
	sent    atomic.Int64
	lost    atomic.Uint64
	// veths of the endpoints captured, with their endpoints and addresses.
	veths map[string]string
	addrs map[netip.Addr]string
	vnis  []uint32
}

// packetSock is one capture socket and its reader.
type packetSock struct {
	fd       int
	iface    string
	endpoint string // "" on the underlay
	underlay bool
	stop     atomic.Bool
}

// syncCaptures opens the sockets of new captures and closes those of
// captures that are gone or changed. The caller holds obs.mu.
func (d *Driver) syncCaptures(want []datapath.Capture) []error {
	o := d.obs
	keep := map[string]bool{}
	var errs []error
	for i := range want {
		c := want[i]
		keep[c.ID] = true
		if cur := o.captures[c.ID]; cur != nil {
			if cur.c.Equal(&c) {
				continue
			}
			d.stopCapture(cur)
			delete(o.captures, c.ID)
		}
		run, err := d.startCapture(c)
		if err != nil {
			errs = append(errs, &datapath.ObserveError{ID: c.ID, Err: err})
			continue
		}
		o.captures[c.ID] = run
	}
	for id, run := range o.captures {
		if !keep[id] {
			d.stopCapture(run)
			delete(o.captures, id)
		}
	}
	return errs
}

func (d *Driver) startCapture(c datapath.Capture) (run *captureRun, err error) {
	d.obs.captureN++
	run = &captureRun{c: c, n: d.obs.captureN, veths: map[string]string{}, addrs: map[netip.Addr]string{},
		limiter: rate.NewLimiter(rate.Limit(max(c.Rate, 1)), max(c.Rate/10, 1))}
	defer func() {
		if err != nil {
			d.stopCapture(run)
		}
	}()
	for _, prog := range append([][]bpf.RawInstruction{c.Program}, mapValues(c.Underlay)...) {
		if prog == nil {
			continue
		}
		if _, ok := bpf.Disassemble(prog); !ok || len(prog) > 4096 {
			return nil, fmt.Errorf("%w: capture program does not decode", datapath.ErrInvalid)
		}
	}
	d.smu.Lock()
	type target struct {
		id    string
		ep    datapath.Endpoint
		vpcNS int
	}
	var targets []target
	for _, id := range c.Endpoints {
		st := d.eps[id]
		vs := (*vpcNS)(nil)
		if st != nil {
			vs = d.vpcs[st.ep.VNI]
		}
		if st == nil || vs == nil {
			d.smu.Unlock()
			return nil, fmt.Errorf("endpoint %q is not programmed on this host", id)
		}
		targets = append(targets, target{id, st.ep, int(vs.ns)})
	}
	d.smu.Unlock()
	for _, tg := range targets {
		veth := VethName(tg.id)
		run.veths[veth] = tg.id
		run.addrs[tg.ep.IP] = tg.id
		if !slices.Contains(run.vnis, tg.ep.VNI) {
			run.vnis = append(run.vnis, tg.ep.VNI)
		}
		if c.DroppedOnly {
			continue // traced in the trace table instead
		}
		s, err := openPacketSock(tg.vpcNS, veth, directed(c.Program, c.Direction), c.Snaplen)
		if err != nil {
			return nil, fmt.Errorf("capture on %s (endpoint %s): %w", veth, tg.id, err)
		}
		s.endpoint = tg.id
		run.socks = append(run.socks, s)
	}
	if len(c.Underlay) > 0 && !c.DroppedOnly {
		dev, err := d.underlayDev()
		if err != nil {
			return nil, err
		}
		for _, vni := range slices.Sorted(mapKeys(c.Underlay)) {
			s, err := openPacketSock(int(d.hostNS), dev, c.Underlay[vni], c.Snaplen)
			if err != nil {
				return nil, fmt.Errorf("capture on %s (VNI %d): %w", dev, vni, err)
			}
			s.underlay = true
			run.socks = append(run.socks, s)
		}
	}
	for _, s := range run.socks {
		d.obs.wg.Add(1)
		go func() {
			defer d.obs.wg.Done()
			d.readPackets(run, s)
		}()
	}
	return run, nil
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// underlayDev names the device that holds the host's underlay address.
func (d *Driver) underlayDev() (string, error) {
	d.smu.Lock()
	ul := d.underlay
	d.smu.Unlock()
	addrs, err := d.host.AddrList(nil, unix.AF_INET)
	if err != nil {
		return "", fmt.Errorf("list underlay addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == ul {
			l, err := d.host.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", err
			}
			return l.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("no device holds the underlay address %s", ul)
}

// Packet types (sockaddr_ll.sll_pkttype) and the classic BPF extension
// that loads it.
const (
	pktOutgoing = unix.PACKET_OUTGOING
)

// directed prefixes a program with the capture's direction. On the
// router side of an endpoint's veth, what the endpoint sends is received
// and what it is sent is outgoing.
func directed(prog []bpf.RawInstruction, dir datapath.Direction) []bpf.RawInstruction {
	if dir == datapath.DirBoth {
		return prog
	}
	if prog == nil {
		prog, _ = bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 262144}})
	}
	skipOnOutgoing, skipOnOther := uint8(1), uint8(0) // DirIn: keep outgoing
	if dir == datapath.DirOut {
		skipOnOutgoing, skipOnOther = 0, 1
	}
	pre, _ := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: pktOutgoing, SkipTrue: skipOnOutgoing, SkipFalse: skipOnOther},
		bpf.RetConstant{Val: 0},
	})
	// The prefix ends in "ret 0" that the jump skips over into prog.
	return append(pre, prog...)
}

// openPacketSock opens a packet socket in namespace ns, bound to iface,
// with prog attached, receiving at most snaplen bytes of a packet.
func openPacketSock(ns int, iface string, prog []bpf.RawInstruction, snaplen int) (*packetSock, error) {
	var fd int
	err := netnsfile.DoFd(ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		// Filter before binding: no packet of another filter gets in.
		if prog != nil {
			if err := attachFilter(fd, prog); err != nil {
				unix.Close(fd)
				return err
			}
		} else if err := attachFilter(fd, []bpf.RawInstruction{{Op: 0x06, K: uint32(max(snaplen, 1))}}); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind to %s: %w", iface, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &packetSock{fd: fd, iface: iface}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// attachFilter attaches a classic BPF program (SO_ATTACH_FILTER); the
// kernel checks it again.
func attachFilter(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 {
		return nil
	}
	f := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		f[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fp := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("attach the filter: %w", err)
	}
	return nil
}

// readPackets reads a capture socket until it is stopped, under the
// capture's budget and count.
func (d *Driver) readPackets(run *captureRun, s *packetSock) {
	defer unix.Close(s.fd)
	snap := max(run.c.Snaplen, 64)
	buf := make([]byte, snap)
	oob := make([]byte, 128)
	for !s.stop.Load() {
		n, oobn, flags, from, err := unix.Recvmsg(s.fd, buf, oob, unix.MSG_TRUNC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if !s.stop.Load() {
				d.log.Warn("capture socket failed", "capture", run.c.ID, "interface", s.iface, "err", err)
			}
			return
		}
		_ = flags
		ts := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					tsp := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					ts = time.Unix(tsp.Unix())
				}
			}
		}
		out := true
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			out = ll.Pkttype != pktOutgoing // on the veth's router side: received = sent by the endpoint
			if s.underlay {
				out = ll.Pkttype == pktOutgoing
			}
		}
		d.deliverCaptured(run, datapath.CapturedPacket{Capture: run.c.ID, Endpoint: s.endpoint, Interface: s.iface, Out: out,
			Time: ts, Length: n, Data: append([]byte(nil), buf[:min(n, snap)]...)})
	}
}

// deliverCaptured hands a packet to the agent under the capture's budget
// and count; what exceeds them, or finds nobody reading, is counted lost.
func (d *Driver) deliverCaptured(run *captureRun, p datapath.CapturedPacket) {
	if run.c.Count > 0 && run.sent.Load() >= int64(run.c.Count) {
		return
	}
	if !run.limiter.Allow() {
		run.lost.Add(1)
		return
	}
	p.Lost = run.lost.Load()
	select {
	case d.obs.packets <- p:
		run.sent.Add(1)
	default:
		run.lost.Add(1)
	}
}

// stopCapture stops a capture's readers (they close their sockets).
func (d *Driver) stopCapture(run *captureRun) {
	for _, s := range run.socks {
		s.stop.Store(true)
	}
}

// closeCaptures stops every capture. The caller holds obs.mu.
func (d *Driver) closeCaptures() {
	for id, run := range d.obs.captures {
		d.stopCapture(run)
		delete(d.obs.captures, id)
	}
}

// renderCaptureRules adds the rules of dropped-only captures to the VPC
// namespaces' trace tables: the packets of each captured endpoint, in
// both directions, are traced (within the capture's budget, by an
// nftables limit), and the route check records those with no route.
func (d *Driver) renderCaptureRules(spec func(uint32) *tableSpec) {
	ids := make([]string, 0, len(d.obs.captures))
	for id := range d.obs.captures {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		run := d.obs.captures[id]
		if !run.c.DroppedOnly {
			continue
		}
		d.smu.Lock()
		byVNI := map[uint32][]string{}
		for veth, ep := range run.veths {
			if st := d.eps[ep]; st != nil {
				byVNI[st.ep.VNI] = append(byVNI[st.ep.VNI], veth)
			}
		}
		d.smu.Unlock()
		chain := "cap_" + strconv.Itoa(run.n)
		for vni, veths := range byVNI {
			s := spec(vni)
			s.chains = append(s.chains, chain)
			slices.Sort(veths)
			limit := &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(max(run.c.Rate, 1)), Unit: expr.LimitTimeSecond, Burst: uint32(max(run.c.Rate/10, 1))}
			for _, veth := range veths {
				ep := run.veths[veth]
				ip := netip.Addr{}
				for a, e := range run.addrs {
					if e == ep {
						ip = a
					}
				}
				a4 := ip.As4()
				if run.c.Direction != datapath.DirIn {
					s.rules = append(s.rules, tableRule{chainTPre, slices.Concat(ifname(expr.MetaKeyIIFNAME, veth), []expr.Any{limit}, jump(chain))})
					s.rules = append(s.rules, tableRule{chainTMark, slices.Concat(ifname(expr.MetaKeyIIFNAME, veth), noRoute(), []expr.Any{&expr.Counter{}})})
				}
				if run.c.Direction != datapath.DirOut {
					s.rules = append(s.rules, tableRule{chainTPre, slices.Concat(payloadEq(expr.PayloadBaseNetworkHeader, 16, a4[:]), []expr.Any{limit}, jump(chain))})
				}
			}
		}
	}
}

// onCaptureEvent records a packet of a dropped-only capture that the data
// plane dropped, from the event's headers (the link, network and
// transport headers the kernel reports: the packet's first 54 bytes or
// so). The caller holds obs.mu.
func (d *Driver) onCaptureEvent(l *traceListener, chain string, ev nftEvent, now time.Time) {
	var run *captureRun
	for _, r := range d.obs.captures {
		if "cap_"+strconv.Itoa(r.n) == chain {
			run = r
		}
	}
	if run == nil {
		return
	}
	reason := datapath.DropNone
	switch {
	case ev.table == PolicyTable && ev.typ == unix.NFT_TRACETYPE_RULE && expr.VerdictKind(ev.verdict) == expr.VerdictDrop:
		reason = datapath.DropPolicy
	case ev.table == TraceTable && ev.chain == chainTMark && ev.typ == unix.NFT_TRACETYPE_RULE && ev.handle != 0:
		// The route check matched: routing drops it. (The kernel also
		// reports a packet leaving the chain's end as a rule event, with
		// no rule handle.)
		reason = datapath.DropNoRoute
	default:
		return
	}
	pkt, ok := parseIPv4(ev.network, ev.transport)
	if !ok {
		return
	}
	iif := d.linkName(l, ev.iif)
	ep, out := run.veths[iif], true
	if ep == "" {
		ep, out = run.addrs[pkt.dst], false
	}
	if ep == "" {
		return
	}
	frame := make([]byte, 0, 14+len(ev.network)+len(ev.transport))
	if len(ev.ll) >= 14 {
		frame = append(frame, ev.ll[:14]...)
	} else {
		frame = append(frame, make([]byte, 12)...)
		frame = binary.BigEndian.AppendUint16(frame, 0x0800)
	}
	ihl := int(ev.network[0]&0x0f) * 4
	frame = append(frame, ev.network[:min(ihl, len(ev.network))]...)
	frame = append(frame, ev.transport...)
	iface := iif
	if !out {
		iface = VethName(ep)
	}
	d.deliverCaptured(run, datapath.CapturedPacket{Capture: run.c.ID, Endpoint: ep, Interface: iface, Out: out, Time: now,
		Length: 14 + int(pkt.length), Data: frame, Drop: reason})
}
