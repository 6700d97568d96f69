//go:build linux

package udp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/wire"
)

const reusePortSupported = true

// socketControl sets SO_REUSEPORT (if shared) and the receive buffer size
// on a socket before it binds. SO_RCVBUFFORCE lifts net.core.rmem_max when
// the process may (CAP_NET_ADMIN); otherwise SO_RCVBUF gets what the
// system allows.
func socketControl(shared bool, recvBuf int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if shared {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
					serr = fmt.Errorf("set SO_REUSEPORT: %w", err)
					return
				}
			}
			if recvBuf > 0 {
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuf) != nil {
					_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuf)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// newPacketIO returns the recvmmsg/sendmmsg packetIO for batches above 1,
// the portable one otherwise.
func newPacketIO(conn *net.UDPConn, batch int) (packetIO, error) {
	if batch <= 1 {
		return newSingleIO(conn, 64), nil
	}
	return newMmsgIO(conn, batch)
}

// mmsgIO reads with recvmmsg and writes with sendmmsg, called directly
// through the socket's RawConn on preallocated headers, iovecs, address
// and data buffers. (golang.org/x/net/ipv4's ReadBatch does the same
// syscall but allocates a net.UDPAddr per datagram.) Both calls use
// MSG_DONTWAIT: a read that finds nothing parks in the runtime poller, a
// write that finds the socket full drops rather than waits.
type mmsgIO struct {
	conn   *net.UDPConn
	raw    syscall.RawConn
	family uint16 // of the socket: AF_INET or AF_INET6

	rhdr  []unix.Mmsghdr
	riov  []unix.Iovec
	rname []unix.RawSockaddrInet6
	rbuf  []byte
	rn    int
	rerr  error
	rfunc func(fd uintptr) bool

	shdr  []unix.Mmsghdr
	siov  []unix.Iovec
	sname []unix.RawSockaddrInet6
	sbuf  []byte
	sn    int // queued
	soff  int // sent so far in flush
	sres  int
	serr  syscall.Errno
	sfunc func(fd uintptr) bool
}

func newMmsgIO(conn *net.UDPConn, batch int) (*mmsgIO, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	m := &mmsgIO{conn: conn, raw: raw, family: unix.AF_INET}
	var ferr error
	if err := raw.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			ferr = err
			return
		}
		if _, ok := sa.(*unix.SockaddrInet6); ok {
			m.family = unix.AF_INET6
		}
	}); err != nil || ferr != nil {
		return nil, fmt.Errorf("udp socket: getsockname: %w", firstErr(err, ferr))
	}
	m.rhdr = make([]unix.Mmsghdr, batch)
	m.riov = make([]unix.Iovec, batch)
	m.rname = make([]unix.RawSockaddrInet6, batch)
	m.rbuf = make([]byte, batch*recvBufSize)
	for i := range m.rhdr {
		m.riov[i].Base = &m.rbuf[i*recvBufSize]
		m.riov[i].SetLen(recvBufSize)
		h := &m.rhdr[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.rname[i]))
		h.Iov = &m.riov[i]
		h.SetIovlen(1)
	}
	m.shdr = make([]unix.Mmsghdr, batch)
	m.siov = make([]unix.Iovec, batch)
	m.sname = make([]unix.RawSockaddrInet6, batch)
	m.sbuf = make([]byte, batch*wire.MaxDatagramSize)
	for i := range m.shdr {
		m.siov[i].Base = &m.sbuf[i*wire.MaxDatagramSize]
		h := &m.shdr[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.sname[i]))
		h.Iov = &m.siov[i]
		h.SetIovlen(1)
	}
	m.rfunc = m.doRecv
	m.sfunc = m.doSend
	return m, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *mmsgIO) recv() (int, error) {
	for i := range m.rhdr {
		m.rhdr[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		m.rhdr[i].Hdr.Flags = 0
		m.rhdr[i].Len = 0
	}
	m.rn, m.rerr = 0, nil
	if err := m.raw.Read(m.rfunc); err != nil {
		return 0, err
	}
	return m.rn, m.rerr
}

// doRecv runs recvmmsg once; false asks the poller to wait for data.
func (m *mmsgIO) doRecv(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.rhdr[0])),
			uintptr(len(m.rhdr)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			m.rn = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			m.rerr = errno
			return true
		}
	}
}

func (m *mmsgIO) msg(i int) ([]byte, netip.AddrPort) {
	off := i * recvBufSize
	data := m.rbuf[off : off+int(m.rhdr[i].Len)]
	return data, sockaddrToAddrPort(&m.rname[i])
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	}
	return netip.AddrPort{}
}

// putSockaddr encodes to for a socket of the given family and returns the
// address length, or 0 if the family cannot reach it.
func putSockaddr(sa *unix.RawSockaddrInet6, family uint16, to netip.AddrPort) uint32 {
	ip := to.Addr()
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	if family == unix.AF_INET {
		ip = ip.Unmap()
		if !ip.Is4() {
			return 0
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.As4()}
		binary.BigEndian.PutUint16(port[:], to.Port())
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
	binary.BigEndian.PutUint16(port[:], to.Port())
	return unix.SizeofSockaddrInet6
}

func (m *mmsgIO) next() []byte {
	if m.sn == len(m.shdr) {
		return nil
	}
	off := m.sn * wire.MaxDatagramSize
	return m.sbuf[off : off : off+wire.MaxDatagramSize]
}

func (m *mmsgIO) commit(n int, to netip.AddrPort) bool {
	l := putSockaddr(&m.sname[m.sn], m.family, to)
	if l == 0 {
		return false // unreachable from this socket
	}
	m.shdr[m.sn].Hdr.Namelen = l
	m.siov[m.sn].SetLen(n)
	m.sn++
	return true
}

func (m *mmsgIO) flush() (sent, dropped int) {
	for m.soff = 0; m.soff < m.sn; {
		m.sres, m.serr = 0, 0
		if err := m.raw.Write(m.sfunc); err != nil {
			break
		}
		switch {
		case m.serr == unix.EAGAIN || m.serr == unix.ENOBUFS:
			// The socket is full: drop the rest rather than wait.
			m.soff = m.sn
		case m.serr != 0:
			// The first datagram failed (e.g. no route): skip it.
			dropped++
			m.soff++
		default:
			sent += m.sres
			m.soff += m.sres
		}
	}
	dropped = m.sn - sent
	m.sn = 0
	return sent, dropped
}

// doSend runs sendmmsg once and never asks the poller to wait.
func (m *mmsgIO) doSend(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.shdr[m.soff])),
			uintptr(m.sn-m.soff), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		m.sres, m.serr = int(n), errno
		return true
	}
}

func (m *mmsgIO) close() error { return m.conn.Close() }
