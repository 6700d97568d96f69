package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/weftnet/weft/wire"
)

// recvBufSize is the size of one receive buffer: one byte more than the
// largest valid datagram, so that an oversized one is seen as such.
const recvBufSize = wire.MaxDatagramSize + 1

// packetIO reads and writes batches of datagrams on one UDP socket. One
// goroutine uses it at a time. Nothing in it allocates per datagram.
type packetIO interface {
	// recv blocks until at least one datagram is available and reads up
	// to the batch size; msg(i) then returns datagram i and its source.
	recv() (int, error)
	msg(i int) ([]byte, netip.AddrPort)
	// next returns an empty buffer (capacity wire.MaxDatagramSize) for an
	// outgoing datagram, or nil when the send batch is full; commit queues
	// the first n bytes of it for to (false: to is unreachable from this
	// socket). flush sends the queue without ever waiting for the socket:
	// what the kernel refuses is dropped.
	next() []byte
	commit(n int, to netip.AddrPort) bool
	flush() (sent, dropped int)
	close() error
}

// singleIO is the portable packetIO: one recvmsg and one sendmsg per
// datagram (net.UDPConn's allocation-free AddrPort methods).
type singleIO struct {
	conn *net.UDPConn
	rbuf []byte
	rn   int
	from netip.AddrPort

	sbuf [][]byte
	sto  []netip.AddrPort
	sn   int
}

func newSingleIO(conn *net.UDPConn, sendBatch int) *singleIO {
	s := &singleIO{conn: conn, rbuf: make([]byte, recvBufSize),
		sbuf: make([][]byte, sendBatch), sto: make([]netip.AddrPort, sendBatch)}
	for i := range s.sbuf {
		s.sbuf[i] = make([]byte, 0, wire.MaxDatagramSize)
	}
	return s
}

func (s *singleIO) recv() (int, error) {
	n, _, _, from, err := s.conn.ReadMsgUDPAddrPort(s.rbuf, nil)
	if err != nil {
		return 0, err
	}
	s.rn, s.from = n, from
	return 1, nil
}

func (s *singleIO) msg(int) ([]byte, netip.AddrPort) { return s.rbuf[:s.rn], s.from }

func (s *singleIO) next() []byte {
	if s.sn == len(s.sbuf) {
		return nil
	}
	return s.sbuf[s.sn][:0]
}

func (s *singleIO) commit(n int, to netip.AddrPort) bool {
	s.sbuf[s.sn] = s.sbuf[s.sn][:n]
	s.sto[s.sn] = to
	s.sn++
	return true
}

func (s *singleIO) flush() (sent, dropped int) {
	for i := 0; i < s.sn; i++ {
		if _, err := s.conn.WriteToUDPAddrPort(s.sbuf[i], s.sto[i]); err != nil {
			dropped++
		} else {
			sent++
		}
	}
	s.sn = 0
	return sent, dropped
}

func (s *singleIO) close() error { return s.conn.Close() }

// listen opens n UDP sockets on addr; more than one share the port with
// SO_REUSEPORT, so the kernel spreads the flows over them. recvBuf sets
// SO_RCVBUF (0: the system default).
func listen(ctx context.Context, addr string, n, recvBuf int) ([]*net.UDPConn, error) {
	if n > 1 && !reusePortSupported {
		n = 1
	}
	lc := net.ListenConfig{Control: socketControl(n > 1, recvBuf)}
	var conns []*net.UDPConn
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return fail(fmt.Errorf("listen udp %s (socket %d of %d): %w", addr, i+1, n, err))
		}
		c, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return fail(errors.New("listen udp: not a UDP socket"))
		}
		conns = append(conns, c)
		if i == 0 {
			// The next sockets join the port the first one got.
			addr = c.LocalAddr().String()
		}
	}
	return conns, nil
}
