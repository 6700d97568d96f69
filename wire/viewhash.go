package wire

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// ViewHashSize is the length of a view hash.
const ViewHashSize = 16

// ViewHash returns a digest of a set of resources: the first ViewHashSize
// bytes of SHA-256 over the resources sorted by type, then ID, each as its
// type, ID and data (Data followed by Tail), every field prefixed with its 4-byte length. Two sets
// have the same hash when they have the same keys with the same bytes,
// whatever their order. rs is sorted in place.
func ViewHash(rs []Resource) []byte {
	slices.SortFunc(rs, func(a, b Resource) int {
		return cmp.Or(cmp.Compare(a.Key.Type, b.Key.Type), cmp.Compare(a.Key.ID, b.Key.ID))
	})
	h := sha256.New()
	var n [4]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	for _, r := range rs {
		put([]byte(r.Key.Type))
		put([]byte(r.Key.ID))
		binary.BigEndian.PutUint32(n[:], uint32(len(r.Data)+len(r.Tail)))
		h.Write(n[:])
		h.Write(r.Data)
		h.Write(r.Tail)
	}
	var sum [sha256.Size]byte
	return h.Sum(sum[:0])[:ViewHashSize]
}
