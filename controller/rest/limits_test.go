package rest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/internal/etcdtest"
)

// limited serves the real API over etcd with small limits, on a listener
// whose connections have a small send buffer (so that a watcher that stops
// reading stalls the server's writes quickly).
func limited(t *testing.T) (*etcdtest.Env, string, *prometheus.Registry) {
	t.Helper()
	env := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	h, err := rest.NewHandler(rest.Config{Backend: env.Registry, Insecure: true, Registerer: reg,
		MaxPage: 5, MaxWatches: 2, WatchWriteTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallSendBuffer{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	return env, srv.URL + "/apis/weft/v1", reg
}

type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		setBuf(c, unix.SO_SNDBUF)
	}
	return c, err
}

func setBuf(c net.Conn, opt int) {
	raw, err := c.(syscall.Conn).SyscallConn()
	if err == nil {
		_ = raw.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 4096) })
	}
}

func createTenants(t *testing.T, env *etcdtest.Env, prefix string, n int, desc string) {
	t.Helper()
	for i := range n {
		tn := etcdtest.Tenant(fmt.Sprintf("%s%03d", prefix, i))
		tn.Spec.Description = desc
		if _, err := env.Registry.Create(context.Background(), tn); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPagination: lists come in pages of at most MaxPage objects (fewer
// with ?limit), in order, each object once, with the first page's
// resourceVersion; an object deleted between pages disturbs nothing.
func TestPagination(t *testing.T) {
	env, api, _ := limited(t)
	createTenants(t, env, "t", 12, "")
	type page struct {
		Metadata struct{ ResourceVersion, Continue string }
		Items    []apiv1.Tenant
	}
	get := func(query string) page {
		t.Helper()
		r := do(t, "GET", api+"/tenants"+query, "", "")
		var p page
		if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &p) != nil {
			t.Fatalf("GET /tenants%s: %d %s", query, r.code, r.body)
		}
		return p
	}
	// all follows the pages of query and returns the names and page sizes.
	all := func(query string) (names []string, sizes []int) {
		t.Helper()
		p := get("?" + query)
		rv := p.Metadata.ResourceVersion
		for {
			sizes = append(sizes, len(p.Items))
			for _, it := range p.Items {
				names = append(names, it.Metadata.Name)
			}
			if p.Metadata.ResourceVersion != rv {
				t.Errorf("page at resourceVersion %s, want the first page's %s", p.Metadata.ResourceVersion, rv)
			}
			if p.Metadata.Continue == "" {
				return names, sizes
			}
			p = get("?" + query + "&continue=" + p.Metadata.Continue)
		}
	}
	for _, tc := range []struct {
		name, query string
		sizes       []int
	}{
		{"server max page", "", []int{5, 5, 2}},
		{"limit", "limit=4", []int{4, 4, 4}},
		{"limit above the max", "limit=1000", []int{5, 5, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names, sizes := all(tc.query)
			if fmt.Sprint(names) != fmt.Sprint(tenantNames(12)) || fmt.Sprint(sizes) != fmt.Sprint(tc.sizes) {
				t.Errorf("pages of %v gave %v, want pages of %v of %v", sizes, names, tc.sizes, tenantNames(12))
			}
		})
	}
	first := get("?limit=3")
	if _, err := env.Registry.Delete(context.Background(), apiv1.Ref{Kind: apiv1.KindTenant, Name: "t002"}); err != nil {
		t.Fatal(err)
	}
	if next := get("?limit=3&continue=" + first.Metadata.Continue); len(next.Items) != 3 || next.Items[0].Metadata.Name != "t003" {
		t.Errorf("the page after a deleted last object starts at %+v, want t003", next.Items)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?continue=zzz", "?continue=e30", "?watch=maybe"} {
		if r := do(t, "GET", api+"/tenants"+q, "", ""); r.code != http.StatusBadRequest {
			t.Errorf("GET /tenants%s: %d %s, want 400", q, r.code, r.body)
		}
	}
}

func tenantNames(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("t%03d", i))
	}
	return out
}

