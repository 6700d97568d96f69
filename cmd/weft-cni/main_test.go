package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/internal/buildinfo"
)

// TestVersion: `weft-cni version` prints what `weft version --client`
// prints of its binary.
func TestVersion(t *testing.T) {
	bi := buildinfo.Read()
	for _, tc := range []struct {
		name    string
		args    []string
		want    string // text; "" for JSON
		wantErr string
	}{
		{"text", nil, "weft-cni " + bi.String() + "\n", ""},
		{"text by name", []string{"-o", "text"}, "weft-cni " + bi.String() + "\n", ""},
		{"json", []string{"-o", "json"}, "", ""},
		{"bad format", []string{"-o", "yaml"}, "", `want text or json`},
		{"extra argument", []string{"now"}, "", `unexpected argument "now"`},
		{"unknown flag", []string{"--client"}, "", "not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := printVersion(tc.args, &out)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("printVersion(%q) = %v, want an error with %q", tc.args, err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("printVersion(%q): %v", tc.args, err)
			case tc.want != "":
				if diff := cmp.Diff(tc.want, out.String()); diff != "" {
					t.Errorf("output (-want +got):\n%s", diff)
				}
			default:
				var got buildinfo.Info
				if err := json.Unmarshal(out.Bytes(), &got); err != nil {
					t.Fatalf("output %q: %v", out.String(), err)
				}
				if diff := cmp.Diff(bi, got); diff != "" {
					t.Errorf("JSON (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestPluginImports keeps the plugin's start short: the runtime execs it
// for every CNI call, so what it links and initializes is part of every
// ADD. It may import the CNI library's skel and types, the protocol to the
// agent (cnirpc) and buildinfo, and nothing heavy: no net/http (with
// crypto/tls and x509 it doubled the binary and made its start about a
// quarter longer), no API client, etcd, metrics, YAML or CLI framework,
// no netlink.
func TestPluginImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/weftnet/weft/cmd/weft-cni").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	ours := []string{
		"github.com/weftnet/weft/cmd/weft-cni",
		"github.com/weftnet/weft/agent/cnirpc",
		"github.com/weftnet/weft/internal/buildinfo",
	}
	heavy := []string{
		"net/http", "crypto/tls", "crypto/x509", "compress/", "log/slog", "text/template", "html/",
		"github.com/prometheus/", "go.etcd.io/", "google.golang.org/", "gopkg.in/", "sigs.k8s.io/",
		"github.com/spf13/", "github.com/vishvananda/netlink", "golang.org/x/net/",
	}
	var bad []string
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(pkg, "github.com/weftnet/weft/") && !slices.Contains(ours, pkg):
			bad = append(bad, pkg)
		case slices.ContainsFunc(heavy, func(h string) bool { return pkg == h || strings.HasSuffix(h, "/") && strings.HasPrefix(pkg, h) }):
			bad = append(bad, pkg)
		}
	}
	if len(bad) > 0 {
		t.Errorf("weft-cni imports %d packages it must not (they slow its start; see the test's comment):\n%s", len(bad), strings.Join(bad, "\n"))
	}
}
