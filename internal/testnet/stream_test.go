package testnet_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

func TestDirect(t *testing.T) {
	n := nettest.New(t, testnet.Options{Hosts: 2, Direct: true, MTU: 9000})
	names, err := n.Names()
	if err != nil {
		t.Fatal(err)
	}
	p := n.Prefix()
	if diff := cmp.Diff([]string{p + "-h0", p + "-h1"}, names); diff != "" {
		t.Errorf("namespaces (-want +got):\n%s", diff)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := testnet.Ping(ctx, n.Host(0).Path, n.Host(1).UnderlayIP); err != nil {
		t.Error(err)
	}
	var mtu int
	if err := n.Host(1).Do(func() error {
		ifi, err := net.InterfaceByName(n.Host(1).UnderlayDev)
		if err == nil {
			mtu = ifi.MTU
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if mtu != 9000 {
		t.Errorf("underlay MTU of h1 = %d, want 9000", mtu)
	}
}

func TestDirectNeedsTwoHosts(t *testing.T) {
	nettest.RequireRoot(t)
	n, err := testnet.Build(testnet.Options{Hosts: 3, Direct: true})
	defer func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err == nil {
		t.Fatal("Build of a direct underlay with 3 hosts succeeded")
	}
	if names, _ := n.Names(); len(names) != 0 {
		t.Logf("namespaces made before the error (deleted by Close): %v", names)
	}
}

func TestBridgeNetfilter(t *testing.T) {
	nettest.RequireRoot(t)
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		t.Skip("br_netfilter is not loaded: nothing to turn off")
	}
	for _, tc := range []struct {
		name string
		keep bool
		want string
	}{
		{name: "off by default", keep: false, want: "0"},
		{name: "kept on request", keep: true, want: "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nettest.New(t, testnet.Options{BridgeNetfilter: tc.keep})
			ul := n.UnderlayPath()
			var got string
			if err := netnsfile.Do(ul, func() error {
				b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
				got = strings.TrimSpace(string(b))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("bridge-nf-call-iptables in the underlay = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestStream(t *testing.T) {
	n := nettest.New(t, testnet.Options{})
	pair, err := n.AddVethPair("vp", netip.MustParsePrefix("10.255.0.1/24"), netip.MustParsePrefix("10.255.0.2/24"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		dst     netip.AddrPort
		cpu     int // SenderCPU and ReceiverCPU
		wantErr bool
	}{
		{name: "over the pair", dst: netip.MustParseAddrPort("10.255.0.2:5201"), cpu: -1},
		{name: "pinned to cpu 0", dst: netip.MustParseAddrPort("10.255.0.2:5203"), cpu: 0},
		{name: "no route", dst: netip.MustParseAddrPort("10.254.0.2:5201"), cpu: -1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := testnet.Stream(ctx, testnet.StreamOptions{From: pair.APath, To: pair.BPath, Addr: tc.dst,
				Warmup: 20 * time.Millisecond, Duration: 100 * time.Millisecond, SenderCPU: tc.cpu, ReceiverCPU: tc.cpu})
			if tc.wantErr {
				if err == nil {
					t.Errorf("Stream to %s = %+v, want an error", tc.dst, res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes == 0 || res.Elapsed <= 0 || res.Gbps() <= 0 {
				t.Errorf("Stream = %+v, want bytes over a positive time", res)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		ccancel()
		_, err := testnet.Stream(cctx, testnet.StreamOptions{From: pair.APath, To: pair.BPath,
			Addr: netip.MustParseAddrPort("10.255.0.2:5202"), SenderCPU: -1, ReceiverCPU: -1})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Stream with a cancelled context: %v, want context.Canceled", err)
		}
	})
}

func TestPinger(t *testing.T) {
	n := nettest.New(t, testnet.Options{})
	pair, err := n.AddVethPair("vp", netip.MustParsePrefix("10.255.0.1/24"), netip.MustParsePrefix("10.255.0.2/24"), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		dst      string
		wantLost bool
	}{
		{name: "peer answers", dst: "10.255.0.2"},
		{name: "nobody there", dst: "10.255.0.9", wantLost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := testnet.StartPinger(pair.APath, netip.MustParseAddr(tc.dst), 5*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(60 * time.Millisecond)
			st, err := p.Stop(50 * time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if st.Sent == 0 {
				t.Fatalf("stats %+v: nothing sent", st)
			}
			if lost := len(st.Lost) > 0; lost != tc.wantLost || (!tc.wantLost && st.Received != st.Sent) {
				t.Errorf("stats %+v: lost = %v, want %v", st, lost, tc.wantLost)
			}
		})
	}
}
