package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/wire"
)

// Defaults of the Config fields.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultReconcileInterval = 30 * time.Second
	DefaultLearnTTL          = 60 * time.Second
	DefaultNegativeTTL       = 2 * time.Second
	DefaultLookupBatchDelay  = time.Millisecond
	DefaultLookupTimeout     = 50 * time.Millisecond
	DefaultLookupTries       = 3
	DefaultDialTimeout       = 5 * time.Second
	DefaultHandshakeTimeout  = 15 * time.Second
	DefaultBackoffMin        = time.Second
	DefaultBackoffMax        = 30 * time.Second
	// DefaultMaxDeltaBytes bounds a delta split over several frames.
	DefaultMaxDeltaBytes = 8 * wire.DefaultMaxFrame
)

// Config configures an Agent. Host, StreamAddrs, UDPAddr, Key and Driver
// are required; zero values of the other fields take the defaults above.
type Config struct {
	// Host is the host's name (its Host object's name).
	Host string
	// StreamAddrs are the config-stream addresses (host:port) of the
	// controller replicas. The agent tries them in rendezvous-hash order
	// of Host (so hosts spread over replicas and each host sticks to one);
	// the list a Welcome carries replaces it.
	StreamAddrs []string
	// UDPAddr is the controller's UDP address (host:port) for heartbeats
	// and lookups.
	UDPAddr string
	// UDPFollowsStream sends heartbeats and lookups to the replica the
	// config stream is connected to (same host:port; a controller serves
	// both there) once connected, instead of UDPAddr. Datagrams are
	// authenticated with a key of the session with one replica, which the
	// others do not know: with several replicas, set it.
	UDPFollowsStream bool
	// StreamSource, if set, is the local address the config stream is
	// dialled from (default: the kernel's choice). The port is picked at
	// connect time (IP_BIND_ADDRESS_NO_PORT), so every source address
	// has its own ephemeral ports towards each controller replica.
	StreamSource netip.Addr
	// UDPListen is the local UDP address to bind (default: any address,
	// an ephemeral port). The controller answers lookups and sends
	// invalidations to the address heartbeats come from.
	UDPListen string
	// Transport, if set, is the UDP side the agent shares with other
	// agents of this process (a simulator's hosts, sim/udpmux) instead of
	// binding its own socket; UDPListen must then be empty. The caller
	// closes it after the agents.
	Transport Transport
	// Key is the host's raw key, wire.KeySize bytes: the config stream's
	// handshake proves it to the controller (and the controller's to the
	// agent), and each session's keys, which seal every frame and
	// authenticate the datagrams, derive from it.
	Key []byte
	// Driver programs the data plane. The agent does not close it: the
	// caller closes it after Close (or keeps it, to forward headless).
	Driver datapath.Driver
	// UnderlayIP is the host's underlay address; the view's Host resource
	// overrides it. It is also what Reporter.Register registers.
	UnderlayIP netip.Addr
	// UnderlayDev is the interface holding the underlay address
	// (datapath.HostConfig.UnderlayDev).
	UnderlayDev string
	// MTU is the underlay MTU (datapath.HostConfig.MTU; 0: the driver's
	// default).
	MTU int
	// StateDir holds the persisted view ("" disables persistence, and with
	// it the headless restart).
	StateDir string
	// AgentVersion is reported in the Hello.
	AgentVersion string
	// Logger receives the agent's logs (default: discarded).
	Logger *slog.Logger
	// Registerer, if set, gets the agent's Prometheus metrics. One agent
	// per Registerer: the metric names carry no host label.
	Registerer prometheus.Registerer
	// HeartbeatInterval is the period of UDP heartbeats (default 1 s).
	HeartbeatInterval time.Duration
	// ReconcileInterval is the period of the level-based re-Set that
	// repairs drift (default 30 s).
	ReconcileInterval time.Duration
	// LearnTTL bounds how long a learned remote location is kept without
	// being looked up again (default 60 s); the backstop for a lost
	// invalidation.
	LearnTTL time.Duration
	// NegativeTTL is how long a "no such endpoint" answer is cached
	// (default 2 s).
	NegativeTTL time.Duration
	// LookupBatchDelay is how long a miss waits for others to share its
	// LookupRequest (default 1 ms).
	LookupBatchDelay time.Duration
	// LookupTimeout is how long a lookup waits for its answer before it is
	// sent again (default 50 ms).
	LookupTimeout time.Duration
	// LookupTries is how many times a lookup is sent before it is given up
	// (default 3).
	LookupTries int
	// DialTimeout bounds a config-stream connect (default 5 s).
	DialTimeout time.Duration
	// HandshakeTimeout bounds Hello → Welcome (default 15 s).
	HandshakeTimeout time.Duration
	// MaxDeltaBytes bounds the memory a delta split over several frames
	// may take before its last frame (default DefaultMaxDeltaBytes,
	// about what its frames hold decoded); a larger one is refused with
	// a Nack.
	MaxDeltaBytes int
	// Backoff is the reconnect backoff (default 1 s to 30 s, full jitter)
	// and the retry backoff of a failed Set or report.
	Backoff backoff.Policy
	// BackoffRand draws the backoff's jitter (nil: math/rand/v2's global
	// source); it must be safe for concurrent use. Tests pin it.
	BackoffRand *rand.Rand
	// Reporter, if set, registers the Host and reports endpoint status to
	// the controller's API.
	Reporter Reporter
	// IfName, if set, names an endpoint's interface inside its network
	// namespace (datapath.Endpoint.IfName; "" for the default), by the
	// endpoint's ID: the CNI server's answer for the endpoints it made,
	// whose runtime chose the name. It is called while views are
	// translated, so it must be fast and safe for concurrent use.
	IfName func(endpointID string) string
	// Flows configures traffic counting and flow export (a driver that
	// implements datapath.TrafficReader).
	Flows FlowConfig
	// Observations, if set, carries trace reports and capture uploads to
	// the controller (default: Reporter, if it is an ObservationReporter).
	// A simulator's agents share one without reporting endpoint status.
	Observations ObservationReporter
	// ObserveOnDemand starts the observer of traces and captures (two
	// goroutines, and the driver's hop and packet buffers) only once a
	// view holds a trace or a capture, instead of at Start: a simulator's
	// many agents, most never traced, keep nothing for it.
	ObserveOnDemand bool
	// PolicyCache, if set, keeps the policies the agent translated by
	// their compiled bytes, so that a view change does not decode and
	// translate again the policies it did not change; agents of one
	// process that hold the same policies (a simulator's hosts) share one
	// and translate each policy once. Nil: every view is translated in
	// full.
	PolicyCache *PolicyCache
}

