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

// Result is one reachability or isolation check.
type Result struct {
	From, To string // "tenant/name"
	Addr     string // what was probed: IP or IP:port
	Proto    string // "icmp" or "tcp"
	Want     string // "reach" or "isolated"
	Got      string // what happened
	OK       bool
}

// PrintResults writes results as a table.
func PrintResults(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FROM\tTO\tPROBE\tWANT\tGOT\tRESULT")
	for _, r := range results {
		res := "ok"
		if !r.OK {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s %s\t%s\t%s\t%s\n", r.From, r.To, r.Proto, r.Addr, r.Want, r.Got, res)
	}
	tw.Flush()
}

// Service ports of the demo's hello servers.
const (
	acmePort   = 5432
	globexPort = 9000
)

// Check runs the demo's checks on the Ready endpoints eps: acme/web-1 reaches
// acme/db-1 and globex/etl-1 reaches globex/wh-1 (ICMP echo and a TCP
// service that answers with its endpoint's name), although both db-1 and
// wh-1 are 10.0.2.10; acme/web-1 cannot reach globex's service nor any
// globex address acme does not use itself, and the other way round.
func Check(ctx context.Context, eps []*apiv1.Endpoint) ([]Result, error) {
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
	web, err := need("acme/web-1")
	if err != nil {
		return nil, err
	}
	db, err := need("acme/db-1")
	if err != nil {
		return nil, err
	}
	etl, err := need("globex/etl-1")
	if err != nil {
		return nil, err
	}
	wh, err := need("globex/wh-1")
	if err != nil {
		return nil, err
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

	var rs []Result
	rs = append(rs, ping(ctx, web, db, true), hello(ctx, web, db, acmePort, true))
	rs = append(rs, ping(ctx, etl, wh, true), hello(ctx, etl, wh, globexPort, true))
	rs = append(rs, hello(ctx, web, wh, globexPort, false), hello(ctx, etl, db, acmePort, false))
	// ICMP isolation needs an address the source's tenant does not use.
	used := map[string]map[string]bool{}
	for _, e := range eps {
		if used[e.Metadata.Tenant] == nil {
			used[e.Metadata.Tenant] = map[string]bool{}
		}
		used[e.Metadata.Tenant][e.Status.IP] = true
	}
	for _, pair := range [][2]*apiv1.Endpoint{{web, nil}, {etl, nil}} {
		src := pair[0]
		for _, e := range eps {
			if e.Metadata.Tenant != src.Metadata.Tenant && !used[src.Metadata.Tenant][e.Status.IP] {
				rs = append(rs, ping(ctx, src, e, false))
				break
			}
		}
	}
	return rs, nil
}

func ping(ctx context.Context, from, to *apiv1.Endpoint, reach bool) Result {
	r := Result{From: epName(from), To: epName(to), Addr: to.Status.IP, Proto: "icmp", Want: want(reach)}
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

func hello(ctx context.Context, from, to *apiv1.Endpoint, port int, reach bool) Result {
	addr := net.JoinHostPort(to.Status.IP, fmt.Sprint(port))
	r := Result{From: epName(from), To: epName(to), Addr: addr, Proto: "tcp", Want: want(reach)}
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

func want(reach bool) string {
	if reach {
		return "reach"
	}
	return "isolated"
}
