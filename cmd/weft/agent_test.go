package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// agentTestBuffer is a buffer safe for a writer and a reader goroutine.
type agentTestBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *agentTestBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *agentTestBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// writeAgentCredentials writes the credentials of an enrolled host h1
// into a new state directory and returns it.
func writeAgentCredentials(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(hostCredentials{Host: "h1", Server: "https://127.0.0.1:1", Enrollment: client.Enrollment{
		HostUID: "uid-1", HostKey: hex.EncodeToString(bytes.Repeat([]byte{7}, wire.KeySize)), Token: "weft_1_x", CA: "",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, credentialsFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runAgentCmd(ctx context.Context, args []string, stdout, stderr *agentTestBuffer) error {
	cmd := newAgentCmd()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.ExecuteContext(ctx)
}

func TestAgentCmdUsage(t *testing.T) {
	enrolled := writeAgentCredentials(t)
	base := []string{"--controller", "127.0.0.1:1", "--host", "h1", "--datapath", "sim", "--state-dir", enrolled}
	without := func(flag string) []string {
		var out []string
		for i := 0; i < len(base); i += 2 {
			if base[i] != flag {
				out = append(out, base[i], base[i+1])
			}
		}
		return out
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.MkdirAll(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, credentialsFile), []byte(`{"host":"h1","hostKey":"abcd"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := t.TempDir()
	for _, tc := range []struct {
		name   string
		args   []string
		errHas string
	}{
		{"no controller", without("--controller"), "--controller is required"},
		{"no host", without("--host"), "--host is required"},
		{"not enrolled", append(without("--state-dir"), "--state-dir", fresh), "host h1 is not enrolled yet"},
		{"no API to enrol with", append(without("--state-dir"), "--state-dir", fresh, "--bootstrap-token-file", bad), "needs --bootstrap-token-file"},
		{"another host's credentials", append(without("--host"), "--host", "h2"), `holds the credentials of host "h1", not "h2"`},
		{"bad credentials", append(without("--state-dir"), "--state-dir", bad), "want 64 hex digits"},
		{"plain HTTP API", append(base, "--api", "http://127.0.0.1:1"), "is plain HTTP"},
		{"two CAs", append(without("--state-dir"), "--state-dir", fresh, "--api", "https://127.0.0.1:1", "--bootstrap-token-file", filepath.Join(bad, credentialsFile),
			"--ca-file", "x", "--ca-sha256", "y"), "give --ca-file or --ca-sha256, not both"},
		{"controller without port", append(without("--controller"), "--controller", "10.0.0.1"), "want host:port"},
		{"datapath", append(base, "--datapath", "dpdk"), `--datapath "dpdk": want linux, ebpf or sim`},
		{"underlay", append(base, "--underlay-ip", "192.0.2"), "is not an IP address"},
		{"udp", append(base, "--udp", "nowhere"), "--udp"},
		{"log level", append(base, "--log-level", "loud"), "--log-level"},
		{"positional argument", append(base, "extra"), "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut agentTestBuffer
			err := runAgentCmd(t.Context(), tc.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("weft agent %v = %v, want an error containing %q", tc.args, err, tc.errHas)
			}
		})
	}
}

func TestAgentCmdConfig(t *testing.T) {
	o := agentOptions{controllers: "10.0.0.1:7444, 10.0.0.2:7444", host: "h1", datapath: "sim"}
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.StreamAddrs, ","); got != "10.0.0.1:7444,10.0.0.2:7444" {
		t.Errorf("StreamAddrs = %s", got)
	}
	if cfg.UDPAddr != "10.0.0.1:7444" {
		t.Errorf("default UDPAddr = %s, want 10.0.0.1:7444", cfg.UDPAddr)
	}
	if cfg.StateDir != "/var/lib/weft/agent-h1" {
		t.Errorf("default StateDir = %s", cfg.StateDir)
	}
}

// TestAgentCmdHeadless runs `weft agent --datapath sim` with a persisted
// view and no controller: it programs the view, serves metrics and stops
// cleanly when its context ends.
func TestAgentCmdHeadless(t *testing.T) {
	dir := writeAgentCredentials(t)
	var res []wire.Resource
	for _, r := range []any{
		&view.Host{Name: "h1", HostID: 3, UnderlayIP: "192.0.2.11"},
		&view.VPC{Tenant: "acme", Name: "main", VNI: 100, Subnets: []view.Subnet{{Name: "a", CIDR: "10.0.1.0/24"}}},
		&view.Endpoint{Tenant: "acme", Name: "web", VNI: 100, Subnet: "a", IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a"},
	} {
		w, err := view.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, w)
	}
	v, err := state.New("h1").Apply(&wire.Delta{ToVersion: 12, Snapshot: true, Upserts: res})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Save(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errOut agentTestBuffer
	done := make(chan error, 1)
	go func() {
		done <- runAgentCmd(ctx, []string{"--controller", "127.0.0.1:1", "--udp", "127.0.0.1:9", "--host", "h1",
			"--datapath", "sim", "--state-dir", dir, "--metrics-listen", "127.0.0.1:0"}, &out, &errOut)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "programmed view version 12") {
		select {
		case err := <-done:
			t.Fatalf("weft agent ended early: %v\nstderr:\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("weft agent did not report the persisted view; stdout %q stderr:\n%s", out.String(), errOut.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The metrics endpoint serves the agent's metrics.
	var addr string
	for _, line := range strings.Split(errOut.String(), "\n") {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving metrics" {
			addr = rec.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no metrics server in the log:\n%s", errOut.String())
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "weft_agent_view_version 12") {
		t.Errorf("/metrics lacks weft_agent_view_version 12:\n%s", body)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("weft agent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("weft agent did not stop with its context")
	}
}
