package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
)

// LabConfig shapes a Lab.
type LabConfig struct {
	// Prefix starts the name of every namespace and link the lab, and the
	// agents it starts, create (required; at most 11 characters with
	// RootLink, because the root link is "<prefix>-ctl").
	Prefix string
	// Hosts is the number of hosts, named h1..hN (default 3).
	Hosts int
	// Underlay is the underlay subnet (default 192.0.2.0/24); host hI gets
	// the address .10+I, as in examples/two-tenants.yaml.
	Underlay netip.Prefix
	// Control is the subnet the controller is reached on (default
	// 198.51.100.0/24): the controller has .1, host hI .10+I.
	Control netip.Prefix
	// RootLink makes a veth from the root namespace ("<prefix>-ctl", with
	// the controller's control address) to the underlay bridge, for a
	// controller running in the root namespace. Without it the controller's
	// address is put on the bridge in the underlay namespace.
	RootLink bool
	// NetnsDir holds the named namespaces (default /var/run/netns).
	NetnsDir string
	// Logger receives the lab's logs (default: discarded).
	Logger *slog.Logger
}

func (c LabConfig) withDefaults() LabConfig {
	if c.Hosts <= 0 {
		c.Hosts = 3
	}
	if !c.Underlay.IsValid() {
		c.Underlay = netip.MustParsePrefix("192.0.2.0/24")
	}
	if !c.Control.IsValid() {
		c.Control = netip.MustParsePrefix("198.51.100.0/24")
	}
	if c.NetnsDir == "" {
		c.NetnsDir = testnet.DefaultDir
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks c (after defaults).
func (c LabConfig) Validate() error {
	c = c.withDefaults()
	if c.Prefix == "" || strings.ContainsAny(c.Prefix, "/ ") {
		return fmt.Errorf("lab config: prefix %q: want a non-empty name", c.Prefix)
	}
	if c.RootLink && len(c.rootLinkName()) > 15 {
		return fmt.Errorf("lab config: prefix %q too long for the root link name %q (15 characters at most)", c.Prefix, c.rootLinkName())
	}
	if c.Hosts > 200 {
		return fmt.Errorf("lab config: %d hosts: at most 200", c.Hosts)
	}
	if !c.Underlay.Addr().Is4() || !c.Control.Addr().Is4() || c.Underlay.Overlaps(c.Control) {
		return fmt.Errorf("lab config: underlay %s and control %s must be distinct IPv4 subnets", c.Underlay, c.Control)
	}
	return nil
}

func (c LabConfig) rootLinkName() string { return c.Prefix + "-ctl" }

// Lab is a running lab data centre. Close removes everything it made.
type Lab struct {
	cfg    LabConfig
	log    *slog.Logger
	ulPath string
	hosts  []*Host

	mu     sync.Mutex
	agents []*Agent
	closed bool
}

// Host is one simulated server of a Lab.
type Host struct {
	// Name is "h1", "h2", ...: the name of its Host object and agent.
	Name string
	// Netns is the name of its namespace, Path the namespace's path.
	Netns string
	Path  string
	// UnderlayIP is on UnderlayDev ("ul0"); ControlIP too.
	UnderlayIP  netip.Addr
	ControlIP   netip.Addr
	UnderlayDev string
}

// NewLab builds the lab's namespaces and links. On error it removes what it
// had made.
func NewLab(cfg LabConfig) (l *Lab, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l = &Lab{cfg: cfg, log: cfg.Logger.With("subsystem", "demo/lab")}
	started := l // a failing return sets l to nil before this runs
	defer func() {
		if err != nil {
			_ = started.Close()
			l = nil
		}
	}()
	if l.ulPath, err = testnet.CreateNamed(cfg.NetnsDir, cfg.Prefix+"-ul"); err != nil {
		return nil, err
	}
	ul, err := handleAt(l.ulPath)
	if err != nil {
		return nil, err
	}
	defer ul.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := ul.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add the underlay bridge: %w", err)
	}
	if err := setUp(ul, "lo", "br0"); err != nil {
		return nil, err
	}
	if cfg.RootLink {
		if err := l.addRootLink(ul); err != nil {
			return nil, err
		}
	} else if err := addAddr(ul, "br0", l.ControllerIP(), cfg.Control.Bits()); err != nil {
		return nil, err
	}
	for i := 1; i <= cfg.Hosts; i++ {
		h := &Host{
			Name:        fmt.Sprintf("h%d", i),
			UnderlayIP:  nth(cfg.Underlay, 10+i),
			ControlIP:   nth(cfg.Control, 10+i),
			UnderlayDev: "ul0",
		}
		h.Netns = cfg.Prefix + "-" + h.Name
		if h.Path, err = testnet.CreateNamed(cfg.NetnsDir, h.Netns); err != nil {
			return nil, err
		}
		l.hosts = append(l.hosts, h)
		if err := l.attach(ul, h); err != nil {
			return nil, fmt.Errorf("attach host %s: %w", h.Name, err)
		}
	}
	l.log.Info("lab built", "prefix", cfg.Prefix, "hosts", cfg.Hosts, "controller", l.ControllerIP())
	return l, nil
}

// nth returns the i-th address of p.
func nth(p netip.Prefix, i int) netip.Addr {
	b := p.Masked().Addr().As4()
	b[3] += byte(i)
	return netip.AddrFrom4(b)
}

func (l *Lab) addRootLink(ul *netlink.Handle) error {
	fd, err := netns.GetFromPath(l.ulPath)
	if err != nil {
		return fmt.Errorf("open underlay netns: %w", err)
	}
	defer fd.Close()
	root, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink in the root netns: %w", err)
	}
	defer root.Close()
	name := l.cfg.rootLinkName()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      "ctl",
		PeerNamespace: netlink.NsFd(fd),
	}
	if err := root.LinkAdd(veth); err != nil {
		return fmt.Errorf("add the root link %s: %w", name, err)
	}
	br, err := ul.LinkByName("br0")
	if err != nil {
		return fmt.Errorf("underlay bridge: %w", err)
	}
	peer, err := ul.LinkByName("ctl")
	if err != nil {
		return fmt.Errorf("root link peer: %w", err)
	}
	if err := ul.LinkSetMaster(peer, br); err != nil {
		return fmt.Errorf("attach the root link to the bridge: %w", err)
	}
	if err := setUp(ul, "ctl"); err != nil {
		return err
	}
	if err := addAddr(root, name, l.ControllerIP(), l.cfg.Control.Bits()); err != nil {
		return err
	}
	return setUp(root, name)
}

