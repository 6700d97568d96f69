package linux

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/ports"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// Compiling a VPC's policies into the content of its nftables table (see
// "Security policy" in the package documentation). This file is pure: it
// turns endpoints into a policyTable; policynft.go writes one.

// policyLayout names the way tables are rendered. It is part of every
// content hash, so a driver that renders differently never mistakes an
// older driver's objects for its own.
const policyLayout = "weft-policy-v1"

// policyTable is the desired content of one VPC's table.
type policyTable struct {
	// marks, egress and ingress are keyed by the VPC-side veth name of
	// every local endpoint: its packet mark, and the chain judging its
	// egress and ingress ("" for a direction that is not isolated).
	marks           map[string]uint32
	egress, ingress map[string]string
	classes         map[string]*policyClass // by chain name
	// sampling is N of the flow hooks' 1-in-N (0: no flow hooks).
	sampling uint32
}

// stateful says some endpoint is isolated: the table tracks connections.
func (t *policyTable) stateful() bool { return len(t.classes) > 0 }

// policyClass is the rules of one isolated direction, shared by every
// endpoint whose rules in that direction are the same. A peer is looked
// up by the sender's identity (ingress) or by its address, giving the set
// of ports it may use (by its index in ports, the class's port set ID).
type policyClass struct {
	ingress bool
	ids     []idRef           // by source identity, sorted (ingress only)
	nets    []netRef          // by peer address: disjoint, sorted
	ports   []*ports.Set      // by port set ID
	keys    map[string]uint32 // port set key -> ID, while compiling
}

// idRef gives the port set of one identity.
type idRef struct {
	id, ports uint32
}

// netRef gives the port set of the addresses first..last.
type netRef struct {
	first, last uint32
	ports       uint32
}

// portSetID returns the class's ID of ps.
func (c *policyClass) portSetID(ps *ports.Set) uint32 {
	k := ps.Key()
	if id, ok := c.keys[k]; ok {
		return id
	}
	id := uint32(len(c.ports))
	c.ports = append(c.ports, ps)
	c.keys[k] = id
	return id
}

// contentName names an object by a hash of the layout and its content.
func contentName(prefix, content string) string {
	h := sha256.Sum256([]byte(policyLayout + "\x00" + content))
	return prefix + hex.EncodeToString(h[:10])
}

// compilePolicies compiles the policies of one VPC's local endpoints. It
// fails only for what validation lets through but the linux driver cannot
// express (IPv6 peers).
func compilePolicies(eps []*datapath.Endpoint) (*policyTable, error) {
	t := &policyTable{
		marks:   make(map[string]uint32, len(eps)),
		egress:  make(map[string]string, len(eps)),
		ingress: make(map[string]string, len(eps)),
		classes: map[string]*policyClass{},
	}
	for _, e := range eps {
		veth := VethName(e.ID)
		t.marks[veth] = e.Identity | datapath.MarkPolicyApplied
		var err error
		if e.Policy != nil && e.Policy.EgressIsolated {
			if t.egress[veth], err = t.class(e.Policy.Egress, false); err != nil {
				return nil, fmt.Errorf("endpoint %q egress: %w", e.ID, err)
			}
		} else {
			t.egress[veth] = ""
		}
		if e.Policy != nil && e.Policy.IngressIsolated {
			if t.ingress[veth], err = t.class(e.Policy.Ingress, true); err != nil {
				return nil, fmt.Errorf("endpoint %q ingress: %w", e.ID, err)
			}
		} else {
			t.ingress[veth] = ""
		}
	}
	return t, nil
}

