package ebpf

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/datapath/internal/owned"
	"github.com/weftnet/weft/internal/netnsfile"
)

// MissMode says what the data plane does with a packet to a destination
// it has not learned, while the agent asks for it.
type MissMode string

// Miss modes. See "Learning" in the package documentation for what each
// measured.
const (
	// MissHold queues the packet in the kernel until the agent's Learn
	// releases it (or about a second passes): the first packet arrives.
	MissHold MissMode = "hold"
	// MissDrop drops the packet: the sender's retransmission gets through.
	MissDrop MissMode = "drop"
)

// Hooks says how the driver attaches its programs to devices.
type Hooks string

// Hook modes. See "Attaching programs" in the package documentation.
const (
	// HooksAuto attaches to endpoint veths with legacy tc (a tcx link
	// costs each endpoint an RCU grace period) and to the host's devices
	// with tcx links, or legacy tc on a kernel without tcx.
	HooksAuto Hooks = "auto"
	// HooksTCX attaches every program with a tcx link (kernel ≥ 6.6).
	HooksTCX Hooks = "tcx"
	// HooksTC attaches every program with legacy tc: a clsact qdisc and a
	// cls_bpf filter in direct-action mode. It is what a kernel without
	// tcx gets (HooksAuto falls back to it); tests force it.
	HooksTC Hooks = "tc"
)

// Config configures a Driver. HostName is required; the rest has defaults.
type Config struct {
	// HostName is the host's name. Desired.Host.Name must match it. It is
	// part of every namespace name and of the pin directory.
	HostName string
	// Prefix starts every namespace name the driver makes and names its
	// pin directory with HostName (default "wft"). Tests use their testnet
	// prefix so that cleanup finds everything.
	Prefix string
	// HostNetns is the path of the host's network namespace, which holds the
	// underlay device, the VXLAN device and the host side of every
	// endpoint's veth; "" means the process's own (/proc/self/ns/net).
	HostNetns string
	// NetnsDir holds named namespaces (default /var/run/netns, as `ip netns`).
	NetnsDir string
	// BPFFS is where bpffs is (or is mounted if it is not; default
	// /sys/fs/bpf).
	BPFFS string
	// MissMode is what happens to a packet that misses (default MissHold).
	MissMode MissMode
	// Logger receives the driver's logs (default: discarded).
	Logger *slog.Logger
	// MissBuffer is the capacity of the Misses channel (default 1024).
	MissBuffer int
	// Hooks is how programs are attached (default HooksAuto).
	Hooks Hooks
	// FlowSampling samples 1 in FlowSampling flows (0: none), which
	// Traffic reports (see "Flows").
	FlowSampling uint32
	// EndpointResync bounds how long Set trusts what it last read and
	// wrote of an unchanged endpoint: the inside of its namespace
	// (interface, address, neighbour, route) and its program's hook. A Set
	// reads them again when the endpoint changed, its veth was re-made or
	// set down, its device lost its clsact qdisc, or the interval passed
	// (each endpoint's is shortened by up to half, by a hash of its ID, so
	// that endpoints attached together are not all read by one Set). The
	// maps, the host side of every veth and the host's devices are read
	// by every Set. Zero means DefaultEndpointResync, negative that every
	// Set reads every endpoint.
	EndpointResync time.Duration
	// MapResync bounds how long Set trusts what it last read and wrote of
	// the maps sized for a million entries, remotes and the policy maps,
	// whose reading costs milliseconds however few entries they hold (the
	// kernel walks every bucket): a Set within MapResync of the last one
	// that read them writes only what differs from what that Set and
	// Learn and Forget since wrote. Drift in them (an entry deleted
	// behind the driver's back) is repaired by the first Set after the
	// interval. Zero means DefaultMapResync, negative that every Set
	// reads them.
	MapResync time.Duration
}

// DefaultEndpointResync is Config.EndpointResync's default: below the
// agent's reconcile interval (30 s), so that every reconcile repairs drift
// inside the endpoint namespaces (the linux driver's default too).
const DefaultEndpointResync = 20 * time.Second

// DefaultMapResync is Config.MapResync's default (the linux driver's
// VPCResync).
const DefaultMapResync = time.Second

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "wft"
	}
	if c.NetnsDir == "" {
		c.NetnsDir = netnsfile.DefaultDir
	}
	if c.HostNetns == "" {
		c.HostNetns = "/proc/self/ns/net"
	}
	if c.BPFFS == "" {
		c.BPFFS = "/sys/fs/bpf"
	}
	if c.MissMode == "" {
		c.MissMode = MissHold
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.MissBuffer <= 0 {
		c.MissBuffer = 1024
	}
	if c.Hooks == "" {
		c.Hooks = HooksAuto
	}
	if c.EndpointResync == 0 {
		c.EndpointResync = DefaultEndpointResync
	}
	if c.MapResync == 0 {
		c.MapResync = DefaultMapResync
	}
	return c
}

// Validate checks c (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := owned.CheckName("host name", c.HostName); err != nil {
		return fmt.Errorf("ebpf datapath config: %w", err)
	}
	if err := owned.CheckName("prefix", c.Prefix); err != nil {
		return fmt.Errorf("ebpf datapath config: %w", err)
	}
	for _, p := range []string{c.NetnsDir, c.HostNetns, c.BPFFS} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("ebpf datapath config: path %q must be absolute", p)
		}
	}
	if c.MissMode != MissHold && c.MissMode != MissDrop {
		return fmt.Errorf("ebpf datapath config: miss mode %q: want %q or %q", c.MissMode, MissHold, MissDrop)
	}
	if c.Hooks != HooksAuto && c.Hooks != HooksTCX && c.Hooks != HooksTC {
		return fmt.Errorf("ebpf datapath config: hooks %q: want %q, %q or %q", c.Hooks, HooksAuto, HooksTCX, HooksTC)
	}
	return nil
}
