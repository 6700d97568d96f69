package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

// TestTraceAndCapture runs a small simulation in this process and traces
// and captures through the API as on a real deployment: a probe from an
// endpoint on h0 to one on h1 is followed by both hosts' agents (the hops
// merged into one path, delivered), a probe to an address nobody holds is
// dropped for its unknown location, one that a policy denies for that
// policy, and a capture of a VPC holds that tenant's packets only, while
// another tenant with the same addresses on the same hosts sends too.
func TestTraceAndCapture(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := startCluster(ctx, t, Config{Hosts: 3, Endpoints: 6, VPCs: 1, WatchPrefix: "x",
		BackoffMin: 100 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond})
	if _, err := c.StartAgents(ctx); err != nil {
		t.Fatalf("StartAgents: %v", err)
	}
	if _, err := c.WaitProgrammed(ctx, 40*time.Second); err != nil {
		t.Fatalf("WaitProgrammed: %v", err)
	}
	cl, err := client.New("http://"+c.APIAddr(), client.WithTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// Layout: e0 and e3 on h0, e1 and e4 on h1, e2 and e5 on h2, all in
	// tenant t0's VPC v0 (subnet s0).
	l := c.Layout()
	tenant, vpc, cidr := l.VPC(0)
	ip := map[string]string{} // endpoint name → address
	for e := range l.Endpoints {
		o, err := cl.Get(ctx, apiv1.KindEndpoint, tenant, EndpointName(e))
		if err != nil {
			t.Fatal(err)
		}
		ip[EndpointName(e)] = o.(*apiv1.Endpoint).Status.IP
	}

	t.Run("cross-host probe delivered", func(t *testing.T) {
		tr := simTrace(ctx, t, cl, tenant, "cross", "e0", "e1")
		want := []string{
			"h0 source-veth forward", "h0 vpc-router forward", "h0 policy allow", "h0 route forward",
			"h0 encap forward", "h0 underlay forward",
			"h1 underlay forward", "h1 decap forward", "h1 remote-policy allow", "h1 deliver delivered",
		}
		if d := cmp.Diff(want, hopLines(tr)); d != "" || tr.Status.Verdict != apiv1.VerdictDelivered {
			t.Errorf("verdict %s (%s); path (-want +got):\n%s", tr.Status.Verdict, tr.Status.Reason, d)
		}
	})

	t.Run("unknown location dropped", func(t *testing.T) {
		// The subnet's last address: no endpoint holds it.
		p := netip.MustParsePrefix(cidr)
		last := p.Addr().As4()
		last[2], last[3] = 255, 254
		dst := netip.AddrFrom4(last).String()
		for _, a := range ip {
			if a == dst {
				t.Fatalf("an endpoint holds %s", dst)
			}
		}
		tr := simTrace(ctx, t, cl, tenant, "nowhere", "e0", dst)
		want := []string{
			"h0 source-veth forward", "h0 vpc-router forward", "h0 policy allow", "h0 route forward",
			"h0 drop dropped unknown-location",
		}
		if d := cmp.Diff(want, hopLines(tr)); d != "" || tr.Status.Verdict != apiv1.VerdictDropped {
			t.Errorf("verdict %s (%s); path (-want +got):\n%s", tr.Status.Verdict, tr.Status.Reason, d)
		}
	})

	t.Run("capture holds its tenant's packets only", func(t *testing.T) {
		// Tenant t9 has t0's addresses: x0 on h0 as e0, x1 on h1 as e1.
		other := "t9"
		create := func(o apiv1.Object) {
			if _, err := cl.Create(ctx, o); err != nil {
				t.Fatalf("create %T: %v", o, err)
			}
		}
		tm := func(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }
		create(&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: other}})
		create(&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "w", Tenant: other},
			Spec: apiv1.VPCSpec{CIDRs: []string{cidr}}})
		create(&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "ws", Tenant: other},
			Spec: apiv1.SubnetSpec{VPC: "w", CIDR: cidr}})
		for _, x := range []struct{ name, host, ip string }{{"x0", "h0", ip["e0"]}, {"x1", "h1", ip["e1"]}} {
			create(&apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: x.name, Tenant: other},
				Spec: apiv1.EndpointSpec{Subnet: "ws", Host: x.host, IP: x.ip}})
		}
		for waiting := map[string]bool{other + "/x0": true, other + "/x1": true}; len(waiting) > 0; {
			select {
			case <-ctx.Done():
				t.Fatalf("endpoints %v never reached their hosts", waiting)
			case ev := <-c.Events():
				if ev.Kind == "applied" {
					delete(waiting, ev.ID)
				}
			}
		}

		create(&apiv1.Capture{TypeMeta: tm(apiv1.KindCapture), Metadata: apiv1.ObjectMeta{Name: "v0", Tenant: tenant},
			Spec: apiv1.CaptureSpec{VPC: vpc, Duration: "6s"}})
		type download struct {
			b   []byte
			err error
		}
		got := make(chan download, 1)
		go func() {
			resp, err := cl.Raw(ctx, http.MethodGet, "/apis/weft/v1/tenants/"+tenant+"/captures/v0/pcapng?follow=true", nil)
			if err != nil {
				got <- download{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s: %s", resp.Status, b)
			}
			got <- download{b, err}
		}()
		eventually(ctx, t, "the capture running", func() (bool, string) {
			o, err := cl.Get(ctx, apiv1.KindCapture, tenant, "v0")
			if err != nil {
				return false, err.Error()
			}
			s := o.(*apiv1.Capture).Status
			return s.Phase == apiv1.PhaseRunning, fmt.Sprintf("%+v", s)
		})
		// Both tenants send the same probe between the same addresses on
		// the same hosts, a few times (the hosts start capturing once
		// their views hold the capture).
		for i := range 3 {
			time.Sleep(300 * time.Millisecond)
			simTrace(ctx, t, cl, tenant, fmt.Sprintf("c%d", i), "e0", "e1")
			simTrace(ctx, t, cl, other, fmt.Sprintf("c%d", i), "x0", "x1")
		}
		var d download
		select {
		case d = <-got:
		case <-ctx.Done():
			t.Fatal("the capture's pcapng never ended")
		}
		if d.err != nil {
			t.Fatalf("download the capture: %v", d.err)
		}
		r, err := pcapgo.NewNgReader(strings.NewReader(string(d.b)), pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatalf("read the pcapng: %v", err)
		}
		count := map[string]int{} // interface, source and destination
		for {
			data, ci, err := r.ReadPacketData()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read the pcapng: %v", err)
			}
			ifc, err := r.Interface(ci.InterfaceIndex)
			if err != nil {
				t.Fatalf("packet on interface %d: %v", ci.InterfaceIndex, err)
			}
			key := ifc.Name
			if ip4, ok := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
				key += fmt.Sprintf(" %s > %s", ip4.SrcIP, ip4.DstIP)
			}
			count[key]++
		}
		// The probe is consumed at the destination's interface: only its
		// source's records it, once per probe (the first may have left
		// before h0 started capturing).
		key := fmt.Sprintf("h0/sim-%s/e0 %s > %s", tenant, ip["e0"], ip["e1"])
		if n := count[key]; n < 1 || n > 3 || len(count) != 1 {
			t.Errorf("captured packets by interface %v, want 1 to 3 of %q and nothing else", count, key)
		}
	})

	t.Run("policy drop names the policy", func(t *testing.T) {
		pol := &apiv1.SecurityPolicy{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindSecurityPolicy},
			Metadata: apiv1.ObjectMeta{Name: "deny-in", Tenant: tenant},
			Spec:     apiv1.SecurityPolicySpec{VPC: vpc, Ingress: []apiv1.PolicyRule{}}}
		if _, err := cl.Create(ctx, pol); err != nil {
			t.Fatal(err)
		}
		// Until h1 holds the policy, the probe is delivered.
		var tr *apiv1.Trace
		for i := 0; tr == nil || tr.Status.Verdict == apiv1.VerdictDelivered; i++ {
			if i == 20 {
				t.Fatalf("the probe is still delivered after 20 tries: %v", hopLines(tr))
			}
			tr = simTrace(ctx, t, cl, tenant, fmt.Sprintf("deny%d", i), "e0", "e1")
		}
		want := []string{
			"h0 source-veth forward", "h0 vpc-router forward", "h0 policy allow", "h0 route forward",
			"h0 encap forward", "h0 underlay forward",
			"h1 underlay forward", "h1 decap forward", "h1 drop dropped policy",
		}
		if d := cmp.Diff(want, hopLines(tr)); d != "" || tr.Status.Verdict != apiv1.VerdictDropped {
			t.Errorf("verdict %s (%s); path (-want +got):\n%s", tr.Status.Verdict, tr.Status.Reason, d)
		}
		if last := tr.Status.Hops[len(tr.Status.Hops)-1]; !strings.Contains(last.Rule, tenant+"/deny-in") {
			t.Errorf("the drop names rule %q, want the policy %s/deny-in", last.Rule, tenant)
		}
	})
}

