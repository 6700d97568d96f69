package observe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/observe/capture"
)

// startCapture compiles a new capture's filter and starts it, with this
// replica as its collector.
func (c *Controller) startCapture(ctx context.Context, cp *apiv1.Capture, now time.Time) {
	prog, cerr := c.cfg.Compiler.Compile(ctx, cp.Spec.Filter)
	ttl, _ := apiv1.TTLOf(cp)
	created, err := apiv1.ParseTime(cp.Metadata.CreationTimestamp)
	if err != nil {
		created = now
	}
	d, _ := apiv1.ParseDuration(cp.Spec.Duration, apiv1.DefaultCaptureTime, apiv1.MaxCaptureTime)
	c.patchCapture(ctx, cp, func(s *apiv1.CaptureStatus) bool {
		if s.Phase != "" {
			return false
		}
		s.Expires = apiv1.FormatTime(created.Add(ttl))
		if cerr != nil {
			s.Phase, s.Message = apiv1.PhaseFailed, cerr.Error()
			return true
		}
		s.Phase, s.Program, s.Collector = apiv1.PhaseRunning, capture.Encode(prog), c.cfg.Advertise
		s.Started, s.Ends = apiv1.FormatTime(now), apiv1.FormatTime(now.Add(d))
		return true
	})
}

// tickCapture ends a capture whose time is up and keeps the status of
// one this replica collects current.
func (c *Controller) tickCapture(ctx context.Context, cp *apiv1.Capture, now time.Time) {
	ends, err := apiv1.ParseTime(cp.Status.Ends)
	over := err == nil && now.After(ends)
	s := c.session(cp, false)
	switch {
	case s != nil && over:
		s.end("duration reached")
	case s != nil:
		_ = s.merger.Tick(now)
		if now.Sub(s.written) > time.Second {
			s.writeStatus(ctx, false)
		}
	case over && c.isCollector(cp):
		// Nothing was uploaded: complete it, with an empty file.
		if s := c.session(cp, true); s != nil {
			s.end("duration reached")
		}
	}
}

func (c *Controller) isCollector(cp *apiv1.Capture) bool {
	return cp.Status.Collector == "" || cp.Status.Collector == c.cfg.Advertise
}

// patchCapture writes a Capture's status through f.
func (c *Controller) patchCapture(ctx context.Context, cp *apiv1.Capture, f func(*apiv1.CaptureStatus) bool) {
	_, err := c.w.PatchStatus(ctx, apiv1.RefOf(cp), func(next apiv1.Object) bool {
		n := next.(*apiv1.Capture)
		if n.Metadata.UID != cp.Metadata.UID {
			return false
		}
		s := n.Status
		s.Hosts, s.Program = slices.Clone(s.Hosts), slices.Clone(s.Program)
		if !f(&s) {
			return false
		}
		n.Status = s
		return true
	})
	if err != nil && !apiv1.IsNotFound(err) {
		c.log.Warn("write capture status", "ref", apiv1.RefOf(cp).String(), "err", err)
	}
}

// session is a capture this replica collects: its file, the merger
// writing it and the clients following it.
type session struct {
	c       *Controller
	cp      *apiv1.Capture
	path    string
	file    *os.File
	merger  *capture.Merger
	written time.Time // last status write

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when the file grows
	done    chan struct{} // closed when the capture has ended
	ended   bool
	reason  string
}

func sessionKey(cp *apiv1.Capture) string {
	return cp.Metadata.Tenant + "/" + cp.Metadata.Name + "/" + cp.Metadata.UID
}

// session returns the session of a running capture, creating it with
// create (nil if it cannot be made).
func (c *Controller) session(cp *apiv1.Capture, create bool) *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := sessionKey(cp)
	if s := c.sessions[k]; s != nil || !create {
		return s
	}
	path := c.captureFile(cp)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		c.log.Error("capture directory", "err", err)
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		c.log.Error("capture file", "err", err)
		return nil
	}
	m := capture.NewMerger(f)
	m.Count, m.Snaplen = int64(cp.Spec.Count), cp.Spec.Snaplen
	m.DropReason = func(r uint8) string { return datapath.DropReason(r).String() }
	s := &session{c: c, cp: cp, path: path, file: f, merger: m, changed: make(chan struct{}), done: make(chan struct{})}
	c.sessions[k] = s
	return s
}

