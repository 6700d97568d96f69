package testnet

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/internal/netnsfile"
)

// Options shape a data centre.
type Options struct {
	// Hosts is the number of host namespaces (default 1).
	Hosts int
	// FirstHost is the number in the first host's name: the hosts are
	// h<FirstHost>, h<FirstHost+1>, ... (default 0). Their addresses do
	// not depend on it.
	FirstHost int
	// Prefix starts the name of every namespace the net (and a driver told
	// to use it) creates. Default "wftt<pid>r<random>", which Sweep
	// recognises once the process is gone.
	Prefix string
	// Underlay is the underlay subnet (default 192.0.2.0/24, TEST-NET-1);
	// host i (counting from 0) gets the address .11+i.
	Underlay netip.Prefix
	// Control is a second subnet on the underlay bridge, for reaching a
	// controller (default none): host i gets its address .11+i on the
	// underlay device too, and the controller's address .1 (ControllerIP)
	// is on br0 in the underlay namespace, or with RootLink on the root
	// link.
	Control netip.Prefix
	// RootLink joins the root namespace to the underlay bridge by a veth,
	// "<prefix>-ctl" in the root namespace (with the controller's address)
	// and "ctl" on br0, for a controller running in the root namespace.
	// Needs Control and a prefix of at most 11 characters.
	RootLink bool
	// MTU of the underlay links (default 1500).
	MTU int
	// Dir holds the named namespaces (default netnsfile.DefaultDir).
	Dir string
	// Direct joins the hosts by one veth pair instead of through the
	// underlay bridge (no underlay namespace): the cheapest stand-in for a
	// wire. Only with exactly 2 hosts and without Control.
	Direct bool
	// BridgeNetfilter leaves br_netfilter's hooks on the underlay bridge
	// (the kernel's default once that module is loaded: every bridged frame
	// goes through iptables). By default they are turned off in the
	// underlay namespace: the bridge plays a physical switch, which costs
	// the hosts nothing.
	BridgeNetfilter bool
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
		o.Dir = netnsfile.DefaultDir
	}
}

// Validate checks o (after defaults).
func (o Options) Validate() error {
	o.setDefaults()
	if strings.ContainsAny(o.Prefix, "/ ") {
		return fmt.Errorf("options: prefix %q: want a name", o.Prefix)
	}
	if _, ok := nth(o.Underlay, 11+o.Hosts); !ok { // the last host short of broadcast
		return fmt.Errorf("options: underlay %s too small for %d hosts", o.Underlay, o.Hosts)
	}
	if o.Direct && (o.Hosts != 2 || o.Control.IsValid()) {
		return fmt.Errorf("options: a direct underlay joins exactly 2 hosts (not %d) and has no control subnet", o.Hosts)
	}
	if o.RootLink && !o.Control.IsValid() {
		return errors.New("options: a root link needs a control subnet")
	}
	if name := rootLinkName(o.Prefix); o.RootLink && len(name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("options: prefix %q too long for the root link name %q (%d characters at most)", o.Prefix, name, unix.IFNAMSIZ-1)
	}
	if !o.Control.IsValid() {
		return nil
	}
	if o.Control.Overlaps(o.Underlay) {
		return fmt.Errorf("options: underlay %s and control %s overlap", o.Underlay, o.Control)
	}
	if _, ok := nth(o.Control, 11+o.Hosts); !ok {
		return fmt.Errorf("options: control %s too small for %d hosts", o.Control, o.Hosts)
	}
	return nil
}

// nth returns the address i after the start of p, and whether p holds it.
func nth(p netip.Prefix, i int) (netip.Addr, bool) {
	a := p.Masked().Addr()
	for range i {
		if a = a.Next(); !p.Contains(a) {
			return a, false
		}
	}
	return a, true
}

func rootLinkName(prefix string) string { return prefix + "-ctl" }

// Net is a data centre made of network namespaces: an underlay namespace
// with bridge br0, and one namespace per host attached to it by a veth
// (ul0 in the host, h<i> on the bridge).
type Net struct {
	o     Options // with defaults
	hosts []*Host

	g  lifecycle.Group // guards Close; a Net has no goroutines
	mu sync.Mutex      // orders AddNetns before Close's removal
}

// Host is one simulated server.
type Host struct {
	// Name is "h<i>", unique within the Net only.
	Name string
	// Netns is the name of the host's namespace; Path its path.
	Netns string
	Path  string
	// UnderlayIP (with UnderlayPrefix) is on UnderlayDev inside the
	// namespace; so is ControlIP if the net has a control subnet.
	UnderlayIP     netip.Addr
	UnderlayPrefix netip.Prefix
	UnderlayDev    string
	MTU            int
	ControlIP      netip.Addr
}

// UnderlayNetns is the suffix of the underlay namespace's name.
const UnderlayNetns = "ul"

// DefaultPrefix returns a fresh prefix "wftt<pid>r<4 random hex>".
func DefaultPrefix() string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("wftt%dr%02x%02x", os.Getpid(), b[0], b[1])
}

