package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestCNISmoke runs the CNI benchmark at a tiny size with the weft-cni
// plugin built from this module: four series (without the pool and with
// it, successive and concurrent), every ADD of the pooled ones served by
// the pool, nothing left behind.
func TestCNISmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the CNI benchmark creates network namespaces")
	}
	plugin := filepath.Join(t.TempDir(), "weft-cni")
	build := exec.Command("go", "build", "-o", plugin, "github.com/weftnet/weft/cmd/weft-cni")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as released
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build weft-cni: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	rep, err := CNI(ctx, CNIConfig{Plugin: plugin, Attaches: 4, Concurrency: 2, Progress: t.Output()})
	if err != nil {
		t.Fatalf("CNI: %v", err)
	}
	if !rep.PluginStatic {
		t.Errorf("the plugin built with CGO_ENABLED=0 is reported dynamically linked")
	}
	if len(rep.Series) != 4 {
		t.Fatalf("series: %+v, want 4", rep.Series)
	}
	for i, s := range rep.Series {
		pooled := i >= 2
		if s.Pool != pooled || s.Attaches != 4 || s.PerSec <= 0 || s.P50Ms <= 0 || s.P99Ms < s.P50Ms {
			t.Errorf("series %d: %+v", i, s)
		}
		if want := map[bool]int{false: 0, true: 4}[pooled]; s.FromPool != want {
			t.Errorf("series %d: %d ADDs from the pool, want %d", i, s.FromPool, want)
		}
	}
	if e := rep.Exec; e.Runs != 4 || e.PerSec <= 0 || e.P50Ms <= 0 || e.P99Ms < e.P50Ms {
		t.Errorf("plugin exec floor %+v", e)
	}
	if rep.PoolRatio.Successive <= 0 || rep.PoolRatio.Concurrent <= 0 {
		t.Errorf("pool ratio %+v", rep.PoolRatio)
	}
	leftOver(t)
}
