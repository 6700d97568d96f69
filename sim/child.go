package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/internal/lifecycle"
)

// ChildCommand is the hidden weft subcommand that runs a child process
// (RunChild); ChildConfig.Exe and Config.Exec name a binary that has it.
const ChildCommand = "sim-child"

// The simulation's own roles; ChildRoles adds others.
const (
	roleReplica = "replica"
	roleAgents  = "agents"
)

// ChildFunc runs one role in a child. It returns when its work is done, or
// when ctx ends: ctx is cancelled when the parent closes the child's stdin.
type ChildFunc func(ctx context.Context, c ChildIO) error

// ChildIO is what a role gets from RunChild.
type ChildIO struct {
	// Spec is the header's spec, for the role to decode.
	Spec json.RawMessage
	// Cmds are the parent's command lines; closed when stdin closes.
	Cmds <-chan string
	// Emit writes v to the parent as one JSON line with a "t" field
	// (ChildMessage); it may be called from any goroutine.
	Emit   func(v any)
	Logger *slog.Logger
}

// ChildRoles are the roles a binary's children run besides the
// simulation's own (replica, agents), by name.
type ChildRoles map[string]ChildFunc

// childHeader is the first line a child reads on its stdin.
type childHeader struct {
	Role  string          `json:"role"`
	Debug bool            `json:"debug,omitempty"`
	Spec  json.RawMessage `json:"spec"`
}

// message is one line a simulation child writes on its stdout.
type message struct {
	T string `json:"t"` // ready, started, stats, applied, policy, learned, forgot, crossing, error

	// ready (replica)
	PID   int      `json:"pid,omitempty"`
	API   string   `json:"api,omitempty"`
	Agent string   `json:"agent,omitempty"`
	Etcd  []string `json:"etcd,omitempty"`

	// stats (agents); Seq echoes the command "report SEQ"
	Seq            string `json:"seq,omitempty"`
	Agents         int    `json:"agents,omitempty"`
	Connected      int    `json:"connected,omitempty"`
	Programmed     int    `json:"programmed,omitempty"`
	HeartbeatsSent uint64 `json:"hbSent,omitempty"`
	HeartbeatAcks  uint64 `json:"hbAcks,omitempty"`
	LookupQueries  uint64 `json:"lookupQueries,omitempty"`
	AnswersFound   uint64 `json:"answersFound,omitempty"`
	AnswersMissing uint64 `json:"answersMissing,omitempty"`
	Invalidations  uint64 `json:"invalidations,omitempty"`
	StreamLost     uint64 `json:"streamLost,omitempty"`
	StreamFailed   uint64 `json:"streamFailed,omitempty"`
	StreamRefused  uint64 `json:"streamRefused,omitempty"`
	// LastStreamErr is one agent's latest config-stream error (a sample).
	LastStreamErr    string `json:"lastStreamErr,omitempty"`
	StartedAt        int64  `json:"startedAt,omitempty"`        // unix ns: the agents were started
	LastProgrammedAt int64  `json:"lastProgrammedAt,omitempty"` // unix ns: the latest first-programmed time

	// applied, learned, forgot (events)
	Host     int    `json:"host,omitempty"`
	ID       string `json:"id,omitempty"`
	VNI      uint32 `json:"vni,omitempty"`
	IP       string `json:"ip,omitempty"`
	Underlay string `json:"underlay,omitempty"`
	At       int64  `json:"at,omitempty"` // unix ns

	// crossing (event): a traced probe for a host of another process
	Crossing *simdp.Crossing `json:"crossing,omitempty"`

	Err string `json:"err,omitempty"`
}

// emitter writes messages as JSON lines, from any goroutine.
type emitter struct {
	mu  sync.Mutex
	enc *json.Encoder
	err error
}

func newEmitter(w io.Writer) *emitter { return &emitter{enc: json.NewEncoder(w)} }

func (e *emitter) emit(m any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = e.enc.Encode(m)
	}
}

