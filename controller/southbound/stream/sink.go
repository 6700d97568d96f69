package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/internal/lifecycle"
)

// Defaults of RegistrySinkConfig.
const (
	DefaultSinkInterval = time.Second
	DefaultSinkWorkers  = 32
	// finalFlushTimeout bounds the flush Close makes.
	finalFlushTimeout = 5 * time.Second
)

// StatusWriter changes Host status; *registry.Registry is one.
type StatusWriter interface {
	PatchStatus(ctx context.Context, ref apiv1.Ref, patch func(next apiv1.Object) bool) (apiv1.Object, error)
}

var (
	_ StatusWriter = (*registry.Registry)(nil)
	_ StatusSink   = (*RegistrySink)(nil)
)

// RegistrySinkConfig configures a RegistrySink.
type RegistrySinkConfig struct {
	// Registry writes the Host status (required).
	Registry StatusWriter
	// Replica is this replica's southbound address, written as
	// Host.status.replica when an agent connects (empty: not written).
	Replica string
	// Owns, if set, reports whether this replica may write a host's
	// liveness other than Alive (liveness.RegistrySinkConfig.SpeaksFor),
	// decided on the stored host as it is to be written: a queued
	// Suspect or Dead is dropped if the host moved to another replica
	// meanwhile.
	Owns func(h *apiv1.Host) bool
	// Interval between flushes (default DefaultSinkInterval): a host's
	// status is written at most once per interval, and only if it changed.
	Interval time.Duration
	// Workers is the number of status writes in flight during a flush
	// (default DefaultSinkWorkers); the store groups them into few etcd txns.
	Workers int
	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the sink's metrics; nil means not registered.
	Registerer prometheus.Registerer
}

// RegistrySink is a StatusSink that writes Host.status.viewVersion,
// lastError (set on Nack, set to an Ack's programming error: cleared by an
// Ack without one), agentVersion and replica, and the
// liveness and lastSeen that the liveness tracker queues (QueueLiveness),
// through the registry, coalesced: the calls only update a pending record in memory,
// and a background flusher writes each changed host at most once per
// Interval. However often 100,000 agents ack, the etcd write rate is at
// most the hosts whose status changed per interval, and never more than the
// workers can commit: a flush that runs long delays the next one.
type RegistrySink struct {
	cfg RegistrySinkConfig
	reg StatusWriter
	log *slog.Logger

	writes, errs, skipped prometheus.Counter
	pendingGauge          prometheus.Gauge

	mu      sync.Mutex
	pending map[string]*statusUpdate

	life      lifecycle.Group
	lastFlush sync.Once // Close's
}

// statusUpdate is what is known about a host since its last write.
type statusUpdate struct {
	setAgent     bool
	agentVersion string
	setView      bool
	viewVersion  uint64
	setError     bool
	lastError    string
	setReplica   bool
	replica      string
	setLiveness  bool
	liveness     string
	lastSeen     time.Time // zero: leave the stored lastSeen
}

// under returns newer with the fields it does not set taken from u: an
// older update lies under a newer one.
func (u *statusUpdate) under(newer *statusUpdate) *statusUpdate {
	out := *newer
	if !out.setAgent && u.setAgent {
		out.setAgent, out.agentVersion = true, u.agentVersion
	}
	if !out.setView && u.setView {
		out.setView, out.viewVersion = true, u.viewVersion
	}
	if !out.setError && u.setError {
		out.setError, out.lastError = true, u.lastError
	}
	if !out.setReplica && u.setReplica {
		out.setReplica, out.replica = true, u.replica
	}
	if !out.setLiveness && u.setLiveness {
		out.setLiveness, out.liveness = true, u.liveness
	}
	if out.lastSeen.IsZero() || u.lastSeen.After(out.lastSeen) {
		out.lastSeen = u.lastSeen // never move lastSeen back
	}
	return &out
}

// NewRegistrySink returns a sink; Start begins flushing.
func NewRegistrySink(cfg RegistrySinkConfig) (*RegistrySink, error) {
	if cfg.Registry == nil {
		return nil, errors.New("stream: registry sink: Registry is required")
	}
	if cfg.Interval < 0 || cfg.Workers < 0 {
		return nil, errors.New("stream: registry sink: Interval and Workers must not be negative")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultSinkInterval
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultSinkWorkers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &RegistrySink{
		cfg: cfg,
		reg: cfg.Registry,
		log: cfg.Logger.With("subsystem", "stream-status"),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_stream_status_writes_total", Help: "Host status writes made for agent acks, nacks and connects."}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_stream_status_write_errors_total", Help: "Host status writes that failed (retried at the next flush)."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_stream_status_unchanged_total", Help: "Pending host statuses not written because nothing changed."}),
		pendingGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_stream_status_pending", Help: "Hosts whose status waits for the next flush."}),
		pending: map[string]*statusUpdate{},
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.writes, s.errs, s.skipped, s.pendingGauge} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("stream: registry sink: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Start begins flushing every Interval until Close. ctx is not used:
// starting blocks on nothing.
func (s *RegistrySink) Start(context.Context) error {
	if _, err := s.life.Start(); err != nil {
		return fmt.Errorf("stream: registry sink: %w", err)
	}
	s.life.Go(s.loop)
	return nil
}

// Close stops the flusher, then flushes what is pending one last time
// (bounded by a few seconds). It is idempotent.
func (s *RegistrySink) Close() error {
	err := s.life.Close()
	s.lastFlush.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
		defer cancel()
		s.flush(ctx)
	})
	return err
}

func (s *RegistrySink) loop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.flush(ctx)
		case <-ctx.Done():
			return
		}
	}
}

