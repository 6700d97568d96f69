package compile

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/view"
)

// vpcIndex is what the compiler knows of one VPC to compile its
// policies: the policies that apply in it, and its endpoints grouped by
// label set (the members, loaded when first needed: by a policy with
// selector peers or by a policy or intent event). An index is made when a
// view first needs its VPC (Compiler.index), kept current by the events
// (mark) and dropped by sweep once no compiled view holds the VPC.
//
// Builds read it in parallel while nothing writes it: mark writes it
// under runMu between builds. The two lazy parts (the members, a policy's
// compiled rules) are made once under their own locks. Both policies and
// members record the revision they were read at, so that events older
// than a load from the (later) cache are skipped.
type vpcIndex struct {
	key      tn
	policies map[string]*policyEntry // by name: the tenant's policies whose spec.vpc is this VPC
	// policyGen counts the changes of policies (each a new selector, maybe):
	// a label set's selectedBy made at another generation is stale.
	policyGen uint64
	// selMu guards the label sets' selectedBy, which builds fill in.
	selMu sync.Mutex

	membersOnce sync.Once
	loaded      atomic.Bool
	members     map[string]*member   // endpoint name →
	sets        map[string]*labelSet // canonical labels →
}

// policyEntry is one policy of a VPC and, once a view needed it, the
// policy compiled: its rules with the peers resolved, the same for every
// host that holds it, as the encoded view.Policy up to the value of its
// last field, applies (see policyTail).
type policyEntry struct {
	p  *apiv1.SecurityPolicy // shared with the store: read only
	rv int64
	id string // "tenant/name", its resource ID in the views

	mu       sync.Mutex
	compiled []byte // nil until a build needs it
}

func newPolicyEntry(p *apiv1.SecurityPolicy, rv int64) *policyEntry {
	return &policyEntry{p: p, rv: rv, id: view.ID(p.Metadata.Tenant, p.Metadata.Name)}
}

// policyTail completes a compiled policy for a host where it applies to
// applies (not empty): the compiled bytes followed by the tail are what
// view.Encode writes for the host's view.Policy. The view shares the
// compiled bytes with every other view that holds the policy, and sends
// them with the tail (wire.Resource.Tail) without joining them. IDs are
// names the API validated, plain ASCII that JSON writes as it is; any
// other goes through encoding/json.
func policyTail(applies []string) []byte {
	n := len("[]}")
	for _, id := range applies {
		n += len(id) + len(`"",`)
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, id := range applies {
		if !plainJSON(id) {
			a, _ := json.Marshal(applies) // cannot fail
			return append(a, '}')
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, '"'), id...), '"')
	}
	return append(b, ']', '}')
}

// plainJSON reports whether encoding/json writes s between quotes as it
// is: printable ASCII without the characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// member is an endpoint of the VPC as the index last saw it.
type member struct {
	set  *labelSet
	addr netip.Addr // invalid: no address yet
	id   uint32     // 0: no identity yet
	host string
	rv   int64
}

// labelSet is the endpoints of the VPC that have one set of labels: their
// identities (one, normally: identities are allocated per label set per
// VPC), addresses and hosts, each counted.
type labelSet struct {
	key    string            // labelKey(labels)
	labels map[string]string // shared with the store: read only
	n      int
	ids    map[uint32]int
	addrs  map[netip.Addr]int
	hosts  map[string]int
	// selectedBy names the VPC's policies whose selector matches labels,
	// sorted, as of the index's policyGen selGen (see vpcIndex.selecting).
	selectedBy []string
	selGen     uint64
}

// touched says what a member's change did to a label set: an identity or
// an address appeared in it or disappeared from it.
type touched struct {
	set        *labelSet
	ids, addrs bool
}

// index returns the index of VPC k, making it (with its policies) if
// needed. Builds call it in parallel.
func (c *Compiler) index(k tn) *vpcIndex {
	c.idxMu.Lock()
	defer c.idxMu.Unlock()
	x := c.idx[k]
	if x == nil {
		x = &vpcIndex{key: k, policies: map[string]*policyEntry{}, policyGen: 1}
		for _, p := range c.vpcPolicies(k) {
			x.policies[p.Metadata.Name] = newPolicyEntry(p, resourceVersion(p))
		}
		c.idx[k] = x
	}
	return x
}

