package compile

import (
	"slices"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/observe/capture"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// Traces and captures in host views. A trace is in the views of the hosts
// its status names (its ends' hosts) while it is Arming or Running, and
// fires once Running; a capture is in the views of the hosts with a local
// endpoint it selects while it is Running. Both are read from status, as
// package controller/observe resolved them: the compiler resolves
// nothing of its own for them.

// protoNumbers maps a trace's spec.proto to the IP protocol.
var protoNumbers = map[string]uint8{"icmp": 1, "tcp": 6, "udp": 17}

// observeResources adds the host's traces and captures to out.
func (c *Compiler) observeResources(host string, local []*apiv1.Endpoint, out map[wire.ResourceKey]encoded) {
	for _, o := range c.st.List(apiv1.KindTrace, "") {
		tr := o.(*apiv1.Trace)
		if v := traceView(tr, host); v != nil {
			// The destination host names the rule that admits the source
			// by its security identity.
			if src, ok := c.st.Get(apiv1.KindEndpoint, tr.Metadata.Tenant, tr.Status.Source.Endpoint); ok {
				v.SourceIdentity = src.(*apiv1.Endpoint).Status.Identity
			}
			c.put(out, v)
		}
	}
	if captures := c.st.List(apiv1.KindCapture, ""); len(captures) > 0 {
		for _, o := range captures {
			if v := c.captureView(o.(*apiv1.Capture), local); v != nil {
				c.put(out, v)
			}
		}
	}
}

func traceView(tr *apiv1.Trace, host string) *view.Trace {
	s := &tr.Status
	if s.Phase != apiv1.PhaseArming && s.Phase != apiv1.PhaseRunning || !slices.Contains(s.Hosts, host) || s.Source == nil || s.Destination == nil {
		return nil
	}
	v := &view.Trace{
		Tenant: tr.Metadata.Tenant, Name: tr.Metadata.Name, UID: tr.Metadata.UID, Mode: tr.Spec.Mode, Fire: s.Phase == apiv1.PhaseRunning,
		VNI: s.VNI, Token: uint16(s.Token), Proto: protoNumbers[tr.Spec.Proto], Src: s.Source.IP, Dst: s.Destination.IP,
		SPort: uint16(cmpOr(s.SPort, tr.Spec.SPort)), DPort: uint16(tr.Spec.DPort), Count: tr.Spec.Count,
	}
	if s.Source.Host == host {
		v.Source = s.Source.Endpoint
	}
	if s.Destination.Host == host {
		v.Dest = s.Destination.Endpoint
	}
	if tr.Spec.Mode == apiv1.TraceLive && v.Fire {
		if started, err := apiv1.ParseTime(s.Started); err == nil {
			d, _ := apiv1.ParseDuration(tr.Spec.Duration, apiv1.DefaultTraceDuration, apiv1.MaxTraceDuration)
			v.Until = apiv1.FormatTime(started.Add(d))
		}
	}
	return v
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// captureView is a running capture's resource for a host with the local
// endpoints local, nil if it selects none of them.
func (c *Compiler) captureView(cp *apiv1.Capture, local []*apiv1.Endpoint) *view.Capture {
	if cp.Status.Phase != apiv1.PhaseRunning {
		return nil
	}
	v := &view.Capture{
		Tenant: cp.Metadata.Tenant, Name: cp.Metadata.Name, UID: cp.Metadata.UID, Program: cp.Status.Program, Direction: cp.Spec.Direction,
		DroppedOnly: cp.Spec.DroppedOnly, Snaplen: cp.Spec.Snaplen, Rate: cp.Spec.RatePerHost, Count: cp.Spec.Count,
		Collector: cp.Status.Collector, Until: cp.Status.Ends,
	}
	var vnis []uint32
	for _, ep := range local {
		if ep.Metadata.Tenant != cp.Metadata.Tenant || !c.selects(cp, ep) {
			continue
		}
		v.Endpoints = append(v.Endpoints, ep.Metadata.Name)
		if cp.Spec.Underlay && ep.Status.VNI != 0 && !slices.Contains(vnis, ep.Status.VNI) {
			vnis = append(vnis, ep.Status.VNI)
		}
	}
	if len(v.Endpoints) == 0 {
		return nil
	}
	slices.Sort(v.Endpoints)
	slices.Sort(vnis)
	for _, vni := range vnis {
		v.Underlay = append(v.Underlay, view.UnderlayProgram{VNI: vni, Program: capture.Encode(capture.UnderlayProgram(vni))})
	}
	return v
}

// selects reports whether a capture selects an endpoint of its tenant.
func (c *Compiler) selects(cp *apiv1.Capture, ep *apiv1.Endpoint) bool {
	switch {
	case cp.Spec.Endpoint != "":
		return ep.Metadata.Name == cp.Spec.Endpoint
	case cp.Spec.Selector != nil:
		return cp.Spec.Selector.Matches(ep.Metadata.Labels)
	}
	sn, ok := c.st.Get(apiv1.KindSubnet, ep.Metadata.Tenant, ep.Spec.Subnet)
	return ok && sn.(*apiv1.Subnet).Spec.VPC == cp.Spec.VPC
}

// markObserve marks the hosts a Trace or Capture event concerns. Status
// writes that change nothing a view holds (hops, counts) mark none.
func (c *Compiler) markObserve(ev store.Event, dirty map[string]struct{}) {
	switch o := ev.Object.(type) {
	case *apiv1.Trace:
		old, _ := ev.Old.(*apiv1.Trace)
		if old != nil && ev.Type == store.EventModified && sameTraceView(old, o) {
			return
		}
		for _, t := range []*apiv1.Trace{o, old} {
			if t != nil {
				for _, h := range t.Status.Hosts {
					dirty[h] = struct{}{}
				}
			}
		}
	case *apiv1.Capture:
		old, _ := ev.Old.(*apiv1.Capture)
		if old != nil && ev.Type == store.EventModified && old.Status.Phase == o.Status.Phase && old.Status.Ends == o.Status.Ends {
			return
		}
		c.markCaptureHosts(o, dirty)
	}
}

func sameTraceView(a, b *apiv1.Trace) bool {
	return a.Status.Phase == b.Status.Phase && a.Status.Token == b.Status.Token && a.Status.Started == b.Status.Started &&
		slices.Equal(a.Status.Hosts, b.Status.Hosts)
}

// markCaptureHosts marks the hosts this replica compiled that hold an
// endpoint the capture may select.
func (c *Compiler) markCaptureHosts(cp *apiv1.Capture, dirty map[string]struct{}) {
	t := cp.Metadata.Tenant
	if cp.Spec.Endpoint != "" {
		if o, ok := c.st.Get(apiv1.KindEndpoint, t, cp.Spec.Endpoint); ok {
			dirty[o.(*apiv1.Endpoint).Spec.Host] = struct{}{}
		}
		return
	}
	for k, hosts := range c.vpcHosts {
		if k.tenant == t && (cp.Spec.VPC == "" || k.name == cp.Spec.VPC) {
			for h := range hosts {
				dirty[h] = struct{}{}
			}
		}
	}
}
