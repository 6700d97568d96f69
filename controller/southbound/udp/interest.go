package udp

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// locKey identifies an endpoint address in a virtual network: the VNI and
// the 16-byte form of the unmapped address (an IPv4 address and its
// IPv4-mapped IPv6 form are the same endpoint). It holds no pointers.
type locKey struct {
	ip  [16]byte
	vni uint32
}

func newLocKey(vni uint32, ip netip.Addr) locKey {
	return locKey{ip: ip.Unmap().As16(), vni: vni}
}

// addr returns the key's address (IPv4 for a mapped one).
func (k locKey) addr() netip.Addr { return netip.AddrFrom16(k.ip).Unmap() }

func (k locKey) hash() uint32 {
	h := binary.BigEndian.Uint32(k.ip[12:]) ^ binary.BigEndian.Uint32(k.ip[8:]) ^ k.vni*0x9e3779b1
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	return h
}

const interestShards = 64

// interestGrain rounds expiries up, so that the repeated lookups of one
// host within a grain do not rewrite its entry.
const interestGrain = int64(time.Second)

// interestTable records which hosts asked about which addresses, until
// the answer they got expires. Safe for concurrent use.
type interestTable struct {
	shards [interestShards]interestShard
}

// interestKey is one host's interest in one address.
type interestKey struct {
	k    locKey
	host uint32
}

type interestShard struct {
	mu sync.Mutex
	// exp holds every (address, host) interest and its expiry: one map
	// access for the common lookup of a host that asked before.
	exp map[interestKey]int64
	// hosts lists, per address, the hosts that have an entry in exp.
	hosts map[locKey][]uint32
}

func (t *interestTable) shard(k locKey) *interestShard {
	return &t.shards[k.hash()%interestShards]
}

// add records (or extends) hostID's interest in k until expires.
func (t *interestTable) add(k locKey, hostID uint32, expires int64) {
	expires += interestGrain - 1
	expires -= expires % interestGrain
	ik := interestKey{k, hostID}
	sh := t.shard(k)
	sh.mu.Lock()
	if sh.exp == nil {
		sh.exp = make(map[interestKey]int64)
		sh.hosts = make(map[locKey][]uint32)
	}
	old, ok := sh.exp[ik]
	switch {
	case !ok:
		sh.exp[ik] = expires
		sh.hosts[k] = append(sh.hosts[k], hostID)
	case expires > old:
		sh.exp[ik] = expires
	}
	sh.mu.Unlock()
}

// take removes the interest in k and appends the hosts whose interest had
// not expired to dst.
func (t *interestTable) take(dst []uint32, k locKey, now int64) []uint32 {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	hosts, ok := sh.hosts[k]
	if !ok {
		return dst
	}
	delete(sh.hosts, k)
	for _, h := range hosts {
		ik := interestKey{k, h}
		if sh.exp[ik] > now {
			dst = append(dst, h)
		}
		delete(sh.exp, ik)
	}
	return dst
}

// hosts returns the hosts currently interested in k (for tests and
// introspection).
func (t *interestTable) hosts(k locKey, now int64) []uint32 {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []uint32
	for _, h := range sh.hosts[k] {
		if sh.exp[interestKey{k, h}] > now {
			out = append(out, h)
		}
	}
	return out
}

// expire drops every expired interest and returns how many (address,
// host) interests remain.
func (t *interestTable) expire(now int64) int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, hosts := range sh.hosts {
			kept := hosts[:0]
			for _, h := range hosts {
				ik := interestKey{k, h}
				if sh.exp[ik] > now {
					kept = append(kept, h)
				} else {
					delete(sh.exp, ik)
				}
			}
			switch {
			case len(kept) == 0:
				delete(sh.hosts, k)
			case len(kept) < len(hosts):
				clear(hosts[len(kept):])
				sh.hosts[k] = kept
			}
			n += len(kept)
		}
		sh.mu.Unlock()
	}
	return n
}
