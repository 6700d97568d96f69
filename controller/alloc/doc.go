// Package alloc is the in-memory side of the controller's allocators: VXLAN
// network identifiers for VPCs (VNIs) and endpoint addresses for subnets
// (Pool, Pools), plus the MAC address derived from an endpoint address (MAC).
// It does no I/O.
//
// # Why in memory, with etcd reservation keys
//
// etcd is the source of truth. The controller commits every allocation
// together with the object that uses it in one etcd transaction, with a
// compare that the reservation key (for example the key of VNI 4711, or of
// address 10.0.1.7 in subnet acme/web-a) does not exist yet. etcd therefore
// guarantees that no value is ever given out twice, across controller
// replicas and across crashes, and that no reservation outlives a failed
// write. What etcd is bad at is choosing the value: searching for a free one
// with reads and compares would cost round trips and, with thousands of
// endpoint creates a second, would make concurrent creates collide on the
// same candidate and retry. This package chooses instead, in memory, in
// about a hundred nanoseconds and without contention:
//
//  1. v, err := pool.Allocate(host) picks a value and marks it used here;
//  2. the controller writes object + reservation key in one transaction;
//  3. if the transaction fails, pool.Release(v) gives the value back; but if
//     it failed because the reservation key already exists (another replica
//     took v), v stays marked, which is the truth, and the controller
//     allocates again;
//  4. deleting the object deletes the key, then calls Release.
//
// With several controller replicas, each replica should also Reserve the
// values it sees created by the others through its etcd watch (ErrInUse
// there just means it already knew), and Release the ones it sees deleted.
//
// After a restart the controller rebuilds the allocators from the objects
// stored in etcd with VNIs.Reserve and Pool.Reserve, which accept values in
// any order. An allocator that disagrees with etcd costs at worst a failed
// compare and a retry, never a duplicate.
//
// A replica need not hold the Pool of a subnet it never allocates in. The
// controller's registry builds a Pool on first use from a snapshot of the
// subnet's endpoints at one store revision S, with Reserve, and then
// applies only the watch events after S: Reserve and Release are not
// idempotent across address reuse (replaying the release of an address
// that has since been allocated again would free it).
//
// # VNIs
//
// VNIs is a bitmap over the range with a next-fit cursor: each allocation
// continues after the previous one, so a VNI released a moment ago (whose
// VXLAN state hosts may still hold) is reused last. VNI allocation happens
// once per VPC, so one mutex is enough.
//
// # Addresses in per-host blocks
//
// A Pool cuts its subnet into aligned blocks of BlockSize addresses (16 by
// default, fewer for tiny subnets so that there are at least MinBlocks of
// them). A host claims a whole block when it needs an address and has none
// free, and allocates its next BlockSize-1 addresses from it without
// touching anything shared. Blocks serve two purposes:
//
//   - Allocation is local and fast. Endpoint churn is thousands of creates a
//     second spread over many hosts, and allocations for different hosts
//     touch different blocks and different locks.
//   - Addresses of one host are contiguous, so Blocks(host) can be handed to
//     the host's agent (later agents allocate locally from them, and routes
//     can be aggregated per block rather than per endpoint).
//
// A block returns to the pool as soon as it is empty again, so it can move to
// another host and a subnet never fragments into blocks owned by hosts that
// no longer use them. When no block is free, a host takes any free address in
// another host's block, so every usable address of the subnet can be
// allocated however many hosts share it.
//
// # Locking
//
// There are three kinds of lock, always taken in this order:
//
//   - one mutex per host and pool, guarding the host's list of blocks;
//   - the pool mutex, guarding only the stack of free blocks: it is held for
//     a push or a pop when a block is claimed or given back (once every
//     BlockSize allocations of a host), never for the allocation itself;
//   - one mutex per block, guarding its owner and its count, and the block's
//     bits of the address bitmap (the bits are atomic words because small
//     blocks share a word).
//
// The common Allocate is: look the host up in a sync.Map (no lock shared
// with other hosts), lock the host, lock its current block, set a bit, unlock.
// So concurrent allocations for different hosts share no lock; they share
// only an atomic counter of used addresses. Allocations for the same host
// serialise on that host's mutex, which is what the agent of that host would
// do anyway. Release locks only the address's block, plus the pool and the
// owner when the block becomes empty. InUse and Free take no lock.
//
// # Memory
//
// The state of blocks (32 bytes each, plus one bit per address) is created
// in pages of 256 blocks the first time a page is used, so a pool costs what
// it holds, not what its prefix spans: with 100 addresses in use, a /24 pool
// takes about 2.5 KiB, a /16 about 13 KiB and an IPv6 /64 about 16 KiB. A
// page, once created, is kept. IPv6 subnets track only their first
// 2^MaxTrackedBitsV6 (about a million) addresses; IPv4 subnets larger than a
// /8 only their first 2^24.
package alloc
