package ebpf_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// TestTeardownPastDeadline: a Teardown whose context ends before it is
// done (a host of many endpoints, a short deadline) still removes the
// pins, so no program or map stays in the kernel, and says the context
// ended.
func TestTeardownPastDeadline(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	d := startDriver(t, n, h)
	a := netip.MustParseAddr("10.0.1.10")
	if err := d.Set(t.Context(), &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1],
		Endpoints: []datapath.Endpoint{{ID: "acme/a", VNI: 100, Subnet: "a", IP: a, MAC: epMAC(100, a)}}}); err != nil {
		t.Fatal(err)
	}
	dir := ebpf.PinDir("/sys/fs/bpf", n.Prefix(), h.Name)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Teardown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Teardown with an ended context: %v, want context.Canceled", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s: %v, want it gone", dir, err)
	}
}
