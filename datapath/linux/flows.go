package linux

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/netnsfile"
)

// The flow hooks: rules of the policy table (see "Flows and counters" in
// the package documentation) that count each endpoint's new TCP
// connections and keep a 1-in-N sample of flows with their packet and
// byte counts, and the reading of every counter the kernel keeps anyway
// (veth statistics, drop counters, qdisc drops, the namespace's SNMP
// counters) into a datapath.Traffic.

var _ datapath.TrafficReader = (*Driver)(nil)

// Names of the flow hooks' sets, maps and chains.
const (
	setEgressConns  = "egress_conns"  // { ifname counter }: SYNs sent by the endpoint
	setIngressConns = "ingress_conns" // { ifname counter }: SYNs sent to it
	setFlows        = "flows"         // { 5-tuple counter, timeout }: sampled flows
	setFlowsDropped = "flows_dropped" // the same, for their dropped packets
	flowSetSize     = 1 << 16         // flows a VPC's table holds at most

	// Verdict maps from the protocol to the flow chain of a direction.
	mapFlowOut  = "flow_out_protos"
	mapFlowIn   = "flow_in_protos"
	mapFlowDrop = "flow_drop_protos"

	chainFlowOutTCP  = "flow_out_tcp"  // count the connection, sample the flow
	chainFlowOutPort = "flow_out_port" // sample a UDP, SCTP or UDP-Lite flow
	chainFlowOutICMP = "flow_out_icmp"
	chainFlowInTCP   = "flow_in_tcp" // the same, arriving: sampled from the VXLAN device only
	chainFlowInPort  = "flow_in_port"
	chainFlowInICMP  = "flow_in_icmp"
	chainFlowDrop    = "flow_drop_port" // sample a dropped packet's flow
	chainFlowDropICM = "flow_drop_icmp"
)

// flowChains are the flow hooks' chains (none when sampling is 0), in the
// order their rules are listed.
func flowChains(sampling uint32) []string {
	if sampling == 0 {
		return nil
	}
	return []string{chainFlowOutTCP, chainFlowOutPort, chainFlowOutICMP, chainFlowInTCP, chainFlowInPort, chainFlowInICMP,
		chainFlowDrop, chainFlowDropICM}
}

// Registers of the flow key: source, destination, protocol, source port,
// destination port, one 32-bit word each; the hash after them.
var flowKeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetProto,
	nftables.TypeInetService, nftables.TypeInetService)

const flowKeyLen = 20

// flowHashSeed seeds the sampling hash. Every host must use the same (the
// kernel picks a random one when none is given), so that a flow sampled
// on its sender's host is sampled on its receiver's too.
const flowHashSeed = 0x77656674 // "weft"

// flowSets are the sets and maps of the flow hooks (none when sampling is
// 0).
func flowSets(t *nftables.Table, sampling uint32) []*nftables.Set {
	if sampling == 0 {
		return nil
	}
	flows := func(name string) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, Dynamic: true, Size: flowSetSize, KeyType: flowKeyType,
			Concatenation: true, HasTimeout: true, Timeout: datapath.FlowIdleTimeout}
	}
	protos := func(name string) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, Constant: true, IsMap: true, KeyType: nftables.TypeInetProto, DataType: nftables.TypeVerdict}
	}
	return []*nftables.Set{
		{Table: t, Name: setEgressConns, Dynamic: true, Size: 1 << 16, KeyType: nftables.TypeIFName},
		{Table: t, Name: setIngressConns, Dynamic: true, Size: 1 << 16, KeyType: nftables.TypeIFName},
		flows(setFlows), flows(setFlowsDropped),
		protos(mapFlowOut), protos(mapFlowIn), protos(mapFlowDrop),
	}
}

// flowProtoElems are the elements of a flow map: TCP, UDP, SCTP, UDP-Lite
// and ICMP to their chains (TCP to port when tcp is "").
func flowProtoElems(tcp, port, icmp string) []nftables.SetElement {
	if tcp == "" {
		tcp = port
	}
	el := func(proto byte, chain string) nftables.SetElement {
		return nftables.SetElement{Key: []byte{proto}, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
	}
	return []nftables.SetElement{el(unix.IPPROTO_TCP, tcp), el(unix.IPPROTO_UDP, port), el(unix.IPPROTO_SCTP, port),
		el(unix.IPPROTO_UDPLITE, port), el(unix.IPPROTO_ICMP, icmp)}
}

// flowMapElems are the elements of the flow hooks' maps, by map.
func flowMapElems() map[string][]nftables.SetElement {
	return map[string][]nftables.SetElement{
		mapFlowOut:  flowProtoElems(chainFlowOutTCP, chainFlowOutPort, chainFlowOutICMP),
		mapFlowIn:   flowProtoElems(chainFlowInTCP, chainFlowInPort, chainFlowInICMP),
		mapFlowDrop: flowProtoElems("", chainFlowDrop, chainFlowDropICM),
	}
}

// flowDispatch jumps to the flow chain of the packet's protocol in a flow
// map (and goes on when the map has none).
func flowDispatch(m string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: m},
	}
}

