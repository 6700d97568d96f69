package jsonscan

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// doc is a struct with a field of every kind a Scanner reads.
type doc struct {
	U64 uint64            `json:"u64"`
	U32 uint32            `json:"u32"`
	I   int               `json:"i"`
	B   bool              `json:"b"`
	S   string            `json:"s"`
	L   []string          `json:"l"`
	M   map[string]string `json:"m"`
	N   inner             `json:"n"`
	R   json.RawMessage   `json:"r"`
}

type inner struct {
	A uint64 `json:"a"`
}

var (
	docFields   = []string{"u64", "u32", "i", "b", "s", "l", "m", "n", "r"}
	innerFields = []string{"a"}
)

// decodeDoc decodes b into a zero doc as a decoder written on a Scanner
// does, or reports false.
func decodeDoc(b []byte) (doc, bool) {
	var v doc
	var s Scanner
	s.Reset(b)
	ok := s.Document(func(key []byte) bool {
		switch string(key) {
		case "u64":
			return s.Once(0) && s.Uint64(&v.U64)
		case "u32":
			return s.Once(1) && s.Uint32(&v.U32)
		case "i":
			return s.Once(2) && s.Int(&v.I)
		case "b":
			return s.Once(3) && s.Bool(&v.B)
		case "s":
			return s.Once(4) && s.String(&v.S)
		case "l":
			if !s.Once(5) {
				return false
			}
			v.L = []string{}
			return s.Array(func() bool {
				var e string
				ok := s.String(&e)
				v.L = append(v.L, e)
				return ok
			})
		case "m":
			if !s.Once(6) {
				return false
			}
			v.M = map[string]string{}
			return s.Map(func(k []byte) bool {
				e, ok := s.RawString()
				if ok {
					v.M[string(k)] = string(e)
				}
				return ok
			})
		case "n":
			return s.Once(7) && s.Object(func(key []byte) bool {
				if string(key) == "a" {
					return s.Once(0) && s.Uint64(&v.N.A)
				}
				return s.UnknownField(key, innerFields)
			})
		case "r":
			if !s.Once(8) {
				return false
			}
			raw, ok := s.Value()
			if ok {
				v.R = json.RawMessage(append([]byte(nil), raw...))
			}
			return ok
		}
		return s.UnknownField(key, docFields)
	})
	return v, ok
}

// checkDoc checks the one promise of a Scanner: an input it takes,
// json.Unmarshal decodes without error to the same value.
func checkDoc(t *testing.T, b []byte) (accepted bool) {
	t.Helper()
	got, ok := decodeDoc(b)
	if !ok {
		return false
	}
	var want doc
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("scanner took %q, json.Unmarshal fails: %v", b, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("from %q (-json.Unmarshal +scanner):\n%s", b, diff)
	}
	return true
}

