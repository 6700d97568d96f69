// Package replicas keeps the membership of controller replicas in etcd:
// each replica puts its agent-facing address under a lease that it keeps
// alive, and every replica follows the set, so that agents are told (in
// the config stream's Welcome) which replicas exist and can spread over
// them by consistent hashing — and move to another when theirs dies (its
// lease expires within the TTL).
package replicas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
)

// DefaultTTL is the lease TTL: a dead replica leaves the set within it.
const DefaultTTL = 10 * time.Second

// Config configures a Membership.
type Config struct {
	// Store follows the membership keys (Store.FollowKeys); its etcd
	// client holds the lease.
	Store *store.Store
	// Prefix of the membership keys, e.g. "/weft/replicas/".
	Prefix string
	// Self is this replica's agent-facing address ("" = follow only).
	Self string
	// TTL of the lease (default DefaultTTL).
	TTL time.Duration
	// OnChange, if set, is called with the new member list whenever it
	// changes after Start (from the goroutine following the others).
	OnChange func(members []string)
	Logger   *slog.Logger
}

// Membership registers this replica and follows the others.
type Membership struct {
	cfg  Config
	cli  *clientv3.Client
	log  *slog.Logger
	lost atomic.Uint64
	life lifecycle.Group
	set  map[string]bool // the follow goroutine's (and Start's before it)

	mu      sync.RWMutex
	members []string
	version uint64
}

// New checks the configuration.
func New(cfg Config) (*Membership, error) {
	if cfg.Store == nil || cfg.Prefix == "" || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, errors.New("replicas: Store and a Prefix ending in / are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Membership{cfg: cfg, cli: cfg.Store.Client(), log: cfg.Logger.With("subsystem", "replicas")}, nil
}

// Start registers Self under a lease and loads the current members; both
// are kept up to date until Close.
func (m *Membership) Start(ctx context.Context) error {
	life, err := m.life.Start()
	if err != nil {
		return fmt.Errorf("replicas: %w", err)
	}
	if m.cfg.Self != "" {
		ka, err := m.register(ctx, life)
		if err != nil {
			return err
		}
		m.life.Go(func(ctx context.Context) { m.keepRegistered(ctx, ka) })
	}
	resp, err := m.cli.Get(ctx, m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("replicas: list: %w", err)
	}
	m.reset(resp.Kvs, 0)
	m.life.Go(func(ctx context.Context) {
		_ = m.cfg.Store.FollowKeys(ctx, store.KeysConfig{Name: "replicas", Prefix: m.cfg.Prefix, From: resp.Header.Revision,
			OnEvents: m.apply, Logger: m.log,
			OnReset: func(kvs []*mvccpb.KeyValue, rev int64) {
				m.reset(kvs, rev)
				m.changed()
			}})
	})
	return nil
}

// reset makes the members those of kvs.
func (m *Membership) reset(kvs []*mvccpb.KeyValue, _ int64) {
	m.set = map[string]bool{}
	for _, kv := range kvs {
		m.set[strings.TrimPrefix(string(kv.Key), m.cfg.Prefix)] = true
	}
	m.publish()
}

// apply applies changes of the membership keys.
func (m *Membership) apply(evs []*clientv3.Event) {
	for _, ev := range evs {
		addr := strings.TrimPrefix(string(ev.Kv.Key), m.cfg.Prefix)
		if ev.Type == clientv3.EventTypePut {
			m.set[addr] = true
		} else {
			delete(m.set, addr)
		}
	}
	m.publish()
	m.changed()
}

func (m *Membership) changed() {
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(m.Members())
	}
}

func (m *Membership) publish() {
	list := make([]string, 0, len(m.set))
	for a := range m.set {
		list = append(list, a)
	}
	sort.Strings(list)
	m.mu.Lock()
	m.members = list
	m.version++
	m.mu.Unlock()
}

// Members returns the sorted agent addresses of the live replicas.
func (m *Membership) Members() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]string(nil), m.members...)
}

// Version increases whenever the member list changes.
func (m *Membership) Version() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.version
}

// Close stops following and waits; it revokes nothing: the lease expires
// by itself within the TTL (a clean shutdown could revoke it; a crash
// cannot). It is idempotent.
func (m *Membership) Close() error { return m.life.Close() }

// register puts Self under a new lease and keeps the lease alive until
// life ends; the returned channel closes when the lease is lost.
func (m *Membership) register(ctx, life context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	lease, err := m.cli.Grant(ctx, int64(m.cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("replicas: grant lease: %w", err)
	}
	if _, err := m.cli.Put(ctx, m.cfg.Prefix+m.cfg.Self, "", clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("replicas: register %s: %w", m.cfg.Self, err)
	}
	ka, err := m.cli.KeepAlive(life, lease.ID)
	if err != nil {
		return nil, fmt.Errorf("replicas: keep lease alive: %w", err)
	}
	return ka, nil
}

// keepRegistered drains the lease's keep-alive answers; when the lease is
// lost (etcd overloaded or unreachable for longer than the TTL, the lease
// revoked) it registers again, with backoff, until life ends: a replica
// that still serves must not stay out of the list agents choose from.
func (m *Membership) keepRegistered(life context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	backoff := 100 * time.Millisecond
	for {
		for range ka {
		}
		if life.Err() != nil {
			return
		}
		m.log.Warn("replica lease lost; registering again", "self", m.cfg.Self)
		m.lost.Add(1)
		for {
			ctx, cancel := context.WithTimeout(life, m.cfg.TTL)
			next, err := m.register(ctx, life)
			cancel()
			if err == nil {
				ka, backoff = next, 100*time.Millisecond
				m.log.Info("replica registered again", "self", m.cfg.Self)
				break
			}
			m.log.Warn("replica registration failed, retrying", "self", m.cfg.Self, "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-life.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, m.cfg.TTL)
		}
	}
}

// LeasesLost returns how often this replica lost its lease and registered
// again.
func (m *Membership) LeasesLost() uint64 { return m.lost.Load() }
