// Package replicas keeps the membership of controller replicas in etcd:
// each replica puts its agent-facing address under a lease that it keeps
// alive, and every replica follows the set, so that agents are told (in
// the config stream's Welcome) which replicas exist and can spread over
// them by consistent hashing — and move to another when theirs dies (its
// lease expires within the TTL).
//
// Each replica is also an owner (OwnerPrefix): it puts its address there
// under a second lease with a long TTL (OwnerTTL, 10 minutes). A host
// belongs, for its liveness, to the replica its agent last streamed from,
// for as long as that replica is an owner: one that restarts, is upgraded
// or is cut off for a while keeps its hosts, and no other replica reports
// them Suspect or Dead meanwhile; only once an owner has been gone for the
// OwnerTTL are its hosts handed to the live replicas.
package replicas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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

// DefaultOwnerTTL is the owner lease's TTL: a replica gone for longer
// loses its hosts to the live replicas. etcd renews every lease by its
// TTL when a leader is elected, so a cluster restart (a power restore)
// gives every replica the whole TTL to come back.
const DefaultOwnerTTL = 10 * time.Minute

// Config configures a Membership.
type Config struct {
	// Store follows the membership keys (Store.FollowKeys); its etcd
	// client holds the lease.
	Store *store.Store
	// Prefix of the membership keys, e.g. "/weft/replicas/".
	Prefix string
	// OwnerPrefix, if set, of the owner keys, e.g. "/weft/owners/" (a
	// prefix of its own: a replica of an older version lists every key
	// under Prefix as a member).
	OwnerPrefix string
	// Self is this replica's agent-facing address ("" = follow only).
	Self string
	// TTL of the membership lease (default DefaultTTL) and OwnerTTL of the
	// owner lease (default DefaultOwnerTTL).
	TTL, OwnerTTL time.Duration
	// OnChange, if set, is called with the new member list whenever the
	// members or the owners change after Start (from a goroutine following
	// them; one call at a time).
	OnChange func(members []string)
	Logger   *slog.Logger
}

// Membership registers this replica and follows the others.
type Membership struct {
	cfg     Config
	cli     *clientv3.Client
	log     *slog.Logger
	lost    atomic.Uint64
	life    lifecycle.Group
	members keySet
	owners  keySet
	change  sync.Mutex // serialises OnChange
}

// keySet is the addresses under one prefix, followed from etcd.
type keySet struct {
	prefix string
	set    map[string]bool // the follow goroutine's (and Start's before it)

	mu      sync.RWMutex
	list    []string
	version uint64
}

// New checks the configuration.
func New(cfg Config) (*Membership, error) {
	for _, p := range []string{cfg.Prefix, cfg.OwnerPrefix} {
		if p != "" && !strings.HasSuffix(p, "/") {
			return nil, errors.New("replicas: prefixes must end in /")
		}
	}
	if cfg.Store == nil || cfg.Prefix == "" || cfg.Prefix == cfg.OwnerPrefix {
		return nil, errors.New("replicas: Store and a Prefix (not the OwnerPrefix) are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.OwnerTTL == 0 {
		cfg.OwnerTTL = DefaultOwnerTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Membership{cfg: cfg, cli: cfg.Store.Client(), log: cfg.Logger.With("subsystem", "replicas"),
		members: keySet{prefix: cfg.Prefix}, owners: keySet{prefix: cfg.OwnerPrefix}}, nil
}

// Start registers Self under its leases and loads the current members and
// owners; all are kept up to date until Close.
func (m *Membership) Start(ctx context.Context) error {
	life, err := m.life.Start()
	if err != nil {
		return fmt.Errorf("replicas: %w", err)
	}
	for _, s := range m.sets() {
		if m.cfg.Self != "" {
			ttl, lost := m.cfg.TTL, &m.lost
			if s == &m.owners {
				ttl, lost = m.cfg.OwnerTTL, nil
			}
			ka, err := m.register(ctx, life, s.prefix, ttl)
			if err != nil {
				return err
			}
			m.life.Go(func(ctx context.Context) { m.keepRegistered(ctx, ka, s.prefix, ttl, lost) })
		}
		resp, err := m.cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return fmt.Errorf("replicas: list %s: %w", s.prefix, err)
		}
		s.reset(resp.Kvs)
		m.life.Go(func(ctx context.Context) {
			_ = m.cfg.Store.FollowKeys(ctx, store.KeysConfig{Name: "replicas", Prefix: s.prefix, From: resp.Header.Revision,
				OnEvents: func(evs []*clientv3.Event) {
					s.apply(evs)
					m.changed()
				},
				Logger: m.log,
				OnReset: func(kvs []*mvccpb.KeyValue, _ int64) {
					s.reset(kvs)
					m.changed()
				}})
		})
	}
	return nil
}

// sets returns the key sets this Membership keeps.
func (m *Membership) sets() []*keySet {
	if m.cfg.OwnerPrefix == "" {
		return []*keySet{&m.members}
	}
	return []*keySet{&m.members, &m.owners}
}

// reset makes the set that of kvs.
func (s *keySet) reset(kvs []*mvccpb.KeyValue) {
	s.set = map[string]bool{}
	for _, kv := range kvs {
		s.set[strings.TrimPrefix(string(kv.Key), s.prefix)] = true
	}
	s.publish()
}

// apply applies changes of the set's keys.
func (s *keySet) apply(evs []*clientv3.Event) {
	for _, ev := range evs {
		addr := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
		if ev.Type == clientv3.EventTypePut {
			s.set[addr] = true
		} else {
			delete(s.set, addr)
		}
	}
	s.publish()
}

func (s *keySet) publish() {
	list := make([]string, 0, len(s.set))
	for a := range s.set {
		list = append(list, a)
	}
	sort.Strings(list)
	s.mu.Lock()
	s.list = list
	s.version++
	s.mu.Unlock()
}

func (s *keySet) get() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string(nil), s.list...)
}

