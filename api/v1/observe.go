package v1

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// Trace and Capture: the observability kinds. Both are tenant-scoped and
// short-lived: they expire spec.ttl after their creation (default
// DefaultObserveTTL) and are then deleted by the controller together with
// their data (a capture's packets).

// Kinds of the observability API.
const (
	KindTrace   = "Trace"
	KindCapture = "Capture"
)

// Phases of a Trace or Capture (status.phase).
const (
	PhaseArming    = "Arming"    // a trace: the hosts set up their observation points
	PhaseRunning   = "Running"   // observing
	PhaseCompleted = "Completed" // done; the status holds the result
)

// Trace modes (TraceSpec.Mode).
const (
	TraceProbe = "probe" // inject one marked packet at the source endpoint
	TraceLive  = "live"  // tag the next packets of a 5-tuple
)

// Trace verdicts (TraceStatus.Verdict).
const (
	VerdictDelivered = "Delivered"
	VerdictDropped   = "Dropped"
)

// Capture directions (CaptureSpec.Direction), seen from the endpoint.
const (
	DirectionBoth = "both"
	DirectionIn   = "in"  // sent to the endpoint
	DirectionOut  = "out" // sent by the endpoint
)

// Bounds and defaults of the observability kinds.
const (
	DefaultObserveTTL    = 10 * time.Minute
	MaxObserveTTL        = 24 * time.Hour
	DefaultTraceCount    = 10 // live mode
	MaxTraceCount        = 100
	DefaultTraceDuration = 30 * time.Second // live mode
	MaxTraceDuration     = 10 * time.Minute
	MaxTraceHops         = 2000
	DefaultCaptureTime   = 30 * time.Second
	MaxCaptureTime       = time.Hour
	DefaultCaptureCount  = 10_000
	MaxCaptureCount      = 1_000_000
	DefaultSnaplen       = 65535
	MaxSnaplen           = 262144
	DefaultCaptureRate   = 1000 // packets per second per host
	MaxCaptureRate       = 100_000
	MaxFilterLen         = 1024
	MaxCaptureHosts      = 1000
)

// ---- Trace ----

// Trace follows a packet from an endpoint to an endpoint or address and
// reports every hop the data plane took it through, as the hosts' kernels
// observed it. Create one; its status fills in.
type Trace struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     TraceSpec   `json:"spec"`
	Status   TraceStatus `json:"status,omitempty"`
}

// TraceSpec says what to trace. It cannot be changed.
type TraceSpec struct {
	// From is the source endpoint, of the trace's tenant.
	From string `json:"from"`
	// To is the destination: an endpoint of the tenant or an IPv4 address,
	// taken in From's VPC.
	To string `json:"to"`
	// Proto is tcp, udp or icmp (default icmp).
	Proto string `json:"proto,omitempty"`
	// DPort is the destination port (tcp, udp): required for a probe; in
	// live mode 0 means any.
	DPort int `json:"dport,omitempty"`
	// SPort is the source port a live trace matches (0: any).
	SPort int `json:"sport,omitempty"`
	// Mode is TraceProbe (the default: one marked packet is injected at
	// From's interface and consumed at the last hop, so it never reaches
	// an application) or TraceLive (the next Count real packets of the
	// 5-tuple are tagged, for at most Duration).
	Mode string `json:"mode,omitempty"`
	// Count is how many packets a live trace tags (default
	// DefaultTraceCount, at most MaxTraceCount).
	Count int `json:"count,omitempty"`
	// Duration bounds a live trace (default DefaultTraceDuration, at most
	// MaxTraceDuration), e.g. "30s".
	Duration string `json:"duration,omitempty"`
	// TTL is how long the object lives (default DefaultObserveTTL, at most
	// MaxObserveTTL), e.g. "10m".
	TTL string `json:"ttl,omitempty"`
}

