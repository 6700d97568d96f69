package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/lifecycle"
)

// Sentinel errors of the store.
var (
	// ErrCompacted is returned by Watch when the requested revision is older
	// than etcd's compaction: the caller must list again (REST: 410 Gone).
	ErrCompacted = errors.New("store: revision compacted")
	// ErrClosed is returned by calls on a closed Store.
	ErrClosed = errors.New("store: closed")
	// ErrNotStarted is returned by calls that need Start first.
	ErrNotStarted = errors.New("store: not started")
	// ErrInvalidTxn is returned by Commit for a Txn etcd would reject
	// (the same key written twice, too many operations).
	ErrInvalidTxn = errors.New("store: invalid txn")
)

// Defaults of Config.
const (
	DefaultPrefix      = "/weft/"
	DefaultMaxBatchOps = 128 // etcd's default --max-txn-ops
	// DefaultMaxBatchBytes keeps a batch below etcd's default
	// --max-request-bytes (1.5 MiB) and the client's default send limit (2 MiB).
	DefaultMaxBatchBytes     = 1 << 20
	DefaultMaxInFlight       = 2
	DefaultRingSize          = 100_000
	DefaultSubscriberBacklog = 10_000
)

// Config configures a Store.
type Config struct {
	// Client is the etcd client (required). The Store does not close it.
	// For batches larger than 2 MiB raise its MaxCallSendMsgSize.
	Client *clientv3.Client
	// KV, if set, serves the Store's transactions and reads in place of
	// Client's: Embedded.KV, the embedded server's in-process KV, skips
	// the gRPC round trip (the writes still go through raft and fsync).
	// Watches always use Client.
	KV clientv3.KV
	// Prefix of every key the Store owns (default DefaultPrefix); must end in "/".
	Prefix string
	// Logger (default: discard).
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil means not registered.
	Registerer prometheus.Registerer
	// MaxBatchOps is the most Txns grouped into one etcd txn, and the most
	// compares, ops or else-ops one Txn may hold. It must not exceed the
	// server's --max-txn-ops (default DefaultMaxBatchOps).
	MaxBatchOps int
	// MaxBatchBytes bounds the estimated request size of a batch (default
	// DefaultMaxBatchBytes); a single larger Txn is still sent, alone.
	MaxBatchBytes int
	// MaxInFlight is the number of batched etcd txns in flight at once
	// (default DefaultMaxInFlight).
	MaxInFlight int
	// RingSize is the number of recent events kept in memory for Watch
	// replays (default DefaultRingSize).
	RingSize int
	// SubscriberBacklog is the number of undelivered events a Watch
	// subscriber may fall behind before its channel is closed (default
	// DefaultSubscriberBacklog).
	SubscriberBacklog int
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBatchOps == 0 {
		c.MaxBatchOps = DefaultMaxBatchOps
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.RingSize == 0 {
		c.RingSize = DefaultRingSize
	}
	if c.SubscriberBacklog == 0 {
		c.SubscriberBacklog = DefaultSubscriberBacklog
	}
}

// Validate reports a missing or impossible setting. Zero values are valid:
// they select the defaults.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("Client is required"))
	}
	if c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("Prefix %q must end in /", c.Prefix))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxBatchOps", c.MaxBatchOps}, {"MaxBatchBytes", c.MaxBatchBytes}, {"MaxInFlight", c.MaxInFlight},
		{"RingSize", c.RingSize}, {"SubscriberBacklog", c.SubscriberBacklog},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d is negative", f.name, f.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	return nil
}

// The cache serves validation's lookups.
var _ apiv1.Lookup = (*Store)(nil)

// Store is weft's desired state in etcd with an in-memory, watch-fed cache.
// See the package documentation.
type Store struct {
	cfg     Config
	log     *slog.Logger
	cli     *clientv3.Client
	kv      clientv3.KV // cfg.KV, else cli
	prefix  string
	kinds   kindTable
	metrics *metrics
	cache   *cache
	batcher *batcher
	syncs   *syncReads
	// listPage is the number of keys a list reads per range request
	// (listPageSize; tests make it small).
	listPage int

	// life owns the goroutines; ctx, its lifetime context, ends at Close.
	life    lifecycle.Group
	ctx     context.Context
	started atomic.Bool // Start succeeded

	// progressReq asks the sync loop for a watch progress notification.
	progressReq chan struct{}
	// watchCancel breaks the current etcd watch (tests).
	watchMu     sync.Mutex
	watchCancel context.CancelFunc

	hooks testHooks
}

