package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/ports"
)

// Writing a VPC's policyTable into its router namespace as the nftables
// table "ip weft", and reading it back. See "Security policy" in the
// package documentation for the layout.

// PolicyTable is the name of the nftables table (family ip) the driver
// owns in each VPC router namespace.
const PolicyTable = "weft"

// Names of the table's fixed objects.
const (
	chainPrerouting = "prerouting"
	chainForward    = "forward"
	setMarks        = "marks"
	setEgress       = "egress"
	setIngress      = "ingress"
	setEgressDrops  = "egress_drops"
	setIngressDrops = "ingress_drops"
)

// Registers as nft(8) numbers them: reg 1 is the first 16-byte register,
// reg32(i) its i-th 4-byte word (the fields of a concatenation).
const (
	regVerdict = 0
	reg1       = 1
)

func reg32(i uint32) uint32 { return 8 + i }

// udataRuleComment is libnftnl's NFTNL_UDATA_RULE_COMMENT: nft(8) shows
// it as the rule's comment.
const udataRuleComment userdata.Type = 0

// elemChunk bounds the elements per netlink message of a batch.
const elemChunk = 2048

// nftTimeout bounds one read or write of the policy table: the library
// waits for every acknowledgement of a batch without a deadline of its
// own.
const nftTimeout = 30 * time.Second

// nftConn is a lasting nftables connection in one namespace.
type nftConn struct {
	*nftables.Conn
	sock *mdnetlink.Conn // its socket, for deadlines
}

// newNftConn opens a lasting nftables connection in namespace ns, able to
// send a batch of any size in one transaction.
func newNftConn(ns netns.NsHandle) (*nftConn, error) {
	nc := &nftConn{}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting(), nftables.WithSockOptions(func(c *mdnetlink.Conn) error {
		nc.sock = c
		// Errors with the kernel's reason. (Acknowledgements stay whole:
		// the library cannot parse capped ones; a failed message echoes
		// at most one chunk of elements.)
		_ = c.SetOption(mdnetlink.ExtendedAcknowledge, true)
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			// A batch is one sendmsg; the kernel refuses one larger than
			// the send buffer. As root we may exceed wmem_max, as nft(8)
			// does.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 1<<28)
			// Every message of a batch is acknowledged, each in its own
			// skb: room for a few hundred thousand.
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<28))
		}); err != nil {
			return err
		}
		return serr
	}))
	if err != nil {
		return nil, err
	}
	nc.Conn = c
	return nc, nil
}

// generation returns the namespace's nftables generation, which every
// committed transaction (ours or anyone's) changes.
func (c *nftConn) generation() (uint32, error) {
	msgs, err := c.sock.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: mdnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: mdnetlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mdnetlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			continue
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("nftables generation: no answer")
}

// withDeadline runs fn with the socket's deadline nftTimeout away. After
// an error the connection may hold a late answer: the caller closes it.
func (c *nftConn) withDeadline(fn func() error) error {
	if err := c.sock.SetDeadline(time.Now().Add(nftTimeout)); err != nil {
		return err
	}
	err := fn()
	if derr := c.sock.SetDeadline(time.Time{}); err == nil {
		err = derr
	}
	return err
}

func ptable() *nftables.Table {
	return &nftables.Table{Name: PolicyTable, Family: nftables.TableFamilyIPv4}
}

// ifnameKey is a set key of type ifname: the name, zero padded.
func ifnameKey(name string) []byte {
	k := make([]byte, unix.IFNAMSIZ)
	copy(k, name)
	return k
}

func keyIfname(k []byte) string { return string(bytes.TrimRight(k, "\x00")) }

func ne32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func be32(v uint32) []byte { return binaryutil.BigEndian.PutUint32(v) }

// l4Key is a key of type inet_proto . inet_service.
func l4Key(proto uint8, port uint16) []byte {
	return []byte{proto, 0, 0, 0, byte(port >> 8), byte(port), 0, 0}
}

// icmpKey is a key of type icmp_type . icmp_code.
func icmpKey(typ, code uint8) []byte { return []byte{typ, 0, 0, 0, code, 0, 0, 0} }

// verdictOf is the verdict of a dispatch element: accept, or a jump to a
// class chain.
func verdictOf(chain string) *expr.Verdict {
	if chain == "" {
		return &expr.Verdict{Kind: expr.VerdictAccept}
	}
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
}

