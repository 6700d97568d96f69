// Package wire is weft's southbound protocol between the controller and the
// agents: the messages, their framing and their authentication. It is the
// protocol reference; every decoder in it is fuzzed.
//
// There are two channels:
//
//   - a UDP channel for heartbeats and on-demand lookups (up to ~250,000
//     datagrams/s on one controller): a fixed binary format, encoded by
//     append-style encoders into caller buffers and decoded into caller
//     structs, with no allocation on the hot path; every datagram is
//     authenticated with the key of its host's latest config-stream session
//     and checked against that key's replay window;
//   - a TCP config stream for versioned view deltas: length-prefixed frames
//     whose bodies are JSON (the v1 body codec), opened by a handshake in
//     which each end proves it holds the host key, every later frame sealed
//     (authenticated and encrypted) with keys of the session.
//
// All integers are big endian (network order).
//
// # UDP datagrams
//
// A datagram is a 16-byte header, a body that depends on the type, and a
// 16-byte tag:
//
//	offset  size  field
//	0       2     magic 0x57 0x46 ("WF")                       Magic
//	2       1     version, 1                                   Version
//	3       1     type (table below)                           Header.Type
//	4       4     host ID: the sending host, or the receiving  Header.HostID
//	              one for controller → host datagrams
//	8       8     sequence number, never 0                     Header.Seq
//	16      n     body
//	16+n    16    tag: the first 16 bytes of HMAC-SHA256(host key, bytes [0, 16+n))
//
// A datagram is at most MaxDatagramSize (1400) bytes. Types:
//
//	type  name           direction            body
//	1     Heartbeat      host → controller    20 bytes
//	2     HeartbeatAck   controller → host    24 bytes
//	3     LookupRequest  host → controller    1 + 13 or 25 per query
//	4     LookupReply    controller → host    1 + 35 to 63 per answer
//	5     Invalidate     controller → host    29 to 57 bytes
//	6     FlowReport     host → controller    14 + 17 to 134 per VPC + 23 to 89 per flow
//
// Addresses are encoded as a family byte followed by the address: 4 and
// four bytes (IPv4), 6 and sixteen bytes (IPv6; an IPv4-mapped address
// stays IPv6), or, only where the address is optional ("optaddr" below), 0
// and nothing (no address). Zones are not encoded. A VNI is a 32-bit field
// whose top 8 bits are zero. Flags bytes define bit 0 only; the other bits
// must be zero. Every encoding is canonical: a decoder rejects trailing
// bytes, reserved bits and out-of-range values, so a body that decodes
// re-encodes to the same bytes.
//
// Heartbeat (host → controller, every second):
//
//	offset  size  field
//	0       8     view version applied                Heartbeat.ViewVersion
//	8       4     health flags                        Heartbeat.Health (HealthReady, ...)
//	12      4     endpoint count                      Heartbeat.EndpointCount
//	16      4     agent uptime, seconds               Heartbeat.UptimeSeconds
//
// HeartbeatAck (controller → host, optional):
//
//	0       8     controller epoch                    HeartbeatAck.Epoch
//	8       8     replica list version                HeartbeatAck.ReplicasVersion
//	16      8     sequence number of the heartbeat    HeartbeatAck.HeartbeatSeq
//
// LookupRequest (host → controller):
//
//	0       1     N, number of queries, 1 to MaxLookupBatch (16)
//	then N times:
//	+0      4     request ID, echoed in the answer    LookupQuery.RequestID
//	+4      4     VNI (24 bits)                       LookupQuery.VNI
//	+8      5|17  addr: destination IP                LookupQuery.IP
//
// LookupReply (controller → host):
//
//	0       1     N, number of answers, 1 to MaxLookupBatch (16)
//	then N times:
//	+0      4     request ID                          LookupAnswer.RequestID
//	+4      4     VNI (24 bits)                       LookupAnswer.VNI
//	+8      5|17  addr: the IP asked for              LookupAnswer.IP
//	        1     flags: bit 0 found                  LookupAnswer.Found
//	        1|5|17 optaddr: underlay IP of the host   LookupAnswer.Location.HostIP
//	        6     MAC address                         LookupAnswer.Location.MAC
//	        4     security identity                   LookupAnswer.Location.Identity
//	        8     location epoch                      LookupAnswer.Epoch
//	        2     TTL, seconds                        LookupAnswer.TTL
//
// Invalidate (controller → host, when an endpoint moves or goes away):
//
//	0       4     VNI (24 bits)                       Invalidate.VNI
//	4       5|17  addr: endpoint IP                   Invalidate.IP
//	        8     new location epoch                  Invalidate.Epoch
//	        1     flags: bit 0 has a new location     Invalidate.HasLocation
//	        1|5|17 optaddr: underlay IP of the host   Invalidate.Location.HostIP
//	        6     MAC address                         Invalidate.Location.MAC
//	        4     security identity                   Invalidate.Location.Identity
//
// FlowReport (host → controller, every flow interval; counters are
// unsigned varints of encoding/binary, minimally encoded):
//
//	0       4     interval, milliseconds              FlowReport.IntervalMs
//	4       4     heartbeats sent, cumulative         FlowReport.HeartbeatsSent
//	8       4     flow sampling N (1 in N; 0: none)   FlowReport.Sampling
//	12      1     V, number of VPCs
//	then V times:
//	+0      4     VNI (24 bits)                       VPCCounters.VNI
//	+4      6 varints: sent packets, sent bytes, received packets, received
//	              bytes, connections out, connections in
//	        7 varints: drops by reason 1..7             VPCCounters.Drops
//	        1     F, number of flows
//	then F times:
//	+0      4     VNI (24 bits)                       FlowEntry.VNI
//	+4      5|17  addr: source, then 5|17 destination
//	        1     IP protocol; 2 source port; 2 destination port (ICMP: type<<8|code)
//	        3 varints: bytes, packets, dropped packets
//	        1     drop reason of the dropped packets
//	        2 varints: duration and idle time, milliseconds (at most 2^32-1)
//
// A heartbeat datagram is 52 bytes; a LookupReply with 16 IPv6 answers,
// the largest datagram, 1041.
//
// # Authentication and replay protection
//
// Each host has a KeySize (32) byte random key, shared with the controller
// at enrolment. Datagrams are not authenticated with it but with a
// datagram key of the host's latest config-stream session with the replica
// it talks to (see "Session keys" below), used in both directions: a
// replica knows the keys of its own sessions only, and forgets them when
// it restarts. A receiver accepts a datagram only if (in this order) its
// size, magic, version and type are valid, the type travels towards the
// receiver (ErrDirection otherwise: a datagram reflected to its sender is
// refused), the keyring knows the host, the sequence number passes the
// replay window of the host's current key (checked before the tag, as a
// cheap rejection, and recorded after it) and the tag matches (compared in
// constant time). The window is the one of IPsec and WireGuard: it
// remembers the highest sequence number accepted and which of the 63 below
// it were seen; a higher number is accepted and slides the window however
// far it jumps, a number in the window is accepted once, a number below
// the window is refused. The window moves only for authentic datagrams.
//
// A window belongs to one key: a new session, and with it a new key,
// starts a new window. So a failover to a replica whose sequence numbers
// are lower than the last replica's loses nothing, and a datagram captured
// in an older session — replayed after a replica restarted, or to another
// replica — fails authentication.
//
// Sequence numbers are strictly increasing per host per sender. A sender
// starts its counter at the wall clock in nanoseconds (NewSequence).
//
// Decoding and verification errors are the unwrapped sentinels ErrShort,
// ErrTooLarge, ErrBadMagic, ErrVersion, ErrUnknownType, ErrDirection,
// ErrUnknownHost, ErrAuth, ErrReplay and ErrMalformed, so a server counts
// each kind without allocating.
//
// The HMAC keeps SHA-256 state precomputed per key (Key, 64 bytes; the
// equivalent of hmac.New once per key and Reset per datagram), so a tag
// costs two SHA-256 blocks for a heartbeat and no allocation.
//
// # Config stream
//
// A TCP stream of frames:
//
//	offset  size  field
//	0       4     L, length of what follows: 1 + body length; 1 <= L <= max frame
//	4       1     frame type (table below)
//	5       L-1   body: the JSON encoding (encoding/json) of the message struct,
//	              sealed after the handshake (see "Sealed frames")
//
// The maximum frame defaults to DefaultMaxFrame (16 MiB); a longer frame is
// refused with ErrTooLarge before its body is read, and a receiver's memory
// grows with the bytes that actually arrive, not with the announced length.
//
//	type  message     direction
//	1     Hello       agent → controller, in clear
//	2     Welcome     controller → agent (in clear only to refuse the agent)
//	3     Delta       controller → agent
//	4     Ack         agent → controller
//	5     Nack        agent → controller
//	6     Invalidate  controller → agent (the UDP struct, as JSON)
//	7     Accept      controller → agent, in clear: the controller's nonce
//
// The agent opens the stream with a Hello saying which view version it
// holds (0 for none). The controller verifies it (VerifyHello) and either
// refuses the agent with a Welcome in clear whose Error says why (nothing
// else in it is trusted) or answers with an Accept, after which both ends
// seal every frame (Conn.Handshake, Conn.AcceptHello): a Welcome
// (Snapshot set if it cannot send deltas from that version; Error set if
// it refuses the agent after all), then Deltas. The agent applies a Delta
// whose FromVersion is the version it holds (a Snapshot replaces its view)
// and answers Ack{ToVersion}, or Nack, after which the controller sends a
// snapshot. A delta too large for one frame is split into frames with the
// same versions, all but the last with More set. Unknown JSON fields are
// ignored, so fields can be added without a new codec version.
//
// Nack means "view refused": the delta does not start at the version the
// agent holds, the view it leads to does not match its hash, or it cannot
// be translated into a data-plane state. The agent keeps its view; only a
// snapshot can help. Ack with Error set means "programming failed": the
// view is fine and adopted, the kernel refused part of it. A snapshot
// would bring the same view, so the controller sends none: the agent
// retries locally (its reconciler), and whenever the programming error of
// the view it holds changes (a retry succeeded, or failed differently) it
// sends, unasked, another Ack of that version with the new Error (empty
// once programmed). The controller takes an Ack of the version it believes
// the agent holds as such a status report, also while a delta is in
// flight, and records Error as the Host's status.lastError.
//
// View versions are epoch<<44 | etcd revision, the epoch derived from the
// etcd cluster ID: every controller replica of one cluster numbers a view
// the same way, so an agent that moves to another replica resumes with a
// delta. The Hello carries a hash of the agent's resources (ViewHash) and
// each Delta the hash of the whole view it leads to: a replica without
// history back to the agent's version that finds the same hash answers with
// an empty delta, and an agent whose view does not match after applying a
// delta answers with a Nack, which brings a snapshot.
//
// The Hello MAC is HMAC-SHA256(host key, input) over:
//
//	"weft-hello-v2\x00" (14 bytes)
//	4     length of Host, then Host
//	4     HostID
//	4     length of AgentVersion, then AgentVersion
//	8     ViewVersion
//	4     length of ViewHash (0 or 16), then ViewHash
//	4     length of Nonce (16 to 64), then Nonce
//	8     Time, Unix seconds (two's complement)
//
// Its label keeps it apart from datagram tags made with the same key.
// VerifyHello refuses a Hello whose MAC does not match (ErrAuth) or whose
// time is further than the allowed skew from the controller's clock
// (ErrStale).
//
// # Session keys
//
// The Accept carries AcceptNonceLen (32) random bytes of the controller.
// Both ends derive the session's keys with HKDF-SHA256 (RFC 5869): the
// secret is the host key, the salt the Hello's MAC (which covers the
// agent's nonce and every other Hello field) followed by the controller's
// nonce, and three expansions with the infos "weft session v2: stream to
// agent", "... stream to controller" and "... datagrams" give the two
// stream keys and the datagram key, 32 bytes each. Every session of every
// host has its own keys, fresh on both sides; the two directions never
// share one. Only a holder of the host key can derive them, which is how
// each end authenticates the other: the agent by the Hello's MAC, the
// controller by the first sealed frame (the Welcome), which the agent
// opens before it trusts anything of it. A controller without the host
// key, or a man in the middle, fails there (ErrAuth). There is no forward
// secrecy: a host key that leaks lets its holder read recorded sessions
// of that host (see "Choosing the handshake").
//
// # Sealed frames
//
// After the Accept, the body of every frame in both directions is sealed
// with AES-256-GCM under the key of its direction: the nonce is the
// frame's number in that direction (96 bits, from 0), the additional data
// the frame header (its length, which counts the SealOverhead (16) byte
// tag, and its type). A frame can be neither changed, replayed, reordered,
// dropped, nor moved to the other direction or another session without
// failing to open (ErrAuth); the stream is then out of step and closed.
// Unknown frame types are still opened (their number is used), then
// skipped.
//
// A delta split into frames is bounded by its receiver in total, not only
// per frame: an agent refuses one whose frames exceed its limit together
// (agent.Config.MaxDeltaBytes) with a Nack.
//
// # Choosing the handshake
//
// The stream could instead run over TLS 1.3 with certificates on both
// ends (agent certificates from the cluster CA). Measured on this 2-core
// machine, loaded (load average 10-14; BenchmarkHandshake,
// BenchmarkSecuredRoundTrip, BenchmarkSecuredIdleMemory, BenchmarkSealFrame):
//
//	                                      this handshake      TLS 1.3, mutual, ECDSA P-256
//	handshake CPU, agent end              16 µs               ≈ 2.1 ms (both ends: 4.3 ms;
//	handshake CPU, controller end         11 µs                 one ECDSA sign 69 µs, verify
//	                                                            147 µs, X25519 172 µs here)
//	5 KB snapshot + Ack round trip        73 µs (clear: 47)   72 µs
//	sealing and opening a 64 B frame      0.5 µs, 0 allocs
//	idle connection, per end              1.6 KB (clear: 0.75) 9.9 KB
//
// In a 100,000-host cold start the replicas' handshakes cost about 1 s of
// CPU in all with this handshake and about 200 s with TLS, against a 10 s
// goal; per frame the two cost the same, and TLS holds six times the
// memory per idle connection. TLS would bring forward secrecy, which the agents'
// views (endpoint addresses, policies) do not justify at that price; the
// host key already authenticates both ends. So the stream uses this
// handshake. The cold start with it against the stream in clear (the
// binary before this change), interleaved runs of `weft bench coldstart
// --hosts 2000 --endpoints 20000 --vpcs 200` on the shared machine (load
// average 11-24, which moves one run by ±30%):
//
//	                          in clear                  sealed
//	all programmed, 5 runs    2.21 2.61 2.89 2.92 3.34  1.84 2.81 3.18 3.80 3.99 s
//	median                    2.89 s                    3.18 s (1.10x)
//	CPU, replica + agents     2.24, 2.75 s              2.83, 2.90 s (two profiled runs)
//	of which crypto/...       0-10 ms                   20-40 ms
//
// The handshakes and sealed frames themselves take about 1% of the run's
// CPU (samples in crypto/); the other differences are within the spread
// between runs of one binary.
//
// To repeat the comparison on one build, build the baseline with the
// weftclearstream tag, whose frames carry a zero tag instead of the AEAD's
// (same framing and sizes, same handshake and datagram MACs, nothing
// encrypted or checked; `weft version` shows the tag and the controller
// warns at start; no flag turns it on and release builds never set it),
// and run the two binaries in turn:
//
//	go build -o bin/weft ./cmd/weft
//	go build -tags weftclearstream -o bin/weft-clear ./cmd/weft
//	bin/weft-clear bench coldstart --hosts 100000 --endpoints 1000000 --vpcs 10000
//	bin/weft bench coldstart --hosts 100000 --endpoints 1000000 --vpcs 10000
//
// BENCHMARKS.md has the figures.
package wire
