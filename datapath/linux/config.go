package linux

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/datapath/internal/owned"
	"github.com/weftnet/weft/internal/netnsfile"
)

// Defaults of the resync intervals (Config.EndpointResync, VPCResync).
// EndpointResync is below the agent's reconcile interval (30 s), so that
// every reconcile repairs drift inside the endpoint namespaces.
const (
	DefaultEndpointResync = 20 * time.Second
	DefaultVPCResync      = time.Second
)

// Config configures a Driver. HostName is required; the rest has defaults.
type Config struct {
	// HostName is the host's name. Desired.Host.Name must match it. It is
	// part of every namespace name the driver makes.
	HostName string
	// Prefix starts every namespace name the driver makes (default "wft").
	// Tests use their testnet prefix so that cleanup finds everything.
	Prefix string
	// HostNetns is the path of the host's network namespace, which holds the
	// underlay device and the VXLAN UDP sockets; "" means the process's own
	// (/proc/self/ns/net).
	HostNetns string
	// NetnsDir holds named namespaces (default /var/run/netns, as `ip netns`).
	NetnsDir string
	// Logger receives the driver's logs (default: discarded).
	Logger *slog.Logger
	// MissBuffer is the capacity of the Misses channel (default 1024).
	MissBuffer int
	// EndpointResync bounds how long Set trusts its cache for the inside of
	// an unchanged endpoint's namespace (address, routes, neighbour): a Set
	// re-reads the namespaces last read longer ago (each endpoint's interval
	// is shortened by up to half, by a hash of its ID, so that endpoints
	// attached together are not all re-read by one Set). Zero means
	// DefaultEndpointResync, negative that every Set re-reads every
	// endpoint namespace. Objects in the VPC namespaces are re-read as
	// VPCResync says.
	EndpointResync time.Duration
	// VPCResync bounds how long after a Set that read every VPC namespace
	// a Set whose only change is new endpoints (without QoS, in VPCs
	// without QoS, on an unchanged host) trusts what that Set read and
	// wrote: it attaches them without reading the VPC namespaces again,
	// which makes successive attaches cost the same on a host with 10 or
	// 1,000 endpoints. Any other Set reads them, and repairs drift. Zero
	// means DefaultVPCResync, negative that every Set reads them.
	VPCResync time.Duration
	// Untuned leaves out the driver's throughput tunings (today: early
	// demux off in the router namespaces; see "Tuning" in the package
	// documentation), for benchmarks that measure what they bring. The
	// overlay MTU follows the underlay either way.
	Untuned bool
	// FlowSampling installs the flow hooks in every VPC's policy table:
	// per-endpoint counts of new TCP connections and a sample of 1 in
	// FlowSampling flows, counted by the kernel (see "Flows and counters"
	// in the package documentation). 0 installs none; Traffic then reports
	// the counters the kernel keeps anyway (veths, drops) and no flows.
	FlowSampling uint32
	// NetnsPool is how many empty endpoint namespaces the driver keeps
	// made ahead for endpoints that come without one (see nspool.go); 0
	// or negative: none. The pool starts with the first such endpoint. On
	// a loaded 2-core machine it did not make successive attaches faster
	// (the namespaces it makes compete for the same CPUs and locks), so
	// it is off unless set.
	NetnsPool int
}

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
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.MissBuffer <= 0 {
		c.MissBuffer = 1024
	}
	if c.EndpointResync == 0 {
		c.EndpointResync = DefaultEndpointResync
	}
	if c.VPCResync == 0 {
		c.VPCResync = DefaultVPCResync
	}
	return c
}

// Validate checks c (after defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := owned.CheckName("host name", c.HostName); err != nil {
		return fmt.Errorf("linux datapath config: %w", err)
	}
	if err := owned.CheckName("prefix", c.Prefix); err != nil {
		return fmt.Errorf("linux datapath config: %w", err)
	}
	if !filepath.IsAbs(c.NetnsDir) || !filepath.IsAbs(c.HostNetns) {
		return fmt.Errorf("linux datapath config: NetnsDir %q and HostNetns %q must be absolute", c.NetnsDir, c.HostNetns)
	}
	return nil
}
