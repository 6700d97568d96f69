package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/agent/state"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/observe/capture"
	"github.com/weftnet/weft/observe/trace"
	"github.com/weftnet/weft/view"
	"golang.org/x/net/bpf"
)

// Traces and captures (the observer loop). The view carries the traces
// and captures the host takes part in; the loop hands them to the
// driver's datapath.Observer whenever the view changes, reports a trace
// armed once the driver set it up, batches the hops the driver sees into
// reports, and streams each capture's packets to the controller
// (capture.go). It runs only with a driver that observes and a Reporter
// that is an ObservationReporter.

// ObservationReporter is a Reporter that also carries what the data plane
// observed to the controller.
type ObservationReporter interface {
	// ReportTrace sends a host's report about a trace.
	ReportTrace(ctx context.Context, tenant, name string, r *trace.Report) error
	// UploadCapture streams a capture's records (package capture) from
	// body until it ends, ctx ends or the controller stops taking them.
	UploadCapture(ctx context.Context, tenant, name, uid, host string, body io.Reader) error
}

// hopBatch is how long hops wait to share a report.
const hopBatch = 5 * time.Millisecond

// tracer is the agent's state of its traces and captures.
type tracer struct {
	drv  datapath.Observer
	sink ObservationReporter
	kick signal

	mu      sync.Mutex
	view    *state.View // the latest view adopted
	traces  map[string]*view.Trace
	armed   map[string]string // trace ID → the UID reported armed or failed
	pending map[string][]apiv1.TraceHop
	uploads map[string]*upload // by capture ID
	reports chan traceReport
}

type traceReport struct {
	tenant, name string
	r            trace.Report
}

// startObserver starts the observer loop if the driver and reporter can:
// now, or with ObserveOnDemand once a view holds a trace or a capture.
func (a *Agent) startObserver() {
	if _, ok := a.observerParts(); !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.canObserve = true
	if !a.cfg.ObserveOnDemand || observes(a.view) {
		a.runObserver()
	}
}

// observerParts returns where observations go, and whether the driver
// observes and there is such a place.
func (a *Agent) observerParts() (ObservationReporter, bool) {
	_, ok := a.driver.(datapath.Observer)
	sink := a.cfg.Observations
	if sink == nil {
		sink, _ = a.cfg.Reporter.(ObservationReporter)
	}
	return sink, ok && sink != nil
}

// runObserver makes the tracer of the current view and starts its loops.
// The caller holds a.mu.
func (a *Agent) runObserver() {
	sink, _ := a.observerParts()
	o := &tracer{drv: a.driver.(datapath.Observer), sink: sink, kick: make(signal, 1), traces: map[string]*view.Trace{}, armed: map[string]string{},
		pending: map[string][]apiv1.TraceHop{}, uploads: map[string]*upload{}, reports: make(chan traceReport, 256)}
	o.view = a.view
	a.tracer = o
	kick(o.kick)
	a.life.Go(a.observeLoop)
	a.life.Go(a.sendReports)
}

// observes reports whether v holds a trace or a capture.
func observes(v *state.View) bool {
	for r := range v.All() {
		if r.Key.Type == view.TypeTrace || r.Key.Type == view.TypeCapture {
			return true
		}
	}
	return false
}

// observeView hands the observer loop a newly adopted view, starting the
// loop (ObserveOnDemand) if this is the first view to hold a trace or a
// capture. The caller holds a.mu.
func (a *Agent) observeView(v *state.View) {
	o := a.tracer
	if o == nil {
		if a.canObserve && observes(v) {
			a.runObserver()
		}
		return
	}
	o.mu.Lock()
	o.view = v
	o.mu.Unlock()
	kick(o.kick)
}

func (a *Agent) observeLoop(ctx context.Context) {
	o := a.tracer
	marks := time.NewTicker(200 * time.Millisecond)
	defer marks.Stop()
	var flush <-chan time.Time
	hops, packets := o.drv.TraceHops(), o.drv.Captured()
	defer a.endUploads()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.kick:
			a.observe(ctx)
		case h, ok := <-hops:
			if !ok {
				hops = nil
				continue
			}
			a.addHop(h)
			if flush == nil {
				flush = time.After(hopBatch)
			}
		case <-flush:
			flush = nil
			a.flushHops()
		case p, ok := <-packets:
			if !ok {
				packets = nil
				continue
			}
			a.capturePacket(p)
		case now := <-marks.C:
			a.markUploads(now)
		}
	}
}

