// Package rendezvous spreads hosts over controller replicas by rendezvous
// (highest random weight) hashing. Agents use it to pick the replica they
// stream from, replicas to decide which of them speaks for a host that no
// replica hears from, and the simulator to predict both: all must agree,
// so there is one implementation.
package rendezvous

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// Score is host's weight for replica addr: the first 8 bytes, big endian,
// of SHA-256(host + "\x00" + addr).
func Score(host, addr string) uint64 {
	h := sha256.New()
	h.Write([]byte(host))
	h.Write([]byte{0})
	h.Write([]byte(addr))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Order returns the distinct addresses in addrs ordered by Score for host,
// highest first, ties to the smaller address. Every host gets its own
// order, so hosts spread evenly over the replicas, and removing a replica
// moves only the hosts that were on it.
func Order(host string, addrs []string) []string {
	type scored struct {
		addr  string
		score uint64
	}
	s := make([]scored, 0, len(addrs))
	for _, a := range addrs {
		if slices.ContainsFunc(s, func(x scored) bool { return x.addr == a }) {
			continue
		}
		s = append(s, scored{a, Score(host, a)})
	}
	slices.SortFunc(s, func(x, y scored) int {
		return cmp.Or(cmp.Compare(y.score, x.score), cmp.Compare(x.addr, y.addr))
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].addr
	}
	return out
}

// Top returns the first address of Order(host, addrs) without sorting, ""
// for no addresses.
func Top(host string, addrs []string) string {
	best, bestScore := "", uint64(0)
	for _, a := range addrs {
		s := Score(host, a)
		if best == "" || s > bestScore || s == bestScore && a < best {
			best, bestScore = a, s
		}
	}
	return best
}
