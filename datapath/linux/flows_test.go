package linux_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// newFlowDC is newDC with the flow hooks sampling 1 in sampling flows.
func newFlowDC(t *testing.T, sampling uint32) *dc {
	n := nettest.New(t, testnet.Options{Hosts: 2})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	c := &dc{t: t, net: n, ctl: newController(t), vpcs: twoTenants()[:1], eps: map[int][]datapath.Endpoint{}, hostOf: map[string]int{},
		nsPath: map[string]string{}, ctx: ctx, cancel: cancel}
	for _, h := range n.Hosts() {
		c.drivers = append(c.drivers, startDriver(t, n, h, func(cfg *linux.Config) { cfg.FlowSampling = sampling }))
	}
	t.Cleanup(func() {
		cancel()
		c.ctl.wg.Wait()
	})
	for i, d := range c.drivers {
		c.ctl.serve(ctx, n.Host(i).Name, d)
	}
	c.add(0, "acme/a", 100, "a", "10.0.1.10")
	c.add(1, "acme/b", 100, "b", "10.0.2.11")
	c.setAll()
	c.mustReach(t, "acme/a", "10.0.2.11")
	c.mustReach(t, "acme/b", "10.0.1.10")
	return c
}

func (c *dc) traffic(host int) *datapath.Traffic {
	c.t.Helper()
	tr, err := c.drivers[host].Traffic(c.ctx)
	if err != nil {
		c.t.Fatalf("Traffic on host %d: %v", host, err)
	}
	return tr
}

func epTraffic(t *testing.T, tr *datapath.Traffic, id string) datapath.EndpointTraffic {
	t.Helper()
	for _, e := range tr.Endpoints {
		if e.ID == id {
			return e
		}
	}
	t.Fatalf("no traffic of %s", id)
	return datapath.EndpointTraffic{}
}

// near checks got against want with a relative tolerance.
func near(t *testing.T, what string, got, want uint64, tol float64) {
	t.Helper()
	if d := float64(got) - float64(want); d > tol*float64(want) || -d > tol*float64(want) {
		t.Errorf("%s = %d, want %d ± %.0f%%", what, got, want, 100*tol)
	} else {
		t.Logf("%s = %d (real traffic %d)", what, got, want)
	}
}

