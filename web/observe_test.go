package web_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// observeFixture serves the Trace, Capture and flows APIs that the
// controller does not have yet, in the shapes package web documents, in
// front of the real API: the views must render them with no change but
// the data.
type observeFixture struct {
	mu     sync.Mutex
	traces []json.RawMessage
	posted []string
}

const (
	traceCross = `{"apiVersion":"weft/v1","kind":"Trace","metadata":{"name":"cross-host","tenant":"acme"},
	"spec":{"from":"web-1","to":"db-1","proto":"tcp","dport":5432,"mode":"probe"},
	"status":{"phase":"Completed","verdict":"Delivered","hops":[
	 {"host":"h1","point":"source-veth","verdict":"forward","detail":"veth wv-web-1 10.0.1.2 → 10.0.2.2"},
	 {"host":"h1","point":"vpc-router","verdict":"forward","detail":"VPC main, table 4096"},
	 {"host":"h1","point":"policy","verdict":"not enforced","detail":"2 policies select this endpoint"},
	 {"host":"h1","point":"route","verdict":"forward","detail":"10.0.2.0/24 via vxlan"},
	 {"host":"h1","point":"encap","verdict":"forward","detail":"VNI 4096 → h3","attrs":{"vni":"4096","remoteHost":"h3","outerSrc":"192.0.2.11","outerDst":"192.0.2.13","dscp":"46"}},
	 {"host":"h1","point":"underlay","verdict":"forward","detail":"eth0 192.0.2.11 → 192.0.2.13"},
	 {"host":"h3","point":"decap","verdict":"forward","detail":"VNI 4096"},
	 {"host":"h3","point":"remote-policy","verdict":"allow","rule":"db-from-web ingress[0]"},
	 {"host":"h3","point":"deliver","verdict":"delivered","detail":"veth wv-db-1 (consumed)"}]}}`
	traceDrop = `{"apiVersion":"weft/v1","kind":"Trace","metadata":{"name":"no-location","tenant":"acme"},
	"spec":{"from":"web-1","to":"10.0.9.9","proto":"icmp","mode":"probe"},
	"status":{"phase":"Completed","verdict":"Dropped","reason":"unknown location","hops":[
	 {"host":"h1","point":"source-veth","verdict":"forward"},
	 {"host":"h1","point":"vpc-router","verdict":"forward"},
	 {"host":"h1","point":"drop","verdict":"dropped","reason":"unknown location of 10.0.9.9"}]}}`
	captureList = `[{"apiVersion":"weft/v1","kind":"Capture","metadata":{"name":"web-https","tenant":"acme"},
	 "spec":{"endpoint":"web-1","filter":"tcp port 443","direction":"both","duration":"30s","snaplen":256},
	 "status":{"phase":"Running","packets":1200,"bytes":845000,"hosts":["h1","h2"],"expires":"2030-01-01T00:00:00Z"}},
	{"apiVersion":"weft/v1","kind":"Capture","metadata":{"name":"drops","tenant":"acme"},
	 "spec":{"vpc":"main","droppedOnly":true},"status":{"phase":"Pending"}}]`
	flowList = `{"kind":"FlowList","items":[
	 {"src":"10.0.1.2","dst":"10.0.2.2","sport":41000,"dport":5432,"proto":"tcp","srcEndpoint":"web-1","dstEndpoint":"db-1","bytes":912000000,"packets":640000,"verdict":"allow","duration":"2m10s"},
	 {"src":"10.0.1.16","dst":"10.0.2.2","sport":41022,"dport":5432,"proto":"tcp","srcEndpoint":"web-2","dstEndpoint":"db-1","bytes":310000000,"packets":220000,"verdict":"allow","duration":"1m"},
	 {"src":"10.0.1.2","dst":"203.0.113.7","sport":53011,"dport":53,"proto":"udp","srcEndpoint":"web-1","bytes":52000,"packets":410,"verdict":"allow","duration":"5s"}]}`
	pcapngMagic = "\x0a\x0d\x0d\x0a"
)

func newObserveFixture() *observeFixture {
	return &observeFixture{traces: []json.RawMessage{json.RawMessage(traceCross), json.RawMessage(traceDrop)}}
}

