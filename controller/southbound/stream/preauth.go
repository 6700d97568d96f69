package stream

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
)

// preAuth bounds the connections that have not shown an authentic Hello
// yet, in total and per source address. A connection past the limit of its
// source is refused; past the total, the oldest unauthenticated connection
// (whatever its source) is closed to make room, so that idle connections
// cannot keep a newcomer out: they live at most HandshakeTimeout, and a
// flood of them must renew them faster than real agents send their Hellos
// (a round trip) to push those out.
type preAuth struct {
	max, perSource int

	mu       sync.Mutex
	conns    list.List // of *pending, oldest first
	bySource map[netip.Addr]int
}

// pending is one connection waiting for its Hello.
type pending struct {
	nc  net.Conn
	src netip.Addr
	el  *list.Element // nil once done or evicted
}

func newPreAuth(max, perSource int) *preAuth {
	return &preAuth{max: max, perSource: perSource, bySource: map[netip.Addr]int{}}
}

// admit registers nc. It returns nil if nc's source is at its limit (the
// caller closes nc); it reports how many older connections it closed to
// stay within the total.
func (p *preAuth) admit(nc net.Conn) (pc *pending, evicted int) {
	pc = &pending{nc: nc, src: sourceOf(nc)}
	var victims []net.Conn
	p.mu.Lock()
	if p.bySource[pc.src] >= p.perSource {
		p.mu.Unlock()
		return nil, 0
	}
	for p.conns.Len() >= p.max {
		old := p.conns.Remove(p.conns.Front()).(*pending)
		p.forgetLocked(old)
		victims = append(victims, old.nc)
	}
	pc.el = p.conns.PushBack(pc)
	p.bySource[pc.src]++
	p.mu.Unlock()
	for _, c := range victims {
		c.Close() // its handshake read fails: the handler cleans up
	}
	return pc, len(victims)
}

// done ends pc's wait (its Hello verified, or it failed).
func (p *preAuth) done(pc *pending) {
	p.mu.Lock()
	if pc.el != nil {
		p.conns.Remove(pc.el)
		p.forgetLocked(pc)
	}
	p.mu.Unlock()
}

func (p *preAuth) forgetLocked(pc *pending) {
	pc.el = nil
	if n := p.bySource[pc.src]; n > 1 {
		p.bySource[pc.src] = n - 1
	} else {
		delete(p.bySource, pc.src)
	}
}

// len returns the number of connections waiting.
func (p *preAuth) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns.Len()
}

// sourceOf is the remote IP address of nc (the zero Addr if it has none).
func sourceOf(nc net.Conn) netip.Addr {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
