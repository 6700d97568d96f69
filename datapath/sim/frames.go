package sim

import (
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/internal/owned"
)

// The frames a capture records, synthesized (gopacket serializes them,
// lengths and checksums included) from what the model knows of a packet:
// its addresses and MACs, Packet's protocol, ports, ICMP type and size.

// gatewayMAC is the VPC router's MAC on every endpoint's link, the linux
// driver's.
var gatewayMAC = owned.GatewayMAC()

// wire is a packet on an endpoint's link.
type wire struct {
	srcMAC, dstMAC net.HardwareAddr
	src            netip.Addr // the destination is p.Dst
	p              Packet
	id             uint16 // the IP identification: a probe's token
	dscp           uint8
	// probe carries the probe's payload (a TCP SYN carries none);
	// otherwise zeros fill the packet to p.Bytes.
	probe bool
}

var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

// frame is w as an Ethernet frame; nil for what it cannot be (IPv6).
func (w *wire) frame() []byte {
	if !w.src.Is4() || !w.p.Dst.Is4() {
		return nil
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: w.dscp << 2, Id: w.id, TTL: 64, Protocol: layers.IPProtocol(w.p.Proto),
		SrcIP: w.src.AsSlice(), DstIP: w.p.Dst.AsSlice()}
	ls := []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: w.srcMAC, DstMAC: w.dstMAC, EthernetType: layers.EthernetTypeIPv4}, ip}
	size := 20
	var payload []byte
	switch w.p.Proto {
	case datapath.ProtoTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(w.p.SrcPort), DstPort: layers.TCPPort(w.p.DstPort), Seq: 1,
			SYN: !w.p.Midstream, ACK: w.p.Midstream, Window: 64240}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		ls, size = append(ls, tcp), size+20
	case datapath.ProtoUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(w.p.SrcPort), DstPort: layers.UDPPort(w.p.DstPort)}
		_ = udp.SetNetworkLayerForChecksum(ip)
		ls, size = append(ls, udp), size+8
		if w.probe {
			payload = []byte(probePayload)
		}
	case datapath.ProtoICMP:
		ls, size = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(w.p.ICMPType, w.p.ICMPCode), Id: w.id, Seq: 1}), size+8
		if w.probe {
			payload = []byte(probePayload)
		}
	}
	if fill := min(w.p.Bytes, 65535) - size - len(payload); fill > 0 {
		payload = append(payload, make([]byte, fill)...)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, append(ls, gopacket.Payload(payload))...); err != nil {
		return nil
	}
	return buf.Bytes()
}

// frame is the packet as it crosses the underlay: the inner frame (routed
// from the sending host's VXLAN device to the receiving host's, as the
// linux driver's are) in VXLAN-GBP (the sender's identity as the group
// policy ID; a probe with the D bit, the linux driver's trace mark) in UDP
// to port 4789.
func (a *arrival) frame() []byte {
	if !a.from.Is4() || !a.to.Is4() {
		return nil
	}
	inner := (&wire{srcMAC: hostMAC(0x77, a.from), dstMAC: hostMAC(0x77, a.to), src: a.src, p: a.p, id: a.token, dscp: a.dscp, probe: a.token != 0}).frame()
	if inner == nil {
		return nil
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: a.dscp << 2, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: a.from.AsSlice(), DstIP: a.to.AsSlice()}
	// The source port spreads flows, as the kernel's hash of the inner
	// header does.
	udp := &layers.UDP{SrcPort: layers.UDPPort(49152 + (a.p.SrcPort^a.p.DstPort^uint16(a.p.Proto))%16384), DstPort: 4789}
	_ = udp.SetNetworkLayerForChecksum(ip)
	vx := &layers.VXLAN{ValidIDFlag: true, VNI: a.vni, GBPExtension: true, GBPDontLearn: a.token != 0, GBPGroupPolicyID: uint16(a.identity)}
	eth := &layers.Ethernet{SrcMAC: hostMAC(0, a.from), DstMAC: hostMAC(0, a.to), EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, eth, ip, udp, vx, gopacket.Payload(inner)); err != nil {
		return nil
	}
	return buf.Bytes()
}

// hostMAC is a MAC of a simulated host, from its IPv4 underlay address:
// of its underlay interface (kind 0) or its VXLAN devices (0x77, as the
// linux driver's VTEP MACs).
func hostMAC(kind byte, ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, kind, b[0], b[1], b[2], b[3]}
}