// parseVerdict decodes a verdict map element's data as GetSetElements
// returns it: "" for accept, the chain of a jump, and ok false for any
// other verdict.
func parseVerdict(b []byte) (chain string, ok bool) {
	ad, err := mdnetlink.NewAttributeDecoder(b)
	if err != nil {
		return "", false
	}
	ad.ByteOrder = binary.BigEndian
	var code int32
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	switch {
	case ad.Err() != nil:
		return "", false
	case code == int32(expr.VerdictAccept) && chain == "":
		return "", true
	case code == int32(expr.VerdictJump) && chain != "":
		return chain, true
	}
	return "", false
}

func comment(s string) []byte {
	return userdata.AppendString(nil, udataRuleComment, policyLayout+": "+s)
}

// baseRule is a rule of the table's two base chains.
type baseRule struct {
	chain   string
	comment string
	exprs   []expr.Any
}

// endpointVeth matches packets whose interface (in or out) is an endpoint
// veth, known or not.
func endpointVeth(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte(vethLinkPrefix)},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: ne32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// Regular chains of the table's fixed part: where a packet of an endpoint
// veth that its direction's dispatch did not accept is counted and dropped.
const (
	chainEgressDeny  = "egress_deny"
	chainIngressDeny = "ingress_deny"
)

// fixedChains are the table's fixed regular chains, in the order of their
// rules in baseRules (after the base chains').
func fixedChains(sampling uint32) []string {
	return append([]string{chainEgressDeny, chainIngressDeny}, flowChains(sampling)...)
}

// ruleChains are the chains whose rules baseRules lists, in its order.
func ruleChains(sampling uint32) []string {
	return append([]string{chainPrerouting, chainForward}, fixedChains(sampling)...)
}

// baseRules are the rules of the table's fixed chains, in order
// (ruleChains). Without an isolated endpoint (stateful false) the table
// judges nothing and uses no connection state: the router's packets pay
// no conntrack. With sampling above 0 the flow hooks count connections
// and sample flows (flows.go): the rule that marks an endpoint's packets
// goes on to its protocol's flow chain (a packet from anywhere else
// leaves that rule at its first lookup), and the packets to an endpoint
// veth go to theirs, so that a packet's cost grows by one protocol lookup
// and its flow's key and counter, and traffic to or from no endpoint by
// at most one compare.
func baseRules(stateful bool, sampling uint32) []baseRule {
	hooks := sampling > 0
	mark := baseRule{chainPrerouting, "mark packets of endpoints with their identity", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: setMarks},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}}
	if hooks {
		mark.comment += ", sample their flows"
		mark.exprs = append(mark.exprs, flowDispatch(mapFlowOut)...)
	}
	rs := []baseRule{mark}
	if stateful {
		rs = append(rs, baseRule{chainPrerouting, "established and related", ctEstablished()})
	}
	rs = append(rs,
		baseRule{chainPrerouting, "egress by endpoint", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: setEgress},
		}},
		baseRule{chainPrerouting, "egress not allowed", append(endpointVeth(expr.MetaKeyIIFNAME), jump(chainEgressDeny)...)},
	)
	if hooks {
		rs = append(rs, baseRule{chainForward, "sample ingress flows", append(endpointVeth(expr.MetaKeyOIFNAME), flowDispatch(mapFlowIn)...)})
	}
	if stateful {
		rs = append(rs,
			baseRule{chainForward, "established and related", ctEstablished()},
			baseRule{chainForward, "remember the sender's identity", []expr.Any{
				&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
				&expr.Ct{Key: expr.CtKeyMARK, Register: reg1, SourceRegister: true},
			}})
	}
	rs = append(rs,
		baseRule{chainForward, "ingress by endpoint", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: setIngress},
		}},
		baseRule{chainForward, "ingress not allowed", append(endpointVeth(expr.MetaKeyOIFNAME), jump(chainIngressDeny)...)},
	)
	// denied, or a veth the table does not know (fail closed)
	deny := func(chain string, key expr.MetaKey, drops, what string) []baseRule {
		r := []baseRule{{chain, "count " + what + " drops", []expr.Any{
			&expr.Meta{Key: key, Register: reg1},
			&expr.Dynset{SrcRegKey: reg1, SetName: drops, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}},
		}}}
		if hooks {
			r = append(r, baseRule{chain, "sample dropped " + what + " flows", flowDispatch(mapFlowDrop)})
		}
		return append(r, baseRule{chain, "drop " + what + " not allowed", []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
	}
	rs = append(rs, deny(chainEgressDeny, expr.MetaKeyIIFNAME, setEgressDrops, "egress")...)
	rs = append(rs, deny(chainIngressDeny, expr.MetaKeyOIFNAME, setIngressDrops, "ingress")...)
	return append(rs, flowChainRules(sampling)...)
}

