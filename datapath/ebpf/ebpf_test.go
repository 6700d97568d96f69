package ebpf_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/conformance"
	"github.com/weftnet/weft/datapath/conformance/nsprobe"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

func TestMain(m *testing.M) {
	sweepPins()
	goleak.VerifyTestMain(m)
}

// sweepPins removes the pin directories of test runs (testnet's default
// prefix) whose process is gone: testnet.Sweep deletes their namespaces,
// but their programs and maps stay pinned until this.
func sweepPins() {
	dir := filepath.Dir(ebpf.PinDir("/sys/fs/bpf", "p", "h"))
	ents, _ := os.ReadDir(dir)
	re := regexp.MustCompile(`^wftt([0-9]+)r[0-9a-f]+`)
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if _, err := os.Stat("/proc/" + m[1]); errors.Is(err, os.ErrNotExist) {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func logger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

func config(n *testnet.Net, h *testnet.Host, t testing.TB) ebpf.Config {
	return ebpf.Config{HostName: h.Name, Prefix: n.Prefix(), HostNetns: h.Path, NetnsDir: n.Dir(), Logger: logger(t)}
}

// startDriver runs a driver for host h of n. Its cleanup tears down what
// the driver made (then testnet deletes the namespaces by name anyway).
func startDriver(t testing.TB, n *testnet.Net, h *testnet.Host, mod ...func(*ebpf.Config)) *ebpf.Driver {
	t.Helper()
	cfg := config(n, h, t)
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := ebpf.New(ctx, cfg)
	if err != nil {
		t.Fatalf("ebpf.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Teardown(ctx); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	return d
}

func hostConfig(h *testnet.Host) datapath.HostConfig {
	return datapath.HostConfig{Name: h.Name, UnderlayIP: h.UnderlayIP, UnderlayDev: h.UnderlayDev}
}

func TestConformance(t *testing.T) {
	nettest.RequireRoot(t)
	conformance.Run(t, func(t *testing.T) (datapath.Driver, datapath.HostConfig) {
		n := nettest.New(t, testnet.Options{Hosts: 1})
		h := n.Host(0)
		return startDriver(t, n, h), hostConfig(h)
	}, nsprobe.Prober{})
}