// Build makes the data centre; it needs root. The caller must Close the
// Net, also when Build fails: it then returns a Net to close with the
// error, which removes what was made. Build does not Sweep (tests use
// package nettest, whose New does).
func Build(o Options) (*Net, error) {
	o.setDefaults()
	n := &Net{o: o}
	if err := o.Validate(); err != nil {
		return n, fmt.Errorf("testnet: %w", err)
	}
	if os.Geteuid() != 0 {
		return n, errors.New("testnet: needs root (creates network namespaces)")
	}
	if err := n.build(); err != nil {
		return n, fmt.Errorf("testnet: %w", err)
	}
	return n, nil
}

func (n *Net) build() error {
	o := n.o
	if o.Direct {
		return n.buildDirect()
	}
	ulPath, err := netnsfile.Create(o.Dir, o.Prefix+"-"+UnderlayNetns)
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
	switch {
	case o.RootLink:
		if err := n.addRootLink(ul); err != nil {
			return err
		}
	case o.Control.IsValid():
		if err := addAddr(ul, "br0", n.ControllerIP(), o.Control.Bits()); err != nil {
			return err
		}
	}
	for i := range o.Hosts {
		h, err := n.addHost(i)
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
func (n *Net) addHost(i int) (*Host, error) {
	o := n.o
	ip, _ := nth(o.Underlay, 11+i)
	h := &Host{
		Name:           fmt.Sprintf("h%d", o.FirstHost+i),
		UnderlayIP:     ip,
		UnderlayPrefix: netip.PrefixFrom(ip, o.Underlay.Bits()),
		UnderlayDev:    "ul0",
		MTU:            o.MTU,
	}
	if o.Control.IsValid() {
		h.ControlIP, _ = nth(o.Control, 11+i)
	}
	h.Netns = o.Prefix + "-" + h.Name
	var err error
	if h.Path, err = netnsfile.Create(o.Dir, h.Netns); err != nil {
		return nil, err
	}
	n.hosts = append(n.hosts, h)
	return h, nil
}

// buildDirect joins two hosts by one veth pair, ul0 to ul0.
func (n *Net) buildDirect() error {
	var hs [2]*Host
	for i := range hs {
		var err error
		if hs[i], err = n.addHost(i); err != nil {
			return err
		}
	}
	if err := join(hs[0].Path, hs[1].Path, hs[0].UnderlayDev, n.o.MTU, hs[0].UnderlayPrefix, hs[1].UnderlayPrefix); err != nil {
		return fmt.Errorf("direct underlay: %w", err)
	}
	return nil
}

// join adds a veth pair, dev in the namespace at aPath to dev in the one at
// bPath, with the given MTU (0: the kernel's default), puts address a on
// the first end and b on the second, and sets both and loopback up.
func join(aPath, bPath, dev string, mtu int, a, b netip.Prefix) error {
	ha, err := handleAt(aPath)
	if err != nil {
		return err
	}
	defer ha.Close()
	hb, err := handleAt(bPath)
	if err != nil {
		return err
	}
	defer hb.Close()
	fb, err := netns.GetFromPath(bPath)
	if err != nil {
		return err
	}
	defer fb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev, MTU: mtu}, PeerName: dev, PeerNamespace: netlink.NsFd(fb)}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", dev, err)
	}
	for _, end := range []struct {
		h *netlink.Handle
		p netip.Prefix
	}{{ha, a}, {hb, b}} {
		if err := addAddr(end.h, dev, end.p.Addr(), end.p.Bits()); err != nil {
			return err
		}
		if err := setUp(end.h, "lo", dev); err != nil {
			return err
		}
	}
	// A veth end that went up before its peer drops what it sends until
	// the kernel's linkwatch work activates its queue; an RTM_GETLINK runs
	// that work now (see datapath/linux).
	for _, h := range []*netlink.Handle{ha, hb} {
		if _, err := h.LinkByName(dev); err != nil {
			return err
		}
	}
	return nil
}

// plug adds a veth from port, on the underlay bridge, to peer in the
// namespace fd, and sets port up; peer is left to the caller.
func (n *Net) plug(ul *netlink.Handle, port, peer string, fd netns.NsHandle) error {
	br, err := ul.LinkByName("br0")
	if err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port, MTU: n.o.MTU, MasterIndex: br.Attrs().Index},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(fd),
	}
	if err := ul.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", port, err)
	}
	return setUp(ul, port)
}

// addRootLink plugs the root namespace into the bridge and puts the
// controller's address on its end.
func (n *Net) addRootLink(ul *netlink.Handle) error {
	fd, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open the root netns: %w", err)
	}
	defer fd.Close()
	root, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink in the root netns: %w", err)
	}
	defer root.Close()
	name := rootLinkName(n.o.Prefix)
	if err := n.plug(ul, "ctl", name, fd); err != nil {
		return fmt.Errorf("root link: %w", err)
	}
	if err := addAddr(root, name, n.ControllerIP(), n.o.Control.Bits()); err != nil {
		return fmt.Errorf("root link: %w", err)
	}
	return setUp(root, name)
}

