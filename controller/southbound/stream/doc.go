// Package stream is the controller's side of the TCP config stream: it
// authenticates agents and keeps each one's copy of its host view current
// with versioned deltas from package compile.
//
// # Handshake
//
// A connection counts as unauthenticated from accept until its Hello
// verifies. It must send the Hello within HandshakeTimeout (2 s); at most
// MaxPreAuth such connections are kept (past that the oldest is closed)
// and MaxPreAuthPerSource from one address (past that the new one is
// closed). The server checks the Hello with the host's key
// (wire.VerifyHello: MAC, then clock skew) and refuses a Hello whose nonce
// it has already accepted within the skew (a replay). A refused agent gets
// a Welcome in clear with Error and the connection closes;
// weft_stream_handshake_failures_total counts refusals by reason
// (unknown_host, auth, stale, replay, malformed, protocol, timeout,
// read_error, evicted, source_limit, abandoned, full). Only then does the
// agent wait for an admission token (MaxHandshakes), so connections that
// never authenticate cannot take the tokens from agents. An admitted
// agent's connection is sealed (wire.Conn.AcceptHello: both ends derive
// the session's keys; the controller proves it holds the host key by
// sealing the Welcome) and it gets a Welcome with its host ID, the
// compiler's epoch, the replica list and Snapshot set when its
// ViewVersion cannot be resumed. A second connection for the same host
// replaces the first, which is closed; a frame that fails authentication
// ends the session.
//
// The session's datagram key becomes the host's (Server.Key, the keyring
// of the replica's UDP server) and stays so after the session, until the
// host connects again or its key changes. KeysChanged, which the
// controller calls when Hosts or their keys change (hostkey.Keyring
// OnChange), cuts the sessions of a host whose key was deleted or
// replaced, on every replica, and drops its datagram key.
//
// # One delta in flight
//
// The session then loops: it asks the compiler for Delta(host, held), the
// coalesced changes since the version the agent holds, sends it (split into
// frames under MaxFrame, More set on all but the last) and waits for the
// agent's Ack or Nack before computing the next one. When nothing is
// pending it waits on the compiler's Subscribe channel. This window of one
// is the backpressure: while an agent is slow, its changes accumulate in
// the compiler's view (whose size is bounded by the view, not by the number
// of changes) and reach it as one delta when it answers; the server never
// queues deltas, so a slow agent costs a session, not memory, and an agent
// that stops reading blocks only its own session's write, which AckTimeout
// bounds. Each session runs in its own goroutines, so one stalled stream
// never delays another.
//
// An Ack advances the held version and is reported to StatusSink.Acked,
// with the error of programming the view if the agent could not (the view
// is adopted and retried by the agent: no snapshot is sent). An Ack of the
// version already held, also while a delta is in flight, is the agent's
// report that this error changed, and only reaches StatusSink.Acked (see
// package wire). A Nack (the agent refused the view) is reported to
// StatusSink.Nacked and answered with a snapshot, at
// once for the first Nack and after a backoff (100ms doubling to 30s) for
// further Nacks without an Ack between, so that an agent that cannot apply
// any view does not keep the controller in a tight loop. No answer within
// AckTimeout closes the session: the agent reconnects and resumes from the
// version it holds, receiving only what changed since.
//
// # Status
//
// RegistrySink is the StatusSink that writes Host.status (viewVersion,
// lastError: a Nack's error or an Ack's programming error, at most 1 KiB;
// agentVersion) through the registry, coalesced to at most one write per
// host per interval and only when something changed.
package stream
