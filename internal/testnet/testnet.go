package testnet

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options shape a test data centre.
type Options struct {
	// Hosts is the number of host namespaces (default 1).
	Hosts int
	// Prefix starts the name of every namespace the net (and a driver told
	// to use it) creates. Default "wftt<pid>r<random>", which Sweep
	// recognises once the process is gone.
	Prefix string
	// Underlay is the underlay subnet (default 192.0.2.0/24, TEST-NET-1);
	// host i gets the address .11+i.
	Underlay netip.Prefix
	// MTU of the underlay links (default 1500).
	MTU int
	// Dir holds the named namespaces (default DefaultDir).
	Dir string
	// Direct joins the hosts by one veth pair instead of through the
	// underlay bridge (no underlay namespace): the cheapest stand-in for a
	// wire. Only with exactly 2 hosts.
	Direct bool
	// BridgeNetfilter leaves br_netfilter's hooks on the underlay bridge
	// (the kernel's default once that module is loaded: every bridged frame
	// goes through iptables). By default they are turned off in the
	// underlay namespace: the bridge plays a physical switch, which costs
	// the hosts nothing.
	BridgeNetfilter bool
}

// Net is a data centre made of network namespaces: an underlay namespace
// with bridge br0, and one namespace per host attached to it by a veth
// (ul0 in the host, h<i> on the bridge).
type Net struct {
	prefix string
	dir    string
	hosts  []*Host

	mu     sync.Mutex
	closed bool
	extra  []string
}

// Host is one simulated server.
type Host struct {
	// Name is "h<i>", unique within the Net only.
	Name string
	// Netns is the name of the host's namespace; Path its path.
	Netns string
	Path  string
	// UnderlayIP (with UnderlayPrefix) is on UnderlayDev inside the namespace.
	UnderlayIP     netip.Addr
	UnderlayPrefix netip.Prefix
	UnderlayDev    string
	MTU            int
}

// UnderlayNetns is the suffix of the underlay namespace's name.
const UnderlayNetns = "ul"

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and VXLAN devices")
	}
}

// DefaultPrefix returns a fresh prefix "wftt<pid>r<4 random hex>".
func DefaultPrefix() string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("wftt%dr%02x%02x", os.Getpid(), b[0], b[1])
}

// New builds the data centre, skipping the test unless it runs as root. It
// first sweeps leftovers of crashed runs, and registers a cleanup that
// deletes, by name, every namespace whose name starts with the prefix.
func New(t testing.TB, o Options) *Net {
	t.Helper()
	RequireRoot(t)
	o.setDefaults()
	if removed, err := Sweep(o.Dir); err != nil {
		t.Logf("testnet: sweep: %v", err)
	} else if len(removed) > 0 {
		t.Logf("testnet: swept %d namespaces of crashed runs: %v", len(removed), removed)
	}
	n := &Net{prefix: o.Prefix, dir: o.Dir}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("testnet cleanup: %v", err)
		}
	})
	if err := n.build(o); err != nil {
		t.Fatalf("testnet: %v", err)
	}
	return n
}

// Build is New for programs that are not tests (benchmarks, demos): it
// needs root, does not sweep, and leaves cleanup to the caller, who must call
// Close (also when Build fails: it returns a Net to close with the error).
func Build(o Options) (*Net, error) {
	o.setDefaults()
	n := &Net{prefix: o.Prefix, dir: o.Dir}
	if os.Geteuid() != 0 {
		return n, errors.New("testnet: needs root (creates network namespaces)")
	}
	if err := n.build(o); err != nil {
		return n, fmt.Errorf("testnet: %w", err)
	}
	return n, nil
}

func (o *Options) setDefaults() {
	if o.Hosts <= 0 {
		o.Hosts = 1
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix()
	}
	if !o.Underlay.IsValid() {
		o.Underlay = netip.MustParsePrefix("192.0.2.0/24")
	}
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
}

func (n *Net) build(o Options) error {
	if o.Direct {
		return n.buildDirect(o)
	}
	ulPath, err := CreateNamed(n.dir, n.prefix+"-"+UnderlayNetns)
	if err != nil {
		return err
	}
	ul, err := handleAt(ulPath)
	if err != nil {
		return err
	}
	defer ul.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: o.MTU}}
	if err := ul.LinkAdd(br); err != nil {
		return fmt.Errorf("add underlay bridge: %w", err)
	}
	if err := setUp(ul, "lo", "br0"); err != nil {
		return err
	}
	if !o.BridgeNetfilter {
		if err := bridgeNetfilterOff(ulPath); err != nil {
			return err
		}
	}
	for i := range o.Hosts {
		h, err := n.addHost(o, i)
		if err != nil {
			return err
		}
		if err := n.attach(ul, h); err != nil {
			return fmt.Errorf("attach host %s: %w", h.Name, err)
		}
	}
	return nil
}

// addHost makes the namespace of host i.
func (n *Net) addHost(o Options, i int) (*Host, error) {
	ip := o.Underlay.Addr()
	for range 11 + i {
		ip = ip.Next()
	}
	if !o.Underlay.Contains(ip) {
		return nil, fmt.Errorf("underlay %s too small for %d hosts", o.Underlay, o.Hosts)
	}
	h := &Host{
		Name:           fmt.Sprintf("h%d", i),
		UnderlayIP:     ip,
		UnderlayPrefix: netip.PrefixFrom(ip, o.Underlay.Bits()),
		UnderlayDev:    "ul0",
		MTU:            o.MTU,
	}
	h.Netns = n.prefix + "-" + h.Name
	var err error
	if h.Path, err = CreateNamed(n.dir, h.Netns); err != nil {
		return nil, err
	}
	n.hosts = append(n.hosts, h)
	return h, nil
}

