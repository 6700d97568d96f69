package v1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Media types of PATCH request bodies.
const (
	// MergePatchType is a JSON merge patch (RFC 7386): an object whose
	// members set fields, null removes one, nested objects merge, arrays
	// are replaced whole.
	MergePatchType = "application/merge-patch+json"
	// JSONPatchType is a JSON patch (RFC 6902): an array of operations
	// (add, remove, replace, move, copy, test) on JSON pointers.
	JSONPatchType = "application/json-patch+json"
	// ApplyPatchType is weft's server-side apply: the body is a whole
	// manifest (YAML or JSON). The object is created from it if it does
	// not exist; otherwise the manifest is applied as a merge patch, so
	// that the fields it names are set and the others (set by other
	// writers) are kept. No field ownership is recorded: two appliers of
	// one field do not conflict (the last wins), and a field that a
	// manifest stops naming is kept (name it with null to remove it, or
	// use a client-side apply, which replaces labels, annotations and spec).
	ApplyPatchType = "application/apply-patch+yaml"
)

// PatchObject returns the object that patch, of media type patchType,
// makes of obj, strictly decoded (a field the kind does not have, or a
// value of the wrong type, is a BadRequest naming its path). A patch may
// change any field; those that writes keep (metadata other than labels,
// annotations and owner references; status) are the caller's to ignore.
// A patch that changes apiVersion, kind, metadata.name or metadata.tenant,
// or that cannot be applied (a JSON patch's missing path or failed test),
// is refused; obj is not modified.
func PatchObject(obj Object, patchType string, patch []byte) (Object, error) {
	cur, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("patch %s: encode: %w", RefOf(obj), err)
	}
	doc, err := DecodeJSONValue(cur)
	if err != nil {
		return nil, fmt.Errorf("patch %s: decode: %w", RefOf(obj), err)
	}
	switch patchType {
	case ApplyPatchType:
		if patch, err = yaml.YAMLToJSON(patch); err != nil {
			return nil, NewBadRequest("apply: %v", err)
		}
		fallthrough
	case MergePatchType:
		p, err := DecodeJSONValue(patch)
		if _, isObj := p.(map[string]any); err != nil || !isObj {
			return nil, NewBadRequest("merge patch: want a JSON object")
		}
		doc = MergePatch(doc, p)
	case JSONPatchType:
		if doc, err = JSONPatch(doc, patch); err != nil {
			return nil, err
		}
	default:
		return nil, NewStatus(http.StatusUnsupportedMediaType, ReasonUnsupportedMedia,
			"Content-Type %q: PATCH takes %s, %s or %s", patchType, MergePatchType, JSONPatchType, ApplyPatchType)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, NewBadRequest("patch: %v", err)
	}
	out, err := DecodeObject(data)
	if err != nil {
		return nil, err
	}
	was, is := RefOf(obj), RefOf(out)
	if was != is || out.GetTypeMeta().APIVersion != obj.GetTypeMeta().APIVersion {
		return nil, NewBadRequest("patch: a patch cannot change apiVersion, kind, metadata.name or metadata.tenant")
	}
	return out, nil
}

// DecodeJSONValue decodes JSON into maps, slices and scalars, keeping
// numbers exact as json.Number (a uint64 does not fit a float64).
func DecodeJSONValue(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

// MergePatch applies a JSON merge patch (RFC 7386 section 2) to a decoded
// JSON value and returns the result; it may modify target's maps.
func MergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
		} else {
			t[k] = MergePatch(t[k], v)
		}
	}
	return t
}

// jsonPatchOp is one operation of a JSON patch.
type jsonPatchOp struct {
	Op    string          `json:"op"`
	Path  *string         `json:"path"`
	From  *string         `json:"from"`
	Value json.RawMessage `json:"value"` // nil when absent, "null" for null
}