// class compiles the rules of one isolated direction and returns the name
// of its chain.
func (t *policyTable) class(rules []datapath.Rule, ingress bool) (string, error) {
	ids := map[uint32]*ports.Set{}
	nets := map[netip.Prefix]*ports.Set{}
	all := &ports.Set{}
	for _, r := range rules {
		ps := ports.Of(r.Ports)
		if r.AllPeers {
			all = all.Union(ps)
			continue
		}
		if ingress {
			for _, id := range r.Identities {
				if cur := ids[id]; cur != nil {
					ids[id] = cur.Union(ps)
				} else {
					ids[id] = ps
				}
			}
		}
		for _, p := range r.Prefixes {
			if !p.Addr().Is4() {
				return "", fmt.Errorf("%w: rule %q: peer %s: only IPv4 is supported", datapath.ErrInvalid, r.Name, p)
			}
			if cur := nets[p]; cur != nil {
				nets[p] = cur.Union(ps)
			} else {
				nets[p] = ps
			}
		}
	}
	c := &policyClass{ingress: ingress, keys: map[string]uint32{}}
	// Port set IDs in a canonical order (identities, then addresses), so
	// that the same rules make the same class.
	idList := make([]uint32, 0, len(ids))
	for id := range ids {
		idList = append(idList, id)
	}
	slices.Sort(idList)
	for _, id := range idList {
		c.ids = append(c.ids, idRef{id, c.portSetID(ids[id])})
	}
	for _, iv := range partition(nets, all) {
		c.nets = append(c.nets, netRef{iv.first, iv.last, c.portSetID(iv.ports)})
	}
	c.keys = nil
	b := make([]byte, 0, 16*(len(c.ids)+len(c.nets)+len(c.ports)))
	b = strconv.AppendBool(b, ingress)
	for _, j := range c.ids {
		b = append(b, ";i"...)
		b = strconv.AppendUint(b, uint64(j.id), 10)
		b = append(b, '>')
		b = strconv.AppendUint(b, uint64(j.ports), 10)
	}
	for _, j := range c.nets {
		b = append(b, ";n"...)
		b = strconv.AppendUint(b, uint64(j.first), 16)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(j.last), 16)
		b = append(b, '>')
		b = strconv.AppendUint(b, uint64(j.ports), 10)
	}
	for i, ps := range c.ports {
		b = append(b, ";p"...)
		b = strconv.AppendUint(b, uint64(i), 10)
		b = append(b, '=')
		b = append(b, ps.Key()...)
	}
	prefix := "e_"
	if ingress {
		prefix = "i_"
	}
	name := contentName(prefix, string(b))
	t.classes[name] = c
	return name, nil
}

// interval is a range of IPv4 addresses and what is allowed of them.
type interval struct {
	first, last uint32
	ports       *ports.Set
}

// partition turns prefixes (each allowing its ports) and what every peer
// is allowed (all) into disjoint, sorted address intervals, each allowing
// the union of what covers it; addresses allowed nothing are left out.
// Prefixes nest or are disjoint, so a sweep with a stack of the prefixes
// containing the current address does it in O(n log n).
func partition(nets map[netip.Prefix]*ports.Set, all *ports.Set) []interval {
	type span struct {
		first, last uint32
		bits        int
		ports       *ports.Set
	}
	spans := make([]span, 0, len(nets))
	for p, ps := range nets {
		a := binary.BigEndian.Uint32(p.Addr().AsSlice())
		size := uint64(1) << (32 - p.Bits())
		spans = append(spans, span{a, uint32(uint64(a) + size - 1), p.Bits(), ps})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Or(cmp.Compare(a.first, b.first), cmp.Compare(a.bits, b.bits)) })

	var out []interval
	emit := func(first, last uint32, ps *ports.Set) {
		if ps.Empty() {
			return
		}
		if n := len(out); n > 0 && uint64(out[n-1].last)+1 == uint64(first) && out[n-1].ports.Key() == ps.Key() {
			out[n-1].last = last
			return
		}
		out = append(out, interval{first, last, ps})
	}
	type open struct {
		last  uint32
		ports *ports.Set // the union of every open span and all
	}
	var stack []open
	top := func() *ports.Set {
		if len(stack) == 0 {
			return all
		}
		return stack[len(stack)-1].ports
	}
	var cur uint64 // the first address not yet emitted
	closeUntil := func(next uint64) {
		for len(stack) > 0 && uint64(stack[len(stack)-1].last) < next {
			o := stack[len(stack)-1]
			if cur <= uint64(o.last) {
				emit(uint32(cur), o.last, o.ports)
			}
			cur = uint64(o.last) + 1
			stack = stack[:len(stack)-1]
		}
	}
	for _, s := range spans {
		closeUntil(uint64(s.first))
		if cur < uint64(s.first) {
			emit(uint32(cur), s.first-1, top())
			cur = uint64(s.first)
		}
		stack = append(stack, open{s.last, top().Union(s.ports)})
	}
	closeUntil(1 << 32)
	if cur <= 0xffffffff {
		emit(uint32(cur), 0xffffffff, all)
	}
	return out
}

