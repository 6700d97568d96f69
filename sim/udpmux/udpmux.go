// Package udpmux is the simulator's UDP transport for agents: one socket
// shared by the agents of a process (package agent's Transport), with a
// timing wheel that schedules their heartbeats and UDP segmentation offload
// that sends them in batches. A real agent has its host to itself and
// binds its own socket (package agent); this is what lets one process run
// thousands of simulated hosts.
package udpmux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// readBuffer is the receive buffer a mux asks for.
const readBuffer = 4 << 20

// Defaults of the Config fields.
const (
	DefaultHeartbeatBatchWindow = 10 * time.Millisecond
	DefaultMaxHeartbeatBatch    = 64
)

// Config configures a Mux.
type Config struct {
	// Listen is the local UDP address to bind (host:port; default: any
	// IPv4 address, an ephemeral port).
	Listen string
	// HeartbeatBatchWindow is how early a heartbeat may leave so that it
	// shares a batch (one sendmmsg) with others falling due (default
	// 10 ms; it must stay far below the heartbeat interval).
	HeartbeatBatchWindow time.Duration
	// MaxHeartbeatBatch bounds the heartbeats of one batch (default 64).
	MaxHeartbeatBatch int
	// Logger receives the mux's logs (default: discarded).
	Logger *slog.Logger
}

// Mux is a UDP socket shared by the agents of one process (an
// agent.Transport), with the two loops that serve it: a reader, which
// authenticates each datagram with the key of the host its header names
// and hands it to that host's agent, and a heartbeat scheduler, which sends
// every member's heartbeats on time, those falling due within
// HeartbeatBatchWindow of each other in one batch: one sendmmsg, in which
// the heartbeats to one address are one message segmented by the kernel
// (UDP GSO, gso.go) where it offers it. The schedule is a timing wheel
// (hbwheel.go): O(1) per heartbeat.
//
// One socket, one table of replay windows and two goroutines serve all
// the members, instead of a socket, a Verifier and two goroutines per
// agent. Each member keeps its own host ID, key, sequence numbers and
// controller address, so the datagrams are those separate sockets would
// send, from one source address; the controller answers to the address a
// host's datagrams come from, and the reader demultiplexes the answers by
// host ID. Members that join spread their first heartbeats over their
// interval, as hosts that did not start together would, so that agents
// started at once do not all heartbeat in the same few milliseconds of
// every interval.
//
// Build it with New, Start it, pass it to agents in
// agent.Config.Transport, and Close it after closing them.
type Mux struct {
	cfg      Config
	log      *slog.Logger
	verifier *wire.Verifier

	conn     *net.UDPConn
	batchOut *ipv4.PacketConn // sendmmsg; nil if the socket is not IPv4
	// gso: a batch's heartbeats to one address leave as one segmented
	// datagram (gso.go). Set by Start; then only the heartbeat loop
	// uses it, and turns it off if the kernel refuses a send.
	gso bool

	// mu guards byID and the members' joined flags. The reader holds it
	// (read) while an agent handles a datagram, so an agent that leaves
	// gets no datagram afterwards. Lock order: mu before an agent's own
	// locks.
	mu   sync.RWMutex
	byID map[uint32]*member

	// hbMu guards the heartbeat schedule and the members' dead flags.
	hbMu   sync.Mutex
	hb     *hbWheel
	hbWake chan struct{}
	// batchMu is held while a batch of heartbeats is built and sent, so an
	// agent that leaves sends no heartbeat afterwards.
	batchMu sync.Mutex

	rejected atomic.Uint64 // datagrams for no member

	life lifecycle.Group
}

var _ agent.Transport = (*Mux)(nil)

// member is an agent in a Mux: its agent.Membership, and its entry in the
// heartbeat schedule. An agent that leaves and joins again gets a new one.
type member struct {
	mux    *Mux
	a      agent.Member
	joined bool // in the mux (Mux.mu)
	dead   bool // left: dropped from the schedule when its slot comes (Mux.hbMu)
}

