package udp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// Defaults of Config.
const (
	DefaultReadBatch  = 64
	DefaultRecvBuffer = 8 << 20
	// DefaultLookupRate is the sustained lookup queries per second a host
	// may ask; the burst defaults to twice that.
	DefaultLookupRate = 1000
)

// RateLimit bounds the lookup queries of each host with a token bucket
// kept in the host's slot.
type RateLimit struct {
	// PerSecond is the sustained rate (default DefaultLookupRate); a
	// negative value disables the limit.
	PerSecond int
	// Burst is the bucket size (default 2 × PerSecond, at most MaxBurst).
	Burst int
}

// Config configures a Server.
type Config struct {
	// Addr is the UDP address to listen on, e.g. "127.0.0.1:0" or
	// ":7947". Required.
	Addr string
	// Sockets is the number of sockets sharing Addr with SO_REUSEPORT, each
	// with its own reader goroutine (default GOMAXPROCS).
	Sockets int
	// ReadBatch is the number of datagrams one recvmmsg reads (default
	// DefaultReadBatch); 1 reads one datagram per recvmsg.
	ReadBatch int
	// RecvBuffer is each socket's receive buffer in bytes (default
	// DefaultRecvBuffer; the kernel may cap it at net.core.rmem_max unless
	// the process has CAP_NET_ADMIN).
	RecvBuffer int
	// Keys are the per-host keys. Required. It is called for every
	// datagram: it must be a lock-free or read-locked lookup.
	Keys wire.Keyring
	// MaxHosts is the number of host slots, host IDs 0..MaxHosts-1
	// (default: Liveness's capacity, or liveness.DefaultCapacity). A slot is
	// PeerBytes bytes.
	MaxHosts int
	// Liveness receives the heartbeats (nil: heartbeats are verified and
	// dropped).
	Liveness *liveness.Table
	// Locator answers lookups (nil: lookups are rejected, reason
	// no_locator). One Locator serves one Server.
	Locator *Locator
	// Flows, if set, is told of every heartbeat and takes the flow
	// reports (without it, they are verified and dropped).
	Flows FlowSink
	// RateLimit bounds each host's lookups.
	RateLimit RateLimit
	// Ack makes the server answer every heartbeat with a HeartbeatAck
	// carrying Epoch.
	Ack   bool
	Epoch uint64
	// Discard turns the server into a raw sink for benchmarks: the readers
	// read and count datagrams, and do nothing else.
	Discard bool
	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil means not registered.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Sockets == 0 {
		c.Sockets = runtime.GOMAXPROCS(0)
	}
	if c.ReadBatch == 0 {
		c.ReadBatch = DefaultReadBatch
	}
	if c.RecvBuffer == 0 {
		c.RecvBuffer = DefaultRecvBuffer
	}
	if c.MaxHosts == 0 {
		c.MaxHosts = liveness.DefaultCapacity
		if c.Liveness != nil {
			c.MaxHosts = c.Liveness.Capacity()
		}
	}
	if c.RateLimit.PerSecond == 0 {
		c.RateLimit.PerSecond = DefaultLookupRate
	}
	if c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = min(2*c.RateLimit.PerSecond, MaxBurst)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a missing or impossible setting.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("Addr is required"))
	}
	if c.Keys == nil && !c.Discard {
		errs = append(errs, errors.New("Keys is required"))
	}
	if c.Sockets < 0 || c.ReadBatch < 0 || c.RecvBuffer < 0 || c.MaxHosts < 0 {
		errs = append(errs, errors.New("Sockets, ReadBatch, RecvBuffer and MaxHosts must not be negative"))
	}
	if c.MaxHosts > 1<<32 {
		errs = append(errs, fmt.Errorf("MaxHosts %d above 2^32", c.MaxHosts))
	}
	if c.RateLimit.Burst < 0 || c.RateLimit.Burst > MaxBurst {
		errs = append(errs, fmt.Errorf("RateLimit.Burst %d out of range 0..%d", c.RateLimit.Burst, MaxBurst))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("udp server config: %w", err)
	}
	return nil
}

