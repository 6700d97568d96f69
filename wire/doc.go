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
//     authenticated with a per-host key and checked against a replay window;
//   - a TCP config stream for versioned view deltas: length-prefixed frames
//     whose bodies are JSON (the v1 body codec), opened by an authenticated
//     Hello.
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
// at registration, used in both directions. A receiver accepts a datagram
// only if (in this order) its size, magic, version and type are valid, the
// type travels towards the receiver (ErrDirection otherwise: a datagram
// reflected to its sender is refused), the keyring knows the host, the
// sequence number passes the host's replay window (checked before the tag,
// as a cheap rejection, and recorded after it) and the tag matches
// (compared in constant time). The window is the one of IPsec and WireGuard: it
// remembers the highest sequence number accepted and which of the 63 below
// it were seen; a higher number is accepted and slides the window however
// far it jumps, a number in the window is accepted once, a number below
// the window is refused. The window moves only for authentic datagrams.
//
// Sequence numbers are strictly increasing per host per sender. A sender
// starts its counter at the wall clock in nanoseconds (NewSequence), so a
// restart does not go back to numbers already used.
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
//	5       L-1   body: the JSON encoding (encoding/json) of the message struct
//
// The maximum frame defaults to DefaultMaxFrame (16 MiB); a longer frame is
// refused with ErrTooLarge before its body is read, and a receiver's memory
// grows with the bytes that actually arrive, not with the announced length.
//
//	type  message     direction
//	1     Hello       agent → controller
//	2     Welcome     controller → agent
//	3     Delta       controller → agent
//	4     Ack         agent → controller
//	5     Nack        agent → controller
//	6     Invalidate  controller → agent (the UDP struct, as JSON)
//
// The agent opens the stream with a Hello saying which view version it
// holds (0 for none). The controller verifies it (VerifyHello), answers with
// a Welcome (Snapshot set if it cannot send deltas from that version, Error
// set to refuse the agent) and then sends Deltas. The agent applies a Delta
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
//	"weft-hello-v1\x00" (14 bytes)
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
// Only the Hello is authenticated: the frames after it carry no MAC, and
// nothing authenticates the controller to the agent. Until the stream runs
// over TLS or gains per-frame tags, it must run on a trusted network.
package wire