// New validates cfg and returns a mux that is not started.
func New(cfg Config) (*Mux, error) {
	if cfg.HeartbeatBatchWindow < 0 || cfg.MaxHeartbeatBatch < 0 {
		return nil, errors.New("udpmux: config: negative HeartbeatBatchWindow or MaxHeartbeatBatch")
	}
	if cfg.HeartbeatBatchWindow == 0 {
		cfg.HeartbeatBatchWindow = DefaultHeartbeatBatchWindow
	}
	if cfg.MaxHeartbeatBatch == 0 {
		cfg.MaxHeartbeatBatch = DefaultMaxHeartbeatBatch
	}
	if cfg.Listen == "" {
		cfg.Listen = "0.0.0.0:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mux{cfg: cfg, log: cfg.Logger.With("subsystem", "udpmux"), byID: map[uint32]*member{},
		hbWake: make(chan struct{}, 1), hb: newHBWheel(time.Now(), cfg.HeartbeatBatchWindow)}
	var err error
	m.verifier, err = wire.NewVerifier(wire.VerifierConfig{
		// Controller → host datagrams carry the receiving host's ID: only
		// a member's is accepted, with that member's key.
		Keyring: wire.KeyringFunc(func(id uint32) ([]byte, bool) {
			e := m.byID[id] // the reader holds mu
			if e == nil {
				return nil, false
			}
			k := e.a.DatagramKey()
			return k, k != nil
		}),
		Accept: wire.ToAgent,
	})
	if err != nil {
		return nil, fmt.Errorf("udpmux: %w", err)
	}
	return m, nil
}

// Start binds the socket and starts the reader and the heartbeat
// scheduler, which run until Close. ctx is not used: binding does not
// block.
func (m *Mux) Start(context.Context) error {
	if _, err := m.life.Start(); err != nil {
		return fmt.Errorf("udpmux: %w", err)
	}
	laddr, err := net.ResolveUDPAddr("udp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("udpmux: resolve UDP listen address %q: %w", m.cfg.Listen, err)
	}
	network := "udp4"
	if laddr.IP != nil && laddr.IP.To4() == nil {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, laddr)
	if err != nil {
		return fmt.Errorf("udpmux: bind UDP socket: %w", err)
	}
	// Many hosts' answers arrive here: ask for a deep receive queue (the
	// system may grant less; a lost answer is retried).
	_ = conn.SetReadBuffer(readBuffer)
	m.conn = conn
	if ap := conn.LocalAddr().(*net.UDPAddr).AddrPort(); ap.Addr().Unmap().Is4() && m.cfg.MaxHeartbeatBatch > 1 {
		m.batchOut = ipv4.NewPacketConn(conn)
		m.gso = gsoSupported(conn)
	}
	m.life.Go(m.readLoop)
	m.life.Go(m.heartbeatLoop)
	return nil
}

// Close stops the loops, closes the socket and waits for the loops. It is
// idempotent. Members still joined can no longer send.
func (m *Mux) Close() error {
	return m.life.Close(func() error {
		if m.conn != nil {
			m.conn.Close()
		}
		return nil
	})
}

// LocalAddr implements agent.Transport (nil before Start).
func (m *Mux) LocalAddr() net.Addr {
	if m.conn == nil {
		return nil
	}
	return m.conn.LocalAddr()
}

// Rejected is the number of datagrams that named no member. (Those that
// fail for a member count in its agent's Stats.DatagramsRejected.)
func (m *Mux) Rejected() uint64 { return m.rejected.Load() }

// Send implements agent.Transport.
func (m *Mux) Send(pkt []byte, to netip.AddrPort) error {
	_, err := m.conn.WriteToUDPAddrPort(pkt, to)
	return err
}

// Join implements agent.Transport: a's first heartbeat falls at a random
// point of its first interval.
func (m *Mux) Join(a agent.Member) agent.Membership {
	e := &member{mux: m, a: a, joined: true}
	if id := a.HostID(); id != 0 {
		e.SetHostID(0, id)
	}
	m.hbMu.Lock()
	m.hb.push(e, m.hb.now()+int64(rand.N(a.HeartbeatInterval())))
	m.hbMu.Unlock()
	select {
	case m.hbWake <- struct{}{}:
	default:
	}
	return e
}

// Leave implements agent.Membership.
func (e *member) Leave() {
	m := e.mux
	m.hbMu.Lock()
	e.dead = true
	m.hbMu.Unlock()
	m.batchMu.Lock() // wait out a batch that may hold e
	//lint:ignore SA2001 an empty critical section is the point
	m.batchMu.Unlock()
	m.mu.Lock()
	e.joined = false
	if id := e.a.HostID(); id != 0 && m.byID[id] == e {
		delete(m.byID, id)
		m.verifier.Forget(id)
	}
	m.mu.Unlock()
}

// SetHostID implements agent.Membership.
func (e *member) SetHostID(old, id uint32) {
	m := e.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	if old != 0 && m.byID[old] == e {
		delete(m.byID, old)
		m.verifier.Forget(old)
	}
	if id != 0 && e.joined {
		if cur := m.byID[id]; cur != nil && cur != e {
			m.log.Error("two agents of one UDP mux claim one host ID; the later one wins", "host_id", id)
		}
		m.byID[id] = e
	}
}

