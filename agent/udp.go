package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// Transport is an agent's UDP side: it sends the agent's heartbeats and
// datagrams to the controller and hands it the authentic datagrams
// addressed to its host. Without Config.Transport an agent binds its own
// socket (socket, below); a process that simulates many hosts passes one
// that many agents share (sim/udpmux).
type Transport interface {
	// Join makes m a member: from then on the transport sends m's
	// heartbeat every m.HeartbeatInterval() (nothing while m has no host
	// ID) and hands m every datagram that names its host ID, once it has
	// authenticated it with m's datagram key and checked it against the
	// replay window of that key.
	Join(m Member) Membership
	// Send writes one datagram.
	Send(pkt []byte, to netip.AddrPort) error
	// LocalAddr returns the address the datagrams leave from.
	LocalAddr() net.Addr
}

// Membership is a member's place in a Transport.
type Membership interface {
	// SetHostID says that the member's host ID changed from old to id
	// (0: none).
	SetHostID(old, id uint32)
	// Leave ends the membership: once it returns, the member gets no
	// datagram and sends no heartbeat.
	Leave()
}

// Member is what a Transport needs of an agent; *Agent is one.
type Member interface {
	// HostID returns the host's UDP-channel ID (0: none yet).
	HostID() uint32
	// DatagramKey returns the raw key that authenticates the datagrams
	// addressed to the host: the key of its latest config-stream session
	// (nil before the first).
	DatagramKey() []byte
	// HeartbeatInterval is the period of the member's heartbeats.
	HeartbeatInterval() time.Duration
	// AppendHeartbeat appends the member's sealed heartbeat to buf, built
	// in hb (the caller's long-lived scratch), and returns it with the
	// address it goes to; ok is false (nothing appended) while the host
	// has no ID.
	AppendHeartbeat(buf []byte, hb *wire.Heartbeat) (pkt []byte, to netip.AddrPort, ok bool)
	// HeartbeatSent counts a heartbeat the transport sent.
	HeartbeatSent()
	// HandleDatagram takes an authentic datagram for the member's host;
	// sc is the reading goroutine's scratch memory.
	HandleDatagram(hdr wire.Header, body []byte, sc *DatagramScratch)
	// RejectDatagram counts a datagram for the member's host that failed
	// authentication or the replay check.
	RejectDatagram(err error)
}

var (
	_ Member    = (*Agent)(nil)
	_ Transport = (*socket)(nil)
)

// DatagramScratch holds the decoded bodies of datagrams, reused by the
// goroutine that reads them.
type DatagramScratch struct {
	reply wire.LookupReply
	inv   wire.Invalidate
	ack   wire.HeartbeatAck
}

// HandleDatagram implements Member: a lookup reply, an invalidation or a
// heartbeat ack. A body that does not decode is counted and dropped.
func (a *Agent) HandleDatagram(hdr wire.Header, body []byte, sc *DatagramScratch) {
	ctx := a.life.Context()
	switch hdr.Type {
	case wire.TypeLookupReply:
		if err := sc.reply.UnmarshalBinary(body); err != nil {
			a.counters.rejected.Add(1)
			return
		}
		a.answer(ctx, &sc.reply)
	case wire.TypeInvalidate:
		if err := sc.inv.UnmarshalBinary(body); err != nil {
			a.counters.rejected.Add(1)
			return
		}
		a.invalidate(ctx, &sc.inv)
	case wire.TypeHeartbeatAck:
		if err := sc.ack.UnmarshalBinary(body); err != nil {
			a.counters.rejected.Add(1)
			return
		}
		a.counters.heartbeatAcks.Add(1)
	}
}

// RejectDatagram implements Member.
func (a *Agent) RejectDatagram(err error) {
	a.counters.rejected.Add(1)
	a.log.Debug("datagram rejected", "err", err)
}

// datagramKey is the datagram key of a config-stream session, raw and
// prepared for sealing.
type datagramKey struct {
	raw []byte
	key wire.Key
}

// setDatagramKey makes raw, the datagram key of a new session, the one the
// agent's datagrams are sealed with and the controller's are checked with.
func (a *Agent) setDatagramKey(raw []byte) error {
	k, err := wire.NewKey(raw)
	if err != nil {
		return fmt.Errorf("agent: datagram key: %w", err)
	}
	a.dgKey.Store(&datagramKey{raw: raw, key: k})
	return nil
}

// DatagramKey implements Member.
func (a *Agent) DatagramKey() []byte {
	if k := a.dgKey.Load(); k != nil {
		return k.raw
	}
	return nil
}

// HeartbeatInterval implements Member.
func (a *Agent) HeartbeatInterval() time.Duration { return a.cfg.HeartbeatInterval }

// HeartbeatSent implements Member.
func (a *Agent) HeartbeatSent() { a.counters.heartbeats.Add(1) }