// Reporter tells the controller's API about the host and its endpoints.
// Calls may block on the network; the agent calls them from its own
// goroutine with a bounded context and retries with backoff, unless the
// error wraps ErrRejected.
type Reporter interface {
	// Register creates the Host object if none exists yet (an existing one
	// is success).
	Register(ctx context.Context, host, underlayIP string) error
	// ReportEndpoints records the status of local endpoints. The agent
	// reports an endpoint only when its report changed, and once Gone
	// when it is no longer local.
	ReportEndpoints(ctx context.Context, reports []EndpointReport) error
}

// Endpoint phases in an EndpointReport.
const (
	PhaseReady  = "Ready"
	PhaseFailed = "Failed"
	// PhasePending: the endpoint waits for its network namespace
	// (datapath.EndpointStatus.Waiting).
	PhasePending = "Pending"
)

// EndpointReport is the agent's part of an endpoint's status.
type EndpointReport struct {
	// ID is "tenant/name".
	ID string
	// Netns is the path of the endpoint's network namespace (status.netns).
	Netns string
	// Phase is PhaseReady, PhasePending or PhaseFailed.
	Phase string
	// Message explains PhasePending and PhaseFailed.
	Message string
	// UID is the endpoint's metadata.uid in the view: an endpoint deleted
	// and created again under its name is reported again, even if all else
	// is the same.
	UID string
	// Generation is the endpoint's metadata.generation in the view: the
	// observedGeneration of the conditions below.
	Generation int64
	// PolicyErr and QoSErr say why the endpoint's security policy or
	// QoS (its class and its VPC's aggregate) of Generation is not
	// enforced; "" once the data plane enforces it (or there is none to
	// enforce): the conditions PolicyProgrammed and QoSProgrammed.
	PolicyErr, QoSErr string
	// Gone says the endpoint is no longer on this host (deleted, moved):
	// the reporter writes nothing for it and forgets what it kept.
	Gone bool
}

