package linux

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// Traces: see "Trace and capture" in the package documentation.

var _ datapath.Observer = (*Driver)(nil)

// TraceTable is the nftables table (family ip) the driver owns, while a
// trace or a dropped-only capture needs it, in the VPC router namespaces
// and the host namespace.
const TraceTable = "weft-trace"

// Chains of the trace table. A trace's chains are in the table of family
// netdev: base chains bound to one device each (in_<dev> at its ingress,
// eg_<dev> at its egress), so that only the traced endpoints' veths (and,
// for a trace crossing hosts, the VPC's VXLAN device and the underlay
// device) pay for them; per-trace chains tr_<token> (VPC namespaces; set
// nftrace), nr_<token> (empty: the jump to it says the FIB has no route),
// to_<vni>_<token> and ti_<vni>_<token> (the host's, out and in). The
// dropped-only captures' rules are in the table of family ip, in the
// router's hooks (pre, mark), and their chains are cap_<n>.
const (
	chainTPre  = "pre"   // prerouting, raw: select captured packets (jump to their chain)
	chainTMark = "mark"  // prerouting, after the policy table's mangle: route check
	chainTFwd  = "fwd"   // forward, raw (unused today)
	chainTPost = "post"  // postrouting, raw: consume a probe (a shaped source's trace)
	chainTOut  = "out"   // host: output, raw: select encapsulated traced packets (the same)
	chainTHOut = "hpost" // host: postrouting, after QoS's DSCP: the underlay hop (the same)

	devIn  = "in_" // netdev ingress chain of a device
	devOut = "eg_" // netdev egress chain of a device
)

// priorities of the trace table's base chains.
var (
	prioRaw   = nftables.ChainPriorityRaw
	prioMark  = nftables.ChainPriorityRef(-100) // after the policy table's mangle (-150)
	prioAfter = nftables.ChainPriorityRef(100)  // after the QoS table's DSCP (mangle)
)

// probeTimeout bounds how long a probe to a VXLAN device is watched for
// an unknown location.
const probeTimeout = 2500 * time.Millisecond

// observer is the driver's traces and captures.
type observer struct {
	mu        sync.Mutex
	traces    map[string]*traceRun   // by ID
	captures  map[string]*captureRun // by ID
	written   map[uint32]string      // the trace table's rendering per namespace (0: host)
	listeners map[uint32]*traceListener
	hops      chan datapath.TraceHop
	packets   chan datapath.CapturedPacket
	closed    bool
	captureN  int // numbers the captures' chains
	wg        sync.WaitGroup
}

func newObserver() *observer {
	return &observer{traces: map[string]*traceRun{}, captures: map[string]*captureRun{}, written: map[uint32]string{},
		listeners: map[uint32]*traceListener{}, hops: make(chan datapath.TraceHop, 1024), packets: make(chan datapath.CapturedPacket, 4096)}
}

// traceRun is a trace this host takes part in.
type traceRun struct {
	t                datapath.Trace
	srcVeth, dstVeth string
	src, dst         *datapath.Endpoint
	injected         bool
	next             map[uint32]int            // next packet number, per namespace
	packet           map[uint32]map[uint32]int // kernel trace id → packet number, per namespace
	seen             map[string]bool           // hops emitted, by namespace/packet/point
	encap            map[int]bool              // packets seen encapsulated
	ended            map[int]bool              // packets whose last hop was emitted
	noRoute          map[int]bool              // packets the FIB had no route for
	done             bool                      // a live trace has tagged Count packets
}

// TraceHops implements datapath.Observer.
func (d *Driver) TraceHops() <-chan datapath.TraceHop { return d.obs.hops }

// Captured implements datapath.Observer.
func (d *Driver) Captured() <-chan datapath.CapturedPacket { return d.obs.packets }

// Observe implements datapath.Observer: it writes the trace table of
// every namespace the traces and dropped-only captures need (and removes
// it where none does), listens to the trace events there, injects the
// probes of traces that fire, and opens the capture sockets.
func (d *Driver) Observe(ctx context.Context, traces []datapath.Trace, captures []datapath.Capture) error {
	o := d.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return datapath.ErrClosed
	}
	var errs []error
	// Traces.
	keep := map[string]bool{}
	for _, t := range traces {
		keep[t.ID] = true
		run := o.traces[t.ID]
		if run != nil && run.t.Token != t.Token {
			run = nil // another trace of the same name
		}
		if run == nil {
			run = &traceRun{next: map[uint32]int{}, packet: map[uint32]map[uint32]int{}, seen: map[string]bool{}, encap: map[int]bool{}, ended: map[int]bool{}}
		}
		injected := run.injected
		run.t = t
		if err := d.resolveEnds(run); err != nil {
			errs = append(errs, &datapath.ObserveError{ID: t.ID, Err: err})
			delete(o.traces, t.ID)
			keep[t.ID] = false
			continue
		}
		o.traces[t.ID] = run
		run.injected = injected
	}
	for id := range o.traces {
		if !keep[id] {
			delete(o.traces, id)
		}
	}
	// Captures.
	errs = append(errs, d.syncCaptures(captures)...)
	// Tables and listeners, per namespace.
	want, rerrs := d.renderTables()
	errs = append(errs, rerrs...)
	for ns := range o.written {
		if _, ok := want[ns]; !ok {
			want[ns] = nil // remove
		}
	}
	for ns, rules := range want {
		if err := d.writeTraceTable(ns, rules); err != nil {
			errs = append(errs, d.failNamespace(ns, err)...)
		}
	}
	// Release the probes of the traces that fire, once.
	for _, run := range o.traces {
		if run.t.Fire && run.t.Mode == datapath.TraceProbe && run.t.Source != "" && !run.injected {
			if err := d.inject(run); err != nil {
				errs = append(errs, &datapath.ObserveError{ID: run.t.ID, Err: fmt.Errorf("inject the probe: %w", err)})
				continue
			}
			run.injected = true
		}
	}
	return errors.Join(errs...)
}