// baseSets are the table's fixed sets.
func baseSets(t *nftables.Table, sampling uint32) []*nftables.Set {
	return append([]*nftables.Set{
		{Table: t, Name: setMarks, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeMark},
		{Table: t, Name: setEgress, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict},
		{Table: t, Name: setIngress, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict},
		{Table: t, Name: setEgressDrops, Dynamic: true, Size: 1 << 16, KeyType: nftables.TypeIFName},
		{Table: t, Name: setIngressDrops, Dynamic: true, Size: 1 << 16, KeyType: nftables.TypeIFName},
	}, flowSets(t, sampling)...)
}

func baseChains(t *nftables.Table) []*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return []*nftables.Chain{
		{Table: t, Name: chainPrerouting, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityMangle, Policy: &accept},
		{Table: t, Name: chainForward, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
			Priority: nftables.ChainPriorityFilter, Policy: &accept},
	}
}

// kernelPolicy is a VPC's table as read from the kernel.
type kernelPolicy struct {
	exists bool
	// base says the fixed objects are as this driver writes them; when not,
	// the table is rebuilt.
	base            bool
	chains, sets    map[string]bool
	marks           map[string]uint32
	egress, ingress map[string]string
	counted         map[string][]string // counted interfaces, by set (endpointCounters)
}

// endpointCounters are the sets that count per endpoint veth; a gone
// endpoint's elements are deleted.
var endpointCounters = []string{setEgressDrops, setIngressDrops, setEgressConns, setIngressConns}

// readPolicy reads the VPC's table; its fixed part is compared with the
// one written for stateful and sampling. An error after the table was
// found comes with what was read (exists set).
func readPolicy(c *nftables.Conn, stateful bool, sampling uint32) (*kernelPolicy, error) {
	k := &kernelPolicy{chains: map[string]bool{}, sets: map[string]bool{}, counted: map[string][]string{}}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == PolicyTable }) {
		return k, nil
	}
	k.exists = true
	t := ptable()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return k, fmt.Errorf("list nftables chains: %w", err)
	}
	base := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == PolicyTable {
			k.chains[ch.Name] = true
			base[ch.Name] = ch
		}
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return k, fmt.Errorf("list nftables sets: %w", err)
	}
	have := map[string]*nftables.Set{}
	for _, s := range sets {
		k.sets[s.Name] = true
		have[s.Name] = s
	}
	k.base = true
	for _, want := range baseChains(t) {
		got := base[want.Name]
		if got == nil || got.Hooknum == nil || *got.Hooknum != *want.Hooknum || got.Priority == nil || *got.Priority != *want.Priority ||
			got.Type != want.Type {
			k.base = false
		}
	}
	for _, name := range fixedChains(sampling) {
		if !k.chains[name] {
			k.base = false
		}
	}
	for _, want := range baseSets(t, sampling) {
		got := have[want.Name]
		if got == nil || got.IsMap != want.IsMap || got.Dynamic != want.Dynamic || got.Interval {
			k.base = false
		}
	}
	if !k.base {
		return k, nil
	}
	var comments []string
	for _, ch := range ruleChains(sampling) {
		rules, err := c.GetRules(t, &nftables.Chain{Table: t, Name: ch})
		if err != nil {
			return k, fmt.Errorf("list rules of %s: %w", ch, err)
		}
		for _, r := range rules {
			s, _ := userdata.GetString(r.UserData, udataRuleComment)
			comments = append(comments, ch+": "+s)
		}
	}
	var want []string
	for _, r := range baseRules(stateful, sampling) {
		want = append(want, r.chain+": "+policyLayout+": "+r.comment)
	}
	if !slices.Equal(comments, want) {
		k.base = false
		return k, nil
	}
	elems := func(name string) ([]nftables.SetElement, error) {
		es, err := c.GetSetElements(&nftables.Set{Table: t, Name: name})
		if err != nil {
			return nil, fmt.Errorf("list elements of %s: %w", name, err)
		}
		return es, nil
	}
	es, err := elems(setMarks)
	if err != nil {
		return k, err
	}
	k.marks = make(map[string]uint32, len(es))
	for _, e := range es {
		if len(e.Val) == 4 {
			k.marks[keyIfname(e.Key)] = binaryutil.NativeEndian.Uint32(e.Val)
		}
	}
	for _, d := range []struct {
		name string
		m    *map[string]string
	}{{setEgress, &k.egress}, {setIngress, &k.ingress}} {
		es, err := elems(d.name)
		if err != nil {
			return k, err
		}
		*d.m = make(map[string]string, len(es))
		for _, e := range es {
			chain, ok := parseVerdict(e.Val)
			if !ok {
				chain = "\x00unknown" // differs from every wanted verdict
			}
			(*d.m)[keyIfname(e.Key)] = chain
		}
	}
	for _, name := range endpointCounters {
		if !k.sets[name] {
			continue
		}
		es, err := elems(name)
		if err != nil {
			return k, err
		}
		for _, e := range es {
			k.counted[name] = append(k.counted[name], keyIfname(e.Key))
		}
	}
	return k, nil
}

