package v1

import (
	"encoding/json"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

// TestJSONPatch runs examples of RFC 6902 appendix A and the errors it names.
func TestJSONPatch(t *testing.T) {
	for _, tc := range []struct {
		name, doc, patch, want string
		wantErr                string // a substring; then want is unused
		wantReason             string
	}{
		{name: "A.1 add a member", doc: `{"foo":"bar"}`, patch: `[{"op":"add","path":"/baz","value":"qux"}]`, want: `{"baz":"qux","foo":"bar"}`},
		{name: "A.2 add an element", doc: `{"foo":["bar","baz"]}`, patch: `[{"op":"add","path":"/foo/1","value":"qux"}]`, want: `{"foo":["bar","qux","baz"]}`},
		{name: "A.3 remove a member", doc: `{"baz":"qux","foo":"bar"}`, patch: `[{"op":"remove","path":"/baz"}]`, want: `{"foo":"bar"}`},
		{name: "A.4 remove an element", doc: `{"foo":["bar","qux","baz"]}`, patch: `[{"op":"remove","path":"/foo/1"}]`, want: `{"foo":["bar","baz"]}`},
		{name: "A.5 replace", doc: `{"baz":"qux","foo":"bar"}`, patch: `[{"op":"replace","path":"/baz","value":"boo"}]`, want: `{"baz":"boo","foo":"bar"}`},
		{name: "A.6 move a value", doc: `{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}`,
			patch: `[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]`,
			want:  `{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}`},
		{name: "A.7 move an element", doc: `{"foo":["all","grass","cows","eat"]}`, patch: `[{"op":"move","from":"/foo/1","path":"/foo/3"}]`,
			want: `{"foo":["all","cows","eat","grass"]}`},
		{name: "A.8 test succeeds", doc: `{"baz":"qux","foo":["a",2,"c"]}`,
			patch: `[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]`, want: `{"baz":"qux","foo":["a",2,"c"]}`},
		{name: "A.9 test fails", doc: `{"baz":"qux"}`, patch: `[{"op":"test","path":"/baz","value":"bar"}]`,
			wantErr: `operation 0 ("test"): path "/baz": the value is "qux", not "bar"`, wantReason: ReasonInvalid},
		{name: "A.10 add a nested member", doc: `{"foo":"bar"}`, patch: `[{"op":"add","path":"/child","value":{"grandchild":{}}}]`,
			want: `{"child":{"grandchild":{}},"foo":"bar"}`},
		{name: "A.12 add to a missing parent", doc: `{"foo":"bar"}`, patch: `[{"op":"add","path":"/baz/bat","value":"qux"}]`,
			wantErr: `no member "baz"`, wantReason: ReasonInvalid},
		{name: "A.14 escapes", doc: `{"/":9,"~1":10}`, patch: `[{"op":"test","path":"/~01","value":10}]`, want: `{"/":9,"~1":10}`},
		{name: "A.15 a string is not a number", doc: `{"/":9,"~1":10}`, patch: `[{"op":"test","path":"/~01","value":"10"}]`,
			wantErr: "the value is 10", wantReason: ReasonInvalid},
		{name: "A.16 append", doc: `{"foo":["bar"]}`, patch: `[{"op":"add","path":"/foo/-","value":["abc","def"]}]`, want: `{"foo":["bar",["abc","def"]]}`},
		{name: "copy", doc: `{"a":{"b":1}}`, patch: `[{"op":"copy","from":"/a","path":"/c"},{"op":"replace","path":"/c/b","value":2}]`,
			want: `{"a":{"b":1},"c":{"b":2}}`},
		{name: "numbers compare by value", doc: `{"a":1}`, patch: `[{"op":"test","path":"/a","value":1.0}]`, want: `{"a":1}`},
		{name: "large numbers stay exact", doc: `{"a":18446744073709551615}`, patch: `[{"op":"add","path":"/b","value":18446744073709551614}]`,
			want: `{"a":18446744073709551615,"b":18446744073709551614}`},
		{name: "replace the document", doc: `{"a":1}`, patch: `[{"op":"replace","path":"","value":{"b":2}}]`, want: `{"b":2}`},
		{name: "replace a missing member", doc: `{}`, patch: `[{"op":"replace","path":"/a","value":1}]`, wantErr: `no member "a"`, wantReason: ReasonInvalid},
		{name: "index out of range", doc: `{"a":[1]}`, patch: `[{"op":"remove","path":"/a/1"}]`, wantErr: "index 1 is out of range (the array has 1 elements)", wantReason: ReasonInvalid},
		{name: "leading zero", doc: `{"a":[1,2]}`, patch: `[{"op":"remove","path":"/a/01"}]`, wantErr: `"01" is not an array index`, wantReason: ReasonInvalid},
		{name: "move into a child", doc: `{"a":{"b":{}}}`, patch: `[{"op":"move","from":"/a","path":"/a/b/c"}]`, wantErr: "into its own child", wantReason: ReasonBadRequest},
		{name: "unknown op", doc: `{}`, patch: `[{"op":"merge","path":"/a"}]`, wantErr: "unknown operation", wantReason: ReasonBadRequest},
		{name: "no value", doc: `{}`, patch: `[{"op":"add","path":"/a"}]`, wantErr: `"value" is required`, wantReason: ReasonBadRequest},
		{name: "null value", doc: `{}`, patch: `[{"op":"add","path":"/a","value":null}]`, want: `{"a":null}`},
		{name: "no path", doc: `{}`, patch: `[{"op":"remove"}]`, wantErr: `"path" is required`, wantReason: ReasonBadRequest},
		{name: "pointer without slash", doc: `{}`, patch: `[{"op":"remove","path":"a"}]`, wantErr: "starts with /", wantReason: ReasonBadRequest},
		{name: "not an array", doc: `{}`, patch: `{"op":"remove","path":"/a"}`, wantErr: "want an array of operations", wantReason: ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := DecodeJSONValue([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			got, err := JSONPatch(doc, []byte(tc.patch))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || ReasonOf(err) != tc.wantReason {
					t.Fatalf("error %v (reason %s), want one containing %q (reason %s)", err, ReasonOf(err), tc.wantErr, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := jsonText(got); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
		})
	}
}

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
			target, err := DecodeJSONValue([]byte(tc.target))
			if err != nil {
				t.Fatal(err)
			}
			patch, err := DecodeJSONValue([]byte(tc.patch))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(MergePatch(target, patch))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := DecodeJSONValue([]byte(tc.want))
			gotV, _ := DecodeJSONValue(got)
			if diff := gocmp.Diff(want, gotV); diff != "" {
				t.Errorf("merged (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPatchObject(t *testing.T) {
	base := func() *Endpoint {
		return &Endpoint{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindEndpoint},
			Metadata: ObjectMeta{Name: "web-1", Tenant: "acme", Labels: map[string]string{"app": "web", "tier": "a"}},
			Spec:     EndpointSpec{Subnet: "a", Host: "h1"}}
	}
	for _, tc := range []struct {
		name, typ, patch string
		want             func(*Endpoint)
		wantErr          string
		wantReason       string
	}{
		{name: "merge patch", typ: MergePatchType, patch: `{"metadata":{"labels":{"tier":null,"new":"x"}},"spec":{"host":"h2"}}`,
			want: func(e *Endpoint) { e.Metadata.Labels = map[string]string{"app": "web", "new": "x"}; e.Spec.Host = "h2" }},
		{name: "JSON patch", typ: JSONPatchType, patch: `[{"op":"test","path":"/spec/host","value":"h1"},{"op":"replace","path":"/spec/host","value":"h2"},{"op":"add","path":"/metadata/annotations","value":{"note":"x"}}]`,
			want: func(e *Endpoint) { e.Spec.Host = "h2"; e.Metadata.Annotations = map[string]string{"note": "x"} }},
		{name: "apply: a YAML manifest merged", typ: ApplyPatchType, patch: "apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: web-1, tenant: acme, labels: {tier: b}}\nspec: {qosClass: gold}\n",
			want: func(e *Endpoint) { e.Metadata.Labels["tier"] = "b"; e.Spec.QoSClass = "gold" }},
		{name: "unknown field", typ: MergePatchType, patch: `{"spec":{"hots":"h2"}}`, wantErr: `unknown field "spec.hots"`, wantReason: ReasonBadRequest},
		{name: "wrong type", typ: MergePatchType, patch: `{"spec":{"host":1}}`, wantErr: "spec.host", wantReason: ReasonBadRequest},
		{name: "rename", typ: MergePatchType, patch: `{"metadata":{"name":"web-2"}}`, wantErr: "cannot change", wantReason: ReasonBadRequest},
		{name: "other tenant", typ: JSONPatchType, patch: `[{"op":"replace","path":"/metadata/tenant","value":"beta"}]`, wantErr: "cannot change", wantReason: ReasonBadRequest},
		{name: "kind", typ: MergePatchType, patch: `{"kind":"Host"}`, wantErr: "", wantReason: ReasonBadRequest},
		{name: "not an object", typ: MergePatchType, patch: `[1]`, wantErr: "want a JSON object", wantReason: ReasonBadRequest},
		{name: "media type", typ: "application/strategic-merge-patch+json", patch: `{}`, wantErr: "PATCH takes", wantReason: ReasonUnsupportedMedia},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := base()
			got, err := PatchObject(obj, tc.typ, []byte(tc.patch))
			if d := gocmp.Diff(base(), obj); d != "" {
				t.Errorf("the patched object changed (-want +got):\n%s", d)
			}
			if tc.wantReason != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || ReasonOf(err) != tc.wantReason {
					t.Fatalf("error %v (reason %s), want one containing %q (reason %s)", err, ReasonOf(err), tc.wantErr, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := base()
			tc.want(want)
			if d := gocmp.Diff(want, got); d != "" {
				t.Errorf("-want +got:\n%s", d)
			}
		})
	}
}

func TestDecodeJSONValueRejectsTrailingData(t *testing.T) {
	if _, err := DecodeJSONValue([]byte(`{} {}`)); err == nil {
		t.Error("two values decoded as one")
	}
	v, err := DecodeJSONValue([]byte(`{"n": 18446744073709551615}`))
	if err != nil {
		t.Fatal(err)
	}
	if n := v.(map[string]any)["n"].(json.Number); n != "18446744073709551615" {
		t.Errorf("n = %s", n)
	}
}