func (f *observeFixture) front(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	const base = "/apis/weft/v1/tenants/acme/"
	mux.HandleFunc("GET "+base+"traces", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		items := append([]json.RawMessage(nil), f.traces...)
		f.mu.Unlock()
		serveList(w, r, items)
	})
	mux.HandleFunc("POST "+base+"traces", func(w http.ResponseWriter, r *http.Request) {
		var tr struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     json.RawMessage       `json:"spec"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &tr); err != nil || tr.Metadata.Name == "" {
			http.Error(w, "bad trace", http.StatusBadRequest)
			return
		}
		created := `{"apiVersion":"weft/v1","kind":"Trace","metadata":{"name":"` + tr.Metadata.Name + `","tenant":"acme"},"spec":` + string(tr.Spec) + `,"status":{"phase":"Pending"}}`
		f.mu.Lock()
		f.traces = append(f.traces, json.RawMessage(created))
		f.posted = append(f.posted, string(tr.Spec))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, created)
	})
	mux.HandleFunc("GET "+base+"captures", func(w http.ResponseWriter, r *http.Request) {
		var items []json.RawMessage
		_ = json.Unmarshal([]byte(captureList), &items)
		serveList(w, r, items)
	})
	mux.HandleFunc("GET "+base+"captures/web-https/pcapng", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pcapng")
		_, _ = io.WriteString(w, pcapngMagic+strings.Repeat("\x00", 60))
	})
	mux.HandleFunc("GET "+base+"flows", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("top") != "10" {
			http.Error(w, "want top=10", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, flowList)
	})
	mux.Handle("/", api)
	return mux
}

// serveList answers a list, or a watch: its items as ADDED events, then
// nothing until the watcher goes.
func serveList(w http.ResponseWriter, r *http.Request, items []json.RawMessage) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Query().Get("watch") != "true" {
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "weft/v1", "kind": "List", "metadata": map[string]string{"resourceVersion": "1"}, "items": items})
		return
	}
	enc := json.NewEncoder(w)
	for _, it := range items {
		_ = enc.Encode(map[string]any{"type": "ADDED", "object": it})
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

// TestBrowserObservability renders traces as hop diagrams, captures with
// their download and flow top talkers from the documented shapes, on a
// controller without authentication.
func TestBrowserObservability(t *testing.T) {
	t.Parallel()
	fx := newObserveFixture()
	e := startEnv(t, envOptions{front: fx.front})
	seed(t, e)
	b := newBrowser(t, e.URL+"/ui/")
	b.wait("overview", `window.weft && weft.ready === 'overview'`)
	if got := eval[string](b, text("who")); got != "no authentication" {
		t.Errorf("header says %q, want no authentication", got)
	}

	b.open("#/t/acme/traces", "traces")
	b.wait("trace list", `document.querySelectorAll('#main tbody tr').length === 2`)
	b.open("#/t/acme/traces/cross-host", "trace")
	b.wait("hop diagram", `document.querySelectorAll('#hop-diagram g.hop').length === 9 && `+text("trace-verdict")+` === 'Delivered'`)
	if got := eval[string](b, `document.querySelector('#hop-diagram g.hop[data-point="encap"] title').textContent`); !strings.Contains(got, "outerDst=192.0.2.13") {
		t.Errorf("encap hop says %q, want its outer addresses", got)
	}
	b.shot("trace")
	b.open("#/t/acme/traces/no-location", "trace")
	b.wait("drop", `document.querySelectorAll('#hop-diagram g.hop').length === 3`)
	if got := eval[string](b, `document.querySelector('#hop-diagram g.hop[data-point="drop"] rect').getAttribute('stroke')`); got != "#d8403a" {
		t.Errorf("the drop is drawn in %s, want red", got)
	}

	b.open("#/t/acme/traces?from=web-1", "traces")
	b.do(chromedp.SendKeys(chromedp.CSS("#trace-form input[name=to]"), "db-1"), chromedp.SendKeys(chromedp.CSS("#trace-form input[name=dport]"), "5432"),
		chromedp.Click(chromedp.CSS("#trace-form button")))
	b.wait("the new trace", `location.hash.startsWith('#/t/acme/traces/ui-') && weft.ready === 'trace'`)
	fx.mu.Lock()
	posted := strings.Join(fx.posted, "\n")
	fx.mu.Unlock()
	if !strings.Contains(posted, `"from":"web-1"`) || !strings.Contains(posted, `"to":"db-1"`) || !strings.Contains(posted, `"dport":5432`) {
		t.Errorf("the form posted %s", posted)
	}

	b.open("#/t/acme/captures", "captures")
	b.wait("captures", `document.querySelectorAll('[data-capture]').length === 2 && document.querySelectorAll('a.download').length === 1`)
	if got := eval[string](b, `fetch(document.querySelector('a.download').href).then(r => r.arrayBuffer()).then(b => Array.from(new Uint8Array(b).slice(0, 4)).join(','))`); got != "10,13,13,10" {
		t.Errorf("download starts with %s, want the pcapng magic", got)
	}
	b.shot("captures")

	b.open("#/t/acme/flows", "flows")
	b.wait("top talkers", `document.querySelectorAll('tr.flow').length === 3`)
	b.shot("flows")
}