// batch queues one transaction; ops counts what it queued.
type batch struct {
	c      *nftables.Conn
	t      *nftables.Table
	nextID uint32
	ops    int
}

func (b *batch) setID() uint32 { b.nextID++; return b.nextID }

// addSet queues a set with its elements, a chunk per message.
func (b *batch) addSet(s *nftables.Set, elems []nftables.SetElement) error {
	s.Table, s.ID = b.t, b.setID()
	first := elems[:min(len(elems), elemChunk)]
	if err := b.c.AddSet(s, first); err != nil {
		return fmt.Errorf("add set %s: %w", s.Name, err)
	}
	b.ops++
	return b.addElems(s, elems[len(first):])
}

func (b *batch) addElems(s *nftables.Set, elems []nftables.SetElement) error {
	return b.chunked(elems, func(es []nftables.SetElement) error { return b.c.SetAddElements(s, es) }, "add elements to "+s.Name)
}

func (b *batch) delElems(s *nftables.Set, elems []nftables.SetElement) error {
	return b.chunked(elems, func(es []nftables.SetElement) error { return b.c.SetDeleteElements(s, es) }, "delete elements of "+s.Name)
}

// chunked queues elems with queue, a message per elemChunk.
func (b *batch) chunked(elems []nftables.SetElement, queue func([]nftables.SetElement) error, what string) error {
	for len(elems) > 0 {
		n := min(len(elems), elemChunk)
		if err := queue(elems[:n]); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		elems = elems[n:]
		b.ops++
	}
	return nil
}

func (b *batch) addRule(chain string, comment []byte, exprs ...expr.Any) {
	b.c.AddRule(&nftables.Rule{Table: b.t, Chain: &nftables.Chain{Table: b.t, Name: chain}, Exprs: exprs, UserData: comment})
	b.ops++
}

func (b *batch) addChain(name string) {
	b.c.AddChain(&nftables.Chain{Table: b.t, Name: name})
	b.ops++
}

// addBase queues the table's fixed objects with the dispatch elements of
// want (after the class chains they jump to).
func (b *batch) addBase(want *policyTable) error {
	// The regular chains first: the flow maps' elements jump to them.
	for _, name := range fixedChains(want.sampling) {
		b.addChain(name)
	}
	flowMaps := flowMapElems()
	for _, s := range baseSets(b.t, want.sampling) {
		var elems []nftables.SetElement
		switch s.Name {
		case mapFlowOut, mapFlowIn, mapFlowDrop:
			elems = flowMaps[s.Name]
		case setMarks:
			for veth, m := range want.marks {
				elems = append(elems, nftables.SetElement{Key: ifnameKey(veth), Val: ne32(m)})
			}
		case setEgress, setIngress:
			m := want.egress
			if s.Name == setIngress {
				m = want.ingress
			}
			for veth, chain := range m {
				elems = append(elems, nftables.SetElement{Key: ifnameKey(veth), VerdictData: verdictOf(chain)})
			}
		}
		if err := b.addSet(s, elems); err != nil {
			return err
		}
	}
	for _, ch := range baseChains(b.t) {
		b.c.AddChain(ch)
		b.ops++
	}
	for _, r := range baseRules(want.stateful(), want.sampling) {
		b.addRule(r.chain, comment(r.comment), r.exprs...)
	}
	return nil
}

