package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"text/tabwriter"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/testnet"
)

// Result is one check of the demo's table.
type Result struct {
	From, To string // "tenant/name"
	Addr     string // what was probed: IP or IP:port
	Proto    string // "icmp" or "tcp", or "tcp stream" for a rate check
	Want     string // "reach", "denied" (by policy), "isolated" (other tenant) or a rate cap
	Why      string // the policy, tenant boundary or QoS class that decides
	Got      string // what happened
	OK       bool
}

// PrintResults writes results as a table.
func PrintResults(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FROM\tTO\tPROBE\tWANT\tBECAUSE\tGOT\tRESULT")
	for _, r := range results {
		res := "ok"
		if !r.OK {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s %s\t%s\t%s\t%s\t%s\n", r.From, r.To, r.Proto, r.Addr, r.Want, r.Why, r.Got, res)
	}
	tw.Flush()
}

// Service ports of the demo's hello servers, and the port of its rate
// check (inside the range warehouse-from-etl allows).
const (
	acmePort   = 5432
	globexPort = 9000
	streamPort = 9005
)

// The policies and class of the example that the checks exercise.
const (
	dbFromWeb        = "policy acme/db-from-web"
	warehouseFromETL = "policy globex/warehouse-from-etl"
	otherTenant      = "other tenant's VPC"
)

// Check runs the demo's checks on the Ready endpoints eps. Inside each
// tenant, policy decides: acme/web-1 reaches acme/db-1 by ICMP and on TCP
// 5432 (acme/db-from-web), globex/etl-1 reaches globex/wh-1 on TCP 9000 but
// not by ICMP (globex/warehouse-from-etl allows TCP 9000-9010 only).
// Between tenants nothing passes, although acme/db-1 and globex/wh-1 are
// both 10.0.2.10: acme/web-1 cannot reach globex's service nor any globex
// address acme does not use itself, and the other way round. Last, a TCP
// stream from globex/etl-2 to globex/wh-1 stays under the maxRate of its
// class globex/bulk.
// classes are the example's QoS classes, for the rate check.
func Check(ctx context.Context, eps []*apiv1.Endpoint, classes []*apiv1.QoSClass) ([]Result, error) {
	by := map[string]*apiv1.Endpoint{}
	for _, e := range eps {
		by[epName(e)] = e
	}
	need := func(n string) (*apiv1.Endpoint, error) {
		if e := by[n]; e != nil && e.Status.Netns != "" && e.Status.IP != "" {
			return e, nil
		}
		return nil, fmt.Errorf("demo check: endpoint %s missing or without status", n)
	}
	var (
		web, db, etl, etl2, wh *apiv1.Endpoint
		err                    error
	)
	for _, p := range []struct {
		name string
		ep   **apiv1.Endpoint
	}{{"acme/web-1", &web}, {"acme/db-1", &db}, {"globex/etl-1", &etl}, {"globex/etl-2", &etl2}, {"globex/wh-1", &wh}} {
		if *p.ep, err = need(p.name); err != nil {
			return nil, err
		}
	}
	for _, s := range []struct {
		e    *apiv1.Endpoint
		port int
	}{{db, acmePort}, {wh, globexPort}} {
		ln, err := testnet.ListenTCP(s.e.Status.Netns, net.JoinHostPort(s.e.Status.IP, fmt.Sprint(s.port)))
		if err != nil {
			return nil, fmt.Errorf("demo check: serve on %s: %w", epName(s.e), err)
		}
		stop := testnet.ServeHello(ln, epName(s.e))
		defer stop()
	}

	rs := []Result{
		ping(ctx, web, db, "reach", dbFromWeb),
		hello(ctx, web, db, acmePort, "reach", dbFromWeb),
		hello(ctx, etl, wh, globexPort, "reach", warehouseFromETL),
		ping(ctx, etl, wh, "denied", warehouseFromETL+" (TCP 9000-9010 only)"),
		hello(ctx, web, wh, globexPort, "isolated", otherTenant),
		hello(ctx, etl, db, acmePort, "isolated", otherTenant),
	}
	// ICMP isolation needs an address the source's tenant does not use.
	used := map[string]map[string]bool{}
	for _, e := range eps {
		if used[e.Metadata.Tenant] == nil {
			used[e.Metadata.Tenant] = map[string]bool{}
		}
		used[e.Metadata.Tenant][e.Status.IP] = true
	}
	for _, src := range []*apiv1.Endpoint{web, etl} {
		for _, e := range eps {
			if e.Metadata.Tenant != src.Metadata.Tenant && !used[src.Metadata.Tenant][e.Status.IP] {
				rs = append(rs, ping(ctx, src, e, "isolated", otherTenant))
				break
			}
		}
	}
	return append(rs, capped(ctx, etl2, wh, streamPort, classes)), nil
}

// capped measures a one-second TCP stream from one endpoint to another and
// checks it against the maxRate of the sender's QoS class (the cap holds in
// both directions; the demo measures the sender's). A stream slower than
// half the cap fails too: the path is far faster than the demo's caps.
func capped(ctx context.Context, from, to *apiv1.Endpoint, port int, classes []*apiv1.QoSClass) Result {
	addr := netip.AddrPortFrom(netip.MustParseAddr(to.Status.IP), uint16(port))
	r := Result{From: epName(from), To: epName(to), Addr: addr.String(), Proto: "tcp stream",
		Why: "class " + from.Metadata.Tenant + "/" + from.Spec.QoSClass}
	var capBps uint64
	for _, c := range classes {
		if c.Metadata.Tenant == from.Metadata.Tenant && c.Metadata.Name == from.Spec.QoSClass {
			capBps, _ = c.Spec.MaxRate.BitsPerSecond()
		}
	}
	if capBps == 0 {
		r.Want, r.Got = "capped", "the sender's class has no maxRate"
		return r
	}
	r.Want = fmt.Sprintf("<= %d Mbit/s", capBps/1e6)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := testnet.Stream(sctx, testnet.StreamOptions{From: from.Status.Netns, To: to.Status.Netns, Addr: addr,
		Duration: time.Second, SenderCPU: -1, ReceiverCPU: -1})
	if err != nil {
		r.Got = "no stream: " + err.Error()
		return r
	}
	got := res.Gbps() * 1e9
	r.Got = fmt.Sprintf("%.0f Mbit/s", got/1e6)
	r.OK = got <= float64(capBps)*1.05 && got >= float64(capBps)/2
	return r
}

func ping(ctx context.Context, from, to *apiv1.Endpoint, want, why string) Result {
	reach := want == "reach"
	r := Result{From: epName(from), To: epName(to), Addr: to.Status.IP, Proto: "icmp", Want: want, Why: why}
	wait := 2 * time.Second
	if !reach {
		wait = 500 * time.Millisecond
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	rtt, err := testnet.Ping(pctx, from.Status.Netns, netip.MustParseAddr(to.Status.IP))
	if err != nil {
		r.Got, r.OK = fmt.Sprintf("no reply in %s", wait), !reach
		return r
	}
	r.Got, r.OK = fmt.Sprintf("reply in %s", rtt.Round(10*time.Microsecond)), reach
	return r
}

func hello(ctx context.Context, from, to *apiv1.Endpoint, port int, want, why string) Result {
	reach := want == "reach"
	addr := net.JoinHostPort(to.Status.IP, fmt.Sprint(port))
	r := Result{From: epName(from), To: epName(to), Addr: addr, Proto: "tcp", Want: want, Why: why}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	got, err := testnet.Hello(hctx, from.Status.Netns, addr)
	switch {
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		r.Got = "connection refused"
	case err != nil:
		r.Got = "no answer"
	default:
		r.Got = fmt.Sprintf("answered %q", got)
	}
	r.OK = (got == epName(to)) == reach
	return r
}