// flowKey loads a packet's flow key (datapath.FlowKey's order) into
// reg32(0..4): ports for protocols that have them, 0 and type.code for
// ICMP. The flow chain of the packet's protocol runs it: the protocol is
// known.
func flowKey(icmp bool) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32(2)},
	}
	if icmp {
		e = append(e,
			&expr.Immediate{Register: reg32(3), Data: ne32(0)},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(4), Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2})
	} else {
		e = append(e,
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(3), Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(4), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	}
	return append(e,
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(0), Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32(1), Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
}

// sampleInto counts the packet in set if its flow is sampled: 1 in
// sampling flows, by a Jenkins hash of the key, so that every packet of
// a flow, on every host, gets the same answer.
func sampleInto(set string, sampling uint32, icmp bool) []expr.Any {
	e := flowKey(icmp)
	if sampling > 1 {
		e = append(e,
			&expr.Hash{SourceRegister: reg32(0), DestRegister: reg32(5), Length: flowKeyLen, Modulus: sampling, Seed: flowHashSeed, Type: expr.HashTypeJenkins},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg32(5), Data: ne32(0)})
	}
	return append(e, &expr.Dynset{SrcRegKey: reg32(0), SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}})
}

// tcpSYN matches a TCP segment (the caller knows it is one) with SYN and
// without ACK, FIN or RST.
func tcpSYN() []expr.Any {
	const fin, syn, rst, ack = 0x01, 0x02, 0x04, 0x10
	return []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{fin | syn | rst | ack}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{syn}},
	}
}

// flowChainRules are the rules of the flow hooks' chains (flowChains'
// order). Egress samples every flow an endpoint sends; ingress only those
// arriving from the VXLAN device (a local sender's were sampled on its
// egress); both count the TCP connections.
func flowChainRules(sampling uint32) []baseRule {
	if sampling == 0 {
		return nil
	}
	n := strconv.FormatUint(uint64(sampling), 10)
	count := func(chain string, key expr.MetaKey, set, what string) baseRule {
		return baseRule{chain, "count " + what + " connections", append(tcpSYN(),
			&expr.Meta{Key: key, Register: reg1},
			&expr.Dynset{SrcRegKey: reg1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}},
		)}
	}
	fromVXLAN := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte(vxlanLinkPrefix)},
	}
	sample := func(chain, set string, from []expr.Any, icmp bool, what string) baseRule {
		kind := "port"
		if icmp {
			kind = "icmp"
		}
		return baseRule{chain, fmt.Sprintf("sample 1 in %s %s %s flows", n, what, kind), append(slices.Clone(from), sampleInto(set, sampling, icmp)...)}
	}
	return []baseRule{
		count(chainFlowOutTCP, expr.MetaKeyIIFNAME, setEgressConns, "egress"),
		sample(chainFlowOutTCP, setFlows, nil, false, "egress"),
		sample(chainFlowOutPort, setFlows, nil, false, "egress"),
		sample(chainFlowOutICMP, setFlows, nil, true, "egress"),
		count(chainFlowInTCP, expr.MetaKeyOIFNAME, setIngressConns, "ingress"),
		sample(chainFlowInTCP, setFlows, fromVXLAN, false, "ingress"),
		sample(chainFlowInPort, setFlows, fromVXLAN, false, "ingress"),
		sample(chainFlowInICMP, setFlows, fromVXLAN, true, "ingress"),
		sample(chainFlowDrop, setFlowsDropped, nil, false, "dropped"),
		sample(chainFlowDropICM, setFlowsDropped, nil, true, "dropped"),
	}
}

