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
// # Incremental compilation
//
// Start compiles every host from the store's cache (builds run in
// parallel, one per core), then follows store.Watch. Each event marks the hosts it may touch: an endpoint its old
// and new host; a subnet or VPC the hosts with endpoints in that VPC; a
// policy the hosts with endpoints of its tenant; a QoS class the hosts that
// use it; a Host that host. The compiler keeps these reverse indexes (VPC →
// hosts, tenant → hosts, QoS class → hosts) from what each view was last
// built from. Waiting events are coalesced (a burst that touches one host a
// thousand times recomputes it once); a touched host's resource set is
// rebuilt from the cache and diffed against the current one by comparing
// the encoded JSON, so only resources whose bytes changed get a new
// version. Compilation is level-based: it always reads the latest cache, so
// a view never goes back in time and every event eventually converges it.
// The encoding of a VPC is cached and shared by every view that holds it.
//
// # Versions
//
// A version is epoch<<44 | counter. The epoch (20 bits, Config.Epoch or
// random) names the compiler incarnation; the counter is one clock for all
// hosts of the incarnation, so a host's versions increase strictly but not
// by one. Each resource records the version at which it last changed; a
// view's version is the version of its last change. A view made for a host
// (again) starts at the current clock, so no agent can hold a later version
// of an older view of that host.
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
// from another epoch (a previous incarnation or another replica), a from
// above the current version (a version from the future), or a from below
// the floor (tombstones it needs were dropped).
//
// Subscribe gives a one-slot channel poked without blocking when a view
// changes: the stream server waits on it instead of polling.
package compile
