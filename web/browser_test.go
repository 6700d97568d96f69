package web_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/etcdtest"
)

// updateScreenshots also writes the screenshots the README shows
// (readmeShots) into testdata/screenshots.
var updateScreenshots = flag.Bool("update-screenshots", false, "write the README's screenshots to testdata/screenshots")

var readmeShots = map[string]bool{"overview": true, "tenant": true, "endpoint": true, "trace": true, "hostmap-prefix-dc2": true}

// browser is a headless Chromium tab.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string // where screenshots go
}

// newBrowser starts Debian's chromium with a fresh profile, or skips the
// test when it is not installed; it stops with the test. Screenshots go to
// t.ArtifactDir() (kept with go test -artifacts).
func newBrowser(t *testing.T, url string) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Skip("chromium is not installed (apt-get install chromium): skipping the browser test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first action starts the browser, which lives as long as the
	// context of that action: run it without a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, ctx: ctx, dir: t.ArtifactDir()}
	t.Logf("screenshots in %s", b.dir)
	b.do(chromedp.Navigate(url))
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatal(err)
	}
}

// eval returns the value of a JavaScript expression (awaited if a promise).
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// wait waits, generously, until a JavaScript expression is true; on
// timeout it fails and says what the page shows.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(40*time.Second))); err != nil {
		page := eval[string](b, `document.getElementById('main').innerText.slice(0, 1500)`)
		b.t.Fatalf("%s: %v; the page shows:\n%s", what, err, page)
	}
}

// text is the expression for the text of the element with this id.
func text(id string) string {
	return `(document.getElementById('` + id + `') || {}).textContent`
}

// open goes to a view of the single-page UI and waits until it is drawn.
func (b *browser) open(hash, ready string) {
	b.t.Helper()
	b.do(chromedp.Evaluate[chromedp.Void](`location.hash = '` + hash + `'`))
	b.wait("view "+hash, `window.weft && weft.ready === '`+ready+`'`)
}

// shot saves a full-page screenshot as NAME.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatal(err)
	}
	dirs := []string{b.dir}
	if *updateScreenshots && readmeShots[name] {
		dirs = append(dirs, filepath.Join("testdata", "screenshots"))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
}

// seed creates two tenants: acme with two VPCs, three subnets, a QoS
// class, a policy and three endpoints on hosts h1..h6, and globex with one
// of each.
func seed(t *testing.T, e *env) {
	hosts := []*apiv1.Host{
		host("h1", "192.0.2.11", apiv1.LivenessAlive, "10.9.0.1:7444"), host("h2", "192.0.2.12", apiv1.LivenessAlive, "10.9.0.1:7444"),
		host("h3", "192.0.2.13", apiv1.LivenessAlive, "10.9.0.2:7444"), host("h4", "192.0.2.14", apiv1.LivenessSuspect, "10.9.0.2:7444"),
		host("h5", "192.0.2.15", apiv1.LivenessDead, ""), host("h6", "192.0.2.16", apiv1.LivenessUnknown, ""),
	}
	for _, h := range hosts {
		h.Spec.Capacity = "10Gbit" // room for the gold class's minimum
		h.Status.AgentVersion, h.Status.LastSeen = "v1.0.0", time.Now().UTC().Format(time.RFC3339)
	}
	e.putHosts(t, hosts)
	prio := 1
	web1 := etcdtest.Endpoint("acme", "web-1", "web", "h1", "app", "web", "tier", "frontend")
	web1.Spec.QoSClass = "gold"
	e.create(t, etcdtest.Tenant("acme"), etcdtest.Tenant("globex"),
		&apiv1.QoSClass{TypeMeta: etcdtest.TypeMeta(apiv1.KindQoSClass), Metadata: apiv1.ObjectMeta{Name: "gold", Tenant: "acme"},
			Spec: apiv1.QoSClassSpec{MinRate: "1Gbit", MaxRate: "5Gbit", Priority: &prio, DSCP: 46}},
		etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.VPC("acme", "dev", "10.1.0.0/16"), etcdtest.VPC("globex", "core", "10.0.0.0/16"),
		etcdtest.Subnet("acme", "web", "main", "10.0.1.0/24"), etcdtest.Subnet("acme", "db", "main", "10.0.2.0/24"),
		etcdtest.Subnet("acme", "dev-a", "dev", "10.1.1.0/24"), etcdtest.Subnet("globex", "core-a", "core", "10.0.1.0/24"),
		&apiv1.SecurityPolicy{TypeMeta: etcdtest.TypeMeta(apiv1.KindSecurityPolicy), Metadata: apiv1.ObjectMeta{Name: "web-allow", Tenant: "acme"},
			Spec: apiv1.SecurityPolicySpec{VPC: "main", Egress: []apiv1.PolicyRule{}, Selector: apiv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Ingress: []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{CIDR: "0.0.0.0/0"}}, Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 443}}}}}},
		&apiv1.SecurityPolicy{TypeMeta: etcdtest.TypeMeta(apiv1.KindSecurityPolicy), Metadata: apiv1.ObjectMeta{Name: "db-from-web", Tenant: "acme"},
			Spec: apiv1.SecurityPolicySpec{VPC: "main", Selector: apiv1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
				Ingress: []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: &apiv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
					Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 5432}}}}}},
		web1, etcdtest.Endpoint("acme", "web-2", "web", "h2", "app", "web"), etcdtest.Endpoint("acme", "db-1", "db", "h3", "app", "db"),
		etcdtest.Endpoint("globex", "api-1", "core-a", "h2", "app", "api"),
	)
}