// addClass queues a class: its chain, the maps from a peer (the sender's
// identity for ingress, the peer's address) to a port set ID, and the port
// sets keyed by ID. Every lookup is an exact hash lookup but the address
// one (an interval tree), so a packet's cost does not grow with the rules.
// The chain's rules each look the peer's port set up and accept if the
// packet is in it; a packet none accepts returns to the base chain, which
// drops it.
func (b *batch) addClass(name string, c *policyClass) error {
	b.addChain(name)
	type peerPath struct {
		set   string
		exprs []expr.Any // leave the peer's port set ID in reg1
	}
	var paths []peerPath
	if len(c.ids) > 0 {
		elems := make([]nftables.SetElement, 0, len(c.ids))
		for _, j := range c.ids {
			elems = append(elems, nftables.SetElement{Key: ne32(j.id), Val: ne32(j.ports)})
		}
		s := &nftables.Set{Name: name + "_ids", IsMap: true, KeyType: nftables.TypeMark, DataType: nftables.TypeMark}
		if err := b.addSet(s, elems); err != nil {
			return err
		}
		paths = append(paths, peerPath{s.Name, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(datapath.MarkIdentityMask), Xor: ne32(0)},
			&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: s.Name, SetID: s.ID},
		}})
	}
	// Peers by address: single addresses (the /32 peers) in a hash map,
	// ranges in an interval map.
	offset := uint32(16) // destination address
	if c.ingress {
		offset = 12 // source address
	}
	var addrs, ranges []nftables.SetElement
	for _, j := range c.nets {
		if j.first == j.last {
			addrs = append(addrs, nftables.SetElement{Key: be32(j.first), Val: ne32(j.ports)})
			continue
		}
		ranges = append(ranges, nftables.SetElement{Key: be32(j.first), Val: ne32(j.ports)})
		if j.last != 0xffffffff {
			ranges = append(ranges, nftables.SetElement{Key: be32(j.last + 1), IntervalEnd: true})
		}
	}
	for _, m := range []struct {
		suffix   string
		interval bool
		elems    []nftables.SetElement
	}{{"_addrs", false, addrs}, {"_nets", true, ranges}} {
		if len(m.elems) == 0 {
			continue
		}
		s := &nftables.Set{Name: name + m.suffix, IsMap: true, Interval: m.interval, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark}
		if err := b.addSet(s, m.elems); err != nil {
			return err
		}
		paths = append(paths, peerPath{s.Name, []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: s.Name, SetID: s.ID},
		}})
	}
	kinds, err := b.addPortSets(name, c.ports)
	if err != nil {
		return err
	}
	for _, p := range paths {
		for _, k := range kinds {
			exprs := append(slices.Clone(p.exprs), k...)
			b.addRule(name, nil, append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})...)
		}
	}
	return nil
}

// addPortSets queues a class's port sets and returns, for each, the
// expressions that look a packet up in it (with its port set ID in reg1).
func (b *batch) addPortSets(class string, sets []*ports.Set) ([][]expr.Any, error) {
	var all, icmpType, icmpCode []nftables.SetElement
	var l4 [17][]nftables.SetElement // by block bits
	for id, ps := range sets {
		psid := ne32(uint32(id))
		if ps.All {
			all = append(all, nftables.SetElement{Key: psid})
			continue
		}
		for _, bl := range ps.Blocks() {
			l4[bl.Bits] = append(l4[bl.Bits], nftables.SetElement{Key: slices.Concat(psid, l4Key(bl.Proto, bl.First))})
		}
		for t, codes := range ps.ICMP {
			if codes == ports.AllCodes {
				icmpType = append(icmpType, nftables.SetElement{Key: slices.Concat(psid, []byte{t, 0, 0, 0})})
				continue
			}
			for c := range 256 {
				if codes[c/64]&(1<<(c%64)) != 0 {
					icmpCode = append(icmpCode, nftables.SetElement{Key: slices.Concat(psid, icmpKey(t, uint8(c)))})
				}
			}
		}
	}
	var kinds [][]expr.Any
	add := func(suffix string, key nftables.SetDatatype, elems []nftables.SetElement, load ...expr.Any) error {
		if len(elems) == 0 {
			return nil
		}
		s := &nftables.Set{Name: class + "_" + suffix, KeyType: key, Concatenation: len(load) > 0}
		if err := b.addSet(s, elems); err != nil {
			return err
		}
		kinds = append(kinds, append(load, &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID}))
		return nil
	}
	if err := add("all", nftables.TypeMark, all); err != nil {
		return nil, err
	}
	for bits, elems := range l4 {
		load := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32(1)},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(2), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
		if bits > 0 {
			mask := uint16(0xffff << bits)
			load = append(load, &expr.Bitwise{SourceRegister: reg32(2), DestRegister: reg32(2), Len: 4,
				Mask: []byte{byte(mask >> 8), byte(mask), 0, 0}, Xor: ne32(0)})
		}
		key := nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeInetProto, nftables.TypeInetService)
		if err := add(fmt.Sprintf("l4b%d", bits), key, elems, load...); err != nil {
			return nil, err
		}
	}
	icmp := func(codes bool) []expr.Any {
		e := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32(1)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg32(1), Data: []byte{unix.IPPROTO_ICMP}},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(1), Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		}
		if codes {
			e = append(e, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(2), Base: expr.PayloadBaseTransportHeader, Offset: 1, Len: 1})
		}
		return e
	}
	if err := add("icmpt", nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeICMPType), icmpType, icmp(false)...); err != nil {
		return nil, err
	}
	if err := add("icmpc", nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeICMPType, nftables.TypeICMPCode), icmpCode, icmp(true)...); err != nil {
		return nil, err
	}
	return kinds, nil
}