// failNamespace turns a namespace's failure into errors of the traces and
// captures that needed it.
func (d *Driver) failNamespace(ns uint32, err error) []error {
	var errs []error
	for id, run := range d.obs.traces {
		if run.t.VNI == ns || ns == 0 {
			errs = append(errs, &datapath.ObserveError{ID: id, Err: err})
		}
	}
	if len(errs) == 0 {
		errs = append(errs, fmt.Errorf("trace table of namespace %d: %w", ns, err))
	}
	return errs
}

// resolveEnds finds a trace's local endpoints.
func (d *Driver) resolveEnds(run *traceRun) error {
	d.smu.Lock()
	defer d.smu.Unlock()
	get := func(id string) (*datapath.Endpoint, error) {
		st := d.eps[id]
		if st == nil {
			return nil, fmt.Errorf("endpoint %q is not programmed on this host", id)
		}
		if st.ep.VNI != run.t.VNI {
			return nil, fmt.Errorf("endpoint %q is not in VNI %d", id, run.t.VNI)
		}
		ep := st.ep
		return &ep, nil
	}
	var err error
	if run.t.Source != "" {
		if run.src, err = get(run.t.Source); err != nil {
			return err
		}
		run.srcVeth = VethName(run.t.Source)
	}
	if run.t.Dest != "" {
		if run.dst, err = get(run.t.Dest); err != nil {
			return err
		}
		run.dstVeth = VethName(run.t.Dest)
	}
	if d.vpcs[run.t.VNI] == nil {
		return fmt.Errorf("VNI %d is not on this host", run.t.VNI)
	}
	return nil
}

// tableRule is one rule of a trace table.
type tableRule struct {
	chain string
	exprs []expr.Any
}

// tableSpec is the wanted content of one namespace's trace tables. Of
// the table of family ip (dropped-only captures): its rules, the regular
// chains they jump to, and the base chains it needs without rules of its
// own. A base chain with neither is not created: every packet through its
// hook would pay for it. Of the table of family netdev (traces): its
// device chains (each created even without rules: its policy event is a
// hop), regular chains and rules.
type tableSpec struct {
	rules  []tableRule
	chains []string
	bases  []string

	devs    []devChain
	nchains []string
	nrules  []tableRule
}

// devChain is a netdev base chain bound to one device.
type devChain struct {
	name, device string
	egress       bool
}

// need asks for a base chain with no rules.
func (s *tableSpec) need(base string) {
	if !slices.Contains(s.bases, base) {
		s.bases = append(s.bases, base)
	}
}

// uses reports whether the table needs a base chain.
func (s *tableSpec) uses(base string) bool {
	return slices.Contains(s.bases, base) || slices.ContainsFunc(s.rules, func(r tableRule) bool { return r.chain == base })
}

// dev returns the name of the netdev chain of a device's ingress or
// egress, adding it when missing.
func (s *tableSpec) dev(device string, egress bool) string {
	name := devIn + device
	if egress {
		name = devOut + device
	}
	if !slices.ContainsFunc(s.devs, func(c devChain) bool { return c.name == name }) {
		s.devs = append(s.devs, devChain{name: name, device: device, egress: egress})
	}
	return name
}

// nchain adds a regular chain to the netdev table.
func (s *tableSpec) nchain(name string) {
	if !slices.Contains(s.nchains, name) {
		s.nchains = append(s.nchains, name)
	}
}

func (s *tableSpec) empty() bool { return s == nil || len(s.rules) == 0 && len(s.nrules) == 0 }

func (s *tableSpec) key() string {
	var b strings.Builder
	for _, c := range s.chains {
		b.WriteString(c + ";")
	}
	for _, c := range s.bases {
		b.WriteString("+" + c + ";")
	}
	for _, r := range s.rules {
		fmt.Fprintf(&b, "%s:%#v;", r.chain, r.exprs)
	}
	b.WriteString("|netdev|")
	for _, c := range s.devs {
		fmt.Fprintf(&b, "%s@%s/%t;", c.name, c.device, c.egress)
	}
	for _, c := range s.nchains {
		b.WriteString(c + ";")
	}
	for _, r := range s.nrules {
		fmt.Fprintf(&b, "%s:%#v;", r.chain, r.exprs)
	}
	return b.String()
}

