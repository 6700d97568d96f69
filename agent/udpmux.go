package agent

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/wire"
)

// muxReadBuffer is the receive buffer a shared mux asks for.
const muxReadBuffer = 4 << 20

// Defaults of the UDPMuxConfig fields.
const (
	DefaultHeartbeatBatchWindow = 10 * time.Millisecond
	DefaultMaxHeartbeatBatch    = 64
)

// UDPMuxConfig configures a UDPMux.
type UDPMuxConfig struct {
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

// UDPMux is a UDP socket shared by the agents of one process, with the two
// loops that serve it: a reader, which authenticates each datagram with the
// key of the host its header names and hands it to that host's agent, and
// a heartbeat scheduler, which sends every member's heartbeats on time,
// those falling due within HeartbeatBatchWindow of each other in one batch.
//
// A real agent has no use for it: without Config.UDPMux an agent binds its
// own socket (a private mux of one member). A process that simulates many
// hosts shares one mux between many agents: one socket, one table of replay
// windows and two goroutines instead of a socket, a Verifier and three
// goroutines per agent. Each member keeps its own host ID, key, sequence
// numbers and controller address, so the datagrams are those separate
// sockets would send, from one source address; the controller answers to
// the address a host's datagrams come from, and the reader demultiplexes
// the answers by host ID.
//
// Build it with NewUDPMux, Start it, pass it to agents in Config.UDPMux,
// and Close it after closing them.
type UDPMux struct {
	cfg      UDPMuxConfig
	log      *slog.Logger
	verifier *wire.Verifier
	owner    *Agent // of a private mux: every datagram on its socket is for it

	conn     *net.UDPConn
	batchOut *ipv4.PacketConn // sendmmsg; nil if the socket is not IPv4

	// mu guards byID. The reader holds it (read) while an agent handles a
	// datagram, so an agent that leaves gets no datagram afterwards.
	// Lock order: mu before an agent's own locks.
	mu   sync.RWMutex
	byID map[uint32]*Agent

	// hbMu guards the heartbeat schedule.
	hbMu   sync.Mutex
	hb     hbHeap
	hbWake signal
	// batchMu is held while a batch of heartbeats is built and sent, so an
	// agent that leaves sends no heartbeat afterwards.
	batchMu sync.Mutex

	rejected atomic.Uint64 // datagrams for no member, or not authentic

	lifeMu  sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewUDPMux validates cfg and returns a mux that is not started.
func NewUDPMux(cfg UDPMuxConfig) (*UDPMux, error) {
	if cfg.HeartbeatBatchWindow < 0 || cfg.MaxHeartbeatBatch < 0 {
		return nil, errors.New("agent: udp mux config: negative HeartbeatBatchWindow or MaxHeartbeatBatch")
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
	cfg.Logger = cfg.Logger.With("subsystem", "agent-udp")
	return newUDPMux(cfg)
}

// newUDPMux returns a mux for a valid cfg, defaults applied.
func newUDPMux(cfg UDPMuxConfig) (*UDPMux, error) {
	m := &UDPMux{cfg: cfg, log: cfg.Logger, byID: map[uint32]*Agent{}, hbWake: make(signal, 1)}
	var err error
	m.verifier, err = wire.NewVerifier(wire.VerifierConfig{
		// Controller → host datagrams carry the receiving host's ID: only
		// a member's is accepted, with that member's key.
		Keyring: wire.KeyringFunc(func(id uint32) ([]byte, bool) {
			a := m.byID[id] // the reader holds mu
			if a == nil {
				return nil, false
			}
			return a.cfg.Key, true
		}),
		Accept: wire.ToAgent,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return m, nil
}

// Start binds the socket and starts the reader and the heartbeat
// scheduler; they run until ctx is done or Close is called.
func (m *UDPMux) Start(ctx context.Context) error {
	laddr, err := net.ResolveUDPAddr("udp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("agent: resolve UDP listen address %q: %w", m.cfg.Listen, err)
	}
	network := "udp4"
	if laddr.IP != nil && laddr.IP.To4() == nil {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, laddr)
	if err != nil {
		return fmt.Errorf("agent: bind UDP socket: %w", err)
	}
	// Many hosts' answers arrive here: ask for a deep receive queue (the
	// system may grant less; a lost answer is retried).
	_ = conn.SetReadBuffer(muxReadBuffer)
	if err := m.start(ctx, conn); err != nil {
		conn.Close()
		return err
	}
	return nil
}

// start runs the mux on conn, which it then owns.
func (m *UDPMux) start(ctx context.Context, conn *net.UDPConn) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	switch {
	case m.closed:
		return errors.New("agent: udp mux: start after close")
	case m.started:
		return errors.New("agent: udp mux: already started")
	}
	m.conn = conn
	if ap := conn.LocalAddr().(*net.UDPAddr).AddrPort(); ap.Addr().Unmap().Is4() && m.cfg.MaxHeartbeatBatch > 1 {
		m.batchOut = ipv4.NewPacketConn(conn)
	}
	ctx, m.cancel = context.WithCancel(ctx)
	m.started = true
	m.wg.Go(func() { <-ctx.Done(); conn.Close() })
	m.wg.Go(func() { m.readLoop(ctx) })
	m.wg.Go(func() { m.heartbeatLoop(ctx) })
	return nil
}

// Close stops the loops, waits for them and closes the socket. It is
// idempotent. Members still joined can no longer send.
func (m *UDPMux) Close() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.started {
		m.cancel()
		m.wg.Wait()
	}
	return nil
}

// LocalAddr returns the socket's address (nil before Start).
func (m *UDPMux) LocalAddr() net.Addr {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.conn == nil {
		return nil
	}
	return m.conn.LocalAddr()
}

// Rejected is the number of datagrams that named no member. (Those that
// fail for a member count in its Stats.DatagramsRejected.)
func (m *UDPMux) Rejected() uint64 { return m.rejected.Load() }

// send writes one datagram.
func (m *UDPMux) send(pkt []byte, to netip.AddrPort) error {
	_, err := m.conn.WriteToUDPAddrPort(pkt, to)
	return err
}

// join adds a to the members. The only member of a private mux heartbeats
// at once (as an agent always did); a shared mux spreads its members'
// first heartbeats over their interval, as hosts that did not start
// together would be, so that agents started at once do not all heartbeat
// in the same few milliseconds of every interval.
func (m *UDPMux) join(a *Agent) {
	m.mu.Lock()
	a.joined = true
	m.mu.Unlock()
	if id := a.hostID.Load(); id != 0 {
		m.setID(a, 0, id)
	}
	due := time.Now()
	if m.owner == nil {
		due = due.Add(rand.N(a.cfg.HeartbeatInterval))
	}
	m.hbMu.Lock()
	a.hbEntry = &hbEntry{a: a, due: due}
	heap.Push(&m.hb, a.hbEntry)
	m.hbMu.Unlock()
	kick(m.hbWake)
}

// leave removes a: once it returns, a gets no datagram and sends no
// heartbeat.
func (m *UDPMux) leave(a *Agent) {
	m.hbMu.Lock()
	if e := a.hbEntry; e != nil && e.i >= 0 {
		heap.Remove(&m.hb, e.i)
		e.i = -1
	}
	a.hbEntry = nil
	m.hbMu.Unlock()
	m.batchMu.Lock() // wait out a batch that may hold a
	//lint:ignore SA2001 an empty critical section is the point
	m.batchMu.Unlock()
	m.mu.Lock()
	a.joined = false
	if id := a.hostID.Load(); id != 0 && m.byID[id] == a {
		delete(m.byID, id)
		m.verifier.Forget(id)
	}
	m.mu.Unlock()
}

// setID moves a from host ID old to id (0: none).
func (m *UDPMux) setID(a *Agent, old, id uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old != 0 && m.byID[old] == a {
		delete(m.byID, old)
		m.verifier.Forget(old)
	}
	if id != 0 && a.joined {
		if cur := m.byID[id]; cur != nil && cur != a {
			m.log.Error("two agents of one UDP mux claim one host ID; the later one wins", "host_id", id,
				"host", a.cfg.Host, "other", cur.cfg.Host)
		}
		m.byID[id] = a
	}
}

// readLoop reads the datagrams the controller sends to the members: lookup
// replies, invalidations and heartbeat acks. Each is authenticated with the
// key of the host it names and checked against that host's replay window
// before it is decoded; anything else is counted and dropped.
func (m *UDPMux) readLoop(ctx context.Context) {
	buf := make([]byte, wire.MaxDatagramSize+1)
	var sc datagramScratch
	for {
		n, _, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("read UDP", "err", err)
			if !sleep(ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		m.dispatch(buf[:n], &sc)
	}
}

func (m *UDPMux) dispatch(pkt []byte, sc *datagramScratch) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	hdr, body, err := m.verifier.Open(pkt)
	if err != nil {
		if h, perr := wire.ParseHeader(pkt); perr == nil && m.byID[h.HostID] != nil {
			m.byID[h.HostID].rejectDatagram(err)
			return
		}
		if m.owner != nil && m.owner.joined {
			m.owner.rejectDatagram(err)
			return
		}
		m.rejected.Add(1)
		m.log.Debug("datagram rejected", "err", err)
		return
	}
	if a := m.byID[hdr.HostID]; a != nil {
		a.handleDatagram(hdr, body, sc)
	}
}

// heartbeatLoop sends each member's heartbeat every HeartbeatInterval of
// that member, starting when it joins; heartbeats due within the batch
// window leave together.
func (m *UDPMux) heartbeatLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	b := newHBBatch(m.cfg.MaxHeartbeatBatch, m.batchOut != nil)
	for {
		m.hbMu.Lock()
		var wait time.Duration = -1
		if len(m.hb) > 0 {
			wait = max0(time.Until(m.hb[0].due))
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
	due     []*Agent // members whose heartbeat is due
	bufs    [][]byte
	pkts    [][]byte
	to      []netip.AddrPort
	senders []*Agent // of pkts
	// sendmmsg
	msgs  []ipv4.Message
	addrs []net.UDPAddr
	ips   [][4]byte
}

func newHBBatch(n int, mmsg bool) *hbBatch {
	b := &hbBatch{due: make([]*Agent, 0, n), bufs: make([][]byte, n), pkts: make([][]byte, 0, n),
		to: make([]netip.AddrPort, 0, n), senders: make([]*Agent, 0, n)}
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
	}
	return b
}

// sendDue sends every heartbeat due within the batch window, in batches.
func (m *UDPMux) sendDue(b *hbBatch) {
	m.batchMu.Lock()
	defer m.batchMu.Unlock()
	for {
		now := time.Now()
		horizon := now.Add(m.cfg.HeartbeatBatchWindow)
		b.due = b.due[:0]
		m.hbMu.Lock()
		for len(m.hb) > 0 && len(b.due) < cap(b.due) && !m.hb[0].due.After(horizon) {
			e := m.hb[0]
			b.due = append(b.due, e.a)
			// Keep the member's phase; skip the beats missed while late
			// (as a time.Ticker does).
			iv := e.a.cfg.HeartbeatInterval
			e.due = e.due.Add(iv)
			if e.due.Before(now) {
				e.due = now.Add(iv - now.Sub(e.due)%iv)
			}
			heap.Fix(&m.hb, 0)
		}
		m.hbMu.Unlock()
		if len(b.due) == 0 {
			return
		}
		b.pkts, b.to, b.senders = b.pkts[:0], b.to[:0], b.senders[:0]
		for _, a := range b.due {
			if pkt, ok := a.appendHeartbeat(b.bufs[len(b.pkts)][:0]); ok {
				b.pkts = append(b.pkts, pkt)
				b.to = append(b.to, a.udpTarget())
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
func (m *UDPMux) write(b *hbBatch) {
	if m.batchOut == nil || len(b.pkts) == 1 {
		for i, pkt := range b.pkts {
			if err := m.send(pkt, b.to[i]); err != nil {
				m.log.Debug("send heartbeat", "err", err)
				continue
			}
			b.senders[i].counters.heartbeats.Add(1)
		}
		return
	}
	msgs := b.msgs[:len(b.pkts)]
	for i, pkt := range b.pkts {
		b.ips[i] = b.to[i].Addr().Unmap().As4()
		b.addrs[i] = net.UDPAddr{IP: b.ips[i][:], Port: int(b.to[i].Port())}
		msgs[i].Buffers[0] = pkt
		msgs[i].Addr = &b.addrs[i]
	}
	for i := 0; i < len(msgs); {
		n, err := m.batchOut.WriteBatch(msgs[i:], 0)
		for _, a := range b.senders[i : i+n] {
			a.counters.heartbeats.Add(1)
		}
		i += n
		if err != nil || n == 0 {
			m.log.Debug("send heartbeats", "err", err, "batch", len(msgs)-i)
			i++ // drop the datagram that failed
		}
	}
}

// hbEntry is a member in the heartbeat schedule.
type hbEntry struct {
	a   *Agent
	due time.Time
	i   int
}

// hbHeap orders members by their next heartbeat.
type hbHeap []*hbEntry

func (h hbHeap) Len() int           { return len(h) }
func (h hbHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h hbHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].i = i; h[j].i = j }
func (h *hbHeap) Push(x any)        { e := x.(*hbEntry); e.i = len(*h); *h = append(*h, e) }
func (h *hbHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.i = -1
	return e
}
