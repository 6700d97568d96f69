// Package compile turns the desired state in the store into one view per
// host (package view) and keeps every view current, incrementally, with
// versions that let an agent resume from what it holds.
//
// # What a view holds
//
// A host's view is its own view.Host, every endpoint whose spec.host is the
// host (addresses, identity from the endpoint's status, VPC, VNI, CIDR and
// gateway from its subnet and VPC), the VPC of each such endpoint with all
// its subnets, default policy and QoS aggregate, each security policy of
// those VPCs (spec.vpc) that selects at least one of them (Applies lists
// those local endpoints) and each QoS class a local endpoint uses (its
// own, or through Config.ClassOf an AppIntent's). Remote endpoints are not
// in it: agents learn them on demand.
//
// # Policies
//
// A policy is compiled once for every host that holds it (its rules do
// not depend on the host): a rule without peers allows all peers; an
// ingress selector peer becomes the identities of the VPC's endpoints it
// matches (status.identity: the receiving host matches the identity the
// packet carries), an egress selector peer the /32 of each endpoint of the
// VPC it matches, on any host (a sender does not know a never-seen
// destination's identity); CIDR peers stay prefixes; ports become protocol
// numbers with port ranges or ICMP type and code. A policy isolates a
// direction when its spec lists it, even empty (see apiv1.SecurityPolicy).
// A policy whose spec.vpc is empty (stored before the field existed)
// applies nowhere until it is written again.
//
// To compile and to know whom a change concerns, the compiler keeps an
// index per VPC that a compiled view holds: the VPC's policies and its
// endpoints grouped by label set, with each set's identities, addresses
// and hosts counted. Which policies select an endpoint is answered once
// per label set (so per identity), and kept until a policy of the VPC
// changes, not matched again for every host. Only what changes a view
// recomputes it: an endpoint
// event recomputes its old and new host and, if an identity appeared in or
// left the VPC where an ingress selector matches it, or an address where
// an egress selector does, the hosts that hold the policies whose rules
// changed; a policy event the hosts that held it and those of the
// endpoints its selector matches now.
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
// marks the compiled views it may touch: an endpoint its old and new host
// (and the holders of the policies whose peers it changes, above); a
// subnet or VPC the hosts with endpoints in that VPC; a policy its holders
// and the hosts of what it selects; a QoS class the hosts that use it; an
// AppIntent (with ClassOf) the hosts of the endpoints it selects; a Host
// that host; none of them if only fields the view does not hold changed
// (status writes: liveness, acknowledged versions; labels of a policy).
// The compiler keeps these reverse indexes (VPC → hosts, policy → hosts,
// QoS class → hosts) from what each view was last built from. Waiting events are coalesced (a burst that
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