// RunChild runs one child process: it reads its header from in, runs the
// role the header names (the simulation's own or one of roles) with the
// command lines that follow, and writes the role's JSON lines to out and
// its logs to logOut. A binary calls it from the hidden subcommand
// ChildCommand. It returns when the role does: when its work is done, or
// when in or ctx ends.
func RunChild(ctx context.Context, in io.Reader, out, logOut io.Writer, roles ChildRoles) error {
	br := bufio.NewReaderSize(in, 64<<10)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("sim child: read header: %w", err)
	}
	var hdr childHeader
	if err := json.Unmarshal(line, &hdr); err != nil {
		return fmt.Errorf("sim child: decode header: %w", err)
	}
	level := slog.LevelWarn
	if hdr.Debug {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan string, 1024)
	// The reader ends when in does: the parent closes our stdin to stop us
	// (or dies, which closes it); an in-process child's in is closed after
	// RunChild returns.
	go func() {
		defer cancel()
		defer close(cmds)
		for {
			l, err := br.ReadString('\n')
			if l = strings.TrimSpace(l); l != "" {
				select {
				case cmds <- l:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	em := newEmitter(out)
	switch hdr.Role {
	case roleReplica:
		var spec replicaSpec
		if err := json.Unmarshal(hdr.Spec, &spec); err != nil {
			return fmt.Errorf("sim child: replica spec: %w", err)
		}
		return runReplica(ctx, spec, cmds, em, logger)
	case roleAgents:
		var spec agentsSpec
		if err := json.Unmarshal(hdr.Spec, &spec); err != nil {
			return fmt.Errorf("sim child: agents spec: %w", err)
		}
		return runAgents(ctx, spec, cmds, em, logger)
	}
	if run := roles[hdr.Role]; run != nil {
		return run(ctx, ChildIO{Spec: hdr.Spec, Cmds: cmds, Emit: em.emit, Logger: logger})
	}
	return fmt.Errorf("sim child: unknown role %q", hdr.Role)
}

// ChildMessage is one JSON line of a child: its type, the error of an
// "error" line, and the whole line for the role's own message type.
type ChildMessage struct {
	T    string          `json:"t"`
	Err  string          `json:"err,omitempty"`
	Line json.RawMessage `json:"-"`
}

// Decode decodes the whole line into v.
func (m ChildMessage) Decode(v any) error {
	if err := json.Unmarshal(m.Line, v); err != nil {
		return fmt.Errorf("decode %q message: %w", m.T, err)
	}
	return nil
}

// ChildConfig describes a child to start.
type ChildConfig struct {
	// Name is the child's name in errors.
	Name string
	// Exe is a binary with the hidden subcommand ChildCommand to run the
	// child in (one that reads the header and command lines from its stdin
	// and writes JSON lines to its stdout); "" runs RunChild in this
	// process, over pipes.
	Exe string
	// Role, Spec (encoded as JSON) and Debug make the header.
	Role  string
	Spec  any
	Debug bool
	// Roles are the roles besides the simulation's own that an in-process
	// child (Exe "") may run.
	Roles ChildRoles
	// Log receives the child's logs (default: discarded; the last 8 KiB of
	// a child process's stderr are kept for its error).
	Log io.Writer
}

// Child is a parent's handle on a running child, in a process or
// in-process. Close ends it.
type Child struct {
	name string
	pid  int
	in   io.WriteCloser
	msgs chan ChildMessage // closed when the child's output ends

	life   lifecycle.Group
	inMu   sync.Mutex
	wait   func() error
	stderr *tailBuffer
	done   chan struct{}
	err    error
}

// childGrace is how long Close waits for a child to exit before killing it.
const childGrace = 30 * time.Second

// StartChild starts a child and sends it its header: a process running
// cfg.Exe ChildCommand (killed if this process dies), or (Exe "") a
// goroutine running RunChild. ctx bounds the start only.
func StartChild(ctx context.Context, cfg ChildConfig) (*Child, error) {
	spec, err := json.Marshal(cfg.Spec)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	hdr, err := json.Marshal(childHeader{Role: cfg.Role, Debug: cfg.Debug, Spec: spec})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	logOut := cfg.Log
	if logOut == nil {
		logOut = io.Discard
	}
	c := &Child{name: cfg.Name, msgs: make(chan ChildMessage, 4096), done: make(chan struct{}), stderr: &tailBuffer{max: 8 << 10}}
	if _, err := c.life.Start(); err != nil {
		return nil, err
	}
	var out io.ReadCloser
	if cfg.Exe == "" {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		c.in, out, c.pid = inW, outR, os.Getpid()
		errc := make(chan error, 1)
		c.life.Go(func(context.Context) {
			err := RunChild(context.WithoutCancel(ctx), inR, outW, logOut, cfg.Roles)
			_ = inR.Close()
			_ = outW.Close()
			errc <- err
		})
		c.wait = func() error { return <-errc }
	} else {
		cmd := exec.Command(cfg.Exe, ChildCommand)
		cmd.Stderr = io.MultiWriter(c.stderr, logOut)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if c.in, err = cmd.StdinPipe(); err != nil {
			return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
		}
		if out, err = cmd.StdoutPipe(); err != nil {
			return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s (%s %s): %w", cfg.Name, cfg.Exe, ChildCommand, err)
		}
		c.pid = cmd.Process.Pid
		c.wait = cmd.Wait
	}
	c.life.Go(func(ctx context.Context) { c.read(ctx, out) })
	if err := c.Send(string(hdr)); err != nil {
		_ = c.stop(time.Second)
		return nil, err
	}
	return c, nil
}

// read forwards the child's JSON lines until its output ends (dropping
// them once Close has begun), then waits for its exit.
func (c *Child) read(ctx context.Context, out io.ReadCloser) {
	defer close(c.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		m := ChildMessage{Line: append(json.RawMessage(nil), sc.Bytes()...)}
		if json.Unmarshal(m.Line, &m) != nil || m.T == "" {
			continue // not one of ours
		}
		select {
		case c.msgs <- m:
		case <-ctx.Done():
		}
	}
	_, _ = io.Copy(io.Discard, out)
	close(c.msgs)
	c.err = c.wait()
	if c.err != nil {
		c.err = fmt.Errorf("%s: %w (stderr: %s)", c.name, c.err, strings.TrimSpace(c.stderr.String()))
	}
}

// Name returns the child's name.
func (c *Child) Name() string { return c.name }

// PID returns the child's process ID (this process's for an in-process child).
func (c *Child) PID() int { return c.pid }

// Messages returns the child's lines; the channel is closed when the
// child's output ends. The parent must drain it until Close.
func (c *Child) Messages() <-chan ChildMessage { return c.msgs }

// Done is closed when the child has exited; Err then tells how.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is the child's exit error, once Done is closed.
func (c *Child) Err() error { return c.err }

// Send writes one command line to the child.
func (c *Child) Send(cmd string) error {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return fmt.Errorf("send to %s: %w", c.name, err)
	}
	return nil
}

// Await waits up to timeout for a message of type t, dropping the others;
// an "error" message or the end of the child fails it.
func (c *Child) Await(ctx context.Context, t string, timeout time.Duration) (ChildMessage, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case <-ctx.Done():
			return ChildMessage{}, ctx.Err()
		case <-tm.C:
			return ChildMessage{}, fmt.Errorf("no %q from %s within %s", t, c.name, timeout)
		case m, ok := <-c.msgs:
			switch {
			case !ok:
				<-c.done
				return ChildMessage{}, fmt.Errorf("%s ended before %q: %w", c.name, t, c.err)
			case m.T == t:
				return m, nil
			case m.T == "error":
				return ChildMessage{}, fmt.Errorf("%s: %s", c.name, m.Err)
			}
		}
	}
}

// Close closes the child's stdin, which ends it, and waits for it to exit
// (killing a process that has not within 30 s). It returns the child's
// exit error; it is idempotent.
func (c *Child) Close() error { return c.stop(childGrace) }

func (c *Child) stop(grace time.Duration) error {
	return c.life.Close(func() error {
		c.inMu.Lock()
		_ = c.in.Close()
		c.inMu.Unlock()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-c.done:
		case <-t.C:
			if c.pid > 0 && c.pid != os.Getpid() {
				_ = syscall.Kill(c.pid, syscall.SIGKILL)
			}
			<-c.done
		}
		return c.err
	})
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
