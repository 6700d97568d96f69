// Package hostkey keeps the keys that authenticate each host's agent on the
// southbound channels (the Hello of the config stream, every UDP datagram).
//
// A host's key is random, made when the host enrols (see Enroller) and
// stored sealed under the cluster key (package secrets) at
// hostkeys/<Host UID> in etcd; deleting the Host deletes it in the same
// transaction (see DeleteOps). Keys are bound to the Host's UID, not its
// name: a Host deleted and created again under the same name gets a new UID
// and no key until it enrols again, so a leaked key dies with its Host. A
// Keyring follows the Hosts and the keys and answers lookups by host name
// and by host ID without I/O.
package hostkey

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// prefix is where host keys live, under the store's prefix.
const prefix = "hostkeys/"

// etcdKey returns the etcd key of the key of the Host with this UID.
func etcdKey(st *store.Store, hostUID string) string { return st.Key(prefix + hostUID) }

// PutOp returns the operation that stores key as the key of the Host with
// this UID, sealed.
func PutOp(st *store.Store, s *secrets.Sealer, hostUID string, key []byte) clientv3.Op {
	k := etcdKey(st, hostUID)
	return clientv3.OpPut(k, string(s.Seal(k, key)))
}

// DeleteOp returns the operation that deletes the key of a Host.
func DeleteOp(st *store.Store, hostUID string) clientv3.Op {
	return clientv3.OpDelete(etcdKey(st, hostUID))
}

// host is what the Keyring knows of a Host.
type host struct {
	uid string
	id  uint32
}

// Keyring maps host names and host IDs to keys, following the store.
type Keyring struct {
	st     *store.Store
	sealer *secrets.Sealer
	log    *slog.Logger
	life   lifecycle.Group

	mu     sync.RWMutex
	hosts  map[string]host   // by name
	keys   map[string][]byte // by Host UID
	byID   map[uint32][]byte // derived from the two above
	keyRev int64             // the revision the keys reflect
	keyCh  chan struct{}     // closed and replaced when keyRev advances

	// onChange is called with the hosts whose key may have changed, after
	// the change (OnChange).
	onChange atomic.Pointer[func(hosts []string)]
}

// OnChange makes f the function called, from the goroutines that follow
// the store, with the names of the hosts whose key may have changed (their
// Host or key was created, changed or deleted), once ByName and ByID answer
// with the change: the config stream cuts the sessions of a host whose key
// went. f must not block for long; nil stops the calls.
func (k *Keyring) OnChange(f func(hosts []string)) {
	if f == nil {
		k.onChange.Store(nil)
		return
	}
	k.onChange.Store(&f)
}

// changed calls the OnChange function; k.mu must not be held.
func (k *Keyring) changed(hosts []string) {
	if f := k.onChange.Load(); f != nil && len(hosts) > 0 {
		(*f)(hosts)
	}
}

// NewKeyring returns a Keyring of the hosts in st whose keys open with
// sealer; call Start.
func NewKeyring(st *store.Store, sealer *secrets.Sealer, log *slog.Logger) *Keyring {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keyring{st: st, sealer: sealer, log: log.With("subsystem", "hostkey"), keyCh: make(chan struct{})}
}

// Start loads the current hosts and keys, then follows both until Close.
func (k *Keyring) Start(ctx context.Context) error {
	if _, err := k.life.Start(); err != nil {
		return fmt.Errorf("hostkey: %w", err)
	}
	resp, err := k.st.Client().Get(ctx, k.st.Key(prefix), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("hostkey: load keys: %w", err)
	}
	k.resetKeys(resp.Kvs, resp.Header.Revision)
	hosts, rev := k.st.ListSelector(apiv1.KindHost, "", nil)
	k.resetHosts(hosts, rev)
	k.life.Go(func(ctx context.Context) {
		_ = store.Follow(ctx, k.st, store.FollowConfig{Name: "hostkey-hosts", Kind: apiv1.KindHost, From: rev,
			OnEvents: k.applyHosts, OnReset: k.resetHosts, Logger: k.log})
	})
	k.life.Go(func(ctx context.Context) {
		_ = k.st.FollowKeys(ctx, store.KeysConfig{Name: "hostkey-keys", Prefix: k.st.Key(prefix), From: resp.Header.Revision,
			OnEvents: k.applyKeys, OnReset: k.resetKeys, Logger: k.log})
	})
	return nil
}

// Close stops following the store and waits; idempotent.
func (k *Keyring) Close() error { return k.life.Close() }

func (k *Keyring) resetHosts(hosts []apiv1.Object, _ int64) {
	k.mu.Lock()
	names := k.names(nil)
	k.hosts = make(map[string]host, len(hosts))
	for _, o := range hosts {
		k.observeHost(store.EventAdded, o.(*apiv1.Host))
	}
	k.index()
	names = k.names(names)
	k.mu.Unlock()
	k.changed(names)
}