// readLoop reads the datagrams the controller sends to the members: lookup
// replies, invalidations and heartbeat acks. Each is authenticated with the
// key of the host it names and checked against that host's replay window
// before it is decoded; anything else is counted and dropped.
func (m *Mux) readLoop(ctx context.Context) {
	buf := make([]byte, wire.MaxDatagramSize+1)
	var sc agent.DatagramScratch
	for {
		n, _, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("read UDP", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		m.dispatch(buf[:n], &sc)
	}
}

func (m *Mux) dispatch(pkt []byte, sc *agent.DatagramScratch) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	hdr, body, err := m.verifier.Open(pkt)
	if err != nil {
		if h, perr := wire.ParseHeader(pkt); perr == nil && m.byID[h.HostID] != nil {
			m.byID[h.HostID].a.RejectDatagram(err)
			return
		}
		m.rejected.Add(1)
		m.log.Debug("datagram rejected", "err", err)
		return
	}
	if e := m.byID[hdr.HostID]; e != nil {
		e.a.HandleDatagram(hdr, body, sc)
	}
}

// heartbeatLoop sends each member's heartbeat every HeartbeatInterval of
// that member, starting when it joins; heartbeats due within the batch
// window leave together.
func (m *Mux) heartbeatLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	b := newHBBatch(m.cfg.MaxHeartbeatBatch, m.batchOut != nil)
	for {
		m.hbMu.Lock()
		var wait time.Duration = -1
		if due, ok := m.hb.next(); ok {
			wait = max0(time.Until(m.hb.at(due)))
		}
		m.hbMu.Unlock()
		if wait < 0 {
			timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.hbWake:
			continue
		case <-timer.C:
		}
		m.sendDue(b)
	}
}

