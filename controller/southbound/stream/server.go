package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/controller/compile"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// Defaults of Config.
const (
	DefaultHandshakeTimeout    = 2 * time.Second
	DefaultAckTimeout          = 30 * time.Second
	DefaultClockSkew           = 30 * time.Second
	DefaultMaxHandshakes       = 1024
	DefaultMaxPreAuth          = 16384
	DefaultMaxPreAuthPerSource = 12288
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("stream: server closed")

// KeyFunc returns a host's raw key (wire.KeySize bytes), as wire.VerifyHello
// takes it, or false if the host is unknown.
type KeyFunc func(host string) (key []byte, ok bool)

// StatusSink learns what agents hold. Calls are made from session
// goroutines and must not block for long.
type StatusSink interface {
	// Connected: host's agent (agentVersion) completed a handshake.
	Connected(host, agentVersion string)
	// Acked: host holds its view at version; programErr is the error of
	// programming it into the data plane ("": programmed). It is called
	// again for the same version when that error changes.
	Acked(host string, version uint64, programErr string)
	// Nacked: host refused the delta to version.
	Nacked(host string, version uint64, err string)
	// Disconnected: host's session ended and no newer one replaced it.
	Disconnected(host string)
}

// Config configures a Server.
type Config struct {
	// Compiler provides the views (required).
	Compiler *compile.Compiler
	// Keys authenticates Hellos (required).
	Keys KeyFunc
	// HostID, if set, gives the host ID sent in the Welcome, under which
	// the session's datagram key is kept; otherwise the ID the Hello
	// claims is taken (tests).
	HostID func(host string) (uint32, bool)
	// Status, if set, learns connects, acks, nacks and disconnects.
	Status StatusSink
	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil means not registered.
	Registerer prometheus.Registerer
	// MaxFrame bounds frames after the handshake (default wire.DefaultMaxFrame).
	MaxFrame int
	// HandshakeTimeout bounds the time from accept to an authentic Hello
	// (default DefaultHandshakeTimeout): an agent sends its Hello as soon
	// as it is connected, so only a connection that does not mean to
	// authenticate needs longer.
	HandshakeTimeout time.Duration
	// MaxPreAuth bounds the connections accepted that have not sent an
	// authentic Hello yet (default DefaultMaxPreAuth); past it the oldest
	// is closed: to push out an agent's connection, which waits only for
	// its Hello to be read (a round trip), a flood must open MaxPreAuth
	// connections in that time. MaxPreAuthPerSource bounds those of one
	// source address (default DefaultMaxPreAuthPerSource); past it a new
	// one is closed. The default stays above the 10,000 agents the
	// simulator puts on one address, which may all connect at once.
	MaxPreAuth, MaxPreAuthPerSource int
	// AckTimeout bounds writing a delta and waiting for its Ack or Nack
	// (default DefaultAckTimeout); when it passes the session is closed and
	// the agent reconnects.
	AckTimeout time.Duration
	// ClockSkew is the largest accepted difference between a Hello's time
	// and the server's clock (default DefaultClockSkew).
	ClockSkew time.Duration
	// Replicas, if set, lists the controller replicas' agent addresses for
	// the Welcome.
	Replicas func() []string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxSessions, if positive, bounds the established sessions: an agent
	// beyond it (not replacing its own session) is refused with "replica
	// full" and tries the next replica. The controller sets it below the
	// process's open-file limit, which agents failing over to this replica
	// under overload would otherwise exhaust.
	MaxSessions int
	// MaxHandshakes bounds the authenticated agents between their Hello
	// and the moment their first view is written, over all listeners
	// (default DefaultMaxHandshakes). When agents arrive faster than views
	// can be compiled and sent (a power restore), the others wait, each
	// with its connection and a goroutine but no half-done work: the
	// controller degrades into a queue, not a collapse. A connection gets
	// no token before its Hello verifies, so connections that never
	// authenticate cannot hold them. The token is not held while the agent
	// applies its view: a slow agent costs the replica nothing more then.
	MaxHandshakes int
}

// Validate reports a missing or impossible setting.
func (c *Config) Validate() error {
	var errs []error
	if c.Compiler == nil {
		errs = append(errs, errors.New("Compiler is required"))
	}
	if c.Keys == nil {
		errs = append(errs, errors.New("Keys is required"))
	}
	if c.MaxFrame < 0 || c.HandshakeTimeout < 0 || c.AckTimeout < 0 || c.ClockSkew < 0 ||
		c.MaxHandshakes < 0 || c.MaxPreAuth < 0 || c.MaxPreAuthPerSource < 0 {
		errs = append(errs, errors.New("limits and timeouts must not be negative"))
	}
	if c.MaxFrame > 0 && c.MaxFrame < wire.MaxHandshakeFrame {
		errs = append(errs, fmt.Errorf("MaxFrame %d below %d", c.MaxFrame, wire.MaxHandshakeFrame))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stream config: %w", err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = wire.DefaultMaxFrame
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.MaxPreAuth == 0 {
		c.MaxPreAuth = DefaultMaxPreAuth
	}
	if c.MaxPreAuthPerSource == 0 {
		c.MaxPreAuthPerSource = DefaultMaxPreAuthPerSource
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Status == nil {
		c.Status = nopSink{}
	}
}

// Server serves the config stream to agents. See the package documentation.
type Server struct {
	cfg    Config
	c      *compile.Compiler
	log    *slog.Logger
	m      *metrics
	nonces *nonceCache

	life lifecycle.Group // the sessions' goroutines
	ctx  context.Context // the lifetime context: life's, ended by Close
	// admit holds a token per authenticated agent whose first view is not
	// yet written (Config.MaxHandshakes).
	admit   chan struct{}
	preAuth *preAuth
	dgKeys  *datagramKeys

	mu        sync.Mutex
	sessions  map[string]*session // by host: the current session
	listeners map[net.Listener]struct{}
	closed    bool // no more listeners
}

// New returns a Server; call Serve to accept agents and Close to end it.
// A Server has no Start: each Serve call runs for as long as its listener
// serves.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		c:         cfg.Compiler,
		log:       cfg.Logger.With("subsystem", "stream"),
		m:         m,
		nonces:    newNonceCache(cfg.ClockSkew),
		sessions:  map[string]*session{},
		listeners: map[net.Listener]struct{}{},
		admit:     make(chan struct{}, cfg.MaxHandshakes),
		preAuth:   newPreAuth(cfg.MaxPreAuth, cfg.MaxPreAuthPerSource),
		dgKeys:    newDatagramKeys(),
	}
	s.ctx = s.life.Context()
	if wire.ClearStream {
		s.log.Warn("this binary was built with the weftclearstream tag: config-stream frames are NOT sealed (a benchmark baseline; never deploy it)")
	}
	if cfg.Registerer != nil {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "weft_stream_unauthenticated_connections",
			Help: "Connections accepted that have not sent an authentic Hello yet."}, func() float64 { return float64(s.preAuth.len()) })
		if err := cfg.Registerer.Register(g); err != nil {
			return nil, fmt.Errorf("stream: register metrics: %w", err)
		}
	}
	return s, nil
}