func (k *Keyring) applyHosts(evs []store.Event) {
	names := make([]string, 0, len(evs))
	k.mu.Lock()
	for _, ev := range evs {
		h := ev.Object.(*apiv1.Host)
		if k.observeHost(ev.Type, h) {
			names = append(names, h.Metadata.Name)
		}
	}
	// Most Host events are status writes (liveness, acks) that change
	// neither UID nor host ID: the index stands (rebuilding it for each
	// batch cost O(hosts) per batch, a quarter of a replica's CPU in a
	// cold start), and no session is checked.
	if len(names) > 0 {
		k.index()
	}
	k.mu.Unlock()
	k.changed(names)
}

// names appends the names of the hosts known to dst; k.mu is held.
func (k *Keyring) names(dst []string) []string {
	for name := range k.hosts {
		dst = append(dst, name)
	}
	return dst
}

// namesOf returns the hosts whose UID is in uids; k.mu is held.
func (k *Keyring) namesOf(uids map[string]bool) []string {
	var out []string
	for name, h := range k.hosts {
		if uids[h.uid] {
			out = append(out, name)
		}
	}
	return out
}

// observeHost applies one change of a Host and reports whether it changed
// what the Keyring knows of it; k.mu is held.
func (k *Keyring) observeHost(typ string, h *apiv1.Host) bool {
	old, had := k.hosts[h.Metadata.Name]
	if typ == store.EventDeleted {
		if had && old.uid == h.Metadata.UID {
			delete(k.hosts, h.Metadata.Name)
			return true
		}
		return false
	}
	next := host{uid: h.Metadata.UID, id: h.Status.HostID}
	k.hosts[h.Metadata.Name] = next
	return !had || old != next
}

func (k *Keyring) resetKeys(kvs []*mvccpb.KeyValue, rev int64) {
	k.mu.Lock()
	k.keys = make(map[string][]byte, len(kvs))
	for _, kv := range kvs {
		k.observeKey(kv, false)
	}
	k.index()
	k.advance(rev)
	names := k.names(nil)
	k.mu.Unlock()
	k.changed(names)
}

func (k *Keyring) applyKeys(evs []*clientv3.Event) {
	uids := make(map[string]bool, len(evs))
	k.mu.Lock()
	for _, ev := range evs {
		uids[k.observeKey(ev.Kv, ev.Type == clientv3.EventTypeDelete)] = true
	}
	k.index()
	k.advance(evs[len(evs)-1].Kv.ModRevision)
	names := k.namesOf(uids)
	k.mu.Unlock()
	k.changed(names)
}

// observeKey applies one change of a stored key and returns the Host UID
// it belongs to; k.mu is held.
func (k *Keyring) observeKey(kv *mvccpb.KeyValue, deleted bool) string {
	uid := strings.TrimPrefix(string(kv.Key), k.st.Key(prefix))
	if deleted {
		delete(k.keys, uid)
		return uid
	}
	key, err := k.sealer.Open(string(kv.Key), kv.Value)
	if err == nil && len(key) != wire.KeySize {
		err = fmt.Errorf("%d bytes, want %d", len(key), wire.KeySize)
	}
	if err != nil {
		delete(k.keys, uid)
		k.log.Error("ignoring a host key that does not open", "hostUID", uid, "err", err)
		return uid
	}
	k.keys[uid] = key
	return uid
}

// index rebuilds byID; k.mu is held.
func (k *Keyring) index() {
	k.byID = make(map[uint32][]byte, len(k.hosts))
	for _, h := range k.hosts {
		if key, ok := k.keys[h.uid]; ok && h.id != 0 {
			k.byID[h.id] = key
		}
	}
}

// advance notes that the keys reflect rev; k.mu is held.
func (k *Keyring) advance(rev int64) {
	if rev > k.keyRev {
		k.keyRev = rev
		close(k.keyCh)
		k.keyCh = make(chan struct{})
	}
}

// wait returns once the keys reflect rev.
func (k *Keyring) wait(ctx context.Context, rev int64) error {
	for {
		k.mu.RLock()
		done, ch := k.keyRev >= rev, k.keyCh
		k.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("hostkey: wait for revision %d: %w", rev, ctx.Err())
		}
	}
}

// ByName returns the key of a host by name: the key of the Host of that
// name as it exists now, false if there is none or it has not enrolled.
func (k *Keyring) ByName(name string) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	h, ok := k.hosts[name]
	if !ok {
		return nil, false
	}
	key, ok := k.keys[h.uid]
	return key, ok
}

// ByID returns the key of the host with this host ID (wire.Keyring).
func (k *Keyring) ByID(id uint32) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	key, ok := k.byID[id]
	return key, ok
}

// Key implements wire.Keyring.
func (k *Keyring) Key(id uint32) ([]byte, bool) { return k.ByID(id) }

// HostID returns the host ID of a host by name.
func (k *Keyring) HostID(name string) (uint32, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	h, ok := k.hosts[name]
	return h.id, ok && h.id != 0
}

var _ wire.Keyring = (*Keyring)(nil)