// buildDirect joins two hosts by one veth pair, ul0 to ul0.
func (n *Net) buildDirect(o Options) error {
	if o.Hosts != 2 {
		return fmt.Errorf("a direct underlay joins exactly 2 hosts, not %d", o.Hosts)
	}
	var hs [2]*Host
	for i := range hs {
		var err error
		if hs[i], err = n.addHost(o, i); err != nil {
			return err
		}
	}
	h0, err := handleAt(hs[0].Path)
	if err != nil {
		return err
	}
	defer h0.Close()
	h1, err := handleAt(hs[1].Path)
	if err != nil {
		return err
	}
	defer h1.Close()
	fd, err := netns.GetFromPath(hs[1].Path)
	if err != nil {
		return err
	}
	defer fd.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hs[0].UnderlayDev, MTU: o.MTU},
		PeerName: hs[1].UnderlayDev, PeerMTU: uint32(o.MTU), PeerNamespace: netlink.NsFd(fd)}
	if err := h0.LinkAdd(veth); err != nil {
		return fmt.Errorf("add direct underlay veth: %w", err)
	}
	for i, hh := range []*netlink.Handle{h0, h1} {
		if err := hostUnderlay(hh, hs[i]); err != nil {
			return fmt.Errorf("host %s: %w", hs[i].Name, err)
		}
	}
	// Run pending linkwatch work for both ends (see AddVethPair).
	for i, hh := range []*netlink.Handle{h0, h1} {
		if _, err := hh.LinkByName(hs[i].UnderlayDev); err != nil {
			return err
		}
	}
	return nil
}

func (n *Net) attach(ul *netlink.Handle, h *Host) error {
	fd, err := netns.GetFromPath(h.Path)
	if err != nil {
		return err
	}
	defer fd.Close()
	br, err := ul.LinkByName("br0")
	if err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: h.Name, MTU: h.MTU, MasterIndex: br.Attrs().Index},
		PeerName:      h.UnderlayDev,
		PeerNamespace: netlink.NsFd(fd),
	}
	if err := ul.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	if err := setUp(ul, h.Name); err != nil {
		return err
	}
	hh, err := netlink.NewHandleAt(fd)
	if err != nil {
		return err
	}
	defer hh.Close()
	if err := hostUnderlay(hh, h); err != nil {
		return err
	}
	// The bridge port went up before its peer: run the linkwatch work that
	// activates its queue now (see AddVethPair).
	_, err = ul.LinkByName(h.Name)
	return err
}

// hostUnderlay gives the host's underlay device its address and brings it
// and loopback up.
func hostUnderlay(hh *netlink.Handle, h *Host) error {
	dev, err := hh.LinkByName(h.UnderlayDev)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: h.UnderlayIP.AsSlice(), Mask: net.CIDRMask(h.UnderlayPrefix.Bits(), h.UnderlayIP.BitLen())}}
	if err := hh.AddrAdd(dev, addr); err != nil {
		return fmt.Errorf("add underlay address: %w", err)
	}
	return setUp(hh, "lo", h.UnderlayDev)
}

func handleAt(path string) (*netlink.Handle, error) {
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", path, err)
	}
	return h, nil
}

func setUp(h *netlink.Handle, names ...string) error {
	for _, name := range names {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return nil
}

// Prefix is the namespace name prefix of this net. A driver under test
// should name its namespaces with it too, so cleanup and Sweep find them.
func (n *Net) Prefix() string { return n.prefix }

// Dir is the directory of the named namespaces.
func (n *Net) Dir() string { return n.dir }

// Host returns host i.
func (n *Net) Host(i int) *Host { return n.hosts[i] }

// Hosts returns every host.
func (n *Net) Hosts() []*Host { return n.hosts }

// AddNetns creates a spare namespace "<prefix>-<name>" (e.g. to play a
// container runtime that made one) and returns its path. Close deletes it.
func (n *Net) AddNetns(name string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return "", errors.New("testnet: closed")
	}
	return CreateNamed(n.dir, n.prefix+"-"+name)
}

// Names lists the namespaces whose name starts with the net's prefix.
func (n *Net) Names() ([]string, error) {
	return listPrefix(n.dir, n.prefix+"-")
}

// Close deletes every namespace whose name starts with the net's prefix
// (including those a driver made with it). It is idempotent.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	names, err := listPrefix(n.dir, n.prefix+"-")
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, DeleteNamed(n.dir, name))
	}
	return errors.Join(errs...)
}

func listPrefix(dir, prefix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Do runs fn inside the host's namespace (see the package-level Do).
func (h *Host) Do(fn func() error) error { return Do(h.Path, fn) }

var leftover = regexp.MustCompile(`^wftt([0-9]+)r[0-9a-f]+(-|$)`)

// Sweep deletes namespaces in dir made by test runs (default prefix) whose
// process no longer exists, and returns their names.
func Sweep(dir string) ([]string, error) {
	names, err := listPrefix(dir, "wftt")
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		m := leftover.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := DeleteNamed(dir, name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// bridgeNetfilterOff turns off br_netfilter's iptables hooks in the
// namespace at path. The settings are per namespace and exist only while the
// module is loaded; without it there is nothing to turn off.
func bridgeNetfilterOff(path string) error {
	return Do(path, func() error {
		for _, k := range []string{"iptables", "ip6tables", "arptables"} {
			err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-"+k, []byte("0"), 0o644)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("turn off bridge-nf-call-%s: %w", k, err)
			}
		}
		return nil
	})
}