// TestTrafficCounters checks the counters against real traffic: pings
// (packets, both ways, both hosts), a TCP transfer of a known size (bytes,
// the connection counted once on each end, its sampled flow on both
// hosts), and pings a policy drops (drops by reason, the flow's verdict).
func TestTrafficCounters(t *testing.T) {
	c := newFlowDC(t, 1)
	const pings = 300
	b := netip.MustParseAddr("10.0.2.11")

	t.Run("ping", func(t *testing.T) {
		a0, b0 := epTraffic(t, c.traffic(0), "acme/a"), epTraffic(t, c.traffic(1), "acme/b")
		p, err := testnet.StartPinger(c.netns("acme/a"), b, 2*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(pings * 2 * time.Millisecond)
		st, err := p.Stop(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		a1, b1 := epTraffic(t, c.traffic(0), "acme/a"), epTraffic(t, c.traffic(1), "acme/b")
		near(t, "a sent packets", a1.SentPackets-a0.SentPackets, uint64(st.Sent), 0.05)
		near(t, "b received packets", b1.ReceivedPackets-b0.ReceivedPackets, uint64(st.Sent), 0.05)
		near(t, "b sent packets", b1.SentPackets-b0.SentPackets, uint64(st.Received), 0.05)
		near(t, "a received packets", a1.ReceivedPackets-a0.ReceivedPackets, uint64(st.Received), 0.05)
		// The pinger's echo request is 61 bytes on the wire: Ethernet
		// (14), IPv4 (20), ICMP (8) and 19 bytes of data.
		near(t, "a sent bytes", a1.SentBytes-a0.SentBytes, 61*uint64(st.Sent), 0.05)
	})

	t.Run("tcp transfer", func(t *testing.T) {
		const size = 64 << 20
		l, err := testnet.ListenTCP(c.netns("acme/b"), "10.0.2.11:5201")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		got := make(chan int64, 1)
		go func() {
			conn, err := l.Accept()
			if err != nil {
				got <- -1
				return
			}
			defer conn.Close()
			n, _ := io.Copy(io.Discard, conn)
			got <- n
		}()
		a0, b0 := epTraffic(t, c.traffic(0), "acme/a"), epTraffic(t, c.traffic(1), "acme/b")
		conn, err := testnet.DialTCP(c.ctx, c.netns("acme/a"), "10.0.2.11:5201")
		if err != nil {
			t.Fatal(err)
		}
		sport := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
		if _, err := conn.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if n := <-got; n != size {
			t.Fatalf("server read %d bytes, want %d", n, size)
		}
		tr0, tr1 := c.traffic(0), c.traffic(1)
		a1, b1 := epTraffic(t, tr0, "acme/a"), epTraffic(t, tr1, "acme/b")
		near(t, "a sent bytes", a1.SentBytes-a0.SentBytes, size, 0.05)
		near(t, "b received bytes", b1.ReceivedBytes-b0.ReceivedBytes, size, 0.05)
		if n := a1.ConnsOut - a0.ConnsOut; n != 1 {
			t.Errorf("a opened %d connections, want 1", n)
		}
		if n := b1.ConnsIn - b0.ConnsIn; n != 1 {
			t.Errorf("b was asked %d connections, want 1", n)
		}
		key := datapath.FlowKey{VNI: 100, Src: netip.MustParseAddr("10.0.1.10"), Dst: b, Proto: datapath.ProtoTCP, SrcPort: sport, DstPort: 5201}
		for i, tr := range []*datapath.Traffic{tr0, tr1} {
			f := findFlow(tr, key)
			if f == nil {
				t.Errorf("host %d: flow %v not sampled (sampling 1)", i, key)
				continue
			}
			near(t, "sampled flow bytes on host "+string(rune('0'+i)), f.Bytes, size, 0.05)
			if f.Dropped != 0 {
				t.Errorf("host %d: flow has %d dropped packets", i, f.Dropped)
			}
		}
	})

	t.Run("policy drops", func(t *testing.T) {
		c.update("acme/b", func(e *datapath.Endpoint) { e.Policy = &datapath.EndpointPolicy{IngressIsolated: true} })
		c.setAll()
		b0 := epTraffic(t, c.traffic(1), "acme/b")
		p, err := testnet.StartPinger(c.netns("acme/a"), b, 5*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		st, _ := p.Stop(200 * time.Millisecond)
		if st.Received != 0 {
			t.Errorf("%d pings answered through a policy that denies them", st.Received)
		}
		tr := c.traffic(1)
		b1 := epTraffic(t, tr, "acme/b")
		near(t, "b policy drops", b1.Drops[datapath.DropPolicy]-b0.Drops[datapath.DropPolicy], uint64(st.Sent), 0.05)
		f := findFlow(tr, datapath.FlowKey{VNI: 100, Src: netip.MustParseAddr("10.0.1.10"), Dst: b, Proto: datapath.ProtoICMP, DstPort: 8 << 8})
		if f == nil || f.Dropped == 0 || f.Reason != datapath.DropPolicy {
			t.Errorf("the denied pings' flow on b's host = %+v, want dropped by policy", f)
		}
	})
}

func findFlow(tr *datapath.Traffic, k datapath.FlowKey) *datapath.FlowSample {
	for i := range tr.Flows {
		if tr.Flows[i].FlowKey == k {
			return &tr.Flows[i]
		}
	}
	return nil
}

// TestFlowSampling sends one UDP datagram on each of 2,000 flows (distinct
// source ports) and checks that 1 in 8 of them, ±20%, is sampled, on the
// sender's host and the same flows on the receiver's.
func TestFlowSampling(t *testing.T) {
	const sampling, flows = 8, 2000
	c := newFlowDC(t, sampling)
	a, b := netip.MustParseAddr("10.0.1.10"), netip.MustParseAddr("10.0.2.11")
	err := netnsfile.Do(c.netns("acme/a"), func() error {
		for i := range flows {
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: a.AsSlice(), Port: 20000 + i})
			if err != nil {
				return err
			}
			_, err = conn.WriteToUDP([]byte("flow"), &net.UDPAddr{IP: b.AsSlice(), Port: 9})
			conn.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	count := func(tr *datapath.Traffic) map[uint16]bool {
		m := map[uint16]bool{}
		for _, f := range tr.Flows {
			if f.Proto == datapath.ProtoUDP && f.Src == a && f.Dst == b && f.DstPort == 9 {
				m[f.SrcPort] = true
			}
		}
		return m
	}
	var sent, recv map[uint16]bool
	deadline := time.Now().Add(10 * time.Second)
	for {
		sent, recv = count(c.traffic(0)), count(c.traffic(1))
		if len(sent) > 0 && len(sent) == len(recv) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	near(t, "flows sampled on the sender's host", uint64(len(sent)), flows/sampling, 0.20)
	for p := range sent {
		if !recv[p] {
			t.Errorf("flow from port %d sampled on the sender's host but not on the receiver's", p)
		}
	}
	if len(recv) != len(sent) {
		t.Errorf("%d flows sampled on the receiver's host, %d on the sender's", len(recv), len(sent))
	}
}