// TestBrowser drives the UI in Chromium against the real API, logged in
// with a token: the pages load, show the stored counts, follow changes
// without a reload, refuse writes without the CSRF token, and log out.
func TestBrowser(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{auth: true})
	seed(t, e)
	b := newBrowser(t, e.URL+"/")
	if got := eval[string](b, `location.pathname`); got != "/ui/" {
		t.Fatalf("/ went to %s, want /ui/", got)
	}

	b.wait("login page", `window.weft && weft.ready === 'login'`)
	b.shot("login")
	b.do(chromedp.SendKeys(chromedp.CSS("#login-token"), "weft_wrong_secret"), chromedp.Click(chromedp.CSS("#login-submit")))
	b.wait("refusal", text("login-error")+` === 'Token refused.'`)
	b.do(chromedp.Evaluate[chromedp.Void](`document.getElementById('login-token').value = ''`), chromedp.SendKeys(chromedp.CSS("#login-token"), "weft_admin_secret"), chromedp.Click(chromedp.CSS("#login-submit")))
	b.wait("overview", `weft.ready === 'overview' && `+text("count-tenants")+` === '2' && `+text("count-hosts")+` === '6'`)
	if got := eval[string](b, `document.cookie`); got != "" {
		t.Errorf("the session cookie is readable from JavaScript: %q", got)
	}
	for id, want := range map[string]string{"count-all-vpcs": "3", "count-hosts-alive": "3", "count-hosts-suspect": "1", "count-hosts-dead": "1", "count-hosts-unknown": "1"} {
		if got := eval[string](b, text(id)); got != want {
			t.Errorf("overview %s = %q, want %q", id, got, want)
		}
	}
	b.shot("overview")

	b.open("#/t/acme", "tenant")
	b.wait("acme's counts", text("count-vpcs")+` === '2' && `+text("count-subnets")+` === '3' && `+text("count-endpoints")+` === '3' && `+text("count-policies")+` === '2' && `+text("count-qos")+` === '1'`)
	b.shot("tenant")

	// A change made through the API shows up without a reload.
	b.do(chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
	e.create(t, etcdtest.Endpoint("acme", "web-3", "web", "h3", "app", "web"))
	b.wait("the new endpoint", text("count-endpoints")+` === '4' && document.querySelector('[data-endpoint="web-3"]') !== null`)
	if _, err := e.Client.Delete(context.Background(), "Endpoint", "acme", "db-1"); err != nil {
		t.Fatal(err)
	}
	b.wait("the deleted endpoint gone", text("count-endpoints")+` === '3' && document.querySelector('[data-endpoint="db-1"]') === null`)
	if !eval[bool](b, `window.notReloaded === true`) {
		t.Error("the page reloaded")
	}

	b.open("#/t/acme/ep/web-1", "endpoint")
	b.wait("web-1's policies and QoS", text("policy-count")+`.startsWith('1 policy selects') && document.querySelector('[data-policy="web-allow"]') !== null && `+
		text("qos")+`.includes('gold') && `+text("qos")+`.includes('5Gbit')`)
	for sel, want := range map[string]string{
		`[data-policy="web-allow"]`: "allow from 0.0.0.0/0 on tcp/443",
		`#isolation`:                "ingressisolated by 1 policy: 1 rule allowsegressisolated by 1 policy: nothing allowed",
	} {
		if got := eval[string](b, `document.querySelector('`+sel+`').textContent`); !strings.Contains(got, want) {
			t.Errorf("%s shows %q, want %q", sel, got, want)
		}
	}
	// The agent's report arrives as a status change.
	if _, err := e.Env.Registry.MergePatchStatus(context.Background(), apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web-1"},
		[]byte(`{"status":{"phase":"Ready","conditions":[{"type":"PolicyProgrammed","status":"True","observedGeneration":1},{"type":"QoSProgrammed","status":"True","observedGeneration":1}]}}`)); err != nil {
		t.Fatal(err)
	}
	b.wait("web-1 programmed", `document.getElementById('main').innerText.includes('QoSProgrammed') && document.querySelector('#main .phase-Ready') !== null`)
	b.shot("endpoint")

	b.open("#/hosts", "hosts")
	b.wait("host map", text("hosts-total")+` === '6' && `+text("hosts-dead")+` === '1'`)
	e.putHosts(t, []*apiv1.Host{host("h7", "192.0.2.17", apiv1.LivenessDead, "")})
	b.wait("host map after a host died", text("hosts-total")+` === '7' && `+text("hosts-dead")+` === '2'`)
	b.open("#/hosts?by=state&group=Dead", "hosts")
	b.wait("dead hosts listed", `document.querySelectorAll('#host-list tbody tr').length === 2`)
	b.shot("hosts")

	// The API has the Trace and Capture kinds (their status stays empty
	// here: no controller runs them), not the flows query
	// (observe_test.go fills all three in).
	e.create(t, &apiv1.Trace{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTrace},
		Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "t-1"}, Spec: apiv1.TraceSpec{From: "web-1", To: "web-2"}})
	e.create(t, &apiv1.Capture{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindCapture},
		Metadata: apiv1.ObjectMeta{Tenant: "acme", Name: "c-1"}, Spec: apiv1.CaptureSpec{Endpoint: "web-1"}})
	for _, v := range []struct{ hash, ready, want string }{
		{"#/t/acme/traces", "traces", "t-1"}, {"#/t/acme/captures", "captures", "c-1"},
		{"#/t/acme/flows", "flows", "Flow statistics are not available on this controller."},
	} {
		b.open(v.hash, v.ready)
		if got := eval[string](b, `document.getElementById('main').innerText`); !strings.Contains(got, v.want) {
			t.Errorf("%s shows %q, want %q", v.hash, got, v.want)
		}
	}

	// Writes from the page need the session's CSRF token.
	post := `fetch('apis/weft/v1/tenants', {method: 'POST', headers: {'Content-Type': 'application/json'%s},
		body: JSON.stringify({apiVersion: 'weft/v1', kind: 'Tenant', metadata: {name: 'initech'}})}).then(r => r.status)`
	if got := eval[int](b, fmt.Sprintf(post, "")); got != 403 {
		t.Errorf("POST without the CSRF header: %d, want 403", got)
	}
	if got := eval[int](b, fmt.Sprintf(post, ", 'X-Weft-CSRF': weft.session.csrf")); got != 201 {
		t.Errorf("POST with the CSRF header: %d, want 201", got)
	}
	b.open("#/", "overview")
	b.wait("a third tenant", text("count-tenants")+` === '3'`)

	b.do(chromedp.Click(chromedp.CSS("#logout")))
	b.wait("logged out", `weft.ready === 'login'`)
	if got := eval[int](b, `fetch('apis/weft/v1/tenants').then(r => r.status)`); got != 401 {
		t.Errorf("API after logout: %d, want 401", got)
	}
}