// JSONPatch applies a JSON patch (RFC 6902) to doc, a decoded JSON value,
// and returns the result; it may modify doc. Every operation applies or
// none does (the caller keeps the original). A malformed patch is a
// BadRequest; one that does not apply to doc (a missing path, a failed
// test) is Invalid (422), as Kubernetes answers.
func JSONPatch(doc any, patch []byte) (any, error) {
	var ops []jsonPatchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		return nil, NewBadRequest("JSON patch: want an array of operations: %v", err)
	}
	for i, op := range ops {
		var err error
		if doc, err = applyOp(doc, i, op); err != nil {
			return nil, err
		}
	}
	return doc, nil
}

// applyOp applies one operation of a JSON patch.
func applyOp(doc any, i int, op jsonPatchOp) (any, error) {
	bad := func(format string, a ...any) error {
		return NewBadRequest("JSON patch: operation %d (%q): %s", i, op.Op, fmt.Sprintf(format, a...))
	}
	fails := func(format string, a ...any) error {
		return NewStatus(http.StatusUnprocessableEntity, ReasonInvalid, "JSON patch: operation %d (%q): %s", i, op.Op, fmt.Sprintf(format, a...))
	}
	if op.Path == nil {
		return nil, bad(`"path" is required`)
	}
	path, err := parsePointer(*op.Path)
	if err != nil {
		return nil, bad("path: %v", err)
	}
	var value any
	switch op.Op {
	case "add", "replace", "test":
		if op.Value == nil {
			return nil, bad(`"value" is required`)
		}
		if value, err = DecodeJSONValue(op.Value); err != nil {
			return nil, bad("value: %v", err)
		}
	case "move", "copy":
		if op.From == nil {
			return nil, bad(`"from" is required`)
		}
		from, err := parsePointer(*op.From)
		if err != nil {
			return nil, bad("from: %v", err)
		}
		if value, err = pointerGet(doc, from); err != nil {
			return nil, fails("from %q: %v", *op.From, err)
		}
		if op.Op == "copy" {
			value = deepCopyJSON(value)
		} else {
			if strings.HasPrefix(*op.Path, *op.From+"/") {
				return nil, bad("cannot move %q into its own child %q", *op.From, *op.Path)
			}
			if doc, err = pointerEdit(doc, from, removeAt); err != nil {
				return nil, fails("from %q: %v", *op.From, err)
			}
		}
	case "remove":
	default:
		return nil, bad("unknown operation (want add, remove, replace, move, copy or test)")
	}
	var edit func(parent any, key string, v any) (any, error)
	switch op.Op {
	case "add", "move", "copy":
		edit = addAt
	case "remove":
		edit = removeAt
	case "replace":
		edit = replaceAt
	case "test":
		got, err := pointerGet(doc, path)
		if err != nil {
			return nil, fails("path %q: %v", *op.Path, err)
		}
		if !jsonEqual(got, value) {
			return nil, fails("path %q: the value is %s, not %s", *op.Path, jsonText(got), jsonText(value))
		}
		return doc, nil
	}
	if len(path) == 0 { // the whole document
		if op.Op == "remove" {
			return nil, bad("cannot remove the whole document")
		}
		return value, nil
	}
	out, err := pointerEdit(doc, path, func(parent any, key string, _ any) (any, error) { return edit(parent, key, value) })
	if err != nil {
		return nil, fails("path %q: %v", *op.Path, err)
	}
	return out, nil
}

// parsePointer splits a JSON pointer (RFC 6901) into its unescaped tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("%q: a JSON pointer starts with /", p)
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, nil
}

// pointerGet returns the value at path in doc.
func pointerGet(doc any, path []string) (any, error) {
	for _, tok := range path {
		switch n := doc.(type) {
		case map[string]any:
			v, ok := n[tok]
			if !ok {
				return nil, fmt.Errorf("no member %q", tok)
			}
			doc = v
		case []any:
			i, err := arrayIndex(tok, len(n), false)
			if err != nil {
				return nil, err
			}
			doc = n[i]
		default:
			return nil, fmt.Errorf("%q is inside a %s", tok, jsonTypeName(doc))
		}
	}
	return doc, nil
}