// FlowSink takes what agents report of their traffic (controller/flowagg).
// It is called from the readers' goroutines and must not block.
type FlowSink interface {
	Heartbeat(hostID uint32)
	Report(hostID uint32, r *wire.FlowReport)
}

// Server is the controller's UDP endpoint for heartbeats and lookups. See
// the package documentation.
type Server struct {
	cfg      Config
	log      *slog.Logger
	verifier *wire.Verifier
	peers    []peer
	seq      *wire.Sequence
	start    time.Time
	live     *liveness.Table
	loc      *Locator
	rate     uint64 // 0: no limit
	burst    uint64

	conns   []*net.UDPConn
	readers []*reader

	invMu  sync.Mutex
	invIO  packetIO
	invKey wire.Key

	m      *serverMetrics
	totals totals

	life lifecycle.Group
	// connsMu orders Start's sockets against Close's.
	connsMu sync.Mutex
}

// reader is one socket's goroutine state: everything it decodes into and
// encodes from is reused.
type reader struct {
	io  packetIO
	c   counts
	hb  wire.Heartbeat
	req wire.LookupRequest
	rep wire.LookupReply
	ack wire.HeartbeatAck
	fr  wire.FlowReport
	key wire.Key
	out int // datagrams queued in io
}

// New returns a Server; Start opens its sockets.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newServerMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("udp server metrics: %w", err)
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger.With("subsystem", "udp"),
		peers: make([]peer, cfg.MaxHosts),
		seq:   wire.NewSequence(time.Now()),
		start: time.Now(),
		live:  cfg.Liveness,
		loc:   cfg.Locator,
		m:     m,
	}
	if cfg.RateLimit.PerSecond > 0 {
		s.rate, s.burst = uint64(cfg.RateLimit.PerSecond), uint64(cfg.RateLimit.Burst)
	}
	if cfg.Keys != nil {
		if s.verifier, err = wire.NewVerifier(wire.VerifierConfig{Keyring: cfg.Keys, Accept: wire.ToController}); err != nil {
			return nil, fmt.Errorf("udp server: %w", err)
		}
	}
	return s, nil
}

// Start opens the sockets and starts one reader per socket. It returns
// once the server receives.
func (s *Server) Start(ctx context.Context) (err error) {
	if _, err := s.life.Start(); err != nil {
		return fmt.Errorf("udp server: %w", err)
	}
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.life.Closed() {
		return fmt.Errorf("udp server: %w", lifecycle.ErrClosed)
	}
	conns, err := listen(ctx, s.cfg.Addr, s.cfg.Sockets, s.cfg.RecvBuffer)
	if err != nil {
		return fmt.Errorf("udp server: %w", err)
	}
	defer func() {
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
		}
	}()
	for _, c := range conns {
		pio, err := newPacketIO(c, s.cfg.ReadBatch)
		if err != nil {
			return fmt.Errorf("udp server: %w", err)
		}
		s.readers = append(s.readers, &reader{io: pio})
	}
	if s.invIO, err = newPacketIO(conns[0], DefaultReadBatch); err != nil {
		return fmt.Errorf("udp server: %w", err)
	}
	if s.loc != nil && !s.loc.attach(s.sendInvalidate) {
		return errors.New("udp server: the Locator already serves another server")
	}
	s.conns = conns
	for _, r := range s.readers {
		s.life.Go(func(context.Context) { s.serve(r) })
	}
	s.log.Info("udp server listening", "addr", conns[0].LocalAddr().String(), "sockets", len(conns),
		"readBatch", s.cfg.ReadBatch, "discard", s.cfg.Discard)
	return nil
}

// LocalAddr returns the address the server listens on (nil before Start).
func (s *Server) LocalAddr() net.Addr {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if len(s.conns) == 0 {
		return nil
	}
	return s.conns[0].LocalAddr()
}

