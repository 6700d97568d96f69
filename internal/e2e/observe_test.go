package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/demo"
	"github.com/weftnet/weft/internal/netnsfile"
)

// TestObserve runs traces and captures through the real chain (a `weft
// controller` and three `weft agent --datapath linux` in a lab, the
// two-tenant example with its policies) with the CLI: a trace across two
// hosts shows every hop and the remote policy's verdict with its rule; a
// port the policy does not admit is dropped there; the other tenant, on
// the same addresses, traces its own path; a capture of a VPC, read back
// by tshark, holds exactly the tenant's pings at both ends, in time order;
// another tenant's credential can neither trace nor read it.
func TestObserve(t *testing.T) {
	doc := demo.Example()
	e := newDPEnv(t, doc, "linux") // the ebpf driver does not trace or capture
	eps := e.waitReady(strings.Count(string(doc), "kind: Endpoint\n"), 60*time.Second)
	web1, db1 := eps["acme/web-1"], eps["acme/db-1"]

	trace := func(t *testing.T, args ...string) *apiv1.Trace {
		t.Helper()
		out, code := e.weft(append([]string{"trace", "--rm", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("weft trace %v: exit %d: %s", args, code, out)
		}
		var tr apiv1.Trace
		if err := json.Unmarshal([]byte(out), &tr); err != nil {
			t.Fatalf("weft trace -o json: %v: %s", err, out)
		}
		return &tr
	}
	points := func(tr *apiv1.Trace) []string {
		var p []string
		for _, h := range tr.Status.Hops {
			p = append(p, h.Host+":"+h.Point)
		}
		return p
	}

	t.Run("trace across hosts", func(t *testing.T) {
		var tr *apiv1.Trace
		// The policy may still be programming on h3: wait for its verdict.
		eventually(t, 30*time.Second, "the trace web-1 → db-1 tcp/5432 delivered", func() (bool, string) {
			tr = trace(t, "--tenant", "acme", "--from", "web-1", "--to", "db-1", "--proto", "tcp", "--dport", "5432")
			return tr.Status.Verdict == apiv1.VerdictDelivered, fmt.Sprint(tr.Status.Verdict, tr.Status.Reason, points(tr))
		})
		want := []string{"h1:source-veth", "h1:vpc-router", "h1:policy", "h1:route", "h1:encap", "h1:underlay", "h3:underlay", "h3:decap", "h3:remote-policy", "h3:deliver"}
		if got := points(tr); !slices.Equal(got, want) {
			t.Errorf("path %v, want %v", got, want)
		}
		for _, h := range tr.Status.Hops {
			switch h.Point {
			case apiv1.HopEncap:
				if h.Attrs["vni"] != strconv.Itoa(int(tr.Status.VNI)) || h.Attrs["outerDst"] != "192.0.2.13" {
					t.Errorf("encap hop %+v: want VNI %d to 192.0.2.13", h, tr.Status.VNI)
				}
			case apiv1.HopRemotePolicy:
				if !strings.Contains(h.Rule, "db-from-web") || h.Verdict != "allow" {
					t.Errorf("remote policy hop %+v: want allowed by db-from-web", h)
				}
			}
		}
		out, code := e.weft("trace", "--rm", "--tenant", "acme", "--from", "web-1", "--to", "db-1", "--proto", "tcp", "--dport", "5432")
		if code != 0 || !strings.Contains(out, "Delivered") || !strings.Contains(out, "remote-policy") {
			t.Errorf("weft trace (table): exit %d:\n%s", code, out)
		}
		t.Logf("weft trace:\n%s", out)
	})

	t.Run("trace dropped by policy", func(t *testing.T) {
		tr := trace(t, "--tenant", "acme", "--from", "web-1", "--to", "db-1", "--proto", "tcp", "--dport", "80")
		last := tr.Status.Hops[len(tr.Status.Hops)-1]
		if tr.Status.Verdict != apiv1.VerdictDropped || last.Host != "h3" || last.Point != apiv1.HopDrop || last.Reason != "policy" {
			t.Errorf("verdict %s (%s), last hop %+v: want a policy drop on h3; path %v", tr.Status.Verdict, tr.Status.Reason, last, points(tr))
		}
	})

	t.Run("overlapping tenant", func(t *testing.T) {
		var tr *apiv1.Trace
		eventually(t, 30*time.Second, "the trace etl-1 → wh-1 tcp/9000 delivered", func() (bool, string) {
			tr = trace(t, "--tenant", "globex", "--from", "etl-1", "--to", "wh-1", "--proto", "tcp", "--dport", "9000")
			return tr.Status.Verdict == apiv1.VerdictDelivered, fmt.Sprint(tr.Status.Verdict, tr.Status.Reason, points(tr))
		})
		if tr.Status.Destination == nil || tr.Status.Destination.IP != db1.Status.IP || tr.Status.Destination.Host != "h2" {
			t.Errorf("destination %+v: want wh-1 at %s on h2 (db-1's address in acme)", tr.Status.Destination, db1.Status.IP)
		}
		acmeVPC, err := e.cl.Get(context.Background(), apiv1.KindVPC, "acme", "main")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range tr.Status.Hops {
			if h.Host == "h3" || (h.Attrs["vni"] != "" && h.Attrs["vni"] == strconv.Itoa(int(acmeVPC.(*apiv1.VPC).Status.VNI))) {
				t.Errorf("globex's trace left its tenant: hop %+v", h)
			}
		}
	})

	t.Run("live trace", func(t *testing.T) {
		// The next 3 real echoes of web-1 to db-1 are tagged and followed.
		p := startPinger(t, web1.Status.Netns, netip.MustParseAddr(db1.Status.IP), 100*time.Millisecond)
		defer p.stop()
		tr := trace(t, "--tenant", "acme", "--from", "web-1", "--to", "db-1", "--mode", "live", "--count", "3", "--duration", "20s")
		delivered := map[int]bool{}
		for _, h := range tr.Status.Hops {
			if h.Point == apiv1.HopDeliver && h.Host == "h3" {
				delivered[h.Packet] = true
			}
		}
		if tr.Status.Verdict != apiv1.VerdictDelivered || tr.Status.Packets != 3 || len(delivered) != 3 {
			t.Errorf("live trace: %s (%s), %d packets, delivered %v; path %v", tr.Status.Verdict, tr.Status.Reason, tr.Status.Packets, delivered, points(tr))
		}
		if sent, lost, _, _ := p.result(); lost > 1 { // the last may be in flight
			t.Errorf("a live trace lost real packets: %d of %d", lost, sent)
		}
	})

	t.Run("capture read by tshark", func(t *testing.T) {
		if _, err := exec.LookPath("tshark"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("tshark is not installed (.ci/run installs it)")
			}
			t.Skip("tshark is not installed (apt-get install tshark): skipping the capture read-back")
		}
		file := filepath.Join(t.TempDir(), "acme.pcapng")
		cmd := exec.Command(binary(t), "capture", "--tenant", "acme", "--vpc", "main", "--filter", "icmp", "--duration", "20s", "-w", file)
		cmd.Env = append(os.Environ(), "WEFT_CONFIG="+e.adminConfig())
		out := &lockedWriter{w: &bytes.Buffer{}}
		cmd.Stdout, cmd.Stderr = out, out
		if err := netnsfile.Do(e.lab.UnderlayPath(), cmd.Start); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		// The capture is running on every host of acme's VPC.
		eventually(t, 20*time.Second, "the capture running", func() (bool, string) {
			objs, _, err := e.cl.List(context.Background(), apiv1.KindCapture, "acme", "")
			return err == nil && len(objs) == 1 && objs[0].(*apiv1.Capture).Status.Phase == apiv1.PhaseRunning, fmt.Sprint(objs, err)
		})
		time.Sleep(time.Second) // the hosts attach their sockets
		// acme's web-1 pings db-1 (allowed); globex's etl-1 pings wh-1,
		// which has db-1's address, at the same time (its policy drops it).
		ping := func(ep *apiv1.Endpoint, dst string) *pinger {
			return startPinger(t, ep.Status.Netns, netip.MustParseAddr(dst), 100*time.Millisecond)
		}
		pa, pg := ping(web1, db1.Status.IP), ping(eps["globex/etl-1"], db1.Status.IP)
		time.Sleep(2 * time.Second)
		pa.stop()
		pg.stop()
		sent, lost, _, _ := pa.result()
		// Interrupting the CLI stops the capture on every host.
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("weft capture: %v: %s", err, out.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("weft capture did not end after an interrupt: %s", out.String())
		}
		t.Logf("weft capture: %s; pinged %d, lost %d", out.String(), sent, lost)

		fields, err := exec.Command("tshark", "-r", file, "-T", "fields", "-E", "separator=|",
			"-e", "frame.time_epoch", "-e", "frame.interface_name", "-e", "frame.comment", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "icmp.ident").Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("tshark: %v: %s", err, ee.Stderr)
			}
			t.Fatal(err)
		}
		count := map[string]int{}
		var last float64
		for _, line := range strings.Split(strings.TrimSpace(string(fields)), "\n") {
			f := strings.Split(line, "|")
			if len(f) != 7 {
				t.Fatalf("tshark line %q", line)
			}
			ts, _ := strconv.ParseFloat(f[0], 64)
			if ts < last {
				t.Errorf("packets out of time order at %q", line)
			}
			last = ts
			if f[6] != strconv.Itoa(pa.id) && f[6] != fmt.Sprintf("0x%04x", pa.id) {
				t.Errorf("a packet of another ping (or tenant): %q", line)
				continue
			}
			count[f[2]+" "+f[5]]++
		}
		answered := sent - lost
		want := map[string]int{
			"host h1, from endpoint acme/web-1 8": sent,
			"host h3, to endpoint acme/db-1 8":    sent,
			"host h3, from endpoint acme/db-1 0":  answered,
			"host h1, to endpoint acme/web-1 0":   answered,
		}
		for k, n := range want {
			if count[k] != n {
				t.Errorf("%q: %d packets, want %d (all: %v)", k, count[k], n, count)
			}
		}
		if len(count) != len(want) {
			t.Errorf("unexpected packets: %v", count)
		}
		o, err := e.cl.Get(context.Background(), apiv1.KindCapture, "acme", captureName(t, out.String()))
		if err != nil {
			t.Fatal(err)
		}
		if cp := o.(*apiv1.Capture); cp.Status.Phase != apiv1.PhaseCompleted {
			t.Errorf("capture phase %s after the CLI went away", cp.Status.Phase)
		}
	})

	t.Run("capture bounded and expired", func(t *testing.T) {
		if _, err := exec.LookPath("tshark"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("tshark is not installed (.ci/run installs it)")
			}
			t.Skip("tshark is not installed (apt-get install tshark): skipping the capture read-back")
		}
		p := startPinger(t, web1.Status.Netns, netip.MustParseAddr(db1.Status.IP), 50*time.Millisecond)
		defer p.stop()
		file := filepath.Join(t.TempDir(), "five.pcapng")
		// It ends by itself at its count, long before its duration.
		out, code := e.weft("capture", "--tenant", "acme", "--endpoint", "db-1", "--filter", "icmp", "--count", "5",
			"--duration", "1m", "--ttl", "3s", "--name", "five", "-w", file)
		if code != 0 {
			t.Fatalf("weft capture: exit %d: %s", code, out)
		}
		n, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "frame.number").Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(string(n), "\n"); got != 5 {
			t.Errorf("the capture of count 5 holds %d packets; %s", got, out)
		}
		// It expires with its packets.
		files := func() []string {
			m, _ := filepath.Glob(filepath.Join(e.dataDir, "captures", "*", "*.pcapng"))
			return m
		}
		if len(files()) == 0 {
			t.Errorf("no capture file in the controller's %s", filepath.Join(e.dataDir, "captures"))
		}
		eventually(t, 30*time.Second, "the capture expired with its packets", func() (bool, string) {
			_, err := e.cl.Get(context.Background(), apiv1.KindCapture, "acme", "five")
			return apiv1.IsNotFound(err) && len(files()) <= 1, fmt.Sprint(err, files()) // the first capture's file stays
		})
	})

	t.Run("trace latency", func(t *testing.T) {
		// Command (the API's create) to merged path, cross host.
		var ds []time.Duration
		ctx := context.Background()
		for i := range 20 {
			tr := &apiv1.Trace{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTrace},
				Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("lat-%d", i), Tenant: "acme"},
				Spec:     apiv1.TraceSpec{From: "web-1", To: "db-1", Proto: "tcp", DPort: 5432, TTL: "1m"}}
			start := time.Now()
			if _, err := e.cl.Create(ctx, tr); err != nil {
				t.Fatal(err)
			}
			for {
				o, err := e.cl.Get(ctx, apiv1.KindTrace, "acme", tr.Metadata.Name)
				if err != nil {
					t.Fatal(err)
				}
				if st := o.(*apiv1.Trace).Status; st.Phase == apiv1.PhaseCompleted {
					if st.Verdict != apiv1.VerdictDelivered {
						t.Errorf("trace %s: %s (%s)", tr.Metadata.Name, st.Verdict, st.Reason)
					}
					break
				}
				if time.Since(start) > 30*time.Second {
					t.Fatalf("trace %s not completed after 30s", tr.Metadata.Name)
				}
				time.Sleep(5 * time.Millisecond)
			}
			ds = append(ds, time.Since(start))
		}
		t.Logf("trace end to end (create → merged path), cross host, 20 runs: %s", stats(ds))
	})

	t.Run("tenant scoped", func(t *testing.T) {
		ctx := context.Background()
		tok, err := e.cl.CreateToken(ctx, client.TokenRequest{Role: "tenant-admin", Tenant: "globex"})
		if err != nil {
			t.Fatal(err)
		}
		s, err := clientconfig.LoadSettings(e.adminConfig())
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CA)
		hc := &http.Client{Transport: &http.Transport{DialContext: e.dialUnderlay, TLSClientConfig: &tls.Config{RootCAs: pool}}}
		globex, err := client.New(s.Server, client.WithHTTPClient(hc), client.WithToken(tok.Secret))
		if err != nil {
			t.Fatal(err)
		}
		defer globex.Close()
		_, err = globex.Create(ctx, &apiv1.Trace{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTrace},
			Metadata: apiv1.ObjectMeta{Name: "peek", Tenant: "acme"}, Spec: apiv1.TraceSpec{From: "web-1", To: "db-1"}})
		if !apiv1.IsForbidden(err) {
			t.Errorf("globex creates a trace in acme: %v, want forbidden", err)
		}
		objs, _, err := e.cl.List(ctx, apiv1.KindCapture, "acme", "")
		if err != nil || len(objs) == 0 {
			t.Fatalf("acme's captures: %v %v", objs, err)
		}
		path := "/apis/weft/v1/tenants/acme/captures/" + objs[0].GetObjectMeta().Name + "/pcapng"
		for _, c := range []struct {
			cl   *client.Client
			code int
		}{{globex, http.StatusForbidden}, {e.cl, http.StatusOK}} {
			resp, err := c.cl.Raw(ctx, http.MethodGet, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, c.code)
			}
		}
	})
}

// captureName is the name in the CLI's summary ("Capture NAME: ...").
func captureName(t *testing.T, summary string) string {
	t.Helper()
	_, rest, ok := strings.Cut(summary, "Capture ")
	name, _, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		t.Fatalf("no capture name in %q", summary)
	}
	return name
}