// pointerEdit replaces the container that holds the last token of path
// (not empty) with what edit makes of it, and returns the new doc.
func pointerEdit(doc any, path []string, edit func(parent any, key string, v any) (any, error)) (any, error) {
	if len(path) == 1 {
		return edit(doc, path[0], nil)
	}
	switch n := doc.(type) {
	case map[string]any:
		child, ok := n[path[0]]
		if !ok {
			return nil, fmt.Errorf("no member %q", path[0])
		}
		c, err := pointerEdit(child, path[1:], edit)
		if err != nil {
			return nil, err
		}
		n[path[0]] = c
		return n, nil
	case []any:
		i, err := arrayIndex(path[0], len(n), false)
		if err != nil {
			return nil, err
		}
		c, err := pointerEdit(n[i], path[1:], edit)
		if err != nil {
			return nil, err
		}
		n[i] = c
		return n, nil
	}
	return nil, fmt.Errorf("%q is inside a %s", path[0], jsonTypeName(doc))
}

// addAt adds v at key of parent: a member set, or an element inserted
// ("-" appends).
func addAt(parent any, key string, v any) (any, error) {
	switch n := parent.(type) {
	case map[string]any:
		n[key] = v
		return n, nil
	case []any:
		i := len(n)
		if key != "-" {
			var err error
			if i, err = arrayIndex(key, len(n), true); err != nil {
				return nil, err
			}
		}
		return append(n[:i], append([]any{v}, n[i:]...)...), nil
	}
	return nil, fmt.Errorf("%q is inside a %s", key, jsonTypeName(parent))
}

// removeAt removes key, which must exist, from parent.
func removeAt(parent any, key string, _ any) (any, error) {
	switch n := parent.(type) {
	case map[string]any:
		if _, ok := n[key]; !ok {
			return nil, fmt.Errorf("no member %q", key)
		}
		delete(n, key)
		return n, nil
	case []any:
		i, err := arrayIndex(key, len(n), false)
		if err != nil {
			return nil, err
		}
		return append(n[:i], n[i+1:]...), nil
	}
	return nil, fmt.Errorf("%q is inside a %s", key, jsonTypeName(parent))
}

// replaceAt sets key, which must exist, of parent to v.
func replaceAt(parent any, key string, v any) (any, error) {
	switch n := parent.(type) {
	case map[string]any:
		if _, ok := n[key]; !ok {
			return nil, fmt.Errorf("no member %q", key)
		}
		n[key] = v
		return n, nil
	case []any:
		i, err := arrayIndex(key, len(n), false)
		if err != nil {
			return nil, err
		}
		n[i] = v
		return n, nil
	}
	return nil, fmt.Errorf("%q is inside a %s", key, jsonTypeName(parent))
}

// arrayIndex parses the index token of an array of n elements: below n,
// or up to n to insert.
func arrayIndex(tok string, n int, insert bool) (int, error) {
	i, err := strconv.Atoi(tok)
	if err != nil || i < 0 || (len(tok) > 1 && tok[0] == '0') {
		return 0, fmt.Errorf("%q is not an array index", tok)
	}
	if i > n || i == n && !insert {
		return 0, fmt.Errorf("index %d is out of range (the array has %d elements)", i, n)
	}
	return i, nil
}

// jsonEqual compares decoded JSON values; numbers are equal if their
// values are ("1" and "1.0").
func jsonEqual(a, b any) bool {
	if x, ok := a.(json.Number); ok {
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		fx, _, errx := big.ParseFloat(string(x), 10, 256, big.ToNearestEven)
		fy, _, erry := big.ParseFloat(string(y), 10, 256, big.ToNearestEven)
		return errx == nil && erry == nil && fx.Cmp(fy) == 0
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func deepCopyJSON(v any) any {
	switch n := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(n))
		for k, e := range n {
			m[k] = deepCopyJSON(e)
		}
		return m
	case []any:
		s := make([]any, len(n))
		for i, e := range n {
			s[i] = deepCopyJSON(e)
		}
		return s
	}
	return v
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
