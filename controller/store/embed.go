package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Defaults of the embedded etcd server.
const (
	DefaultAutoCompactionRetention = 5 * time.Minute
	DefaultQuotaBackendBytes       = 8 << 30
	// EmbeddedMaxTxnOps is --max-txn-ops of the embedded server: far above
	// the 128 of a stock etcd, so that large batches fit.
	EmbeddedMaxTxnOps = 10240
	// EmbeddedMaxRequestBytes is --max-request-bytes of the embedded server.
	EmbeddedMaxRequestBytes = 32 << 20
	// embeddedSnapshotCount is the number of applied entries between raft
	// snapshots (the etcd default).
	embeddedSnapshotCount = 10000
	// maxUnixSocketPath is the usable length of sockaddr_un.sun_path.
	maxUnixSocketPath = 100
	// defaultStartTimeout bounds StartEmbedded when ctx has no deadline.
	defaultStartTimeout = 60 * time.Second
)

// EmbedConfig configures a single-member etcd server run inside the controller process.
type EmbedConfig struct {
	// Dir is the etcd data directory (required). Restarting on the same Dir
	// keeps all data.
	Dir string
	// Logger receives the server's warnings and errors (nil: discarded).
	Logger *slog.Logger
	// AutoCompactionRetention is the periodic compaction window
	// (default DefaultAutoCompactionRetention).
	AutoCompactionRetention time.Duration
	// QuotaBackendBytes is the backend size quota (default DefaultQuotaBackendBytes).
	QuotaBackendBytes int64
}

// Embedded is a running single-member etcd server.
//
// It listens on no TCP port: clients connect to a unix socket,
// Dir/etcd.sock, or, when that path is too long for a socket address, a
// socket in a private (0700) directory made under os.TempDir and removed
// by Close; a single member has no peer to talk to, so it opens no peer
// listener. Only processes that can reach the socket file (the
// controller's user) reach the store.
type Embedded struct {
	etcd      *embed.Etcd
	endpoints []string
	sockDir   string       // a private directory holding the socket, removed by Close ("": inside Dir)
	quiet     *atomic.Bool // set while closing: shutdown errors are expected
	closeOnce sync.Once
}

// StartEmbedded starts an etcd server on cfg.Dir and waits until it serves
// requests, ctx ends or a start timeout passes. Writes are fsynced: data
// survives a crash of the process (kill -9) and a restart on the same Dir.
func StartEmbedded(ctx context.Context, cfg EmbedConfig) (e *Embedded, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("start embedded etcd: Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: data dir %q: %w", cfg.Dir, err)
	}
	if cfg.AutoCompactionRetention == 0 {
		cfg.AutoCompactionRetention = DefaultAutoCompactionRetention
	}
	if cfg.QuotaBackendBytes == 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	// etcd wants its directory private; an existing one is left as it is.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	sock, sockDir := filepath.Join(dir, "etcd.sock"), ""
	if len(sock) > maxUnixSocketPath {
		if sockDir, err = os.MkdirTemp("", "weft-etcd-"); err != nil {
			return nil, fmt.Errorf("start embedded etcd: socket directory: %w", err)
		}
		defer func() {
			if err != nil {
				os.RemoveAll(sockDir)
			}
		}()
		if sock = filepath.Join(sockDir, "etcd.sock"); len(sock) > maxUnixSocketPath {
			return nil, fmt.Errorf("start embedded etcd: socket path %s is longer than %d bytes: set TMPDIR to a shorter directory", sock, maxUnixSocketPath)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}

	ec := embed.NewConfig()
	ec.Name = "weft"
	ec.Dir = dir
	ec.SnapshotCount = embeddedSnapshotCount
	ec.MaxTxnOps = EmbeddedMaxTxnOps
	ec.MaxRequestBytes = EmbeddedMaxRequestBytes
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = cfg.AutoCompactionRetention.String()
	ec.EnableGRPCGateway = false
	ec.UnsafeNoFsync = false // durability is the point of the store
	ec.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	ec.Logger = "zap"
	ec.LogLevel = "warn"
	quiet := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(cfg.Logger, quiet))

	// A single member dials no peer and is dialled by none: it listens on
	// no peer URL. The cluster still names one; it is never used.
	peer := url.URL{Scheme: "http", Host: "localhost:2380"}
	ec.ListenPeerUrls = nil
	ec.AdvertisePeerUrls = []url.URL{peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.ClusterState = embed.ClusterStateFlagNew // ignored when Dir holds data
	// etcd insists that advertised URLs have host:port; a unix socket has
	// neither. The advertised client URL of a single member is never
	// dialled, so any well-formed value does.
	ec.ListenClientUrls = []url.URL{{Scheme: "unix", Path: sock}}
	ec.AdvertiseClientUrls = []url.URL{{Scheme: "unix", Host: "localhost:0"}}

	etcd, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case err := <-etcd.Err():
		quiet.Store(true)
		etcd.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	case <-ctx.Done():
		quiet.Store(true)
		etcd.Server.Stop()
		etcd.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: wait for ready: %w", dir, ctx.Err())
	}
	return &Embedded{etcd: etcd, endpoints: []string{"unix://" + sock}, sockDir: sockDir, quiet: quiet}, nil
}

// Endpoints returns the client URLs of the server.
func (e *Embedded) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// Client returns a new client of the server whose message size limits fit
// the server's. The caller owns the client and must close it.
func (e *Embedded) Client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:          e.Endpoints(),
		DialTimeout:        5 * time.Second,
		MaxCallSendMsgSize: EmbeddedMaxRequestBytes + 1<<20,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client: %w", err)
	}
	return cli, nil
}

// Close stops the server and waits for it. It is idempotent. Clients
// returned by Client should be closed first.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		e.quiet.Store(true)
		e.etcd.Close()
		if e.sockDir != "" {
			os.RemoveAll(e.sockDir)
		}
	})
	return nil
}

// maxLoggedValue is the longest string value forwarded from etcd's logs.
const maxLoggedValue = 256

// zapLogger returns a zap logger that forwards warnings and worse to l,
// at debug level while quiet is set.
func zapLogger(l *slog.Logger, quiet *atomic.Bool) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return zap.New(&slogCore{l: l.With("subsystem", "etcd"), quiet: quiet})
}

// slogCore is a zapcore.Core writing to a slog.Logger at warn level and above.
type slogCore struct {
	l     *slog.Logger
	quiet *atomic.Bool
}

func (c *slogCore) Enabled(lvl zapcore.Level) bool { return lvl >= zapcore.WarnLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{l: c.l.With(zapAttrs(fields)...), quiet: c.quiet}
}

func (c *slogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

// benignWarnings are warnings etcd gives for the embedded configuration
// on purpose (one port for gRPC and HTTP, large requests, no auth tokens):
// logged at debug level.
var benignWarnings = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"exceeded recommended request limit":                                                   true,
	"simple token is not cryptographically signed":                                         true,
}

func (c *slogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	lvl := slog.LevelWarn
	switch {
	case c.quiet.Load() || benignWarnings[ent.Message]:
		lvl = slog.LevelDebug
	case ent.Level >= zapcore.ErrorLevel:
		lvl = slog.LevelError
	}
	c.l.Log(context.Background(), lvl, ent.Message, zapAttrs(fields)...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func zapAttrs(fields []zapcore.Field) []any {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		// Slow-request warnings quote whole requests: a batch is megabytes.
		if s, ok := v.(string); ok && len(s) > maxLoggedValue {
			v = s[:maxLoggedValue] + fmt.Sprintf("... (%d bytes)", len(s))
		}
		attrs = append(attrs, k, v)
	}
	return attrs
}
