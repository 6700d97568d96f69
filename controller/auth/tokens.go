package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
)

// BootstrapTTL is a bootstrap token's lifetime when none is asked for.
const BootstrapTTL = time.Hour

// sweepInterval is how often a replica deletes the expired tokens from
// etcd (they are refused from the moment they expire).
const sweepInterval = time.Minute

// ErrUnauthenticated is returned for a credential that is not (or no
// longer) valid; the API answers 401 without saying why.
var ErrUnauthenticated = errors.New("auth: invalid, expired or revoked credential")

// Token describes a token; the secret is not kept.
type Token struct {
	ID string `json:"id"`
	Scope
	// HostUID binds an agent token to its Host.
	HostUID     string `json:"hostUID,omitempty"`
	Expires     string `json:"expires,omitempty"` // RFC 3339; "" never
	Created     string `json:"created"`
	Description string `json:"description,omitempty"`
}

// NewToken is a Token just created, with the token itself (shown once).
type NewToken struct {
	Token
	Secret string `json:"token"`
}

// TokenRequest asks for a token.
type TokenRequest struct {
	Scope
	// TTL is how long the token lives ("24h"); "" is forever, except for
	// bootstrap tokens (BootstrapTTL).
	TTL         string `json:"ttl,omitempty"`
	Description string `json:"description,omitempty"`
}

// record is what tokens/<id> holds.
type record struct {
	Token
	Hash []byte `json:"hash"`
}

// entry is a record as followed, with the etcd revision it was written at.
type entry struct {
	record
	expires time.Time // zero: never
	modRev  int64
}

// TokensConfig configures Tokens.
type TokensConfig struct {
	Store  *store.Store
	Logger *slog.Logger
	// Now is the clock for expiry (default time.Now).
	Now func() time.Time
}

// Tokens is the token store: it writes tokens/<id> in etcd and follows
// them, so that every replica knows every token within moments.
type Tokens struct {
	cfg    TokensConfig
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
	life   lifecycle.Group

	mu      sync.RWMutex
	byID    map[string]*entry
	rev     int64         // the revision followed up to
	changed chan struct{} // closed and replaced when rev advances
}

// NewTokens returns Tokens on the store; call Start.
func NewTokens(cfg TokensConfig) (*Tokens, error) {
	if cfg.Store == nil {
		return nil, errors.New("auth: Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Tokens{cfg: cfg, cli: cfg.Store.Client(), prefix: cfg.Store.Key("tokens/"),
		log: cfg.Logger.With("subsystem", "auth"), byID: map[string]*entry{}, changed: make(chan struct{})}, nil
}

// Start loads the tokens, then follows them until Close.
func (t *Tokens) Start(ctx context.Context) error {
	if _, err := t.life.Start(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	resp, err := t.cli.Get(ctx, t.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("auth: load tokens: %w", err)
	}
	t.reset(resp.Kvs, resp.Header.Revision)
	t.life.Go(func(ctx context.Context) {
		_ = t.cfg.Store.FollowKeys(ctx, store.KeysConfig{Name: "tokens", Prefix: t.prefix, From: resp.Header.Revision,
			OnEvents: t.apply, OnReset: t.reset, Logger: t.log})
	})
	t.life.Go(func(ctx context.Context) {
		tick := time.NewTicker(sweepInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				t.sweep(ctx)
			}
		}
	})
	return nil
}

// sweep deletes the expired tokens, each unless it changed meanwhile.
func (t *Tokens) sweep(ctx context.Context) {
	now := t.cfg.Now()
	t.mu.RLock()
	var expired []*entry
	for _, e := range t.byID {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			expired = append(expired, e)
		}
	}
	t.mu.RUnlock()
	for _, e := range expired {
		k := t.key(e.ID)
		if _, err := t.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", e.modRev)).Then(clientv3.OpDelete(k)).Commit(); err != nil {
			t.log.Warn("cannot delete an expired token", "id", e.ID, "err", err)
			return
		}
	}
}

// Close stops following; idempotent.
func (t *Tokens) Close() error { return t.life.Close() }

func (t *Tokens) reset(kvs []*mvccpb.KeyValue, rev int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID = make(map[string]*entry, len(kvs))
	for _, kv := range kvs {
		t.put(kv)
	}
	t.advance(rev)
}

func (t *Tokens) apply(evs []*clientv3.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ev := range evs {
		if ev.Type == clientv3.EventTypeDelete {
			delete(t.byID, strings.TrimPrefix(string(ev.Kv.Key), t.prefix))
		} else {
			t.put(ev.Kv)
		}
	}
	t.advance(evs[len(evs)-1].Kv.ModRevision)
}

// put records one stored token; t.mu is held.
func (t *Tokens) put(kv *mvccpb.KeyValue) {
	id := strings.TrimPrefix(string(kv.Key), t.prefix)
	e := &entry{modRev: kv.ModRevision}
	err := json.Unmarshal(kv.Value, &e.record)
	if err == nil && e.Expires != "" {
		e.expires, err = time.Parse(time.RFC3339, e.Expires)
	}
	if err != nil || e.ID != id || len(e.Hash) != sha256.Size {
		delete(t.byID, id)
		t.log.Warn("ignoring a malformed token record", "id", id, "err", err)
		return
	}
	t.byID[id] = e
}

