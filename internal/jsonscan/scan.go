// Package jsonscan is a strict one-pass scanner for the plain form of
// JSON, for decoders that fall back to encoding/json on anything else.
//
// encoding/json reads a document twice (a validity scan, then the
// decoding) and walks every field by reflection. A decoder written on a
// Scanner reads each byte once, straight into its struct, as long as the
// input is in the plain form that encoders of JSON normally write: the
// struct's own field names (unknown fields are skipped, after a check
// that they are valid JSON), strings without escapes, integers without
// fraction or exponent, true and false, arrays and objects, any
// whitespace. On anything else (an escape, null where a value is wanted,
// a field name that differs from a known one only in case, a repeated
// field, a number out of its field's range, non-ASCII in a field name,
// invalid JSON) a method of the Scanner returns false: the decoder gives
// up and hands the whole input to json.Unmarshal, whose result, and
// error, are then what the caller gets. Giving up is always safe; taking
// an input that json.Unmarshal would decode differently, or reject, is
// the one thing a Scanner must never do.
//
// The users in this module are wire (Delta and Ack frame bodies) and view
// (Host, VPC, Endpoint and QoS resources); each keeps its own fuzz target
// that checks its decoder against json.Unmarshal (wire.FuzzFastDecode,
// view.FuzzDecode).
//
// A decoder decodes a document with Document, giving each field of a
// struct its own bit for Once, and usually embeds the Scanner in a type of
// its own that adds the methods for its types (see the example).
package jsonscan

