package demo

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/testnet"
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
			cfg := LabConfig{Prefix: "x", Hosts: tc.hosts}.withDefaults()
			lab := &Lab{cfg: cfg}
			for i := 1; i <= tc.hosts; i++ {
				lab.hosts = append(lab.hosts, &Host{Name: "h" + string(rune('0'+i)), UnderlayIP: nth(cfg.Underlay, 10+i)})
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

func TestLabConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  LabConfig
		want string // substring of the error; "" for none
	}{
		{"defaults", LabConfig{Prefix: "wftdemo", RootLink: true}, ""},
		{"no prefix", LabConfig{}, "prefix"},
		{"prefix too long for the root link", LabConfig{Prefix: "wftt123456r0a0b", RootLink: true}, "too long"},
		{"long prefix without root link", LabConfig{Prefix: "wftt123456r0a0b"}, ""},
		{"overlapping subnets", LabConfig{Prefix: "x", Control: netip.MustParsePrefix("192.0.2.0/25")}, "distinct"},
		{"too many hosts", LabConfig{Prefix: "x", Hosts: 201}, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tc.want == "") != (err == nil) || !strings.Contains(got, tc.want) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// TestLabBuildAndClose builds a lab without a root link: the hosts reach
// each other on the underlay and the controller address on the control
// subnet, and Close removes every namespace.
func TestLabBuildAndClose(t *testing.T) {
	testnet.RequireRoot(t)
	prefix := testnet.DefaultPrefix()
	lab, err := NewLab(LabConfig{Prefix: prefix, Hosts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	names, err := lab.Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{prefix + "-h1", prefix + "-h2", prefix + "-ul"}, names); diff != "" {
		t.Errorf("namespaces (-want +got):\n%s", diff)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h1, h2 := lab.Host("h1"), lab.Host("h2")
	for _, dst := range []netip.Addr{h2.UnderlayIP, lab.ControllerIP(), h2.ControlIP} {
		if _, err := testnet.Ping(ctx, h1.Path, dst); err != nil {
			t.Errorf("h1 -> %s: %v", dst, err)
		}
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := lab.Namespaces(); len(left) > 0 {
		t.Errorf("left after Close: %v", left)
	}
}

// TestRunCleansUpAfterFailure makes the demo fail half-way (the agent
// binary does not exist) and checks that nothing it made is left.
func TestRunCleansUpAfterFailure(t *testing.T) {
	testnet.RequireRoot(t)
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
	if left, _ := listPrefix(testnet.DefaultDir, prefix+"-"); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if _, err := netlink.LinkByName(prefix + "-ctl"); err == nil {
		t.Errorf("link %s-ctl left", prefix)
	}
}
