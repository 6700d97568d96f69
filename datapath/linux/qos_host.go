package linux

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/htb"
	"github.com/weftnet/weft/datapath/internal/writes"
)

// The host namespace's part of QoS: the HTB tree on the underlay device
// and the nftables table that classifies encapsulated packets for it and
// writes their outer DSCP.

// hostQoS is the QoS state of the host namespace, read at plan time.
type hostQoS struct {
	uplink  netlink.Link                 // the underlay device (nil: none)
	root    netlink.Qdisc                // its root qdisc
	classes map[uint16]*netlink.HtbClass // our classes on it, by minor
	table   []string                     // the table's contents (nil: no table), see qosTable
	minors  map[qosKey]uint16            // the table's endpoint map
	dscp    map[uint16]uint8             // the table's DSCP map, by minor
}

func (d *Driver) nftHost() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(d.hostNS)))
	if err != nil {
		return nil, fmt.Errorf("nftables in host netns: %w", err)
	}
	return c, nil
}

// readHostQoS reads our table, and the root qdisc and our classes of the
// underlay device dev ("": of the device that holds our HTB, if any).
func readHostQoS(h *netlink.Handle, c *nftables.Conn, dev string) (*hostQoS, error) {
	hs := &hostQoS{minors: map[qosKey]uint16{}, dscp: map[uint16]uint8{}}
	var err error
	if dev == "" {
		qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return h.QdiscList(nil) })
		if err != nil {
			return nil, err
		}
		for _, q := range qs {
			if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle == netlink.MakeHandle(QoSHandle, 0) {
				if hs.uplink, err = h.LinkByIndex(q.Attrs().LinkIndex); err != nil {
					return nil, err
				}
				hs.root = q
			}
		}
	} else {
		var nf netlink.LinkNotFoundError
		if hs.uplink, err = h.LinkByName(dev); errors.As(err, &nf) {
			hs.uplink = nil
		} else if err != nil {
			return nil, fmt.Errorf("underlay device %s: %w", dev, err)
		} else {
			qs, err := writes.Dump("qdiscs", func() ([]netlink.Qdisc, error) { return h.QdiscList(hs.uplink) })
			if err != nil {
				return nil, fmt.Errorf("underlay device %s: %w", dev, err)
			}
			hs.root = htb.Root(qs, hs.uplink.Attrs().Index)
		}
	}
	if hs.root != nil && hs.root.Attrs().Handle == netlink.MakeHandle(QoSHandle, 0) {
		if hs.classes, err = htb.Classes(h, hs.uplink); err != nil {
			return nil, fmt.Errorf("underlay device %s: %w", hs.uplink.Attrs().Name, err)
		}
	}
	if hs.table, err = readQoSTable(c, hs); err != nil {
		return nil, fmt.Errorf("read table %s: %w", QoSTable, err)
	}
	return hs, nil
}

// convergeHostQoS programs the uplink's HTB tree and the host table after
// the VPCs' QoS, and sets every endpoint's QoSErr.
func (d *Driver) convergeHostQoS(p *qosPlan) error {
	err := p.err
	if err == nil {
		err = d.convergeHost(p)
	}
	d.smu.Lock()
	defer d.smu.Unlock()
	for _, st := range d.eps {
		st.status.QoSErr = ""
	}
	for vni, vp := range p.vpcs {
		for _, qe := range vp.eps {
			st := d.eps[qe.e.ID]
			if st == nil {
				continue
			}
			if e := errors.Join(err, p.vpcs[vni].err); e != nil {
				st.status.QoSErr = e.Error()
			}
		}
	}
	return err
}