// renderTables computes every namespace's trace tables. A trace whose
// host side (the underlay device) cannot be found is reported in errs.
//
// Per trace, in its VPC's namespace: at the ingress of the source
// endpoint's veth, its packets jump to tr_<token>, which sets nftrace,
// and to nr_<token> when the FIB has no route for them (reported as a
// drop once the policy has let them pass); at the egress of the VXLAN
// device, they get the trace mark, which VXLAN-GBP carries as its D bit;
// arriving on the VXLAN device with the mark, they jump to tr_<token>;
// at the egress of the destination's veth, a probe is dropped (consumed)
// and a live trace's packet seen delivered. The hops between are the
// policy table's own trace events (egress, route, ingress). In the host
// namespace, at the underlay device's egress (or ingress), encapsulated
// traced packets jump to to_ (ti_) chains.
func (d *Driver) renderTables() (out map[uint32]*tableSpec, errs []error) {
	o := d.obs
	out = map[uint32]*tableSpec{}
	spec := func(ns uint32) *tableSpec {
		if out[ns] == nil {
			out[ns] = &tableSpec{}
		}
		return out[ns]
	}
	ul, ulErr := "", error(nil)
	underlay := func() (string, error) {
		if ul == "" && ulErr == nil {
			ul, ulErr = d.underlayDev()
		}
		return ul, ulErr
	}
	ids := make([]string, 0, len(o.traces))
	for id := range o.traces {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		run := o.traces[id]
		t := run.t
		tok := strconv.Itoa(int(t.Token))
		crosses := run.src != nil && run.dst == nil || run.src == nil && run.dst != nil
		hdev := ""
		if crosses {
			dev, err := underlay()
			if err != nil {
				errs = append(errs, &datapath.ObserveError{ID: t.ID, Err: fmt.Errorf("the underlay device: %w", err)})
				continue
			}
			hdev = dev
		}
		vs := spec(t.VNI)
		chain := "tr_" + tok
		inner := innerMatch(t)
		// A shaped endpoint's packets are redirected to an ifb by tc at
		// its veth's ingress, before the netdev hook, and come back past
		// it, marked to skip every netdev egress hook on this host: such a
		// trace is selected and followed here in the hooks of family ip
		// (every packet of the namespaces passes those chains while the
		// trace lasts).
		shaped := run.src != nil && d.tcIngress(t.VNI, run.srcVeth)
		if run.src != nil && !run.done {
			nr := "nr_" + tok
			if shaped {
				sel := append(ifname(expr.MetaKeyIIFNAME, run.srcVeth), inner...)
				vs.chains = append(vs.chains, chain, nr)
				vs.rules = append(vs.rules,
					tableRule{chainTPre, append(slices.Clone(sel), jump(chain)...)},
					tableRule{chainTPre, slices.Concat(sel, noRoute(), jump(nr))})
				if run.dst == nil {
					vs.rules = append(vs.rules, tableRule{chainTMark, append(slices.Clone(sel), markTrace()...)})
				}
			} else {
				in := vs.dev(run.srcVeth, false)
				vs.nchain(chain)
				vs.nrules = append(vs.nrules, tableRule{in, append(slices.Clone(inner), jump(chain)...)})
				// The kernel's own FIB lookup, as routing will do it.
				vs.nchain(nr)
				vs.nrules = append(vs.nrules, tableRule{in, slices.Concat(inner, noRoute(), jump(nr))})
			}
			if run.dst == nil && !shaped {
				out := vs.dev(vxlanName(t.VNI), true)
				vs.nrules = append(vs.nrules, tableRule{out, append(slices.Clone(inner), markTrace()...)})
			}
		}
		if run.dst != nil && shaped { // from a shaped source on this host
			vs.need(chainTPost) // its policy event is the delivery
			if t.Mode == datapath.TraceProbe {
				sel := append(ifname(expr.MetaKeyOIFNAME, run.dstVeth), inner...)
				vs.rules = append(vs.rules, tableRule{chainTPost, append(sel, &expr.Verdict{Kind: expr.VerdictDrop})})
			}
		} else if run.dst != nil {
			out := vs.dev(run.dstVeth, true) // its policy event is the delivery
			if run.src == nil {              // arrives decapsulated
				in := vs.dev(vxlanName(t.VNI), false)
				vs.nchain(chain)
				vs.nrules = append(vs.nrules, tableRule{in, slices.Concat(markedTrace(), inner, jump(chain))})
			}
			if t.Mode == datapath.TraceProbe {
				vs.nrules = append(vs.nrules, tableRule{out, append(slices.Clone(inner), &expr.Verdict{Kind: expr.VerdictDrop})})
			}
		}
		if crosses {
			// Crosses the underlay: the host namespace sees it encapsulated.
			hs := spec(0)
			hchain := "ti_"
			if run.src != nil {
				hchain = "to_"
			}
			hchain += strconv.Itoa(int(t.VNI)) + "_" + tok
			if shaped {
				hs.chains = append(hs.chains, hchain)
				hs.need(chainTHOut) // the underlay: the packet as it leaves
				hs.rules = append(hs.rules, tableRule{chainTOut, append(vxlanMatch(t), jump(hchain)...)})
			} else {
				hs.nchain(hchain)
				dev := hs.dev(hdev, run.src != nil)
				hs.nrules = append(hs.nrules, tableRule{dev, append(vxlanMatch(t), jump(hchain)...)})
			}
		}
	}
	d.renderCaptureRules(spec)
	setTrace := []expr.Any{
		&expr.Immediate{Register: reg1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: reg1},
	}
	for _, s := range out {
		for _, c := range s.chains {
			if !strings.HasPrefix(c, "nr_") {
				s.rules = append(s.rules, tableRule{c, setTrace})
			}
		}
		for _, c := range s.nchains {
			if !strings.HasPrefix(c, "nr_") {
				s.nrules = append(s.nrules, tableRule{c, setTrace})
			}
		}
	}
	return out, errs
}

// tcIngress reports whether a device of a VPC namespace has a clsact
// qdisc (a shaped endpoint's veth: its ingress filters redirect what it
// sends to an ifb, which hands it back past the netdev ingress hook).
func (d *Driver) tcIngress(vni uint32, dev string) bool {
	_, h, err := d.nsHandle(vni)
	if err != nil {
		return false
	}
	l, err := h.LinkByName(dev)
	if err != nil {
		return false
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		return true // cannot tell: the hook that always sees it
	}
	return slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Attrs().Parent == netlink.HANDLE_CLSACT })
}

