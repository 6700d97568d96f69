package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
)

// runningAgent is a `weft agent --datapath sim` run in a goroutine.
type runningAgent struct {
	out, errOut agentTestBuffer
	cancel      context.CancelFunc
	done        chan error
}

func startAgentCmd(t *testing.T, args ...string) *runningAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	a := &runningAgent{cancel: cancel, done: make(chan error, 1)}
	go func() {
		a.done <- runAgentCmd(ctx, append(args, "--datapath", "sim", "--log-level", "warn"), &a.out, &a.errOut)
	}()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// stop ends the agent and returns its error (nil once stopped).
func (a *runningAgent) stop(t *testing.T) error {
	t.Helper()
	a.cancel()
	select {
	case err := <-a.done:
		a.done <- nil // later stops see a stopped agent
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop within 20s")
		return nil
	}
}

// failed waits for an agent that must fail at start-up and returns its error.
func (a *runningAgent) failed(t *testing.T) error {
	t.Helper()
	select {
	case err := <-a.done:
		a.done <- nil
		if err == nil {
			t.Fatal("the agent ended without an error")
		}
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("the agent still runs; stdout %q, stderr:\n%s", a.out.String(), a.errOut.String())
		return nil
	}
}

// TestAgentEnrol: an agent enrols once with a bootstrap token, keeps its
// credentials, and a restart without the token programs and reports
// endpoints with them; the token works once; an agent that does not trust
// the controller's CA (wrong --ca-file, wrong --ca-sha256) does not enrol.
func TestAgentEnrol(t *testing.T) {
	ctl, adminConfig := secureController(t, true)
	admin := &harness{t: t, env: map[string]string{clientconfig.EnvPath: adminConfig}}
	admin.ok("apply", "-f", "testdata/network.yaml")
	cl := adminClient(t, adminConfig)
	dir := t.TempDir()
	ca := writeFile(t, filepath.Join(dir, "ca.pem"), ctl.CACert())
	bootstrap := func(host string) (file, fingerprint string) {
		t.Helper()
		r := admin.run("token", "create", "--role", "bootstrap", "--host", host)
		if r.code != 0 {
			t.Fatalf("token create: %+v", r)
		}
		_, fp, ok := strings.Cut(r.stderr, "CA fingerprint sha256:")
		if !ok {
			t.Fatalf("token create --role bootstrap printed no CA fingerprint: %q", r.stderr)
		}
		fp, _, _ = strings.Cut(fp, "\n")
		return writeFile(t, filepath.Join(dir, host+".token"), []byte(r.stdout)), fp
	}
	// ready waits until every endpoint on h1 is Ready.
	ready := func(a *runningAgent, n int) {
		t.Helper()
		eventually(t, 30*time.Second, func() string {
			objs, _, err := cl.List(t.Context(), apiv1.KindEndpoint, "", "")
			var state []string
			for _, o := range objs {
				if e := o.(*apiv1.Endpoint); e.Status.Phase != apiv1.PhaseReady {
					state = append(state, e.Metadata.Name+"="+e.Status.Phase)
				}
			}
			if err == nil && len(objs) == n && len(state) == 0 {
				return ""
			}
			return fmt.Sprintf("endpoints not Ready: %v %v; agent stderr:\n%s", state, err, a.errOut.String())
		})
	}
	base := []string{"--controller", ctl.AgentAddr(), "--host", "h1", "--api", ctl.ServerURL()}
	state := filepath.Join(dir, "h1")
	tokenFile, fingerprint := bootstrap("h1")

	a := startAgentCmd(t, append(base, "--state-dir", state, "--ca-file", ca, "--bootstrap-token-file", tokenFile)...)
	ready(a, 2)
	if !strings.Contains(a.out.String(), "enrolled with "+ctl.ServerURL()) {
		t.Errorf("the agent did not say it enrolled: %q", a.out.String())
	}
	fi, err := os.Stat(filepath.Join(state, credentialsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, want mode 0600", err)
	}
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}

	// The bootstrap token works once.
	err = startAgentCmd(t, append(base, "--state-dir", filepath.Join(dir, "again"), "--ca-file", ca, "--bootstrap-token-file", tokenFile)...).failed(t)
	if apiv1.ReasonOf(err) != apiv1.ReasonUnauthorized {
		t.Errorf("a second enrolment with the token: %v, want 401", err)
	}

	// A restart uses the stored credentials: no token, no CA flag.
	a = startAgentCmd(t, "--controller", ctl.AgentAddr(), "--host", "h1", "--state-dir", state)
	if r := admin.runIn(t.Context(), "{apiVersion: weft/v1, kind: Endpoint, metadata: {name: new-1, tenant: acme}, spec: {subnet: a, host: h1}}", "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %+v", r)
	}
	ready(a, 3)
	if strings.Contains(a.out.String(), "enrolled") {
		t.Errorf("the restarted agent enrolled again: %q", a.out.String())
	}
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}

	// The CA: a wrong file or fingerprint refuses the controller.
	other, _ := secureController(t, false)
	wrongCA := writeFile(t, filepath.Join(dir, "other.pem"), other.CACert())
	h2 := []string{"--controller", ctl.AgentAddr(), "--host", "h2", "--underlay-ip", "192.0.2.12", "--api", ctl.ServerURL(), "--state-dir", filepath.Join(dir, "h2")}
	h2Token, _ := bootstrap("h2")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong CA file", []string{"--ca-file", wrongCA}, "its certificate is not signed by the CA this client trusts"},
		{"wrong fingerprint", []string{"--ca-sha256", strings.Repeat("ab", 32)}, "the pinned CA fingerprint does not match"},
		{"no CA", nil, "its certificate is not signed by the CA this client trusts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := startAgentCmd(t, append(append(h2, "--bootstrap-token-file", h2Token), tc.args...)...).failed(t)
			var ce *client.CertificateError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v (%T), want a CertificateError saying %q", err, err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "h2", credentialsFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("credentials written after a refused enrolment: %v", err)
			}
		})
	}
	// The token is still good after those: the right fingerprint enrols.
	a = startAgentCmd(t, append(h2, "--bootstrap-token-file", h2Token, "--ca-sha256", "sha256:"+fingerprint)...)
	eventually(t, 20*time.Second, func() string {
		if strings.Contains(a.out.String(), "enrolled with") {
			return ""
		}
		select {
		case err := <-a.done:
			a.done <- err
			t.Fatalf("h2 did not enrol with --ca-sha256: %v", err)
		default:
		}
		return fmt.Sprintf("h2 did not enrol with --ca-sha256: %q %s", a.out.String(), a.errOut.String())
	})
	h, err := cl.Get(t.Context(), apiv1.KindHost, "", "h2")
	if err != nil {
		t.Fatalf("the enrolment did not create Host h2: %v", err)
	}
	if got := h.GetObjectMeta().UID; !strings.Contains(a.out.String(), got) {
		t.Errorf("the agent's credentials are not bound to Host h2's UID %s: %q", got, a.out.String())
	}
}
