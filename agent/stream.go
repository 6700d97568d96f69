package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/wire"
)

// writeTimeout bounds writing one Ack or Nack.
const writeTimeout = 10 * time.Second

// errReplicaRemoved ends a session whose replica left the replica list.
var errReplicaRemoved = errors.New("agent: the controller replica left the replica list")

// errMoved ends a session whose replica told the agent to move to another
// one (a Welcome with an Error during the session): it lost its etcd
// quorum and closes its config stream.
var errMoved = errors.New("agent: the controller replica told its agents to move")

// streamLoop keeps a config stream up. Before every round it waits a
// full-jitter backoff delay (the first one too: after a power restore every
// agent starts at once), then tries the replicas in rendezvous order until
// one welcomes it. The backoff grows with every round that ends without a
// session lasting Backoff.Max, and starts over after one that did. A
// session whose replica told its agents to move (it lost its etcd quorum
// and closes its port) is no failure: the next round begins after a
// jitter of at most Backoff.Min, whatever the backoff has grown to, so
// that the agents re-home at once but do not all arrive in the same
// instant.
// Lookups unanswered while the stream is down cut the wait short (at most
// once per redialEvery): a restarted controller knows none of the old
// session keys, so the agent learns no new location until it has a session
// again.
func (a *Agent) streamLoop(ctx context.Context) {
	attempt, moved := 0, false
	var last time.Time // the latest round's start
	for {
		d := a.cfg.Backoff.Delay(attempt, a.cfg.BackoffRand)
		if moved {
			d = a.cfg.Backoff.Delay(0, a.cfg.BackoffRand)
		}
		if attempt > 0 || moved {
			a.log.Debug("config stream: reconnecting", "attempt", attempt, "in", d)
		}
		if !a.waitRound(ctx, d, last) {
			return
		}
		last = time.Now()
		stable := false
		moved = false
		for _, addr := range a.Replicas() {
			start := time.Now()
			welcomed, err := a.session(ctx, addr)
			if ctx.Err() != nil {
				return
			}
			a.noteStreamEnd(welcomed, err)
			if welcomed {
				lasted := time.Since(start)
				stable, moved = lasted >= a.cfg.Backoff.Max, errors.Is(err, errMoved)
				a.log.Warn("config stream lost; forwarding headless from the cached view", "addr", addr, "lasted", lasted, "err", err)
				break
			}
			a.log.Warn("config stream: connect failed, trying the next replica", "addr", addr, "err", err)
		}
		switch {
		case stable:
			attempt = 0
		case !moved:
			attempt = min(attempt+1, 62)
		}
	}
}

// redialEvery bounds how often unanswered lookups start a reconnect round.
const redialEvery = 200 * time.Millisecond

// waitRound waits d before a reconnect round, or less on a redial kick
// (but until redialEvery after the previous round's start). It reports
// false once ctx is done.
func (a *Agent) waitRound(ctx context.Context, d time.Duration, last time.Time) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-a.redial:
		a.log.Debug("config stream: lookups unanswered, reconnecting now")
		return sleep(ctx, time.Until(last.Add(redialEvery)))
	}
}

// noteStreamEnd counts a session's end and keeps its error for
// LastStreamError.
func (a *Agent) noteStreamEnd(welcomed bool, err error) {
	switch {
	case welcomed:
		a.counters.streamLost.Add(1)
	case errors.Is(err, ErrRefused):
		a.counters.streamRefused.Add(1)
		a.counters.streamFailed.Add(1)
	default:
		a.counters.streamFailed.Add(1)
	}
	if err != nil {
		a.lastStreamErr.Store(err.Error())
	}
}

// LastStreamError returns the error that ended the latest config-stream
// session or attempt ("" if none did).
func (a *Agent) LastStreamError() string {
	if s, ok := a.lastStreamErr.Load().(string); ok {
		return s
	}
	return ""
}

