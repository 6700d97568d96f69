package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
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

// The identity of a single member (a restore into a single member's data
// dir must give the same), and the initial cluster token of a cluster of
// members.
const (
	SingleMemberName    = "weft"
	SingleMemberPeerURL = "http://localhost:2380"
	ClusterToken        = "weft"
)

// EmbedConfig configures the etcd server run inside the controller process.
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
	// Member makes the server one member of a cluster (nil: a single
	// member on a unix socket only).
	Member *MemberConfig
}

// MemberConfig makes an embedded server one member of an etcd cluster.
// Peers talk TLS with client certificates: each member presents CertFile
// and accepts peers (and TCP clients) whose certificate CAFile signed.
type MemberConfig struct {
	// Name is the member's name in the cluster (required).
	Name string
	// PeerURL is where the member listens for its peers and what it tells
	// them (https://IP:PORT; required).
	PeerURL string
	// ClientURL, if set, is a TCP listener for clients on other machines
	// (https://IP:PORT, client certificates from CAFile), besides the unix
	// socket.
	ClientURL string
	// InitialCluster lists the members a new cluster starts with,
	// "name=peerURL,..." (default Name=PeerURL: a cluster of one that
	// others join).
	InitialCluster string
	// Existing joins a running cluster that has this member added
	// (MemberAdd) instead of starting a new one.
	Existing bool
	// CAFile, CertFile and KeyFile are PEM files: the CA of the members'
	// and clients' certificates, and this member's certificate (used as
	// server and as client) and key. All required.
	CAFile, CertFile, KeyFile string
	// ElectionTimeout is raft's election timeout (default 1 s); the
	// heartbeat is a tenth of it.
	ElectionTimeout time.Duration
}

// Validate reports a missing setting.
func (m *MemberConfig) Validate() error {
	switch {
	case m.Name == "" || m.PeerURL == "":
		return errors.New("etcd member: a name and a peer URL are required")
	case m.CAFile == "" || m.CertFile == "" || m.KeyFile == "":
		return errors.New("etcd member: TLS files (CA, certificate, key) are required")
	}
	for _, u := range []string{m.PeerURL, m.ClientURL} {
		if u != "" && !strings.HasPrefix(u, "https://") {
			return fmt.Errorf("etcd member: %s: want an https:// URL", u)
		}
	}
	return nil
}

// apply sets the member's part of ec: name, cluster, listeners and TLS.
func (m *MemberConfig) apply(ec *embed.Config) error {
	if err := m.Validate(); err != nil {
		return err
	}
	peer, err := url.Parse(m.PeerURL)
	if err != nil {
		return fmt.Errorf("etcd member: peer URL: %w", err)
	}
	ec.Name = m.Name
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.InitialCluster = cmp.Or(m.InitialCluster, m.Name+"="+m.PeerURL)
	ec.InitialClusterToken = ClusterToken
	if m.Existing {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	if m.ClientURL != "" {
		client, err := url.Parse(m.ClientURL)
		if err != nil {
			return fmt.Errorf("etcd member: client URL: %w", err)
		}
		ec.ListenClientUrls = append(ec.ListenClientUrls, *client)
		ec.AdvertiseClientUrls = []url.URL{*client}
	}
	tlsInfo := transport.TLSInfo{CertFile: m.CertFile, KeyFile: m.KeyFile, TrustedCAFile: m.CAFile, ClientCertAuth: true}
	ec.PeerTLSInfo, ec.ClientTLSInfo = tlsInfo, tlsInfo
	if m.ElectionTimeout > 0 {
		ec.ElectionMs = uint(m.ElectionTimeout.Milliseconds())
		ec.TickMs = max(ec.ElectionMs/10, 1)
	}
	return nil
}

// Embedded is a running embedded etcd server.
//
// A single member listens on no TCP port: clients connect to a unix
// socket, Dir/etcd.sock, or, when that path is too long for a socket
// address, a socket in a private (0700) directory made under os.TempDir
// and removed by Close; a single member has no peer to talk to, so it
// opens no peer listener. Only processes that can reach the socket file
// (the controller's user) reach the store.
//
// A member of a cluster (EmbedConfig.Member) also listens for its peers,
// and optionally for clients, on TCP with TLS and client certificates. It
// advertises its configured peer URL, updating the cluster's record if it
// has another (so a single member's data dir can become the first member
// of a cluster), and a member added as a learner promotes itself, once the
// leader finds it in sync, before StartEmbedded returns.
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
	if _, ok := ctx.Deadline(); !ok && cfg.Member == nil { // a member waits for its peers as long as ctx lets it
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}

	ec := embed.NewConfig()
	ec.Name = SingleMemberName
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
	peer, _ := url.Parse(SingleMemberPeerURL)
	ec.ListenPeerUrls = nil
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.ClusterState = embed.ClusterStateFlagNew // ignored when Dir holds data
	// etcd insists that advertised URLs have host:port; a unix socket has
	// neither. The advertised client URL of a single member is never
	// dialled, so any well-formed value does.
	ec.ListenClientUrls = []url.URL{{Scheme: "unix", Path: sock}}
	ec.AdvertiseClientUrls = []url.URL{{Scheme: "unix", Host: "localhost:0"}}
	if cfg.Member != nil {
		if err := cfg.Member.apply(ec); err != nil {
			return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
		}
	}

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
	e = &Embedded{etcd: etcd, endpoints: []string{"unix://" + sock}, sockDir: sockDir, quiet: quiet}
	if cfg.Member != nil {
		if err := e.advertise(ctx, cfg.Member.PeerURL); err != nil {
			e.Close()
			return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
		}
		if err := e.promote(ctx, cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))); err != nil {
			e.Close()
			return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
		}
	}
	return e, nil
}

