package view

import (
	"strings"

	"github.com/weftnet/weft/internal/jsonscan"
)

// A one-pass decoder for the JSON of the view resources an agent decodes
// by the thousand: Host, VPC, Endpoint, Policy and QoS. encoding/json reads a
// resource twice (a validity scan, then the decoding) and walks every
// field by reflection; this decoder reads each byte once, straight into
// the struct. The scanning is jsonscan's, shared with wire's decoder of
// Delta bodies; this file adds the types of the view.
//
// It decodes only the plain form that Encode writes and other encoders of
// JSON normally produce: the struct's own field names (unknown fields are
// skipped), strings without escapes, integers without fraction or
// exponent, arrays and objects, any whitespace. On anything else (an
// escape, null, a field name that differs from a known one only in case, a
// repeated field, a number out of its field's range, non-ASCII in a field
// name, invalid JSON) it gives up, and the resource is decoded by
// json.Unmarshal, so the result, and the error, are exactly
// json.Unmarshal's for every input (FuzzDecode checks this).

// fastDecoder is a jsonscan.Scanner with the types of the view.
type fastDecoder struct {
	jsonscan.Scanner
}

// uint32s decodes an array of uint32 into a new slice of its exact
// length (empty, not nil, for an empty array), growing it in sc.
func (d *fastDecoder) uint32s(v *[]uint32, sc *scratch) bool {
	s := sc.ids[:0]
	ok := d.Array(func() bool {
		var e uint32
		ok := d.Uint32(&e)
		s = append(s, e)
		return ok
	})
	sc.ids = s
	*v = append(make([]uint32, 0, len(s)), s...)
	return ok
}

// strings decodes an array of strings into (*v)[:0], reusing its storage
// (a new slice of the exact length if *v is nil); an empty array gives an
// empty slice, not nil (as json.Unmarshal). The strings share one new
// allocation: sc lends the room to gather them.
func (d *fastDecoder) strings(v *[]string, sc *scratch) bool {
	raw := sc.raw[:0]
	defer func() { clear(raw); sc.raw = raw[:0] }() // slices of the input: not kept
	ok := d.Array(func() bool {
		b, ok := d.RawString()
		raw = append(raw, b)
		return ok
	})
	if !ok {
		return false
	}
	n := 0
	for _, b := range raw {
		n += len(b)
	}
	var text strings.Builder
	text.Grow(n)
	for _, b := range raw {
		text.Write(b)
	}
	all := text.String()
	s := (*v)[:0]
	if s == nil {
		s = make([]string, 0, len(raw))
	}
	for _, b := range raw {
		s, all = append(s, all[:len(b)]), all[len(b):]
	}
	*v = s
	return true
}

// labels decodes an object of strings into m, which must be empty.
// Object keys are taken as they are (no case folding; a repeated key
// overwrites, as json.Unmarshal into a map).
func (d *fastDecoder) labels(m map[string]string) bool {
	return d.Map(func(k []byte) bool {
		v, ok := d.RawString()
		if ok {
			m[string(k)] = string(v)
		}
		return ok
	})
}