func (d *Driver) convergeHost(p *qosPlan) error {
	var errs []error
	hs := p.host
	switch {
	case p.capacity > 0 && hs.uplink == nil:
		errs = append(errs, errors.New("qos: the host has a capacity but no underlay device to shape"))
	case hs.uplink != nil:
		var want []htb.Class
		if p.capacity > 0 {
			want = p.uplinkTree()
		}
		if err := htb.Converge(d.host, &d.ops, hs.uplink, hs.root, want, htb.DefaultMinor); err != nil {
			errs = append(errs, fmt.Errorf("qos: uplink: %w", err))
		}
	}
	if want := p.table(); !slices.Equal(want.contents(), hs.table) {
		c, err := d.nftHost()
		if err == nil {
			err = d.ops.Write(writes.QoSTable, func() error { return writeQoSTable(c, want, hs.table != nil) })
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("qos: table %s: %w", QoSTable, err))
		}
	}
	return errors.Join(errs...)
}

// teardownHostQoS removes our table and the uplink's HTB. It opens its own
// handles: Teardown works on a closed driver.
func (d *Driver) teardownHostQoS() error {
	ns, err := netns.GetFromPath(d.cfg.HostNetns)
	if err != nil {
		return fmt.Errorf("qos: open host netns: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("qos: netlink in host netns: %w", err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("qos: nftables in host netns: %w", err)
	}
	hs, err := readHostQoS(h, c, "")
	if err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	var errs []error
	if hs.root != nil {
		errs = append(errs, d.ops.Write(writes.QdiscDel, func() error { return h.QdiscDel(hs.root) }))
	}
	if hs.table != nil {
		errs = append(errs, d.ops.Write(writes.QoSTable, func() error { return writeQoSTable(c, nil, true) }))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	return nil
}

// The host table (family ip):
//
//	map eps  { (VNI . inner source address) : classid }    an endpoint's class
//	map dscp { classid : jump dscp-N }                     its outer DSCP
//	chain post { type filter hook postrouting priority mangle
//	  udp dport 4789 meta priority set (@th,96,24 . @th,336,32) map @eps meta priority vmap @dscp }
//	chain dscp-N { ip dscp set N }                         one per DSCP in use
//
// The VXLAN packets of every VPC namespace leave through the host
// namespace (their devices' sockets live there), encapsulated: the rule
// reads the VNI at 12 bytes into the outer UDP header and the inner source
// address at 42 (UDP 8 + VXLAN 8 + Ethernet 14 + 12). The priority it sets
// is the endpoint's class on the underlay device's HTB, which classifies
// by priority; the DSCP chain rewrites the outer header only (the ECN bits
// stay).
type qosTable struct {
	eps  []nftables.SetElement
	dscp []nftables.SetElement
	vals []uint8 // DSCP values in use, sorted
}

const (
	qosChain   = "post"
	qosEPMap   = "eps"
	qosDSCPMap = "dscp"
)

func dscpChain(v uint8) string { return "dscp-" + strconv.Itoa(int(v)) }

// table is the host table the plan wants (nil: none, no endpoint under QoS).
func (p *qosPlan) table() *qosTable {
	if len(p.eps) == 0 {
		return nil
	}
	t := &qosTable{}
	for _, qe := range p.eps {
		class := binary.NativeEndian.AppendUint32(nil, netlink.MakeHandle(QoSHandle, qe.minor))
		t.eps = append(t.eps, nftables.SetElement{Key: qosElemKey(qe.e.VNI, qe.e.IP), Val: class})
		if v := qe.own.DSCP; v != 0 {
			t.dscp = append(t.dscp, nftables.SetElement{Key: class, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: dscpChain(v)}})
			if !slices.Contains(t.vals, v) {
				t.vals = append(t.vals, v)
			}
		}
	}
	slices.Sort(t.vals)
	return t
}

// qosElemKey is the key of the endpoint map: the VNI in a 32-bit register
// (3 bytes, zero padded, as the payload expression loads them) and the
// IPv4 address.
func qosElemKey(vni uint32, ip netip.Addr) []byte {
	a := ip.As4()
	return []byte{byte(vni >> 16), byte(vni >> 8), byte(vni), 0, a[0], a[1], a[2], a[3]}
}

func qosTableRef() *nftables.Table {
	return &nftables.Table{Name: QoSTable, Family: nftables.TableFamilyIPv4}
}

func qosSets(t *nftables.Table) (eps, dscp *nftables.Set) {
	eps = &nftables.Set{Table: t, Name: qosEPMap, IsMap: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeInteger, nftables.TypeIPAddr), DataType: nftables.TypeClassID}
	dscp = &nftables.Set{Table: t, Name: qosDSCPMap, IsMap: true, KeyType: nftables.TypeClassID, DataType: nftables.TypeVerdict}
	return eps, dscp
}

