package liveness

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// Batch is what the table hands a BatchSink at a flush.
type Batch struct {
	// Transitions are the pending transitions, coalesced per host and
	// sorted by host ID, as Sink.Transitions gets them; often none.
	Transitions []Transition
	// At is the time of the flush, on the table's clock.
	At time.Time
	// Counts are the hosts per state as of the last sweep.
	Counts StateCounts
	// State returns a host's state in the table now (Table.State); nil if
	// unknown.
	State func(hostID uint32) State
}

// BatchSink is a Sink that wants to see the whole table, not only the
// transitions: a Table calls Batch instead of Transitions, at every flush
// even without transitions, so that the sink can act on what it held back
// (RegistrySink does, for its mass-disruption guard). An error makes the
// table hand the batch's transitions again, as with Transitions.
type BatchSink interface {
	Sink
	Batch(ctx context.Context, b Batch) error
}

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

// Defaults of RegistrySinkConfig's mass-disruption guard and endpoint
// marking rate. The threshold is Kubernetes' (--unhealthy-zone-threshold
// 0.55): when more than half of the hosts stop answering at once, the
// likely cause is the controller, the network or the power, not the hosts.
const (
	DefaultDisruptionThreshold = 0.55
	DefaultDisruptionMinHosts  = 50
	DefaultDisruptionHold      = 10 * time.Second
	DefaultMarkRate            = 500 // endpoints per second
	DefaultMarkBurst           = 1000
)

// HostStatusQueue takes a host's liveness fields to write later.
type HostStatusQueue interface {
	// QueueLiveness queues host's status.liveness and lastSeen; a zero
	// lastSeen leaves the stored lastSeen as it is.
	QueueLiveness(host, liveness string, lastSeen time.Time)
}

// RegistrySinkConfig configures a RegistrySink. Zero values select the
// defaults.
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
	// not speak for is not written, and the host is handed to Forget; the
	// write itself asks again, on the stored host (a compare-and-swap), so
	// that it never lands after the host moved. Transitions to Alive are
	// always written: its heartbeats arrive here.
	SpeaksFor func(h *apiv1.Host) bool
	// Forget drops a host this replica does not speak for from the
	// liveness table (Table.Forget); it tracks it again when it hears
	// from it.
	Forget func(hostID uint32)
	// Hosts, if set, takes the hosts' liveness fields instead of a write per
	// transition: they are written later, coalesced with other status
	// writers' fields for the same host (stream.RegistrySink implements it).
	// Endpoints are still written by the sink, through Registry.
	Hosts HostStatusQueue

	// DisruptionThreshold is the share of the hosts with a known liveness
	// (Alive, Suspect or Dead in the table) that, when not Alive, makes a
	// mass disruption: so many hosts failing at once more likely means
	// the controller, the network or the power failed. While it lasts,
	// host statuses are written (except Alive → Suspect, see below), but
	// the endpoints of hosts that die are not marked Lost; when it ends,
	// those of the hosts still dead are, at MarkRate. Unknown hosts (not
	// heard from since the table started, such as hosts tracked at start
	// and still within their grace) are not counted. Default
	// DefaultDisruptionThreshold (0.55); negative turns the guard off.
	// Only a Table (through BatchSink) tells the sink the counts: called
	// through Transitions alone, the sink never sees a disruption.
	//
	// During a disruption, a host dropping from Alive to Suspect is not
	// written, nor its return to Alive: Suspect lasts a second until the
	// host is Dead (written) or back (nothing changed), and thousands of
	// such writes per second are what overloads etcd when every agent is
	// late at once.
	DisruptionThreshold float64
	// DisruptionMinHosts is the least number of hosts (Alive, Suspect or
	// Dead) for the guard to apply: with fewer, every dead host's
	// endpoints are marked, as a lab of a few hosts expects (default
	// DefaultDisruptionMinHosts, 50).
	DisruptionMinHosts int
	// DisruptionHold is how long the share must stay below the threshold
	// before a disruption ends, so that a share hovering around the
	// threshold does not start and end one every flush (default
	// DefaultDisruptionHold, 10 s).
	DisruptionHold time.Duration
	// MarkRate bounds the endpoints marked Lost per second, MarkBurst at
	// once: the endpoints of one dead host, or of a rack, are marked at
	// once; those of thousands of hosts dying (below the threshold), or
	// still dead when a disruption ends, over seconds, oldest death first,
	// instead of in one storm of writes. A host's endpoints are marked
	// together. Returning endpoints to Ready is not limited. Defaults
	// DefaultMarkRate (500/s) and DefaultMarkBurst (1,000); a negative
	// MarkRate removes the limit.
	MarkRate  float64
	MarkBurst int

	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the sink's metrics; nil means not registered.
	Registerer prometheus.Registerer
}

