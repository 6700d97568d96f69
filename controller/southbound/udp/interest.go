package udp

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

// locKey identifies an endpoint address in a virtual network. IPv4
// addresses are kept unmapped.
type locKey struct {
	vni uint32
	ip  netip.Addr
}

func (k locKey) hash() uint32 {
	a := k.ip.As16()
	h := binary.BigEndian.Uint32(a[12:]) ^ binary.BigEndian.Uint32(a[8:]) ^ k.vni*0x9e3779b1
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	return h
}

const interestShards = 64

// interestTable records which hosts asked about which addresses, until
// the answer they got expires. Safe for concurrent use.
type interestTable struct {
	shards [interestShards]interestShard
}

type interestShard struct {
	mu sync.Mutex
	m  map[locKey]*hostSet
}

// hostSet is the hosts interested in one address: a slice scanned
// linearly while small, indexed by a map once it grows.
type hostSet struct {
	hosts []hostInterest
	index map[uint32]int // hostID → position in hosts; nil while small
}

type hostInterest struct {
	hostID  uint32
	expires int64 // monotonic ns
}

// indexAbove is the set size at which a hostSet starts indexing.
const indexAbove = 32

func (t *interestTable) shard(k locKey) *interestShard {
	return &t.shards[k.hash()%interestShards]
}

// add records (or extends) hostID's interest in k until expires.
func (t *interestTable) add(k locKey, hostID uint32, expires int64) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil {
		sh.m = make(map[locKey]*hostSet)
	}
	s := sh.m[k]
	if s == nil {
		s = &hostSet{}
		sh.m[k] = s
	}
	s.add(hostID, expires)
}

func (s *hostSet) add(hostID uint32, expires int64) {
	if s.index != nil {
		if i, ok := s.index[hostID]; ok {
			s.hosts[i].expires = max(s.hosts[i].expires, expires)
			return
		}
	} else {
		for i := range s.hosts {
			if s.hosts[i].hostID == hostID {
				s.hosts[i].expires = max(s.hosts[i].expires, expires)
				return
			}
		}
	}
	s.hosts = append(s.hosts, hostInterest{hostID, expires})
	switch {
	case s.index != nil:
		s.index[hostID] = len(s.hosts) - 1
	case len(s.hosts) > indexAbove:
		s.reindex()
	}
}

func (s *hostSet) reindex() {
	if len(s.hosts) <= indexAbove {
		s.index = nil
		return
	}
	s.index = make(map[uint32]int, len(s.hosts))
	for i, h := range s.hosts {
		s.index[h.hostID] = i
	}
}

// prune drops the expired interests and reports whether any remain.
func (s *hostSet) prune(now int64) bool {
	kept := s.hosts[:0]
	for _, h := range s.hosts {
		if h.expires > now {
			kept = append(kept, h)
		}
	}
	if len(kept) != len(s.hosts) {
		clear(s.hosts[len(kept):])
		s.hosts = kept
		s.reindex()
	}
	return len(s.hosts) > 0
}

// take removes the interest in k and appends the hosts whose interest had
// not expired to dst.
func (t *interestTable) take(dst []uint32, k locKey, now int64) []uint32 {
	sh := t.shard(k)
	sh.mu.Lock()
	s := sh.m[k]
	delete(sh.m, k)
	sh.mu.Unlock()
	if s == nil {
		return dst
	}
	for _, h := range s.hosts {
		if h.expires > now {
			dst = append(dst, h.hostID)
		}
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
	if s := sh.m[k]; s != nil {
		for _, h := range s.hosts {
			if h.expires > now {
				out = append(out, h.hostID)
			}
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
		for k, s := range sh.m {
			if !s.prune(now) {
				delete(sh.m, k)
				continue
			}
			n += len(s.hosts)
		}
		sh.mu.Unlock()
	}
	return n
}
