package ebpf_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	cebpf "github.com/cilium/ebpf"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
	"github.com/weftnet/weft/internal/testnet"
)

// hooks lists how the programs are attached on host i: "<device>
// <direction>" → "tcx" (a pinned tcx link), "tc" (a legacy tc filter of
// the driver's), or both.
func (c *dc) hooks(t *testing.T, i int) map[string]string {
	t.Helper()
	h := handleIn(t, c.net.Host(i).Path)
	out := map[string]string{}
	dir := filepath.Join(c.pinDir(i), "links")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil || info.TCX() == nil {
			t.Fatalf("pinned link %s: %+v, %v; want a tcx link", e.Name(), info, err)
		}
		dev, err := h.LinkByIndex(int(info.TCX().Ifindex))
		if err != nil {
			t.Fatal(err)
		}
		where := dev.Attrs().Name + " ingress"
		if uint32(info.TCX().AttachType) == uint32(cebpf.AttachTCXEgress) {
			where = dev.Attrs().Name + " egress"
		}
		out[where] += "tcx"
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Name, ebpf.LinkPrefix) {
			continue
		}
		for dir, parent := range map[string]uint32{"ingress": netlink.HANDLE_MIN_INGRESS, "egress": netlink.HANDLE_MIN_EGRESS} {
			fs, err := h.FilterList(l, parent)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				if b, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(b.Name, "weft-") {
					out[l.Attrs().Name+" "+dir] += "tc"
				}
			}
		}
	}
	return out
}

// wantHooks is what hooks should list on host i with the endpoints'
// hooks attached by ep and the host's devices' by host.
func (c *dc) wantHooks(i int, ep, host string) map[string]string {
	want := map[string]string{
		ebpf.VXLANName + " ingress":   host,
		ebpf.VXLANName + " egress":    host,
		ebpf.LinkPrefix + "r ingress": host, // the shaper veth's peer
	}
	for _, e := range c.eps[i] {
		want[ebpf.VethName(e.ID)+" ingress"] = ep
	}
	return want
}

// guardedDC is two hosts: acme/a (10.0.1.10) and acme/c (10.0.2.12) on h0,
// acme/b (10.0.2.11) on h1; acme/c takes only what acme/a sends. The
// drivers run with mod.
func guardedDC(t *testing.T, mod func(*ebpf.Config)) *dc {
	c := newDC(t, 2, twoTenants()[:1], mod)
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(0, "acme/c", 100, "b", "10.0.2.12")
	c.add(1, "acme/b", 100, "b", "10.0.2.11")
	c.eps[0][1].Policy = &datapath.EndpointPolicy{IngressIsolated: true,
		Ingress: []datapath.Rule{{Name: "from a", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.10/32")}}}}
	c.setAll()
	return c
}

// TestLegacyTC runs the legacy tc path (clsact and cls_bpf, what a kernel
// without tcx gets) forced by Config.Hooks: endpoints reach each other on
// one host and across hosts (the first packet to a never-seen peer held,
// then released through to_vxlan on the VXLAN device's egress), an
// ingress policy drops what it does not allow and counts it, and no tcx
// link is attached. Then restarts switch one host to tcx links, to the
// default (tc on endpoints, tcx on the host's devices) and back: each
// mode's hooks replace the other's without a lost ping, and the driver
// adopts them with no write.
func TestLegacyTC(t *testing.T) {
	c := guardedDC(t, func(cfg *ebpf.Config) { cfg.Hooks = ebpf.HooksTC })
	for i := range c.drivers {
		if diff := cmp.Diff(c.wantHooks(i, "tc", "tc"), c.hooks(t, i)); diff != "" {
			t.Errorf("hooks on host %d (-want +got):\n%s", i, diff)
		}
	}
	c.mustReach(t, "acme/a", "10.0.2.11") // across hosts: a miss, held
	c.mustReach(t, "acme/b", "10.0.1.10")
	c.mustReach(t, "acme/a", "10.0.2.12") // on one host, allowed by policy
	if _, err := c.ping("acme/b", netip.MustParseAddr("10.0.2.12"), 300*time.Millisecond); err == nil {
		t.Error("acme/b reaches acme/c, whose policy allows acme/a only")
	}
	tr, err := c.drivers[0].Traffic(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(tr.Endpoints, func(e datapath.EndpointTraffic) bool { return e.ID == "acme/c" })
	if i < 0 || tr.Endpoints[i].Drops[datapath.DropPolicy] == 0 {
		t.Errorf("Traffic = %+v; want policy drops counted for acme/c", tr.Endpoints)
	}

	outer := t
	pinger, err := testnet.StartPinger(c.netns("acme/a"), netip.MustParseAddr("10.0.2.11"), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		hooks    ebpf.Hooks
		ep, host string
	}{
		{ebpf.HooksTCX, "tcx", "tcx"},
		{ebpf.HooksAuto, "tc", "tcx"},
		{ebpf.HooksTC, "tc", "tc"},
	} {
		t.Run(string(m.hooks), func(t *testing.T) {
			if err := c.drivers[0].Close(); err != nil {
				t.Fatal(err)
			}
			for _, mode := range []string{"switch", "adopt"} {
				// Torn down with the test, not the subtest: h0's endpoints stay.
				d := startDriver(outer, c.net, c.net.Host(0), func(cfg *ebpf.Config) { cfg.Hooks = m.hooks })
				c.drivers[0] = d
				before := d.Counts()
				if err := d.Set(c.ctx, c.desired(0)); err != nil {
					t.Fatal(err)
				}
				w := d.Counts().Sub(before)
				if mode == "adopt" && len(w) != 0 {
					t.Errorf("Set of adopted hooks wrote %s; want nothing", w)
				}
				if diff := cmp.Diff(c.wantHooks(0, m.ep, m.host), c.hooks(t, 0)); diff != "" {
					t.Errorf("%s: hooks (-want +got):\n%s", mode, diff)
				}
				if mode == "switch" {
					if err := d.Close(); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
	st, err := pinger.Stop(500 * time.Millisecond)
	if err != nil {
		t.Error(err)
	}
	t.Logf("pinger across the hook switches: sent %d, received %d, max rtt %v", st.Sent, st.Received, st.MaxRTT)
	if len(st.Lost) != 0 {
		t.Errorf("pings lost across the hook switches: %v of %d", st.Lost, st.Sent)
	}
	c.mustReach(t, "acme/a", "10.0.2.12")
}
