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

func (n *Net) build(o Options) error {
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
	for i := range o.Hosts {
		ip := o.Underlay.Addr()
		for range 11 + i {
			ip = ip.Next()
		}
		if !o.Underlay.Contains(ip) {
			return fmt.Errorf("underlay %s too small for %d hosts", o.Underlay, o.Hosts)
		}
		h := &Host{
			Name:           fmt.Sprintf("h%d", i),
			UnderlayIP:     ip,
			UnderlayPrefix: netip.PrefixFrom(ip, o.Underlay.Bits()),
			UnderlayDev:    "ul0",
			MTU:            o.MTU,
		}
		h.Netns = n.prefix + "-" + h.Name
		if h.Path, err = CreateNamed(n.dir, h.Netns); err != nil {
			return err
		}
		n.hosts = append(n.hosts, h)
		if err := n.attach(ul, h); err != nil {
			return fmt.Errorf("attach host %s: %w", h.Name, err)
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