// observe converges the driver to the view's traces and captures and
// reports what changed.
func (a *Agent) observe(ctx context.Context) {
	o := a.tracer
	o.mu.Lock()
	v := o.view
	o.mu.Unlock()
	var traces []datapath.Trace
	var captures []datapath.Capture
	byID := map[string]*view.Trace{}
	capsByID := map[string]*view.Capture{}
	var bad []error
	for r := range v.All() {
		if r.Key.Type != view.TypeTrace && r.Key.Type != view.TypeCapture {
			continue
		}
		res, err := view.Decode(r)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		switch x := res.(type) {
		case *view.Trace:
			t, err := traceOf(x)
			if err != nil {
				bad = append(bad, &datapath.ObserveError{ID: r.Key.ID, Err: err})
				byID[r.Key.ID] = x
				continue
			}
			traces = append(traces, t)
			byID[t.ID] = x
		case *view.Capture:
			c, err := captureOf(x)
			if err != nil {
				a.log.Warn("capture refused", "capture", r.Key.ID, "err", err)
				continue
			}
			captures = append(captures, c)
			capsByID[c.ID] = x
		}
	}
	err := errors.Join(append(bad, o.drv.Observe(ctx, traces, captures))...)
	failed := map[string]error{}
	for _, e := range observeErrors(err) {
		failed[e.ID] = e.Err
	}
	if err != nil && len(failed) == 0 {
		a.log.Warn("observe failed", "err", err)
	}
	o.mu.Lock()
	o.traces = byID
	for id, t := range byID {
		if o.armed[id] == t.UID {
			continue
		}
		o.armed[id] = t.UID
		rep := trace.Report{Host: a.cfg.Host, UID: t.UID, Armed: true}
		if ferr := failed[id]; ferr != nil {
			rep = trace.Report{Host: a.cfg.Host, UID: t.UID, Error: ferr.Error()}
		}
		a.queueReport(t.Tenant, t.Name, rep)
	}
	for id := range o.armed {
		if byID[id] == nil {
			delete(o.armed, id)
		}
	}
	o.mu.Unlock()
	a.syncUploads(ctx, capsByID)
}

// observeErrors lists the ObserveErrors in err's tree.
func observeErrors(err error) []*datapath.ObserveError {
	var out []*datapath.ObserveError
	var walk func(error)
	walk = func(err error) {
		var oe *datapath.ObserveError
		switch e := err.(type) {
		case nil:
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		default:
			if errors.As(err, &oe) {
				out = append(out, oe)
			}
		}
	}
	walk(err)
	return out
}

var protoNames = map[uint8]datapath.Protocol{1: datapath.ProtoICMP, 6: datapath.ProtoTCP, 17: datapath.ProtoUDP}

// traceOf translates a view trace for the driver.
func traceOf(t *view.Trace) (datapath.Trace, error) {
	id := view.ID(t.Tenant, t.Name)
	out := datapath.Trace{ID: id, Fire: t.Fire, VNI: t.VNI, Token: t.Token, SPort: t.SPort, DPort: t.DPort,
		SourceIdentity: t.SourceIdentity, Count: t.Count}
	switch t.Mode {
	case apiv1.TraceProbe:
		out.Mode = datapath.TraceProbe
	case apiv1.TraceLive:
		out.Mode = datapath.TraceLive
	default:
		return out, fmt.Errorf("unknown mode %q", t.Mode)
	}
	p, ok := protoNames[t.Proto]
	if !ok {
		return out, fmt.Errorf("unknown protocol %d", t.Proto)
	}
	out.Proto = p
	var err error
	if out.Src, err = netip.ParseAddr(t.Src); err != nil {
		return out, fmt.Errorf("src: %w", err)
	}
	if out.Dst, err = netip.ParseAddr(t.Dst); err != nil {
		return out, fmt.Errorf("dst: %w", err)
	}
	if t.Source != "" {
		out.Source = view.ID(t.Tenant, t.Source)
	}
	if t.Dest != "" {
		out.Dest = view.ID(t.Tenant, t.Dest)
	}
	if t.Until != "" {
		if out.Until, err = apiv1.ParseTime(t.Until); err != nil {
			return out, fmt.Errorf("until: %w", err)
		}
	}
	if out.Token == 0 || out.Source == "" && out.Dest == "" {
		return out, errors.New("no token, or no local end")
	}
	return out, nil
}