// docCases are inputs with the scanner's decision: accept (decode it) or
// give up (leave it to json.Unmarshal). Every give-up here is one the
// scanner must make (json.Unmarshal rejects the input or decodes it
// otherwise than the plain reading) or chooses to make (a form it does not
// decode: escapes, null, deep nesting).
var docCases = []struct {
	name   string
	in     string
	accept bool
}{
	{"every field", `{"u64":1,"u32":2,"i":-3,"b":true,"s":"x","l":["a","b"],"m":{"k":"v"},"n":{"a":4},"r":[1,"2",{"3":null}]}`, true},
	{"empty object", `{}`, true},
	{"whitespace everywhere", " \t\r\n{ \"u64\" : 1 ,\n\"l\" : [ \"a\" , \"b\" ] , \"m\" : { \"k\" : \"v\" } , \"r\" : [ 1 , { \"x\" : 2 } ] } \n", true},
	{"form feed is not whitespace", "{\"u64\":1}\f", false},
	{"trailing data", `{"u64":1}x`, false},
	{"two documents", `{}{}`, false},
	{"not an object", `[]`, false},
	{"null document", `null`, false},
	{"empty input", ``, false},
	{"unterminated", `{"u64":1`, false},
	{"trailing comma", `{"u64":1,}`, false},
	{"missing colon", `{"u64" 1}`, false},

	// Field names.
	{"unknown field skipped", `{"x":{"y":[1,2,{"z":"\u00e9\n"}]},"u64":1}`, true},
	{"unknown field invalid", `{"x":[1,}`, false},
	{"field name case", `{"U64":1}`, false},
	{"unknown name case", `{"X":1,"x":2}`, true},
	{"field name escape", `{"u\u0036\u0034":1}`, false},
	{"field name non-ASCII", `{"ſ":1}`, false},
	{"field name control", "{\"u\x0164\":1}", false},
	{"field name DEL", "{\"\x7f\":1}", true},
	{"repeated field", `{"u64":1,"u64":2}`, false},
	{"repeated object field", `{"n":{"a":1},"n":{"a":2}}`, false},
	{"repeated in nested object", `{"n":{"a":1,"a":2}}`, false},
	{"nested bits do not leak out", `{"n":{"a":1},"u64":2}`, true},
	{"outer bits restored", `{"u64":1,"n":{"a":1},"u64":2}`, false},
	{"outer bits restored after empty", `{"u64":1,"n":{},"u64":2}`, false},

	// Unsigned integers.
	{"zero", `{"u64":0}`, true},
	{"max uint64", `{"u64":18446744073709551615}`, true},
	{"uint64 overflow", `{"u64":18446744073709551616}`, false},
	{"uint64 overflow long", `{"u64":99999999999999999999}`, false},
	{"max uint32", `{"u32":4294967295}`, true},
	{"uint32 overflow", `{"u32":4294967296}`, false},
	{"leading zero", `{"u64":01}`, false},
	{"fraction", `{"u64":1.0}`, false},
	{"exponent", `{"u64":1e2}`, false},
	{"exponent upper", `{"u64":1E2}`, false},
	{"minus zero unsigned", `{"u64":-0}`, false},
	{"plus sign", `{"u64":+1}`, false},
	{"null number", `{"u64":null}`, false},
	{"quoted number", `{"u64":"1"}`, false},
	{"number then letter", `{"u64":1x}`, false},

	// Signed integers.
	{"negative", `{"i":-42}`, true},
	{"minus zero", `{"i":-0}`, true},
	{"max int", `{"i":` + strconv.Itoa(math.MaxInt) + `}`, true},
	{"min int", `{"i":` + strconv.Itoa(math.MinInt) + `}`, true},
	{"int overflow", `{"i":` + strconv.FormatUint(math.MaxInt+1, 10) + `}`, false},
	{"int underflow", `{"i":-` + strconv.FormatUint(math.MaxInt+2, 10) + `}`, false},
	{"lone minus", `{"i":-}`, false},
	{"minus space", `{"i":- 1}`, false},
	{"negative leading zero", `{"i":-01}`, false},
	{"negative fraction", `{"i":-1.5}`, false},

	// Literals.
	{"true", `{"b":true}`, true},
	{"false", `{"b":false}`, true},
	{"true then letter", `{"b":truex}`, false},
	{"true then digit", `{"b":true1}`, false},
	{"truncated literal", `{"b":tru}`, false},
	{"null bool", `{"b":null}`, false},
	{"capital literal", `{"b":True}`, false},

	// Strings.
	{"string", `{"s":"hello, world"}`, true},
	{"empty string", `{"s":""}`, true},
	{"UTF-8", `{"s":"héllo ☃"}`, true},
	{"invalid UTF-8", "{\"s\":\"\xff\"}", false},
	{"escape", `{"s":"a\"b"}`, false},
	{"unicode escape", `{"s":"\u00e9"}`, false},
	{"control character", "{\"s\":\"a\tb\"}", false},
	{"unterminated string", `{"s":"abc`, false},
	{"null string", `{"s":null}`, false},

	// Arrays.
	{"empty array", `{"l":[]}`, true},
	{"array", `{"l":["a","b","c"]}`, true},
	{"array trailing comma", `{"l":["a",]}`, false},
	{"array missing comma", `{"l":["a" "b"]}`, false},
	{"array of null", `{"l":[null]}`, false},
	{"null array", `{"l":null}`, false},
	{"unterminated array", `{"l":["a"`, false},

	// Maps.
	{"empty map", `{"m":{}}`, true},
	{"map keys keep case", `{"m":{"K":"1","k":"2"}}`, true},
	{"map repeated key overwrites", `{"m":{"k":"1","k":"2"}}`, true},
	{"map non-ASCII key", `{"m":{"ключ":"значение"}}`, true},
	{"map key escape", `{"m":{"k\n":"v"}}`, false},
	{"map number value", `{"m":{"k":1}}`, false},
	{"map trailing comma", `{"m":{"k":"v",}}`, false},

	// Values skipped or kept raw.
	{"raw number forms", `{"r":[0,-0,-1.5e+3,2E-7,10.25,1e9]}`, true},
	{"raw literals", `{"r":[true,false,null]}`, true},
	{"raw escapes", `{"r":"\"\\\/\b\f\n\r\t\u00E9\ud800"}`, true},
	{"raw invalid UTF-8", "{\"r\":\"\xff\"}", true},
	{"raw nested", ` {"r": { "a" : [ { } , [ ] ] } } `, true},
	{"raw bad escape", `{"r":"\x"}`, false},
	{"raw short unicode escape", `{"r":"\u12"}`, false},
	{"raw bad hex", `{"r":"\u12g4"}`, false},
	{"raw leading zero", `{"r":01}`, false},
	{"raw bare fraction", `{"r":1.}`, false},
	{"raw bare exponent", `{"r":1e}`, false},
	{"raw lone minus", `{"r":-}`, false},
	{"raw plus", `{"r":+1}`, false},
	{"raw control in string", "{\"r\":\"\x00\"}", false},
	{"raw object without key", `{"r":{1:2}}`, false},
	{"raw deep", `{"r":` + nested(MaxDepth+1) + `}`, true},
	{"raw too deep", `{"r":` + nested(MaxDepth+2) + `}`, false},
}

