//go:build !linux

package udp

import (
	"net"
	"syscall"
)

const reusePortSupported = false

func socketControl(shared bool, recvBuf int) func(network, address string, c syscall.RawConn) error {
	return nil
}

// newPacketIO returns the portable packetIO: batching needs Linux.
func newPacketIO(conn *net.UDPConn, batch int) (packetIO, error) {
	return newSingleIO(conn, 64), nil
}
