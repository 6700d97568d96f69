// Package hostkey gives every host the key that authenticates its agent on
// the southbound channels (the Hello of the config stream, every UDP
// datagram). Keys are derived, not stored: a host's key is
// HMAC-SHA256(cluster secret, "weft/v1 host key" || 0 || host name), so
// every controller replica that shares the cluster secret (kept in etcd)
// computes the same keys, and an operator provisions a host with
// `weft host-key NAME`. A Keyring follows the store's Host objects and
// answers key lookups by host name and by host ID without I/O.
package hostkey

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// SecretSize is the length of the cluster secret.
const SecretSize = 32

// Derive returns the per-host key of host under the cluster secret.
func Derive(secret []byte, host string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("weft/v1 host key"))
	m.Write([]byte{0})
	m.Write([]byte(host))
	return m.Sum(nil)[:wire.KeySize]
}

// LoadOrCreateSecret returns the cluster secret stored at key in etcd,
// creating a random one if there is none yet (in one transaction, so
// replicas starting together agree on one secret).
func LoadOrCreateSecret(ctx context.Context, cli *clientv3.Client, key string) ([]byte, error) {
	fresh := make([]byte, SecretSize)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, hex.EncodeToString(fresh))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	if resp.Succeeded {
		return fresh, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return nil, errors.New("cluster secret: vanished while read")
	}
	return ParseHex(string(kvs[0].Value))
}

// ParseHex decodes a hex key (a cluster secret or a host key), as written
// in key files; surrounding white space is ignored.
func ParseHex(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("key: not hex: %w", err)
	}
	if len(b) != SecretSize {
		return nil, fmt.Errorf("key: %d bytes, want %d", len(b), SecretSize)
	}
	return b, nil
}

// ReadFile reads a hex key file.
func ReadFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	k, err := ParseHex(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WriteFile writes a hex key file readable only by its owner.
func WriteFile(path string, key []byte) error {
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// Keyring maps host names and host IDs to keys, following the store.
type Keyring struct {
	secret []byte
	st     *store.Store
	log    *slog.Logger
	life   lifecycle.Group

	mu   sync.RWMutex
	byID map[uint32][]byte
	idOf map[string]uint32
}

// NewKeyring returns a Keyring for the hosts in st; call Start.
func NewKeyring(secret []byte, st *store.Store, log *slog.Logger) *Keyring {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keyring{secret: secret, st: st, log: log.With("subsystem", "hostkey")}
}

// Start loads the current hosts, then follows Host changes until Close.
func (k *Keyring) Start(context.Context) error {
	if _, err := k.life.Start(); err != nil {
		return fmt.Errorf("hostkey: %w", err)
	}
	hosts, rev := k.st.ListSelector(apiv1.KindHost, "", nil)
	k.reset(hosts, rev)
	k.life.Go(func(ctx context.Context) {
		_ = store.Follow(ctx, k.st, store.FollowConfig{Name: "hostkey", Kind: apiv1.KindHost, From: rev,
			OnEvents: k.apply, OnReset: k.reset, Logger: k.log})
	})
	return nil
}

// Close stops following the store and waits; idempotent.
func (k *Keyring) Close() error { return k.life.Close() }

// reset makes the hosts the keyring knows exactly hosts.
func (k *Keyring) reset(hosts []apiv1.Object, _ int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.byID, k.idOf = map[uint32][]byte{}, map[string]uint32{}
	for _, o := range hosts {
		k.observe(store.EventAdded, o.(*apiv1.Host))
	}
}

func (k *Keyring) apply(evs []store.Event) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ev := range evs {
		k.observe(ev.Type, ev.Object.(*apiv1.Host))
	}
}

// observe applies one change of a host; k.mu is held.
func (k *Keyring) observe(typ string, h *apiv1.Host) {
	name, id := h.Metadata.Name, h.Status.HostID
	if typ == store.EventDeleted {
		if k.idOf[name] == id {
			delete(k.idOf, name)
		}
		delete(k.byID, id)
		return
	}
	if id == 0 {
		return
	}
	if old, ok := k.idOf[name]; ok && old != id {
		delete(k.byID, old)
	}
	k.idOf[name] = id
	k.byID[id] = Derive(k.secret, name)
}

// ByName returns the key of a host by name; any name has a key, whether or
// not the Host exists yet (an agent registers its Host with it).
func (k *Keyring) ByName(host string) []byte { return Derive(k.secret, host) }

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
func (k *Keyring) HostID(host string) (uint32, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	id, ok := k.idOf[host]
	return id, ok
}

var _ wire.Keyring = (*Keyring)(nil)