// Serve accepts agent connections on l until ctx ends or Close is called
// (then it returns nil, or ErrServerClosed if the server was already
// closed); it closes l. It may be called for several listeners.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	backoff := time.Duration(0)
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || s.ctx.Err() != nil {
				return nil
			}
			if !isTemporary(err) {
				return fmt.Errorf("stream: accept on %s: %w", l.Addr(), err)
			}
			// Out of file descriptors and the like: back off, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed, retrying", "addr", l.Addr().String(), "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-s.ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		pc, evicted := s.preAuth.admit(nc)
		s.m.refused.WithLabelValues("evicted").Add(float64(evicted))
		if pc == nil {
			s.m.refused.WithLabelValues("source_limit").Inc()
			nc.Close()
			continue
		}
		if !s.life.Go(func(context.Context) { s.handle(pc) }) {
			s.preAuth.done(pc)
			nc.Close() // closed meanwhile
			return nil
		}
	}
}

// Close stops accepting, closes every session and waits for every
// goroutine of the server. It is idempotent.
func (s *Server) Close() error {
	// The lifetime context ends first: Serve then takes the listener's
	// error for a shutdown.
	return s.life.Close(func() error {
		s.mu.Lock()
		s.closed = true
		for l := range s.listeners {
			l.Close()
		}
		s.mu.Unlock()
		return nil
	})
}

// Sessions returns the number of hosts with an established session.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// register makes sess its host's session, ending the previous one; it
// reports false, registering nothing, when MaxSessions are established
// and sess replaces none of them.
func (s *Server) register(sess *session) bool {
	s.mu.Lock()
	old := s.sessions[sess.host]
	if old == nil && s.cfg.MaxSessions > 0 && len(s.sessions) >= s.cfg.MaxSessions {
		s.mu.Unlock()
		return false
	}
	s.sessions[sess.host] = sess
	s.mu.Unlock()
	if old != nil {
		old.end(reasonReplaced)
	} else {
		s.m.sessions.Inc()
	}
	return true
}

// unregister removes sess if it is still the host's session and reports
// whether it was.
func (s *Server) unregister(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[sess.host] != sess {
		return false
	}
	delete(s.sessions, sess.host)
	s.m.sessions.Dec()
	return true
}

// Key returns the datagram key of the host with this host ID: the key of
// its latest session with this replica (wire.Keyring). The replica's UDP
// server authenticates the host's datagrams with it, so that a datagram of
// an older session, or of a session with another replica or with this one
// before it restarted, is refused: each session starts a fresh replay
// window under a fresh key.
func (s *Server) Key(hostID uint32) ([]byte, bool) { return s.dgKeys.get(hostID) }

var _ wire.Keyring = (*Server)(nil)

// KeysChanged tells the server that the keys of these hosts may have
// changed (the Host or its key was deleted, or the host enrolled again):
// the session of a host whose key is not the one it authenticated with is
// cut, and its datagram key dropped.
func (s *Server) KeysChanged(hosts []string) {
	for _, h := range hosts {
		key, ok := s.cfg.Keys(h)
		if !ok {
			key = nil
		}
		s.dgKeys.dropUnless(h, key)
		s.mu.Lock()
		sess := s.sessions[h]
		s.mu.Unlock()
		if sess != nil && (!ok || !bytes.Equal(sess.hostKey, key)) {
			sess.end(reasonRevoked)
		}
	}
}

// isTemporary reports accept errors worth retrying (EMFILE, ENFILE,
// ECONNABORTED...), which net reports as Temporary.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// nopSink is the StatusSink used when none is configured.
type nopSink struct{}

func (nopSink) Connected(string, string)      {}
func (nopSink) Acked(string, uint64, string)  {}
func (nopSink) Nacked(string, uint64, string) {}
func (nopSink) Disconnected(string)           {}
