package registry

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMergePatch runs the examples of RFC 7386, appendix A.
func TestMergePatch(t *testing.T) {
	for _, tc := range []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"e":null,"a":1}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{`{"n":18446744073709551615}`, `{"m":1}`, `{"n":18446744073709551615,"m":1}`}, // exact numbers
	} {
		t.Run(tc.target+" + "+tc.patch, func(t *testing.T) {
			target, err := decodeJSON([]byte(tc.target))
			if err != nil {
				t.Fatal(err)
			}
			patch, err := decodeJSON([]byte(tc.patch))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(mergePatch(target, patch))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := decodeJSON([]byte(tc.want))
			gotV, _ := decodeJSON(got)
			if diff := cmp.Diff(want, gotV); diff != "" {
				t.Errorf("merged (-want +got):\n%s", diff)
			}
		})
	}
}
