package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
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
	return startControllerBin(t, binary(t), dataDir, addr, agentAddr)
}

// startControllerBin runs `bin controller`.
func startControllerBin(t *testing.T, bin, dataDir, addr, agentAddr string) *controllerProc {
	t.Helper()
	p := &controllerProc{t: t, addr: addr, agentAddr: agentAddr, dataDir: dataDir, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "controller", "--data-dir", dataDir, "--api-listen", addr, "--agent-listen", p.agentAddr,
		"--metrics-listen=", "--log-level", "warn")
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start controller: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The controller writes its admin.config once it serves.
		err := readyz(p.config(), nil)
		if err == nil {
			return p
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

// readyz asks the controller of the admin.config at path for /readyz (over
// hc's transport if not nil).
func readyz(path string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) error {
	cl, err := adminClient(path, dial)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cl.Raw(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s", resp.Status)
	}
	return nil
}

// adminClient is a client of the cluster-admin context a controller wrote
// to path, dialling with dial if not nil.
func adminClient(path string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*client.Client, error) {
	s, err := clientconfig.LoadSettings(path)
	if err != nil {
		return nil, err
	}
	opts := []client.Option{client.WithTimeout(10 * time.Second)}
	if dial != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CA)
		hc := &http.Client{Transport: &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: pool}}}
		opts = append(opts, client.WithHTTPClient(hc), client.WithToken(s.Token))
		return client.New(s.Server, opts...)
	}
	return s.NewClient(opts...)
}

// config is the controller's admin.config.
func (p *controllerProc) config() string { return filepath.Join(p.dataDir, "admin.config") }

// client is a cluster-admin client of the controller.
func (p *controllerProc) client() *client.Client {
	p.t.Helper()
	cl, err := adminClient(p.config(), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { cl.Close() })
	return cl
}

func (p *controllerProc) url() string { return "https://" + p.addr }

// bootstrap writes a bootstrap token for host and the CA into dir and
// returns the agent flags that enrol with them.
func bootstrap(t *testing.T, cl *client.Client, host, dir string) []string {
	t.Helper()
	tok, err := cl.CreateToken(context.Background(), client.TokenRequest{Role: "bootstrap", Host: host})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := cl.CA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tf, cf := filepath.Join(dir, host+".token"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(tf, []byte(tok.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	// Replaced whole: an agent enrolled before may be reading it (one dir
	// for several hosts).
	if err := os.WriteFile(cf+"."+host, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cf+"."+host, cf); err != nil {
		t.Fatal(err)
	}
	return []string{"--bootstrap-token-file", tf, "--ca-file", cf}
}

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

// weft runs the CLI as the controller's cluster admin and returns stdout,
// stderr and the exit code.
func weft(t *testing.T, ctl *controllerProc, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), "WEFT_CONFIG="+ctl.config())
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
