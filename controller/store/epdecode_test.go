package store

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/scaleobjects"
)

// checkDecodeEndpoint decodes data with decodeEndpoint and, if that
// decodes it, checks that apiv1.DecodeInto gives the same endpoint. It
// returns whether decodeEndpoint decoded it.
func checkDecodeEndpoint(t *testing.T, data []byte) bool {
	t.Helper()
	fast, ok := decodeEndpoint(data)
	if !ok {
		return false
	}
	slow, err := apiv1.DecodeInto(data, apiv1.KindEndpoint)
	if err != nil {
		t.Fatalf("decodeEndpoint decoded what DecodeInto refuses (%v): %s", err, data)
	}
	if diff := cmp.Diff(slow, apiv1.Object(fast)); diff != "" {
		t.Fatalf("decodeEndpoint differs from DecodeInto (-DecodeInto +decodeEndpoint):\n%s\nin %s", diff, data)
	}
	return true
}

// TestDecodeEndpoint checks that the fast path decodes what EncodeObject
// writes as DecodeInto does, and leaves the rest to DecodeInto.
func TestDecodeEndpoint(t *testing.T) {
	ready := scaleobjects.Objects(100, false)
	pending := scaleobjects.Objects(100, true)
	for _, o := range append(ready[len(ready)-20:], pending[len(pending)-20:]...) {
		b, err := EncodeObject(o)
		if err != nil {
			t.Fatal(err)
		}
		if !checkDecodeEndpoint(t, b) {
			t.Fatalf("not on the fast path: %s", b)
		}
	}
	// Random endpoints with every field set: those without annotations,
	// owner references and strings the fast path refuses take it.
	rng := rand.New(rand.NewPCG(5, 6))
	fast := 0
	for range 2000 {
		ep := randomEndpoint(rng)
		if rng.IntN(2) == 0 {
			ep.Metadata.Annotations, ep.Metadata.OwnerReferences = nil, nil
		}
		b, err := json.Marshal(ep)
		if err != nil {
			t.Fatal(err)
		}
		if checkDecodeEndpoint(t, b) {
			fast++
		}
	}
	if fast < 10 { // most random endpoints hold a string outside ASCII
		t.Errorf("%d of 2000 random endpoints on the fast path, want more", fast)
	}

	base := `{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"e1","tenant":"acme","labels":{"app":"web"},"generation":3},` +
		`"spec":{"subnet":"a","host":"h1"},"status":{"vni":4294967295,"identity":7,"phase":"Ready","conditions":[{"type":"Ready","status":"True","observedGeneration":3}]}}`
	for _, tc := range []struct {
		name string
		in   string
		fast bool
	}{
		{"stored form", base, true},
		{"white space", strings.NewReplacer(",", " ,\n\t", ":", "\r: ", "{", "{ ", "}", " }").Replace(base) + "\n", true},
		{"empty labels and conditions", `{"kind":"Endpoint","metadata":{"name":"e","labels":{}},"spec":{},"status":{"conditions":[]}}`, true},
		{"no apiVersion", `{"kind":"Endpoint","metadata":{"name":"e"},"spec":{}}`, true},
		{"empty object", `{}`, true}, // the kind New sets
		{"another kind", `{"kind":"Host","metadata":{"name":"e"}}`, false},
		{"annotations", strings.Replace(base, `"generation"`, `"annotations":{"a":"b"},"generation"`, 1), false},
		{"owner references", strings.Replace(base, `"generation"`, `"ownerReferences":[],"generation"`, 1), false},
		{"unknown field", strings.Replace(base, `"generation"`, `"future":1,"generation"`, 1), false},
		{"field in another case", strings.Replace(base, `"name"`, `"Name"`, 1), false},
		{"repeated field", strings.Replace(base, `"generation":3`, `"generation":3,"generation":4`, 1), false},
		{"repeated labels", strings.Replace(base, `"generation":3`, `"generation":3,"labels":{"b":"c"}`, 1), false},
		{"repeated label", strings.Replace(base, `{"app":"web"}`, `{"app":"web","app":"db"}`, 1), false},
		{"null", strings.Replace(base, `{"app":"web"}`, `null`, 1), false},
		{"escape", strings.Replace(base, `"e1"`, `"e\u0031"`, 1), false},
		{"utf-8", strings.Replace(base, `"e1"`, `"é1"`, 1), false},
		{"invalid utf-8", strings.Replace(base, `"e1"`, "\"\xff1\"", 1), false},
		{"control character", strings.Replace(base, `"e1"`, "\"e\x011\"", 1), false},
		{"negative", strings.Replace(base, `"generation":3`, `"generation":-3`, 1), false},
		{"fraction", strings.Replace(base, `"generation":3`, `"generation":3.0`, 1), false},
		{"exponent", strings.Replace(base, `"generation":3`, `"generation":3e0`, 1), false},
		{"leading zero", strings.Replace(base, `"generation":3`, `"generation":03`, 1), false},
		{"vni overflow", strings.Replace(base, `4294967295`, `4294967296`, 1), false},
		{"generation overflow", strings.Replace(base, `"generation":3`, `"generation":9223372036854775808`, 1), false},
		{"string for number", strings.Replace(base, `"generation":3`, `"generation":"3"`, 1), false},
		{"number for string", strings.Replace(base, `"e1"`, `1`, 1), false},
		{"trailing data", base + "{}", false},
		{"truncated", base[:len(base)-1], false},
		{"empty", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkDecodeEndpoint(t, []byte(tc.in)); got != tc.fast {
				t.Errorf("fast path %v, want %v for %s", got, tc.fast, tc.in)
			}
		})
	}
}

// FuzzDecodeEndpoint checks that whatever decodeEndpoint decodes,
// apiv1.DecodeInto decodes to the same endpoint.
func FuzzDecodeEndpoint(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 16 {
		ep := randomEndpoint(rng)
		ep.Metadata.Annotations, ep.Metadata.OwnerReferences = nil, nil
		b, err := json.Marshal(ep)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, o := range scaleobjects.Objects(100, false)[110:112] {
		b, err := EncodeObject(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeEndpoint(t, data)
	})
}

// BenchmarkDecodeEndpoint compares the fast path with apiv1.DecodeInto on
// a Ready endpoint as the sim stores it.
func BenchmarkDecodeEndpoint(b *testing.B) {
	objs := scaleobjects.Objects(100, false)
	data, err := EncodeObject(objs[len(objs)-1])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := decodeEndpoint(data); !ok {
				b.Fatal("not on the fast path")
			}
		}
	})
	b.Run("DecodeInto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := apiv1.DecodeInto(data, apiv1.KindEndpoint); err != nil {
				b.Fatal(err)
			}
		}
	})
}
