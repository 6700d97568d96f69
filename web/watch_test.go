package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/etcdtest"
)

type muxEvent struct {
	R      int
	Type   string
	Object struct {
		Metadata struct{ Name string }
		Code     int
	}
}

// watchStream is an open multiplexed watch and the events read so far.
type watchStream struct {
	ch   <-chan muxEvent
	seen []muxEvent
}

// openWatch opens a multiplexed watch.
func openWatch(t *testing.T, c *http.Client, url string) *watchStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("watch: %d", res.StatusCode)
	}
	ch := make(chan muxEvent, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			var ev muxEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("watch line %q: %v", sc.Text(), err)
				return
			}
			ch <- ev
		}
	}()
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
		<-done
	})
	return &watchStream{ch: ch}
}

// expect waits for an event of resource r of the given type and name; the
// resources' events may come in any order between them.
func (w *watchStream) expect(t *testing.T, r int, typ, name string) muxEvent {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for i := 0; ; i++ {
		for ; i < len(w.seen); i++ {
			if ev := w.seen[i]; ev.R == r && ev.Type == typ && (name == "" || ev.Object.Metadata.Name == name) {
				return ev
			}
		}
		select {
		case ev, ok := <-w.ch:
			if !ok {
				t.Fatalf("watch ended before %d %s %s", r, typ, name)
			}
			w.seen = append(w.seen, ev)
			i--
		case <-timeout:
			t.Fatalf("no event %d %s %s in %+v", r, typ, name, w.seen)
		}
	}
}

func TestWatchMultiplexes(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.create(t, etcdtest.Tenant("acme"), etcdtest.VPC("acme", "v1", "10.0.0.0/16"))
	rev := strconv.FormatInt(e.Env.Registry.Revision(), 10)
	w := openWatch(t, http.DefaultClient, e.URL+"/ui/view/watch?r=tenants/acme/vpcs&r=nosuchthings&r="+"hosts%3FresourceVersion%3D"+rev)
	w.expect(t, 0, "ADDED", "v1")
	if ev := w.expect(t, 1, "ERROR", ""); ev.Object.Code != http.StatusNotFound {
		t.Errorf("unknown resource: ERROR with code %d, want 404", ev.Object.Code)
	}
	e.create(t, etcdtest.VPC("acme", "v2", "10.1.0.0/16"))
	w.expect(t, 0, "ADDED", "v2")
	e.putHosts(t, []*apiv1.Host{host("h1", "192.0.2.1", apiv1.LivenessAlive, "")})
	w.expect(t, 2, "ADDED", "h1")

	for _, bad := range []string{"", "?r=/apis/weft/v1/hosts", "?r=../healthz", "?r=http://x/y", "?" + strings.Repeat("r=hosts&", 9)} {
		if code, body, _ := do(t, http.DefaultClient, "GET", e.URL+"/ui/view/watch"+bad, "", nil); code != http.StatusBadRequest {
			t.Errorf("watch%s: %d %s, want 400", bad, code, body)
		}
	}
}

// TestWatchScoped: each watched resource is the API's decision for the
// session's credential; a refused one does not stop the others.
func TestWatchScoped(t *testing.T) {
	e := startEnv(t, envOptions{auth: true})
	e.create(t, etcdtest.Tenant("acme"))
	c := e.browser(t)
	e.login(t, c, "weft_viewer_secret")
	w := openWatch(t, c, e.URL+"/ui/view/watch?r=hosts&r=tenants/acme/vpcs")
	if ev := w.expect(t, 0, "ERROR", ""); ev.Object.Code != http.StatusForbidden {
		t.Errorf("hosts for a tenant viewer: ERROR with code %d, want 403", ev.Object.Code)
	}
	e.create(t, etcdtest.VPC("acme", "v1", "10.0.0.0/16"))
	w.expect(t, 1, "ADDED", "v1")
	var m map[string]any
	if code, body, _ := do(t, c, "GET", e.URL+"/ui/view/hostmap", "", nil); code != http.StatusForbidden || json.Unmarshal([]byte(body), &m) != nil || m["reason"] != "Forbidden" {
		t.Errorf("hostmap for a tenant viewer: %d %s, want the API's 403", code, body)
	}
}