func ifname(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifnameKey(name)},
	}
}

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// payloadEq matches len bytes at off from base.
func payloadEq(base expr.PayloadBase, off uint32, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: data},
	}
}

func be16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// innerMatch selects a trace's packets by their IPv4 header (and ports):
// a probe by its token in the IP identification, a live trace by its
// 5-tuple.
func innerMatch(t datapath.Trace) []expr.Any {
	s, dst := t.Src.As4(), t.Dst.As4()
	e := slices.Concat(
		payloadEq(expr.PayloadBaseNetworkHeader, 12, s[:]),
		payloadEq(expr.PayloadBaseNetworkHeader, 16, dst[:]),
		payloadEq(expr.PayloadBaseNetworkHeader, 9, []byte{byte(t.Proto)}),
	)
	if t.Mode == datapath.TraceProbe {
		e = append(e, payloadEq(expr.PayloadBaseNetworkHeader, 4, be16(t.Token))...)
	}
	if t.Proto != datapath.ProtoICMP {
		if t.SPort != 0 {
			e = append(e, payloadEq(expr.PayloadBaseTransportHeader, 0, be16(t.SPort))...)
		}
		if t.DPort != 0 {
			e = append(e, payloadEq(expr.PayloadBaseTransportHeader, 2, be16(t.DPort))...)
		}
	}
	return e
}

// vxlanMatch selects a trace's packets encapsulated, in the host
// namespace: UDP to the VXLAN port, its VNI, the GBP D bit (the trace
// mark on the wire) and the inner IPv4 header's fields at their offsets
// (UDP 8 + VXLAN 8 + Ethernet 14 bytes in; an inner header of 20 bytes).
func vxlanMatch(t datapath.Trace) []expr.Any {
	const inner = 8 + 8 + 14
	s, dst := t.Src.As4(), t.Dst.As4()
	vni := []byte{byte(t.VNI >> 16), byte(t.VNI >> 8), byte(t.VNI)}
	// The D bit first (before the protocol: a packet that is not UDP fails
	// at one of the later tests): it is what fails for the untraced
	// packets, so they leave the rule after three expressions.
	e := slices.Concat(
		[]expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 9, Len: 1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x40}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0x40}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_UDP}},
		},
		payloadEq(expr.PayloadBaseTransportHeader, 2, be16(4789)),
		payloadEq(expr.PayloadBaseTransportHeader, 12, vni),
		payloadEq(expr.PayloadBaseTransportHeader, inner+12, s[:]),
		payloadEq(expr.PayloadBaseTransportHeader, inner+16, dst[:]),
		payloadEq(expr.PayloadBaseTransportHeader, inner+9, []byte{byte(t.Proto)}),
	)
	if t.Mode == datapath.TraceProbe {
		e = append(e, payloadEq(expr.PayloadBaseTransportHeader, inner+4, be16(t.Token))...)
	}
	if t.Proto != datapath.ProtoICMP {
		if t.SPort != 0 {
			e = append(e, payloadEq(expr.PayloadBaseTransportHeader, inner+20, be16(t.SPort))...)
		}
		if t.DPort != 0 {
			e = append(e, payloadEq(expr.PayloadBaseTransportHeader, inner+22, be16(t.DPort))...)
		}
	}
	return e
}

// markTrace sets datapath.MarkTrace, which VXLAN-GBP carries as its D bit.
func markTrace() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(^uint32(0)), Xor: ne32(datapath.MarkTrace)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// markedTrace matches packets carrying datapath.MarkTrace.
func markedTrace() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(datapath.MarkTrace), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)},
	}
}

// noRoute matches a packet the router's FIB has no route for: the
// kernel's own lookup, as routing will do it.
func noRoute() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultOIF: true, FlagPRESENT: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0}},
	}
}

// nsHandle returns the namespace of a trace table: a VPC router's (by
// VNI) or the host's (0).
func (d *Driver) nsHandle(ns uint32) (netns.NsHandle, *netlink.Handle, error) {
	if ns == 0 {
		return d.hostNS, d.host, nil
	}
	d.smu.Lock()
	vs := d.vpcs[ns]
	d.smu.Unlock()
	if vs == nil {
		return 0, nil, fmt.Errorf("VNI %d is not on this host", ns)
	}
	return vs.ns, vs.h, nil
}