// Traffic implements datapath.TrafficReader: per endpoint, the router-side
// veth's statistics (what the endpoint sent, whether dropped or not, and
// what was delivered to it), its connection and policy drop counters;
// per VPC, the drops of its router (no route, MTU, its QoS ifbs); and the
// sampled flows. It takes the reconciler's lock (the tables' connections
// are the reconciler's): a long Set delays it.
func (d *Driver) Traffic(ctx context.Context) (*datapath.Traffic, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.smu.Lock()
	if d.closed {
		d.smu.Unlock()
		return nil, datapath.ErrClosed
	}
	vpcs := make([]*vpcNS, 0, len(d.vpcs))
	for _, vs := range d.vpcs {
		vpcs = append(vpcs, vs)
	}
	eps := make([]*datapath.Endpoint, 0, len(d.eps))
	for _, es := range d.eps {
		eps = append(eps, &es.ep)
	}
	d.smu.Unlock()
	slices.SortFunc(vpcs, func(a, b *vpcNS) int { return int(a.vni) - int(b.vni) })
	slices.SortFunc(eps, func(a, b *datapath.Endpoint) int { return strings.Compare(a.ID, b.ID) })

	t := &datapath.Traffic{At: time.Now(), Sampling: d.cfg.FlowSampling}
	byVeth := map[string]*datapath.EndpointTraffic{}
	t.Endpoints = make([]datapath.EndpointTraffic, len(eps))
	for i, e := range eps {
		t.Endpoints[i] = datapath.EndpointTraffic{ID: e.ID, VNI: e.VNI}
		byVeth[VethName(e.ID)] = &t.Endpoints[i]
	}
	var errs []error
	for _, vs := range vpcs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("linux traffic: %w", err)
		}
		vt, err := d.vpcTraffic(vs, byVeth, t)
		if err != nil {
			errs = append(errs, fmt.Errorf("vpc %d: %w", vs.vni, err))
		}
		t.VPCs = append(t.VPCs, vt)
	}
	if len(errs) > 0 {
		return t, fmt.Errorf("linux traffic: %w", joinErrs(errs))
	}
	return t, nil
}

func joinErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return fmt.Errorf("%w (and %d more)", errs[0], len(errs)-1)
}

// vpcTraffic reads one VPC namespace's counters into its endpoints' (by
// veth name) and t's flows, and returns the VPC's own.
func (d *Driver) vpcTraffic(vs *vpcNS, byVeth map[string]*datapath.EndpointTraffic, t *datapath.Traffic) (datapath.VPCTraffic, error) {
	vt := datapath.VPCTraffic{VNI: vs.vni}
	links, err := vs.h.LinkList()
	if err != nil {
		return vt, fmt.Errorf("list links: %w", err)
	}
	ifbs := map[int]bool{}
	for _, l := range links {
		a := l.Attrs()
		if a.Name == qosIfbTx || a.Name == qosIfbRx {
			ifbs[a.Index] = true
		}
		et := byVeth[a.Name]
		if et == nil || a.Statistics == nil {
			continue
		}
		s := a.Statistics
		et.SentPackets, et.SentBytes = s.RxPackets, s.RxBytes
		et.ReceivedPackets, et.ReceivedBytes = s.TxPackets, s.TxBytes
	}
	if len(ifbs) > 0 {
		qs, err := vs.h.QdiscList(nil)
		if err != nil {
			return vt, fmt.Errorf("list qdiscs: %w", err)
		}
		for _, q := range qs {
			if a := q.Attrs(); ifbs[a.LinkIndex] && a.Parent == netlink.HANDLE_ROOT && a.Statistics != nil && a.Statistics.Queue != nil {
				vt.Drops[datapath.DropQoS] += uint64(a.Statistics.Queue.Drops)
			}
		}
	}
	snmp, err := readSNMP(vs)
	if err != nil {
		return vt, err
	}
	vt.Drops[datapath.DropNoRoute] = snmp["Ip:OutNoRoutes"] + snmp["IpExt:InNoRoutes"]
	vt.Drops[datapath.DropMTU] = snmp["Ip:FragFails"]
	return vt, d.tableTraffic(vs, byVeth, t)
}