func (c *RegistrySinkConfig) setDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultSinkConcurrency
	}
	if c.DisruptionThreshold == 0 {
		c.DisruptionThreshold = DefaultDisruptionThreshold
	}
	if c.DisruptionMinHosts == 0 {
		c.DisruptionMinHosts = DefaultDisruptionMinHosts
	}
	if c.DisruptionHold == 0 {
		c.DisruptionHold = DefaultDisruptionHold
	}
	if c.MarkRate == 0 {
		c.MarkRate = DefaultMarkRate
	}
	if c.MarkBurst == 0 {
		c.MarkBurst = DefaultMarkBurst
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a missing dependency or an impossible setting. Zero
// values are valid: they select the defaults.
func (c RegistrySinkConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Store == nil || c.Registry == nil {
		errs = append(errs, errors.New("Store and Registry are required"))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("Concurrency %d is negative", c.Concurrency))
	}
	if math.IsNaN(c.DisruptionThreshold) || c.DisruptionThreshold > 1 {
		errs = append(errs, fmt.Errorf("DisruptionThreshold %v out of range (0, 1] (negative: no guard)", c.DisruptionThreshold))
	}
	if c.DisruptionMinHosts < 0 {
		errs = append(errs, fmt.Errorf("DisruptionMinHosts %d is negative", c.DisruptionMinHosts))
	}
	if c.DisruptionHold < 0 {
		errs = append(errs, fmt.Errorf("DisruptionHold %v is negative", c.DisruptionHold))
	}
	if math.IsNaN(c.MarkRate) || math.IsInf(c.MarkRate, 0) {
		errs = append(errs, fmt.Errorf("MarkRate %v is not a number of endpoints per second", c.MarkRate))
	}
	if c.MarkBurst < 0 {
		errs = append(errs, fmt.Errorf("MarkBurst %d is negative", c.MarkBurst))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("liveness: registry sink: %w", err)
	}
	return nil
}

// RegistrySink writes transitions to the API objects: a Host's
// status.liveness and status.lastSeen (itself, or through
// RegistrySinkConfig.Hosts), and, when a host becomes Dead, the phase Lost
// (message "host NAME is dead") on its endpoints, which it returns to
// Ready when the host is Alive again. It recognises the endpoints it marked
// by that message, so it survives a controller restart; an endpoint
// already Lost or Failed for another reason is left alone.
//
// Its only memory is the dead hosts whose endpoints it has yet to mark
// (during a mass disruption, or beyond MarkRate) and the hosts whose
// Suspect it did not write; after a restart the table declares the hosts
// still dead Dead again, and they are marked then.
type RegistrySink struct {
	cfg       RegistrySinkConfig // with defaults
	st        HostSource
	reg       StatusWriter
	log       *slog.Logger
	speaksFor func(h *apiv1.Host) bool
	forget    func(hostID uint32)
	m         *sinkMetrics

	mu   sync.Mutex
	byID map[uint32]string // host ID → Host name, rebuilt on a miss

	// batchMu serialises batches and guards guard.
	batchMu sync.Mutex
	guard   guard
}

// NewRegistrySink returns a RegistrySink.
func NewRegistrySink(cfg RegistrySinkConfig) (*RegistrySink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newSinkMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("liveness: registry sink metrics: %w", err)
	}
	return &RegistrySink{cfg: cfg, st: cfg.Store, reg: cfg.Registry, m: m,
		log: cfg.Logger.With("subsystem", "liveness-sink"), speaksFor: cfg.SpeaksFor, forget: cfg.Forget,
		guard: guard{marks: map[uint32]*mark{}, unwritten: map[uint32]struct{}{}}}, nil
}

// DeadMessage is the endpoint status message of an endpoint marked Lost
// because its host is dead.
func DeadMessage(host string) string { return "host " + host + " is dead" }

// Transitions implements Sink: Batch without the table's counts, so
// without the mass-disruption guard (the marking rate still applies).
func (s *RegistrySink) Transitions(ctx context.Context, ts []Transition) error {
	return s.Batch(ctx, Batch{Transitions: ts})
}

// endpointJob is one endpoint to move to the phase its host's state to
// implies; ep is the endpoint as it should become.
type endpointJob struct {
	ep     *apiv1.Endpoint
	host   string
	to     State
	hostID uint32 // of a dead host's marking (to Dead)
}

