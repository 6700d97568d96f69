// Package agent is weft's per-host agent: it holds its host's view (the
// resources the controller compiled for it), drives the data plane to it
// through a datapath.Driver, learns remote endpoint locations on demand,
// and keeps forwarding when the controller is gone.
//
// # Lifecycle
//
// New validates a Config; Start loads the view persisted in StateDir and
// programs it before it returns (a restarted agent forwards without a
// controller: headless restart), binds the UDP socket and starts the loops
// below. Start's context bounds that startup only; the agent runs until
// Close, which stops the loops and waits for them. An agent runs one
// goroutine of its own, the config stream; its timers (reconciler,
// learning) run a goroutine only while they fire, and its UDP side is a
// Transport: its own socket, with a reader and a heartbeat goroutine (udp.go),
// or, in a process that simulates many hosts, one that they all share
// (Config.Transport, sim/udpmux). Neither Close nor a lost controller
// touches the data plane: forwarding goes on from the last state.
//
// # The loops
//
// Config stream (stream.go). One TCP session at a time with a controller
// replica, chosen by rendezvous hashing of the host name over the replica
// addresses (the next in that order on failure; the list a Welcome carries
// replaces the configured one). The agent opens with a Hello signed with
// the host key, carrying the view version it holds; the controller proves
// it holds the key too (wire.Conn.Handshake: a controller that cannot seal
// the Welcome is refused), every later frame is sealed with the session's
// keys, and a frame that fails authentication ends the session (the view
// stays as it was; the agent reconnects). The controller answers with
// Deltas. A delta is applied only if its FromVersion is the
// version held (a Snapshot replaces the view; the frames of a multi-frame
// delta are applied together at the last one, and refused past
// MaxDeltaBytes), else it is Nacked and the
// controller sends a snapshot. Applying a delta means: build the new view,
// translate it strictly to a datapath.Desired (endpoints with the OR of
// the policies that apply to them, their QoS class, the VPCs' aggregates;
// any resource that does not parse fails the whole delta: Nack with the
// error, view unchanged), call
// Driver.Set, then persist the view (one JSON file, written atomically)
// and Ack{ToVersion}. A Set that fails is not a refused view: the view is
// adopted as the desired state and Acked with the Set's error in
// Ack.Error (a snapshot would not help), and the reconciler retries it;
// when the outcome changes (the retry succeeded) the agent sends another
// Ack of the version, which clears the error in the Host's status. Between
// sessions the agent waits a full-jitter exponential backoff (also before
// the first one), so that 100,000 agents restarted by a power restore, or
// cut off by a controller failure, come back spread over time rather than
// in one wave. Lookups that go unanswered while the stream is down cut
// that wait short (at most once per 200 ms): a restarted controller knows
// none of the old sessions' datagram keys, so an agent with new peers to
// learn reconnects at once; an idle one still waits its turn.
//
// Traffic (flows.go). With a driver that counts its traffic
// (datapath.TrafficReader), every FlowConfig.Interval the agent reads the
// counters and exports them as Prometheus metrics per local endpoint and
// per VPC (weft_agent_endpoint_*, weft_agent_vpc_*), turns the sampled
// flows into flow records (observe/flows) for an IPFIX collector, and sends
// the controller a FlowReport: each VPC's traffic of the interval, the
// interval's largest flows and the heartbeats sent. The timer runs a
// goroutine only while it fires, like the others.
//
// Heartbeats (udp.go). Every HeartbeatInterval a Heartbeat datagram,
// sealed with the datagram key of the latest config-stream session and a
// strictly increasing sequence number,
// carries the view version applied, the endpoint count and health flags
// (Ready, Degraded after a failed Set, Headless without a config stream).
// The Transport sends it to the replica of that session (UDPFollowsStream)
// or to UDPAddr. Nothing is sent before the first session (no ID, no key).
//
// Learning (learner.go, package learn). The driver reports misses: a local
// endpoint sends to an address of its VPC that is neither local nor
// learned. A miss the cache cannot answer queues a lookup; lookups that
// queue within LookupBatchDelay share one LookupRequest (up to
// wire.MaxLookupBatch queries), a lookup unanswered after LookupTimeout is
// sent again, up to LookupTries times. A found answer is installed with
// Driver.Learn and cached with its epoch for min(LearnTTL, its TTL); a
// not-found answer is cached for NegativeTTL, during which misses for the
// address send nothing. An Invalidate from the controller (UDP, its tag
// verified with the session's datagram key and its sequence number against
// that key's replay window; or on the config stream) newer than the cached
// epoch moves the
// location (Learn) or removes it (Forget); forged, replayed and stale ones
// are counted and dropped. When a location's TTL runs out it is forgotten:
// the backstop for a lost invalidation.
//
// Reconciler (program.go). Level-based: every ReconcileInterval the whole
// desired state is Set again, which repairs drift (a route or link someone
// deleted); after a failed Set it retries with backoff instead. Attach is
// the exception the CNI warm pool needs: endpoints that waited for their
// namespace are attached alone once it appears (a driver that cannot falls
// back to a Set of the whole view).
//
// Reporter (report.go). If Config.Reporter is set (package restreport
// implements it over the REST API), the agent registers its Host if none
// exists yet, and after each Set reports every local endpoint whose
// status changed: its network namespace, Ready or Failed, and whether the
// data plane enforces its security policy and QoS (the datapath's
// EndpointStatus.PolicyErr and QoSErr; an endpoint that is not attached
// enforces neither), with the endpoint's generation from the view, which
// become the conditions PolicyProgrammed and QoSProgrammed. An endpoint
// that leaves the host is reported Gone once.
//
// Counters are available as Stats and, with Config.Registerer, as
// Prometheus metrics (weft_agent_*).
package agent
