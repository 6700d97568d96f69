package view

import (
	"math"
	"unicode/utf8"
)

// A one-pass decoder for the JSON of the view resources an agent decodes
// by the thousand: Host, VPC, Endpoint and QoS. encoding/json reads a
// resource twice (a validity scan, then the decoding) and walks every
// field by reflection; this decoder reads each byte once, straight into
// the struct. It follows wire's decoder of Delta bodies (wire/fastjson.go).
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

// fastMaxDepth bounds the nesting of a value skipped (json.Unmarshal
// allows 10,000 levels; deeper values are left to it).
const fastMaxDepth = 1000

// fastDecoder reads b from position i. Its methods return false when the
// input leaves the plain form (see above).
type fastDecoder struct {
	b []byte
	i int
	// seen is the set of fields already decoded in the object being read
	// (bit n: the field passed to once(n)).
	seen uint32
}

// document decodes b as one object, each field by field, followed by
// nothing but whitespace.
func (d *fastDecoder) document(field func(key []byte) bool) bool {
	if !d.object(field) {
		return false
	}
	d.space()
	return d.i == len(d.b)
}

func (d *fastDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips whitespace and returns the next byte (0 at the end).
func (d *fastDecoder) next() byte {
	d.space()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// object decodes an object, calling field for each member with the
// decoder positioned at the value; field must consume the value.
func (d *fastDecoder) object(field func(key []byte) bool) bool {
	if d.next() != '{' {
		return false
	}
	d.i++
	outer := d.seen // the fields seen in the enclosing object
	d.seen = 0
	if d.next() == '}' {
		d.i++
		d.seen = outer
		return true
	}
	for {
		if d.next() != '"' {
			return false
		}
		key, ok := d.fieldName()
		if !ok || d.next() != ':' {
			return false
		}
		d.i++
		if !field(key) {
			return false
		}
		switch d.next() {
		case ',':
			d.i++
		case '}':
			d.i++
			d.seen = outer
			return true
		default:
			return false
		}
	}
}

// once marks field n as seen; a repeated field is left to json.Unmarshal.
func (d *fastDecoder) once(n uint) bool {
	if d.seen&(1<<n) != 0 {
		return false
	}
	d.seen |= 1 << n
	return true
}

// fieldName reads a quoted field name of printable ASCII without escapes.
func (d *fastDecoder) fieldName() ([]byte, bool) {
	start := d.i + 1
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			return d.b[start:j], true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// unknownField skips the value of a field that is not one of known; a
// name that matches one of them but for case (json.Unmarshal would decode
// it into that field) gives up.
func (d *fastDecoder) unknownField(key []byte, known []string) bool {
	for _, k := range known {
		if equalFoldASCII(key, k) {
			return false
		}
	}
	return d.skipValue()
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// digits reads a plain unsigned integer (what strconv.ParseUint accepts
// of a JSON number): no sign, no leading zero, no fraction or exponent,
// at most max.
func (d *fastDecoder) digits(max uint64) (uint64, bool) {
	start := d.i
	var n uint64
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c < '0' || c > '9' {
			break
		}
		if n > (max-uint64(c-'0'))/10 {
			return 0, false // out of range
		}
		n = n*10 + uint64(c-'0')
		d.i++
	}
	switch {
	case d.i == start:
		return 0, false
	case d.b[start] == '0' && d.i-start > 1:
		return 0, false // a leading zero: invalid JSON
	case d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E'):
		return 0, false // a fraction or exponent
	}
	return n, true
}

func (d *fastDecoder) uint64(v *uint64) bool {
	d.space()
	n, ok := d.digits(math.MaxUint64)
	if ok {
		*v = n
	}
	return ok
}

func (d *fastDecoder) uint32(v *uint32) bool {
	d.space()
	n, ok := d.digits(math.MaxUint32)
	if ok {
		*v = uint32(n)
	}
	return ok
}

// int reads an integer with an optional minus sign that fits an int.
func (d *fastDecoder) int(v *int) bool {
	d.space()
	neg := d.i < len(d.b) && d.b[d.i] == '-'
	if neg {
		d.i++
	}
	if !neg {
		n, ok := d.digits(math.MaxInt)
		if ok {
			*v = int(n)
		}
		return ok
	}
	n, ok := d.digits(-math.MinInt)
	if ok {
		*v = int(-n) // -(-MinInt) wraps to MinInt
	}
	return ok
}

// literal consumes lit if the input continues with it (and not with more
// letters: "truex" is invalid JSON).
func (d *fastDecoder) literal(lit string) bool {
	end := d.i + len(lit)
	if end > len(d.b) || string(d.b[d.i:end]) != lit {
		return false
	}
	if end < len(d.b) {
		if c := d.b[end]; 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			return false
		}
	}
	d.i = end
	return true
}

// rawString reads a quoted string without escapes or control characters
// and returns its bytes, which must be valid UTF-8 (json.Unmarshal would
// replace invalid bytes).
func (d *fastDecoder) rawString() ([]byte, bool) {
	if d.next() != '"' {
		return nil, false
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			s := d.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			d.i = j + 1
			return s, true
		case c < 0x20 || c == '\\':
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

func (d *fastDecoder) string(v *string) bool {
	s, ok := d.rawString()
	if ok {
		*v = string(s)
	}
	return ok
}

// array decodes an array, calling elem for each element with the decoder
// positioned at it.
func (d *fastDecoder) array(elem func() bool) bool {
	if d.next() != '[' {
		return false
	}
	d.i++
	if d.next() == ']' {
		d.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch d.next() {
		case ',':
			d.i++
		case ']':
			d.i++
			return true
		default:
			return false
		}
	}
}

// strings decodes an array of strings into (*v)[:0], reusing its storage;
// an empty array gives an empty slice, not nil (as json.Unmarshal).
func (d *fastDecoder) strings(v *[]string) bool {
	s := (*v)[:0]
	if s == nil {
		s = []string{}
	}
	ok := d.array(func() bool {
		var e string
		ok := d.string(&e)
		s = append(s, e)
		return ok
	})
	*v = s
	return ok
}

// labels decodes an object of strings into m, which must be empty.
// Object keys are taken as they are (no case folding; a repeated key
// overwrites, as json.Unmarshal into a map).
func (d *fastDecoder) labels(m map[string]string) bool {
	if d.next() != '{' {
		return false
	}
	d.i++
	if d.next() == '}' {
		d.i++
		return true
	}
	for {
		if d.next() != '"' {
			return false
		}
		k, ok := d.rawString()
		if !ok || d.next() != ':' {
			return false
		}
		d.i++
		v, ok := d.rawString()
		if !ok {
			return false
		}
		m[string(k)] = string(v)
		switch d.next() {
		case ',':
			d.i++
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

// skipValue skips one JSON value of any kind, checking that it is valid.
func (d *fastDecoder) skipValue() bool {
	d.space()
	return d.skip(0)
}

func (d *fastDecoder) skip(depth int) bool {
	if depth > fastMaxDepth {
		return false
	}
	switch d.next() {
	case '{':
		d.i++
		if d.next() == '}' {
			d.i++
			return true
		}
		for {
			if d.next() != '"' || !d.skipString() || d.next() != ':' {
				return false
			}
			d.i++
			if !d.skip(depth + 1) {
				return false
			}
			switch d.next() {
			case ',':
				d.i++
			case '}':
				d.i++
				return true
			default:
				return false
			}
		}
	case '[':
		return d.array(func() bool { return d.skip(depth + 1) })
	case '"':
		return d.skipString()
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	return d.skipNumber()
}

// skipString skips a valid JSON string (escapes allowed; any byte from
// 0x20 up, as json's scanner, which does not check UTF-8).
func (d *fastDecoder) skipString() bool {
	j := d.i + 1
	for j < len(d.b) {
		c := d.b[j]
		switch {
		case c == '"':
			d.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if j+1 >= len(d.b) {
				return false
			}
			switch d.b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(d.b) {
					return false
				}
				for _, h := range d.b[j+2 : j+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				j += 6
			default:
				return false
			}
		default:
			j++
		}
	}
	return false
}

// skipNumber skips a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *fastDecoder) skipNumber() bool {
	b, j := d.b, d.i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && '1' <= b[j] && b[j] <= '9':
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
	default:
		return false
	}
	if j < len(b) && b[j] == '.' {
		j++
		if j >= len(b) || b[j] < '0' || b[j] > '9' {
			return false
		}
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j >= len(b) || b[j] < '0' || b[j] > '9' {
			return false
		}
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
	}
	d.i = j
	return true
}