// grew tells the followers the file grew.
func (s *session) grew() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// end finishes the capture once: the merger writes what is queued, the
// file is closed, uploads and followers are told, and the status says
// Completed with why (reason "" when the replica shuts down: the status
// is left for another replica's tick).
func (s *session) end(reason string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.reason = true, reason
	s.mu.Unlock()
	if err := s.merger.Flush(); err != nil {
		s.c.log.Warn("capture flush", "err", err)
	}
	_ = s.file.Close()
	close(s.done)
	s.grew()
	if reason != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.writeStatus(ctx, true)
		cancel()
	}
}

// writeStatus writes the merger's counts, and with final Completed.
func (s *session) writeStatus(ctx context.Context, final bool) {
	st := s.merger.Stats()
	hosts := s.merger.Hosts()
	s.written = s.c.cfg.Now()
	s.c.patchCapture(ctx, s.cp, func(cs *apiv1.CaptureStatus) bool {
		if cs.Phase != apiv1.PhaseRunning {
			return false
		}
		if len(hosts) > apiv1.MaxCaptureHosts {
			hosts = hosts[:apiv1.MaxCaptureHosts]
		}
		next := *cs
		next.Packets, next.Bytes, next.Dropped, next.Hosts = st.Packets, st.Bytes, int64(st.Lost+st.Late), hosts
		if final {
			next.Phase, next.Message = apiv1.PhaseCompleted, "stopped: "+s.reason
		}
		if next.Packets == cs.Packets && next.Bytes == cs.Bytes && next.Dropped == cs.Dropped && slices.Equal(next.Hosts, cs.Hosts) && next.Phase == cs.Phase {
			return false
		}
		*cs = next
		return true
	})
}

// sweepSessions drops the sessions of captures that are gone, with their
// files, and removes files no capture owns.
func (c *Controller) sweepSessions(ctx context.Context) {
	c.mu.Lock()
	var gone []*session
	for k, s := range c.sessions {
		o, ok := c.st.Get(apiv1.KindCapture, s.cp.Metadata.Tenant, s.cp.Metadata.Name)
		if !ok || o.GetObjectMeta().UID != s.cp.Metadata.UID {
			gone = append(gone, s)
			delete(c.sessions, k)
		} else if o.(*apiv1.Capture).Status.Phase != apiv1.PhaseRunning {
			s.mu.Lock()
			ended := s.ended
			s.mu.Unlock()
			if !ended {
				gone = append(gone, s) // completed by another replica: stop taking packets
			}
		}
	}
	c.mu.Unlock()
	for _, s := range gone {
		s.end("")
	}
	if ctx.Err() != nil {
		return
	}
	// Files of captures that are gone: expired, or deleted by hand.
	tenants, _ := os.ReadDir(c.cfg.Dir)
	for _, t := range tenants {
		files, _ := os.ReadDir(filepath.Join(c.cfg.Dir, t.Name()))
		for _, f := range files {
			name, ok := strings.CutSuffix(f.Name(), ".pcapng")
			if !ok || len(name) < 38 {
				continue
			}
			capName, uid := name[:len(name)-37], name[len(name)-36:]
			if o, ok := c.st.Get(apiv1.KindCapture, t.Name(), capName); ok && o.GetObjectMeta().UID == uid {
				continue
			}
			c.mu.Lock()
			_, live := c.sessions[t.Name()+"/"+capName+"/"+uid]
			c.mu.Unlock()
			if !live {
				_ = os.Remove(filepath.Join(c.cfg.Dir, t.Name(), f.Name()))
			}
		}
	}
}