// tableTraffic reads the counters of the VPC's policy table.
func (d *Driver) tableTraffic(vs *vpcNS, byVeth map[string]*datapath.EndpointTraffic, t *datapath.Traffic) error {
	if vs.nft == nil {
		nc, err := newNftConn(vs.ns)
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		vs.nft = nc
	}
	tbl := ptable()
	counters := []struct {
		set string
		add func(*datapath.EndpointTraffic, *expr.Counter)
	}{
		{setEgressDrops, func(e *datapath.EndpointTraffic, c *expr.Counter) { e.Drops[datapath.DropPolicy] += c.Packets }},
		{setIngressDrops, func(e *datapath.EndpointTraffic, c *expr.Counter) { e.Drops[datapath.DropPolicy] += c.Packets }},
		{setEgressConns, func(e *datapath.EndpointTraffic, c *expr.Counter) { e.ConnsOut = c.Packets }},
		{setIngressConns, func(e *datapath.EndpointTraffic, c *expr.Counter) { e.ConnsIn = c.Packets }},
	}
	var flows, dropped []nftables.SetElement
	err := vs.nft.withDeadline(func() error {
		sets, err := vs.nft.GetSets(tbl)
		if err != nil {
			return fmt.Errorf("list sets: %w", err)
		}
		have := map[string]bool{}
		for _, s := range sets {
			have[s.Name] = true
		}
		for _, c := range counters {
			if !have[c.set] {
				continue
			}
			es, err := vs.nft.GetSetElements(&nftables.Set{Table: tbl, Name: c.set})
			if err != nil {
				return fmt.Errorf("list elements of %s: %w", c.set, err)
			}
			for _, e := range es {
				if et := byVeth[keyIfname(e.Key)]; et != nil && e.Counter != nil {
					c.add(et, e.Counter)
				}
			}
		}
		if !have[setFlows] {
			return nil
		}
		if flows, err = vs.nft.GetSetElements(&nftables.Set{Table: tbl, Name: setFlows, KeyType: flowKeyType}); err != nil {
			return fmt.Errorf("list sampled flows: %w", err)
		}
		if dropped, err = vs.nft.GetSetElements(&nftables.Set{Table: tbl, Name: setFlowsDropped, KeyType: flowKeyType}); err != nil {
			return fmt.Errorf("list sampled dropped flows: %w", err)
		}
		return nil
	})
	if err != nil {
		_ = vs.nft.CloseLasting()
		vs.nft = nil
		return err
	}
	drops := make(map[string]*expr.Counter, len(dropped))
	for _, e := range dropped {
		if e.Counter != nil {
			drops[string(e.Key)] = e.Counter
		}
	}
	for _, e := range flows {
		k, ok := parseFlowKey(vs.vni, e.Key)
		if !ok || e.Counter == nil {
			continue
		}
		f := datapath.FlowSample{FlowKey: k, Packets: e.Counter.Packets, Bytes: e.Counter.Bytes,
			Last: t.At.Add(e.Expires - datapath.FlowIdleTimeout)}
		if c := drops[string(e.Key)]; c != nil {
			f.Dropped, f.Reason = min(c.Packets, f.Packets), datapath.DropPolicy
			delete(drops, string(e.Key))
		}
		t.Flows = append(t.Flows, f)
	}
	for key, c := range drops { // dropped at ingress of a remote sender's flow: sampled here only
		if k, ok := parseFlowKey(vs.vni, []byte(key)); ok {
			t.Flows = append(t.Flows, datapath.FlowSample{FlowKey: k, Packets: c.Packets, Bytes: c.Bytes,
				Dropped: c.Packets, Reason: datapath.DropPolicy, Last: t.At})
		}
	}
	return nil
}

// parseFlowKey decodes a sampled flow's set key.
func parseFlowKey(vni uint32, b []byte) (datapath.FlowKey, bool) {
	if len(b) != flowKeyLen {
		return datapath.FlowKey{}, false
	}
	return datapath.FlowKey{
		VNI:     vni,
		Src:     netip.AddrFrom4([4]byte(b[0:4])),
		Dst:     netip.AddrFrom4([4]byte(b[4:8])),
		Proto:   datapath.Protocol(b[8]),
		SrcPort: binary.BigEndian.Uint16(b[12:14]),
		DstPort: binary.BigEndian.Uint16(b[16:18]),
	}, true
}

// readSNMP reads the namespace's IP counters (/proc/net/snmp and
// /proc/net/netstat, as seen from a thread inside it), as "Ip:OutNoRoutes"
// and the like.
func readSNMP(vs *vpcNS) (map[string]uint64, error) {
	m := map[string]uint64{}
	err := netnsfile.DoFd(int(vs.ns), func() error {
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			parseSNMP(b, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read IP counters: %w", err)
	}
	return m, nil
}

// parseSNMP reads the /proc/net/snmp format (a header line of names and
// a line of values per group) into m.
func parseSNMP(b []byte, m map[string]uint64) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	var names []string
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		if names == nil || names[0] != fs[0] {
			names = fs
			continue
		}
		for i := 1; i < len(fs) && i < len(names); i++ {
			if v, err := strconv.ParseUint(fs[i], 10, 64); err == nil {
				m[strings.TrimSuffix(fs[0], ":")+":"+names[i]] = v
			}
		}
		names = nil
	}
}