// Batch implements BatchSink: host statuses first, then the endpoints of
// the hosts that came back (Ready) and of the dead hosts due to be marked
// (Lost), each step with bounded concurrency. Hosts that no longer exist
// are skipped. A zero b.At means now.
func (s *RegistrySink) Batch(ctx context.Context, b Batch) error {
	s.batchMu.Lock()
	defer s.batchMu.Unlock()
	if b.At.IsZero() {
		b.At = time.Now()
	}
	s.observe(b.Counts, b.At)
	ts := b.Transitions
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
	var f failures
	s.writeHosts(ctx, ts, hosts, &f)

	var jobs []endpointJob
	var died []uint32 // hosts newly queued for marking
	for i, t := range ts {
		h := hosts[i]
		if h == nil {
			continue
		}
		if t.To == Dead {
			if s.queueMark(t.HostID, h.Metadata.Name, b.At) {
				died = append(died, t.HostID)
			}
			continue
		}
		delete(s.guard.marks, t.HostID) // back, or held Suspect: not dead
		if t.To == Alive {
			jobs = s.endpointJobs(jobs, h.Metadata.Name, 0, Alive)
		}
	}
	due := s.dueMarks(b)
	for _, d := range due {
		jobs = append(jobs, d.jobs...)
	}
	s.countDeferred(died, due)
	s.writeEndpoints(ctx, jobs, &f)
	f.errs = append(f.errs, s.markedOrRetry(due, f.marks)...)
	return errors.Join(f.errs...)
}

// failures collects a batch's errors from concurrent writes.
type failures struct {
	mu    sync.Mutex
	errs  []error
	marks map[uint32]bool // dead hosts whose marking failed
}

// add records err; markOf, unless 0, is the dead host whose marking failed.
func (f *failures) add(err error, markOf uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
	if markOf != 0 {
		if f.marks == nil {
			f.marks = map[uint32]bool{}
		}
		f.marks[markOf] = true
	}
}

// writeHosts writes (or queues) the liveness of the hosts of ts; hosts[i]
// is nil for a transition not to write.
func (s *RegistrySink) writeHosts(ctx context.Context, ts []Transition, hosts []*apiv1.Host, f *failures) {
	var g errgroup.Group
	g.SetLimit(s.cfg.Concurrency)
	for i, t := range ts {
		h := hosts[i]
		if h == nil || s.skipHostWrite(t) {
			continue // unknown host ID, served by another replica, or not written in a disruption
		}
		if s.cfg.Hosts != nil {
			s.cfg.Hosts.QueueLiveness(h.Metadata.Name, t.To.String(), t.LastSeen)
			continue
		}
		g.Go(func() error {
			if err := s.writeHost(ctx, h, t); err != nil {
				f.add(err, 0)
			}
			return nil
		})
	}
	_ = g.Wait()
}

// writeEndpoints moves the endpoints of jobs to their phases.
func (s *RegistrySink) writeEndpoints(ctx context.Context, jobs []endpointJob, f *failures) {
	var g errgroup.Group
	g.SetLimit(s.cfg.Concurrency)
	for _, j := range jobs {
		g.Go(func() error {
			_, err := s.reg.PatchStatus(ctx, apiv1.RefOf(j.ep), func(next apiv1.Object) bool {
				// Decided again on the stored state: the agent may have
				// reported the endpoint meanwhile.
				cur, ok := next.(*apiv1.Endpoint)
				if !ok {
					return false
				}
				want := endpointPhase(cur, j.host, j.to)
				if want == nil {
					return false
				}
				cur.Status.Phase, cur.Status.Message = want.Status.Phase, want.Status.Message
				return true
			})
			if err != nil && apiv1.ReasonOf(err) != apiv1.ReasonNotFound {
				f.add(fmt.Errorf("set endpoint %s/%s phase %s: %w", j.ep.Metadata.Tenant, j.ep.Metadata.Name, j.ep.Status.Phase, err), j.hostID)
			}
			return nil
		})
	}
	_ = g.Wait()
}

// endpointJobs appends the endpoints of host that its state to changes.
func (s *RegistrySink) endpointJobs(jobs []endpointJob, host string, hostID uint32, to State) []endpointJob {
	for _, ep := range s.st.EndpointsByHost(host) {
		if next := endpointPhase(ep, host, to); next != nil {
			jobs = append(jobs, endpointJob{ep: next, host: host, to: to, hostID: hostID})
		}
	}
	return jobs
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
		// Decided again on the stored host: it may have moved to another
		// replica since the transition.
		if t.To != Alive && s.speaksFor != nil && !s.speaksFor(cur) {
			return false
		}
		// Only the liveness fields: the config stream writes the others.
		cur.Status.Liveness = t.To.String()
		if !t.LastSeen.IsZero() {
			cur.Status.LastSeen = t.LastSeen.UTC().Format(time.RFC3339Nano)
		}
		apiv1.SetHostConditions(cur, cmp.Or(t.At, time.Now()))
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
