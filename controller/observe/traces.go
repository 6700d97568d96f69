package observe

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/observe/trace"
)

// resolve turns a new trace into what its hosts need: the ends (endpoint,
// host, address), the VPC's VNI, a token and a probe's source port; or a
// Failed status saying what is missing.
func (c *Controller) resolve(tr *apiv1.Trace, now time.Time) apiv1.TraceStatus {
	ttl, _ := apiv1.TTLOf(tr)
	created, err := apiv1.ParseTime(tr.Metadata.CreationTimestamp)
	if err != nil {
		created = now
	}
	s := apiv1.TraceStatus{Expires: apiv1.FormatTime(created.Add(ttl))}
	fail := func(format string, args ...any) apiv1.TraceStatus {
		s.Phase, s.Message = apiv1.PhaseFailed, fmt.Sprintf(format, args...)
		return s
	}
	t := tr.Metadata.Tenant
	from, vpc, err := c.endpoint(t, tr.Spec.From)
	if err != nil {
		return fail("spec.from: %v", err)
	}
	v, ok := c.st.Get(apiv1.KindVPC, t, vpc)
	if !ok || v.(*apiv1.VPC).Status.VNI == 0 {
		return fail("VPC %q of endpoint %q has no VNI", vpc, tr.Spec.From)
	}
	s.VNI = v.(*apiv1.VPC).Status.VNI
	s.Source = &apiv1.TraceEnd{Endpoint: from.Metadata.Name, Host: from.Spec.Host, IP: from.Status.IP}
	if ip, err := netip.ParseAddr(tr.Spec.To); err == nil {
		s.Destination = &apiv1.TraceEnd{IP: ip.String()}
		if ep := c.endpointAt(t, vpc, ip); ep != nil {
			s.Destination.Endpoint, s.Destination.Host = ep.Metadata.Name, ep.Spec.Host
		}
	} else {
		to, toVPC, err := c.endpoint(t, tr.Spec.To)
		if err != nil {
			return fail("spec.to: %v", err)
		}
		if toVPC != vpc {
			return fail("spec.to: endpoint %q is in VPC %q, %q in %q", tr.Spec.To, toVPC, tr.Spec.From, vpc)
		}
		s.Destination = &apiv1.TraceEnd{Endpoint: to.Metadata.Name, Host: to.Spec.Host, IP: to.Status.IP}
	}
	s.Hosts = []string{s.Source.Host}
	if h := s.Destination.Host; h != "" && h != s.Source.Host {
		s.Hosts = append(s.Hosts, h)
	}
	s.Token = uint32(random16())
	if tr.Spec.Mode == apiv1.TraceProbe && tr.Spec.Proto != "icmp" {
		s.SPort = 49152 + int(random16())%16384
	}
	s.Phase = apiv1.PhaseArming
	return s
}

// endpoint returns a placed endpoint with an address, and its VPC.
func (c *Controller) endpoint(tenant, name string) (*apiv1.Endpoint, string, error) {
	o, ok := c.st.Get(apiv1.KindEndpoint, tenant, name)
	if !ok {
		return nil, "", fmt.Errorf("endpoint %q not found", name)
	}
	ep := o.(*apiv1.Endpoint)
	if ep.Status.IP == "" || ep.Spec.Host == "" {
		return nil, "", fmt.Errorf("endpoint %q has no address or host yet", name)
	}
	sn, ok := c.st.Get(apiv1.KindSubnet, tenant, ep.Spec.Subnet)
	if !ok {
		return nil, "", fmt.Errorf("subnet %q of endpoint %q not found", ep.Spec.Subnet, name)
	}
	return ep, sn.(*apiv1.Subnet).Spec.VPC, nil
}

// endpointAt finds the endpoint of a VPC with address ip.
func (c *Controller) endpointAt(tenant, vpc string, ip netip.Addr) *apiv1.Endpoint {
	for _, sn := range c.st.SubnetsByVPC(tenant, vpc) {
		if p, err := netip.ParsePrefix(sn.Spec.CIDR); err != nil || !p.Contains(ip) {
			continue
		}
		for _, ep := range c.st.EndpointsBySubnet(tenant, sn.Metadata.Name) {
			if ep.Status.IP == ip.String() && ep.Spec.Host != "" {
				return ep
			}
		}
	}
	return nil
}

