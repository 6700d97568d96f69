package stream

import (
	"sync"

	"github.com/weftnet/weft/wire"
)

// datagramKeys holds the datagram key of each host's latest session (see
// Server.Key). A key outlives its session: a host whose stream dropped
// keeps heartbeating with it until it connects again (a new key) or its
// host key changes (the key goes).
type datagramKeys struct {
	mu     sync.RWMutex
	byID   map[uint32]datagramKey
	byHost map[string]uint32
}

type datagramKey struct {
	host    string
	hostKey [wire.KeySize]byte // the host key of the session that made it
	key     []byte
}

func newDatagramKeys() *datagramKeys {
	return &datagramKeys{byID: map[uint32]datagramKey{}, byHost: map[string]uint32{}}
}

// set makes key the datagram key of host (host ID id) for a session made
// with hostKey.
func (d *datagramKeys) set(host string, id uint32, hostKey, key []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.byHost[host]; ok && old != id {
		delete(d.byID, old)
	}
	if prev, ok := d.byID[id]; ok && prev.host != host {
		delete(d.byHost, prev.host) // the ID was another host's
	}
	d.byHost[host] = id
	d.byID[id] = datagramKey{host: host, hostKey: [wire.KeySize]byte(hostKey), key: key}
}

// dropUnless drops host's key unless it was made with hostKey (nil: drop
// it whatever it was made with). It reports whether it dropped one.
func (d *datagramKeys) dropUnless(host string, hostKey []byte) bool {
	keep := func() bool {
		id, ok := d.byHost[host]
		return !ok || len(hostKey) == wire.KeySize && d.byID[id].hostKey == [wire.KeySize]byte(hostKey)
	}
	d.mu.RLock()
	k := keep() // the common case: nothing to drop, no write lock
	d.mu.RUnlock()
	if k {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if keep() {
		return false
	}
	id := d.byHost[host]
	delete(d.byHost, host)
	if d.byID[id].host == host {
		delete(d.byID, id)
	}
	return true
}

func (d *datagramKeys) get(id uint32) ([]byte, bool) {
	d.mu.RLock()
	e, ok := d.byID[id]
	d.mu.RUnlock()
	return e.key, ok
}
