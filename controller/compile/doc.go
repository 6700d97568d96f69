// Package compile turns the desired state in the store into one view per
// host (package view) and keeps every view current, incrementally, with
// versions that let an agent resume from what it holds.
//
// # What a view holds
//
// A host's view is its own view.Host, every endpoint whose spec.host is the
// host (addresses from the endpoint's status, VPC, VNI, CIDR and gateway
// from its subnet and VPC), the VPC of each such endpoint with all its
// subnets, each security policy of those endpoints' tenants that selects at
// least one of them (Applies lists those local endpoints) and each QoS
// class a local endpoint uses. Remote endpoints are not in it: agents learn
// them on demand.
//
// # Which views a replica holds
//
// A view is compiled when first asked for (Subscribe, Delta, Resume,
// Version): a replica holds the views of the agents connected to it, not
// every host's, so its memory and compile work follow its share of the
// hosts. Requests that arrive together are compiled together, in parallel
// (one build per core). A view nobody subscribes to is dropped Linger
// after its last use, with its entries in the reverse indexes.
//
// # Incremental compilation
//
// The compiler follows store.Watch from the revision Start saw. Each event
// marks the compiled views it may touch: an endpoint its old and new host;
// a subnet or VPC the hosts with endpoints in that VPC; a policy the hosts
// with endpoints of its tenant; a QoS class the hosts that use it; a Host
// that host, unless only fields the view does not hold changed (status
// writes: liveness, acknowledged versions). The compiler keeps these
// reverse indexes (VPC → hosts, tenant → hosts, QoS class → hosts) from what
// each view was last built from. Waiting events are coalesced (a burst that
// touches one host a thousand times recomputes it once); a touched host's
// resource set is rebuilt from the cache and diffed against the current one
// by comparing the encoded JSON, so only resources whose bytes changed get
// a new version. Compilation is level-based: it always reads the latest
// cache, so a view never goes back in time and every event eventually
// converges it. The encoding of a VPC is cached and shared by every view
// that holds it.
//
// # Versions
//
// A version is epoch<<44 | etcd revision. The epoch (20 bits) names the
// etcd cluster (EpochFromClusterID), so every replica following it numbers
// a view alike: a change applied in a batch of events ending at revision R
// gets version R on every replica, each resource records the version at
// which it last changed, and a view's version is that of its last change.
// A view compiled for the first time starts its history (its floor) at the
// revision the compiler has applied. An agent that moves to another replica
// therefore gets a delta when that replica's history of the view reaches
// back to the agent's version. When it does not (the view was compiled
// after; the agent held its view across a controller restart), the agent's
// view hash (wire.Hello.ViewHash) decides: the same content gives an empty
// delta, other content a snapshot. Every delta carries the hash of the view
// it leads to, which the agent checks, so a view that diverged for any
// reason is replaced by a snapshot instead of drifting.
//
// # Tombstones and the horizon
//
// A deleted resource leaves a tombstone with its delete version. Tombstones
// are kept for the last TombstoneHorizon versions of a view, and at most
// TombstoneHorizon of them; dropping one raises the view's floor to its
// version. Memory per host is therefore O(resources + horizon), whatever
// the agents hold.
//
// # Deltas are computed, not queued
//
// Delta(host, from) walks the view: every resource changed after from and
// every tombstone after from, as one wire.Delta however many changes
// happened. Nothing is buffered per agent, so a slow or stalled agent
// costs the controller no memory: its changes coalesce into the next
// delta. A snapshot (every resource, FromVersion 0) answers a from of 0,
// from another epoch (another etcd cluster), a from beyond the revision
// applied (a version from the future, after Resume waited a little for
// this replica to catch up), or a from below the floor whose hash differs.
//
// Subscribe gives a one-slot channel poked without blocking when a view
// changes: the stream server waits on it instead of polling.
package compile
