package testnet_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUnderlay(t *testing.T) {
	n := testnet.New(t, testnet.Options{Hosts: 3})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	names, err := n.Names()
	if err != nil {
		t.Fatal(err)
	}
	p := n.Prefix()
	if diff := cmp.Diff([]string{p + "-h0", p + "-h1", p + "-h2", p + "-ul"}, names); diff != "" {
		t.Errorf("namespaces (-want +got):\n%s", diff)
	}

	for _, from := range n.Hosts() {
		for _, to := range n.Hosts() {
			t.Run(from.Name+"->"+to.Name, func(t *testing.T) {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if _, err := testnet.Ping(pctx, from.Path, to.UnderlayIP); err != nil {
					t.Error(err)
				}
			})
		}
	}

	t.Run("tcp", func(t *testing.T) {
		addr := net.JoinHostPort(n.Host(1).UnderlayIP.String(), "7000")
		l, err := testnet.ListenTCP(n.Host(1).Path, addr)
		if err != nil {
			t.Fatal(err)
		}
		stop := testnet.ServeHello(l, "h1")
		defer stop()
		got, err := testnet.Hello(ctx, n.Host(0).Path, addr)
		if err != nil || got != "h1" {
			t.Errorf("Hello = %q, %v; want h1", got, err)
		}
	})

	t.Run("outside TEST-NET unreachable", func(t *testing.T) {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := testnet.Ping(pctx, n.Host(0).Path, n.Host(0).UnderlayIP.Next().Next().Next().Next().Next()); err == nil {
			t.Error("ping to an unused underlay address got a reply")
		}
	})

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if names, err := n.Names(); err != nil || len(names) != 0 {
		t.Errorf("after Close: namespaces %v, %v; want none", names, err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDoEntersAndRestores(t *testing.T) {
	n := testnet.New(t, testnet.Options{})
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := n.Host(0).Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hostNS, err := os.Stat(n.Host(0).Path)
	if err != nil {
		t.Fatal(err)
	}
	if inside == self {
		t.Errorf("Do ran in the caller's namespace %s", self)
	}
	if want := fmt.Sprintf("net:[%d]", inode(hostNS)); inside != want {
		t.Errorf("Do ran in %s, want %s", inside, want)
	}
	// A program run with Exec sees the host's interfaces.
	out, err := testnet.Exec(t.Context(), n.Host(0).Path, "cat", "/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "ul0:") {
		t.Errorf("Exec output has no ul0:\n%s", out)
	}
}

func TestAddNetns(t *testing.T) {
	n := testnet.New(t, testnet.Options{})
	path, err := n.AddNetns("c1")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(n.Dir(), n.Prefix()+"-c1"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}
	names, _ := n.Names()
	if !slices.Contains(names, n.Prefix()+"-c1") {
		t.Errorf("names %v lack c1", names)
	}
}

func TestSweep(t *testing.T) {
	testnet.RequireRoot(t)
	// A private directory: test processes running in parallel sweep the
	// default one.
	dir := t.TempDir()
	// pid 2147483646 cannot exist (pid_max is at most 2^22).
	dead := "wftt2147483646r0000-h0"
	live := fmt.Sprintf("wftt%dr0000-h0", os.Getpid())
	other := "wftexample-h0" // not a test prefix: never swept
	for _, name := range []string{dead, live, other} {
		if _, err := testnet.CreateNamed(dir, name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = testnet.DeleteNamed(dir, name) })
	}
	removed, err := testnet.Sweep(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, dead) || slices.Contains(removed, live) || slices.Contains(removed, other) {
		t.Errorf("Sweep removed %v; want %s and neither %s nor %s", removed, dead, live, other)
	}
	for name, want := range map[string]bool{dead: false, live: true, other: true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", name, err == nil, want)
		}
	}
}

func inode(fi os.FileInfo) uint64 { return fi.Sys().(*syscall.Stat_t).Ino }
