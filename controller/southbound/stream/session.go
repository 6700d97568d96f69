package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/wire"
)

// Reasons a session ends (the reason label of weft_stream_session_ends_total).
const (
	reasonReplaced   = "replaced"    // a newer connection of the same host
	reasonAckTimeout = "ack_timeout" // no Ack or Nack in time
	reasonWrite      = "write_error" // includes a write that timed out: a stalled agent
	reasonRead       = "read_error"  // includes the agent hanging up
	reasonProtocol   = "protocol"    // an unexpected message
	reasonShutdown   = "shutdown"
	reasonCompile    = "compile_error"
	reasonAuth       = "auth"    // a frame that failed authentication
	reasonRevoked    = "revoked" // the host's key changed or went
	reasonMoved      = "moved"   // the server told the agent to move (Server.Move)
)

// session is one host's established stream.
type session struct {
	host    string
	hostKey []byte     // the key the Hello verified with
	wc      *wire.Conn // its connection, sealed once accepted
	cancel  context.CancelFunc
	once    sync.Once
	reason  string // the first reason given to end
}

// end records why the session ends (the first reason wins) and stops it.
func (s *session) end(reason string) string {
	s.once.Do(func() { s.reason = reason })
	s.cancel()
	return s.reason
}

// handle runs one connection: the Hello (within HandshakeTimeout, while
// the connection counts as unauthenticated), an admission token, the
// Accept that seals the stream, then the session.
func (s *Server) handle(pc *pending) {
	nc := pc.nc
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// NewConn's limit also bounds writes (SetMaxFrame changes only reads):
	// reads stay small until the Hello is verified.
	wc := wire.NewConn(nc, s.cfg.MaxFrame)
	wc.SetMaxFrame(wire.MaxHandshakeFrame)
	defer wc.Close()
	// Closing the connection unblocks the reader goroutine too.
	defer context.AfterFunc(ctx, func() { wc.Close() })()

	h, key, err := s.handshake(ctx, wc)
	s.preAuth.done(pc)
	if err != nil {
		s.log.Debug("handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	select {
	case s.admit <- struct{}{}:
	case <-ctx.Done():
		return
	}
	admitted := sync.OnceFunc(func() { <-s.admit })
	defer admitted()
	if peerClosed(nc) {
		// It waited for a token past the agent's patience: the agent gave
		// up and will try again; compiling for it is waste.
		s.m.refused.WithLabelValues("abandoned").Inc()
		return
	}
	sess := &session{host: h.Host, hostKey: key, wc: wc, cancel: cancel}
	if !s.register(sess) {
		_ = s.refuse(ctx, wc, "full", fmt.Sprintf("replica full: %d agents connected", s.cfg.MaxSessions))
		return
	}
	reason, err := s.accept(ctx, wc, h, sess)
	if err == nil {
		s.log.Debug("agent connected", "host", h.Host, "agentVersion", h.AgentVersion, "viewVersion", h.ViewVersion,
			"remote", nc.RemoteAddr().String())
		reason, err = s.serve(ctx, wc, h, admitted)
	}
	if ctx.Err() != nil && s.ctx.Err() != nil {
		reason = reasonShutdown
	}
	reason = sess.end(reason)
	s.m.ends.WithLabelValues(reason).Inc()
	if s.unregister(sess) {
		s.cfg.Status.Disconnected(h.Host)
	}
	s.log.Debug("agent session ended", "host", h.Host, "reason", reason, "err", err)
}

// accept seals the stream of a registered session and makes its datagram
// key the host's. A key changed meanwhile (KeysChanged ran before the
// session was registered) ends the session.
func (s *Server) accept(ctx context.Context, wc *wire.Conn, h *wire.Hello, sess *session) (string, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	dk, err := wc.AcceptHello(actx, h, sess.hostKey)
	if err != nil {
		return reasonWrite, err
	}
	if id, ok := s.hostID(h); ok {
		// Only the host's current session sets its key: one it replaced
		// meanwhile must not overwrite the newer one's.
		s.mu.Lock()
		if s.sessions[h.Host] == sess {
			s.dgKeys.set(h.Host, id, sess.hostKey, dk)
		}
		s.mu.Unlock()
	}
	if key, ok := s.cfg.Keys(h.Host); !ok || !bytes.Equal(key, sess.hostKey) {
		s.dgKeys.dropUnless(h.Host, key)
		return reasonRevoked, errors.New("the host's key changed during the handshake")
	}
	return "", nil
}

// hostID returns the host ID of h's host: Config.HostID's; without
// Config.HostID, the one the Hello claims.
func (s *Server) hostID(h *wire.Hello) (uint32, bool) {
	if s.cfg.HostID != nil {
		id, ok := s.cfg.HostID(h.Host)
		return id, ok && id != 0
	}
	return h.HostID, h.HostID != 0
}

// handshake reads and verifies the Hello and returns it with the host's
// key. A refused agent gets a Welcome in clear with Error before the
// connection closes.
func (s *Server) handshake(ctx context.Context, wc *wire.Conn) (*wire.Hello, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	m, err := wc.ReadMessage(ctx)
	if err != nil {
		reason := "read_error"
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			reason = "timeout"
		case errors.Is(err, wire.ErrTooLarge), errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrUnknownType):
			reason = "malformed"
		}
		s.m.refused.WithLabelValues(reason).Inc()
		return nil, nil, fmt.Errorf("read hello: %w", err)
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		return nil, nil, s.refuse(ctx, wc, "protocol", fmt.Sprintf("want a Hello first, got %v", m.FrameType()))
	}
	key, ok := s.cfg.Keys(h.Host)
	if !ok {
		return nil, nil, s.refuse(ctx, wc, "unknown_host", fmt.Sprintf("unknown host %q", h.Host))
	}
	now := s.cfg.Now()
	if err := wire.VerifyHello(h, key, now, s.cfg.ClockSkew); err != nil {
		switch {
		case errors.Is(err, wire.ErrAuth):
			return nil, nil, s.refuse(ctx, wc, "auth", "authentication failed")
		case errors.Is(err, wire.ErrStale):
			return nil, nil, s.refuse(ctx, wc, "stale", fmt.Sprintf("hello time %s is more than %v from the controller's clock %s",
				time.Unix(h.Time, 0).UTC().Format(time.RFC3339), s.cfg.ClockSkew, now.UTC().Format(time.RFC3339)))
		default:
			return nil, nil, s.refuse(ctx, wc, "malformed", err.Error())
		}
	}
	if !s.nonces.add(h.Host, h.Nonce, h.Time, now) {
		return nil, nil, s.refuse(ctx, wc, "replay", "replayed hello")
	}
	return h, key, nil
}

