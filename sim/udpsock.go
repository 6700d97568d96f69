package sim

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// udpSockets is what the kernel says about the UDP sockets bound to some
// local ports (every socket of a SO_REUSEPORT group): datagrams dropped
// because a socket's receive buffer was full, and bytes waiting in the
// receive queues.
type udpSockets struct {
	Drops  uint64
	Queued uint64
}

// readUDPSockets sums the drops and receive queues of the sockets in a
// /proc/net/udp (or udp6) table whose local port is in ports. Columns:
// sl local_address rem_address st tx_queue:rx_queue tr tm->when retrnsmt
// uid timeout inode ref pointer drops; addresses and queues in hex.
func readUDPSockets(r io.Reader, ports map[uint16]bool) (udpSockets, error) {
	var s udpSockets
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // the header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 13 {
			return s, fmt.Errorf("udp table: short line %q", sc.Text())
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return s, fmt.Errorf("udp table: local address %q", f[1])
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return s, fmt.Errorf("udp table: local port %q: %w", portHex, err)
		}
		if !ports[uint16(port)] {
			continue
		}
		_, rxHex, ok := strings.Cut(f[4], ":")
		if !ok {
			return s, fmt.Errorf("udp table: queues %q", f[4])
		}
		rx, err := strconv.ParseUint(rxHex, 16, 64)
		if err != nil {
			return s, fmt.Errorf("udp table: rx_queue %q: %w", rxHex, err)
		}
		drops, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			return s, fmt.Errorf("udp table: drops %q: %w", f[len(f)-1], err)
		}
		s.Queued += rx
		s.Drops += drops
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("udp table: %w", err)
	}
	return s, nil
}
