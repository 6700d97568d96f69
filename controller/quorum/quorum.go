// Package quorum tells whether a controller replica reaches a working etcd
// majority and may write. A Guard probes etcd through the replica's own
// client with a linearizable read every Interval (a read the leader must
// confirm with a majority, so a member cut off with a minority fails it)
// and lists the cluster's alarms every AlarmInterval. The replica is
// unwritable when no probe has succeeded for LostAfter, or while a
// NOSPACE alarm is raised; Err then says why. The controller refuses
// writes with that reason (503), reports it on /readyz and, when it lasts,
// closes its agents' config streams so that they move to a healthy
// replica.
//
// A busy etcd is not a lost quorum. When a probe's read times out, the
// Guard asks the members it reaches for their status (answered by each
// member locally, outside raft): a member that follows a leader is on the
// majority's side, because etcd's leaders step down when they lose touch
// with a majority (CheckQuorum) and a follower cut off drops its leader
// when its election timeout passes (pre-vote); such a probe counts as
// answered. A member that answers without a leader confirms the loss at
// once, without waiting LostAfter: a cut-off replica refuses writes about
// an election timeout and a probe timeout after the cut, and its clients
// move to another replica instead of waiting for their own timeouts.
// When nothing answers at all (etcd saturated, or every member cut off
// from this replica) the replica waits SilentAfter instead of LostAfter,
// and Err wraps ErrUnresponsive too: the controller then refuses writes
// but keeps its agents.
// Without this, a cold start that loaded etcd past the probe's timeout
// made every replica refuse writes and fence its agents, whose
// reconnections loaded etcd further.
//
// A leader election after a member's crash takes an election timeout and
// a round or two (about 1–2 s): LostAfter is above that, so that a
// majority's replicas do not refuse writes for every election.
package quorum

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/lifecycle"
)

// Errors that Err wraps.
var (
	// ErrNoQuorum: etcd did not confirm a read for LostAfter (no leader,
	// or this replica's etcd is on the minority side of a partition).
	ErrNoQuorum = errors.New("quorum: etcd has no quorum reachable from this replica")
	// ErrNoSpace: etcd's backend reached its quota (NOSPACE alarm); it
	// refuses writes until an operator compacts, defragments and disarms
	// the alarm ('weft etcd defrag').
	ErrNoSpace = errors.New("quorum: etcd is out of space (NOSPACE alarm)")
	// ErrUnresponsive comes with ErrNoQuorum when no member answered at
	// all, not even its status: etcd may be saturated rather than cut
	// off, so the replica refuses writes but keeps its agents (moving
	// them all would load etcd further).
	ErrUnresponsive = errors.New("quorum: no etcd member answers")
)

// Defaults of Config.
const (
	DefaultInterval      = 250 * time.Millisecond
	DefaultTimeout       = time.Second
	DefaultLostAfter     = 2 * time.Second
	DefaultAlarmInterval = 2 * time.Second
	DefaultSilentAfter   = 10 * time.Second
)

// Etcd is what a Guard asks of etcd: *clientv3.Client.
type Etcd interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Status(ctx context.Context, endpoint string) (*clientv3.StatusResponse, error)
	AlarmList(ctx context.Context) (*clientv3.AlarmResponse, error)
	Endpoints() []string
}

var _ Etcd = (*clientv3.Client)(nil)

// Config configures a Guard.
type Config struct {
	// Client is the replica's etcd client (required).
	Client Etcd
	// Key is the key the probes read (required; one that exists or not).
	Key string
	// Interval between probes, Timeout of each, LostAfter without a
	// successful one before the replica is unwritable, and AlarmInterval
	// between alarm lists (defaults above).
	Interval, Timeout, LostAfter, AlarmInterval time.Duration
	// StatusTimeout bounds each member status request that follows a
	// probe's timed-out read (default DefaultTimeout).
	StatusTimeout time.Duration
	// SilentAfter replaces LostAfter while probes time out and no member
	// answers its status either (default DefaultSilentAfter).
	SilentAfter time.Duration

	Logger *slog.Logger
	// Registerer receives weft_etcd_writable and
	// weft_etcd_quorum_probes_slow_total; nil means not registered.
	Registerer prometheus.Registerer
}

// Guard follows the replica's reach of an etcd quorum.
type Guard struct {
	cfg  Config
	log  *slog.Logger
	busy prometheus.Counter // probes answered by a member's status
	life lifecycle.Group

	mu       sync.Mutex
	lastOK   time.Time // of the latest successful probe
	probeErr error     // of the latest failed probe since lastOK
	silent   bool      // that probe timed out and no member answered
	noLeader bool      // that probe timed out and the members answered without a leader
	noSpace  string    // the members with a NOSPACE alarm ("" none)
	err      error     // what Err returns
}

