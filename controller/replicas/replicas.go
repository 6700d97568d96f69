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

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultTTL is the lease TTL: a dead replica leaves the set within it.
const DefaultTTL = 10 * time.Second

// Config configures a Membership.
type Config struct {
	Client *clientv3.Client
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
	log  *slog.Logger
	lost atomic.Uint64

	mu      sync.RWMutex
	members []string
	version uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New checks the configuration.
func New(cfg Config) (*Membership, error) {
	if cfg.Client == nil || cfg.Prefix == "" || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, errors.New("replicas: Client and a Prefix ending in / are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Membership{cfg: cfg, log: cfg.Logger.With("subsystem", "replicas")}, nil
}

// Start registers Self under a lease and loads the current members.
func (m *Membership) Start(ctx context.Context) error {
	cli := m.cfg.Client
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	if m.cfg.Self != "" {
		ka, err := m.register(ctx, runCtx)
		if err != nil {
			cancel()
			return err
		}
		m.wg.Add(1)
		go m.keepRegistered(runCtx, ka)
	}
	resp, err := cli.Get(ctx, m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		cancel()
		m.wg.Wait()
		return fmt.Errorf("replicas: list: %w", err)
	}
	set := map[string]bool{}
	for _, kv := range resp.Kvs {
		set[strings.TrimPrefix(string(kv.Key), m.cfg.Prefix)] = true
	}
	m.publish(set)
	wch := cli.Watch(runCtx, m.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for wr := range wch {
			for _, ev := range wr.Events {
				addr := strings.TrimPrefix(string(ev.Kv.Key), m.cfg.Prefix)
				set[addr] = ev.Type == clientv3.EventTypePut
				if !set[addr] {
					delete(set, addr)
				}
			}
			m.publish(set)
			if m.cfg.OnChange != nil {
				m.cfg.OnChange(m.Members())
			}
		}
	}()
	return nil
}

func (m *Membership) publish(set map[string]bool) {
	list := make([]string, 0, len(set))
	for a := range set {
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

// Close stops following and revokes nothing: the lease expires by itself
// within the TTL (a clean shutdown could revoke it; a crash cannot).
func (m *Membership) Close() error {
	m.once.Do(func() {
		if m.cancel != nil {
			m.cancel()
		}
		m.wg.Wait()
	})
	return nil
}

// register puts Self under a new lease and keeps the lease alive until
// runCtx ends; the returned channel closes when the lease is lost.
func (m *Membership) register(ctx, runCtx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	cli := m.cfg.Client
	lease, err := cli.Grant(ctx, int64(m.cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("replicas: grant lease: %w", err)
	}
	if _, err := cli.Put(ctx, m.cfg.Prefix+m.cfg.Self, "", clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("replicas: register %s: %w", m.cfg.Self, err)
	}
	ka, err := cli.KeepAlive(runCtx, lease.ID)
	if err != nil {
		return nil, fmt.Errorf("replicas: keep lease alive: %w", err)
	}
	return ka, nil
}

// keepRegistered drains the lease's keep-alive answers; when the lease is
// lost (etcd overloaded or unreachable for longer than the TTL, the lease
// revoked) it registers again, with backoff, until runCtx ends: a replica
// that still serves must not stay out of the list agents choose from.
func (m *Membership) keepRegistered(runCtx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer m.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		for range ka {
		}
		if runCtx.Err() != nil {
			return
		}
		m.log.Warn("replica lease lost; registering again", "self", m.cfg.Self)
		m.lost.Add(1)
		for {
			ctx, cancel := context.WithTimeout(runCtx, m.cfg.TTL)
			next, err := m.register(ctx, runCtx)
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
			case <-runCtx.Done():
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