// testHooks let tests hold the store at chosen points. Zero in production.
type testHooks struct {
	// beforeWatch runs in the sync loop before each etcd watch is opened.
	beforeWatch func(fromRev int64)
	// beforeSend runs in a batch worker before a batch goes to etcd.
	beforeSend func(n int)
	// syncRead runs before each quorum read of the revision for Sync.
	syncRead func()
	// listPage runs in a list once page page (0: the first request) of
	// the list at revision rev is prepared.
	listPage func(rev int64, page int)
}

// New returns a Store; call Start before using it.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("store metrics: %w", err)
	}
	s := &Store{
		cfg:         cfg,
		log:         cfg.Logger.With("subsystem", "store"),
		cli:         cfg.Client,
		kv:          cfg.KV,
		prefix:      cfg.Prefix,
		kinds:       newKindTable(),
		metrics:     m,
		progressReq: make(chan struct{}, 1),
		listPage:    listPageSize,
	}
	if s.kv == nil {
		s.kv = cfg.Client
	}
	s.cache = newCache(s.kinds, cfg.RingSize, m)
	s.batcher = newBatcher(cfg.MaxBatchOps, cfg.MaxBatchBytes)
	s.syncs = newSyncReads()
	s.ctx = s.life.Context()
	return s, nil
}

