package web_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// TestBrowserHostMap100k: the health map of 100,000 hosts, written
// straight into the store, renders in the browser in at most 2 s (fetch
// of the aggregate and drawing, measured by the page with
// performance.now), grouped by state, by replica and by name prefix.
func TestBrowserHostMap100k(t *testing.T) {
	t.Parallel()
	const n = 100_000
	e := startEnv(t, envOptions{})
	hosts := make([]*apiv1.Host, 0, n)
	start := time.Now()
	for i := range n {
		dc, rack, h := i/25_000+1, i/250%100, i%250
		state := apiv1.LivenessAlive
		switch {
		case dc == 2 && rack == 17: // a rack lost its power
			state = apiv1.LivenessDead
		case i%97 == 0:
			state = apiv1.LivenessSuspect
		case i%211 == 0:
			state = apiv1.LivenessUnknown
		case i%1009 == 0:
			state = apiv1.LivenessDead
		}
		hosts = append(hosts, host(fmt.Sprintf("dc%d-r%02d-h%03d", dc, rack, h), fmt.Sprintf("100.%d.%d.%d", 64+i>>16, byte(i>>8), byte(i)),
			state, fmt.Sprintf("10.9.0.%d:7444", i%4+1)))
	}
	e.putHosts(t, hosts)
	t.Logf("%d hosts written and cached in %v", n, time.Since(start).Round(time.Millisecond))

	b := newBrowser(t, e.URL+"/ui/")
	b.wait("overview", `window.weft && weft.ready === 'overview' && `+text("count-hosts")+` === '100,000'`)
	for _, v := range []struct{ name, hash string }{
		{"state", "#/hosts"}, {"replica", "#/hosts?by=replica"}, {"prefix", "#/hosts?by=prefix"}, {"prefix-dc2", "#/hosts?by=prefix&prefix=dc2-"},
	} {
		b.do(chromedp.Evaluate[chromedp.Void](`weft.metrics = {}`))
		b.open(v.hash, "hosts")
		b.wait("the map", `weft.metrics.hostmap && weft.metrics.hostmap.hosts > 0`)
		m := eval[map[string]float64](b, `weft.metrics.hostmap`)
		load, _ := os.ReadFile("/proc/loadavg")
		t.Logf("host map by %-10s %6.0f hosts in %3.0f groups: fetch %4.0f ms, draw %4.0f ms, total %4.0f ms (load average %s)",
			v.name, m["hosts"], m["groups"], m["fetchMs"], m["drawMs"], m["totalMs"], strings.Join(strings.Fields(string(load))[:3], " "))
		if m["totalMs"] > 2000 {
			t.Errorf("host map by %s took %.0f ms to render, want ≤ 2000", v.name, m["totalMs"])
		}
		if nodes := eval[int](b, `document.getElementsByTagName('*').length`); nodes > 2000 {
			t.Errorf("host map by %s made %d DOM nodes", v.name, nodes)
		}
		b.shot("hostmap-" + v.name)
	}
	if got := eval[string](b, text("hosts-total")); got != "25,000" {
		t.Errorf("dc2- holds %s hosts, want 25,000", got)
	}
	b.open("#/hosts?by=prefix&prefix=dc2-&group=dc2-r17-&state=Dead", "hosts")
	b.wait("the dead rack", `(document.querySelector('#host-list h2') || {}).textContent === 'Group dc2-r17- — 250 hosts' && document.querySelectorAll('#host-list tbody tr').length === 50`)
}
