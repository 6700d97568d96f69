package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// weftBinary builds cmd/weft once per test binary run.
var weftBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "weft-e2e-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "weft")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/weftnet/weft/cmd/weft").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func binary(t *testing.T) string {
	t.Helper()
	bin, err := weftBinary()
	if err != nil {
		t.Fatalf("build weft: %v", err)
	}
	return bin
}

// freePort returns a loopback address with a port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// controllerProc is a `weft controller` subprocess.
type controllerProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	// agentAddr is the southbound address (TCP stream and UDP).
	agentAddr string
	dataDir   string
	stderr    *bytes.Buffer
	done      chan struct{}
}

// startController runs `weft controller` on dataDir and waits until /readyz answers.
func startController(t *testing.T, dataDir, addr string) *controllerProc {
	t.Helper()
	return startControllerWithAgents(t, dataDir, addr, "127.0.0.1:0")
}

// startControllerWithAgents also sets the southbound address.
func startControllerWithAgents(t *testing.T, dataDir, addr, agentAddr string) *controllerProc {
	t.Helper()
	p := &controllerProc{t: t, addr: addr, agentAddr: agentAddr, dataDir: dataDir, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), "controller", "--data-dir", dataDir, "--api-listen", addr, "--agent-listen", p.agentAddr, "--log-level", "warn")
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start controller: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("controller exited during start-up: %s", p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller not ready after 30s: %v; stderr: %s", err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *controllerProc) url() string { return "http://" + p.addr }

// kill sends SIGKILL (a crash, no clean shutdown) and waits for the exit.
func (p *controllerProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *controllerProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Errorf("controller did not stop within 20s of SIGTERM")
		p.kill()
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// weft runs the CLI and returns stdout, stderr and the exit code.
func weft(t *testing.T, server string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), "WEFT_SERVER="+server)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run weft %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errOut.String(), code
}
