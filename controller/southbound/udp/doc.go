// Package udp is the controller's end of the southbound UDP channel (the
// datagram format is package wire's): it ingests heartbeats into the
// liveness table and answers on-demand location lookups, and it pushes
// invalidations to the hosts that asked about an endpoint that moved.
//
// # Sockets and readers
//
// A Server opens Config.Sockets UDP sockets on one address with
// SO_REUSEPORT (default: one per GOMAXPROCS), so the kernel spreads the
// hosts' flows over them, and runs one reader goroutine per socket. A
// reader takes up to ReadBatch (64) datagrams per recvmmsg and answers
// with one sendmmsg per batch. Both calls are issued directly on
// preallocated message headers through the socket's RawConn:
// golang.org/x/net/ipv4's ReadBatch makes the same syscall but allocates
// a net.UDPAddr for every datagram. Sends use MSG_DONTWAIT, so a reader
// never waits for a socket: a datagram the kernel refuses is dropped and
// counted.
//
// Every datagram is authenticated by a wire.Verifier (size, magic,
// version, direction, key, HMAC tag, replay window) before anything else,
// and every rejection is counted by reason in
// weft_udp_rejected_total{reason}: short, too_large, bad_magic, version,
// unknown_type, direction, unknown_host, auth, replay, malformed,
// rate_limited, host_id_range, no_locator. In a controller the keys
// (Config.Keys) are those of the hosts' latest config-stream sessions with
// this replica (stream.Server.Key): a datagram of an older session, or
// sent to another replica, or to this one before it restarted, fails
// authentication, and each session's replay window starts fresh, so a
// failover to a replica whose sequence numbers are lower loses nothing. A reader never blocks on one
// host: per-host state is a slot indexed by host ID (PeerBytes bytes)
// updated with atomics — the host's last source address (where replies
// and invalidations go) and its lookup token bucket. The heartbeat path
// allocates nothing per datagram: decode into reused structs, one
// liveness.Table.Observe (three atomic stores), counters summed per batch.
//
// # Lookups, interest and invalidation
//
// A host may look up addresses only in the VNIs where it has endpoints of
// its own: the Locator counts each host ID's endpoints per VNI (its
// scope), and a query outside it gets no answer (counted as
// weft_udp_lookup_queries_total{result="out_of_scope"}), so that no host
// can map another tenant's placements. Lookups are rate limited by token
// buckets per host (Config.RateLimit; the request is refused:
// rejected{reason="rate_limited"}) and per tenant of the VNI
// (Config.TenantRateLimit; the query is refused:
// queries{result="tenant_rate_limited"}), so one tenant's flood leaves the
// others their share.
//
// The Locator follows the store's Endpoint and Host events and indexes
// every endpoint by (VNI, IP) → location: the underlay IP of its host, its
// MAC, its security identity (0 for now) and an epoch, the endpoint's
// resourceVersion at its last move (or the Host's, when the host's
// underlay address changed), so epochs only grow. A LookupRequest gets a
// LookupReply with one answer per query: found with the location and
// Config TTL (60 s), or not found with a short NegativeTTL (5 s) and the
// index's store revision as epoch, so that an Invalidate for an endpoint
// created later supersedes it.
//
// The Locator remembers which host IDs asked about which (VNI, IP) until
// their answer expires. When an endpoint moves (new host, MAC or host
// address), appears at an address someone was told did not exist, or is
// deleted, the Locator sends an Invalidate, signed with each host's key,
// to exactly the hosts whose interest has not expired — with the new
// location, or without one for a deletion — and forgets their interest;
// an Invalidate with a location is itself an answer, so those hosts are
// remembered again for TTL. A lookup reads the index, registers the
// interest, and reads again only if the index shard changed meanwhile; a
// move is indexed before the interest is collected. So a lookup racing a
// move either answers with the new location or is invalidated.
// Memory is bounded by the lookups of the last TTL. Index entries hold no
// pointers, so the garbage collector does not scan the index.
//
// Metrics: weft_udp_received_total, weft_udp_accepted_total{type},
// weft_udp_rejected_total{reason}, weft_udp_lookup_queries_total{result},
// weft_udp_sent_total{type}, weft_udp_send_dropped_total,
// weft_udp_read_batch_size, weft_locator_endpoints, weft_locator_interests.
package udp