// upload takes a host's upload stream for a running capture.
func (c *Controller) upload(w http.ResponseWriter, r *http.Request) {
	ref := apiv1.Ref{Kind: apiv1.KindCapture, Tenant: r.PathValue("tenant"), Name: r.PathValue("name")}
	host := r.URL.Query().Get("host")
	o, _ := c.st.Get(ref.Kind, ref.Tenant, ref.Name)
	if _, err := c.authorize(r, auth.VerbStatus, ref, o); err != nil {
		rest.WriteError(w, err)
		return
	}
	if o.GetObjectMeta().UID != r.URL.Query().Get("uid") {
		rest.WriteError(w, apiv1.NewNotFound(ref))
		return
	}
	cp := o.(*apiv1.Capture)
	if !c.isCollector(cp) {
		c.proxy(w, r, cp.Status.Collector)
		return
	}
	if cp.Status.Phase != apiv1.PhaseRunning || host == "" {
		rest.WriteError(w, apiv1.NewStatus(http.StatusConflict, apiv1.ReasonConflict, "capture %s is not running", ref))
		return
	}
	s := c.session(cp, true)
	if s == nil {
		rest.WriteError(w, apiv1.NewStatus(http.StatusInternalServerError, apiv1.ReasonInternal, "cannot store the capture"))
		return
	}
	// The request body is read until the host ends or the capture does.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	rd := capture.NewReader(readerCtx{ctx, r.Body})
	var rec capture.Record
	for {
		err := rd.Next(&rec)
		if err != nil {
			if errors.Is(err, capture.ErrMalformed) && ctx.Err() == nil {
				c.log.Warn("capture upload refused", "ref", ref.String(), "host", host, "err", err)
				rest.WriteError(w, apiv1.NewBadRequest("%v", err))
				return
			}
			break // the host ended, went away, or the capture ended
		}
		if err := s.merger.Add(host, &rec, c.cfg.Now()); err != nil {
			c.log.Warn("capture write", "ref", ref.String(), "err", err)
			break
		}
		s.grew()
		if s.merger.Stats().Full {
			s.end("count reached")
			break
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// readerCtx is a reader that fails once ctx ends, so that an upload
// handler stops when its capture does.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// download serves a capture's pcapng file; with follow=true it streams
// the file as it grows until the capture ends, and a client that goes
// away before stops the capture on every host.
func (c *Controller) download(w http.ResponseWriter, r *http.Request) {
	ref := apiv1.Ref{Kind: apiv1.KindCapture, Tenant: r.PathValue("tenant"), Name: r.PathValue("name")}
	o, _ := c.st.Get(ref.Kind, ref.Tenant, ref.Name)
	if _, err := c.authorize(r, auth.VerbGet, ref, o); err != nil {
		rest.WriteError(w, err)
		return
	}
	cp := o.(*apiv1.Capture)
	if !c.isCollector(cp) {
		c.proxy(w, r, cp.Status.Collector)
		return
	}
	follow := r.URL.Query().Get("follow") == "true"
	var s *session
	switch cp.Status.Phase {
	case apiv1.PhaseRunning:
		s = c.session(cp, true)
	case apiv1.PhaseCompleted:
	case apiv1.PhaseFailed:
		rest.WriteError(w, apiv1.NewStatus(http.StatusConflict, apiv1.ReasonConflict, "capture %s failed: %s", ref, cp.Status.Message))
		return
	default:
		if !follow {
			rest.WriteError(w, apiv1.NewStatus(http.StatusConflict, apiv1.ReasonConflict, "capture %s has not started", ref))
			return
		}
		// Wait for it to start (the filter is being compiled).
		deadline := time.After(10 * time.Second)
		for s == nil {
			select {
			case <-r.Context().Done():
				return
			case <-deadline:
				rest.WriteError(w, apiv1.NewStatus(http.StatusConflict, apiv1.ReasonConflict, "capture %s did not start", ref))
				return
			case <-time.After(50 * time.Millisecond):
			}
			if o, ok := c.st.Get(ref.Kind, ref.Tenant, ref.Name); ok {
				cp = o.(*apiv1.Capture)
				switch cp.Status.Phase {
				case apiv1.PhaseRunning:
					s = c.session(cp, true)
				case apiv1.PhaseFailed:
					rest.WriteError(w, apiv1.NewStatus(http.StatusConflict, apiv1.ReasonConflict, "capture %s failed: %s", ref, cp.Status.Message))
					return
				}
			}
		}
	}
	f, err := os.Open(c.captureFile(cp))
	if err != nil {
		rest.WriteError(w, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "capture %s has no packets on this replica", ref))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/x-pcapng")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", ref.Name+".pcapng"))
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 64<<10)
	for {
		var changed, done chan struct{}
		if s != nil {
			s.mu.Lock()
			changed, done = s.changed, s.done
			s.mu.Unlock()
		}
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				if follow && s != nil {
					s.end("the client went away")
				}
				return
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return
		}
		if !follow || s == nil {
			return
		}
		select {
		case <-done:
			// Read what the end wrote, then stop.
			_, _ = io.CopyBuffer(w, f, buf)
			return
		default:
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			s.end("the client went away")
			return
		case <-changed:
		case <-done:
		}
	}
}