// openWatch starts a watch and reads its initial events.
func openWatch(t *testing.T, api string) (*http.Response, int) {
	t.Helper()
	resp, err := http.Get(api + "/tenants?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	return resp, resp.StatusCode
}

// TestWatchCap: a credential holds at most MaxWatches watches; more get
// 429 until one closes.
func TestWatchCap(t *testing.T) {
	_, api, _ := limited(t)
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	for range 2 {
		r, code := openWatch(t, api)
		open = append(open, r)
		if code != http.StatusOK {
			t.Fatalf("watch within the cap: %d", code)
		}
	}
	r, code := openWatch(t, api)
	var se apiv1.StatusError
	_ = json.NewDecoder(r.Body).Decode(&se)
	r.Body.Close()
	if code != http.StatusTooManyRequests || se.Reason != apiv1.ReasonTooManyRequests {
		t.Fatalf("watch past the cap: %d %+v, want 429", code, se)
	}
	open[0].Body.Close()
	open = open[1:]
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, code := openWatch(t, api)
		if code == http.StatusOK {
			open = append(open, r)
			break
		}
		r.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no watch after one closed: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStalledWatcher: a watcher that stops reading is disconnected after
// the write deadline instead of holding its handler (and its watch slot)
// forever.
func TestStalledWatcher(t *testing.T) {
	env, api, reg := limited(t)
	inflight := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "weft_api_requests_in_flight" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	host := strings.TrimPrefix(strings.TrimSuffix(api, "/apis/weft/v1"), "http://")
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /apis/weft/v1/tenants?watch=true HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("watch: %q %v", line, err)
	}
	// Stop reading; write far more than the socket buffers hold.
	createTenants(t, env, "s", 300, strings.Repeat("x", apiv1.MaxDescriptionLen))
	deadline := time.Now().Add(20 * time.Second)
	for inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled watch still holds its handler (%v requests in flight)", inflight())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Its slot is free again: the cap's watches open.
	for range 2 {
		r, code := openWatch(t, api)
		r.Body.Close()
		if code != http.StatusOK {
			t.Fatalf("watch after the stalled one: %d", code)
		}
	}
}

// TestPaginationAtTokenRevision: a next page shows the list as it was at
// the first page's resourceVersion (objects created or deleted since do
// not change it), and once that revision is compacted a next page is 410
// Gone, the continue token expired.
func TestPaginationAtTokenRevision(t *testing.T) {
	env, api, _ := limited(t)
	createTenants(t, env, "t", 8, "")
	type page struct {
		Metadata struct{ ResourceVersion, Continue string }
		Items    []apiv1.Tenant
	}
	get := func(query string) (page, response) {
		t.Helper()
		r := do(t, "GET", api+"/tenants"+query, "", "")
		var p page
		if r.code == http.StatusOK && json.Unmarshal([]byte(r.body), &p) != nil {
			t.Fatalf("GET /tenants%s: %s", query, r.body)
		}
		return p, r
	}
	first, _ := get("?limit=3")
	ctx := context.Background()
	createTenants(t, env, "t002x", 1, "") // sorts right after t002
	if _, err := env.Registry.Delete(ctx, apiv1.Ref{Kind: apiv1.KindTenant, Name: "t004"}); err != nil {
		t.Fatal(err)
	}
	next, r := get("?limit=3&continue=" + first.Metadata.Continue)
	var names []string
	for _, it := range next.Items {
		names = append(names, it.Metadata.Name)
	}
	if r.code != http.StatusOK || fmt.Sprint(names) != "[t003 t004 t005]" || next.Metadata.ResourceVersion != first.Metadata.ResourceVersion {
		t.Errorf("next page: %d %v at %s, want [t003 t004 t005] at the first page's %s", r.code, names, next.Metadata.ResourceVersion, first.Metadata.ResourceVersion)
	}

	if _, err := env.Client.Compact(ctx, env.Store.Revision()); err != nil {
		t.Fatal(err)
	}
	if _, r := get("?limit=3&continue=" + next.Metadata.Continue); r.code != http.StatusGone || !strings.Contains(r.body, "continue token expired") {
		t.Errorf("a page of a compacted revision: %d %s, want 410 continue token expired", r.code, r.body)
	}
}