func (n *Net) attach(ul *netlink.Handle, h *Host) error {
	fd, err := netns.GetFromPath(h.Path)
	if err != nil {
		return err
	}
	defer fd.Close()
	if err := n.plug(ul, h.Name, h.UnderlayDev, fd); err != nil {
		return err
	}
	hh, err := netlink.NewHandleAt(fd)
	if err != nil {
		return err
	}
	defer hh.Close()
	if err := n.hostUnderlay(hh, h); err != nil {
		return err
	}
	// The bridge port went up before its peer: run the linkwatch work that
	// activates its queue now (see join).
	_, err = ul.LinkByName(h.Name)
	return err
}

// hostUnderlay gives the host's underlay device its addresses and brings
// it and loopback up.
func (n *Net) hostUnderlay(hh *netlink.Handle, h *Host) error {
	if err := addAddr(hh, h.UnderlayDev, h.UnderlayIP, h.UnderlayPrefix.Bits()); err != nil {
		return err
	}
	if h.ControlIP.IsValid() {
		if err := addAddr(hh, h.UnderlayDev, h.ControlIP, n.o.Control.Bits()); err != nil {
			return err
		}
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

func addAddr(h *netlink.Handle, dev string, ip netip.Addr, bits int) error {
	link, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("add %s/%d to %s: %w", ip, bits, dev, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, ip.BitLen())}}
	if err := h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("add %s/%d to %s: %w", ip, bits, dev, err)
	}
	return nil
}

// Prefix is the namespace name prefix of this net. A driver under test
// should name its namespaces with it too, so cleanup and Sweep find them.
func (n *Net) Prefix() string { return n.o.Prefix }

// Dir is the directory of the named namespaces.
func (n *Net) Dir() string { return n.o.Dir }

// Host returns host i (counting from 0, whatever Options.FirstHost).
func (n *Net) Host(i int) *Host { return n.hosts[i] }

// Hosts returns every host.
func (n *Net) Hosts() []*Host { return n.hosts }

// HostByName returns the host named name, or nil.
func (n *Net) HostByName(name string) *Host {
	for _, h := range n.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// ControllerIP is the controller's address on the control subnet (the
// zero Addr without one).
func (n *Net) ControllerIP() netip.Addr {
	if !n.o.Control.IsValid() {
		return netip.Addr{}
	}
	ip, _ := nth(n.o.Control, 1)
	return ip
}

// UnderlayPath is the path of the underlay namespace ("" with Direct).
func (n *Net) UnderlayPath() string {
	if n.o.Direct {
		return ""
	}
	return filepath.Join(n.o.Dir, n.o.Prefix+"-"+UnderlayNetns)
}

// AddNetns creates a spare namespace "<prefix>-<name>" (e.g. to play a
// container runtime that made one) and returns its path. Close deletes it.
func (n *Net) AddNetns(name string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.g.Closed() {
		return "", lifecycle.ErrClosed
	}
	return netnsfile.Create(n.o.Dir, n.o.Prefix+"-"+name)
}

// Names lists the namespaces whose name starts with the net's prefix.
func (n *Net) Names() ([]string, error) {
	return listPrefix(n.o.Dir, n.o.Prefix+"-")
}

// Close removes everything named with the net's prefix (see Remove),
// including what a driver made with it. It is idempotent.
func (n *Net) Close() error {
	return n.g.Close(func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		return Remove(n.o.Dir, n.o.Prefix)
	})
}

// Remove deletes, by name, what a net with prefix made and what was made
// with its prefix since: the root link "<prefix>-ctl" and every namespace
// in dir whose name starts with "<prefix>-", a driver's
// ("<prefix>-h1-v100") before its host's. Deleting a namespace deletes the
// devices in it.
func Remove(dir, prefix string) error {
	var errs []error
	if link, err := netlink.LinkByName(rootLinkName(prefix)); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", rootLinkName(prefix), err))
		}
	}
	names, err := listPrefix(dir, prefix+"-")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	depth := func(name string) int { return strings.Count(name, "-") }
	slices.SortStableFunc(names, func(a, b string) int { return depth(b) - depth(a) })
	for _, name := range names {
		errs = append(errs, netnsfile.Delete(dir, name))
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

// Do runs fn inside the host's namespace (see netnsfile.Do).
func (h *Host) Do(fn func() error) error { return netnsfile.Do(h.Path, fn) }

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
		if err := netnsfile.Delete(dir, name); err != nil {
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
	return netnsfile.Do(path, func() error {
		for _, k := range []string{"iptables", "ip6tables", "arptables"} {
			err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-"+k, []byte("0"), 0o644)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("turn off bridge-nf-call-%s: %w", k, err)
			}
		}
		return nil
	})
}
