// Package nettest is the testing side of package testnet: it builds a
// test data centre for a test and removes it when the test ends. It
// imports package testing, so only tests may import it (the weft binary
// must not link testing; cmd/weft checks).
package nettest

import (
	"os"
	"testing"

	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and VXLAN devices")
	}
}

// New builds the data centre (testnet.Build), skipping the test unless it
// runs as root. It first sweeps leftovers of crashed runs
// (testnet.Sweep), and registers a cleanup that closes the Net: it
// deletes, by name, everything made with its prefix, also when the test
// failed.
func New(t testing.TB, o testnet.Options) *testnet.Net {
	t.Helper()
	RequireRoot(t)
	dir := o.Dir
	if dir == "" {
		dir = netnsfile.DefaultDir
	}
	if removed, err := testnet.Sweep(dir); err != nil {
		t.Logf("testnet: sweep: %v", err)
	} else if len(removed) > 0 {
		t.Logf("testnet: swept %d namespaces of crashed runs: %v", len(removed), removed)
	}
	n, err := testnet.Build(o)
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("testnet cleanup: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
