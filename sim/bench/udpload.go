package bench

import (
	"crypto/sha256"
	"encoding/binary"
	"runtime"
)

// What the UDP load generators (heartbeat senders, lookup clients) share.

// sendBatch is how many datagrams one sendmmsg carries.
const sendBatch = 64

// hostKeys derives host i's raw key (index i; index 0 unused) from seed:
// the parent and a child process derive the same keys.
func hostKeys(seed []byte, hosts int) [][]byte {
	keys := make([][]byte, hosts+1)
	buf := make([]byte, len(seed)+4)
	copy(buf, seed)
	for id := 1; id <= hosts; id++ {
		binary.BigEndian.PutUint32(buf[len(seed):], uint32(id))
		k := sha256.Sum256(buf)
		keys[id] = k[:]
	}
	return keys
}

// serverSockets is the number of SO_REUSEPORT sockets of a udp.Server
// configured with n (udp.Config.Sockets; 0: GOMAXPROCS).
func serverSockets(n int) int {
	if n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}