// writeTraceTable replaces a namespace's trace tables with spec, in one
// transaction (nil removes them), and starts or stops its listener.
func (d *Driver) writeTraceTable(ns uint32, spec *tableSpec) error {
	o := d.obs
	key := ""
	if !spec.empty() {
		key = spec.key()
	}
	if cur, ok := o.written[ns]; ok && cur == key {
		return nil
	}
	fd, _, err := d.nsHandle(ns)
	if err != nil {
		if key == "" {
			delete(o.written, ns)
			d.stopListener(ns)
			return nil
		}
		return err
	}
	if key != "" {
		// Listen first: the events of the first packet must not be lost.
		if err := d.startTraceListener(ns, fd); err != nil {
			return err
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(fd)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	t := &nftables.Table{Name: TraceTable, Family: nftables.TableFamilyIPv4}
	nt := &nftables.Table{Name: TraceTable, Family: nftables.TableFamilyNetdev}
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	for _, x := range tables {
		if x.Name == TraceTable && (x.Family == t.Family || x.Family == nt.Family) {
			c.DelTable(x)
		}
	}
	accept := nftables.ChainPolicyAccept
	if key != "" && len(spec.rules) > 0 {
		c.AddTable(t)
		base := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) {
			if spec.uses(name) {
				c.AddChain(&nftables.Chain{Table: t, Name: name, Type: nftables.ChainTypeFilter, Hooknum: hook, Priority: prio, Policy: &accept})
			}
		}
		if ns == 0 {
			base(chainTOut, nftables.ChainHookOutput, prioRaw)
			base(chainTHOut, nftables.ChainHookPostrouting, prioAfter)
		} else {
			base(chainTPre, nftables.ChainHookPrerouting, prioRaw)
			base(chainTMark, nftables.ChainHookPrerouting, prioMark)
			base(chainTFwd, nftables.ChainHookForward, prioRaw)
			base(chainTPost, nftables.ChainHookPostrouting, prioRaw)
		}
		for _, ch := range spec.chains {
			c.AddChain(&nftables.Chain{Table: t, Name: ch})
		}
		for _, r := range spec.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Table: t, Name: r.chain}, Exprs: r.exprs})
		}
	}
	if key != "" && len(spec.nrules) > 0 {
		c.AddTable(nt)
		for _, dc := range spec.devs {
			hook := nftables.ChainHookIngress
			if dc.egress {
				hook = nftables.ChainHookEgress
			}
			c.AddChain(&nftables.Chain{Table: nt, Name: dc.name, Type: nftables.ChainTypeFilter, Hooknum: hook,
				Priority: nftables.ChainPriorityFilter, Policy: &accept, Device: dc.device})
		}
		for _, ch := range spec.nchains {
			c.AddChain(&nftables.Chain{Table: nt, Name: ch})
		}
		for _, r := range spec.nrules {
			c.AddRule(&nftables.Rule{Table: nt, Chain: &nftables.Chain{Table: nt, Name: r.chain}, Exprs: r.exprs})
		}
	}
	if err := d.ops.Write(writes.NftCommit, c.Flush); err != nil {
		return fmt.Errorf("commit nftables table %s: %w", TraceTable, err)
	}
	if key == "" {
		delete(o.written, ns)
		d.stopListener(ns)
	} else {
		o.written[ns] = key
	}
	return nil
}

// traceListener reads the trace events of one namespace.
type traceListener struct {
	ns      uint32
	conn    *mdnetlink.Conn
	closing bool
	// ids maps the kernel's trace ids to the trace (or capture) of the
	// packet: its first event in the namespace names its chain.
	ids   map[uint32]string
	links map[uint32]string // ifindex → name
	// pkts holds each traced packet's latest headers and interfaces: the
	// kernel sends them with the first event of a base chain only.
	pkts map[uint32]pktInfo
}

type pktInfo struct {
	iif, oif  uint32
	mark      uint32
	ll        []byte
	network   []byte
	transport []byte
}

func (d *Driver) startTraceListener(ns uint32, fd netns.NsHandle) error {
	o := d.obs
	if o.listeners[ns] != nil {
		return nil
	}
	conn, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, &mdnetlink.Config{NetNS: int(fd), Groups: 1 << (unix.NFNLGRP_NFTRACE - 1)})
	if err != nil {
		return fmt.Errorf("subscribe to nftables trace events: %w", err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	l := &traceListener{ns: ns, conn: conn, ids: map[uint32]string{}, links: map[uint32]string{}, pkts: map[uint32]pktInfo{}}
	o.listeners[ns] = l
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		d.listenTrace(l)
	}()
	return nil
}

func (d *Driver) stopListener(ns uint32) {
	o := d.obs
	if l := o.listeners[ns]; l != nil {
		l.closing = true
		_ = l.conn.Close()
		delete(o.listeners, ns)
	}
}

func (d *Driver) listenTrace(l *traceListener) {
	for {
		msgs, err := l.conn.Receive()
		if err != nil {
			d.obs.mu.Lock()
			closing := l.closing
			d.obs.mu.Unlock()
			if closing {
				return
			}
			if errors.Is(err, unix.ENOBUFS) {
				d.log.Warn("nftables trace events lost", "namespace", l.ns)
				continue
			}
			d.log.Error("trace listener stopped", "namespace", l.ns, "err", err)
			return
		}
		now := time.Now()
		for _, m := range msgs {
			if m.Header.Type != mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_TRACE) {
				continue
			}
			ev, err := parseNftEvent(m.Data)
			if err != nil {
				continue
			}
			d.obs.mu.Lock()
			if !l.closing {
				d.onEvent(l, ev, now)
			}
			d.obs.mu.Unlock()
		}
	}
}