// advance notes that the tokens reflect rev; t.mu is held.
func (t *Tokens) advance(rev int64) {
	if rev > t.rev {
		t.rev = rev
		close(t.changed)
		t.changed = make(chan struct{})
	}
}

// Wait returns once the followed tokens reflect rev, so that a client uses
// a token it was just given, or stops using a revoked one, on this replica.
func (t *Tokens) Wait(ctx context.Context, rev int64) error {
	for {
		t.mu.RLock()
		done, ch := t.rev >= rev, t.changed
		t.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("auth: wait for revision %d: %w", rev, ctx.Err())
		}
	}
}

func (t *Tokens) key(id string) string { return t.prefix + id }

// Prepare makes a token for req, bound to hostUID if it is an agent's,
// and the etcd operation that stores it (for a transaction of the
// caller's, which then Waits for its revision); it does not store it.
func (t *Tokens) Prepare(req TokenRequest, hostUID string) (NewToken, clientv3.Op, error) {
	if err := req.Validate(); err != nil {
		return NewToken{}, clientv3.Op{}, err
	}
	now := t.cfg.Now().UTC()
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return NewToken{}, clientv3.Op{}, apiv1.NewBadRequest("ttl %q: want a positive duration such as 24h", req.TTL)
		}
		ttl = d
	} else if req.Role == RoleBootstrap {
		ttl = BootstrapTTL
	}
	tok, id, hash := newToken()
	r := record{Token: Token{ID: id, Scope: req.Scope, HostUID: hostUID, Created: now.Format(time.RFC3339), Description: req.Description}, Hash: hash}
	if ttl > 0 {
		r.Expires = now.Add(ttl).Format(time.RFC3339)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return NewToken{}, clientv3.Op{}, fmt.Errorf("auth: encode token: %w", err)
	}
	return NewToken{Token: r.Token, Secret: tok}, clientv3.OpPut(t.key(id), string(b)), nil
}

// Create stores a new token. An agent token is bound to the UID of its
// Host, which must exist.
func (t *Tokens) Create(ctx context.Context, req TokenRequest) (NewToken, error) {
	var uid string
	if req.Role == RoleAgent {
		var ok bool
		if uid, ok = HostUID(t.cfg.Store, req.Host); !ok {
			return NewToken{}, apiv1.NewNotFound(apiv1.Ref{Kind: apiv1.KindHost, Name: req.Host})
		}
	}
	nt, op, err := t.Prepare(req, uid)
	if err != nil {
		return NewToken{}, err
	}
	resp, err := t.cli.Txn(ctx).Then(op).Commit()
	if err != nil {
		return NewToken{}, apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "storage unavailable: %v", err)
	}
	return nt, t.Wait(ctx, resp.Header.Revision) // usable here at once
}

// List returns every token, by creation time.
func (t *Tokens) List() []Token {
	t.mu.RLock()
	out := make([]Token, 0, len(t.byID))
	for _, e := range t.byID {
		out = append(out, e.Token)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Created != out[j].Created {
			return out[i].Created < out[j].Created
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Revoke deletes a token and returns what it was; every replica refuses
// it once it sees the delete (this one before Revoke returns).
func (t *Tokens) Revoke(ctx context.Context, id string) (Token, error) {
	resp, err := t.cli.Delete(ctx, t.key(id), clientv3.WithPrevKV())
	if err != nil {
		return Token{}, apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "storage unavailable: %v", err)
	}
	if resp.Deleted == 0 {
		return Token{}, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "token %q not found", id)
	}
	var r record
	_ = json.Unmarshal(resp.PrevKvs[0].Value, &r) // what it was, for the answer only
	return r.Token, t.Wait(ctx, resp.Header.Revision)
}

// Consume returns the compare and the delete that use up a one-time
// token as it is known now: the transaction fails if it was used or
// changed meanwhile.
func (t *Tokens) Consume(id string) (clientv3.Cmp, clientv3.Op, bool) {
	t.mu.RLock()
	e, ok := t.byID[id]
	t.mu.RUnlock()
	if !ok {
		return clientv3.Cmp{}, clientv3.Op{}, false
	}
	return clientv3.Compare(clientv3.ModRevision(t.key(id)), "=", e.modRev), clientv3.OpDelete(t.key(id)), true
}

// DeleteOps returns the deletes of every agent token bound to a Host UID
// (for the transaction that deletes the Host or enrols it again).
func (t *Tokens) DeleteOps(hostUID string) []clientv3.Op {
	if hostUID == "" {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	var ops []clientv3.Op
	for id, e := range t.byID {
		if e.HostUID == hostUID {
			ops = append(ops, clientv3.OpDelete(t.key(id)))
		}
	}
	return ops
}

// lookup returns the identity of a token string.
func (t *Tokens) lookup(tok string) (*Identity, error) {
	id, secret, err := ParseToken(tok)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	t.mu.RLock()
	e, ok := t.byID[id]
	t.mu.RUnlock()
	if !ok {
		return nil, ErrUnauthenticated
	}
	h := sha256.Sum256(secret)
	if subtle.ConstantTimeCompare(h[:], e.Hash) != 1 {
		return nil, ErrUnauthenticated
	}
	if !e.expires.IsZero() && !t.cfg.Now().Before(e.expires) {
		return nil, ErrUnauthenticated
	}
	return &Identity{Subject: "token/" + id, Role: e.Role, Tenant: e.Tenant, Host: e.Host, HostUID: e.HostUID, TokenID: id}, nil
}
