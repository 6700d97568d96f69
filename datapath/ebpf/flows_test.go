package ebpf_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
)

// TestFlowSampling: with every flow sampled (FlowSampling 1), Traffic
// reports a flow an endpoint sends on its own host and, arriving from
// another host, on the receiver's, with its packets and bytes; and a flow
// a policy drops with its dropped packets and the reason.
func TestFlowSampling(t *testing.T) {
	c := guardedDC(t, func(cfg *ebpf.Config) { cfg.FlowSampling = 1 })
	c.serveHello()
	outer := t
	a, b, cc := netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.2.11"), netip.MustParseAddr("10.0.2.12")
	if got, _, err := c.hello("acme/a", b, 2*time.Second); err != nil || got != "acme/b" {
		t.Fatalf("acme/a -> acme/b:8080 = %q, %v", got, err)
	}
	if _, err := c.ping("acme/b", cc, 300*time.Millisecond); err == nil {
		t.Fatal("acme/b reaches acme/c, whose policy allows acme/a only")
	}
	flows := func(host int) *datapath.Traffic {
		tr, err := c.drivers[host].Traffic(c.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Sampling != 1 {
			t.Errorf("host %d: Sampling = %d; want 1", host, tr.Sampling)
		}
		return tr
	}
	find := func(tr *datapath.Traffic, k datapath.FlowKey) *datapath.FlowSample {
		i := slices.IndexFunc(tr.Flows, func(f datapath.FlowSample) bool {
			return f.VNI == k.VNI && f.Src == k.Src && f.Dst == k.Dst && f.Proto == k.Proto && f.DstPort == k.DstPort && (k.SrcPort == 0 || f.SrcPort == k.SrcPort)
		})
		if i < 0 {
			return nil
		}
		return &tr.Flows[i]
	}
	tcp := datapath.FlowKey{VNI: 100, Src: a, Dst: b, Proto: datapath.ProtoTCP, DstPort: 8080}
	denied := datapath.FlowKey{VNI: 100, Src: b, Dst: cc, Proto: datapath.ProtoICMP, DstPort: 8 << 8} // echo request
	for _, tc := range []struct {
		name    string
		host    int
		key     datapath.FlowKey
		dropped bool
	}{
		{"sent, at the sender's host", 0, tcp, false},
		{"received from another host", 1, tcp, false},
		{"dropped by the receiver's policy", 0, denied, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := flows(tc.host)
			f := find(tr, tc.key)
			switch {
			case f == nil:
				t.Fatalf("no flow %+v in %+v", tc.key, tr.Flows)
			case f.Packets == 0 || f.Bytes < 28*f.Packets || time.Since(f.Last) > time.Minute:
				t.Errorf("flow %+v; want its packets, bytes and a recent last packet", f)
			case tc.dropped && (f.Dropped == 0 || f.Reason != datapath.DropPolicy):
				t.Errorf("flow %+v; want dropped packets by policy", f)
			case !tc.dropped && f.Dropped != 0:
				t.Errorf("flow %+v; want nothing dropped", f)
			}
		})
	}

	t.Run("1 in 2", func(t *testing.T) {
		if err := c.drivers[0].Close(); err != nil {
			t.Fatal(err)
		}
		c.drivers[0] = startDriver(outer, c.net, c.net.Host(0), func(cfg *ebpf.Config) { cfg.FlowSampling = 2 })
		c.setAll()
		const conns = 24
		for range conns {
			if got, _, err := c.hello("acme/a", cc, 2*time.Second); err != nil || got != "acme/c" {
				t.Fatalf("acme/a -> acme/c:8080 = %q, %v", got, err)
			}
		}
		tr, err := c.drivers[0].Traffic(c.ctx)
		if err != nil {
			t.Fatal(err)
		}
		sampled := 0
		for _, f := range tr.Flows {
			if f.Src == a && f.Dst == cc && f.DstPort == 8080 {
				sampled++
			}
		}
		// Each connection is a flow of its own (its source port): about
		// half are sampled; none or all has a chance of 2^-23.
		t.Logf("1 in 2: %d of %d connections sampled", sampled, conns)
		if sampled == 0 || sampled == conns || tr.Sampling != 2 {
			t.Errorf("sampling %d: %d of %d connections sampled; want some, not all", tr.Sampling, sampled, conns)
		}
	})
}
