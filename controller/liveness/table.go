package liveness

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/lifecycle"
)

// State is a host's liveness as the controller sees it.
type State uint8

// States. Their String values are the apiv1.Liveness* constants.
const (
	Unknown State = iota // never heard from since the table started
	Alive                // heartbeats arrive
	Suspect              // a heartbeat is late, or the host flaps and is held down
	Dead                 // no heartbeat for Config.DeadAfter
)

// String returns the apiv1 liveness value of the state.
func (s State) String() string {
	switch s {
	case Unknown:
		return apiv1.LivenessUnknown
	case Alive:
		return apiv1.LivenessAlive
	case Suspect:
		return apiv1.LivenessSuspect
	case Dead:
		return apiv1.LivenessDead
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Defaults of Config. With heartbeats every second, a host is suspect after
// one missed heartbeat (plus half a second of jitter) and dead after two,
// detected at most DefaultDeadAfter + DefaultSweepInterval = 2.75 s after
// its last heartbeat: within the 3 s goal with room for a late sweep.
const (
	DefaultCapacity      = 1 << 20
	DefaultSuspectAfter  = 1500 * time.Millisecond
	DefaultDeadAfter     = 2500 * time.Millisecond
	DefaultSweepInterval = 250 * time.Millisecond
	DefaultFlushInterval = 500 * time.Millisecond
	DefaultFlapWindow    = time.Minute
	DefaultMaxFlaps      = 3
	DefaultHoldDown      = 10 * time.Second
	// DefaultSinkAttempts is how often a batch of transitions is handed to
	// the Sink before the table gives up on it.
	DefaultSinkAttempts = 5
)

// Config configures a Table. Zero values select the defaults.
type Config struct {
	// Capacity is the number of host slots: host IDs 0..Capacity-1 are
	// tracked (default DefaultCapacity, 1,048,576). The table allocates
	// BytesPerHost bytes per slot up front.
	Capacity int
	// SuspectAfter is how long without a heartbeat makes an Alive host
	// Suspect (default DefaultSuspectAfter).
	SuspectAfter time.Duration
	// DeadAfter is how long without a heartbeat makes a host Dead (default
	// DefaultDeadAfter). A dead host is detected at most DeadAfter +
	// SweepInterval after its last heartbeat.
	DeadAfter time.Duration
	// SweepInterval is the period of the sweeper (default DefaultSweepInterval).
	SweepInterval time.Duration
	// FlushInterval is the period at which transitions are handed to the
	// Sink (default DefaultFlushInterval).
	FlushInterval time.Duration
	// FlapWindow, MaxFlaps and HoldDown damp flapping: a host that dropped
	// out of Alive more than MaxFlaps times within FlapWindow stays Suspect
	// for HoldDown of uninterrupted heartbeats before it is Alive again
	// (defaults DefaultFlapWindow, DefaultMaxFlaps, DefaultHoldDown).
	FlapWindow time.Duration
	MaxFlaps   int
	HoldDown   time.Duration
	// SinkAttempts bounds how often one transition is handed to a failing
	// Sink (default DefaultSinkAttempts).
	SinkAttempts int
	// Sink receives the transitions (nil: they are only counted).
	Sink Sink
	// Now returns the monotonic clock in nanoseconds (default: time since
	// New). Tests inject a fake clock and call Sweep and Flush themselves.
	Now func() int64
	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the table's metrics; nil means not registered.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	def(&c.SuspectAfter, DefaultSuspectAfter)
	def(&c.DeadAfter, DefaultDeadAfter)
	def(&c.SweepInterval, DefaultSweepInterval)
	def(&c.FlushInterval, DefaultFlushInterval)
	def(&c.FlapWindow, DefaultFlapWindow)
	def(&c.HoldDown, DefaultHoldDown)
	if c.MaxFlaps == 0 {
		c.MaxFlaps = DefaultMaxFlaps
	}
	if c.SinkAttempts == 0 {
		c.SinkAttempts = DefaultSinkAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports an impossible setting. Zero values are valid: they
// select the defaults.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Capacity < 0 || c.Capacity > 1<<32 {
		errs = append(errs, fmt.Errorf("Capacity %d out of range 1..2^32", c.Capacity))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"SuspectAfter", c.SuspectAfter}, {"DeadAfter", c.DeadAfter}, {"SweepInterval", c.SweepInterval},
		{"FlushInterval", c.FlushInterval}, {"FlapWindow", c.FlapWindow}, {"HoldDown", c.HoldDown},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if c.SuspectAfter >= c.DeadAfter {
		errs = append(errs, fmt.Errorf("SuspectAfter %v must be below DeadAfter %v", c.SuspectAfter, c.DeadAfter))
	}
	if c.MaxFlaps < 0 || c.SinkAttempts < 0 {
		errs = append(errs, errors.New("MaxFlaps and SinkAttempts must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("liveness config: %w", err)
	}
	return nil
}

// BytesPerHost is the size of one host slot.
const BytesPerHost = 40

// slot is one host's entry. It holds no pointers, so the garbage collector
// never scans the table. The first three fields are written by Observe
// (any goroutine, atomically); the others belong to the sweeper and are
// written under Table.mu.
type slot struct {
	lastSeen atomic.Int64  // monotonic ns of the latest heartbeat; 0: none
	view     atomic.Uint64 // view version from the latest heartbeat
	health   atomic.Uint32 // health flags from the latest heartbeat
	meta     atomic.Uint32 // state | flags<<8 | flaps<<16
	// since is when the state last changed; for a held host, when the
	// hold-down started; for a tracked Unknown host, when it was tracked.
	since int64
	// flapStart is the start of the current flap window.
	flapStart int64
}

// meta layout.
const (
	metaStateMask = 0xff
	flagTracked   = 1 << 8 // Track was called: an Unknown host goes Dead if silent
	flagHeld      = 1 << 9 // Suspect because of flap damping
	flapShift     = 16
	maxFlapCount  = 0xffff
)

func (s *slot) state() State { return State(s.meta.Load() & metaStateMask) }

// HostInfo is what the table knows about one host.
type HostInfo struct {
	State State
	// Since is when the host entered State.
	Since time.Time
	// LastSeen is the time of the latest heartbeat (zero if none).
	LastSeen    time.Time
	ViewVersion uint64
	Health      uint32
	// Flaps is the number of drops out of Alive in the current flap window.
	Flaps int
	// Held is set while flap damping keeps the host Suspect.
	Held bool
}

// StateCounts is the number of hosts in each state, Unknown counting only
// tracked or observed hosts.
type StateCounts struct {
	Unknown, Alive, Suspect, Dead int
}

// Table is the in-memory liveness table. See the package documentation.
type Table struct {
	cfg   Config
	log   *slog.Logger
	now   func() int64
	base  time.Time // wall time of monotonic 0
	slots []slot
	// high is the highest host ID ever observed or tracked: sweeps stop there.
	high atomic.Uint32
	any  atomic.Bool // high is meaningful

	mu     sync.Mutex // sweeper-owned slot fields
	counts atomic.Pointer[StateCounts]

	pendMu  sync.Mutex
	pending map[uint32]*pendingTransition

	m *metrics

	life lifecycle.Group
}

type pendingTransition struct {
	Transition
	attempts int
}

// New returns a Table. Call Start to run the sweeper, or drive it with
// Sweep and Flush.
func New(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("liveness metrics: %w", err)
	}
	t := &Table{
		cfg:     cfg,
		log:     cfg.Logger.With("subsystem", "liveness"),
		now:     cfg.Now,
		base:    time.Now(),
		slots:   make([]slot, cfg.Capacity),
		pending: map[uint32]*pendingTransition{},
		m:       m,
	}
	if t.now == nil {
		base := t.base
		t.now = func() int64 { return int64(time.Since(base)) }
	}
	t.counts.Store(&StateCounts{})
	return t, nil
}

// Capacity returns the number of host slots.
func (t *Table) Capacity() int { return len(t.slots) }

// Now returns the table's monotonic clock in nanoseconds, the time base of
// Observe, Track and Sweep.
func (t *Table) Now() int64 { return t.now() }

// Time converts a reading of the table's clock to wall time.
func (t *Table) Time(mono int64) time.Time { return t.base.Add(time.Duration(mono)) }

// Observe records a heartbeat of a host at now (the table's clock). It is
// the hot path: lock-free, no allocation; state changes happen at the next
// sweep. It reports false for a host ID beyond the table's capacity.
func (t *Table) Observe(hostID uint32, now int64, viewVersion uint64, health uint32) bool {
	if uint64(hostID) >= uint64(len(t.slots)) {
		return false
	}
	s := &t.slots[hostID]
	s.view.Store(viewVersion)
	s.health.Store(health)
	s.lastSeen.Store(max(now, 1)) // 0 means never
	t.raiseHigh(hostID)
	return true
}

func (t *Table) raiseHigh(hostID uint32) {
	// Loads first: the shared word is written only when the range grows.
	for {
		h := t.high.Load()
		if t.any.Load() && hostID <= h {
			return
		}
		if t.high.CompareAndSwap(h, max(h, hostID)) {
			t.any.Store(true)
			return
		}
	}
}

// Track declares a registered host (now is the table's clock): if it stays
// Unknown, sending no heartbeat for DeadAfter, it becomes Dead. Without
// Track a host that never heartbeats stays Unknown, which after a
// controller restart would leave a host that died meanwhile reported alive.
// It reports false for a host ID beyond the table's capacity.
func (t *Table) Track(hostID uint32, now int64) bool {
	if uint64(hostID) >= uint64(len(t.slots)) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.slots[hostID]
	m := s.meta.Load()
	if m&flagTracked == 0 {
		if State(m&metaStateMask) == Unknown {
			s.since = now
		}
		s.meta.Store(m | flagTracked)
	}
	t.raiseHigh(hostID)
	return true
}

// Forget clears a host's slot (the host was deleted). No transition is
// reported.
func (t *Table) Forget(hostID uint32) {
	if uint64(hostID) >= uint64(len(t.slots)) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.slots[hostID]
	s.lastSeen.Store(0)
	s.view.Store(0)
	s.health.Store(0)
	s.meta.Store(0)
	s.since, s.flapStart = 0, 0
	t.pendMu.Lock()
	delete(t.pending, hostID)
	t.pendMu.Unlock()
}

// State returns a host's state.
func (t *Table) State(hostID uint32) State {
	if uint64(hostID) >= uint64(len(t.slots)) {
		return Unknown
	}
	return t.slots[hostID].state()
}

// Get returns what the table knows about a host; false if the ID is out of
// range or the host was never tracked nor heard from.
func (t *Table) Get(hostID uint32) (HostInfo, bool) {
	if uint64(hostID) >= uint64(len(t.slots)) {
		return HostInfo{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.slots[hostID]
	m := s.meta.Load()
	seen := s.lastSeen.Load()
	if m == 0 && seen == 0 {
		return HostInfo{}, false
	}
	info := HostInfo{
		State:       State(m & metaStateMask),
		ViewVersion: s.view.Load(),
		Health:      s.health.Load(),
		Flaps:       int(m >> flapShift),
		Held:        m&flagHeld != 0,
	}
	if s.since != 0 {
		info.Since = t.Time(s.since)
	}
	if seen != 0 {
		info.LastSeen = t.Time(seen)
	}
	return info, true
}

// Counts returns the number of hosts per state as of the last sweep.
func (t *Table) Counts() StateCounts { return *t.counts.Load() }

// Sweep moves every host to the state its last heartbeat implies at now
// (the table's clock) and queues the transitions for the Sink. The sweeper
// calls it every SweepInterval; tests with a fake clock call it directly.
func (t *Table) Sweep(now int64) {
	start := time.Now()
	t.mu.Lock()
	var counts StateCounts
	var out []Transition
	if t.any.Load() {
		hi := int(t.high.Load())
		for i := 0; i <= hi && i < len(t.slots); i++ {
			s := &t.slots[i]
			m := s.meta.Load()
			seen := s.lastSeen.Load()
			if m == 0 && seen == 0 {
				continue // an unused slot
			}
			from := State(m & metaStateMask)
			nm := t.step(s, m, seen, now)
			if nm != m {
				s.meta.Store(nm)
			}
			to := State(nm & metaStateMask)
			if to != from {
				s.since = now
				tr := Transition{HostID: uint32(i), From: from, To: to, At: t.Time(now)}
				if seen != 0 {
					tr.LastSeen = t.Time(seen)
				}
				out = append(out, tr)
			}
			switch to {
			case Unknown:
				counts.Unknown++
			case Alive:
				counts.Alive++
			case Suspect:
				counts.Suspect++
			case Dead:
				counts.Dead++
			}
		}
	}
	t.mu.Unlock()
	t.counts.Store(&counts)
	t.m.sweep(counts, out, time.Since(start))
	if len(out) > 0 {
		t.enqueue(out)
	}
}

// step returns the slot's next meta word. It may set s.since (the start of
// a hold-down) and s.flapStart. t.mu is held.
func (t *Table) step(s *slot, m uint32, seen, now int64) uint32 {
	st := State(m & metaStateMask)
	age := now - seen
	heard := seen != 0
	fresh := heard && age <= int64(t.cfg.SuspectAfter)
	dead := !heard || age > int64(t.cfg.DeadAfter)
	set := func(to State) uint32 { return m&^metaStateMask | uint32(to) }
	switch st {
	case Unknown:
		switch {
		case heard && !dead:
			return t.recover(s, m, now)
		case heard || m&flagTracked != 0 && now-s.since > int64(t.cfg.DeadAfter):
			return set(Dead)
		}
	case Alive:
		switch {
		case dead:
			return t.drop(s, set(Dead), now)
		case !fresh:
			return t.drop(s, set(Suspect), now)
		}
	case Suspect:
		switch {
		case dead:
			return set(Dead) &^ flagHeld
		case m&flagHeld != 0:
			// The hold-down counts uninterrupted heartbeats: a late one
			// starts it again.
			if !fresh {
				s.since = now
			} else if now-s.since >= int64(t.cfg.HoldDown) {
				return set(Alive) &^ flagHeld
			}
		case fresh:
			return t.recover(s, m, now)
		}
	case Dead:
		if fresh {
			return t.recover(s, m, now)
		}
	}
	return m
}

// drop counts a drop out of Alive in the flap window.
func (t *Table) drop(s *slot, m uint32, now int64) uint32 {
	flaps := m >> flapShift
	if now-s.flapStart > int64(t.cfg.FlapWindow) || flaps == 0 {
		s.flapStart, flaps = now, 0
	}
	if flaps < maxFlapCount {
		flaps++
	}
	return m&(1<<flapShift-1) | flaps<<flapShift
}

// recover handles heartbeats resuming: Alive, unless the host flapped more
// than MaxFlaps times in the window, in which case it is held Suspect.
func (t *Table) recover(s *slot, m uint32, now int64) uint32 {
	flaps := int(m >> flapShift)
	if now-s.flapStart > int64(t.cfg.FlapWindow) {
		flaps = 0
		m &= 1<<flapShift - 1
	}
	if flaps > t.cfg.MaxFlaps {
		s.since = now // the hold-down starts now
		return m&^metaStateMask | uint32(Suspect) | flagHeld
	}
	return m&^metaStateMask | uint32(Alive)
}

// enqueue adds transitions to the pending set, coalescing per host: the
// oldest From and the newest To are kept, and a host back where it started
// is dropped.
func (t *Table) enqueue(ts []Transition) {
	t.pendMu.Lock()
	defer t.pendMu.Unlock()
	for _, tr := range ts {
		p := t.pending[tr.HostID]
		if p == nil {
			t.pending[tr.HostID] = &pendingTransition{Transition: tr}
			continue
		}
		from := p.From
		p.Transition = tr
		p.From = from
		p.attempts = 0
		if p.From == p.To {
			delete(t.pending, tr.HostID)
		}
	}
}

// requeue puts back transitions a Sink failed to take, unless newer ones
// for the same hosts arrived meanwhile or they ran out of attempts.
func (t *Table) requeue(ps []*pendingTransition) (dropped int) {
	t.pendMu.Lock()
	defer t.pendMu.Unlock()
	for _, p := range ps {
		if cur := t.pending[p.HostID]; cur != nil {
			cur.From = p.From
			if cur.From == cur.To {
				delete(t.pending, p.HostID)
			}
			continue
		}
		if p.attempts >= t.cfg.SinkAttempts {
			dropped++
			continue
		}
		t.pending[p.HostID] = p
	}
	return dropped
}

// Flush hands the pending transitions, sorted by host ID, to the Sink. A
// failed batch is queued again for the next flush (up to SinkAttempts
// times). A BatchSink is called at every flush, with or without
// transitions; another Sink only when there are some. The flusher calls it
// every FlushInterval.
func (t *Table) Flush(ctx context.Context) error {
	bs, isBatchSink := t.cfg.Sink.(BatchSink)
	t.pendMu.Lock()
	if len(t.pending) == 0 && !isBatchSink {
		t.pendMu.Unlock()
		return nil
	}
	batch := make([]*pendingTransition, 0, len(t.pending))
	for _, p := range t.pending {
		batch = append(batch, p)
	}
	clear(t.pending)
	t.pendMu.Unlock()
	slices.SortFunc(batch, func(a, b *pendingTransition) int { return cmp.Compare(a.HostID, b.HostID) })
	if t.cfg.Sink == nil {
		return nil
	}
	ts := make([]Transition, len(batch))
	for i, p := range batch {
		ts[i] = p.Transition
		p.attempts++
	}
	var err error
	if isBatchSink {
		err = bs.Batch(ctx, Batch{Transitions: ts, At: t.Time(t.now()), Counts: t.Counts(), State: t.State})
	} else {
		err = t.cfg.Sink.Transitions(ctx, ts)
	}
	if err == nil {
		return nil
	}
	t.m.sinkErrors.Inc()
	if len(ts) == 0 {
		return fmt.Errorf("liveness: sink: %w", err)
	}
	dropped := t.requeue(batch)
	if dropped > 0 {
		return fmt.Errorf("liveness: hand %d transitions to sink (%d given up after %d attempts): %w", len(ts), dropped, t.cfg.SinkAttempts, err)
	}
	return fmt.Errorf("liveness: hand %d transitions to sink (will retry): %w", len(ts), err)
}

// Pending returns the number of hosts with transitions not yet handed to
// the Sink.
func (t *Table) Pending() int {
	t.pendMu.Lock()
	defer t.pendMu.Unlock()
	return len(t.pending)
}

// Start runs the sweeper (every SweepInterval) and the flusher (every
// FlushInterval) until Close. The flusher runs apart from the sweeper, so
// a slow Sink never delays detection.
func (t *Table) Start(context.Context) error {
	if _, err := t.life.Start(); err != nil {
		return fmt.Errorf("liveness: %w", err)
	}
	t.life.Go(func(ctx context.Context) { t.loop(ctx, t.cfg.SweepInterval, func() { t.Sweep(t.now()) }) })
	t.life.Go(func(ctx context.Context) {
		t.loop(ctx, t.cfg.FlushInterval, func() {
			if err := t.Flush(ctx); err != nil && ctx.Err() == nil {
				t.log.Warn("flush liveness transitions", "err", err)
			}
		})
	})
	return nil
}

func (t *Table) loop(ctx context.Context, every time.Duration, f func()) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
}

// Close stops the sweeper and the flusher and waits for them; transitions
// not yet flushed are dropped (call Flush first to hand them over). It is
// idempotent.
func (t *Table) Close() error { return t.life.Close() }
