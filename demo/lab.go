package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// LabConfig shapes a Lab.
type LabConfig struct {
	// Net shapes the lab's namespaces. NewLab names the hosts h1..hN
	// (FirstHost 1) and gives the net a control subnet: Hosts defaults to
	// 3 and Control to 198.51.100.0/24 (TEST-NET-2). The prefix is also
	// the agents' --netns-prefix.
	Net testnet.Options
	// Datapath is the agents' --datapath: DatapathLinux (default) or
	// DatapathEBPF.
	Datapath string
	// Logger receives the lab's logs (default: discarded).
	Logger *slog.Logger
}

// The data planes a lab's agents may run.
const (
	DatapathLinux = "linux"
	DatapathEBPF  = "ebpf"
)

// Lab is a running lab data centre: a testnet.Net whose hosts run `weft
// agent --datapath linux` (or ebpf) processes. Close removes everything it
// made.
type Lab struct {
	*testnet.Net
	datapath string
	logger   *slog.Logger // for the drivers of Teardown
	log      *slog.Logger

	g      lifecycle.Group // guards Close and owns the agents' waiters
	mu     sync.Mutex
	agents []*Agent
}

// NewLab builds the lab's namespaces and links. On error it removes what it
// had made.
func NewLab(cfg LabConfig) (*Lab, error) {
	o := cfg.Net
	o.FirstHost = 1
	if o.Hosts <= 0 {
		o.Hosts = 3
	}
	if !o.Control.IsValid() {
		o.Control = netip.MustParsePrefix("198.51.100.0/24")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Datapath {
	case "":
		cfg.Datapath = DatapathLinux
	case DatapathLinux, DatapathEBPF:
	default:
		return nil, fmt.Errorf("lab: datapath %q: want %s or %s", cfg.Datapath, DatapathLinux, DatapathEBPF)
	}
	n, err := testnet.Build(o)
	if err != nil {
		return nil, errors.Join(err, n.Close())
	}
	l := &Lab{Net: n, datapath: cfg.Datapath, logger: cfg.Logger, log: cfg.Logger.With("subsystem", "demo/lab")}
	l.log.Info("lab built", "prefix", n.Prefix(), "hosts", len(n.Hosts()), "controller", n.ControllerIP(), "datapath", cfg.Datapath)
	return l, nil
}

// AgentConfig says how to run `weft agent` on a lab host.
type AgentConfig struct {
	// Binary is the weft binary (required).
	Binary string
	// Controller is the southbound address (host:port); API the REST URL.
	Controller string
	API        string
	// BootstrapTokenFile holds the host's bootstrap token (needed on the
	// agent's first start in StateDir) and CAFile the CA of the API.
	BootstrapTokenFile, CAFile string
	// StateDir is the agent's state directory.
	StateDir string
	// Log receives the agent's stderr (JSON logs); nil discards them.
	Log io.Writer
	// LogLevel is --log-level (default info).
	LogLevel string
	// Args are appended to the command line.
	Args []string
}

// Datapath is the agents' --datapath.
func (l *Lab) Datapath() string { return l.datapath }

// Agent is a `weft agent` process in a host namespace.
type Agent struct {
	Host *testnet.Host
	cmd  *exec.Cmd
	done chan struct{}
}

// StartAgent starts `weft agent --datapath <the lab's>` inside h's
// namespace. Close stops it if it is still running.
func (l *Lab) StartAgent(h *testnet.Host, c AgentConfig) (*Agent, error) {
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	args := []string{"agent", "--datapath", l.datapath, "--host", h.Name, "--underlay-ip", h.UnderlayIP.String(),
		"--underlay-dev", h.UnderlayDev, "--controller", c.Controller,
		"--state-dir", c.StateDir, "--netns-prefix", l.Prefix(), "--log-level", c.LogLevel}
	for _, f := range [][2]string{{"--api", c.API}, {"--bootstrap-token-file", c.BootstrapTokenFile}, {"--ca-file", c.CAFile}} {
		if f[1] != "" {
			args = append(args, f[0], f[1])
		}
	}
	args = append(args, c.Args...)
	cmd := exec.Command(c.Binary, args...)
	cmd.Stdout = c.Log
	cmd.Stderr = c.Log
	// The agent dies with the thread that forked it, i.e. with this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.g.Closed() {
		return nil, fmt.Errorf("start the agent of %s: %w", h.Name, lifecycle.ErrClosed)
	}
	// The child inherits the namespace of the thread that forks it.
	if err := netnsfile.Do(h.Path, cmd.Start); err != nil {
		return nil, fmt.Errorf("start the agent of %s: %w", h.Name, err)
	}
	a := &Agent{Host: h, cmd: cmd, done: make(chan struct{})}
	wait := func(context.Context) {
		_ = cmd.Wait()
		close(a.done)
	}
	// Close stops every agent, then waits for this goroutine.
	if !l.g.Go(wait) { // Close began after the check above
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("start the agent of %s: %w", h.Name, lifecycle.ErrClosed)
	}
	l.agents = append(l.agents, a)
	l.log.Info("agent started", "host", h.Name, "pid", cmd.Process.Pid)
	return a, nil
}

// Pid is the agent's process ID.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Done is closed when the process has exited.
func (a *Agent) Done() <-chan struct{} { return a.done }

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
// devices, routes; with ebpf its programs, maps and pins) through the
// lab's driver, as `weft agent` would. Stop the agent first.
func (l *Lab) Teardown(ctx context.Context, h *testnet.Host) error {
	var (
		d interface {
			Teardown(context.Context) error
			Close() error
		}
		err error
	)
	if l.datapath == DatapathEBPF {
		d, err = ebpf.New(ctx, ebpf.Config{HostName: h.Name, Prefix: l.Prefix(), HostNetns: h.Path, NetnsDir: l.Dir(), Logger: l.logger})
	} else {
		d, err = linux.New(ctx, linux.Config{HostName: h.Name, Prefix: l.Prefix(), HostNetns: h.Path, NetnsDir: l.Dir(), Logger: l.logger})
	}
	if err != nil {
		return fmt.Errorf("tear down %s: %w", h.Name, err)
	}
	terr := d.Teardown(ctx)
	return errors.Join(terr, d.Close())
}

// Close stops the agents (SIGTERM, then SIGKILL), tears down their data
// planes and closes the net, which deletes, by name, every namespace with
// the lab's prefix and the root link. It is idempotent.
func (l *Lab) Close() error {
	return l.g.Close(func() error {
		l.mu.Lock()
		agents := l.agents
		l.mu.Unlock()
		var errs []error
		for _, a := range agents {
			errs = append(errs, a.Stop(10*time.Second))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, h := range l.Hosts() {
			errs = append(errs, l.Teardown(ctx, h))
		}
		errs = append(errs, l.Net.Close())
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("lab cleanup: %w", err)
		}
		l.log.Info("lab removed", "prefix", l.Prefix())
		return nil
	})
}
