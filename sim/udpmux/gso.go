package udpmux

import (
	"encoding/binary"
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18): one
// sendmsg hands the kernel several datagrams for one destination, of one
// size, in one buffer; it builds and routes them as one, and splits them
// into the very same datagrams separate sends would make, at the latest
// on the receiving socket. A mux sends the heartbeats of a batch
// going to one controller address this way: over loopback, where `weft
// sim` runs, this costs a sixth of the kernel time sendmmsg spends on
// each datagram. The receiver sees no difference (it does not enable
// UDP_GRO).

// Bounds of one segmented send: the kernel's UDP_MAX_SEGMENTS (64 up to
// Linux 6.8), and the largest UDP payload, rounded down.
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 65000
)

// gsoSupported reports whether the kernel knows UDP_SEGMENT on conn.
func gsoSupported(conn *net.UDPConn) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return false
	}
	return serr == nil
}

// gsoControl returns the control message that asks for datagrams of size
// bytes, written into b (which it grows if needed).
func gsoControl(b []byte, size uint16) []byte {
	n := unix.CmsgSpace(2)
	if cap(b) < n {
		b = make([]byte, n)
	}
	b = b[:n]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return b
}

// gsoRefused reports whether a send failed because the kernel cannot
// segment it: EIO (the route's device has no checksum offload), or
// EINVAL, ENOPROTOOPT, EOPNOTSUPP (no UDP_SEGMENT for this socket or
// route).
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP)
}
