package agent

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// reportTimeout bounds one Register or ReportEndpoints call.
const reportTimeout = 30 * time.Second

// publishReports computes the status of every local endpoint of d, the
// translation of v, after a Set whose result was setErr and hands it to
// the reporter loop.
func (a *Agent) publishReports(v *state.View, d *datapath.Desired, setErr error) {
	if a.cfg.Reporter == nil {
		return
	}
	var dec view.Decoder
	reports := make([]EndpointReport, 0, len(d.Endpoints))
	for i := range d.Endpoints {
		reports = append(reports, a.endpointReport(&dec, v, &d.Endpoints[i], setErr))
	}
	a.mu.Lock()
	if !slices.Equal(a.reports, reports) {
		a.reports = reports
		kick(a.reportKick)
	}
	a.mu.Unlock()
}

// publishAttached is publishReports after Attach: only the reports of
// endpoints ids change. The caller holds setMu.
func (a *Agent) publishAttached(v *state.View, d *datapath.Desired, setErr error, ids []string) {
	if a.cfg.Reporter == nil {
		return
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	a.mu.Lock()
	reports := slices.Clone(a.reports)
	a.mu.Unlock()
	// a.reports is of d (publishReports, under setMu): in its order.
	if len(reports) != len(d.Endpoints) {
		a.publishReports(v, d, setErr)
		return
	}
	var dec view.Decoder
	changed := false
	for i := range reports {
		if e := &d.Endpoints[i]; want[e.ID] && reports[i].ID == e.ID {
			r := a.endpointReport(&dec, v, e, setErr)
			changed = changed || r != reports[i]
			reports[i] = r
		}
	}
	if !changed {
		return
	}
	a.mu.Lock()
	a.reports = reports
	kick(a.reportKick)
	a.mu.Unlock()
}

// endpointReport is the status of local endpoint e of v after a Set whose
// result was setErr.
func (a *Agent) endpointReport(dec *view.Decoder, v *state.View, e *datapath.Endpoint, setErr error) EndpointReport {
	r := EndpointReport{ID: e.ID}
	r.UID, r.Generation = incarnation(dec, v, e.ID)
	// A VPC that failed alone keeps what was programmed before: its
	// endpoints forward, but not under the state of this view.
	vpcErr := vpcError(setErr, e.VNI)
	st, ok := a.driver.Status(e.ID)
	switch {
	case ok && st.Waiting != "":
		r.Netns, r.Phase, r.Message = st.Netns, PhasePending, st.Waiting
		r.PolicyErr, r.QoSErr = st.Waiting, st.Waiting // nothing of it is enforced
	case ok:
		r.Netns, r.Phase = st.Netns, PhaseReady
		r.PolicyErr, r.QoSErr = cmp.Or(st.PolicyErr, vpcErr), cmp.Or(st.QoSErr, vpcErr)
	case setErr != nil:
		r.Phase, r.Message = PhaseFailed, cmp.Or(vpcErr, setErr.Error())
	default:
		r.Phase, r.Message = PhaseFailed, "not programmed by the datapath"
	}
	if !ok { // nothing of it is enforced
		r.PolicyErr, r.QoSErr = r.Message, r.Message
	}
	return r
}

// vpcError returns the text of the datapath.VPCError of VNI vni in err's
// tree, "" if there is none.
func vpcError(err error, vni uint32) string {
	switch e := err.(type) {
	case nil:
		return ""
	case *datapath.VPCError:
		if e.VNI == vni {
			return e.Error()
		}
	case interface{ Unwrap() []error }:
		for _, err := range e.Unwrap() {
			if s := vpcError(err, vni); s != "" {
				return s
			}
		}
		return ""
	}
	return vpcError(errors.Unwrap(err), vni)
}

// incarnation returns the UID and generation of endpoint id in v ("", 0 if
// unknown).
func incarnation(dec *view.Decoder, v *state.View, id string) (string, int64) {
	r, ok := v.Get(wire.ResourceKey{Type: view.TypeEndpoint, ID: id})
	if !ok {
		return "", 0
	}
	o, err := dec.Decode(r)
	if err != nil { // translated already: cannot happen
		return "", 0
	}
	e := o.(*view.Endpoint)
	return e.UID, e.Generation
}

// reportLoop registers the host (until it succeeds) and then reports each
// endpoint's status whenever it changes, retrying failures with backoff.
func (a *Agent) reportLoop(ctx context.Context) {
	registered := false
	sent := map[string]EndpointReport{}
	attempt := 0
	for {
		failed := false
		if !registered {
			underlay := ""
			if a.cfg.UnderlayIP.IsValid() {
				underlay = a.cfg.UnderlayIP.String()
			}
			rctx, cancel := context.WithTimeout(ctx, reportTimeout)
			err := a.cfg.Reporter.Register(rctx, a.cfg.Host, underlay)
			cancel()
			switch {
			case err == nil:
				registered = true
				a.log.Info("host registered", "underlay_ip", underlay)
			case ctx.Err() != nil:
				return
			case errors.Is(err, ErrRejected):
				registered = true // retrying cannot help; report endpoints anyway
				a.counters.reportErr.Add(1)
				a.log.Error("host registration refused", "err", err)
			default:
				failed = true
				a.counters.reportErr.Add(1)
				a.log.Warn("host registration failed, retrying", "err", err)
			}
		}
		if registered {
			a.mu.Lock()
			cur := a.reports
			a.mu.Unlock()
			var changed []EndpointReport
			keep := make(map[string]bool, len(cur))
			for _, r := range cur {
				keep[r.ID] = true
				if sent[r.ID] != r {
					changed = append(changed, r)
				}
			}
			for id := range sent {
				if !keep[id] {
					changed = append(changed, EndpointReport{ID: id, Gone: true})
				}
			}
			if len(changed) > 0 {
				rctx, cancel := context.WithTimeout(ctx, reportTimeout)
				err := a.cfg.Reporter.ReportEndpoints(rctx, changed)
				cancel()
				switch {
				case ctx.Err() != nil:
					return
				case err == nil || errors.Is(err, ErrRejected):
					if err != nil {
						a.counters.reportErr.Add(1)
						a.log.Error("endpoint status refused", "err", err)
					}
					for _, r := range changed {
						if r.Gone {
							delete(sent, r.ID)
						} else {
							sent[r.ID] = r
						}
					}
				default:
					failed = true
					a.counters.reportErr.Add(1)
					a.log.Warn("report endpoint status failed, retrying", "endpoints", len(changed), "err", err)
				}
			}
		}
		if failed {
			// Wait out the backoff even if reports change meanwhile (the
			// kick stays pending; the retry sends the latest reports).
			attempt = min(attempt+1, 62)
			if !sleep(ctx, a.cfg.Backoff.Delay(attempt, a.cfg.BackoffRand)) {
				return
			}
			continue
		}
		attempt = 0
		select {
		case <-ctx.Done():
			return
		case <-a.reportKick:
		}
	}
}