func max0(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

// hbBatch is the heartbeat scheduler's reusable buffers.
type hbBatch struct {
	due     []hbBeat // members whose heartbeat is due
	hb      wire.Heartbeat
	bufs    [][]byte
	pkts    [][]byte
	to      []netip.AddrPort
	senders []agent.Member // of pkts
	// sendmmsg
	msgs  []ipv4.Message
	addrs []net.UDPAddr
	ips   [][4]byte
	// GSO: the packets grouped by destination and size, and each group's
	// control message
	groups []hbGroup
	oob    [][]byte
}

// hbGroup is the heartbeats of a batch that leave in one segmented send.
type hbGroup struct {
	to   netip.AddrPort
	size int   // of each datagram
	pkts []int // indexes in hbBatch.pkts
	buf  []byte
}

func newHBBatch(n int, mmsg bool) *hbBatch {
	b := &hbBatch{due: make([]hbBeat, 0, n), bufs: make([][]byte, n), pkts: make([][]byte, 0, n),
		to: make([]netip.AddrPort, 0, n), senders: make([]agent.Member, 0, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, 0, wire.MaxDatagramSize)
	}
	if mmsg {
		b.msgs = make([]ipv4.Message, n)
		b.addrs = make([]net.UDPAddr, n)
		b.ips = make([][4]byte, n)
		for i := range b.msgs {
			b.msgs[i].Buffers = make([][]byte, 1)
		}
		b.groups = make([]hbGroup, n)
		b.oob = make([][]byte, n)
	}
	return b
}

// sendDue sends every heartbeat due within the batch window, in batches.
func (m *Mux) sendDue(b *hbBatch) {
	m.batchMu.Lock()
	defer m.batchMu.Unlock()
	for {
		m.hbMu.Lock()
		now := m.hb.now()
		b.due = m.hb.popDue(now+int64(m.cfg.HeartbeatBatchWindow), cap(b.due), b.due[:0])
		for _, x := range b.due {
			// Keep the member's phase; skip the beats missed while late
			// (as a time.Ticker does).
			iv := int64(x.e.a.HeartbeatInterval())
			due := x.due + iv
			if due < now {
				due = now + iv - (now-due)%iv
			}
			m.hb.push(x.e, due)
		}
		m.hbMu.Unlock()
		if len(b.due) == 0 {
			return
		}
		b.pkts, b.to, b.senders = b.pkts[:0], b.to[:0], b.senders[:0]
		for _, x := range b.due {
			a := x.e.a
			if pkt, to, ok := a.AppendHeartbeat(b.bufs[len(b.pkts)][:0], &b.hb); ok {
				b.pkts = append(b.pkts, pkt)
				b.to = append(b.to, to)
				b.senders = append(b.senders, a)
			}
		}
		m.write(b)
		if len(b.due) < cap(b.due) {
			return
		}
	}
}

// write sends the batch's packets, counting each one sent on its sender.
func (m *Mux) write(b *hbBatch) {
	if m.batchOut == nil || len(b.pkts) == 1 {
		for i, pkt := range b.pkts {
			if err := m.Send(pkt, b.to[i]); err != nil {
				m.log.Debug("send heartbeat", "err", err)
				continue
			}
			b.senders[i].HeartbeatSent()
		}
		return
	}
	if m.gso && m.writeGSO(b) {
		return
	}
	msgs := b.msgs[:len(b.pkts)]
	for i, pkt := range b.pkts {
		b.ips[i] = b.to[i].Addr().Unmap().As4()
		b.addrs[i] = net.UDPAddr{IP: b.ips[i][:], Port: int(b.to[i].Port())}
		msgs[i].Buffers[0] = pkt
		msgs[i].OOB = nil
		msgs[i].Addr = &b.addrs[i]
	}
	for i := 0; i < len(msgs); {
		n, err := m.batchOut.WriteBatch(msgs[i:], 0)
		n = max(n, 0) // -1 when the first message fails
		for _, a := range b.senders[i : i+n] {
			a.HeartbeatSent()
		}
		i += n
		if err != nil || n == 0 {
			m.log.Debug("send heartbeats", "err", err, "batch", len(msgs)-i)
			i++ // drop the datagram that failed
		}
	}
}

// writeGSO sends the batch's packets in one sendmmsg, those to one address
// (of one size) in one segmented message, and reports true. If the kernel
// refuses segmentation, it turns GSO off, leaves in b the packets not yet
// sent and reports false: write sends them one by one.
func (m *Mux) writeGSO(b *hbBatch) bool {
	ng := 0
	for i, pkt := range b.pkts {
		g := -1
		for j := range ng {
			if gr := &b.groups[j]; gr.to == b.to[i] && gr.size == len(pkt) &&
				len(gr.pkts) < gsoMaxSegments && len(gr.buf)+len(pkt) <= gsoMaxBytes {
				g = j
				break
			}
		}
		if g < 0 {
			g, ng = ng, ng+1
			gr := &b.groups[g]
			gr.to, gr.size, gr.pkts, gr.buf = b.to[i], len(pkt), gr.pkts[:0], gr.buf[:0]
		}
		gr := &b.groups[g]
		gr.pkts = append(gr.pkts, i)
		gr.buf = append(gr.buf, pkt...)
	}
	msgs := b.msgs[:ng]
	for j := range msgs {
		gr := &b.groups[j]
		b.ips[j] = gr.to.Addr().Unmap().As4()
		b.addrs[j] = net.UDPAddr{IP: b.ips[j][:], Port: int(gr.to.Port())}
		msgs[j].Buffers[0] = gr.buf
		msgs[j].Addr = &b.addrs[j]
		msgs[j].OOB = nil
		if len(gr.pkts) > 1 {
			b.oob[j] = gsoControl(b.oob[j], uint16(gr.size))
			msgs[j].OOB = b.oob[j]
		}
	}
	for j := 0; j < len(msgs); {
		n, err := m.batchOut.WriteBatch(msgs[j:], 0)
		n = max(n, 0) // -1 when the first message fails
		for _, gr := range b.groups[j : j+n] {
			for _, i := range gr.pkts {
				b.senders[i].HeartbeatSent()
			}
		}
		j += n
		if err == nil && n > 0 {
			continue
		}
		if j == len(msgs) {
			break
		}
		if msgs[j].OOB != nil && gsoRefused(err) {
			m.gso = false
			m.log.Info("UDP segmentation offload refused; heartbeats are sent without it", "err", err)
			b.keep(b.groups[j:ng])
			return false
		}
		m.log.Debug("send heartbeats", "err", err, "batch", len(b.pkts))
		j++ // drop the datagrams that failed
	}
	return true
}

// keep reduces the batch's packets to those of groups, in their order.
func (b *hbBatch) keep(groups []hbGroup) {
	var idx []int
	for _, gr := range groups {
		idx = append(idx, gr.pkts...)
	}
	slices.Sort(idx)
	for k, i := range idx {
		b.pkts[k], b.to[k], b.senders[k] = b.pkts[i], b.to[i], b.senders[i]
	}
	b.pkts, b.to, b.senders = b.pkts[:len(idx)], b.to[:len(idx)], b.senders[:len(idx)]
}
