package linux_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// TestNetnsPool: endpoints without a namespace get one the driver made
// ahead (the pool refills itself), a restarted driver adopts the pool an
// earlier one left, and Close and Teardown leave no pooled namespace.
func TestNetnsPool(t *testing.T) {
	nettest.RequireRoot(t)
	tn := nettest.New(t, testnet.Options{})
	h := tn.Host(0)
	pooled := func() []string {
		t.Helper()
		ents, err := os.ReadDir(tn.Dir())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tn.Prefix()+"-"+h.Name+"-p") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	waitPooled := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for len(pooled()) != want {
			if time.Now().After(deadline) {
				t.Fatalf("pooled namespaces %v, want %d", pooled(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// An earlier driver's pool namespace, adopted.
	left := tn.Prefix() + "-" + h.Name + "-p7"
	if _, err := netnsfile.Create(tn.Dir(), left); err != nil {
		t.Fatal(err)
	}
	d := startDriver(t, tn, h, func(c *linux.Config) { c.NetnsPool = 2 })
	st := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1]}
	if len(pooled()) != 1 {
		t.Fatalf("a driver with no endpoint made pooled namespaces: %v", pooled())
	}
	for i := range 5 {
		ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(10 + i)})
		st.Endpoints = append(st.Endpoints, datapath.Endpoint{ID: fmt.Sprintf("acme/p%d", i), VNI: 100, Subnet: "a", IP: ip, MAC: epMAC(100, ip)})
		if err := d.Set(t.Context(), st); err != nil {
			t.Fatal(err)
		}
		s, ok := d.Status(st.Endpoints[i].ID)
		if !ok || !strings.HasPrefix(s.Netns, tn.Dir()+"/") {
			t.Fatalf("endpoint %d: status %+v", i, s)
		}
		// Its namespace has its interface and loopback up, whichever way
		// it was made.
		if err := netnsfile.Do(s.Netns, func() error {
			for _, name := range []string{"lo", s.IfName} {
				ifi, err := net.InterfaceByName(name)
				if err != nil {
					return err
				}
				if ifi.Flags&net.FlagUp == 0 {
					return fmt.Errorf("%s is down", name)
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
		waitPooled(2)
	}
	for _, n := range pooled() {
		if n == left {
			t.Errorf("the adopted %s is still in the pool after 5 attaches with room for 2", left)
		}
	}
	// Every endpoint kept a namespace of its own.
	seen := map[uint64]bool{}
	for _, e := range st.Endpoints {
		s, _ := d.Status(e.ID)
		fi, err := os.Stat(s.Netns)
		if err != nil {
			t.Fatal(err)
		}
		seen[fi.Sys().(*syscall.Stat_t).Ino] = true
	}
	if len(seen) != len(st.Endpoints) {
		t.Errorf("%d endpoints share %d namespaces", len(st.Endpoints), len(seen))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := pooled(); len(n) != 0 {
		t.Errorf("Close left pooled namespaces %v", n)
	}
	// Teardown (of a closed driver) removes what an earlier driver left.
	if _, err := netnsfile.Create(tn.Dir(), left); err != nil {
		t.Fatal(err)
	}
	if err := d.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := pooled(); len(n) != 0 {
		t.Errorf("Teardown left pooled namespaces %v", n)
	}
}
