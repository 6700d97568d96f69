package testnet_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUnderlay(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 3})
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

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    testnet.Options
		want string // substring of the error; "" for none
	}{
		{"defaults", testnet.Options{}, ""},
		{"control and root link", testnet.Options{Prefix: "wftdemo", Hosts: 200, Control: netip.MustParsePrefix("198.51.100.0/24"), RootLink: true}, ""},
		{"prefix with a slash", testnet.Options{Prefix: "a/b"}, "prefix"},
		{"prefix too long for the root link", testnet.Options{Prefix: "wftt123456r0a0b", Control: netip.MustParsePrefix("198.51.100.0/24"), RootLink: true}, "too long"},
		{"long prefix without root link", testnet.Options{Prefix: "wftt123456r0a0b", Control: netip.MustParsePrefix("198.51.100.0/24")}, ""},
		{"root link without control", testnet.Options{RootLink: true}, "control subnet"},
		{"overlapping subnets", testnet.Options{Control: netip.MustParsePrefix("192.0.2.0/25")}, "overlap"},
		{"too many hosts", testnet.Options{Hosts: 245}, "too small"},
		{"control too small", testnet.Options{Hosts: 10, Control: netip.MustParsePrefix("198.51.100.0/28")}, "too small"},
		{"direct with 3 hosts", testnet.Options{Hosts: 3, Direct: true}, "exactly 2"},
		{"direct with control", testnet.Options{Hosts: 2, Direct: true, Control: netip.MustParsePrefix("198.51.100.0/24")}, "control"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
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

// TestControl builds a net with a control subnet on the underlay bridge
// and hosts numbered from 1: the hosts reach each other on the underlay,
// the controller's address and each other's control address, and Close
// removes every namespace.
func TestControl(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 2, FirstHost: 1, Control: netip.MustParsePrefix("198.51.100.0/24")})
	names, err := n.Names()
	if err != nil {
		t.Fatal(err)
	}
	p := n.Prefix()
	if diff := cmp.Diff([]string{p + "-h1", p + "-h2", p + "-ul"}, names); diff != "" {
		t.Errorf("namespaces (-want +got):\n%s", diff)
	}
	h1, h2 := n.HostByName("h1"), n.HostByName("h2")
	if h1 == nil || h2 == nil || n.HostByName("h0") != nil {
		t.Fatalf("HostByName h1, h2, h0 = %v, %v, %v", h1, h2, n.HostByName("h0"))
	}
	want := map[string]string{"h1": "192.0.2.11 198.51.100.11", "h2": "192.0.2.12 198.51.100.12", "controller": "198.51.100.1"}
	got := map[string]string{"h1": h1.UnderlayIP.String() + " " + h1.ControlIP.String(), "h2": h2.UnderlayIP.String() + " " + h2.ControlIP.String(),
		"controller": n.ControllerIP().String()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, dst := range []netip.Addr{h2.UnderlayIP, n.ControllerIP(), h2.ControlIP} {
		t.Run("h1->"+dst.String(), func(t *testing.T) {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if _, err := testnet.Ping(pctx, h1.Path, dst); err != nil {
				t.Error(err)
			}
		})
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := n.Names(); len(left) > 0 {
		t.Errorf("left after Close: %v", left)
	}
	if _, err := n.AddNetns("late"); !errors.Is(err, lifecycle.ErrClosed) {
		t.Errorf("AddNetns after Close: %v, want lifecycle.ErrClosed", err)
	}
}

func TestAddNetns(t *testing.T) {
	n := nettest.New(t, testnet.Options{})
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
	nettest.RequireRoot(t)
	// A private directory: test processes running in parallel sweep the
	// default one.
	dir := t.TempDir()
	// pid 2147483646 cannot exist (pid_max is at most 2^22).
	dead := "wftt2147483646r0000-h0"
	live := fmt.Sprintf("wftt%dr0000-h0", os.Getpid())
	other := "wftexample-h0" // not a test prefix: never swept
	for _, name := range []string{dead, live, other} {
		if _, err := netnsfile.Create(dir, name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netnsfile.Delete(dir, name) })
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

// TestServeEcho: the greeting, then each write echoed; stop ends the
// server and a connection still open.
func TestServeEcho(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := testnet.ServeEcho(l, "hi\n")
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for _, want := range []string{"hi\n", "x\n", "yz\n"} {
		if want != "hi\n" {
			if _, err := io.WriteString(c, want); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := r.ReadString('\n'); got != want || err != nil {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	stop()
	if _, err := r.ReadString('\n'); err == nil {
		t.Errorf("the connection is still open after stop")
	}
}