// Start loads the cache with a consistent list of the prefix, starts the
// watch that keeps it current and the commit workers, and returns once the
// cache is primed. ctx bounds only the initial load; the Store runs until
// Close.
func (s *Store) Start(ctx context.Context) error {
	if _, err := s.life.Start(); err != nil {
		return fmt.Errorf("start store: %w", err)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(s.ctx, stop)() // Close during the initial list ends it too
	snap, rev, err := s.list(ctx)
	if err != nil {
		return fmt.Errorf("start store: %w", err)
	}
	s.cache.load(snap, rev)
	s.log.Info("store cache primed", "revision", rev, "objects", len(snap))
	s.life.Go(s.syncLoop)
	s.life.Go(s.syncReader)
	for range s.cfg.MaxInFlight {
		s.life.Go(func(context.Context) { s.batchWorker() })
	}
	if s.life.Closed() {
		return fmt.Errorf("start store: %w", ErrClosed)
	}
	s.started.Store(true)
	return nil
}

// Close stops every goroutine of the Store and waits for them. Pending
// Commits fail with ErrClosed and Watch channels close. It is idempotent.
func (s *Store) Close() error {
	return s.life.Close(func() error {
		s.cache.closeSubscribers()
		s.batcher.close()
		s.syncs.close()
		return nil
	})
}

// Client returns the etcd client the Store uses, for keys that are not
// objects (leases, locks).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix of the Store.
func (s *Store) Prefix() string { return s.prefix }

// Key returns the etcd key of a non-object key: Prefix + suffix
// (e.g. s.Key("ipam/vni/42")). Suffixes starting with "v1/" are reserved
// for objects.
func (s *Store) Key(suffix string) string { return s.prefix + suffix }

// ObjectKey returns the etcd key of an object:
// <prefix>v1/<plural>/<tenant>/<name>, or <prefix>v1/<plural>/<name> for
// cluster-scoped kinds. r.Kind must be a served kind (it panics otherwise,
// like apiv1.MustKind).
func (s *Store) ObjectKey(r apiv1.Ref) string {
	k := s.kinds.mustLookup(r.Kind)
	return s.objectKey(k, r.Tenant, r.Name)
}

func (s *Store) objectKey(k *kindDesc, tenant, name string) string {
	if k.info.Namespaced {
		return s.prefix + "v1/" + k.info.Plural + "/" + tenant + "/" + name
	}
	return s.prefix + "v1/" + k.info.Plural + "/" + name
}

// kindPrefix returns the key prefix of a kind (all kinds if k is nil),
// narrowed to one tenant if tenant is set and the kind is namespaced.
func (s *Store) kindPrefix(k *kindDesc, tenant string) string {
	switch {
	case k == nil:
		return s.prefix + "v1/"
	case k.info.Namespaced && tenant != "":
		return s.prefix + "v1/" + k.info.Plural + "/" + tenant + "/"
	default:
		return s.prefix + "v1/" + k.info.Plural + "/"
	}
}

// parseKey splits an object key; ok is false for keys that are not objects.
func (s *Store) parseKey(key string) (k *kindDesc, tenant, name string, ok bool) {
	rest, found := strings.CutPrefix(key, s.prefix+"v1/")
	if !found {
		return nil, "", "", false
	}
	plural, rest, found := strings.Cut(rest, "/")
	if !found {
		return nil, "", "", false
	}
	k = s.kinds.byPlural[plural]
	if k == nil {
		return nil, "", "", false
	}
	if k.info.Namespaced {
		tenant, rest, found = strings.Cut(rest, "/")
		if !found || tenant == "" {
			return nil, "", "", false
		}
	}
	if rest == "" || strings.Contains(rest, "/") {
		return nil, "", "", false
	}
	return k, tenant, rest, true
}

// EncodeObject returns the value stored for o: its JSON without
// metadata.resourceVersion, which is the key's ModRevision. o is not modified.
func EncodeObject(o apiv1.Object) ([]byte, error) {
	if o.GetObjectMeta().ResourceVersion != "" {
		// Shallow copy: every kind is a pointer to a struct.
		v := reflect.ValueOf(o)
		cp := reflect.New(v.Type().Elem())
		cp.Elem().Set(v.Elem())
		o = cp.Interface().(apiv1.Object)
		o.GetObjectMeta().ResourceVersion = ""
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", apiv1.RefOf(o), err)
	}
	return b, nil
}

// decodeObject decodes a stored value of kind k found at tenant/name and
// sets its resourceVersion to modRev.
func decodeObject(k *kindDesc, tenant, name string, value []byte, modRev int64) (apiv1.Object, error) {
	var o apiv1.Object
	if k.info.Kind == apiv1.KindEndpoint {
		// Most endpoints take the fast path; the others are decoded below.
		if ep, ok := decodeEndpoint(value); ok {
			o = ep
		}
	}
	if o == nil {
		var err error
		if o, err = apiv1.DecodeInto(value, k.info.Kind); err != nil {
			return nil, fmt.Errorf("decode %s/%s/%s: %w", k.info.Plural, tenant, name, err)
		}
	}
	m := o.GetObjectMeta()
	if m.Name != name || m.Tenant != tenant {
		return nil, fmt.Errorf("decode %s/%s/%s: metadata names %q/%q", k.info.Plural, tenant, name, m.Tenant, m.Name)
	}
	m.ResourceVersion = strconv.FormatInt(modRev, 10)
	compactObject(o, k.info.Kind)
	return o, nil
}

// kindDesc is one served kind with its position in the cache.
type kindDesc struct {
	idx  int
	info apiv1.KindInfo
}

// kindTable resolves kind names without allocating on the hot path.
type kindTable struct {
	all      []*kindDesc
	byName   map[string]*kindDesc // Kind, plural, short names, lower-case Kind
	byPlural map[string]*kindDesc
}

func newKindTable() kindTable {
	t := kindTable{byName: map[string]*kindDesc{}, byPlural: map[string]*kindDesc{}}
	for i, info := range apiv1.Kinds() {
		d := &kindDesc{idx: i, info: info}
		t.all = append(t.all, d)
		t.byPlural[info.Plural] = d
		for _, n := range append([]string{info.Kind, strings.ToLower(info.Kind), info.Plural}, info.Short...) {
			t.byName[n] = d
		}
	}
	return t
}

// lookup resolves a Kind, plural or short name, case-insensitively.
func (t *kindTable) lookup(kind string) (*kindDesc, bool) {
	if d, ok := t.byName[kind]; ok {
		return d, true
	}
	d, ok := t.byName[strings.ToLower(kind)]
	return d, ok
}

func (t *kindTable) mustLookup(kind string) *kindDesc {
	d, ok := t.lookup(kind)
	if !ok {
		panic(fmt.Sprintf("store: unknown kind %q", kind))
	}
	return d
}