import (
	"math"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of a value that Value skips (json.Unmarshal
// allows 10,000 levels; deeper values are left to it).
const MaxDepth = 1000

// A Scanner reads a document from the start (see Reset; the zero Scanner
// reads an empty input, which is not a document). Its methods return false
// when the input leaves the plain form (see the package comment); the
// Scanner is then to be discarded, its position being unspecified. The
// methods that store into a *T store only when they return true.
type Scanner struct {
	b []byte
	i int
	// seen is the set of fields already decoded in the object being read
	// (bit n: the field passed to Once(n)).
	seen uint32
}

// Reset makes s read b from the start. (A decoder declares its Scanner,
// or the type that embeds it, and resets it: returning a Scanner from a
// constructor would copy it to its place, at a cost a small document
// notices.)
func (s *Scanner) Reset(b []byte) {
	*s = Scanner{b: b}
}

// Document reads the whole input as one object (see Object) followed by
// nothing but whitespace.
func (s *Scanner) Document(field func(key []byte) bool) bool {
	if !s.Object(field) {
		return false
	}
	s.space()
	return s.i == len(s.b)
}

// Object reads an object, calling field for each member with the Scanner
// positioned at the value; field must consume the value (or return
// false). Field names are printable ASCII without escapes (see
// UnknownField for why). Each object has its own set of Once bits: they
// are cleared at the start and the enclosing object's are restored at
// the end.
func (s *Scanner) Object(field func(key []byte) bool) bool {
	outer := s.seen // the fields seen in the enclosing object
	s.seen = 0
	ok := s.members(fieldKey, field)
	s.seen = outer
	return ok
}

// keyForm is how members reads the key of each member.
type keyForm uint8

const (
	fieldKey keyForm = iota // a field name (see fieldName)
	dataKey                 // a map key (see RawString)
)

// members reads an object, reading each key as form says and calling
// member with the Scanner positioned at the value.
func (s *Scanner) members(form keyForm, member func(key []byte) bool) bool {
	if s.next() != '{' {
		return false
	}
	s.i++
	if s.next() == '}' {
		s.i++
		return true
	}
	for {
		if s.next() != '"' {
			return false
		}
		var key []byte
		var ok bool
		if form == fieldKey {
			key, ok = s.fieldName()
		} else {
			key, ok = s.RawString()
		}
		if !ok || s.next() != ':' {
			return false
		}
		s.i++
		if !member(key) {
			return false
		}
		switch s.next() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// Once marks field n (0 to 31) of the object being read as seen, and
// reports false if it was seen before: json.Unmarshal merges a repeated
// field into the first, which is left to it.
func (s *Scanner) Once(n uint) bool {
	if s.seen&(1<<n) != 0 {
		return false
	}
	s.seen |= 1 << n
	return true
}

// fieldName reads a quoted field name of printable ASCII without
// escapes, the Scanner being at its opening quote.
func (s *Scanner) fieldName() ([]byte, bool) {
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// UnknownField skips the value of a field whose name key is none of
// known, the names of the struct's fields. A name that equals one of them
// but for ASCII case gives up: json.Unmarshal would decode it into that
// field. (Field names are ASCII, so ASCII folding is all there is to
// check: the non-ASCII names that json.Unmarshal also folds, such as
// "ſ" for "s", never reach here.)
func (s *Scanner) UnknownField(key []byte, known []string) bool {
	for _, k := range known {
		if equalFoldASCII(key, k) {
			return false
		}
	}
	_, ok := s.Value()
	return ok
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

// space skips JSON whitespace.
func (s *Scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips whitespace and returns the next byte (0 at the end).
func (s *Scanner) next() byte {
	s.space()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// digits reads a plain unsigned integer (what strconv.ParseUint accepts
// of a JSON number): no sign, no leading zero, no fraction or exponent,
// at most max.
func (s *Scanner) digits(max uint64) (uint64, bool) {
	start := s.i
	var n uint64
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c < '0' || c > '9' {
			break
		}
		if n > (max-uint64(c-'0'))/10 {
			return 0, false // out of range
		}
		n = n*10 + uint64(c-'0')
		s.i++
	}
	switch {
	case s.i == start:
		return 0, false
	case s.b[start] == '0' && s.i-start > 1:
		return 0, false // a leading zero: invalid JSON
	case s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E'):
		return 0, false // a fraction or exponent
	}
	return n, true
}

// Uint64 reads a plain unsigned integer (digits only: no sign, fraction
// or exponent) into v.
func (s *Scanner) Uint64(v *uint64) bool {
	s.space()
	n, ok := s.digits(math.MaxUint64)
	if ok {
		*v = n
	}
	return ok
}

// Uint32 reads a plain unsigned integer that fits a uint32 into v.
func (s *Scanner) Uint32(v *uint32) bool {
	s.space()
	n, ok := s.digits(math.MaxUint32)
	if ok {
		*v = uint32(n)
	}
	return ok
}

// Int reads an integer with an optional minus sign (no fraction or
// exponent) that fits an int into v.
func (s *Scanner) Int(v *int) bool {
	s.space()
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	if !neg {
		n, ok := s.digits(math.MaxInt)
		if ok {
			*v = int(n)
		}
		return ok
	}
	n, ok := s.digits(-math.MinInt)
	if ok {
		*v = int(-n) // -(-MinInt) wraps to MinInt
	}
	return ok
}

// Bool reads true or false into v.
func (s *Scanner) Bool(v *bool) bool {
	s.space()
	switch {
	case s.literal("true"):
		*v = true
	case s.literal("false"):
		*v = false
	default:
		return false
	}
	return true
}

// literal consumes lit if the input continues with it (and not with more
// letters or digits: "truex" is invalid JSON).
func (s *Scanner) literal(lit string) bool {
	end := s.i + len(lit)
	if end > len(s.b) || string(s.b[s.i:end]) != lit {
		return false
	}
	if end < len(s.b) {
		if c := s.b[end]; 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			return false
		}
	}
	s.i = end
	return true
}

// RawString reads a quoted string without escapes or control characters
// and returns its bytes (a slice of the input), which must be valid UTF-8:
// json.Unmarshal would replace invalid bytes.
func (s *Scanner) RawString() ([]byte, bool) {
	if s.next() != '"' {
		return nil, false
	}
	start := s.i + 1
	ascii := true
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			str := s.b[start:j]
			if !ascii && !utf8.Valid(str) {
				return nil, false
			}
			s.i = j + 1
			return str, true
		case c < 0x20 || c == '\\':
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}

// String reads a string as RawString does into v (a copy).
func (s *Scanner) String(v *string) bool {
	str, ok := s.RawString()
	if ok {
		*v = string(str)
	}
	return ok
}

// Array reads an array, calling elem for each element with the Scanner
// positioned at it; elem must consume the element (or return false). An
// empty array calls elem never: a decoder that stores into a slice makes
// it empty, not nil, as json.Unmarshal does.
func (s *Scanner) Array(elem func() bool) bool {
	if s.next() != '[' {
		return false
	}
	s.i++
	if s.next() == ']' {
		s.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch s.next() {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// Map reads an object whose keys are data, not field names (a JSON
// object decoded into a Go map), calling entry for each member with the
// Scanner positioned at the value; entry must consume the value (or
// return false). Keys are read as RawString reads strings and taken as
// they are: no case folding, no Once bits (json.Unmarshal lets a repeated
// key overwrite).
func (s *Scanner) Map(entry func(key []byte) bool) bool {
	return s.members(dataKey, entry)
}

// Value skips one JSON value of any kind, nested at most MaxDepth deep,
// checking that it is valid JSON, and returns its bytes (a slice of the
// input). Unlike the other methods it accepts every form: escapes, null,
// numbers with sign, fraction and exponent, strings that are not valid
// UTF-8 (json's scanner does not check UTF-8).
func (s *Scanner) Value() ([]byte, bool) {
	s.space()
	start := s.i
	if !s.skip(0) {
		return nil, false
	}
	return s.b[start:s.i], true
}

func (s *Scanner) skip(depth int) bool {
	if depth > MaxDepth {
		return false
	}
	switch s.next() {
	case '{':
		// The loop of members, written again: a call of a closure for
		// each member would slow the skipping of values (the data of
		// every resource in a Delta) by a tenth.
		s.i++
		if s.next() == '}' {
			s.i++
			return true
		}
		for {
			if s.next() != '"' || !s.skipString() || s.next() != ':' {
				return false
			}
			s.i++
			if !s.skip(depth + 1) {
				return false
			}
			switch s.next() {
			case ',':
				s.i++
			case '}':
				s.i++
				return true
			default:
				return false
			}
		}
	case '[':
		return s.Array(func() bool { return s.skip(depth + 1) })
	case '"':
		return s.skipString()
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	return s.skipNumber()
}

// skipString skips a valid JSON string (escapes allowed; any byte from
// 0x20 up, as json's scanner, which does not check UTF-8), the Scanner
// being at its opening quote.
func (s *Scanner) skipString() bool {
	j := s.i + 1
	for j < len(s.b) {
		c := s.b[j]
		switch {
		case c == '"':
			s.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if j+1 >= len(s.b) {
				return false
			}
			switch s.b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(s.b) {
					return false
				}
				for _, h := range s.b[j+2 : j+6] {
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
func (s *Scanner) skipNumber() bool {
	b, j := s.b, s.i
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
	s.i = j
	return true
}