func (l *Lab) attach(ul *netlink.Handle, h *Host) error {
	fd, err := netns.GetFromPath(h.Path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer fd.Close()
	br, err := ul.LinkByName("br0")
	if err != nil {
		return fmt.Errorf("underlay bridge: %w", err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: h.Name, MasterIndex: br.Attrs().Index},
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
		return fmt.Errorf("netlink in %s: %w", h.Netns, err)
	}
	defer hh.Close()
	if err := addAddr(hh, h.UnderlayDev, h.UnderlayIP, l.cfg.Underlay.Bits()); err != nil {
		return err
	}
	if err := addAddr(hh, h.UnderlayDev, h.ControlIP, l.cfg.Control.Bits()); err != nil {
		return err
	}
	return setUp(hh, "lo", h.UnderlayDev)
}

func handleAt(path string) (*netlink.Handle, error) {
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
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
		link, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
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
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
	if err := h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("add %s/%d to %s: %w", ip, bits, dev, err)
	}
	return nil
}

// Prefix is the lab's name prefix (also the agents' --netns-prefix).
func (l *Lab) Prefix() string { return l.cfg.Prefix }

// ControllerIP is the address agents reach the controller on.
func (l *Lab) ControllerIP() netip.Addr { return nth(l.cfg.Control, 1) }

// UnderlayPath is the path of the underlay namespace (where, without a
// root link, the controller runs).
func (l *Lab) UnderlayPath() string { return l.ulPath }

// Hosts returns the lab's hosts.
func (l *Lab) Hosts() []*Host { return l.hosts }