// policyInput is what a VPC's table is compiled from, per endpoint.
type policyInput struct {
	id       string
	identity uint32
	policy   *datapath.EndpointPolicy
}

func policyInputs(eps []*datapath.Endpoint) []policyInput {
	in := make([]policyInput, len(eps))
	for i, e := range eps {
		in[i] = policyInput{e.ID, e.Identity, e.Policy}
	}
	return in
}

// samePolicies reports whether eps compile to the table compiled from in
// (a Set that changes no policy recompiles nothing).
func samePolicies(in []policyInput, eps []*datapath.Endpoint) bool {
	if len(in) != len(eps) {
		return false
	}
	for i, e := range eps {
		if in[i].id != e.ID || in[i].identity != e.Identity || !in[i].policy.Equal(e.Policy) {
			return false
		}
	}
	return true
}

// conntrackSysctls make a mid-stream TCP segment without connection state
// invalid instead of the start of a connection (loose pickup): a
// connection whose state a policy change flushed cannot come back, in
// either direction.
var conntrackSysctls = []sysctl{{"net/netfilter/nf_conntrack_tcp_loose", "0"}}

// ensurePolicy converges the policy table of a VPC to its local endpoints
// in one transaction, then flushes the connections it no longer allows.
func (d *Driver) ensurePolicy(vs *vpcNS, eps []*datapath.Endpoint) error {
	want := vs.compiled
	if want == nil || !samePolicies(vs.compiledFor, eps) {
		var err error
		if want, err = compilePolicies(eps); err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		want.sampling = d.cfg.FlowSampling
		vs.compiled, vs.compiledFor = want, policyInputs(eps)
	}
	var err error
	if vs.nft == nil {
		if vs.nft, err = newNftConn(vs.ns); err != nil {
			return fmt.Errorf("policy: nftables: %w", err)
		}
	}
	flush := func() error {
		if d.policyFault != nil && d.policyFault(vs.vni) {
			// A rule in a chain that does not exist: the kernel refuses
			// the whole batch.
			t := ptable()
			vs.nft.AddRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Table: t, Name: "no such chain"},
				Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		}
		return d.ops.Write(writes.NftCommit, vs.nft.Flush)
	}
	var w policyWrite
	err = vs.nft.withDeadline(func() error {
		// When the table was last found as wanted and no transaction has
		// been committed in the namespace since, nothing can differ: a
		// Set that changes no policy of the VPC costs one request.
		gen, err := vs.nft.generation()
		if err != nil {
			return err
		}
		if vs.verified == want && gen == vs.verifiedGen {
			return nil
		}
		// Unchanged since it was verified: diff against that, unread.
		var known *kernelPolicy
		if vs.verified != nil && gen == vs.verifiedGen {
			known = vs.verified.known(want)
		}
		vs.verified = nil
		if w, err = writePolicy(vs.nft.Conn, want, known, flush); err != nil {
			return err
		}
		// Every commit adds one to the generation (skipping 0): with ours,
		// gen+1 unless someone else committed since gen was read, and then
		// the generation is further on, differs from what is recorded, and
		// the next Set reads the table. No second request.
		vs.verifiedGen = gen
		if w.wrote {
			if vs.verifiedGen++; vs.verifiedGen == 0 {
				vs.verifiedGen = 1
			}
		}
		vs.verified = want
		return nil
	})
	if err != nil {
		_ = vs.nft.CloseLasting()
		vs.nft = nil
		return fmt.Errorf("policy: %w", err)
	}
	if !vs.ctChecked {
		if err := d.convergeSysctls(vs.ns, conntrackSysctls, false); err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		vs.ctChecked = true
	}
	// Without an isolated endpoint (a table without classes) every
	// connection is allowed: there is nothing to judge, and the dump
	// would cost a socket in the namespace per Set.
	if (w.judged || vs.flushPending) && want.stateful() {
		vs.flushPending = true
		n, err := flushDenied(vs.ns, eps)
		d.ops.Add(writes.ConntrackDel, uint64(n))
		if err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		vs.flushPending = false
		if n > 0 {
			d.log.Info("connections no longer allowed flushed", "vni", vs.vni, "connections", n)
		}
	}
	return nil
}