// session runs one config stream with the replica at addr until it fails
// or ctx is done. welcomed reports whether the controller accepted the
// agent.
func (a *Agent) session(ctx context.Context, addr string) (welcomed bool, err error) {
	dialer := net.Dialer{
		Timeout: a.cfg.DialTimeout,
		// Notice a controller that vanished without closing (power loss)
		// within about 20 s.
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
	if a.cfg.StreamSource.IsValid() {
		dialer.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a.cfg.StreamSource, 0))
		dialer.Control = bindAddressNoPort
	}
	nc, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false, fmt.Errorf("dial config stream %s: %w", addr, err)
	}
	conn := wire.NewConn(nc, 0)
	defer conn.Close()

	w, dk, err := a.handshake(ctx, conn)
	if err != nil {
		return false, fmt.Errorf("config stream %s: %w", addr, err)
	}
	if w.Error != "" {
		return false, fmt.Errorf("config stream %s: %w: %s", addr, ErrRefused, w.Error)
	}
	// Set before welcome() hands out the host ID that heartbeats wait for.
	if err := a.setDatagramKey(dk); err != nil {
		return false, err
	}
	if a.cfg.UDPFollowsStream {
		// The replica serves UDP on the stream's host:port: heartbeats and
		// lookups go where the view comes from, also after a failover.
		// Set before welcome() hands out the host ID that heartbeats wait for.
		if ua, err := net.ResolveUDPAddr("udp", addr); err == nil {
			a.setUDPTarget(ua.AddrPort())
		}
	}
	a.welcome(w, addr)
	a.connect(ctx, conn)
	defer a.disconnect()
	a.log.Info("config stream up", "addr", addr, "host_id", a.hostID.Load(), "held_version", a.version.Load(), "snapshot", w.Snapshot)

	// The frames of a multi-frame delta so far (head: the versions of the
	// first), and their size; past MaxDeltaBytes the frames are dropped,
	// size keeps counting, and the delta is refused when its last frame
	// arrives.
	var (
		frames []*wire.Delta
		head   *wire.Delta
		size   int
	)
	for {
		m, err := conn.ReadMessage(ctx)
		if errors.Is(err, wire.ErrUnknownType) {
			continue // a newer controller's message: skipped
		}
		if err != nil {
			return true, fmt.Errorf("read config stream from %s: %w", addr, err)
		}
		switch m := m.(type) {
		case *wire.Welcome:
			if m.Error != "" {
				return true, fmt.Errorf("config stream %s: %w: %s", addr, errMoved, m.Error)
			}
			if !a.welcome(m, addr) {
				return true, errReplicaRemoved
			}
		case *wire.Delta:
			if head != nil && !sameDelta(head, m) {
				// A new delta began before the previous one's last frame.
				a.log.Warn("incomplete multi-frame delta", "to", head.ToVersion, "frames", len(frames))
				if err := a.reply(ctx, conn, a.nack(head.ToVersion, "incomplete multi-frame delta")); err != nil {
					return true, err
				}
				frames, head, size = nil, nil, 0
			}
			if head == nil {
				head = &wire.Delta{FromVersion: m.FromVersion, ToVersion: m.ToVersion, Snapshot: m.Snapshot}
			}
			if size += deltaSize(m); size <= a.cfg.MaxDeltaBytes {
				frames = append(frames, m)
			} else {
				frames = nil
			}
			if m.More {
				continue
			}
			var reply wire.Message
			a.setMu.Lock()
			if size > a.cfg.MaxDeltaBytes {
				reply = a.nack(m.ToVersion, fmt.Sprintf("delta to version %d of about %d bytes exceeds the agent's limit of %d bytes",
					m.ToVersion, size, a.cfg.MaxDeltaBytes))
			} else {
				reply = a.applyDelta(ctx, frames)
			}
			err := a.reply(ctx, conn, reply)
			a.setMu.Unlock()
			frames, head, size = nil, nil, 0
			if err != nil {
				return true, err
			}
		case *wire.Invalidate:
			a.invalidate(ctx, m)
		default:
			a.log.Warn("unexpected config stream message ignored", "addr", addr, "type", m.FrameType())
		}
	}
}

// handshake sends a signed Hello with the version held and reads the
// answer: a refusal, or the Welcome of an authenticated controller and
// the session's datagram key (wire.Conn.Handshake).
func (a *Agent) handshake(ctx context.Context, conn *wire.Conn) (*wire.Welcome, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	defer cancel()
	nonce, err := wire.NewNonce()
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	held := a.view
	a.mu.Unlock()
	h := &wire.Hello{
		Host: a.cfg.Host, HostID: a.hostID.Load(), AgentVersion: a.cfg.AgentVersion,
		Nonce: nonce, Time: time.Now().Unix(),
	}
	if held != nil && held.Version != 0 {
		// The hash lets a replica without history back to this version
		// confirm that the agent is current instead of sending a snapshot.
		h.ViewVersion, h.ViewHash = held.Version, held.Hash()
	}
	return conn.Handshake(ctx, h, a.cfg.Key)
}

// welcome takes the host ID and replica list of a Welcome. It reports
// whether addr is still one of the replicas.
func (a *Agent) welcome(w *wire.Welcome, addr string) bool {
	if w.HostID != 0 && a.setHostID(w.HostID) {
		a.log.Info("host ID assigned", "host_id", w.HostID)
	}
	if len(w.Replicas) == 0 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Equal(a.replicas, w.Replicas) {
		a.replicas = slices.Clone(w.Replicas)
		a.log.Info("controller replicas updated", "replicas", w.Replicas, "version", w.ReplicasVersion)
	}
	return slices.Contains(a.replicas, addr)
}

// connect marks the session up on conn: the reconciler tells the
// controller about programming errors on it (tell), starting with any the
// controller has not heard.
func (a *Agent) connect(ctx context.Context, conn *wire.Conn) {
	a.counters.connects.Add(1)
	a.connected.Store(true)
	a.setMu.Lock()
	defer a.setMu.Unlock()
	a.stream = conn
	a.tell(ctx)
}

// disconnect marks the session down.
func (a *Agent) disconnect() {
	a.connected.Store(false)
	a.setMu.Lock()
	a.stream = nil
	a.setMu.Unlock()
}

// deltaSize is about the bytes a delta frame holds in memory once decoded:
// its resources' data and keys and a fixed cost per entry.
func deltaSize(d *wire.Delta) int {
	n := 64 + len(d.ViewHash)
	for _, r := range d.Upserts {
		n += 64 + len(r.Key.Type) + len(r.Key.ID) + len(r.Data)
	}
	for _, k := range d.Deletes {
		n += 32 + len(k.Type) + len(k.ID)
	}
	return n
}

func sameDelta(a, b *wire.Delta) bool {
	return a.FromVersion == b.FromVersion && a.ToVersion == b.ToVersion && a.Snapshot == b.Snapshot
}

func (a *Agent) reply(ctx context.Context, conn *wire.Conn, m wire.Message) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := conn.WriteMessage(ctx, m); err != nil {
		return fmt.Errorf("answer the controller: %w", err)
	}
	return nil
}

// bindAddressNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be
// bound to a source address with port 0: the port is then chosen at
// connect time among those free for that destination, instead of at bind
// time among those free for any (which runs out after ~28,000 connections
// from one address, and gets slow well before).
func bindAddressNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set IP_BIND_ADDRESS_NO_PORT: %w", serr)
	}
	return nil
}
