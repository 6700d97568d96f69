package agent

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// rendezvousOrder returns the distinct addresses in addrs ordered by their
// rendezvous (highest random weight) score for host, highest first:
// score(addr) is the first 8 bytes, big endian, of
// SHA-256(host + "\x00" + addr); ties go to the smaller address. Every
// host gets its own order, so hosts spread evenly over the replicas, and
// removing a replica moves only the hosts that were on it.
func rendezvousOrder(host string, addrs []string) []string {
	type scored struct {
		addr  string
		score uint64
	}
	s := make([]scored, 0, len(addrs))
	for _, a := range addrs {
		if slices.ContainsFunc(s, func(x scored) bool { return x.addr == a }) {
			continue
		}
		s = append(s, scored{a, rendezvousScore(host, a)})
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

func rendezvousScore(host, addr string) uint64 {
	h := sha256.New()
	h.Write([]byte(host))
	h.Write([]byte{0})
	h.Write([]byte(addr))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
