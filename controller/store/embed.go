package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
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
	// ClientURL is where clients connect. The default is a unix socket
	// "unix://<Dir>/etcd.sock", or a free port on 127.0.0.1 when the socket
	// path would be too long. "http://127.0.0.1:0" picks a free port.
	ClientURL string
	// Logger receives the server's warnings and errors (nil: discarded).
	Logger *slog.Logger
	// AutoCompactionRetention is the periodic compaction window
	// (default DefaultAutoCompactionRetention).
	AutoCompactionRetention time.Duration
	// QuotaBackendBytes is the backend size quota (default DefaultQuotaBackendBytes).
	QuotaBackendBytes int64
}

// Embedded is a running single-member etcd server.
type Embedded struct {
	etcd      *embed.Etcd
	endpoints []string
	quiet     *atomic.Bool // set while closing: shutdown errors are expected
	closeOnce sync.Once
}

// StartEmbedded starts an etcd server on cfg.Dir and waits until it serves
// requests, ctx ends or a start timeout passes. Writes are fsynced: data
// survives a crash of the process (kill -9) and a restart on the same Dir.
func StartEmbedded(ctx context.Context, cfg EmbedConfig) (*Embedded, error) {
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
	if cfg.ClientURL == "" {
		if sock := filepath.Join(dir, "etcd.sock"); len(sock) <= maxUnixSocketPath {
			cfg.ClientURL = "unix://" + sock
		} else {
			cfg.ClientURL = "http://127.0.0.1:0"
		}
	}
	// etcd wants its directory private; an existing one is left as it is.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}

	// A free port can be taken by someone else between probing and binding:
	// retry a few times on a bind failure.
	const attempts = 3
	for i := 1; ; i++ {
		e, err := startEmbeddedOnce(ctx, dir, cfg)
		if err == nil || i == attempts || !isAddrInUse(err) || ctx.Err() != nil {
			return e, err
		}
	}
}

func startEmbeddedOnce(ctx context.Context, dir string, cfg EmbedConfig) (*Embedded, error) {
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

	peer, err := freeLoopbackURL("http")
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: peer url: %w", err)
	}
	client, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: client url %q: %w", cfg.ClientURL, err)
	}
	advertise := *client
	switch client.Scheme {
	case "unix", "unixs":
		// etcd insists that advertised URLs have host:port; a unix socket
		// has neither. The advertised client URL of a single member is
		// never dialled, so any well-formed value does.
		advertise = url.URL{Scheme: client.Scheme, Host: "localhost:0"}
	case "http", "https":
		if client.Port() == "0" {
			free, err := freeLoopbackURL(client.Scheme)
			if err != nil {
				return nil, fmt.Errorf("start embedded etcd: client url: %w", err)
			}
			client, advertise = free, *free
		}
	default:
		return nil, fmt.Errorf("start embedded etcd: client url %q: unsupported scheme", cfg.ClientURL)
	}
	ec.ListenPeerUrls = []url.URL{*peer}
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.ListenClientUrls = []url.URL{*client}
	ec.AdvertiseClientUrls = []url.URL{advertise}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.ClusterState = embed.ClusterStateFlagNew // ignored when Dir holds data

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		quiet.Store(true)
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	case <-ctx.Done():
		quiet.Store(true)
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: wait for ready: %w", dir, ctx.Err())
	}
	return &Embedded{etcd: e, endpoints: []string{client.String()}, quiet: quiet}, nil
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
	})
	return nil
}

// freeLoopbackURL returns scheme://127.0.0.1:PORT with a port that was free a moment ago.
func freeLoopbackURL(scheme string) (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return nil, err
	}
	return &url.URL{Scheme: scheme, Host: addr}, nil
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

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