// AppendHeartbeat implements Member: the heartbeat carries the view
// version applied, the endpoint count and the health flags, and goes to
// the controller's UDP address. There is none before the first session
// (no host ID, no datagram key).
func (a *Agent) AppendHeartbeat(buf []byte, hb *wire.Heartbeat) ([]byte, netip.AddrPort, bool) {
	id, dk := a.hostID.Load(), a.dgKey.Load()
	if id == 0 || dk == nil {
		return buf, netip.AddrPort{}, false
	}
	a.mu.Lock()
	*hb = wire.Heartbeat{ViewVersion: a.applied, UptimeSeconds: uint32(time.Since(a.startTime) / time.Second)}
	if a.desired != nil {
		hb.EndpointCount = uint32(len(a.desired.Endpoints))
	}
	switch {
	case a.setErr != nil:
		hb.Health |= wire.HealthDegraded
	case a.desired != nil && a.applied == a.view.Version:
		hb.Health |= wire.HealthReady
	}
	a.mu.Unlock()
	if !a.connected.Load() {
		hb.Health |= wire.HealthHeadless
	}
	pkt, err := wire.Seal(buf, wire.Header{HostID: id, Seq: a.seq.Next()}, hb, &dk.key)
	if err != nil {
		a.log.Error("seal heartbeat", "err", err)
		return buf, netip.AddrPort{}, false
	}
	return pkt, a.udpTarget(), true
}

// socket is the Transport of an agent that has its host to itself: its
// own UDP socket, a goroutine that reads it and one that heartbeats, for
// its one member. Leave closes it.
type socket struct {
	conn     *net.UDPConn
	log      *slog.Logger
	verifier *wire.Verifier
	m        Member // set by Join, before the goroutines start
	life     lifecycle.Group
}

// listenUDP binds a socket for datagrams to dst, on listen if set (else
// any address, an ephemeral port).
func listenUDP(dst netip.AddrPort, listen string, log *slog.Logger) (*socket, error) {
	network := "udp4"
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		network = "udp6"
	}
	var laddr *net.UDPAddr
	if listen != "" {
		var err error
		if laddr, err = net.ResolveUDPAddr(network, listen); err != nil {
			return nil, fmt.Errorf("agent: resolve UDP listen address %q: %w", listen, err)
		}
	}
	conn, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("agent: bind UDP socket: %w", err)
	}
	s := &socket{conn: conn, log: log}
	s.verifier, err = wire.NewVerifier(wire.VerifierConfig{
		// Controller → host datagrams carry the receiving host's ID.
		Keyring: wire.KeyringFunc(func(id uint32) ([]byte, bool) {
			if id == 0 || id != s.m.HostID() {
				return nil, false
			}
			k := s.m.DatagramKey()
			return k, k != nil
		}),
		Accept: wire.ToAgent,
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	return s, nil
}

// Join implements Transport; a socket takes one member.
func (s *socket) Join(m Member) Membership {
	s.m = m
	if _, err := s.life.Start(); err != nil {
		panic("agent: a second member joined an agent's own socket")
	}
	s.life.Go(s.readLoop)
	s.life.Go(s.heartbeatLoop)
	return s
}

// SetHostID implements Membership.
func (s *socket) SetHostID(old, _ uint32) {
	if old != 0 {
		s.verifier.Forget(old)
	}
}

// Leave implements Membership: it closes the socket and waits for its
// goroutines.
func (s *socket) Leave() { _ = s.life.Close(s.conn.Close) }

// Send implements Transport.
func (s *socket) Send(pkt []byte, to netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(pkt, to)
	return err
}

// LocalAddr implements Transport.
func (s *socket) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// readLoop reads the datagrams the controller sends: lookup replies,
// invalidations and heartbeat acks.
func (s *socket) readLoop(ctx context.Context) {
	buf := make([]byte, wire.MaxDatagramSize+1)
	var sc DatagramScratch
	for {
		n, _, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("read UDP", "err", err)
			if !sleep(ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		hdr, body, err := s.verifier.Open(buf[:n])
		if err != nil {
			s.m.RejectDatagram(err)
			continue
		}
		s.m.HandleDatagram(hdr, body, &sc)
	}
}

// heartbeatLoop heartbeats at once and then every HeartbeatInterval.
func (s *socket) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.m.HeartbeatInterval())
	defer t.Stop()
	var hb wire.Heartbeat
	buf := make([]byte, 0, wire.MaxDatagramSize)
	for {
		if pkt, to, ok := s.m.AppendHeartbeat(buf[:0], &hb); ok {
			if err := s.Send(pkt, to); err != nil {
				s.log.Debug("send heartbeat", "err", err)
			} else {
				s.m.HeartbeatSent()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