// onEvent turns one trace event into hops or a captured packet. The
// caller holds obs.mu.
func (d *Driver) onEvent(l *traceListener, ev nftEvent, now time.Time) {
	o := d.obs
	owner := ""
	switch {
	case ev.table == TraceTable && strings.HasPrefix(ev.chain, "cap_"):
		owner = "cap:" + ev.chain
	case ev.table == TraceTable && (strings.HasPrefix(ev.chain, "tr_") || strings.HasPrefix(ev.chain, "to_") || strings.HasPrefix(ev.chain, "ti_")):
		owner = ev.chain
	}
	if owner != "" {
		if len(l.ids) > 4096 {
			clear(l.ids)
			clear(l.pkts)
		}
		l.ids[ev.id] = owner
	} else if owner = l.ids[ev.id]; owner == "" {
		return
	}
	// Complete the event with the packet's latest headers.
	if ev.network != nil {
		l.pkts[ev.id] = pktInfo{iif: ev.iif, oif: ev.oif, mark: ev.mark, ll: clone(ev.ll), network: clone(ev.network), transport: clone(ev.transport)}
	} else if p, ok := l.pkts[ev.id]; ok {
		ev.iif, ev.oif, ev.mark, ev.ll, ev.network, ev.transport = p.iif, p.oif, p.mark, p.ll, p.network, p.transport
	}
	if strings.HasPrefix(owner, "cap:") {
		d.onCaptureEvent(l, strings.TrimPrefix(owner, "cap:"), ev, now)
		return
	}
	for _, run := range o.traces {
		if traceChainOf(run.t, l.ns, owner) {
			d.traceEvent(l, run, ev, now)
			return
		}
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// traceChainOf reports whether chain is t's chain in namespace ns.
func traceChainOf(t datapath.Trace, ns uint32, chain string) bool {
	tok := strconv.Itoa(int(t.Token))
	if ns != 0 {
		return ns == t.VNI && chain == "tr_"+tok
	}
	suffix := "_" + strconv.Itoa(int(t.VNI)) + "_" + tok
	return chain == "to"+suffix || chain == "ti"+suffix
}

// linkName names an interface of the listener's namespace.
func (d *Driver) linkName(l *traceListener, index uint32) string {
	if index == 0 {
		return ""
	}
	if n, ok := l.links[index]; ok {
		return n
	}
	_, h, err := d.nsHandle(l.ns)
	if err != nil {
		return strconv.Itoa(int(index))
	}
	link, err := h.LinkByIndex(int(index))
	if err != nil {
		return strconv.Itoa(int(index))
	}
	l.links[index] = link.Attrs().Name
	return link.Attrs().Name
}

// traceEvent turns an event of a traced packet into its hops.
func (d *Driver) traceEvent(l *traceListener, run *traceRun, ev nftEvent, now time.Time) {
	t := run.t
	pk, ok := run.packet[l.ns][ev.id]
	if !ok {
		if run.packet[l.ns] == nil {
			run.packet[l.ns] = map[uint32]int{}
		}
		pk = run.next[l.ns]
		run.next[l.ns]++
		run.packet[l.ns][ev.id] = pk
		if t.Mode == datapath.TraceLive && l.ns != 0 && run.src != nil && run.next[l.ns] >= max(t.Count, 1) && !run.done {
			run.done = true // stop tagging: the next Observe drops the source rules
			go d.retag()
		}
	}
	if t.Mode == datapath.TraceLive && pk >= max(t.Count, 1) {
		return
	}
	iif, oif := d.linkName(l, ev.iif), d.linkName(l, ev.oif)
	h := datapath.TraceHop{Trace: t.ID, Packet: pk, Time: now}
	emit := func(point, verdict, detail string, final bool) {
		k := strconv.Itoa(int(l.ns)) + "/" + strconv.Itoa(pk) + "/" + point
		if run.seen[k] {
			return
		}
		run.seen[k] = true
		if final {
			run.ended[pk] = true
		}
		h.Point, h.Verdict, h.Detail, h.Final = point, verdict, detail, final
		select {
		case d.obs.hops <- h:
		default:
			d.log.Warn("trace hop dropped: nobody reads them", "trace", t.ID)
		}
		h = datapath.TraceHop{Trace: t.ID, Packet: pk, Time: now}
	}
	pkt, _ := parseIPv4(ev.network, ev.transport)
	if l.ns == 0 {
		d.hostEvent(run, ev, iif, oif, emit, &h)
		return
	}
	verdict := expr.VerdictKind(ev.verdict)
	tok := strconv.Itoa(int(t.Token))
	switch {
	case ev.table == TraceTable && strings.HasPrefix(ev.chain, "tr_") && ev.typ == unix.NFT_TRACETYPE_RULE:
		switch {
		case iif == run.srcVeth && run.src != nil:
			emit(datapath.HopSourceVeth, "forward", fmt.Sprintf("received on %s from endpoint %s: %s", iif, t.Source, describe(pkt)), false)
		case iif == vxlanName(t.VNI):
			h.Attrs = map[string]string{"vni": strconv.Itoa(int(t.VNI)), "identity": strconv.Itoa(int(ev.mark & datapath.MarkIdentityMask))}
			emit(datapath.HopDecap, "forward", fmt.Sprintf("decapsulated on %s (VNI %d), sender identity %d", iif, t.VNI, ev.mark&datapath.MarkIdentityMask), false)
		}
	case ev.table == TraceTable && (ev.chain == "nr_"+tok || ev.jumpTo == "nr_"+tok):
		// The FIB has no route for it: routing drops it once the policy
		// has let it pass.
		if run.noRoute == nil {
			run.noRoute = map[int]bool{}
		}
		run.noRoute[pk] = true
	case ev.table == PolicyTable && ev.chain == chainPrerouting && run.src != nil && iif == run.srcVeth:
		emit(datapath.HopVPCRouter, "forward", fmt.Sprintf("VPC router of VNI %d: marked with identity %d", t.VNI, run.src.Identity), false)
		if ev.typ == unix.NFT_TRACETYPE_RULE && verdict == expr.VerdictAccept {
			d.policyHop(run, pkt, false, emit, &h)
			d.noRouteHop(run, pk, emit, &h)
		}
		if ev.typ == unix.NFT_TRACETYPE_RULE && verdict == expr.VerdictDrop {
			h.Reason, h.Endpoint = datapath.DropPolicy, t.Source
			emit(datapath.HopDrop, "dropped", "egress of "+t.Source+": not allowed by its policy", true)
		}
	case ev.table == PolicyTable && ev.chain == chainEgressDeny && run.src != nil && iif == run.srcVeth:
		if ev.typ == unix.NFT_TRACETYPE_RULE && verdict == expr.VerdictDrop {
			h.Reason, h.Endpoint = datapath.DropPolicy, t.Source
			emit(datapath.HopDrop, "dropped", "egress of "+t.Source+": not allowed by its policy", true)
		}
	case ev.table == PolicyTable && strings.HasPrefix(ev.chain, "e_") && verdict == expr.VerdictAccept:
		d.policyHop(run, pkt, false, emit, &h)
		d.noRouteHop(run, pk, emit, &h)
	case ev.table == PolicyTable && (ev.chain == chainForward || ev.chain == chainIngressDeny || strings.HasPrefix(ev.chain, "i_")):
		if run.src != nil {
			// Routed: the first event in the forward hook names the
			// interface the kernel's route chose.
			detail := "to " + oif
			switch {
			case oif == vxlanName(t.VNI):
				detail = fmt.Sprintf("%s via %s (VXLAN, VNI %d)", t.Dst, oif, t.VNI)
			case run.dst != nil && oif == run.dstVeth:
				detail = fmt.Sprintf("%s via %s to endpoint %s on this host", t.Dst, oif, t.Dest)
			}
			k := strconv.Itoa(int(l.ns)) + "/" + strconv.Itoa(pk) + "/" + datapath.HopRoute
			if !run.seen[k] {
				emit(datapath.HopRoute, "forward", detail, false)
				if oif == vxlanName(t.VNI) && t.Mode == datapath.TraceProbe && pk == 0 {
					d.watchLocation(run)
				}
			}
		}
		if ev.typ != unix.NFT_TRACETYPE_RULE {
			break
		}
		switch verdict {
		case expr.VerdictAccept:
			d.policyHop(run, pkt, true, emit, &h)
		case expr.VerdictDrop:
			h.Reason, h.Endpoint = datapath.DropPolicy, t.Dest
			emit(datapath.HopDrop, "dropped", "ingress of "+cmpOr(t.Dest, oif)+": not allowed by its policy", true)
		}
	case ev.table == TraceTable && (ev.chain == devOut+run.dstVeth || ev.chain == chainTPost && oif == run.dstVeth) && run.dst != nil:
		if verdict == expr.VerdictDrop {
			emit(datapath.HopDeliver, "delivered", fmt.Sprintf("reached %s, the veth of endpoint %s; the probe is consumed there", run.dstVeth, t.Dest), true)
		} else if t.Mode == datapath.TraceLive && ev.typ == unix.NFT_TRACETYPE_POLICY {
			emit(datapath.HopDeliver, "delivered", fmt.Sprintf("sent on %s to endpoint %s", run.dstVeth, t.Dest), true)
		}
	}
}

// noRouteHop reports the drop of a packet the policy let pass when the
// kernel's FIB lookup at the source veth found no route for it.
func (d *Driver) noRouteHop(run *traceRun, pk int, emit func(string, string, string, bool), h *datapath.TraceHop) {
	if !run.noRoute[pk] {
		return
	}
	h.Reason = datapath.DropNoRoute
	emit(datapath.HopDrop, "dropped", fmt.Sprintf("no route to %s in the VPC router (the kernel's FIB lookup found none)", run.t.Dst), true)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// policyHop reports an allowed packet: the rule that allowed it, by the
// policy's own semantics (datapath.EndpointPolicy.Decide) on the header
// the kernel reported.
func (d *Driver) policyHop(run *traceRun, pkt ipv4, ingress bool, emit func(string, string, string, bool), h *datapath.TraceHop) {
	ep, point, who := run.src, datapath.HopPolicy, run.t.Source
	f := datapath.Flow{Proto: datapath.Protocol(pkt.proto), Peer: pkt.dst, Port: pkt.dport}
	if ingress {
		ep, point, who = run.dst, datapath.HopRemotePolicy, run.t.Dest
		f = datapath.Flow{Proto: datapath.Protocol(pkt.proto), Peer: pkt.src, PeerIdentity: run.t.SourceIdentity, Port: pkt.dport}
	}
	if pkt.proto == unix.IPPROTO_ICMP {
		f.ICMPType, f.ICMPCode, f.Port = uint8(pkt.sport>>8), uint8(pkt.sport), 0
	}
	if ep == nil {
		return
	}
	dir := "egress"
	if ingress {
		dir = "ingress"
	}
	_, rule := ep.Policy.Decide(f, ingress)
	h.Rule, h.Endpoint = rule, who
	isolated := ep.Policy != nil && (ingress && ep.Policy.IngressIsolated || !ingress && ep.Policy.EgressIsolated)
	detail := dir + " of " + who + " not isolated: allowed"
	switch {
	case isolated && rule != "":
		detail = dir + " of " + who + " allowed by " + rule
	case isolated:
		detail = dir + " of " + who + " allowed (an established connection, or a rule the policy semantics do not name)"
	}
	emit(point, "allow", detail, false)
}

// hostEvent turns an event in the host namespace into hops.
func (d *Driver) hostEvent(run *traceRun, ev nftEvent, iif, oif string, emit func(string, string, string, bool), h *datapath.TraceHop) {
	outer, _ := parseIPv4(ev.network, nil)
	attrs := map[string]string{"vni": strconv.Itoa(int(run.t.VNI)), "outerSrc": outer.src.String(), "outerDst": outer.dst.String(),
		"dscp": strconv.Itoa(int(outer.dscp))}
	switch {
	case ev.table == TraceTable && strings.HasPrefix(ev.chain, "to_") && ev.typ == unix.NFT_TRACETYPE_RULE:
		h.Attrs = attrs
		run.encap[h.Packet] = true
		emit(datapath.HopEncap, "forward", fmt.Sprintf("VXLAN VNI %d, GBP identity %d, %s → %s", run.t.VNI, run.src.Identity, outer.src, outer.dst), false)
	case ev.table == TraceTable && (strings.HasPrefix(ev.chain, devOut) || ev.chain == chainTHOut) && ev.typ == unix.NFT_TRACETYPE_POLICY:
		h.Attrs = attrs
		emit(datapath.HopUnderlay, "forward", fmt.Sprintf("sent on %s: %s → %s, DSCP %d", oif, outer.src, outer.dst, outer.dscp), false)
	case ev.table == TraceTable && strings.HasPrefix(ev.chain, "ti_") && ev.typ == unix.NFT_TRACETYPE_RULE:
		h.Attrs = attrs
		emit(datapath.HopUnderlay, "forward", fmt.Sprintf("received on %s: %s → %s, VNI %d", iif, outer.src, outer.dst, run.t.VNI), false)
	}
}

// describe prints a packet header for a hop.
func describe(p ipv4) string {
	switch p.proto {
	case unix.IPPROTO_TCP:
		return fmt.Sprintf("%s:%d → %s:%d tcp", p.src, p.sport, p.dst, p.dport)
	case unix.IPPROTO_UDP:
		return fmt.Sprintf("%s:%d → %s:%d udp", p.src, p.sport, p.dst, p.dport)
	case unix.IPPROTO_ICMP:
		return fmt.Sprintf("%s → %s icmp type %d", p.src, p.dst, p.sport>>8)
	}
	return fmt.Sprintf("%s → %s proto %d", p.src, p.dst, p.proto)
}

// retag rewrites the trace tables once a live trace has tagged its
// packets, so it tags no more.
func (d *Driver) retag() {
	o := d.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	want, _ := d.renderTables() // Observe reported those errors
	for ns, spec := range want {
		if err := d.writeTraceTable(ns, spec); err != nil {
			d.log.Warn("stop tagging a live trace", "namespace", ns, "err", err)
		}
	}
}

// watchLocation watches a probe routed to the VXLAN device for the
// location of its destination: if the kernel's neighbour entry for it
// fails (nobody answered where it is) before the probe was seen
// encapsulated, the probe was dropped for an unknown location. The
// caller holds obs.mu.
func (d *Driver) watchLocation(run *traceRun) {
	o := d.obs
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		deadline := time.Now().Add(probeTimeout)
		for time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			o.mu.Lock()
			cur := o.traces[run.t.ID]
			gone := o.closed || cur != run || run.encap[0] || run.ended[0]
			o.mu.Unlock()
			if gone {
				return
			}
			state, ok := d.neighState(run.t.VNI, run.t.Dst)
			if ok && state&netlink.NUD_FAILED == 0 || !ok && time.Until(deadline) > probeTimeout/2 {
				continue // resolved (the probe leaves encapsulated), still asking, or not asked yet
			}
			o.mu.Lock()
			if !o.closed && o.traces[run.t.ID] == run && !run.encap[0] && !run.ended[0] {
				k := "loc/0/" + datapath.HopDrop
				if !run.seen[k] {
					run.seen[k] = true
					detail := fmt.Sprintf("no location for %s in VNI %d: the kernel's neighbour entry on %s failed (no host answered for it)", run.t.Dst, run.t.VNI, vxlanName(run.t.VNI))
					if !ok {
						detail = fmt.Sprintf("no location for %s in VNI %d: no neighbour entry on %s", run.t.Dst, run.t.VNI, vxlanName(run.t.VNI))
					}
					select {
					case o.hops <- datapath.TraceHop{Trace: run.t.ID, Point: datapath.HopDrop, Verdict: "dropped", Reason: datapath.DropNoLocation,
						Detail: detail, Time: time.Now(), Final: true}:
					default:
					}
				}
			}
			o.mu.Unlock()
			return
		}
	}()
}

// neighState returns the state of the neighbour entry of ip on a VPC's
// VXLAN device.
func (d *Driver) neighState(vni uint32, ip netip.Addr) (int, bool) {
	_, h, err := d.nsHandle(vni)
	if err != nil {
		return 0, false
	}
	l, err := h.LinkByName(vxlanName(vni))
	if err != nil {
		return 0, false
	}
	ns, err := h.NeighList(l.Attrs().Index, unix.AF_INET)
	if err != nil {
		return 0, false
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.State, true
		}
	}
	return 0, false
}

// closeObserver removes the trace tables, stops the listeners and the
// capture sockets, and closes the channels. It is called by Close.
func (d *Driver) closeObserver() {
	o := d.obs
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	clear(o.traces)
	d.closeCaptures()
	for ns := range o.written {
		if err := d.writeTraceTable(ns, nil); err != nil {
			d.log.Warn("remove trace table", "namespace", ns, "err", err)
		}
	}
	for ns := range o.listeners {
		d.stopListener(ns)
	}
	o.closed = true
	o.mu.Unlock()
	o.wg.Wait()
	close(o.hops)
	close(o.packets)
}
