package sim

import (
	"os"
	"strconv"
	"strings"
)

// netdevBacklogPath is the kernel's per-CPU backlog of received packets
// awaiting the network stack (loopback goes through it too).
const netdevBacklogPath = "/proc/sys/net/core/netdev_max_backlog"

// wantBacklog is the backlog a simulation of hosts agents needs, or 0 if
// the default will do. With ~100,000 agents heartbeating over loopback and
// two CPU-starved cores, the default 1,000 packets overflowed (26,000 drops
// a second measured in /proc/net/softnet_stat); the drops included TCP
// keepalive probes, and config streams were aborted as timed out (8,000
// every 5 s), which turned into a reconnect storm.
func wantBacklog(hosts, current int) int {
	if hosts < 20_000 {
		return 0
	}
	want := 65_536
	if current >= want {
		return 0
	}
	return want
}

// raiseBacklog raises netdev_max_backlog for a large simulation (see
// wantBacklog) and returns a function that puts the old value back. It
// reports what it did through prog; without the right to write the
// setting it says so and changes nothing.
func raiseBacklog(hosts int, prog func(string, ...any)) (restore func()) {
	noop := func() {}
	b, err := os.ReadFile(netdevBacklogPath)
	if err != nil {
		return noop
	}
	cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return noop
	}
	want := wantBacklog(hosts, cur)
	if want == 0 {
		return noop
	}
	if err := os.WriteFile(netdevBacklogPath, []byte(strconv.Itoa(want)), 0o644); err != nil {
		prog("setup: net.core.netdev_max_backlog is %d, too low for %d agents over loopback (drops abort their streams), and cannot be raised: %v", cur, hosts, err)
		return noop
	}
	prog("setup: net.core.netdev_max_backlog %d → %d for this run (restored at the end): loopback drops aborted config streams at 100,000 agents", cur, want)
	return func() {
		if err := os.WriteFile(netdevBacklogPath, []byte(strconv.Itoa(cur)), 0o644); err != nil {
			prog("sim: restore net.core.netdev_max_backlog to %d: %v", cur, err)
		}
	}
}
