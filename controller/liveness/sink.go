package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Transition is one host's change of state.
type Transition struct {
	HostID   uint32
	From, To State
	// At is when the sweeper saw the change.
	At time.Time
	// LastSeen is the time of the host's latest heartbeat (zero if none).
	LastSeen time.Time
}

// Sink receives batches of transitions, at most every FlushInterval, from
// one goroutine at a time. A batch holds at most one transition per host
// (coalesced: the oldest From, the newest To). An error makes the table
// hand the batch again at the next flush, so a Sink must be idempotent.
type Sink interface {
	Transitions(ctx context.Context, ts []Transition) error
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(ctx context.Context, ts []Transition) error

// Transitions implements Sink.
func (f SinkFunc) Transitions(ctx context.Context, ts []Transition) error { return f(ctx, ts) }

// HostSource reads hosts and their endpoints; *store.Store implements it.
// Returned objects are shared and never modified.
type HostSource interface {
	List(kind, tenant string) []apiv1.Object
	Get(kind, tenant, name string) (apiv1.Object, bool)
	EndpointsByHost(host string) []*apiv1.Endpoint
}

// StatusWriter changes an object's status; *registry.Registry implements it.
type StatusWriter interface {
	PatchStatus(ctx context.Context, ref apiv1.Ref, patch func(next apiv1.Object) bool) (apiv1.Object, error)
}

// DefaultSinkConcurrency is the default number of status writes a
// RegistrySink has in flight.
const DefaultSinkConcurrency = 16

// RegistrySinkConfig configures a RegistrySink.
type RegistrySinkConfig struct {
	// Store finds hosts by host ID and the endpoints on a host. Required.
	Store HostSource
	// Registry writes the statuses. Required.
	Registry StatusWriter
	// Concurrency bounds the status writes in flight (default
	// DefaultSinkConcurrency).
	Concurrency int
	// SpeaksFor, if set, reports whether this replica speaks for a host's
	// liveness when it stops hearing from it: with several replicas, each
	// host heartbeats to one of them, and the others must not report it
	// Suspect or Dead. A transition to Suspect or Dead of a host it does
	// not speak for is not written, and the host is handed to Forget.
	// Transitions to Alive are always written: its heartbeats arrive here.
	SpeaksFor func(h *apiv1.Host) bool
	// Forget drops a host this replica does not speak for from the
	// liveness table (Table.Forget); it tracks it again when it hears
	// from it.
	Forget func(hostID uint32)
	// Logger (default: discard).
	Logger *slog.Logger
}

// RegistrySink writes transitions to the API objects: a Host's
// status.liveness and status.lastSeen, and, when a host becomes Dead, the
// phase Lost (message "host NAME is dead") on its endpoints, which it
// returns to Ready when the host is Alive again. It recognises the
// endpoints it marked by that message, so it needs no memory of its own
// and survives a controller restart; an endpoint already Lost or Failed
// for another reason is left alone.
type RegistrySink struct {
	st        HostSource
	reg       StatusWriter
	limit     int
	log       *slog.Logger
	speaksFor func(h *apiv1.Host) bool
	forget    func(hostID uint32)

	mu   sync.Mutex
	byID map[uint32]string // host ID → Host name, rebuilt on a miss
}

// NewRegistrySink returns a RegistrySink.
func NewRegistrySink(cfg RegistrySinkConfig) (*RegistrySink, error) {
	if cfg.Store == nil || cfg.Registry == nil {
		return nil, errors.New("liveness: registry sink: Store and Registry are required")
	}
	if cfg.Concurrency < 0 {
		return nil, fmt.Errorf("liveness: registry sink: Concurrency %d is negative", cfg.Concurrency)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultSinkConcurrency
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &RegistrySink{st: cfg.Store, reg: cfg.Registry, limit: cfg.Concurrency,
		log: cfg.Logger.With("subsystem", "liveness-sink"), speaksFor: cfg.SpeaksFor, forget: cfg.Forget}, nil
}

// DeadMessage is the endpoint status message of an endpoint marked Lost
// because its host is dead.
func DeadMessage(host string) string { return "host " + host + " is dead" }

// Transitions implements Sink: host statuses first, then the endpoints of
// the hosts that died or came back, each step with bounded concurrency.
// Hosts that no longer exist are skipped.
func (s *RegistrySink) Transitions(ctx context.Context, ts []Transition) error {
	hosts := s.resolve(ts)
	for i, t := range ts {
		if h := hosts[i]; h != nil && (t.To == Suspect || t.To == Dead) && s.speaksFor != nil && !s.speaksFor(h) {
			s.log.Debug("host served by another replica: not reported", "host", h.Metadata.Name, "to", t.To, "replica", h.Status.Replica)
			hosts[i] = nil
			if s.forget != nil {
				s.forget(t.HostID)
			}
		}
	}
	var (
		errMu sync.Mutex
		errs  []error
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	var g errgroup.Group
	g.SetLimit(s.limit)
	for i, t := range ts {
		h := hosts[i]
		if h == nil {
			continue // unknown host ID, or served by another replica
		}
		g.Go(func() error {
			if err := s.writeHost(ctx, h, t); err != nil {
				fail(err)
			}
			return nil
		})
	}
	_ = g.Wait()

	var eps []*apiv1.Endpoint
	to := map[string]State{} // host → its last transition in ts
	for i, t := range ts {
		h := hosts[i]
		if h == nil || (t.To != Dead && t.To != Alive) {
			continue
		}
		to[h.Metadata.Name] = t.To
		for _, ep := range s.st.EndpointsByHost(h.Metadata.Name) {
			if next := endpointPhase(ep, h.Metadata.Name, t.To); next != nil {
				eps = append(eps, next)
			}
		}
	}
	for _, ep := range eps {
		g.Go(func() error {
			_, err := s.reg.PatchStatus(ctx, apiv1.RefOf(ep), func(next apiv1.Object) bool {
				// Decided again on the stored state: the agent may have
				// reported the endpoint meanwhile.
				cur, ok := next.(*apiv1.Endpoint)
				if !ok {
					return false
				}
				want := endpointPhase(cur, ep.Spec.Host, to[ep.Spec.Host])
				if want == nil {
					return false
				}
				cur.Status.Phase, cur.Status.Message = want.Status.Phase, want.Status.Message
				return true
			})
			if err != nil && apiv1.ReasonOf(err) != apiv1.ReasonNotFound {
				fail(fmt.Errorf("set endpoint %s/%s phase %s: %w", ep.Metadata.Tenant, ep.Metadata.Name, ep.Status.Phase, err))
			}
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// endpointPhase returns the endpoint with the status it should have now
// that its host is to, or nil if it stays as it is.
func endpointPhase(ep *apiv1.Endpoint, host string, to State) *apiv1.Endpoint {
	msg := DeadMessage(host)
	next := *ep // shallow: only Status is replaced, nothing shared is modified
	switch {
	case to == Dead && ep.Status.Phase != apiv1.PhaseLost && ep.Status.Phase != apiv1.PhaseFailed:
		next.Status.Phase, next.Status.Message = apiv1.PhaseLost, msg
	case to == Alive && ep.Status.Phase == apiv1.PhaseLost && ep.Status.Message == msg:
		next.Status.Phase, next.Status.Message = apiv1.PhaseReady, ""
	default:
		return nil
	}
	return &next
}

func (s *RegistrySink) writeHost(ctx context.Context, h *apiv1.Host, t Transition) error {
	_, err := s.reg.PatchStatus(ctx, apiv1.RefOf(h), func(next apiv1.Object) bool {
		cur, ok := next.(*apiv1.Host)
		if !ok {
			return false
		}
		// Only the liveness fields: the config stream writes the others.
		cur.Status.Liveness = t.To.String()
		if !t.LastSeen.IsZero() {
			cur.Status.LastSeen = t.LastSeen.UTC().Format(time.RFC3339Nano)
		}
		return true
	})
	if err != nil {
		if apiv1.ReasonOf(err) == apiv1.ReasonNotFound {
			return nil // deleted meanwhile
		}
		return fmt.Errorf("set host %s liveness %s: %w", h.Metadata.Name, t.To, err)
	}
	return nil
}

// resolve returns the cached Host of each transition's host ID (nil for
// unknown IDs), re-indexing the hosts at most once.
func (s *RegistrySink) resolve(ts []Transition) []*apiv1.Host {
	s.mu.Lock()
	defer s.mu.Unlock()
	hosts := make([]*apiv1.Host, len(ts))
	rebuilt := false
	for i, t := range ts {
		h := s.lookup(t.HostID)
		if h == nil && !rebuilt {
			s.rebuild()
			rebuilt = true
			h = s.lookup(t.HostID)
		}
		hosts[i] = h
	}
	return hosts
}

// lookup returns the cached Host with status.hostID id, or nil. s.mu is held.
func (s *RegistrySink) lookup(id uint32) *apiv1.Host {
	name, ok := s.byID[id]
	if !ok {
		return nil
	}
	o, ok := s.st.Get(apiv1.KindHost, "", name)
	if !ok {
		return nil
	}
	if h := o.(*apiv1.Host); h.Status.HostID == id {
		return h
	}
	return nil
}

// rebuild indexes the cached hosts by host ID. s.mu is held.
func (s *RegistrySink) rebuild() {
	hosts := s.st.List(apiv1.KindHost, "")
	s.byID = make(map[uint32]string, len(hosts))
	for _, o := range hosts {
		h := o.(*apiv1.Host)
		if h.Status.HostID != 0 {
			s.byID[h.Status.HostID] = h.Metadata.Name
		}
	}
}

// Compile-time check.
var _ Sink = (*RegistrySink)(nil)