// vpcPolicies returns the policies of VPC k in the store; idxMu is held.
// During a buildAll, a tenant's policies are listed once and grouped by
// VPC (c.tenantPolicies): an index made from that list instead of a later
// one is still current once the events after it are applied, as they are
// after the builds (markPolicy compares revisions).
func (c *Compiler) vpcPolicies(k tn) []*apiv1.SecurityPolicy {
	list := func() map[string][]*apiv1.SecurityPolicy {
		byVPC := map[string][]*apiv1.SecurityPolicy{}
		for _, o := range c.st.List(apiv1.KindSecurityPolicy, k.tenant) {
			p := o.(*apiv1.SecurityPolicy)
			byVPC[p.Spec.VPC] = append(byVPC[p.Spec.VPC], p)
		}
		return byVPC
	}
	if c.tenantPolicies == nil {
		return list()[k.name]
	}
	byVPC, ok := c.tenantPolicies[k.tenant]
	if !ok {
		byVPC = list()
		c.tenantPolicies[k.tenant] = byVPC
	}
	return byVPC[k.name]
}

// existingIndex returns the index of VPC k if a view made it.
func (c *Compiler) existingIndex(k tn) *vpcIndex {
	c.idxMu.Lock()
	defer c.idxMu.Unlock()
	return c.idx[k]
}

// ensureMembers loads the members of x from the store's cache, once.
func (c *Compiler) ensureMembers(x *vpcIndex) {
	x.membersOnce.Do(func() {
		x.members, x.sets = map[string]*member{}, map[string]*labelSet{}
		for _, sn := range c.st.SubnetsByVPC(x.key.tenant, x.key.name) {
			for _, ep := range c.st.EndpointsBySubnet(x.key.tenant, sn.Metadata.Name) {
				x.set(ep, resourceVersion(ep))
			}
		}
		x.loaded.Store(true)
	})
}

func resourceVersion(o apiv1.Object) int64 {
	rv, _ := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	return rv
}