// diffDispatch queues the element changes that turn have into want for
// one dispatch map, and reports whether there were any. A changed
// element is deleted and added again (the kernel refuses to overwrite a
// map element's data).
func diffDispatch[V comparable](b *batch, set string, have, want map[string]V, elem func(string, V) nftables.SetElement) (bool, error) {
	s := &nftables.Set{Table: b.t, Name: set}
	var add, del []nftables.SetElement
	for k, v := range want {
		if cur, ok := have[k]; !ok || cur != v {
			if ok {
				del = append(del, nftables.SetElement{Key: ifnameKey(k)})
			}
			add = append(add, elem(k, v))
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			del = append(del, nftables.SetElement{Key: ifnameKey(k)})
		}
	}
	if err := b.delElems(s, del); err != nil {
		return false, err
	}
	if err := b.addElems(s, add); err != nil {
		return false, err
	}
	return len(add)+len(del) > 0, nil
}

// policyWrite is what programPolicy wrote.
type policyWrite struct {
	wrote bool // a batch was committed
	// judged says the verdicts of some endpoints may have changed (their
	// identity, a class, or the table was created): connections must be
	// judged again.
	judged bool
}

// writePolicy converges the table to want in one transaction: objects
// named by their content are added when missing and deleted when no
// longer used, dispatch elements are diffed, and a table whose fixed part
// is missing or not as this driver writes it is rebuilt whole.
//
// flush commits what was queued on c. known, if not nil, is the table in
// the kernel (see policyTable.known): it is not read again.
func writePolicy(c *nftables.Conn, want *policyTable, known *kernelPolicy, flush func() error) (policyWrite, error) {
	if known != nil {
		if w, err := updatePolicy(c, known, want, flush); err == nil {
			return w, nil
		}
		// Refused (the batch is atomic, nothing changed): read what is there.
	}
	have, err := readPolicy(c, want.stateful(), want.sampling)
	if err != nil && have == nil {
		return policyWrite{}, err
	}
	if err != nil || !have.exists || !have.base {
		// Missing, not as this driver writes it, or unreadable (e.g.
		// objects of a type this library cannot parse): rebuild.
		return rebuildPolicy(c, have.exists, want, flush)
	}
	w, err := updatePolicy(c, have, want, flush)
	if err != nil {
		// Something of ours no longer fits (e.g. another process's rule
		// refers to a chain we would delete): rebuild whole, still in one
		// transaction.
		if w2, err2 := rebuildPolicy(c, true, want, flush); err2 == nil {
			return w2, nil
		}
	}
	return w, err
}

func rebuildPolicy(c *nftables.Conn, exists bool, want *policyTable, flush func() error) (policyWrite, error) {
	b := &batch{c: c, t: ptable()}
	if exists {
		c.DelTable(b.t)
		b.ops++
	}
	c.AddTable(b.t)
	b.ops++
	if err := b.addObjects(want, nil); err != nil {
		return policyWrite{}, err
	}
	if err := b.addBase(want); err != nil {
		return policyWrite{}, err
	}
	if err := flush(); err != nil {
		return policyWrite{}, fmt.Errorf("commit nftables table %s: %w", PolicyTable, err)
	}
	return policyWrite{wrote: true, judged: true}, nil
}