// TestTraceAcrossProcesses runs the agents in two child processes (of
// this test binary) and traces from a host of the first (h0) to a host of
// the second (h2): the probe crosses through the parent, and both hosts
// report their hops.
func TestTraceAcrossProcesses(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := startCluster(ctx, t, Config{Hosts: 3, Endpoints: 3, VPCs: 1, Exec: exe, Procs: 2,
		BackoffMin: 100 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond})
	if _, err := c.StartAgents(ctx); err != nil {
		t.Fatalf("StartAgents: %v", err)
	}
	if _, err := c.WaitProgrammed(ctx, 60*time.Second); err != nil {
		t.Fatalf("WaitProgrammed: %v", err)
	}
	if len(c.groups) != 2 || c.groups[1].first != 2 {
		t.Fatalf("h2 is not in the second of two agents processes")
	}
	cl, err := client.New("http://"+c.APIAddr(), client.WithTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tr := simTrace(ctx, t, cl, TenantName(0), "far", EndpointName(0), EndpointName(2))
	want := []string{
		"h0 source-veth forward", "h0 vpc-router forward", "h0 policy allow", "h0 route forward",
		"h0 encap forward", "h0 underlay forward",
		"h2 underlay forward", "h2 decap forward", "h2 remote-policy allow", "h2 deliver delivered",
	}
	if d := cmp.Diff(want, hopLines(tr)); d != "" || tr.Status.Verdict != apiv1.VerdictDelivered {
		t.Errorf("verdict %s (%s); path (-want +got):\n%s", tr.Status.Verdict, tr.Status.Reason, d)
	}
}

// simTrace creates a TCP probe trace from an endpoint to an endpoint or
// address and returns it once Completed.
func simTrace(ctx context.Context, t *testing.T, cl *client.Client, tenant, name, from, to string) *apiv1.Trace {
	t.Helper()
	tr := &apiv1.Trace{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTrace},
		Metadata: apiv1.ObjectMeta{Name: name, Tenant: tenant},
		Spec:     apiv1.TraceSpec{From: from, To: to, Proto: "tcp", DPort: 80}}
	if _, err := cl.Create(ctx, tr); err != nil {
		t.Fatalf("create trace %s/%s: %v", tenant, name, err)
	}
	eventually(ctx, t, "trace "+tenant+"/"+name+" completed", func() (bool, string) {
		o, err := cl.Get(ctx, apiv1.KindTrace, tenant, name)
		if err != nil {
			return false, err.Error()
		}
		tr = o.(*apiv1.Trace)
		if tr.Status.Phase == apiv1.PhaseFailed {
			t.Fatalf("trace %s/%s failed: %s", tenant, name, tr.Status.Message)
		}
		return tr.Status.Phase == apiv1.PhaseCompleted, fmt.Sprintf("phase %s, armed %v of %v, hops %v",
			tr.Status.Phase, tr.Status.Armed, tr.Status.Hosts, hopLines(tr))
	})
	return tr
}

// hopLines prints a trace's hops as "host point verdict [reason]".
func hopLines(tr *apiv1.Trace) []string {
	if tr == nil {
		return nil
	}
	var out []string
	for _, h := range tr.Status.Hops {
		out = append(out, strings.TrimSpace(h.Host+" "+h.Point+" "+h.Verdict+" "+h.Reason))
	}
	return out
}

// eventually polls cond every 50 ms for up to 20 s.
func eventually(ctx context.Context, t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		ok, state := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within 20 s: %s", what, state)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
