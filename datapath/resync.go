package datapath

import (
	"hash/fnv"
	"time"
)

// ResyncDue says whether a driver should read the kernel state of object
// id again, last verified at verified, with resync interval r (a driver's
// EndpointResync; negative: always). The interval is shortened by up to
// half of it, by a hash of id, so that objects set up together are not
// all read again by one Set.
func ResyncDue(r time.Duration, id string, verified time.Time) bool {
	if r < 0 {
		return true
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	r -= time.Duration(float64(r/2) * float64(h.Sum32()) / (1 << 32))
	return time.Since(verified) >= r
}
