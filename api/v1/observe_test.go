package v1

import (
	"errors"
	"slices"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

func mkTrace(f ...func(*Trace)) *Trace {
	o := &Trace{Metadata: meta("acme", "t1"), Spec: TraceSpec{From: "web-1", To: "db-1", Proto: "tcp", DPort: 5432}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

func mkCapture(f ...func(*Capture)) *Capture {
	o := &Capture{Metadata: meta("acme", "c1"), Spec: CaptureSpec{Endpoint: "web-1", Filter: "tcp port 80"}}
	for _, fn := range f {
		fn(o)
	}
	return o
}

// fieldsOf returns the fields an Invalid error names, sorted.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a StatusError", err)
	}
	var fs []string
	for _, c := range se.Causes {
		fs = append(fs, c.Field)
	}
	slices.Sort(fs)
	return fs
}

func TestValidateObserveKinds(t *testing.T) {
	ep := func(name, subnet string) *Endpoint {
		return mkEndpoint(func(e *Endpoint) { e.Metadata.Name, e.Spec.Subnet = name, subnet })
	}
	other := mkVPC(func(v *VPC) { v.Metadata.Name, v.Spec.CIDRs = "other", []string{"10.9.0.0/16"} })
	l := newLookup(mkTenant(), mkVPC(), other,
		mkSubnet(func(s *Subnet) { s.Metadata.Name, s.Spec.CIDR = "a", "10.0.1.0/24" }),
		mkSubnet(func(s *Subnet) { s.Metadata.Name, s.Spec.VPC, s.Spec.CIDR = "x", "other", "10.9.1.0/24" }),
		ep("web-1", "a"), ep("db-1", "a"), ep("far-1", "x"))
	tests := []struct {
		name string
		obj  Object
		want []string // fields named, sorted
	}{
		{"trace probe", mkTrace(), nil},
		{"trace to an address", mkTrace(func(o *Trace) { o.Spec.To, o.Spec.Proto, o.Spec.DPort = "10.0.9.9", "icmp", 0 }), nil},
		{"trace live", mkTrace(func(o *Trace) { o.Spec.Mode, o.Spec.DPort, o.Spec.Count, o.Spec.Duration = "live", 0, 5, "1m" }), nil},
		{"trace unknown endpoints", mkTrace(func(o *Trace) { o.Spec.From, o.Spec.To = "nope", "nada" }), []string{"spec.from", "spec.to"}},
		{"trace across VPCs", mkTrace(func(o *Trace) { o.Spec.To = "far-1" }), []string{"spec.to"}},
		{"trace probe without port", mkTrace(func(o *Trace) { o.Spec.DPort = 0 }), []string{"spec.dport"}},
		{"trace bad proto and port", mkTrace(func(o *Trace) { o.Spec.Proto, o.Spec.DPort = "gre", 70000 }), []string{"spec.dport", "spec.proto"}},
		{"trace icmp with port", mkTrace(func(o *Trace) { o.Spec.Proto = "icmp" }), []string{"spec.dport"}},
		{"trace ipv6", mkTrace(func(o *Trace) { o.Spec.To = "2001:db8::1" }), []string{"spec.to"}},
		{"trace probe with count", mkTrace(func(o *Trace) { o.Spec.Count = 3 }), []string{"spec.mode"}},
		{"trace live bounds", mkTrace(func(o *Trace) { o.Spec.Mode, o.Spec.Count, o.Spec.Duration = "live", 500, "1h" }), []string{"spec.count", "spec.duration"}},
		{"trace ttl", mkTrace(func(o *Trace) { o.Spec.TTL = "48h" }), []string{"spec.ttl"}},
		{"trace mode", mkTrace(func(o *Trace) { o.Spec.Mode = "guess" }), []string{"spec.mode"}},
		{"capture endpoint", mkCapture(), nil},
		{"capture vpc", mkCapture(func(o *Capture) { o.Spec.Endpoint, o.Spec.VPC = "", "main" }), nil},
		{"capture selector", mkCapture(func(o *Capture) {
			o.Spec.Endpoint, o.Spec.Selector = "", &LabelSelector{MatchLabels: map[string]string{"app": "web"}}
		}), nil},
		{"capture none selected", mkCapture(func(o *Capture) { o.Spec.Endpoint = "" }), []string{"spec"}},
		{"capture two selected", mkCapture(func(o *Capture) { o.Spec.VPC = "main" }), []string{"spec"}},
		{"capture unknown refs", mkCapture(func(o *Capture) { o.Spec.Endpoint = "nope" }), []string{"spec.endpoint"}},
		{"capture unknown vpc", mkCapture(func(o *Capture) { o.Spec.Endpoint, o.Spec.VPC = "", "nope" }), []string{"spec.vpc"}},
		{"capture bounds", mkCapture(func(o *Capture) {
			o.Spec.Count, o.Spec.Snaplen, o.Spec.RatePerHost, o.Spec.Duration, o.Spec.Direction = -1, MaxSnaplen+1, MaxCaptureRate+1, "2h", "sideways"
		}), []string{"spec.count", "spec.direction", "spec.duration", "spec.ratePerHost", "spec.snaplen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Default(tt.obj)
			got := fieldsOf(t, ValidateCreate(tt.obj, l))
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestObserveDefaultsAndImmutability(t *testing.T) {
	tr := mkTrace(func(o *Trace) { o.Spec.Proto, o.Spec.Mode, o.Spec.DPort = "", "LIVE", 0 })
	Default(tr)
	if tr.Spec.Proto != "icmp" || tr.Spec.Mode != TraceLive || tr.Spec.Count != DefaultTraceCount {
		t.Errorf("defaulted trace spec %+v", tr.Spec)
	}
	c := mkCapture()
	Default(c)
	if c.Spec.Direction != DirectionBoth || c.Spec.Count != DefaultCaptureCount || c.Spec.Snaplen != DefaultSnaplen || c.Spec.RatePerHost != DefaultCaptureRate {
		t.Errorf("defaulted capture spec %+v", c.Spec)
	}
	changed := mkCapture(func(o *Capture) { o.Spec.Filter = "udp" })
	Default(changed)
	if got := fieldsOf(t, ValidateUpdate(changed, c, nil)); !slices.Equal(got, []string{"spec"}) {
		t.Errorf("changing a capture's spec: fields %v, want spec", got)
	}
	if d, ok := TTLOf(mkTrace(func(o *Trace) { o.Spec.TTL = "90s" })); !ok || d != 90*time.Second {
		t.Errorf("TTLOf = %v, %v", d, ok)
	}
	if d, _ := TTLOf(mkCapture()); d != DefaultObserveTTL {
		t.Errorf("default TTL %v", d)
	}
	if HopRank(HopSourceVeth) >= HopRank(HopDeliver) || HopRank("nope") != 0 {
		t.Error("hop ranks out of path order")
	}
}