// Host returns the host named name, or nil.
func (l *Lab) Host(name string) *Host {
	for _, h := range l.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Namespaces lists the namespaces whose name starts with the lab's prefix
// (the lab's own and those its agents made).
func (l *Lab) Namespaces() ([]string, error) {
	return listPrefix(l.cfg.NetnsDir, l.cfg.Prefix+"-")
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

// AgentConfig says how to run `weft agent` on a lab host.
type AgentConfig struct {
	// Binary is the weft binary (required).
	Binary string
	// Controller is the southbound address (host:port); API the REST URL.
	Controller string
	API        string
	// ClusterKeyFile is the controller's cluster key file.
	ClusterKeyFile string
	// StateDir is the agent's state directory.
	StateDir string
	// Log receives the agent's stderr (JSON logs); nil discards them.
	Log io.Writer
	// LogLevel is --log-level (default info).
	LogLevel string
	// Args are appended to the command line.
	Args []string
}

// Agent is a `weft agent --datapath linux` process in a host namespace.
type Agent struct {
	Host *Host
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartAgent starts `weft agent --datapath linux` inside h's namespace.
// Close stops it if it is still running.
func (l *Lab) StartAgent(h *Host, c AgentConfig) (*Agent, error) {
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	args := []string{"agent", "--datapath", "linux", "--host", h.Name, "--underlay-ip", h.UnderlayIP.String(),
		"--underlay-dev", h.UnderlayDev, "--controller", c.Controller, "--cluster-key-file", c.ClusterKeyFile,
		"--state-dir", c.StateDir, "--netns-prefix", l.cfg.Prefix, "--log-level", c.LogLevel}
	if c.API != "" {
		args = append(args, "--api", c.API)
	}
	args = append(args, c.Args...)
	cmd := exec.Command(c.Binary, args...)
	cmd.Stdout = c.Log
	cmd.Stderr = c.Log
	// The agent dies with the thread that forked it, i.e. with this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	if err := StartIn(h.Path, cmd); err != nil {
		return nil, fmt.Errorf("start the agent of %s: %w", h.Name, err)
	}
	a := &Agent{Host: h, cmd: cmd, done: make(chan struct{})}
	go func() {
		a.err = cmd.Wait()
		close(a.done)
	}()
	l.agents = append(l.agents, a)
	l.log.Info("agent started", "host", h.Name, "pid", cmd.Process.Pid)
	return a, nil
}

// StartIn starts cmd inside the network namespace at nsPath: the child
// inherits the namespace of the thread that forks it.
func StartIn(nsPath string, cmd *exec.Cmd) error {
	return testnet.Do(nsPath, cmd.Start)
}

// Pid is the agent's process ID.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Done is closed when the process has exited; Err then says how.
func (a *Agent) Done() <-chan struct{} { return a.done }

// Err is the process's exit error; valid after Done.
func (a *Agent) Err() error { return a.err }

// Kill sends SIGKILL (a crash) and waits for the exit.
func (a *Agent) Kill() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Kill()
	<-a.done
}

// Stop sends SIGTERM and waits up to timeout for the exit, then kills.
func (a *Agent) Stop(timeout time.Duration) error {
	select {
	case <-a.done:
		return nil
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		return nil
	case <-time.After(timeout):
		a.Kill()
		return fmt.Errorf("agent of %s did not stop within %s of SIGTERM; killed", a.Host.Name, timeout)
	}
}

// Teardown removes the data plane of host h's agent (its namespaces,
// devices, routes) through the linux driver, as `weft agent` would. Stop
// the agent first.
func (l *Lab) Teardown(ctx context.Context, h *Host) error {
	d, err := linux.New(ctx, linux.Config{HostName: h.Name, Prefix: l.cfg.Prefix, HostNetns: h.Path, NetnsDir: l.cfg.NetnsDir, Logger: l.cfg.Logger})
	if err != nil {
		return fmt.Errorf("tear down %s: %w", h.Name, err)
	}
	terr := d.Teardown(ctx)
	return errors.Join(terr, d.Close())
}

// StopAgents stops every agent still running (SIGTERM, then SIGKILL).
func (l *Lab) StopAgents() error {
	l.mu.Lock()
	agents := l.agents
	l.mu.Unlock()
	var errs []error
	for _, a := range agents {
		errs = append(errs, a.Stop(10*time.Second))
	}
	return errors.Join(errs...)
}

// Close stops the agents, tears down their data planes and deletes, by
// name, every namespace with the lab's prefix and the root link. It is
// idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	errs := []error{l.StopAgents()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range l.hosts {
		errs = append(errs, l.Teardown(ctx, h))
	}
	errs = append(errs, Sweep(l.cfg.NetnsDir, l.cfg.Prefix))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab cleanup: %w", err)
	}
	l.log.Info("lab removed", "prefix", l.cfg.Prefix)
	return nil
}

// Sweep deletes, by name, the root link "<prefix>-ctl" and every namespace
// whose name starts with "<prefix>-" (a lab's and its agents'). Agent
// namespaces are deleted before host namespaces; deleting a namespace
// deletes the devices in it.
func Sweep(netnsDir, prefix string) error {
	var errs []error
	if root, err := netlink.NewHandle(); err == nil {
		if link, err := root.LinkByName(prefix + "-ctl"); err == nil {
			if err := root.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("delete link %s: %w", prefix+"-ctl", err))
			}
		}
		root.Close()
	}
	names, err := listPrefix(netnsDir, prefix+"-")
	if err != nil {
		return err
	}
	// Longest names first: "<prefix>-h1-v100" before "<prefix>-h1".
	for pass := 0; pass < 2; pass++ {
		for _, name := range names {
			agentNS := strings.Count(strings.TrimPrefix(name, prefix+"-"), "-") > 0
			if agentNS == (pass == 0) {
				errs = append(errs, testnet.DeleteNamed(netnsDir, name))
			}
		}
	}
	return errors.Join(errs...)
}
