// Package store keeps weft's desired state in etcd and serves it from
// memory.
//
// Objects (the weft/v1 kinds) are stored as JSON under
// <prefix>v1/<plural>/<tenant>/<name>, or <prefix>v1/<plural>/<name> for
// cluster-scoped kinds; metadata.resourceVersion is not stored but is the
// key's ModRevision. Other keys (address and VNI allocations) live under
// Store.Key(suffix).
//
// Writes: the layer above builds each write as a Txn of compares and
// put/delete ops and calls Commit. Concurrent Commits are grouped into one
// etcd txn holding one nested txn per caller (group commit), so hundreds of
// small writes cost one round trip and one fsync; each nested txn succeeds
// or fails on its own, and Txns writing the same key commit in arrival
// order. Commit returns once etcd has made the batch durable.
//
// Start primes the cache with a list of the prefix at one revision whose
// cost is linear in the keys: etcd walks the whole key range of every
// range request to count it, so the list reads ranges cut at kinds and
// tenants and sized by count-only requests rather than paging through the
// prefix (see listPlan), several at once.
//
// Reads: one etcd watch feeds a cache of typed objects with secondary
// indexes (endpoints by host, by subnet and by label; subnets by VPC).
// Objects read from the cache are shared by every reader and must never
// be modified: copy one before changing it. Endpoints, a million and more,
// are cached in a compact form rather than as objects, and every read of
// one (Get, List, the indexes, Watch events) builds a new *apiv1.Endpoint,
// equal to what was stored; other kinds are returned as cached. Revision
// and WaitForRevision give read-your-writes after a Commit; Sync makes the
// next cache read linearizable (concurrent Syncs share one quorum read of
// etcd's revision). When the watch
// falls behind etcd's compaction the cache lists again and publishes the
// difference.
//
// Watch streams events to subscribers (REST watches, the compiler) from a
// ring of recent events, or from etcd for older revisions; a subscriber too
// slow to keep up is closed rather than allowed to stall the cache. Follow
// (FollowKeys for raw etcd keys) is the one way to stay in step: it
// resumes such a watch, and relists when the history is compacted.
//
// StartEmbedded runs a single-member etcd inside the process for
// deployments without an external cluster. It listens only on a unix
// socket (never on TCP, where it would serve without TLS); the Store's own
// transactions and reads call its KV in process (Embedded.KV).
package store
