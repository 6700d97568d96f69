package linux

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/netnsfile"
)

// probePayload is what a probe carries, so that a capture shows what it is.
const probePayload = "weft-trace probe"

// inject sends a trace's probe out of its source endpoint's interface,
// inside the endpoint's namespace, as the endpoint would: the router sees
// it arrive on the endpoint's veth like any packet the endpoint sends.
// The caller holds obs.mu.
func (d *Driver) inject(run *traceRun) error {
	d.smu.Lock()
	st := d.eps[run.t.Source]
	var nsPath, ifName string
	var mac net.HardwareAddr
	if st != nil {
		nsPath, ifName, mac = st.status.Netns, st.status.IfName, st.ep.MAC
	}
	d.smu.Unlock()
	if st == nil {
		return fmt.Errorf("endpoint %q is not programmed", run.t.Source)
	}
	frame := probeFrame(run.t, mac)
	return netnsfile.Do(nsPath, func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Protocol: htons(unix.ETH_P_IP)}
		copy(to.Addr[:], GatewayMAC())
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			return fmt.Errorf("send on %s: %w", ifName, err)
		}
		return nil
	})
}

// probeFrame builds a probe: an Ethernet frame to the gateway with an
// IPv4 packet whose identification is the trace's token, and an ICMP
// echo request (identifier = token), a UDP datagram or a TCP SYN.
func probeFrame(t datapath.Trace, src net.HardwareAddr) []byte {
	var l4 []byte
	switch t.Proto {
	case datapath.ProtoICMP:
		l4 = make([]byte, 8, 8+len(probePayload))
		l4[0] = 8 // echo request
		binary.BigEndian.PutUint16(l4[4:], t.Token)
		binary.BigEndian.PutUint16(l4[6:], 1)
		l4 = append(l4, probePayload...)
		binary.BigEndian.PutUint16(l4[2:], checksum(l4, 0))
	case datapath.ProtoUDP:
		l4 = make([]byte, 8, 8+len(probePayload))
		binary.BigEndian.PutUint16(l4[0:], t.SPort)
		binary.BigEndian.PutUint16(l4[2:], t.DPort)
		l4 = append(l4, probePayload...)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		sum := checksum(l4, pseudo(t, len(l4)))
		if sum == 0 {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], sum)
	default: // TCP SYN
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], t.SPort)
		binary.BigEndian.PutUint16(l4[2:], t.DPort)
		_, _ = rand.Read(l4[4:8]) // sequence number
		l4[12], l4[13] = 5<<4, 0x02
		binary.BigEndian.PutUint16(l4[14:], 64240)
		binary.BigEndian.PutUint16(l4[16:], checksum(l4, pseudo(t, len(l4))))
	}
	ip := make([]byte, 20, 20+len(l4))
	ip[0], ip[8], ip[9] = 0x45, 64, byte(t.Proto)
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], t.Token)
	s, dst := t.Src.As4(), t.Dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	frame := make([]byte, 14, 14+len(ip)+len(l4))
	copy(frame[0:6], GatewayMAC())
	copy(frame[6:12], src)
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	return append(append(frame, ip...), l4...)
}

// pseudo is the sum of the IPv4 pseudo header of a TCP or UDP segment.
func pseudo(t datapath.Trace, n int) uint32 {
	s, d := t.Src.As4(), t.Dst.As4()
	var sum uint32
	for _, b := range [][]byte{s[:], d[:]} {
		sum += uint32(binary.BigEndian.Uint16(b)) + uint32(binary.BigEndian.Uint16(b[2:]))
	}
	return sum + uint32(t.Proto) + uint32(n)
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