// Connected implements StatusSink: agentVersion is set, and Config.Replica
// as the replica the host streams from.
func (s *RegistrySink) Connected(host, agentVersion string) {
	u := &statusUpdate{setAgent: true, agentVersion: agentVersion}
	if s.cfg.Replica != "" {
		u.setReplica, u.replica = true, s.cfg.Replica
	}
	s.update(host, u)
}

// Acked implements StatusSink: viewVersion is set, and lastError to the
// programming error (cleared if none).
func (s *RegistrySink) Acked(host string, version uint64, programErr string) {
	s.update(host, &statusUpdate{setView: true, viewVersion: version, setError: true, lastError: bounded(programErr)})
}

// Nacked implements StatusSink: lastError is set.
func (s *RegistrySink) Nacked(host string, _ uint64, err string) {
	if err == "" {
		err = "agent refused the view without a reason"
	}
	s.update(host, &statusUpdate{setError: true, lastError: bounded(err)})
}

// maxLastError bounds the bytes of an agent's error kept in
// Host.status.lastError; a longer one is cut, marked with "…".
const maxLastError = 1024

// bounded cuts msg to maxLastError bytes, at a UTF-8 character boundary.
func bounded(msg string) string {
	if len(msg) <= maxLastError {
		return msg
	}
	const mark = "…"
	cut := maxLastError - len(mark)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + mark
}

// QueueLiveness implements liveness.HostStatusQueue: a host's liveness
// (and lastSeen, unless zero) is written with the host's next status
// write, so that a host coming back costs one etcd write, not one per
// status writer.
func (s *RegistrySink) QueueLiveness(host, liveness string, lastSeen time.Time) {
	s.update(host, &statusUpdate{setLiveness: true, liveness: liveness, lastSeen: lastSeen})
}

// Disconnected implements StatusSink. Liveness, not this sink, reports
// hosts that went away.
func (s *RegistrySink) Disconnected(string) {}

func (s *RegistrySink) update(host string, u *statusUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.pending[host]; old != nil {
		u = old.under(u)
	}
	s.pending[host] = u
	s.pendingGauge.Set(float64(len(s.pending)))
}

// flush writes every pending host whose stored status differs.
func (s *RegistrySink) flush(ctx context.Context) {
	s.mu.Lock()
	batch := s.pending
	s.pending = map[string]*statusUpdate{}
	s.pendingGauge.Set(0)
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	type job struct {
		host string
		u    *statusUpdate
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range min(s.cfg.Workers, len(batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := s.write(ctx, j.host, j.u); err != nil {
					s.errs.Inc()
					s.log.Warn("write host status", "host", j.host, "err", err)
					s.requeue(j.host, j.u)
				}
			}
		}()
	}
	for h, u := range batch {
		jobs <- job{h, u}
	}
	close(jobs)
	wg.Wait()
}

// requeue puts back an update that failed to be written, under any newer one.
func (s *RegistrySink) requeue(host string, u *statusUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if newer := s.pending[host]; newer != nil {
		u = u.under(newer)
	}
	s.pending[host] = u
	s.pendingGauge.Set(float64(len(s.pending)))
}

// write applies u to host's stored status, if that changes anything. Only
// the fields the sink owns are written: a concurrent liveness write is
// kept. A host that does not exist (an agent connected before its Host
// was created) is skipped.
func (s *RegistrySink) write(ctx context.Context, host string, u *statusUpdate) error {
	changed := false
	_, err := s.reg.PatchStatus(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: host}, func(next apiv1.Object) bool {
		h, ok := next.(*apiv1.Host)
		if !ok {
			return false
		}
		st := h.Status
		if u.setAgent {
			st.AgentVersion = u.agentVersion
		}
		if u.setView {
			st.ViewVersion = u.viewVersion
		}
		if u.setError {
			st.LastError = u.lastError
		}
		if u.setReplica {
			st.Replica = u.replica
		}
		if u.setLiveness && (u.liveness == apiv1.LivenessAlive || s.cfg.Owns == nil || s.cfg.Owns(&apiv1.Host{Metadata: h.Metadata, Status: st})) {
			st.Liveness = u.liveness
		}
		if !u.lastSeen.IsZero() {
			// Never back: a retried update may be older than what
			// another replica wrote meanwhile.
			if old, err := time.Parse(time.RFC3339Nano, st.LastSeen); err != nil || u.lastSeen.After(old) {
				st.LastSeen = u.lastSeen.UTC().Format(time.RFC3339Nano)
			}
		}
		old := h.Status
		h.Status = st
		apiv1.SetHostConditions(h, time.Now()) // Alive and ViewApplied from the fields above
		changed = !reflect.DeepEqual(h.Status, old)
		return changed
	})
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("update status of host %s: %w", host, err)
	}
	if changed {
		s.writes.Inc()
	} else {
		s.skipped.Inc()
	}
	return nil
}

func isNotFound(err error) bool {
	var se *apiv1.StatusError
	return errors.As(err, &se) && se.Reason == apiv1.ReasonNotFound
}
