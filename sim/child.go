package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ChildCommand is the hidden weft subcommand that runs a child of a
// simulation (RunChild). Config.Exec names a binary that has it.
const ChildCommand = "sim-child"

// Child roles.
const (
	roleReplica = "replica"
	roleAgents  = "agents"
)

// childHeader is the first line a child reads on its stdin.
type childHeader struct {
	Role    string        `json:"role"`
	Replica *replicaSpec  `json:"replica,omitempty"`
	Agents  *agentsSpec   `json:"agents,omitempty"`
	Debug   bool          `json:"debug,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// message is one line a child writes on its stdout.
type message struct {
	T string `json:"t"` // ready, stats, applied, learned, forgot, error

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

	Err string `json:"err,omitempty"`
}

// emitter writes messages as JSON lines, from any goroutine.
type emitter struct {
	mu  sync.Mutex
	enc *json.Encoder
	err error
}

func newEmitter(w io.Writer) *emitter { return &emitter{enc: json.NewEncoder(w)} }

func (e *emitter) emit(m *message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = e.enc.Encode(m)
	}
}

// RunChild runs one child of a simulation: it reads its header from in,
// then commands, one a line, until in closes, and writes JSON lines to
// out. The weft binary calls it from the hidden subcommand ChildCommand;
// it returns when in closes or ctx ends, after cleaning up.
func RunChild(ctx context.Context, in io.Reader, out io.Writer, logOut io.Writer) error {
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
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		// The parent closes our stdin to stop us (or dies, which closes it).
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
	})
	em := newEmitter(out)
	switch hdr.Role {
	case roleReplica:
		if hdr.Replica == nil {
			return errors.New("sim child: replica role without spec")
		}
		return runReplica(ctx, *hdr.Replica, cmds, em, logger)
	case roleAgents:
		if hdr.Agents == nil {
			return errors.New("sim child: agents role without spec")
		}
		return runAgents(ctx, *hdr.Agents, cmds, em, logger)
	}
	return fmt.Errorf("sim child: unknown role %q", hdr.Role)
}

// child is the parent's handle on a child, in a process or in-process.
type child struct {
	name string
	pid  int
	in   io.WriteCloser
	msgs chan message // closed when the child's output ends

	inMu   sync.Mutex
	wait   func() error
	stderr *tailBuffer
	done   chan struct{}
	err    error
}

// send writes one command line to the child.
func (c *child) send(cmd string) error {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		return fmt.Errorf("send to %s: %w", c.name, err)
	}
	return nil
}

// stop closes the child's stdin and waits for it to exit (killing a
// process that does not exit within grace).
func (c *child) stop(grace time.Duration) error {
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
}

// startChild starts a child: a process running exe ChildCommand, or (exe
// "") a goroutine running RunChild in this process.
func startChild(ctx context.Context, name, exe string, hdr childHeader, logOut io.Writer) (*child, error) {
	hb, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, msgs: make(chan message, 4096), done: make(chan struct{}), stderr: &tailBuffer{max: 8 << 10}}
	var out io.ReadCloser
	if exe == "" {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		c.in, out, c.pid = inW, outR, os.Getpid()
		errc := make(chan error, 1)
		go func() {
			err := RunChild(context.WithoutCancel(ctx), inR, outW, logOut)
			_ = inR.Close()
			_ = outW.Close()
			errc <- err
		}()
		c.wait = func() error { return <-errc }
	} else {
		cmd := exec.Command(exe, ChildCommand)
		cmd.Stderr = io.MultiWriter(c.stderr, logOut)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if c.in, err = cmd.StdinPipe(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		if out, err = cmd.StdoutPipe(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s (%s %s): %w", name, exe, ChildCommand, err)
		}
		c.pid = cmd.Process.Pid
		c.wait = cmd.Wait
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m message
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				continue
			}
			c.msgs <- m
		}
		_, _ = io.Copy(io.Discard, out)
		close(c.msgs)
		c.err = c.wait()
		if c.err != nil {
			c.err = fmt.Errorf("%s: %w (stderr: %s)", name, c.err, strings.TrimSpace(c.stderr.String()))
		}
	}()
	if err := c.send(string(hb)); err != nil {
		_ = c.stop(time.Second)
		return nil, err
	}
	return c, nil
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
