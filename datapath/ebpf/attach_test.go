package ebpf_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// TestAttachTrustsWithinMapResync: a Set whose only change is a new
// endpoint, or one fewer, within MapResync of the last Set that read the
// host, makes or removes that endpoint alone (its policy included) and
// reads nothing else: a veth deleted behind the driver's back is not
// seen. A Set of another change reads the host and repairs it, as does
// the first Set after the interval.
func TestAttachTrustsWithinMapResync(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 1})
	h := n.Host(0)
	const resync = time.Hour
	d := startDriver(t, n, h, func(c *ebpf.Config) { c.MapResync = resync })
	ctx := t.Context()
	ep := func(id, ip string) datapath.Endpoint {
		a := netip.MustParseAddr(ip)
		return datapath.Endpoint{ID: id, VNI: 100, Subnet: "a", IP: a, MAC: epMAC(100, a), Identity: 100}
	}
	desired := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1],
		Endpoints: []datapath.Endpoint{ep("acme/a", "10.0.1.10"), ep("acme/b", "10.0.1.11")}}
	set := func(what string) datapath.Counts {
		t.Helper()
		before := d.Counts()
		if err := d.Set(ctx, desired); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return d.Counts().Sub(before)
	}
	set("first Set")
	netns := func(id string) string { st, _ := d.Status(id); return st.Netns }
	reach := func(from, to string, want bool) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := testnet.Ping(pctx, netns(from), netip.MustParseAddr(to))
		if got := err == nil; got != want {
			t.Errorf("ping %s -> %s: reached %v, want %v (%v)", from, to, got, want, err)
		}
	}
	reach("acme/a", "10.0.1.11", true)

	// Behind the driver's back: acme/b's veth goes.
	host := handleIn(t, h.Path)
	veth, err := host.LinkByName(ebpf.VethName("acme/b"))
	if err != nil {
		t.Fatal(err)
	}
	if err := host.LinkDel(veth); err != nil {
		t.Fatal(err)
	}

	// acme/c comes, isolated: nothing may reach it but identity 7.
	c := ep("acme/c", "10.0.1.12")
	c.Policy = &datapath.EndpointPolicy{IngressIsolated: true, Ingress: []datapath.Rule{{Name: "seven", Identities: []uint32{7}}}}
	desired.Endpoints = append(desired.Endpoints, c)
	w := set("attach acme/c")
	if w["link/add"] != 1 {
		t.Errorf("attaching acme/c added %d links, want 1 (its veth; acme/b's loss is not read): %s", w["link/add"], w)
	}
	reach("acme/c", "10.0.1.10", true)  // its egress is open: the reply passes as tracked
	reach("acme/a", "10.0.1.12", false) // identity 100 may not reach it
	reach("acme/a", "10.0.1.11", false) // not repaired yet

	// acme/c goes again: its veth, namespace, map entries and policy
	// class, nothing else.
	cNetns := netns("acme/c")
	desired.Endpoints = desired.Endpoints[:2]
	w = set("detach acme/c")
	if w["link/del"] != 1 || w["netns/del"] != 1 || w["map/del"] < 3 || w["link/add"] != 0 {
		t.Errorf("detaching acme/c wrote %s, want its veth, namespace and map entries deleted and nothing added", w)
	}
	if _, ok := d.Status("acme/c"); ok {
		t.Error("acme/c has a status after it went")
	}
	if _, err := os.Stat(cNetns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("acme/c's namespace %s: %v, want it gone", cNetns, err)
	}
	reach("acme/a", "10.0.1.11", false) // still not repaired

	// A Set of the same endpoints reads the host and repairs acme/b.
	w = set("Set of the same state")
	if w["link/add"] != 1 {
		t.Errorf("the repairing Set added %d links, want 1 (acme/b's veth): %s", w["link/add"], w)
	}
	reach("acme/a", "10.0.1.11", true)
	if diff := cmp.Diff(datapath.Counts{}, set("Set after the repair")); diff != "" {
		t.Errorf("Set after the repair wrote (-want +got):\n%s", diff)
	}
}