// labelKey returns a string that equal label sets, and only they, share.
func labelKey(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// set records ep, at revision rv, as a member; a change older than what
// the index holds is skipped. It returns what the change did to the label
// sets.
func (x *vpcIndex) set(ep *apiv1.Endpoint, rv int64) []touched {
	old := x.members[ep.Metadata.Name]
	if old != nil && old.rv >= rv {
		return nil
	}
	m := &member{id: ep.Status.Identity, host: ep.Spec.Host, rv: rv}
	m.addr, _ = netip.ParseAddr(ep.Status.IP)
	lk := labelKey(ep.Metadata.Labels)
	m.set = x.sets[lk]
	if m.set == nil {
		m.set = &labelSet{key: lk, labels: ep.Metadata.Labels, ids: map[uint32]int{}, addrs: map[netip.Addr]int{}, hosts: map[string]int{}}
		x.sets[lk] = m.set
	}
	x.members[ep.Metadata.Name] = m
	// Join before leaving: a label set the endpoint stays in keeps a
	// member throughout, and an identity or address it keeps is not seen
	// to go and come back.
	t := []touched{x.join(m)}
	if old != nil {
		t = append(t, x.leave(old))
	}
	return t
}

// remove forgets endpoint name, deleted at revision rv (unless the index
// holds a later state of the name: a re-created endpoint).
func (x *vpcIndex) remove(name string, rv int64) []touched {
	old := x.members[name]
	if old == nil || old.rv >= rv {
		return nil
	}
	delete(x.members, name)
	return []touched{x.leave(old)}
}

func (x *vpcIndex) join(m *member) touched {
	s := m.set
	s.n++
	s.hosts[m.host]++
	t := touched{set: s}
	if m.id != 0 {
		s.ids[m.id]++
		t.ids = s.ids[m.id] == 1
	}
	if m.addr.IsValid() {
		s.addrs[m.addr]++
		t.addrs = s.addrs[m.addr] == 1
	}
	return t
}

func (x *vpcIndex) leave(m *member) touched {
	s := m.set
	s.n--
	decr(s.hosts, m.host)
	t := touched{set: s}
	if m.id != 0 {
		t.ids = decr(s.ids, m.id)
	}
	if m.addr.IsValid() {
		t.addrs = decr(s.addrs, m.addr)
	}
	if s.n == 0 {
		delete(x.sets, s.key)
	}
	return t
}

// decr decrements m[k] and reports whether it reached 0 (and is gone).
func decr[K comparable](m map[K]int, k K) bool {
	m[k]--
	if m[k] > 0 {
		return false
	}
	delete(m, k)
	return true
}

// selecting returns the names of the policies of x whose selector matches
// the labels of ep, an endpoint of the VPC, sorted. The selectors are
// matched once per label set (so per identity), not per endpoint: the
// answer is kept with ep's label set until a policy changes. An endpoint
// the index holds with other labels (its event is still to come) is
// matched on its own. The members must be loaded (ensureMembers); builds
// call it in parallel. The result is shared: read only.
func (x *vpcIndex) selecting(ep *apiv1.Endpoint) []string {
	m := x.members[ep.Metadata.Name]
	if m == nil || !maps.Equal(m.set.labels, ep.Metadata.Labels) {
		return x.matchPolicies(ep.Metadata.Labels)
	}
	s := m.set
	x.selMu.Lock()
	defer x.selMu.Unlock()
	if s.selGen != x.policyGen {
		s.selectedBy, s.selGen = x.matchPolicies(s.labels), x.policyGen
	}
	return s.selectedBy
}

// matchPolicies returns the names of the policies of x whose selector
// matches labels, sorted.
func (x *vpcIndex) matchPolicies(labels map[string]string) []string {
	var names []string
	for name, pe := range x.policies {
		if pe.p.Spec.Selector.Matches(labels) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// hostsSelected adds to dirty the hosts of the members that sel matches.
func (x *vpcIndex) hostsSelected(sel apiv1.LabelSelector, dirty map[string]struct{}) {
	for _, s := range x.sets {
		if sel.Matches(s.labels) {
			for h := range s.hosts {
				if h != "" {
					dirty[h] = struct{}{}
				}
			}
		}
	}
}

// affects reports whether the changes t may change the compiled rules of
// p: an identity appeared or went in a label set an ingress selector peer
// matches, or an address in one an egress selector peer matches.
func affects(p *apiv1.SecurityPolicy, t []touched) bool {
	for _, tc := range t {
		if tc.ids && selectsPeer(p.Spec.Ingress, tc.set.labels) || tc.addrs && selectsPeer(p.Spec.Egress, tc.set.labels) {
			return true
		}
	}
	return false
}

// selectsPeer reports whether a selector peer of rules matches labels.
func selectsPeer(rules []apiv1.PolicyRule, labels map[string]string) bool {
	for _, r := range rules {
		for _, pr := range r.Peers {
			if pr.Selector != nil && pr.Selector.Matches(labels) {
				return true
			}
		}
	}
	return false
}

// compiledPolicy returns pe compiled, compiling it on first use. Builds
// call it in parallel.
func (c *Compiler) compiledPolicy(x *vpcIndex, pe *policyEntry) []byte {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if pe.compiled == nil {
		pe.compiled = c.compilePolicy(x, pe.p)
	}
	return pe.compiled
}

// recompile compiles pe again after its peers may have changed; it reports
// whether the result changed. A policy no view has needed stays
// uncompiled. Called from mark (no builds run).
func (c *Compiler) recompile(x *vpcIndex, pe *policyEntry) bool {
	if pe.compiled == nil {
		return false
	}
	b := c.compilePolicy(x, pe.p)
	if bytes.Equal(b, pe.compiled) {
		return false
	}
	pe.compiled = b
	return true
}

// compilePolicy resolves p's rules against the members of x (see
// view.Rule) and encodes them (see policyEntry). What cannot be compiled
// (validation refuses it: an unknown protocol, a bad CIDR) fails closed:
// the peer, or the whole rule for a port, is left out, so the rule allows
// less, never more.
func (c *Compiler) compilePolicy(x *vpcIndex, p *apiv1.SecurityPolicy) []byte {
	prefix := p.Metadata.Tenant + "/" + p.Metadata.Name
	v := view.Policy{Tenant: p.Metadata.Tenant, Name: p.Metadata.Name, VPC: p.Spec.VPC,
		IngressIsolated: p.Spec.Ingress != nil, EgressIsolated: p.Spec.Egress != nil}
	for i, r := range p.Spec.Ingress {
		if vr, ok := c.compileRule(x, prefix+" ingress["+strconv.Itoa(i)+"]", r, true); ok {
			v.Ingress = append(v.Ingress, vr)
		}
	}
	for i, r := range p.Spec.Egress {
		if vr, ok := c.compileRule(x, prefix+" egress["+strconv.Itoa(i)+"]", r, false); ok {
			v.Egress = append(v.Egress, vr)
		}
	}
	b, err := json.Marshal(&v)
	if err != nil || !bytes.HasSuffix(b, []byte(`"applies":null}`)) { // cannot happen: applies is the last field
		panic(fmt.Sprintf("compile: view.Policy encodes as %q, %v", b, err))
	}
	return b[:len(b)-len("null}")]
}

func (c *Compiler) compileRule(x *vpcIndex, name string, r apiv1.PolicyRule, ingress bool) (view.Rule, bool) {
	vr := view.Rule{Name: name, AllPeers: len(r.Peers) == 0}
	for _, pp := range r.Ports {
		port, ok := compilePort(pp)
		if !ok {
			c.log.Warn("policy rule with an unknown protocol left out", "rule", name, "protocol", pp.Protocol)
			return view.Rule{}, false
		}
		vr.Ports = append(vr.Ports, port)
	}
	var ids []uint32
	var prefixes []netip.Prefix
	for _, pr := range r.Peers {
		switch {
		case pr.Selector != nil:
			c.ensureMembers(x)
			for _, s := range x.sets {
				if !pr.Selector.Matches(s.labels) {
					continue
				}
				if ingress {
					for id := range s.ids {
						ids = append(ids, id)
					}
					continue
				}
				for a := range s.addrs {
					prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
				}
			}
		case pr.CIDR != "":
			pfx, err := netip.ParsePrefix(pr.CIDR)
			if err != nil {
				c.log.Warn("policy peer with a bad CIDR left out", "rule", name, "cidr", pr.CIDR)
				continue
			}
			prefixes = append(prefixes, pfx.Masked())
		}
	}
	if len(ids) > 0 {
		slices.Sort(ids)
		vr.Identities = slices.Compact(ids)
	}
	if len(prefixes) > 0 {
		slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
		prefixes = slices.Compact(prefixes)
		vr.Prefixes = make([]string, len(prefixes))
		for i, p := range prefixes {
			vr.Prefixes[i] = p.String()
		}
	}
	return vr, true
}

// IP protocol numbers of the policy protocols (view.Port.Protocol).
var protocols = map[string]uint8{
	apiv1.ProtocolICMP: 1,
	apiv1.ProtocolTCP:  6,
	apiv1.ProtocolUDP:  17,
	apiv1.ProtocolSCTP: 132,
}

// compilePort turns a policy port into a view.Port; false for an unknown
// protocol.
func compilePort(pp apiv1.PolicyPort) (view.Port, bool) {
	proto := strings.ToUpper(pp.Protocol)
	if proto == "" {
		proto = apiv1.ProtocolTCP
	}
	n, ok := protocols[proto]
	if !ok {
		return view.Port{}, false
	}
	p := view.Port{Protocol: n, ICMPType: -1, ICMPCode: -1}
	if proto == apiv1.ProtocolICMP {
		if pp.ICMPType != nil {
			p.ICMPType = int16(*pp.ICMPType)
		}
		if pp.ICMPCode != nil {
			p.ICMPCode = int16(*pp.ICMPCode)
		}
		return p, true
	}
	p.First, p.Last = uint16(pp.Port), uint16(pp.Port)
	if pp.EndPort > pp.Port {
		p.Last = uint16(pp.EndPort)
	}
	return p, true
}