// traceDeadline is when a running trace completes whatever it has seen.
func (c *Controller) traceDeadline(tr *apiv1.Trace) (time.Time, bool) {
	started, err := apiv1.ParseTime(tr.Status.Started)
	if err != nil {
		return time.Time{}, false
	}
	if tr.Spec.Mode == apiv1.TraceLive {
		d, _ := apiv1.ParseDuration(tr.Spec.Duration, apiv1.DefaultTraceDuration, apiv1.MaxTraceDuration)
		return started.Add(d), true
	}
	return started.Add(c.cfg.ProbeTimeout), true
}

// timeOut completes a running trace whose time is up.
func timeOut(s *apiv1.TraceStatus) {
	s.Phase = apiv1.PhaseCompleted
	ended, verdict, reason := trace.Outcome(s.Hops)
	switch {
	case verdict != "" && ended > 0:
		s.Verdict, s.Reason = verdict, reason
	default:
		s.Verdict = apiv1.VerdictDropped
		if last, ok := trace.LastHop(s.Hops); ok {
			s.Reason = fmt.Sprintf("not seen after %s on %s", last.Point, last.Host)
		} else {
			s.Reason = "no packet was seen"
		}
	}
}

// maxBody bounds a report's body.
const maxBody = trace.MaxReportBytes

// report takes an agent's report about a trace: it arms the trace's host,
// releases the trace once every host is armed, and merges the hops.
func (c *Controller) report(w http.ResponseWriter, r *http.Request) {
	ref := apiv1.Ref{Kind: apiv1.KindTrace, Tenant: r.PathValue("tenant"), Name: r.PathValue("name")}
	o, _ := c.st.Get(ref.Kind, ref.Tenant, ref.Name)
	id, err := c.authorize(r, auth.VerbStatus, ref, o)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		rest.WriteError(w, apiv1.NewBadRequest("read report: %v", err))
		return
	}
	rep, err := trace.DecodeReport(body)
	if err != nil {
		rest.WriteError(w, apiv1.NewBadRequest("%v", err))
		return
	}
	tr := o.(*apiv1.Trace)
	if tr.Metadata.UID != rep.UID {
		rest.WriteError(w, apiv1.NewNotFound(ref))
		return
	}
	if !slices.Contains(tr.Status.Hosts, rep.Host) || (id.Role == auth.RoleAgent && rep.Host != id.Host) {
		rest.WriteError(w, apiv1.NewForbidden("host %q takes no part in trace %s", rep.Host, ref))
		return
	}
	now := c.cfg.Now()
	c.patch(r.Context(), tr, func(s *apiv1.TraceStatus) bool {
		return applyReport(tr, s, rep, now)
	})
	w.WriteHeader(http.StatusNoContent)
}

// applyReport changes a trace's status by a host's report and says
// whether it changed. Hops are merged also after the trace completed (a
// host's report may come after the one that ended it). A trace completes
// once the path has reached its end (every packet of a live trace) and
// the source host, which every path starts at, has reported.
func applyReport(tr *apiv1.Trace, s *apiv1.TraceStatus, rep *trace.Report, now time.Time) bool {
	if s.Phase == apiv1.PhaseFailed || s.Phase == "" {
		return false
	}
	changed := false
	if rep.Error != "" && s.Phase != apiv1.PhaseCompleted {
		s.Phase, s.Message = apiv1.PhaseFailed, "host "+rep.Host+": "+rep.Error
		return true
	}
	if rep.Armed && !slices.Contains(s.Armed, rep.Host) {
		s.Armed = append(s.Armed, rep.Host)
		slices.Sort(s.Armed)
		changed = true
	}
	if s.Phase == apiv1.PhaseArming && len(s.Armed) == len(s.Hosts) {
		s.Phase, s.Started = apiv1.PhaseRunning, apiv1.FormatTime(now)
		changed = true
	}
	src := ""
	if s.Source != nil {
		src = s.Source.Host
	}
	if len(rep.Hops) > 0 {
		n := len(s.Hops)
		s.Hops = trace.Merge(s.Hops, rep.Hops, src)
		for _, h := range s.Hops {
			s.Packets = max(s.Packets, h.Packet+1)
		}
		changed = changed || len(s.Hops) != n
	}
	if s.Phase == apiv1.PhaseRunning && slices.ContainsFunc(s.Hops, func(h apiv1.TraceHop) bool { return h.Host == src }) {
		want := 1
		if tr.Spec.Mode == apiv1.TraceLive {
			want = tr.Spec.Count
		}
		if ended, verdict, reason := trace.Outcome(s.Hops); ended >= want {
			s.Phase, s.Verdict, s.Reason = apiv1.PhaseCompleted, verdict, reason
			changed = true
		}
	}
	return changed
}