// TraceStatus is written by the controller.
type TraceStatus struct {
	// Phase is Pending, Arming (the hosts set up their observation), Running
	// (the packet is on its way), Completed or Failed.
	Phase string `json:"phase,omitempty"`
	// Verdict is VerdictDelivered or VerdictDropped once Completed; Reason
	// says why a packet was dropped or not seen again.
	Verdict string `json:"verdict,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Message explains a Failed phase.
	Message string `json:"message,omitempty"`
	// Hops is the merged path: every hop of every traced packet, in path
	// order, at most MaxTraceHops.
	Hops []TraceHop `json:"hops,omitempty"`
	// Packets is the number of packets traced (1 for a probe).
	Packets int `json:"packets,omitempty"`
	// Source and Destination are the ends as resolved when the trace
	// started.
	Source      *TraceEnd `json:"source,omitempty"`
	Destination *TraceEnd `json:"destination,omitempty"`
	// VNI is the VPC's VNI; Token marks the trace's packets (a probe's IP
	// identification) and SPort is a probe's source port.
	VNI   uint32 `json:"vni,omitempty"`
	Token uint32 `json:"token,omitempty"`
	SPort int    `json:"sport,omitempty"`
	// Hosts take part; Armed lists those whose data plane is ready.
	Hosts []string `json:"hosts,omitempty"`
	Armed []string `json:"armed,omitempty"`
	// Started is when the packet was released (RFC 3339, UTC); Expires when
	// the object is deleted.
	Started string `json:"started,omitempty"`
	Expires string `json:"expires,omitempty"`
}

// TraceEnd is one end of a trace.
type TraceEnd struct {
	Endpoint string `json:"endpoint,omitempty"`
	Host     string `json:"host,omitempty"`
	IP       string `json:"ip"`
}

// Trace hop points (TraceHop.Point), in path order.
const (
	HopSourceVeth   = "source-veth"
	HopVPCRouter    = "vpc-router"
	HopPolicy       = "policy"
	HopRoute        = "route"
	HopEncap        = "encap"
	HopUnderlay     = "underlay"
	HopDecap        = "decap"
	HopRemotePolicy = "remote-policy"
	HopDeliver      = "deliver"
	HopDrop         = "drop"
)

// TraceHop is one observation of a traced packet.
type TraceHop struct {
	Host  string `json:"host"`
	Point string `json:"point"`
	// Verdict is what happened there: forward, allow, delivered, dropped,
	// not enforced.
	Verdict string `json:"verdict"`
	Detail  string `json:"detail,omitempty"`
	// Rule is the rule that decided (a policy hop).
	Rule string `json:"rule,omitempty"`
	// Reason says why the packet was dropped (a drop hop).
	Reason string `json:"reason,omitempty"`
	// Time is when the kernel saw it (RFC 3339 with nanoseconds).
	Time string `json:"time,omitempty"`
	// Packet numbers the packets of a live trace from 0.
	Packet int `json:"packet,omitempty"`
	// Attrs carries details: vni, remoteHost, outerSrc, outerDst, dscp.
	Attrs map[string]string `json:"attrs,omitempty"`
}

// ---- Capture ----

// Capture records a tenant's packets on the hosts of the endpoints it
// selects and returns them as one pcapng file
// (/apis/weft/v1/tenants/T/captures/NAME/pcapng).
type Capture struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta    `json:"metadata"`
	Spec     CaptureSpec   `json:"spec"`
	Status   CaptureStatus `json:"status,omitempty"`
}

// CaptureSpec selects what to capture: exactly one of Endpoint, VPC and
// Selector. It cannot be changed.
type CaptureSpec struct {
	// Endpoint is one endpoint of the tenant.
	Endpoint string `json:"endpoint,omitempty"`
	// VPC selects every endpoint of a VPC of the tenant.
	VPC string `json:"vpc,omitempty"`
	// Selector selects the tenant's endpoints by label.
	Selector *LabelSelector `json:"selector,omitempty"`
	// Filter is a pcap-filter(7) expression ("tcp port 80"), compiled once
	// by the controller; the hosts receive only its bytecode.
	Filter string `json:"filter,omitempty"`
	// Direction is both (the default), in (to the endpoint) or out (from
	// it).
	Direction string `json:"direction,omitempty"`
	// DroppedOnly records only the packets the data plane dropped, each
	// with its reason.
	DroppedOnly bool `json:"droppedOnly,omitempty"`
	// Underlay also records the VPC's encapsulated packets on each host's
	// underlay interface, outer headers included.
	Underlay bool `json:"underlay,omitempty"`
	// Duration bounds the capture (default DefaultCaptureTime, at most
	// MaxCaptureTime), e.g. "10s".
	Duration string `json:"duration,omitempty"`
	// Count bounds the packets recorded in all (default
	// DefaultCaptureCount, at most MaxCaptureCount).
	Count int `json:"count,omitempty"`
	// Snaplen bounds the bytes kept of a packet (default DefaultSnaplen,
	// at most MaxSnaplen).
	Snaplen int `json:"snaplen,omitempty"`
	// RatePerHost is each host's budget in packets per second (default
	// DefaultCaptureRate, at most MaxCaptureRate); what exceeds it is
	// counted in status.dropped, not recorded.
	RatePerHost int `json:"ratePerHost,omitempty"`
	// TTL is how long the object and its packets live (default
	// DefaultObserveTTL, at most MaxObserveTTL).
	TTL string `json:"ttl,omitempty"`
}

// CaptureStatus is written by the controller.
type CaptureStatus struct {
	// Phase is Pending, Running, Completed or Failed.
	Phase   string `json:"phase,omitempty"`
	Message string `json:"message,omitempty"`
	// Packets and Bytes are what the file holds; Dropped counts packets
	// the hosts saw but did not record (over the rate budget, lost).
	Packets int64 `json:"packets,omitempty"`
	Bytes   int64 `json:"bytes,omitempty"`
	Dropped int64 `json:"dropped,omitempty"`
	// Hosts sent packets.
	Hosts []string `json:"hosts,omitempty"`
	// Program is the filter compiled to classic BPF, one [code, jt, jf, k]
	// per instruction, for an Ethernet frame.
	Program [][4]uint32 `json:"program,omitempty"`
	// Collector is the API address of the controller replica that
	// collects the packets.
	Collector string `json:"collector,omitempty"`
	// Started is when the capture began, Ends when it stops at the latest
	// and Expires when the object is deleted (RFC 3339, UTC).
	Started string `json:"started,omitempty"`
	Ends    string `json:"ends,omitempty"`
	Expires string `json:"expires,omitempty"`
}

// GetObjectMeta implements Object.
func (o *Trace) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *Capture) GetObjectMeta() *ObjectMeta { return &o.Metadata }

var (
	_ Object = (*Trace)(nil)
	_ Object = (*Capture)(nil)
)

// ParseDuration parses a duration field: empty means def; the value
// must be positive and at most limit.
func ParseDuration(s string, def, limit time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("not a duration such as \"30s\" or \"5m\"")
	case d <= 0:
		return 0, fmt.Errorf("must be positive")
	case d > limit:
		return 0, fmt.Errorf("must be at most %s", limit)
	}
	return d, nil
}

// TTLOf returns the time to live of a Trace or Capture (its default when
// unset or invalid), and false for other kinds.
func TTLOf(o Object) (time.Duration, bool) {
	var s string
	switch o := o.(type) {
	case *Trace:
		s = o.Spec.TTL
	case *Capture:
		s = o.Spec.TTL
	default:
		return 0, false
	}
	d, err := ParseDuration(s, DefaultObserveTTL, MaxObserveTTL)
	if err != nil {
		d = DefaultObserveTTL
	}
	return d, true
}

func defaultTrace(o *Trace) {
	o.Spec.Proto = strings.ToLower(o.Spec.Proto)
	if o.Spec.Proto == "" {
		o.Spec.Proto = "icmp"
	}
	o.Spec.Mode = strings.ToLower(o.Spec.Mode)
	if o.Spec.Mode == "" {
		o.Spec.Mode = TraceProbe
	}
	if o.Spec.Mode == TraceLive && o.Spec.Count == 0 {
		o.Spec.Count = DefaultTraceCount
	}
	o.Spec.To = canonicalAddr(o.Spec.To)
}

func defaultCapture(o *Capture) {
	s := &o.Spec
	s.Direction = strings.ToLower(s.Direction)
	if s.Direction == "" {
		s.Direction = DirectionBoth
	}
	if s.Count == 0 {
		s.Count = DefaultCaptureCount
	}
	if s.Snaplen == 0 {
		s.Snaplen = DefaultSnaplen
	}
	if s.RatePerHost == 0 {
		s.RatePerHost = DefaultCaptureRate
	}
}

func (v *fieldErrors) trace(o *Trace) {
	s := &o.Spec
	v.name("spec.from", s.From, true)
	if s.To == "" {
		v.add("spec.to", MsgRequired)
	} else if strings.ContainsAny(s.To, ".:") {
		if ip, msg := parseUnicast(s.To); msg != "" {
			v.add("spec.to", msg)
		} else if !ip.Is4() {
			v.add("spec.to", MsgIPv6)
		}
	} else {
		v.name("spec.to", s.To, true)
	}
	switch s.Proto {
	case "tcp", "udp":
		if s.DPort == 0 && s.Mode != TraceLive {
			v.add("spec.dport", "is required for a tcp or udp probe")
		}
	case "icmp":
		if s.DPort != 0 || s.SPort != 0 {
			v.add("spec.dport", "ports are for tcp and udp only")
		}
	default:
		v.add("spec.proto", fmt.Sprintf("unknown protocol %q, want tcp, udp or icmp", s.Proto))
	}
	for _, p := range []struct {
		field string
		n     int
	}{{"spec.dport", s.DPort}, {"spec.sport", s.SPort}} {
		if p.n < 0 || p.n > MaxPort {
			v.add(p.field, fmt.Sprintf("must be 0..%d", MaxPort))
		}
	}
	switch s.Mode {
	case TraceProbe:
		if s.Count != 0 || s.Duration != "" || s.SPort != 0 {
			v.add("spec.mode", "count, duration and sport are for live traces only")
		}
	case TraceLive:
		if s.Count < 1 || s.Count > MaxTraceCount {
			v.add("spec.count", fmt.Sprintf("must be 1..%d", MaxTraceCount))
		}
		v.duration("spec.duration", s.Duration, MaxTraceDuration)
	default:
		v.add("spec.mode", fmt.Sprintf("unknown mode %q, want %s or %s", s.Mode, TraceProbe, TraceLive))
	}
	v.duration("spec.ttl", s.TTL, MaxObserveTTL)
}

func (v *fieldErrors) capture(o *Capture) {
	s := &o.Spec
	n := 0
	for _, set := range []bool{s.Endpoint != "", s.VPC != "", s.Selector != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.add("spec", "exactly one of endpoint, vpc and selector is required")
	}
	v.name("spec.endpoint", s.Endpoint, false)
	v.name("spec.vpc", s.VPC, false)
	if s.Selector != nil {
		v.addAll(s.Selector.Validate("spec.selector"))
	}
	if n := utf8.RuneCountInString(s.Filter); n > MaxFilterLen {
		v.add("spec.filter", fmt.Sprintf("must be at most %d characters, got %d", MaxFilterLen, n))
	}
	switch s.Direction {
	case DirectionBoth, DirectionIn, DirectionOut:
	default:
		v.add("spec.direction", fmt.Sprintf("unknown direction %q, want both, in or out", s.Direction))
	}
	for _, b := range []struct {
		field    string
		n, limit int
	}{{"spec.count", s.Count, MaxCaptureCount}, {"spec.snaplen", s.Snaplen, MaxSnaplen}, {"spec.ratePerHost", s.RatePerHost, MaxCaptureRate}} {
		if b.n < 1 || b.n > b.limit {
			v.add(b.field, fmt.Sprintf("must be 1..%d", b.limit))
		}
	}
	v.duration("spec.duration", s.Duration, MaxCaptureTime)
	v.duration("spec.ttl", s.TTL, MaxObserveTTL)
}

func (v *fieldErrors) duration(field, s string, limit time.Duration) {
	if _, err := ParseDuration(s, 0, limit); err != nil {
		v.add(field, err.Error())
	}
}

// traceRefs checks that a trace's endpoints exist; a destination endpoint
// must be in the source's VPC.
func (v *fieldErrors) traceRefs(o *Trace, l Lookup) {
	t := o.Metadata.Tenant
	from, ok := v.endpointRef(l, t, "spec.from", o.Spec.From)
	if _, err := netip.ParseAddr(o.Spec.To); err == nil || nameError(o.Spec.To) != "" {
		return
	}
	to, ok2 := v.endpointRef(l, t, "spec.to", o.Spec.To)
	if ok && ok2 {
		if vpcOfEndpoint(l, from) != vpcOfEndpoint(l, to) {
			v.add("spec.to", fmt.Sprintf("endpoint %q is in another VPC than %q", o.Spec.To, o.Spec.From))
		}
	}
}

func (v *fieldErrors) captureRefs(o *Capture, l Lookup) {
	t := o.Metadata.Tenant
	if o.Spec.Endpoint != "" {
		v.endpointRef(l, t, "spec.endpoint", o.Spec.Endpoint)
	}
	if o.Spec.VPC != "" && nameError(o.Spec.VPC) == "" {
		if _, ok := getAs[*VPC](l, KindVPC, t, o.Spec.VPC); !ok {
			v.add("spec.vpc", fmt.Sprintf("VPC %q not found", o.Spec.VPC))
		}
	}
}

func (v *fieldErrors) endpointRef(l Lookup, tenant, field, name string) (*Endpoint, bool) {
	if nameError(name) != "" {
		return nil, false
	}
	ep, ok := getAs[*Endpoint](l, KindEndpoint, tenant, name)
	if !ok {
		v.add(field, fmt.Sprintf("Endpoint %q not found", name))
	}
	return ep, ok
}

// vpcOfEndpoint names an endpoint's VPC through its subnet ("" if unknown).
func vpcOfEndpoint(l Lookup, ep *Endpoint) string {
	sn, ok := getAs[*Subnet](l, KindSubnet, ep.Metadata.Tenant, ep.Spec.Subnet)
	if !ok {
		return ""
	}
	return sn.Spec.VPC
}

// observeStatus bounds what the controller writes into a status.
func (v *fieldErrors) observeStatus(o Object) {
	switch o := o.(type) {
	case *Trace:
		v.message("status.message", o.Status.Message)
		v.tooMany("status.hops", len(o.Status.Hops), MaxTraceHops, "hops")
	case *Capture:
		v.message("status.message", o.Status.Message)
		v.tooMany("status.hosts", len(o.Status.Hosts), MaxCaptureHosts, "hosts")
	}
}

// hopOrder ranks hop points in path order (drop last: it ends a path).
var hopOrder = map[string]int{
	HopSourceVeth: 1, HopVPCRouter: 2, HopPolicy: 3, HopRoute: 4, HopEncap: 5, HopUnderlay: 6,
	HopDecap: 7, HopRemotePolicy: 8, HopDeliver: 9, HopDrop: 10,
}

// HopRank orders hop points along a packet's path: source-veth first,
// deliver and drop last; 0 for an unknown point.
func HopRank(point string) int { return hopOrder[point] }

// FormatTime is how the observability kinds write times.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTime parses a time FormatTime wrote (or RFC 3339).
func ParseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }
