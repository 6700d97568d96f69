package view

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/wire"
)

func wireResource(data []byte) wire.Resource {
	return wire.Resource{Key: wire.ResourceKey{Type: TypePolicy, ID: "t/p"}, Data: data}
}

func TestSplitPolicy(t *testing.T) {
	enc := func(p *Policy) string {
		r, err := Encode(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(r.Data)
	}
	full := &Policy{Tenant: "t", Name: "p", VPC: "v", IngressIsolated: true,
		Ingress: []Rule{{Name: "t/p ingress[0]", Identities: []uint32{3}, Ports: []Port{{Protocol: 6, First: 80, Last: 80, ICMPType: -1, ICMPCode: -1}}}},
		Applies: []string{"t/a", "t/b"}}
	fullData := enc(full)
	shared := fullData[:len(fullData)-len(`"applies":["t/a","t/b"]}`)]
	for _, tc := range []struct {
		name    string
		data    string
		shared  string
		applies []string
		ok      bool
	}{
		{name: "encoded", data: fullData, shared: shared, applies: []string{"t/a", "t/b"}, ok: true},
		{name: "one", data: `{"tenant":"t","applies":["t/a"]}`, shared: `{"tenant":"t",`, applies: []string{"t/a"}, ok: true},
		{name: "empty list", data: `{"tenant":"t","applies":[]}`, shared: `{"tenant":"t",`, applies: []string{}, ok: true},
		{name: "empty string", data: `{"applies":["","x",""]}`, shared: `{`, applies: []string{"", "x", ""}, ok: true},
		{name: "brackets in a string", data: `{"applies":["a]","[b"]}`, shared: `{`, applies: []string{"a]", "[b"}, ok: true},
		{name: "last of two", data: `{"applies":["a"],"applies":["b"]}`, shared: `{"applies":["a"],`, applies: []string{"b"}, ok: true},
		{name: "null", data: `{"tenant":"t","applies":null}`},
		{name: "applies not last", data: `{"applies":["a"],"tenant":"t"}`},
		{name: "nested", data: `{"ingress":[{"applies":["a"]}]}`},
		{name: "whitespace", data: `{"applies":["a"] }`},
		{name: "space in list", data: `{"applies":["a", "b"]}`},
		{name: "escape", data: `{"applies":["a\"b"]}`},
		{name: "backslash", data: `{"applies":["a\\b"]}`},
		{name: "non-ASCII", data: "{\"applies\":[\"\xc3\xa9\"]}"},
		{name: "control", data: "{\"applies\":[\"a\tb\"]}"},
		{name: "number", data: `{"applies":[1]}`},
		{name: "trailing comma", data: `{"applies":["a",]}`},
		{name: "missing comma", data: `{"applies":["a""b"]}`},
		{name: "unterminated", data: `{"applies":["a]}`},
		{name: "key in a string", data: `{"x":"\"applies\":[\"a\"]}`},
		{name: "key at start", data: `"applies":["a"]}`},
		{name: "short", data: `]}`},
		{name: "empty", data: ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, a, ok := SplitPolicy([]byte(tc.data))
			if ok != tc.ok {
				t.Fatalf("SplitPolicy(%s): ok %v, want %v", tc.data, ok, tc.ok)
			}
			if !ok {
				return
			}
			if string(s) != tc.shared {
				t.Errorf("shared %q, want %q", s, tc.shared)
			}
			if diff := cmp.Diff(tc.applies, a); diff != "" {
				t.Errorf("applies (-want +got):\n%s", diff)
			}
			checkSplit(t, []byte(tc.data))
		})
	}
}

// checkSplit checks SplitPolicy's promise on data: if it splits, its
// applies are json.Unmarshal's, and data with the same shared part and
// another applies list is valid JSON exactly when data is and decodes to
// the same policy but for Applies.
func checkSplit(t *testing.T, data []byte) {
	t.Helper()
	shared, applies, ok := SplitPolicy(data)
	if !ok {
		return
	}
	var p Policy
	errData := json.Unmarshal(data, &p)
	if errData == nil && !cmp.Equal(p.Applies, applies) {
		t.Fatalf("SplitPolicy(%q) applies %q, json.Unmarshal %q", data, applies, p.Applies)
	}
	other := append(append([]byte(nil), shared...), `"applies":["x/y","z"]}`...)
	if json.Valid(data) != json.Valid(other) {
		t.Fatalf("%q valid %v but %q valid %v", data, json.Valid(data), other, json.Valid(other))
	}
	var q Policy
	errOther := json.Unmarshal(other, &q)
	if (errData == nil) != (errOther == nil) {
		t.Fatalf("json.Unmarshal(%q): %v; of %q: %v", data, errData, other, errOther)
	}
	if errData != nil {
		return
	}
	if want := []string{"x/y", "z"}; !cmp.Equal(q.Applies, want) {
		t.Fatalf("json.Unmarshal(%q) applies %q, want %q", other, q.Applies, want)
	}
	p.Applies, q.Applies = nil, nil
	if diff := cmp.Diff(p, q); diff != "" {
		t.Fatalf("%q and %q decode differently but for applies (-first +second):\n%s", data, other, diff)
	}
	// What the decoder an agent uses makes of them, too.
	vp, err := Decode(wireResource(data))
	if err != nil {
		t.Fatalf("Decode(%q): %v, json.Unmarshal succeeded", data, err)
	}
	vq, err := Decode(wireResource(other))
	if err != nil {
		t.Fatalf("Decode(%q): %v, json.Unmarshal succeeded", other, err)
	}
	vp.(*Policy).Applies, vq.(*Policy).Applies = nil, nil
	if diff := cmp.Diff(vp, vq); diff != "" {
		t.Fatalf("Decode of %q and %q differ but for applies (-first +second):\n%s", data, other, diff)
	}
}

// FuzzSplitPolicy checks SplitPolicy's promise (checkSplit) on any
// input: an agent keeps a policy's translation by its shared part.
func FuzzSplitPolicy(f *testing.F) {
	for _, s := range samples() {
		if p, ok := s.(*Policy); ok {
			r, err := Encode(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add([]byte(r.Data))
		}
	}
	for _, s := range []string{`{"tenant":"t","applies":["t/a"]}`, `{"applies":["a"],"applies":["b"]}`,
		`{"ingress":[{"applies":["a"]}],"applies":["b"]}`, `{"x":"\\","applies":["a"]}`, `{"x":"a\"applies\":[\"b\"]}`,
		`{"tenant":5,"applies":["a"]}`, `{"Applies":["a"],"applies":["b"]}`, `[{"applies":["a"]}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSplit(t, data)
	})
}