func qosPostChain(t *nftables.Table) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Table: t, Name: qosChain, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle, Policy: &policy}
}

// qosPostRule is the one rule of the post chain.
func qosPostRule() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, VXLANPort)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 3},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 42, Len: 4},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: qosEPMap},
		&expr.Meta{Key: expr.MetaKeyPRIORITY, SourceRegister: true, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: qosDSCPMap},
	}
}

// qosDSCPRule writes DSCP v into the IPv4 header: the first two bytes are
// loaded, version, IHL and ECN kept, the DSCP replaced, the header
// checksum updated.
func qosDSCPRule(v uint8) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 2},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0x03}, Xor: []byte{0, v << 2}},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 2,
			CsumType: expr.CsumTypeInet, CsumOffset: 10},
	}
}

// contents renders the table as sorted lines, which is how a table read
// back from the kernel is compared with the one wanted.
func (t *qosTable) contents() []string {
	if t == nil {
		return nil
	}
	tb := qosTableRef()
	eps, dscp := qosSets(tb)
	out := []string{setLine(eps), setLine(dscp), chainLine(qosPostChain(tb)), ruleLine(qosChain, qosPostRule())}
	for _, e := range t.eps {
		out = append(out, elemLine(qosEPMap, e))
	}
	for _, e := range t.dscp {
		out = append(out, elemLine(qosDSCPMap, e))
	}
	for _, v := range t.vals {
		out = append(out, chainLine(&nftables.Chain{Name: dscpChain(v)}), ruleLine(dscpChain(v), qosDSCPRule(v)))
	}
	slices.Sort(out)
	return out
}

func setLine(s *nftables.Set) string {
	return fmt.Sprintf("set %s map=%t", s.Name, s.IsMap)
}

func chainLine(c *nftables.Chain) string {
	s := "chain " + c.Name
	if c.Hooknum != nil && c.Priority != nil {
		s += fmt.Sprintf(" hook=%d prio=%d type=%s", *c.Hooknum, *c.Priority, c.Type)
	}
	if c.Policy != nil {
		s += fmt.Sprintf(" policy=%d", *c.Policy)
	}
	return s
}

func ruleLine(chain string, exprs []expr.Any) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rule %s", chain)
	for _, e := range exprs {
		m, err := expr.Marshal(byte(nftables.TableFamilyIPv4), e)
		if err != nil {
			fmt.Fprintf(&b, " error(%v)", err)
			continue
		}
		fmt.Fprintf(&b, " %x", m)
	}
	return b.String()
}

func elemLine(set string, e nftables.SetElement) string {
	s := fmt.Sprintf("elem %s %x", set, e.Key)
	if e.VerdictData != nil {
		return s + fmt.Sprintf(" verdict=%d:%s", e.VerdictData.Kind, e.VerdictData.Chain)
	}
	return s + " " + hex.EncodeToString(e.Val)
}

