package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// startAgent runs `weft agent --datapath sim` as a subprocess.
func startAgent(t *testing.T, ctl *controllerProc, host string) *exec.Cmd {
	t.Helper()
	args := append([]string{"agent", "--controller", ctl.agentAddr, "--host", host, "--datapath", "sim", "--api", ctl.url(),
		"--state-dir", filepath.Join(t.TempDir(), host), "--log-level", "warn"}, bootstrap(t, ctl.client(), host, t.TempDir())...)
	cmd := exec.Command(binary(t), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", host, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// eventually polls cond every 50 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached within %s; last state: %s", what, d, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentsProgramAndDie runs a controller and three sim agents as
// processes: the agents get their views (Ready endpoints, acknowledged view
// versions), heartbeat (Alive), and a killed agent's host becomes Dead and
// its endpoints Lost within the liveness bound.
func TestAgentsProgramAndDie(t *testing.T) {
	ctl := startControllerWithAgents(t, t.TempDir(), freePort(t), freePort(t))
	if _, errOut, code := weft(t, ctl, "", "apply", "-f", examplesFile(t)); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	agents := map[string]*exec.Cmd{}
	for _, h := range []string{"h1", "h2", "h3"} {
		agents[h] = startAgent(t, ctl, h)
	}
	cl := ctl.client()
	ctx := context.Background()
	hostStates := func() (map[string]apiv1.HostStatus, string) {
		hs, _, err := cl.List(ctx, apiv1.KindHost, "", "")
		out := map[string]apiv1.HostStatus{}
		for _, o := range hs {
			h := o.(*apiv1.Host)
			out[h.Metadata.Name] = h.Status
		}
		return out, fmt.Sprint(out, err)
	}
	phases := func() (map[string]string, string) {
		eps, _, err := cl.List(ctx, apiv1.KindEndpoint, "", "")
		out := map[string]string{}
		for _, o := range eps {
			e := o.(*apiv1.Endpoint)
			out[e.Metadata.Tenant+"/"+e.Metadata.Name+"@"+e.Spec.Host] = e.Status.Phase
		}
		return out, fmt.Sprint(out, err)
	}
	eventually(t, 20*time.Second, "all hosts Alive with an acknowledged view", func() (bool, string) {
		st, s := hostStates()
		for _, h := range []string{"h1", "h2", "h3"} {
			if st[h].Liveness != apiv1.LivenessAlive || st[h].ViewVersion == 0 || st[h].LastError != "" {
				return false, s
			}
		}
		return true, s
	})
	eventually(t, 20*time.Second, "all endpoints Ready", func() (bool, string) {
		ph, s := phases()
		for _, p := range ph {
			if p != apiv1.PhaseReady {
				return false, s
			}
		}
		return len(ph) == 6, s
	})

	_ = agents["h3"].Process.Kill()
	killed := time.Now()
	eventually(t, 10*time.Second, "h3 Dead", func() (bool, string) {
		st, s := hostStates()
		return st["h3"].Liveness == apiv1.LivenessDead && st["h1"].Liveness == apiv1.LivenessAlive, s
	})
	t.Logf("h3 reported Dead %s after kill -9", time.Since(killed).Round(10*time.Millisecond))
	eventually(t, 10*time.Second, "h3's endpoints Lost, others Ready", func() (bool, string) {
		ph, s := phases()
		for k, p := range ph {
			want := apiv1.PhaseReady
			if strings.HasSuffix(k, "@h3") {
				want = apiv1.PhaseLost
			}
			if p != want {
				return false, s
			}
		}
		return true, s
	})
	ctl.stop()
}
