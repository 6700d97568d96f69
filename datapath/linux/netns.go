package linux

import (
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netnsfile"
)

// createNamedNS makes a network namespace pinned at dir/name.
func createNamedNS(dir, name string) error {
	_, err := netnsfile.Create(dir, name)
	return err
}

// deleteNamedNS unpins dir/name; a missing one is not an error.
func deleteNamedNS(dir, name string) error { return netnsfile.Delete(dir, name) }

// sysctl is one /proc/sys/net setting of a namespace.
type sysctl struct{ key, value string }

// readSysctls returns the current values of keys inside ns.
func readSysctls(ns netns.NsHandle, keys []sysctl) ([]string, error) {
	vals := make([]string, len(keys))
	err := netnsfile.DoFd(int(ns), func() error {
		for i, k := range keys {
			b, err := os.ReadFile("/proc/sys/" + k.key)
			if err != nil {
				return fmt.Errorf("read sysctl %s: %w", k.key, err)
			}
			vals[i] = strings.TrimSpace(string(b))
		}
		return nil
	})
	return vals, err
}

// writeSysctls writes every setting inside ns, in order.
func writeSysctls(ns netns.NsHandle, keys []sysctl) error {
	return netnsfile.DoFd(int(ns), func() error {
		for _, k := range keys {
			if err := os.WriteFile("/proc/sys/"+k.key, []byte(k.value), 0o644); err != nil {
				return fmt.Errorf("write sysctl %s=%s: %w", k.key, k.value, err)
			}
		}
		return nil
	})
}

// sameFile reports whether the namespace pinned at path is the one held by fd.
func sameFile(path string, fd netns.NsHandle) bool {
	var a, b unix.Stat_t
	if unix.Stat(path, &a) != nil || unix.Fstat(int(fd), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}
