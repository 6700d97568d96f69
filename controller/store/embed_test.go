package store

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
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