// nested returns n nested arrays: the innermost is at depth n-1.
func nested(n int) string {
	return strings.Repeat("[", n) + strings.Repeat("]", n)
}

func TestScanner(t *testing.T) {
	for _, tc := range docCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkDoc(t, []byte(tc.in)); got != tc.accept {
				t.Errorf("%q: accepted %v, want %v", tc.in, got, tc.accept)
			}
		})
	}
}

// TestUnknownFieldFold: a name equal to a known one but for ASCII case is
// left to json.Unmarshal, which would decode it into that field.
func TestUnknownFieldFold(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"other", true},
		{"Version", false},
		{"VERSION", false},
		{"versioN", false},
		{"version_", true},
		{"versio", true},
		{"v3rsion", true},
		{"", true},
	} {
		t.Run(tc.key, func(t *testing.T) {
			var s Scanner
			s.Reset([]byte(`1`))
			if got := s.UnknownField([]byte(tc.key), []string{"id", "version"}); got != tc.want {
				t.Errorf("UnknownField(%q) = %v, want %v", tc.key, got, tc.want)
			}
		})
	}
}

// TestValueBytes: Value returns the value's own bytes, without the
// whitespace around it.
func TestValueBytes(t *testing.T) {
	for _, in := range []string{`1`, `-2.5e3`, `"a\"b"`, `[ 1 , 2 ]`, `{ "a" : { } }`, `null`} {
		var s Scanner
		s.Reset([]byte(" \n" + in + " ,"))
		got, ok := s.Value()
		if !ok || string(got) != in {
			t.Errorf("Value of %q = %q, %v; want %q, true", in, got, ok, in)
		}
	}
}

// FuzzScanner checks decodeDoc, which uses every method of a Scanner,
// against json.Unmarshal. The decoders of wire and view have fuzz targets
// of their own; this one reaches the methods neither reaches alone
// (wire reads no Map or Int, view no Bool).
func FuzzScanner(f *testing.F) {
	for _, tc := range docCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDoc(t, b)
	})
}
