package store

import (
	"bytes"
	"math"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// decodeEndpoint decodes a stored Endpoint as apiv1.DecodeInto does, for
// the JSON that EncodeObject writes, without reflection: a list of a
// million endpoints spends most of its time in encoding/json otherwise,
// and this takes about a quarter of its time (BenchmarkDecodeEndpoint).
// ok is false for anything outside that JSON, which the caller then
// decodes with apiv1.DecodeInto: a field it does not know (or in another
// case), annotations and owner references, another kind, a repeated
// field, null, a string with an escape or a byte outside ASCII, a number
// that is negative or not an integer, invalid JSON. What it decodes
// equals DecodeInto's result (TestDecodeEndpoint, FuzzDecodeEndpoint).
func decodeEndpoint(data []byte) (ep *apiv1.Endpoint, ok bool) {
	ep = &apiv1.Endpoint{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint}}
	d := epDecoder{data: data}
	m, spec, st := &ep.Metadata, &ep.Spec, &ep.Status
	ok = d.object(func(key []byte) bool {
		switch string(key) {
		case "apiVersion":
			return d.str(&ep.APIVersion)
		case "kind":
			return d.str(&ep.Kind)
		case "metadata":
			return d.object(func(key []byte) bool {
				switch string(key) {
				case "name":
					return d.str(&m.Name)
				case "tenant":
					return d.str(&m.Tenant)
				case "labels":
					return d.labels(&m.Labels)
				case "uid":
					return d.str(&m.UID)
				case "resourceVersion":
					return d.str(&m.ResourceVersion)
				case "generation":
					return d.int64(&m.Generation)
				case "creationTimestamp":
					return d.str(&m.CreationTimestamp)
				}
				return false
			})
		case "spec":
			return d.object(func(key []byte) bool {
				switch string(key) {
				case "subnet":
					return d.str(&spec.Subnet)
				case "host":
					return d.str(&spec.Host)
				case "ip":
					return d.str(&spec.IP)
				case "mac":
					return d.str(&spec.MAC)
				case "netns":
					return d.str(&spec.Netns)
				case "qosClass":
					return d.str(&spec.QoSClass)
				}
				return false
			})
		case "status":
			return d.object(func(key []byte) bool {
				switch string(key) {
				case "ip":
					return d.str(&st.IP)
				case "mac":
					return d.str(&st.MAC)
				case "host":
					return d.str(&st.Host)
				case "netns":
					return d.str(&st.Netns)
				case "vni":
					return d.uint32(&st.VNI)
				case "phase":
					return d.str(&st.Phase)
				case "message":
					return d.str(&st.Message)
				case "identity":
					return d.uint32(&st.Identity)
				case "conditions":
					return d.conditions(&st.Conditions)
				}
				return false
			})
		}
		return false
	})
	d.space()
	if !ok || d.i != len(d.data) || ep.Kind != apiv1.KindEndpoint {
		return nil, false // DecodeInto refuses another kind
	}
	return ep, true
}

// epDecoder reads the JSON subset of decodeEndpoint from data at i.
type epDecoder struct {
	data []byte
	i    int
}

func (d *epDecoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips white space and consumes c, if it comes next.
func (d *epDecoder) next(c byte) bool {
	d.space()
	if d.i < len(d.data) && d.data[d.i] == c {
		d.i++
		return true
	}
	return false
}

// object reads an object, calling field for each key with the decoder at
// its value; field reads the value or returns false. A key seen twice
// fails (encoding/json would merge a repeated map or object).
func (d *epDecoder) object(field func(key []byte) bool) bool {
	if !d.next('{') {
		return false
	}
	if d.next('}') {
		return true
	}
	var buf [16][]byte
	seen := buf[:0]
	for {
		key, ok := d.raw()
		if !ok || !d.next(':') {
			return false
		}
		for _, s := range seen {
			if bytes.Equal(s, key) {
				return false
			}
		}
		seen = append(seen, key)
		if !field(key) {
			return false
		}
		if d.next('}') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// raw reads a string without escapes, control characters or bytes outside
// ASCII, and returns its bytes (in data).
func (d *epDecoder) raw() ([]byte, bool) {
	if !d.next('"') {
		return nil, false
	}
	for j := d.i; j < len(d.data); j++ {
		switch c := d.data[j]; {
		case c == '"':
			s := d.data[d.i:j]
			d.i = j + 1
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

func (d *epDecoder) str(p *string) bool {
	s, ok := d.raw()
	if ok {
		*p = string(s)
	}
	return ok
}

// digits reads an integer without sign, fraction or exponent, at most max.
func (d *epDecoder) digits(max uint64) (uint64, bool) {
	d.space()
	start := d.i
	var v uint64
	for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
		c := uint64(d.data[d.i] - '0')
		if v > (max-c)/10 {
			return 0, false
		}
		v = v*10 + c
		d.i++
	}
	n := d.i - start
	if n == 0 || (n > 1 && d.data[start] == '0') {
		return 0, false
	}
	if d.i < len(d.data) {
		switch d.data[d.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	return v, true
}

func (d *epDecoder) int64(p *int64) bool {
	v, ok := d.digits(math.MaxInt64)
	if ok {
		*p = int64(v)
	}
	return ok
}

func (d *epDecoder) uint32(p *uint32) bool {
	v, ok := d.digits(math.MaxUint32)
	if ok {
		*p = uint32(v)
	}
	return ok
}

// labels reads an object of strings into a new map.
func (d *epDecoder) labels(p *map[string]string) bool {
	m := map[string]string{}
	*p = m
	return d.object(func(key []byte) bool {
		var v string
		if !d.str(&v) {
			return false
		}
		m[string(key)] = v
		return true
	})
}

// conditions reads an array of conditions into a new slice.
func (d *epDecoder) conditions(p *[]apiv1.Condition) bool {
	if !d.next('[') {
		return false
	}
	conds := []apiv1.Condition{}
	if d.next(']') {
		*p = conds
		return true
	}
	for {
		var c apiv1.Condition
		ok := d.object(func(key []byte) bool {
			switch string(key) {
			case "type":
				return d.str(&c.Type)
			case "status":
				return d.str(&c.Status)
			case "reason":
				return d.str(&c.Reason)
			case "message":
				return d.str(&c.Message)
			case "observedGeneration":
				return d.int64(&c.ObservedGeneration)
			case "lastTransitionTime":
				return d.str(&c.LastTransitionTime)
			}
			return false
		})
		if !ok {
			return false
		}
		conds = append(conds, c)
		if d.next(']') {
			*p = conds
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}
