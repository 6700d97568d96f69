package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// hostList is a HostLister over fixed hosts (sorted by name, as the store
// lists them).
type hostList []apiv1.Object

func (l hostList) List(context.Context, string, string, apiv1.LabelSelector) ([]apiv1.Object, int64) {
	return l, 7
}

func hosts(spec ...string) hostList {
	var l hostList
	for _, s := range spec { // "name state replica"
		f := append(strings.Fields(s), "", "")
		l = append(l, &apiv1.Host{Metadata: apiv1.ObjectMeta{Name: f[0]}, Status: apiv1.HostStatus{Liveness: f[1], Replica: f[2]}})
	}
	return l
}

// okAPI lets every session list hosts.
var okAPI = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"items":[]}`)) })

func get(t *testing.T, h http.Handler, url string, v any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, rec.Body)
		}
	}
	return rec.Code
}

type group struct {
	Key    string
	Leaf   bool
	Counts [4]int
	Cells  string
}

func TestHostMap(t *testing.T) {
	l := hosts("dc1-r1-h1 Alive a", "dc1-r1-h2 Dead a", "dc1-r2-h1 Suspect b", "dc1-r2-h2 Alive b", "dc1-r2-h3 Unknown", "dc2-r1-h1 Alive b", "x Weird")
	many := hosts()
	for i := range 300 {
		many = append(many, hosts(fmt.Sprintf("r%03d-h1 Alive", i))...)
	}
	for _, tc := range []struct {
		name, query string
		hosts       hostList
		prefix      string
		want        []group
	}{
		{"by state", "by=state", l, "", []group{
			{Key: "Alive", Counts: [4]int{3, 0, 0, 0}, Cells: "\x00\x00\x00"},
			{Key: "Suspect", Counts: [4]int{0, 1, 0, 0}, Cells: "\x01"},
			{Key: "Dead", Counts: [4]int{0, 0, 1, 0}, Cells: "\x02"},
			{Key: "Unknown", Counts: [4]int{0, 0, 0, 2}, Cells: "\x03\x03"}}},
		{"state by default, and all four states without hosts", "", nil, "", []group{{Key: "Alive"}, {Key: "Suspect"}, {Key: "Dead"}, {Key: "Unknown"}}},
		{"by replica", "by=replica", l, "", []group{
			{Key: "(none)", Counts: [4]int{0, 0, 0, 2}, Cells: "\x03\x03"},
			{Key: "a", Counts: [4]int{1, 0, 1, 0}, Cells: "\x00\x02"},
			{Key: "b", Counts: [4]int{2, 1, 0, 0}, Cells: "\x01\x00\x00"}}},
		{"by prefix: first segments", "by=prefix", l, "", []group{
			{Key: "dc1-", Counts: [4]int{2, 1, 1, 1}, Cells: "\x00\x02\x01\x00\x03"},
			{Key: "dc2-", Counts: [4]int{1, 0, 0, 0}, Cells: "\x00"},
			{Key: "x", Leaf: true, Counts: [4]int{0, 0, 0, 1}, Cells: "\x03"}}},
		{"by prefix: a level down", "by=prefix&prefix=dc1-", l, "dc1-r", []group{
			{Key: "dc1-r1-", Counts: [4]int{1, 0, 1, 0}, Cells: "\x00\x02"},
			{Key: "dc1-r2-", Counts: [4]int{1, 1, 0, 1}, Cells: "\x01\x00\x03"}}},
		{"by prefix: down to hosts", "by=prefix&prefix=dc1-r2-", l, "dc1-r2-h", []group{
			{Key: "dc1-r2-h1", Leaf: true, Counts: [4]int{0, 1, 0, 0}, Cells: "\x01"},
			{Key: "dc1-r2-h2", Leaf: true, Counts: [4]int{1, 0, 0, 0}, Cells: "\x00"},
			{Key: "dc1-r2-h3", Leaf: true, Counts: [4]int{0, 0, 0, 1}, Cells: "\x03"}}},
		{"by prefix: the common prefix is skipped", "by=prefix&prefix=dc2", l, "dc2-r1-h1", []group{
			{Key: "dc2-r1-h1", Leaf: true, Counts: [4]int{1, 0, 0, 0}, Cells: "\x00"}}},
		{"by prefix: too many segments, cut by character", "by=prefix", many, "r", []group{
			{Key: "r0", Counts: [4]int{100}, Cells: strings.Repeat("\x00", 100)},
			{Key: "r1", Counts: [4]int{100}, Cells: strings.Repeat("\x00", 100)},
			{Key: "r2", Counts: [4]int{100}, Cells: strings.Repeat("\x00", 100)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(Config{API: okAPI, Hosts: tc.hosts})
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Prefix string
				Total  int
				Counts [4]int
				Groups []struct {
					Key    string
					Leaf   bool
					Counts [4]int
					Cells  []byte
				}
			}
			if code := get(t, h, "/ui/view/hostmap?"+tc.query, &m); code != http.StatusOK {
				t.Fatalf("hostmap: %d", code)
			}
			var got []group
			total, counts := 0, [4]int{}
			for _, g := range m.Groups {
				got = append(got, group{Key: g.Key, Leaf: g.Leaf, Counts: g.Counts, Cells: string(g.Cells)})
				for i, n := range g.Counts {
					counts[i] += n
					total += n
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
			if m.Prefix != tc.prefix || m.Total != total || m.Counts != counts {
				t.Errorf("prefix %q total %d counts %v, want %q %d %v", m.Prefix, m.Total, m.Counts, tc.prefix, total, counts)
			}
		})
	}
}

func TestHostPage(t *testing.T) {
	l := hosts("dc1-r1-h1 Alive a", "dc1-r1-h2 Dead a", "dc1-r2-h1 Suspect b", "dc1-r2-h2 Alive b", "dc1-r2-h3 Unknown", "dc2-r1-h1 Alive b")
	h, err := New(Config{API: okAPI, Hosts: l})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, query string
		total       int
		want        []string
	}{
		{"a prefix group", "by=prefix&prefix=dc1-&group=dc1-r2-", 3, []string{"dc1-r2-h1", "dc1-r2-h2", "dc1-r2-h3"}},
		{"a page of it", "by=prefix&prefix=dc1-&group=dc1-r2-&offset=1&limit=1", 3, []string{"dc1-r2-h2"}},
		{"a state of it", "by=prefix&prefix=dc1-&group=dc1-r2-&state=Alive", 1, []string{"dc1-r2-h2"}},
		{"a state group", "by=state&group=Alive", 3, []string{"dc1-r1-h1", "dc1-r2-h2", "dc2-r1-h1"}},
		{"a replica group", "by=replica&group=(none)", 1, []string{"dc1-r2-h3"}},
		{"a search", "q=r1-h", 3, []string{"dc1-r1-h1", "dc1-r1-h2", "dc2-r1-h1"}},
		{"past the end", "offset=10", 6, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p struct {
				Total int
				Items []struct{ Name string }
			}
			if code := get(t, h, "/ui/view/hosts?"+tc.query, &p); code != http.StatusOK {
				t.Fatalf("hosts: %d", code)
			}
			got := []string{}
			for _, it := range p.Items {
				got = append(got, it.Name)
			}
			if p.Total != tc.total || !cmp.Equal(tc.want, got) {
				t.Errorf("total %d %v, want %d %v", p.Total, got, tc.total, tc.want)
			}
		})
	}
	if code := get(t, h, "/ui/view/hostmap?by=rack", nil); code != http.StatusBadRequest {
		t.Errorf("by=rack: %d, want 400", code)
	}
}

func TestSessionsExpireAndEvict(t *testing.T) {
	s := newSessions(time.Hour, 2, false)
	now := time.Now()
	req := func(ses *session) *http.Request {
		r := httptest.NewRequest("GET", "/ui/session", nil)
		r.AddCookie(&http.Cookie{Name: cookieName, Value: ses.id})
		return r
	}
	a := s.create("ta", Identity{Subject: "a"}, now)
	b := s.create("tb", Identity{Subject: "b"}, now.Add(time.Minute))
	if s.lookup(req(a), now.Add(59*time.Minute)) != a {
		t.Fatal("session a gone before its time")
	}
	if s.lookup(req(a), now.Add(time.Hour)) != nil {
		t.Fatal("session a outlived its TTL")
	}
	a = s.create("ta", Identity{Subject: "a"}, now)
	c := s.create("tc", Identity{Subject: "c"}, now.Add(2*time.Minute))
	if s.lookup(req(a), now) != nil || s.lookup(req(b), now) != b || s.lookup(req(c), now) != c {
		t.Fatal("a full table did not drop the session closest to expiry")
	}
	if a.id == b.id || a.csrf == b.csrf || a.id == a.csrf || len(a.id) < 40 {
		t.Fatalf("weak or reused session tokens: %q %q", a.id, a.csrf)
	}
}