func (s *keySet) has(addr string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := slices.BinarySearch(s.list, addr)
	return ok
}

func (m *Membership) changed() {
	if m.cfg.OnChange != nil {
		m.change.Lock()
		defer m.change.Unlock()
		m.cfg.OnChange(m.Members())
	}
}

// Members returns the sorted agent addresses of the live replicas.
func (m *Membership) Members() []string { return m.members.get() }

// Owners returns the sorted agent addresses of the owners: the replicas
// live within the OwnerTTL (none without an OwnerPrefix).
func (m *Membership) Owners() []string { return m.owners.get() }

// Present reports whether addr is a live replica or an owner.
func (m *Membership) Present(addr string) bool { return m.members.has(addr) || m.owners.has(addr) }

// Version increases whenever the member list changes.
func (m *Membership) Version() uint64 {
	m.members.mu.RLock()
	defer m.members.mu.RUnlock()
	return m.members.version
}

// Close stops following and waits; it revokes nothing: the leases expire
// by themselves (a clean shutdown could revoke them; a crash cannot, and a
// replica restarted within the OwnerTTL keeps its hosts). It is
// idempotent.
func (m *Membership) Close() error { return m.life.Close() }

// register puts Self under prefix with a new lease of ttl and keeps the
// lease alive until life ends; the returned channel closes when the lease
// is lost.
func (m *Membership) register(ctx, life context.Context, prefix string, ttl time.Duration) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	lease, err := m.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return nil, fmt.Errorf("replicas: grant lease: %w", err)
	}
	if _, err := m.cli.Put(ctx, prefix+m.cfg.Self, "", clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("replicas: register %s under %s: %w", m.cfg.Self, prefix, err)
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
// that still serves must not stay out of the list agents choose from. A
// loss counts in lost unless that is nil.
func (m *Membership) keepRegistered(life context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse, prefix string, ttl time.Duration, lost *atomic.Uint64) {
	backoff := 100 * time.Millisecond
	for {
		for range ka {
		}
		if life.Err() != nil {
			return
		}
		m.log.Warn("replica lease lost; registering again", "self", m.cfg.Self, "prefix", prefix)
		if lost != nil {
			lost.Add(1)
		}
		for {
			ctx, cancel := context.WithTimeout(life, m.cfg.TTL)
			next, err := m.register(ctx, life, prefix, ttl)
			cancel()
			if err == nil {
				ka, backoff = next, 100*time.Millisecond
				m.log.Info("replica registered again", "self", m.cfg.Self, "prefix", prefix)
				break
			}
			m.log.Warn("replica registration failed, retrying", "self", m.cfg.Self, "prefix", prefix, "err", err, "backoff", backoff)
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

// LeasesLost returns how often this replica lost its membership lease and
// registered again.
func (m *Membership) LeasesLost() uint64 { return m.lost.Load() }