// captureOf translates a view capture for the driver; its programs are
// checked (capture.Decode) before the driver sees them.
func captureOf(c *view.Capture) (datapath.Capture, error) {
	out := datapath.Capture{ID: view.ID(c.Tenant, c.Name), DroppedOnly: c.DroppedOnly, Snaplen: c.Snaplen, Rate: c.Rate, Count: c.Count}
	for _, e := range c.Endpoints {
		out.Endpoints = append(out.Endpoints, view.ID(c.Tenant, e))
	}
	slices.Sort(out.Endpoints)
	switch c.Direction {
	case apiv1.DirectionBoth, "":
	case apiv1.DirectionIn:
		out.Direction = datapath.DirIn
	case apiv1.DirectionOut:
		out.Direction = datapath.DirOut
	default:
		return out, fmt.Errorf("unknown direction %q", c.Direction)
	}
	var err error
	if out.Program, err = capture.Decode(c.Program); err != nil {
		return out, fmt.Errorf("program: %w", err)
	}
	for _, u := range c.Underlay {
		p, err := capture.Decode(u.Program)
		if err != nil {
			return out, fmt.Errorf("underlay program of VNI %d: %w", u.VNI, err)
		}
		if out.Underlay == nil {
			out.Underlay = map[uint32][]bpf.RawInstruction{}
		}
		out.Underlay[u.VNI] = p
	}
	return out, nil
}

// addHop queues a hop the driver saw for the next report.
func (a *Agent) addHop(h datapath.TraceHop) {
	o := a.tracer
	hop := apiv1.TraceHop{Host: a.cfg.Host, Point: h.Point, Verdict: h.Verdict, Detail: h.Detail, Rule: h.Rule,
		Time: apiv1.FormatTime(h.Time), Packet: h.Packet, Attrs: h.Attrs}
	if h.Reason != datapath.DropNone {
		hop.Reason = h.Reason.String()
		if h.Reason == datapath.DropPolicy && h.Rule == "" && h.Endpoint != "" {
			// The drivers report a policy's drop as a drop hop: it is the
			// ingress's when its endpoint is the trace's destination.
			o.mu.Lock()
			t := o.traces[h.Trace]
			o.mu.Unlock()
			ingress := h.Point == datapath.HopRemotePolicy || t != nil && t.Dest != "" && view.ID(t.Tenant, t.Dest) == h.Endpoint
			hop.Rule = a.isolatedBy(h.Endpoint, ingress)
		}
	}
	o.mu.Lock()
	o.pending[h.Trace] = append(o.pending[h.Trace], hop)
	o.mu.Unlock()
}

// isolatedBy names the policies of the view that isolate an endpoint's
// direction, for a hop that a policy dropped: no rule of theirs allowed
// the packet.
func (a *Agent) isolatedBy(ep string, ingress bool) string {
	a.mu.Lock()
	v := a.view
	a.mu.Unlock()
	var names []string
	for r := range v.All() {
		if r.Key.Type != view.TypePolicy {
			continue
		}
		res, err := view.Decode(r)
		if err != nil {
			continue
		}
		p := res.(*view.Policy)
		if slices.Contains(p.Applies, ep) && (ingress && p.IngressIsolated || !ingress && p.EgressIsolated) {
			names = append(names, view.ID(p.Tenant, p.Name))
		}
	}
	dir := "egress"
	if ingress {
		dir = "ingress"
	}
	if len(names) == 0 {
		return "the VPC's default policy (deny) isolates the " + dir + " of " + ep
	}
	return "no " + dir + " rule of " + strings.Join(names, ", ") + " allows it"
}

// flushHops queues a report per trace with hops.
func (a *Agent) flushHops() {
	o := a.tracer
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, hops := range o.pending {
		t := o.traces[id]
		if t == nil {
			continue // the trace ended here
		}
		for len(hops) > 0 {
			n := min(len(hops), trace.MaxReportHops)
			a.queueReport(t.Tenant, t.Name, trace.Report{Host: a.cfg.Host, UID: t.UID, Hops: hops[:n]})
			hops = hops[n:]
		}
	}
	clear(o.pending)
}

// queueReport hands a report to the sender; one that does not fit is
// dropped (the trace then times out).
func (a *Agent) queueReport(tenant, name string, r trace.Report) {
	select {
	case a.tracer.reports <- traceReport{tenant, name, r}:
	default:
		a.log.Warn("trace report dropped: too many waiting", "trace", view.ID(tenant, name))
	}
}

// sendReports sends the trace reports, in order.
func (a *Agent) sendReports(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-a.tracer.reports:
			rctx, cancel := context.WithTimeout(ctx, reportTimeout)
			err := a.tracer.sink.ReportTrace(rctx, r.tenant, r.name, &r.r)
			cancel()
			if err != nil && ctx.Err() == nil {
				a.log.Warn("trace report failed", "trace", view.ID(r.tenant, r.name), "err", err)
			}
		}
	}
}
