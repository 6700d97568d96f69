package compile

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// A view version is epoch<<counterBits | etcd revision. The epoch names the
// etcd cluster (EpochFromClusterID), so that every replica following it
// numbers views alike (see the package documentation).
const (
	counterBits = 44
	counterMask = 1<<counterBits - 1
	// MaxEpoch is the largest epoch (20 bits).
	MaxEpoch = 1<<(64-counterBits) - 1
)

// makeVersion builds a version from an epoch and a counter value.
func makeVersion(epoch uint32, n uint64) uint64 {
	return uint64(epoch)<<counterBits | n&counterMask
}

// EpochOf returns the epoch of a version (the etcd cluster it numbers).
func EpochOf(version uint64) uint32 { return uint32(version >> counterBits) }

// EpochFromClusterID maps an etcd cluster ID to an epoch in [1, MaxEpoch].
// Every replica of one cluster gets the same epoch; a cluster restored from
// a backup (a new cluster ID, revisions that may repeat) gets another one,
// so agents holding versions of the old one get snapshots.
func EpochFromClusterID(id uint64) uint32 { return uint32(id%MaxEpoch) + 1 }

// randomEpoch picks a random epoch in [1, MaxEpoch].
func randomEpoch() (uint32, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("compile: random epoch: %w", err)
	}
	return binary.BigEndian.Uint32(b[:])%MaxEpoch + 1, nil
}
