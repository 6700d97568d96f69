package store

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestEtcdLogBridge(t *testing.T) {
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name  string
		quiet bool
		log   func(*zap.Logger)
		want  string
	}{
		{"warning", false, func(l *zap.Logger) { l.Warn("slow fdatasync", zap.Int("n", 3)) },
			"level=WARN msg=\"slow fdatasync\" subsystem=etcd n=3\n"},
		{"error", false, func(l *zap.Logger) { l.Error("boom") }, "level=ERROR msg=boom subsystem=etcd\n"},
		{"info is dropped", false, func(l *zap.Logger) { l.Info("hello") }, ""},
		{"benign warning", false, func(l *zap.Logger) { l.Warn("simple token is not cryptographically signed") }, ""},
		{"while closing", true, func(l *zap.Logger) { l.Error("serve failed") }, ""},
		{"long value cut", false, func(l *zap.Logger) { l.With(zap.String("req", long)).Warn("request stats") },
			"level=WARN msg=\"request stats\" subsystem=etcd req=\"" + strings.Repeat("x", maxLoggedValue) + "... (1000 bytes)\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}})
			quiet := new(atomic.Bool)
			quiet.Store(tc.quiet)
			tc.log(zapLogger(slog.New(h), quiet))
			if diff := cmp.Diff(tc.want, buf.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestEmbeddedListensOnNoTCPPort starts the embedded etcd with a data
// directory short enough for its socket and with one too long for it, and
// checks, from the kernel's socket tables, that the process listens on no
// TCP port (etcd has no TLS here: a TCP listener would be open to every
// local user) and that the store works through the unix socket; a restart
// on the same directory keeps the data.
func TestEmbeddedListensOnNoTCPPort(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"socket in the data dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "etcd") }},
		{"data dir too long for a socket", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			dir := tc.dir(t)
			for round := range 2 {
				before := tcpListeners(t)
				e, err := StartEmbedded(ctx, EmbedConfig{Dir: dir, Logger: testLogger()})
				if err != nil {
					t.Fatal(err)
				}
				eps := e.Endpoints()
				if len(eps) != 1 || !strings.HasPrefix(eps[0], "unix:///") {
					t.Errorf("endpoints %v, want one unix socket", eps)
				}
				if extra := tcpListeners(t) - before; extra != 0 {
					t.Errorf("round %d: the process listens on %d more TCP sockets with the embedded etcd", round, extra)
				}
				cli, err := e.Client()
				if err != nil {
					t.Fatal(err)
				}
				if round == 0 {
					_, err = cli.Put(ctx, "k", "v")
				} else {
					var resp *clientv3.GetResponse
					if resp, err = cli.Get(ctx, "k"); err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v") {
						t.Errorf("after a restart: got %v, want k=v", resp.Kvs)
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				cli.Close()
				e.Close()
				sock := strings.TrimPrefix(eps[0], "unix://")
				if _, err := os.Stat(sock); !strings.HasPrefix(sock, dir) && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("socket %s outside the data dir is left after Close (stat: %v)", sock, err)
				}
			}
		})
	}
}

// tcpListeners counts the listening TCP sockets (IPv4 and IPv6) that this
// process holds: the inodes of its socket descriptors that the kernel's
// tables show in state LISTEN.
func tcpListeners(t *testing.T) int {
	t.Helper()
	mine := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			mine[strings.TrimSuffix(inode, "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			const listen = "0A"
			if len(f) > 9 && f[3] == listen && mine[f[9]] {
				n++
			}
		}
	}
	return n
}
