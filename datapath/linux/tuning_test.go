package linux_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// TestRouterTuning checks the router namespace's throughput settings: on by
// default, left to the kernel with Config.Untuned, and converged by a
// restarted driver that finds them changed.
func TestRouterTuning(t *testing.T) {
	for _, tc := range []struct {
		name    string
		untuned bool
		want    string
	}{
		{name: "tuned", want: "0"},
		{name: "untuned", untuned: true, want: "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nettest.New(t, testnet.Options{})
			h := n.Host(0)
			d := startDriver(t, n, h, func(c *linux.Config) { c.Untuned = tc.untuned })
			st := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1]}
			if err := d.Set(t.Context(), st); err != nil {
				t.Fatal(err)
			}
			vpc := filepath.Join(n.Dir(), linux.VPCNetnsName(n.Prefix(), h.Name, 100))
			if got := readSysctl(t, vpc, "net/ipv4/ip_early_demux"); got != tc.want {
				t.Errorf("ip_early_demux = %s, want %s", got, tc.want)
			}
			if tc.untuned {
				return
			}
			// Behind the driver's back, then a restart: New converges it.
			writeSysctl(t, vpc, "net/ipv4/ip_early_demux", "1")
			d.Close()
			d2 := startDriver(t, n, h)
			if got := readSysctl(t, vpc, "net/ipv4/ip_early_demux"); got != "0" {
				t.Errorf("after a restart over a changed setting: ip_early_demux = %s, want 0", got)
			}
			if w := d2.Counts(); w["sysctl/set"] != 1 {
				t.Errorf("restart wrote %s, want sysctl/set=1", w)
			}
		})
	}
}

func readSysctl(t *testing.T, nsPath, key string) string {
	t.Helper()
	var v string
	if err := netnsfile.Do(nsPath, func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func writeSysctl(t *testing.T, nsPath, key, value string) {
	t.Helper()
	if err := netnsfile.Do(nsPath, func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) }); err != nil {
		t.Fatal(err)
	}
}
