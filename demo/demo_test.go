package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExampleInSync(t *testing.T) {
	want, err := os.ReadFile("../examples/two-tenants.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, Example()) {
		t.Errorf("demo/two-tenants.yaml differs from examples/two-tenants.yaml: copy it again")
	}
}

func TestExampleFor(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hosts int
		// want: host objects, then endpoint -> host.
		wantHosts []string
		wantEPs   map[string]string
	}{
		{"three hosts as in the example", 3, []string{"h1/192.0.2.11", "h2/192.0.2.12", "h3/192.0.2.13"},
			map[string]string{"acme/web-1": "h1", "acme/web-2": "h2", "acme/db-1": "h3", "globex/etl-1": "h1", "globex/etl-2": "h3", "globex/wh-1": "h2"}},
		{"two hosts: h3's endpoints move to h1", 2, []string{"h1/192.0.2.11", "h2/192.0.2.12"},
			map[string]string{"acme/web-1": "h1", "acme/web-2": "h2", "acme/db-1": "h1", "globex/etl-1": "h1", "globex/etl-2": "h1", "globex/wh-1": "h2"}},
		{"four hosts: one more Host", 4, []string{"h4/192.0.2.14", "h1/192.0.2.11", "h2/192.0.2.12", "h3/192.0.2.13"},
			map[string]string{"acme/web-1": "h1", "acme/web-2": "h2", "acme/db-1": "h3", "globex/etl-1": "h1", "globex/etl-2": "h3", "globex/wh-1": "h2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lab []*testnet.Host
			for i := 1; i <= tc.hosts; i++ {
				lab = append(lab, &testnet.Host{Name: fmt.Sprintf("h%d", i), UnderlayIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})})
			}
			objs, err := exampleFor(lab)
			if err != nil {
				t.Fatal(err)
			}
			var hosts []string
			eps := map[string]string{}
			for _, o := range objs {
				switch x := o.(type) {
				case *apiv1.Host:
					hosts = append(hosts, x.Metadata.Name+"/"+x.Spec.UnderlayIP)
				case *apiv1.Endpoint:
					eps[x.Metadata.Tenant+"/"+x.Metadata.Name] = x.Spec.Host
				}
			}
			if diff := cmp.Diff(tc.wantHosts, hosts); diff != "" {
				t.Errorf("hosts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantEPs, eps); diff != "" {
				t.Errorf("endpoint hosts (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRunCleansUpAfterFailure makes the demo fail half-way (the agent
// binary does not exist) and checks that nothing it made is left.
func TestRunCleansUpAfterFailure(t *testing.T) {
	nettest.RequireRoot(t)
	const prefix = "wftdfail"
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Run(ctx, Config{Binary: "/nonexistent/weft", NoWait: true, Prefix: prefix, APIPort: 17543, AgentPort: 17544, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "start the agent of h1") {
		t.Fatalf("Run = %v, want an error starting the agent; output:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "cleaning up") {
		t.Errorf("no cleanup announced:\n%s", out.String())
	}
	if left, _ := filepath.Glob(filepath.Join(netnsfile.DefaultDir, prefix+"-*")); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if _, err := netlink.LinkByName(prefix + "-ctl"); err == nil {
		t.Errorf("link %s-ctl left", prefix)
	}
}

// TestLabClose starts a stand-in agent (a script that sleeps) on a lab
// without a root link: Close stops it and removes every namespace, a second
// Close is a no-op, and StartAgent after Close fails.
func TestLabClose(t *testing.T) {
	nettest.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "agent.sh")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	lab, err := NewLab(LabConfig{Net: testnet.Options{Prefix: testnet.DefaultPrefix(), Hosts: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	if diff := cmp.Diff([]string{"h1", "h2"}, []string{lab.Host(0).Name, lab.Host(1).Name}); diff != "" {
		t.Errorf("host names (-want +got):\n%s", diff)
	}
	a, err := lab.StartAgent(lab.HostByName("h1"), AgentConfig{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	default:
		t.Error("agent still running after Close")
	}
	if left, _ := lab.Names(); len(left) > 0 {
		t.Errorf("left after Close: %v", left)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := lab.StartAgent(lab.HostByName("h2"), AgentConfig{Binary: bin}); !errors.Is(err, lifecycle.ErrClosed) {
		t.Errorf("StartAgent after Close: %v, want lifecycle.ErrClosed", err)
	}
}
