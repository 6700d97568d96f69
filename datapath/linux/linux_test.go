package linux_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/conformance"
	"github.com/weftnet/weft/datapath/conformance/nsprobe"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func logger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// startDriver runs a driver for host h of n. Its cleanup tears down what
// the driver made (then testnet deletes the namespaces by name anyway).
func startDriver(t testing.TB, n *testnet.Net, h *testnet.Host, mod ...func(*linux.Config)) *linux.Driver {
	t.Helper()
	cfg := linux.Config{HostName: h.Name, Prefix: n.Prefix(), HostNetns: h.Path, NetnsDir: n.Dir(), Logger: logger(t)}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := linux.New(ctx, cfg)
	if err != nil {
		t.Fatalf("linux.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Teardown(ctx); err != nil {
			t.Errorf("Teardown: %v", err)
		}
		d.Close()
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

// controller plays the controller for a set of drivers: it answers each
// driver's misses with Learn from a table of endpoint locations.
type controller struct {
	t     testing.TB
	mu    sync.Mutex
	table map[datapath.RemoteKey]datapath.Remote
	wg    sync.WaitGroup
	// answered records when each (host, key) miss was answered.
	answered map[string]time.Duration
}

func newController(t testing.TB) *controller {
	return &controller{t: t, table: map[datapath.RemoteKey]datapath.Remote{}, answered: map[string]time.Duration{}}
}

func (c *controller) put(r datapath.Remote) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.table[r.Key()] = r
}

// serve answers d's misses until Misses is closed (d.Close) or ctx ends.
func (c *controller) serve(ctx context.Context, host string, d datapath.Driver) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		misses := d.Misses()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-misses:
				if !ok {
					return
				}
				start := time.Now()
				c.mu.Lock()
				r, found := c.table[datapath.RemoteKey(m)]
				c.mu.Unlock()
				if !found {
					c.logf("%s: miss %d/%s: unknown", host, m.VNI, m.IP)
					continue
				}
				if err := d.Learn(ctx, []datapath.Remote{r}); err != nil && ctx.Err() == nil {
					c.t.Errorf("%s: Learn(%+v): %v", host, r, err)
				}
				took := time.Since(start)
				c.logf("%s: miss %d/%s -> %s in %v", host, m.VNI, m.IP, r.HostUnderlay, took)
				c.mu.Lock()
				c.answered[fmt.Sprintf("%s %d/%s", host, m.VNI, m.IP)] = took
				c.mu.Unlock()
			}
		}
	}()
}

// logf logs for tests, not benchmarks (which would print every miss).
func (c *controller) logf(format string, args ...any) {
	if _, ok := c.t.(*testing.B); !ok {
		c.t.Logf(format, args...)
	}
}