// advertise makes peerURL this member's peer URL in the cluster if it has
// another: a single member's data dir becomes the first member of a
// cluster, or a member moves to a new address.
func (e *Embedded) advertise(ctx context.Context, peerURL string) error {
	id := e.etcd.Server.MemberID()
	m := e.etcd.Server.Cluster().Member(id)
	if m == nil || slices.Equal(m.PeerURLs, []string{peerURL}) {
		return nil
	}
	_, err := e.etcd.Server.UpdateMember(ctx, membership.Member{ID: id, RaftAttributes: membership.RaftAttributes{PeerURLs: []string{peerURL}}})
	if err != nil {
		return fmt.Errorf("advertise peer URL %s (was %v): %w", peerURL, m.PeerURLs, err)
	}
	return nil
}

// promoteInterval is how often a learner asks to become a voting member.
const promoteInterval = 200 * time.Millisecond

// promote makes this member, if it was added as a learner, a voting member
// as soon as the leader finds it in sync (a learner serves no client
// requests); it fails when ctx ends first.
func (e *Embedded) promote(ctx context.Context, log *slog.Logger) error {
	t := time.NewTicker(promoteInterval)
	defer t.Stop()
	promoted := false // the leader took the promotion; this member applies it a moment later
	var err error
	for e.etcd.Server.IsLearner() {
		if !promoted {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = e.etcd.Server.PromoteMember(pctx, uint64(e.etcd.Server.MemberID()))
			cancel()
			if promoted = err == nil; promoted {
				log.Info("etcd learner promoted to a voting member", "subsystem", "etcd", "member", e.etcd.Server.MemberID().String())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promote the learner (last refusal: %v): %w", err, ctx.Err())
		case <-t.C:
		}
	}
	return nil
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

// KV returns the server's KV API in process, for Config.KV: requests are
// function calls into the server, without the gRPC client, the socket and
// the protobuf encoding a Client's requests take; they are served as a
// Client's are (quota, limits, raft, fsync). It has nothing to close.
func (e *Embedded) KV() clientv3.KV {
	return clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(v3rpc.NewQuotaKVServer(e.etcd.Server)), nil)
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
	// A member's TLS files also apply to its unix socket, which has no TLS.
	"scheme is http or unix while key and cert files are present; ignoring key and cert files":           true,
	"scheme is http or unix while --client-cert-auth is enabled; ignoring client cert auth for this URL": true,
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