// refuse counts a refused handshake and tells the agent why.
func (s *Server) refuse(ctx context.Context, wc *wire.Conn, reason, msg string) error {
	s.m.refused.WithLabelValues(reason).Inc()
	if err := wc.WriteMessage(ctx, &wire.Welcome{Error: msg}); err != nil {
		return fmt.Errorf("refuse agent (%s): %w", msg, err)
	}
	return fmt.Errorf("agent refused: %s", msg)
}

// readResult is one message (or the error that ended reading).
type readResult struct {
	m   wire.Message
	err error
}

// read forwards the agent's messages until an error or ctx ends.
func (s *Server) read(ctx context.Context, wc *wire.Conn, out chan<- readResult) {
	for {
		m, err := wc.ReadMessage(ctx)
		if errors.Is(err, wire.ErrUnknownType) {
			continue // a complete frame of a newer protocol: skipped
		}
		select {
		case out <- readResult{m, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// serve runs an authenticated session: Welcome, then one delta at a time,
// each answered by an Ack or Nack before the next is computed. It returns
// why the session ended.
func (s *Server) serve(ctx context.Context, wc *wire.Conn, h *wire.Hello, admitted func()) (string, error) {
	host := h.Host
	notify, unsubscribe := s.c.Subscribe(host)
	defer unsubscribe()
	select {
	case <-s.c.Ready():
	case <-ctx.Done():
		return reasonShutdown, ctx.Err()
	}
	s.cfg.Status.Connected(host, h.AgentVersion)

	first, err := s.c.Resume(ctx, host, h.ViewVersion, h.ViewHash)
	if err != nil {
		return reasonCompile, err
	}
	w := &wire.Welcome{Epoch: s.c.Epoch(), Snapshot: first.Snapshot}
	w.HostID, _ = s.hostID(h)
	if s.cfg.Replicas != nil {
		w.Replicas = s.cfg.Replicas()
	}
	if err := s.write(ctx, wc, w); err != nil {
		return reasonWrite, err
	}
	wc.SetMaxFrame(s.cfg.MaxFrame)
	msgs := make(chan readResult)
	s.life.Go(func(context.Context) { s.read(ctx, wc, msgs) })

	var (
		held  = h.ViewVersion // the version the agent holds
		nacks int             // Nacks since the last Ack: answer with a snapshot
		next  = &first
	)
	for {
		var d wire.Delta
		switch {
		case next != nil:
			d, next = *next, nil
		case nacks > 0:
			if err := s.nackBackoff(ctx, nacks); err != nil {
				return reasonShutdown, err
			}
			d, err = s.c.Delta(host, 0)
		default:
			d, err = s.c.Delta(host, held)
		}
		if err != nil {
			return reasonCompile, err
		}
		if !d.Snapshot && d.ToVersion == held {
			// Nothing to send: wait for a change (or an unsolicited Nack).
			select {
			case <-notify:
				continue
			case r := <-msgs:
				if r.err != nil {
					return readReason(r.err), r.err
				}
				if n, ok := r.m.(*wire.Nack); ok {
					s.nacked(host, n)
					nacks++
					continue
				}
				if a, ok := r.m.(*wire.Ack); ok && a.Version == held {
					s.cfg.Status.Acked(host, held, a.Error) // a status report
					continue
				}
				return reasonProtocol, fmt.Errorf("unexpected %v while no delta is outstanding", r.m.FrameType())
			case <-ctx.Done():
				return reasonShutdown, ctx.Err()
			}
		}
		if err := s.send(ctx, wc, d); err != nil {
			return reasonWrite, err
		}
		admitted() // its first view is on the way: let the next one in
		// Window of one: nothing more is sent until the agent answers.
		// Changes meanwhile coalesce into the next delta.
		m, reason, err := s.awaitAnswer(ctx, msgs, host, held, d.ToVersion)
		if err != nil {
			return reason, err
		}
		switch m := m.(type) {
		case *wire.Ack:
			if m.Version != d.ToVersion {
				return reasonProtocol, fmt.Errorf("ack of version %d, want %d", m.Version, d.ToVersion)
			}
			held, nacks = d.ToVersion, 0
			s.m.acks.Inc()
			s.cfg.Status.Acked(host, held, m.Error)
		case *wire.Nack:
			s.nacked(host, m)
			nacks++
		}
	}
}

// readReason is the session end reason of a read error.
func readReason(err error) string {
	if errors.Is(err, wire.ErrAuth) {
		return reasonAuth
	}
	return reasonRead
}

// Backoff between snapshots an agent keeps refusing.
const (
	minNackBackoff = 100 * time.Millisecond
	maxNackBackoff = 30 * time.Second
)

// nackBackoff delays the snapshot that answers the n-th Nack in a row: not
// at all for the first, then 100ms doubling up to 30s, so that an agent
// that cannot apply any view does not keep the controller encoding
// snapshots in a tight loop.
func (s *Server) nackBackoff(ctx context.Context, n int) error {
	if n <= 1 {
		return nil
	}
	d := maxNackBackoff
	if n-2 < 20 {
		d = min(minNackBackoff<<(n-2), maxNackBackoff)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitAnswer waits AckTimeout for the Ack or Nack of the delta in flight,
// to version to. An Ack of held, the version the agent had before, is the
// agent's status report (wire.Ack): recorded, and the wait goes on.
func (s *Server) awaitAnswer(ctx context.Context, msgs <-chan readResult, host string, held, to uint64) (wire.Message, string, error) {
	t := time.NewTimer(s.cfg.AckTimeout)
	defer t.Stop()
	for {
		select {
		case r := <-msgs:
			if r.err != nil {
				return nil, readReason(r.err), r.err
			}
			switch m := r.m.(type) {
			case *wire.Ack:
				if m.Version == held && held != to {
					s.cfg.Status.Acked(host, held, m.Error)
					continue
				}
				return m, "", nil
			case *wire.Nack:
				return m, "", nil
			}
			return nil, reasonProtocol, fmt.Errorf("unexpected %v while a delta is outstanding", r.m.FrameType())
		case <-t.C:
			return nil, reasonAckTimeout, fmt.Errorf("no ack within %v", s.cfg.AckTimeout)
		case <-ctx.Done():
			return nil, reasonShutdown, ctx.Err()
		}
	}
}

func (s *Server) nacked(host string, n *wire.Nack) {
	s.m.nacks.Inc()
	s.log.Info("agent refused its view", "host", host, "version", n.Version, "err", n.Error)
	s.cfg.Status.Nacked(host, n.Version, n.Error)
}

// send writes d, split into frames that fit MaxFrame, within AckTimeout.
func (s *Server) send(ctx context.Context, wc *wire.Conn, d wire.Delta) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	kind := "delta"
	if d.Snapshot {
		kind = "snapshot"
	}
	s.m.deltas.WithLabelValues(kind).Inc()
	s.m.resources.Observe(float64(len(d.Upserts) + len(d.Deletes)))
	for _, f := range split(d, s.cfg.MaxFrame-wire.SealOverhead) {
		if err := wc.WriteMessage(ctx, &f); err != nil {
			return fmt.Errorf("send %s %d→%d: %w", kind, d.FromVersion, d.ToVersion, err)
		}
	}
	return nil
}

func (s *Server) write(ctx context.Context, wc *wire.Conn, m wire.Message) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	return wc.WriteMessage(ctx, m)
}

// peerClosed reports whether the other end of nc has already closed it
// (TCP state CLOSE_WAIT), as an agent that gave up waiting for its
// Welcome has.
func peerClosed(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		closed = err == nil && info.State == tcpCloseWait
	})
	return closed
}

// tcpCloseWait is Linux's TCP_CLOSE_WAIT state (include/net/tcp_states.h).
const tcpCloseWait = 8
