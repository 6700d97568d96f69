package web

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// forward serves /ui/apis/… and /ui/version: the same request, to the
// REST handler, carrying the session's credential instead of the cookie.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, ses *session) {
	r2 := r.Clone(r.Context())
	r2.URL.Path = strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(Prefix, "/"))
	r2.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, strings.TrimSuffix(Prefix, "/"))
	r2.RequestURI = r2.URL.RequestURI()
	h.cfg.API.ServeHTTP(w, withCredential(r2, ses))
}

// apiGet builds a GET of the REST API (target: path and query) on behalf
// of the session, for the UI's own endpoints.
func apiGet(ctx context.Context, from *http.Request, ses *session, target string) *http.Request {
	r := from.Clone(ctx)
	r.Method, r.Body, r.ContentLength = http.MethodGet, http.NoBody, 0
	r.URL = &url.URL{Path: target}
	if p, q, ok := strings.Cut(target, "?"); ok {
		r.URL.Path, r.URL.RawQuery = p, q
	}
	r.RequestURI = r.URL.RequestURI()
	return withCredential(r, ses)
}

// withCredential replaces what the browser sent to identify itself with
// the session's bearer token.
func withCredential(r *http.Request, ses *session) *http.Request {
	r.Header.Del("Cookie")
	r.Header.Del(CSRFHeader)
	r.Header.Del("Authorization")
	if ses.token != "" {
		r.Header.Set("Authorization", "Bearer "+ses.token)
	}
	return r
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	hdr  http.Header
	code int
	body []byte
}

func (c *recorder) Header() http.Header {
	if c.hdr == nil {
		c.hdr = http.Header{}
	}
	return c.hdr
}

func (c *recorder) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}

func (c *recorder) Write(p []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	c.body = append(c.body, p...)
	return len(p), nil
}

func (c *recorder) Flush() {}

// maxWatches bounds the resources one multiplexed watch follows.
const maxWatches = 8

// muxLine is one line of a multiplexed watch; last ends the stream.
type muxLine struct {
	b    []byte
	last bool
}

// watch serves GET /ui/view/watch?r=RES&r=RES…: several watches of the
// REST API in one stream, so that a page follows all it shows over one
// connection (a browser opens only six per server over HTTP/1.1). RES is
// a path under /apis/weft/v1/ with its query, e.g.
// "tenants/acme/endpoints" or "hosts?resourceVersion=42"; each is
// watched by its own request to the API, with the session's credential.
//
// Each line is the API's watch event with the index of its resource
// added: {"r":0,"type":"ADDED","object":{…}}. A resource the API refuses
// gives {"r":i,"type":"ERROR","object":STATUS} and the others go on; when
// one of the API's streams ends, {"r":i,"type":"CLOSED"} is sent and the
// stream ends (the browser watches again).
func (h *Handler) watch(w http.ResponseWriter, r *http.Request, ses *session) {
	targets := r.URL.Query()["r"]
	if len(targets) == 0 || len(targets) > maxWatches {
		writeStatus(w, apiv1.NewBadRequest("want 1 to %d r= parameters, got %d", maxWatches, len(targets)))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	subs := make([]*http.Request, len(targets))
	for i, t := range targets {
		u, err := url.Parse(t)
		if err != nil || u.Scheme != "" || u.Host != "" || u.Path == "" || strings.HasPrefix(u.Path, "/") || strings.Contains(u.Path, "..") {
			writeStatus(w, apiv1.NewBadRequest("r=%q: want a path under /apis/weft/v1/", t))
			return
		}
		q := u.Query()
		q.Set("watch", "true")
		subs[i] = apiGet(ctx, r, ses, "/apis/weft/v1/"+u.Path+"?"+q.Encode())
	}
	lines := make(chan muxLine, 64)
	var wg sync.WaitGroup
	for i, sub := range subs {
		lw := &lineWriter{ctx: ctx, idx: i, out: lines}
		wg.Go(func() {
			h.cfg.API.ServeHTTP(lw, sub)
			lw.end()
		})
	}
	go func() {
		wg.Wait()
		close(lines)
	}()
	// Whatever ends the stream, the API's watches end with it and every
	// goroutine above is gone before the handler returns.
	defer func() {
		cancel()
		for range lines {
		}
	}()
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	for l := range lines {
		if _, err := w.Write(l.b); err != nil {
			return
		}
		if flusher != nil && (len(lines) == 0 || l.last) {
			flusher.Flush()
		}
		if l.last {
			return
		}
	}
}

// lineWriter is the ResponseWriter of one API watch in a multiplexed
// watch: it tags each complete line with the watch's index and passes it
// on; an error answer is kept whole and passed on at the end.
type lineWriter struct {
	recorder
	ctx context.Context
	idx int
	out chan<- muxLine
}

func (l *lineWriter) Write(p []byte) (int, error) {
	_, _ = l.recorder.Write(p)
	if l.code != http.StatusOK {
		return len(p), nil
	}
	for {
		i := bytes.IndexByte(l.body, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line := l.body[:i]; len(line) > 1 && line[0] == '{' {
			b := append(strconv.AppendInt([]byte(`{"r":`), int64(l.idx), 10), ',')
			if !l.send(muxLine{b: append(append(b, line[1:]...), '\n')}) {
				return 0, l.ctx.Err()
			}
		}
		l.body = l.body[:copy(l.body, l.body[i+1:])]
	}
}

// end passes on how the watch ended.
func (l *lineWriter) end() {
	prefix := `{"r":` + strconv.Itoa(l.idx) + `,"type":`
	if l.code == 0 || l.code == http.StatusOK {
		l.send(muxLine{b: []byte(prefix + `"CLOSED"}` + "\n"), last: true})
		return
	}
	body := bytes.TrimSpace(l.body)
	if !json.Valid(body) {
		body, _ = json.Marshal(apiv1.NewStatus(l.code, "", "%s", body))
	}
	l.send(muxLine{b: append(append([]byte(prefix+`"ERROR","object":`), body...), '}', '\n')})
}

func (l *lineWriter) send(m muxLine) bool {
	select {
	case l.out <- m:
		return true
	case <-l.ctx.Done():
		return false
	}
}