// readQoSTable reads our table's contents (nil: no table), and fills hs's
// endpoint minors and DSCPs from its maps.
func readQoSTable(c *nftables.Conn, hs *hostQoS) ([]string, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == QoSTable }) {
		return nil, nil
	}
	tb := qosTableRef()
	out := []string{}
	sets, err := c.GetSets(tb)
	if err != nil {
		return nil, err
	}
	for _, s := range sets {
		out = append(out, setLine(s))
		s.Table = tb
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", s.Name, err)
		}
		for _, e := range elems {
			if s.Name == qosDSCPMap {
				e.VerdictData = decodeVerdict(e.Val)
			}
			out = append(out, elemLine(s.Name, e))
			switch {
			case s.Name == qosEPMap && len(e.Key) == 8 && len(e.Val) == 4:
				k := qosKey{vni: uint32(e.Key[0])<<16 | uint32(e.Key[1])<<8 | uint32(e.Key[2]), ip: netip.AddrFrom4([4]byte(e.Key[4:8]))}
				if class := binary.NativeEndian.Uint32(e.Val); class>>16 == QoSHandle {
					hs.minors[k] = uint16(class)
				}
			case s.Name == qosDSCPMap && len(e.Key) == 4 && e.VerdictData != nil:
				v, err := strconv.ParseUint(strings.TrimPrefix(e.VerdictData.Chain, "dscp-"), 10, 8)
				if class := binary.NativeEndian.Uint32(e.Key); err == nil && class>>16 == QoSHandle {
					hs.dscp[uint16(class)] = uint8(v)
				}
			}
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != QoSTable {
			continue
		}
		out = append(out, chainLine(ch))
		rules, err := c.GetRules(tb, ch)
		if err != nil {
			return nil, fmt.Errorf("chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			out = append(out, ruleLine(ch.Name, r.Exprs))
		}
	}
	slices.Sort(out)
	return out, nil
}

// decodeVerdict decodes the data of a verdict map element, which the
// library returns undecoded (the attributes of NFTA_DATA_VERDICT).
func decodeVerdict(b []byte) *expr.Verdict {
	ad, err := mdnetlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	ad.ByteOrder = binary.BigEndian
	v := &expr.Verdict{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind = expr.VerdictKind(int32(ad.Uint32()))
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil {
		return nil
	}
	return v
}

// writeQoSTable replaces our table with t (nil: deletes it) in one atomic
// batch.
func writeQoSTable(c *nftables.Conn, t *qosTable, exists bool) error {
	tb := qosTableRef()
	if exists {
		c.DelTable(tb)
	}
	if t != nil {
		c.AddTable(tb)
		eps, dscp := qosSets(tb)
		if err := c.AddSet(eps, t.eps); err != nil {
			return err
		}
		for _, v := range t.vals {
			ch := c.AddChain(&nftables.Chain{Table: tb, Name: dscpChain(v)})
			c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: qosDSCPRule(v)})
		}
		if err := c.AddSet(dscp, t.dscp); err != nil {
			return err
		}
		post := c.AddChain(qosPostChain(tb))
		c.AddRule(&nftables.Rule{Table: tb, Chain: post, Exprs: qosPostRule()})
	}
	return c.Flush()
}

// snapshotHostQoS is what Snapshot needs of the host: the classes and
// table, and the capacity the uplink is shaped at (bytes/s, 0: not shaped).
func (d *Driver) snapshotHostQoS() (*hostQoS, uint64, error) {
	c, err := d.nftHost()
	if err != nil {
		return nil, 0, err
	}
	hs, err := readHostQoS(d.host, c, "")
	if err != nil {
		return nil, 0, err
	}
	var capacity uint64
	if r := hs.classes[htb.RootMinor]; r != nil {
		capacity = r.Rate
	}
	return hs, capacity, nil
}

// enforcedQoS reconstructs an endpoint's QoS from the kernel: its cap from
// its class on the VPC's transmit ifb (tx, nil: not shaped), its minimum
// and priority from its class on the uplink, its DSCP from the host table.
func (hs *hostQoS) enforcedQoS(k qosKey, tx map[uint16]*netlink.HtbClass, capacity uint64) *datapath.QoS {
	m, ok := hs.minors[k]
	if !ok {
		return nil
	}
	q := datapath.QoS{DSCP: hs.dscp[m], Priority: datapath.BestEffortPriority}
	if c := tx[m]; c != nil && c.Ceil != htb.Unlimited {
		q.MaxRateBps = c.Ceil * 8
	}
	if c := hs.classes[m]; c != nil {
		q.Priority = int(c.Prio)
		if c.Rate != htb.Floor {
			q.MinRateBps = c.Rate * 8
		}
	}
	return q.Enforced(capacity * 8)
}
