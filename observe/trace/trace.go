package trace

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Report is what an agent sends the controller about one trace, in the
// body of POST /apis/weft/v1/tenants/T/traces/NAME/report.
type Report struct {
	// Host is the sending agent's host.
	Host string `json:"host"`
	// UID is the trace's metadata.uid: a report about an earlier trace of
	// the same name is refused.
	UID string `json:"uid"`
	// Armed says the host's data plane is ready for the trace's packet.
	Armed bool `json:"armed,omitempty"`
	// Error says why the host could not take part.
	Error string `json:"error,omitempty"`
	// Hops the host observed since its last report.
	Hops []apiv1.TraceHop `json:"hops,omitempty"`
}

// Bounds of a report.
const (
	MaxReportBytes = 256 << 10
	MaxReportHops  = 256
	maxText        = 512
	maxAttrs       = 16
)

// ErrMalformed marks a report that does not decode or breaks the bounds.
var ErrMalformed = errors.New("trace: malformed report")

// DecodeReport decodes and checks a report: strict JSON (no unknown
// fields, nothing after the object), at most MaxReportBytes and
// MaxReportHops, known hop points, bounded text.
func DecodeReport(b []byte) (*Report, error) {
	if len(b) > MaxReportBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(b), MaxReportBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Report
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the report", ErrMalformed)
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &r, nil
}

func (r *Report) check() error {
	if r.Host == "" || !textOK(r.Host, 64) || !textOK(r.UID, 64) || !textOK(r.Error, maxText) {
		return errors.New("host, uid or error missing or malformed")
	}
	if len(r.Hops) > MaxReportHops {
		return fmt.Errorf("%d hops, at most %d", len(r.Hops), MaxReportHops)
	}
	for i, h := range r.Hops {
		if apiv1.HopRank(h.Point) == 0 {
			return fmt.Errorf("hop %d: unknown point %q", i, h.Point)
		}
		if h.Host != r.Host {
			return fmt.Errorf("hop %d: of host %q in a report of %q", i, h.Host, r.Host)
		}
		if h.Packet < 0 || h.Packet >= apiv1.MaxTraceCount || len(h.Attrs) > maxAttrs {
			return fmt.Errorf("hop %d: packet or attributes out of range", i)
		}
		if _, err := apiv1.ParseTime(h.Time); err != nil {
			return fmt.Errorf("hop %d: time %q", i, h.Time)
		}
		for _, s := range []string{h.Verdict, h.Detail, h.Rule, h.Reason} {
			if !textOK(s, maxText) {
				return fmt.Errorf("hop %d: text too long or malformed", i)
			}
		}
		for k, v := range h.Attrs {
			if !textOK(k, 64) || !textOK(v, maxText) {
				return fmt.Errorf("hop %d: attribute malformed", i)
			}
		}
	}
	return nil
}

func textOK(s string, n int) bool {
	return len(s) <= n && utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// Merge adds hops to the merged path cur and returns it in path order:
// by packet, by the hop's place on the path (apiv1.HopRank; on a tie the
// source's host before the destination's), then by time. A hop already
// in cur is not added twice, and the result holds at most
// apiv1.MaxTraceHops.
func Merge(cur, add []apiv1.TraceHop, sourceHost string) []apiv1.TraceHop {
	out := slices.Clone(cur)
	for _, h := range add {
		if !slices.ContainsFunc(out, func(o apiv1.TraceHop) bool { return sameHop(o, h) }) {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(a, b apiv1.TraceHop) int {
		return cmp.Or(cmp.Compare(a.Packet, b.Packet), cmp.Compare(apiv1.HopRank(a.Point), apiv1.HopRank(b.Point)),
			cmp.Compare(remote(a, sourceHost), remote(b, sourceHost)), cmp.Compare(a.Time, b.Time))
	})
	if len(out) > apiv1.MaxTraceHops {
		out = out[:apiv1.MaxTraceHops]
	}
	return out
}

func remote(h apiv1.TraceHop, sourceHost string) int {
	if h.Host == sourceHost {
		return 0
	}
	return 1
}

func sameHop(a, b apiv1.TraceHop) bool {
	return a.Host == b.Host && a.Point == b.Point && a.Packet == b.Packet && a.Time == b.Time &&
		a.Verdict == b.Verdict && a.Detail == b.Detail && a.Rule == b.Rule && a.Reason == b.Reason && maps.Equal(a.Attrs, b.Attrs)
}

// Outcome reads a merged path: the packets that reached their end
// (delivered or dropped), and the verdict and reason of the trace: Dropped
// with the first drop's reason if a packet was dropped, else Delivered.
func Outcome(hops []apiv1.TraceHop) (ended int, verdict, reason string) {
	done := map[int]bool{}
	for _, h := range hops {
		switch {
		case h.Point == apiv1.HopDrop || h.Verdict == "dropped":
			if !done[h.Packet] {
				done[h.Packet] = true
				if verdict != apiv1.VerdictDropped {
					verdict, reason = apiv1.VerdictDropped, cmp.Or(h.Reason, h.Detail)
				}
			}
		case h.Point == apiv1.HopDeliver:
			done[h.Packet] = true
		}
	}
	if len(done) > 0 && verdict == "" {
		verdict = apiv1.VerdictDelivered
	}
	return len(done), verdict, reason
}

// LastHop returns the last hop of the path (the point a lost packet was
// last seen), or false.
func LastHop(hops []apiv1.TraceHop) (apiv1.TraceHop, bool) {
	if len(hops) == 0 {
		return apiv1.TraceHop{}, false
	}
	return hops[len(hops)-1], true
}