// Sentinel errors.
var (
	// ErrRejected marks a Reporter error that retrying cannot fix (the API
	// refused the request as invalid); the agent logs it and moves on.
	ErrRejected = errors.New("agent: rejected by the controller")
	// ErrInvalidView marks a view the agent refuses (a resource that does
	// not parse, or a desired state the data plane cannot take). The delta
	// that carried it is Nacked and the view stays as it was.
	ErrInvalidView = errors.New("agent: invalid view")
	// ErrRefused is returned when a controller refuses the agent in its
	// Welcome.
	ErrRefused = errors.New("agent: refused by the controller")
)

// withDefaults returns c with every zero optional field set.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	set(&c.ReconcileInterval, DefaultReconcileInterval)
	set(&c.LearnTTL, DefaultLearnTTL)
	set(&c.NegativeTTL, DefaultNegativeTTL)
	set(&c.LookupBatchDelay, DefaultLookupBatchDelay)
	set(&c.LookupTimeout, DefaultLookupTimeout)
	set(&c.DialTimeout, DefaultDialTimeout)
	set(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	if c.LookupTries == 0 {
		c.LookupTries = DefaultLookupTries
	}
	if c.MaxDeltaBytes == 0 {
		c.MaxDeltaBytes = DefaultMaxDeltaBytes
	}
	if c.Backoff.IsZero() {
		c.Backoff = backoff.Policy{Min: DefaultBackoffMin, Max: DefaultBackoffMax}
	}
	return c
}

// Validate checks the configuration (with defaults applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Host == "" {
		bad("Host is required")
	}
	if len(c.StreamAddrs) == 0 {
		bad("StreamAddrs: at least one controller address is required")
	}
	for _, a := range c.StreamAddrs {
		if a == "" {
			bad("StreamAddrs: empty address")
		}
	}
	if c.UDPAddr == "" {
		bad("UDPAddr is required")
	}
	if c.Transport != nil && c.UDPListen != "" {
		bad("UDPListen %q: the agent shares Transport's socket, it binds none", c.UDPListen)
	}
	if len(c.Key) != wire.KeySize {
		bad("Key is %d bytes, want %d", len(c.Key), wire.KeySize)
	}
	if c.Driver == nil {
		bad("Driver is required")
	}
	if c.UnderlayIP.IsValid() && c.UnderlayIP.Zone() != "" {
		bad("UnderlayIP %s: zones are not allowed", c.UnderlayIP)
	}
	if c.MTU < 0 {
		bad("MTU %d is negative", c.MTU)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HeartbeatInterval", c.HeartbeatInterval}, {"ReconcileInterval", c.ReconcileInterval},
		{"LearnTTL", c.LearnTTL}, {"NegativeTTL", c.NegativeTTL}, {"LookupBatchDelay", c.LookupBatchDelay},
		{"LookupTimeout", c.LookupTimeout}, {"DialTimeout", c.DialTimeout}, {"HandshakeTimeout", c.HandshakeTimeout},
	} {
		if d.v < 0 {
			bad("%s %v is negative", d.name, d.v)
		}
	}
	if c.LookupTries < 0 {
		bad("LookupTries %d is negative", c.LookupTries)
	}
	if c.MaxDeltaBytes < 0 {
		bad("MaxDeltaBytes %d is negative", c.MaxDeltaBytes)
	}
	if err := c.Backoff.Validate(); err != nil {
		bad("Backoff: %v", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("agent config: %w", errors.Join(errs...))
	}
	return nil
}