// Close closes the sockets and waits for the readers. It is idempotent.
func (s *Server) Close() error {
	return s.life.Close(func() error {
		s.connsMu.Lock()
		defer s.connsMu.Unlock()
		if s.conns != nil && s.loc != nil {
			s.loc.attach(nil)
		}
		for _, c := range s.conns {
			c.Close()
		}
		return nil
	})
}

// serve reads batches from one socket until it closes.
func (s *Server) serve(r *reader) {
	for {
		n, err := r.io.recv()
		if err != nil {
			if s.life.Closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "err", err)
			time.Sleep(time.Millisecond) // never spin on a persistent error
			continue
		}
		r.c.received += uint64(n)
		s.m.readBatch.Observe(float64(n))
		if !s.cfg.Discard {
			s.handleBatch(r, n)
		}
		s.addCounts(&r.c)
	}
}

func (s *Server) handleBatch(r *reader, n int) {
	var now, lnow int64
	if s.live != nil {
		now = s.live.Now()
	}
	if s.loc != nil {
		lnow = s.loc.now()
	}
	nowMs := uint64(time.Since(s.start) / time.Millisecond)
	for i := 0; i < n; i++ {
		pkt, from := r.io.msg(i)
		s.handle(r, pkt, from, now, lnow, nowMs)
	}
	s.flush(r)
}

func (s *Server) flush(r *reader) {
	if r.out == 0 {
		return
	}
	sent, dropped := r.io.flush()
	r.c.sent += uint64(sent)
	r.c.sendDropped += uint64(dropped)
	r.out = 0
}

// handle processes one datagram. Nothing here allocates, except the first
// datagram from a host or from a new address of a host (its address).
func (s *Server) handle(r *reader, pkt []byte, from netip.AddrPort, now, lnow int64, nowMs uint64) {
	hdr, body, err := s.verifier.Open(pkt)
	if err != nil {
		r.c.rejected[reasonOf(err)]++
		return
	}
	if uint64(hdr.HostID) >= uint64(len(s.peers)) {
		r.c.rejected[reasonHostRange]++
		return
	}
	p := &s.peers[hdr.HostID]
	switch hdr.Type {
	case wire.TypeHeartbeat:
		if r.hb.UnmarshalBinary(body) != nil {
			r.c.rejected[reasonMalformed]++
			return
		}
		p.remember(from)
		if s.live != nil && !s.live.Observe(hdr.HostID, now, r.hb.ViewVersion, uint32(r.hb.Health)) {
			r.c.rejected[reasonHostRange]++
			return
		}
		r.c.heartbeats++
		if s.cfg.Flows != nil {
			s.cfg.Flows.Heartbeat(hdr.HostID)
		}
		if s.cfg.Ack {
			r.ack = wire.HeartbeatAck{Epoch: s.cfg.Epoch, HeartbeatSeq: hdr.Seq}
			if s.reply(r, hdr.HostID, from, &r.ack) {
				r.c.acks++
			}
		}
	case wire.TypeLookupRequest:
		if r.req.UnmarshalBinary(body) != nil {
			r.c.rejected[reasonMalformed]++
			return
		}
		p.remember(from)
		if s.loc == nil {
			r.c.rejected[reasonNoLocator]++
			return
		}
		if s.rate != 0 && !p.take(uint64(len(r.req.Queries)), nowMs, s.rate, s.burst) {
			r.c.rejected[reasonRateLimited]++
			return
		}
		r.c.lookups++
		r.rep.Answers = r.rep.Answers[:0]
		for i := range r.req.Queries {
			a := s.loc.lookup(hdr.HostID, &r.req.Queries[i], lnow)
			if a.Found {
				r.c.found++
			} else {
				r.c.notFound++
			}
			r.rep.Answers = append(r.rep.Answers, a)
		}
		if s.reply(r, hdr.HostID, from, &r.rep) {
			r.c.replies++
		}
	case wire.TypeFlowReport:
		if r.fr.UnmarshalBinary(body) != nil {
			r.c.rejected[reasonMalformed]++
			return
		}
		p.remember(from)
		if s.cfg.Flows != nil {
			s.cfg.Flows.Report(hdr.HostID, &r.fr)
		}
	default:
		r.c.rejected[reasonDirection]++ // the Verifier lets only host → controller types through
	}
}

