package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestNoTestingLinked fails when package testing is linked into the weft
// binary: test helpers belong in _test files or in packages only tests
// import (internal/testnet/nettest, internal/etcdtest, ...). It names the
// packages that import testing.
func TestNoTestingLinked(t *testing.T) {
	goCmd, err := exec.LookPath("go") // go test puts its own go first in PATH
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var importers []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 1 && slices.Contains(f[1:], "testing") {
			importers = append(importers, f[0])
		}
	}
	if len(importers) > 0 {
		t.Errorf("package testing is linked into weft; imported by %s", strings.Join(importers, ", "))
	}
}