// New checks cfg.
func New(cfg Config) (*Guard, error) {
	if cfg.Client == nil || cfg.Key == "" {
		return nil, errors.New("quorum: Client and Key are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.SilentAfter <= 0 {
		cfg.SilentAfter = DefaultSilentAfter
	}
	if cfg.StatusTimeout <= 0 {
		cfg.StatusTimeout = DefaultTimeout
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = DefaultLostAfter
	}
	if cfg.AlarmInterval <= 0 {
		cfg.AlarmInterval = DefaultAlarmInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Guard{
		cfg: cfg, log: cfg.Logger.With("subsystem", "quorum"), lastOK: time.Now(),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_etcd_quorum_probes_slow_total",
			Help: "Quorum probes whose linearizable read timed out while a reachable etcd member followed a leader: etcd was busy, not cut off.",
		}),
	}
	if cfg.Registerer != nil {
		writable := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weft_etcd_writable",
			Help: "1 while this replica reaches an etcd quorum without a NOSPACE alarm, 0 while it refuses writes.",
		}, func() float64 {
			if g.Err() != nil {
				return 0
			}
			return 1
		})
		for _, c := range []prometheus.Collector{writable, g.busy} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("quorum: register metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Start begins probing. The replica counts as writable until LostAfter
// passes without a successful probe.
func (g *Guard) Start(context.Context) error {
	if _, err := g.life.Start(); err != nil {
		return fmt.Errorf("quorum: %w", err)
	}
	g.life.Go(func(ctx context.Context) { g.loop(ctx, g.cfg.Interval, g.probe) })
	g.life.Go(func(ctx context.Context) { g.loop(ctx, g.cfg.AlarmInterval, g.alarms) })
	return nil
}

// Close stops probing; idempotent.
func (g *Guard) Close() error { return g.life.Close() }

// Err returns nil while the replica may write, else why not (wrapping
// ErrNoQuorum or ErrNoSpace).
func (g *Guard) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (g *Guard) loop(ctx context.Context, every time.Duration, f func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		f(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe reads Key linearizably (count only); a read that times out is
// judged by the members' status (see the package doc).
func (g *Guard) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	_, err := g.cfg.Client.Get(pctx, g.cfg.Key, clientv3.WithCountOnly())
	timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded)
	cancel()
	silent, noLeader := false, false
	if err != nil && timedOut {
		switch leader, answered := g.leader(ctx); {
		case leader:
			g.busy.Inc()
			err = nil
		case !answered:
			silent = true
		default:
			err, noLeader = fmt.Errorf("%w; the member reached has no leader", err), true
		}
	}
	if ctx.Err() != nil {
		return
	}
	g.mu.Lock()
	if err == nil {
		g.lastOK, g.probeErr, g.silent, g.noLeader = time.Now(), nil, false, false
	} else {
		g.probeErr, g.silent, g.noLeader = err, silent, noLeader
	}
	g.update()
}

// leader asks the members this replica reaches for their status (each
// answers it locally, not through raft): whether one follows a leader,
// and whether any answered.
func (g *Guard) leader(ctx context.Context) (leader, answered bool) {
	for _, ep := range g.cfg.Client.Endpoints() {
		sctx, cancel := context.WithTimeout(ctx, g.cfg.StatusTimeout)
		st, err := g.cfg.Client.Status(sctx, ep)
		cancel()
		if err != nil {
			continue
		}
		if st.Leader != 0 {
			return true, true
		}
		answered = true
	}
	return false, answered
}

// alarms lists the cluster's alarms; a failed list changes nothing (the
// probes judge the quorum).
func (g *Guard) alarms(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	resp, err := g.cfg.Client.AlarmList(actx)
	cancel()
	if err != nil || ctx.Err() != nil {
		return
	}
	noSpace := ""
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			noSpace += fmt.Sprintf(" %x", a.MemberID)
		}
	}
	g.mu.Lock()
	g.noSpace = noSpace
	g.update()
}

// update recomputes err and logs a change; g.mu is held and released.
func (g *Guard) update() {
	var err error
	lostAfter := g.cfg.LostAfter
	if g.silent {
		lostAfter = max(lostAfter, g.cfg.SilentAfter)
	}
	switch since := time.Since(g.lastOK); {
	case g.probeErr != nil && g.noLeader:
		err = fmt.Errorf("%w: %w", ErrNoQuorum, g.probeErr)
	case g.probeErr != nil && since >= lostAfter && g.silent:
		err = fmt.Errorf("%w (%w): no read confirmed for %s (last error: %v)", ErrNoQuorum, ErrUnresponsive, since.Round(100*time.Millisecond), g.probeErr)
	case g.probeErr != nil && since >= lostAfter:
		err = fmt.Errorf("%w: no read confirmed for %s (last error: %v)", ErrNoQuorum, since.Round(100*time.Millisecond), g.probeErr)
	case g.noSpace != "":
		err = fmt.Errorf("%w on member(s)%s: writes are refused until the space is reclaimed (compact, defragment, disarm the alarm: 'weft etcd defrag')", ErrNoSpace, g.noSpace)
	}
	was := g.err
	g.err = err
	g.mu.Unlock()
	if (was == nil) == (err == nil) {
		return
	}
	if err != nil {
		g.log.Warn("replica unwritable", "err", err)
	} else {
		g.log.Info("replica writable again", "was", was)
	}
}