// reply queues a datagram to a host on the reader's socket.
func (s *Server) reply(r *reader, hostID uint32, to netip.AddrPort, body wire.Body) bool {
	buf := r.io.next()
	if buf == nil {
		s.flush(r)
		buf = r.io.next()
	}
	key, err := s.verifier.PreparedKey(hostID)
	if err != nil {
		r.c.sendDropped++
		return false
	}
	r.key = key
	out, err := wire.Seal(buf, wire.Header{HostID: hostID, Seq: s.seq.Next()}, body, &r.key)
	if err != nil || !r.io.commit(len(out), to) {
		r.c.sendDropped++
		return false
	}
	r.out++
	return true
}

// sendInvalidate sends an Invalidate to each host at its last known
// address; the Locator calls it from its event goroutine.
func (s *Server) sendInvalidate(hostIDs []uint32, inv *wire.Invalidate) {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	var sent, dropped, queued int
	flush := func() {
		if queued > 0 {
			n, d := s.invIO.flush()
			sent, dropped, queued = sent+n, dropped+d, 0
		}
	}
	for _, id := range hostIDs {
		if uint64(id) >= uint64(len(s.peers)) {
			dropped++
			continue
		}
		to, ok := s.peers[id].address()
		if !ok {
			dropped++
			continue
		}
		key, err := s.verifier.PreparedKey(id)
		if err != nil {
			dropped++ // the host is gone
			continue
		}
		s.invKey = key
		buf := s.invIO.next()
		if buf == nil {
			flush()
			buf = s.invIO.next()
		}
		out, err := wire.Seal(buf, wire.Header{HostID: id, Seq: s.seq.Next()}, inv, &s.invKey)
		if err != nil || !s.invIO.commit(len(out), to) {
			dropped++
			continue
		}
		queued++
	}
	flush()
	s.totals.invalidations.Add(uint64(sent))
	s.totals.sent.Add(uint64(sent))
	s.totals.sendDropped.Add(uint64(dropped))
	s.m.invalidations.Add(float64(sent))
	s.m.sendDropped.Add(float64(dropped))
}

// Stats are the server's counters since it started.
type Stats struct {
	// Received counts every datagram read.
	Received uint64 `json:"received"`
	// Heartbeats and Lookups count authentic datagrams processed.
	Heartbeats uint64 `json:"heartbeats"`
	Lookups    uint64 `json:"lookups"`
	// Found and NotFound count the lookup queries answered.
	Found    uint64 `json:"found"`
	NotFound uint64 `json:"notFound"`
	// Rejected counts rejected datagrams by reason (the reason label of
	// weft_udp_rejected_total); reasons with no rejection are absent.
	Rejected map[string]uint64 `json:"rejected,omitempty"`
	// Sent counts the datagrams the kernel took (acks, replies,
	// invalidations), SendDropped those it did not.
	Sent          uint64 `json:"sent"`
	SendDropped   uint64 `json:"sendDropped"`
	Invalidations uint64 `json:"invalidations"`
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	t := &s.totals
	st := Stats{
		Received: t.received.Load(), Heartbeats: t.heartbeats.Load(), Lookups: t.lookups.Load(),
		Found: t.found.Load(), NotFound: t.notFound.Load(),
		Sent: t.sent.Load(), SendDropped: t.sendDropped.Load(), Invalidations: t.invalidations.Load(),
	}
	for i := range t.rejected {
		if v := t.rejected[i].Load(); v != 0 {
			if st.Rejected == nil {
				st.Rejected = map[string]uint64{}
			}
			st.Rejected[reasonNames[i]] = v
		}
	}
	return st
}