// addObjects queues the class chains of want that have lacks (nil: all of
// them).
func (b *batch) addObjects(want *policyTable, have *kernelPolicy) error {
	for _, name := range sortedKeys(want.classes) {
		if have == nil || !have.chains[name] {
			if err := b.addClass(name, want.classes[name]); err != nil {
				return err
			}
		}
	}
	return nil
}

func updatePolicy(c *nftables.Conn, have *kernelPolicy, want *policyTable, flush func() error) (policyWrite, error) {
	b := &batch{c: c, t: ptable()}
	var w policyWrite
	if err := b.addObjects(want, have); err != nil {
		return w, err
	}
	for _, d := range []struct {
		set        string
		have, want map[string]string
	}{{setEgress, have.egress, want.egress}, {setIngress, have.ingress, want.ingress}} {
		changed, err := diffDispatch(b, d.set, d.have, d.want, func(k, chain string) nftables.SetElement {
			return nftables.SetElement{Key: ifnameKey(k), VerdictData: verdictOf(chain)}
		})
		if err != nil {
			return w, err
		}
		w.judged = w.judged || changed
	}
	changed, err := diffDispatch(b, setMarks, have.marks, want.marks, func(k string, m uint32) nftables.SetElement {
		return nftables.SetElement{Key: ifnameKey(k), Val: ne32(m)}
	})
	if err != nil {
		return w, err
	}
	w.judged = w.judged || changed
	// Counters of endpoints that are gone.
	for _, set := range endpointCounters {
		var gone []nftables.SetElement
		for _, veth := range have.counted[set] {
			if _, ok := want.marks[veth]; !ok {
				gone = append(gone, nftables.SetElement{Key: ifnameKey(veth)})
			}
		}
		if err := b.delElems(&nftables.Set{Table: b.t, Name: set}, gone); err != nil {
			return w, err
		}
	}
	// What is no longer used, chains before the sets their rules use;
	// anything else that is not ours goes too.
	fixed := map[string]bool{chainPrerouting: true, chainForward: true}
	for _, name := range fixedChains(want.sampling) {
		fixed[name] = true
	}
	for _, s := range baseSets(b.t, want.sampling) {
		fixed[s.Name] = true
	}
	for _, name := range sortedKeys(have.chains) {
		if !fixed[name] && want.classes[name] == nil {
			c.DelChain(&nftables.Chain{Table: b.t, Name: name})
			b.ops++
		}
	}
	for _, name := range sortedKeys(have.sets) {
		// A class's sets are named "<chain>_<what>".
		if i := strings.LastIndexByte(name, '_'); fixed[name] || i > 0 && want.classes[name[:i]] != nil {
			continue
		}
		c.DelSet(&nftables.Set{Table: b.t, Name: name})
		b.ops++
	}
	if b.ops == 0 {
		return w, nil
	}
	if err := flush(); err != nil {
		return policyWrite{}, fmt.Errorf("commit nftables table %s: %w", PolicyTable, err)
	}
	w.wrote = true
	return w, nil
}

// known returns what readPolicy would read of a kernel that holds exactly
// t, as far as updating it to want needs: nil when that is not enough (the
// update would delete a class or an endpoint, whose sets and counters it
// does not list, or change the fixed part).
func (t *policyTable) known(want *policyTable) *kernelPolicy {
	if t.stateful() != want.stateful() || t.sampling != want.sampling {
		return nil
	}
	for name := range t.classes {
		if want.classes[name] == nil {
			return nil
		}
	}
	for veth := range t.marks {
		if _, ok := want.marks[veth]; !ok {
			return nil
		}
	}
	k := &kernelPolicy{exists: true, base: true, chains: map[string]bool{}, sets: map[string]bool{},
		marks: t.marks, egress: t.egress, ingress: t.ingress, counted: map[string][]string{}}
	pt := ptable()
	for _, c := range baseChains(pt) {
		k.chains[c.Name] = true
	}
	for _, name := range fixedChains(t.sampling) {
		k.chains[name] = true
	}
	for name := range t.classes {
		k.chains[name] = true
	}
	for _, st := range baseSets(pt, t.sampling) {
		k.sets[st.Name] = true
	}
	return k
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
