package v1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// KindList is the kind of the wrapper {"kind": "List", "items": [...]}
// that DecodeDocuments unpacks and MarshalList writes.
const KindList = "List"

// maxDecodeErrors caps the problems one decode reports.
const maxDecodeErrors = 20

// DecodeDocuments strictly decodes the objects in a file: multi-document
// YAML (documents separated by "---" lines), or JSON (one object, several
// concatenated objects, an array of objects, or a List
// {"kind":"List","items":[...]}; a YAML document may be a List too).
// Empty documents are skipped; an input without objects gives (nil, nil).
//
// Every object must have apiVersion "weft/v1" and the exact Kind of a
// served kind; unknown fields, duplicate keys and wrongly typed values are
// errors. A malformed input gives a *StatusError with ReasonBadRequest that
// names each bad document by its 1-based index and the file line it starts
// on (a YAML syntax error gives the line of the error instead), e.g.
//
//	document 2 (line 14): unknown field "spc"
//	document 1 item 3 (line 9): spec.cidrs: want an array, got string
//	document 3 (line 30): mapping values are not allowed in this context
//
// The objects are returned as decoded: call Default and validate them.
func DecodeDocuments(data []byte) ([]Object, error) {
	docs, err := DecodeDocumentsJSON(data)
	var objs []Object
	for _, d := range docs {
		objs = append(objs, d.Object)
	}
	return objs, err
}

// Document is an object decoded from a file, with the JSON it was decoded
// from (a YAML document converted to JSON): the fields its author wrote,
// which a server-side apply sends.
type Document struct {
	Object Object
	JSON   []byte
}

// DecodeDocumentsJSON is DecodeDocuments, each object with its JSON.
func DecodeDocumentsJSON(data []byte) ([]Document, error) {
	d := docDecoder{multi: true}
	return d.decode(data)
}

// DecodeObject strictly decodes exactly one object, JSON or YAML, as
// DecodeDocuments does; it is meant for REST request bodies. Errors name the
// line only when the input has more than one.
func DecodeObject(data []byte) (Object, error) {
	d := docDecoder{multi: false}
	docs, err := d.decode(data)
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, NewBadRequest("want exactly one object, got %d", len(docs))
	}
	return docs[0].Object, nil
}

// DecodeInto decodes JSON known to be an object of kind, such as a value
// the store wrote to etcd. It is the fast path: plain encoding/json, not
// strict. A kind in data different from kind is an error.
func DecodeInto(data []byte, kind string) (Object, error) {
	k, ok := LookupKind(kind)
	if !ok {
		return nil, fmt.Errorf("decode %s: unknown kind", kind)
	}
	o := k.New()
	if err := json.Unmarshal(data, o); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Kind, err)
	}
	if got := o.GetTypeMeta().Kind; got != k.Kind {
		return nil, fmt.Errorf("decode %s: data has kind %q", k.Kind, got)
	}
	return o, nil
}

// Marshal encodes o as indented JSON ("json") or YAML ("yaml"), ending in a
// newline.
func Marshal(o Object, format string) ([]byte, error) {
	b, err := marshal(o, format)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", RefOf(o), err)
	}
	return b, nil
}

// MarshalList encodes objects as one JSON List ("json") or as YAML
// documents separated by "---" lines ("yaml"); DecodeDocuments reads both.
func MarshalList(objs []Object, format string) ([]byte, error) {
	switch format {
	case "json":
		list := struct {
			TypeMeta `json:",inline"`
			Items    []Object `json:"items"`
		}{TypeMeta{APIVersion: APIVersion, Kind: KindList}, objs}
		if list.Items == nil {
			list.Items = []Object{}
		}
		b, err := marshalJSON(list)
		if err != nil {
			return nil, fmt.Errorf("marshal list: %w", err)
		}
		return b, nil
	case "yaml":
		var out []byte
		for i, o := range objs {
			b, err := Marshal(o, format)
			if err != nil {
				return nil, err
			}
			if i > 0 {
				out = append(out, "---\n"...)
			}
			out = append(out, b...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("marshal list: unknown format %q, want json or yaml", format)
}

func marshal(o Object, format string) ([]byte, error) {
	switch format {
	case "json":
		return marshalJSON(o)
	case "yaml":
		return yaml.Marshal(o)
	}
	return nil, fmt.Errorf("unknown format %q, want json or yaml", format)
}

// marshalJSON encodes v indented, without escaping <, > and & (the output
// is for people and files, not HTML), ending in a newline.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// loc places an object in the input.
type loc struct {
	doc  int // 1-based document index
	item int // 1-based index in a List, 0 if not in one
	line int // 1-based line of the input
}

// rawDoc is one object's JSON, not yet decoded.
type rawDoc struct {
	loc  loc
	json []byte
}

// docDecoder holds the state of one decode.
type docDecoder struct {
	multi   bool // DecodeDocuments, rather than DecodeObject
	oneLine bool // the input is one line: DecodeObject names no line
	n       int  // documents seen so far
	docs    []rawDoc
	errs    []string
	// yamlSyntax records that the YAML parser rejected a document.
	yamlSyntax bool
}

func (d *docDecoder) decode(data []byte) ([]Document, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
	d.oneLine = !bytes.Contains(bytes.TrimSpace(data), []byte("\n"))
	if jerr := d.decodeJSON(data); jerr != nil {
		// Not JSON, or JSON with a syntax error. YAML reads both; if it
		// fails too, the JSON error says more about input that looks like JSON.
		y := docDecoder{multi: d.multi, oneLine: d.oneLine}
		y.decodeYAML(data)
		if y.yamlSyntax && jerr != errNotJSON {
			d.fail(jerr.loc, jerr.msg)
		} else {
			*d = y
		}
	}
	var objs []Document
	for _, r := range d.docs {
		if o := d.object(r); o != nil {
			objs = append(objs, Document{o, r.json})
		}
	}
	if len(d.errs) > 0 {
		msgs := d.errs
		if len(msgs) > maxDecodeErrors {
			msgs = append(msgs[:maxDecodeErrors:maxDecodeErrors], fmt.Sprintf("and %d more errors", len(d.errs)-maxDecodeErrors))
		}
		return nil, NewBadRequest("%s", strings.Join(msgs, "; "))
	}
	return objs, nil
}

// fail records a problem at l.
func (d *docDecoder) fail(l loc, msg string) {
	var where string
	switch {
	case !d.multi && d.oneLine:
	case !d.multi:
		where = fmt.Sprintf("line %d", l.line)
	case l.item > 0:
		where = fmt.Sprintf("document %d item %d (line %d)", l.doc, l.item, l.line)
	default:
		where = fmt.Sprintf("document %d (line %d)", l.doc, l.line)
	}
	if where != "" {
		msg = where + ": " + msg
	}
	d.errs = append(d.errs, msg)
}

// jsonError is a syntax error in JSON input.
type jsonError struct {
	loc loc
	msg string
}

// errNotJSON says that the input does not even start like JSON.
var errNotJSON = &jsonError{msg: "not JSON"}

// decodeJSON takes data as a stream of JSON values if it is one. Otherwise
// it adds nothing and returns errNotJSON or the syntax error: the caller
// tries YAML, which reads JSON too and accepts flow-style YAML that starts
// like JSON.
func (d *docDecoder) decodeJSON(data []byte) *jsonError {
	start := skipJSONSpace(data, 0)
	if start == len(data) || data[start] != '{' && data[start] != '[' {
		return errNotJSON
	}
	type value struct {
		raw  json.RawMessage
		line int
	}
	var values []value
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		off := skipJSONSpace(data, int(dec.InputOffset()))
		if off >= len(data) {
			break
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			l := loc{doc: len(values) + 1, line: lineAt(data, off)}
			if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
				l.line = lineAt(data, int(se.Offset))
			}
			return &jsonError{l, "invalid JSON: " + strings.TrimPrefix(err.Error(), "json: ")}
		}
		values = append(values, value{raw, lineAt(data, off)})
	}
	for _, v := range values {
		d.value(v.raw, v.line, true)
	}
	return nil
}

// value adds the objects of one JSON value that starts on line. exact
// says whether raw's own newlines are the input's (JSON input), so that
// lines inside it can be told apart; JSON converted from YAML has none.
func (d *docDecoder) value(raw []byte, line int, exact bool) {
	switch raw[0] {
	case '{':
		d.n++
		d.objectOrList(raw, loc{doc: d.n, line: line}, exact)
	case '[':
		if !d.multi {
			d.n++
			d.fail(loc{doc: d.n, line: line}, "want one object, got an array")
			return
		}
		for _, e := range arrayElems(raw) {
			el := line
			if exact {
				el += bytes.Count(raw[:e.off], []byte("\n"))
			}
			switch e.raw[0] {
			case '{':
				d.n++
				d.objectOrList(e.raw, loc{doc: d.n, line: el}, exact)
			case 'n': // null: an empty document
			default:
				d.n++
				d.fail(loc{doc: d.n, line: el}, "want an object, got "+jsonTypeOf(e.raw))
			}
		}
	case 'n': // null: an empty document
	default:
		d.n++
		d.fail(loc{doc: d.n, line: line}, "want an object, got "+jsonTypeOf(raw))
	}
}

func (d *docDecoder) objectOrList(raw []byte, l loc, exact bool) {
	var head TypeMeta
	if bytes.Contains(raw, []byte(`"`+KindList+`"`)) { // skip a decode for the common case
		_ = sjson.UnmarshalCaseSensitivePreserveInts(raw, &head) // object reports a bad head
	}
	if head.Kind != KindList {
		d.docs = append(d.docs, rawDoc{l, raw})
		return
	}
	if !d.multi {
		d.fail(l, "want one object, got a List")
		return
	}
	var list struct {
		TypeMeta `json:",inline"`
		Metadata map[string]any    `json:"metadata,omitempty"`
		Items    []json.RawMessage `json:"items"`
	}
	if msgs := strictDecode(raw, &list); len(msgs) > 0 {
		for _, m := range msgs {
			d.fail(l, "List: "+m)
		}
		return
	}
	if v := list.APIVersion; v != "" && v != "v1" && v != APIVersion {
		d.fail(l, fmt.Sprintf("List: apiVersion %q is not supported, want %q", v, APIVersion))
		return
	}
	var offs []int
	if exact {
		offs = listItemOffsets(raw)
	}
	for i, it := range list.Items {
		il := l
		il.item = i + 1
		if i < len(offs) {
			il.line += bytes.Count(raw[:offs[i]], []byte("\n"))
		}
		switch it[0] {
		case '{':
			d.docs = append(d.docs, rawDoc{il, it})
		case 'n': // null: an empty document
		default:
			d.fail(il, "want an object, got "+jsonTypeOf(it))
		}
	}
}

// object decodes one object strictly, or records why it cannot.
func (d *docDecoder) object(r rawDoc) Object {
	var head TypeMeta
	if err := sjson.UnmarshalCaseSensitivePreserveInts(r.json, &head); err != nil {
		d.fail(r.loc, "apiVersion and kind must be strings")
		return nil
	}
	ok := true
	switch v := head.APIVersion; {
	case v == "":
		d.fail(r.loc, "apiVersion is required")
		ok = false
	case v != APIVersion:
		d.fail(r.loc, fmt.Sprintf("apiVersion %q is not supported, want %q", v, APIVersion))
		ok = false
	}
	k, found := LookupKind(head.Kind)
	switch {
	case head.Kind == "":
		d.fail(r.loc, "kind is required")
		return nil
	case found && k.Kind != head.Kind:
		d.fail(r.loc, fmt.Sprintf("unknown kind %q (did you mean %q?)", head.Kind, k.Kind))
		return nil
	case !found:
		d.fail(r.loc, fmt.Sprintf("unknown kind %q", head.Kind))
		return nil
	}
	if !ok {
		return nil
	}
	o := k.New()
	if msgs := strictDecode(r.json, o); len(msgs) > 0 {
		for _, m := range msgs {
			d.fail(r.loc, m)
		}
		return nil
	}
	return o
}

// strictDecode decodes JSON into v (a pointer to a struct), case-sensitively,
// rejecting unknown fields, duplicate keys and mistyped values. It returns
// the problems, each naming its field path.
func strictDecode(data []byte, v any) []string {
	strict, err := sjson.UnmarshalStrict(data, v)
	if err == nil && len(strict) == 0 {
		return nil
	}
	msgs := shapeErrors(data, reflect.TypeOf(v))
	for _, e := range strict {
		// Unknown fields come from shapeErrors, with their paths.
		if s := e.Error(); !strings.HasPrefix(s, "unknown field") {
			msgs = append(msgs, s)
		}
	}
	if len(msgs) == 0 { // shapeErrors missed it: say what the decoder said
		if err != nil {
			msgs = append(msgs, strings.TrimPrefix(err.Error(), "json: "))
		}
		for _, e := range strict {
			msgs = append(msgs, e.Error())
		}
	}
	return msgs
}

var (
	bandwidthType   = reflect.TypeFor[Bandwidth]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// shapeErrors compares a JSON value with the Go type it should decode into
// and describes every unknown field ("unknown field \"spec.spc\"") and
// mistyped value ("spec.cidrs: want an array, got string"), in field order.
func shapeErrors(data []byte, t reflect.Type) []string {
	var v any
	if err := sjson.UnmarshalCaseSensitivePreserveInts(data, &v); err != nil {
		return nil
	}
	var out []string
	checkShape(v, t, "", &out)
	return out
}

func checkShape(v any, t reflect.Type, path string, out *[]string) {
	if v == nil {
		return // null decodes to the zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	mismatch := func(want string) {
		msg := "want " + want + ", got " + jsonTypeName(v)
		if path != "" {
			msg = path + ": " + msg
		}
		*out = append(*out, msg)
	}
	if t == bandwidthType {
		switch v.(type) {
		case string, int64, float64:
		default:
			mismatch("a string or a number")
		}
		return
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return // decodes itself; its errors come from the decoder
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			mismatch("an object")
			return
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			ft, ok := fields[k]
			if !ok {
				*out = append(*out, fmt.Sprintf("unknown field %q", joinPath(path, k)))
				continue
			}
			checkShape(m[k], ft, joinPath(path, k), out)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			mismatch("an object")
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			checkShape(m[k], t.Elem(), path+"["+k+"]", out)
		}
	case reflect.Slice, reflect.Array:
		a, ok := v.([]any)
		if !ok {
			mismatch("an array")
			return
		}
		for i, e := range a {
			checkShape(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", out)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			mismatch("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			mismatch("a boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n, ok := v.(int64); !ok || reflect.New(t).Elem().OverflowInt(n) {
			mismatch(fmt.Sprintf("an integer that fits in %s", t.Kind()))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if n, ok := v.(int64); !ok || n < 0 || reflect.New(t).Elem().OverflowUint(uint64(n)) {
			mismatch(fmt.Sprintf("an integer that fits in %s", t.Kind()))
		}
	case reflect.Float32, reflect.Float64:
		switch v.(type) {
		case int64, float64:
		default:
			mismatch("a number")
		}
	}
}

// jsonFields maps the JSON names of a struct's fields to their types,
// including the fields of embedded structs without a name.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := m[k]; !ok {
						m[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type // an outer field hides an embedded one
	}
	return m
}

func jsonTypeName(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, float64, json.Number:
		return "number"
	}
	return "null"
}

// jsonTypeOf names the type of a JSON value from its first byte.
func jsonTypeOf(raw []byte) string {
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// elem is an element of a JSON array and its offset in the array's text.
type elem struct {
	off int
	raw json.RawMessage
}

// arrayElems splits a valid JSON array into its elements.
func arrayElems(arr []byte) []elem {
	dec := json.NewDecoder(bytes.NewReader(arr))
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return nil
	}
	var elems []elem
	for dec.More() {
		off := skipJSONSpace(arr, int(dec.InputOffset()))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		elems = append(elems, elem{off, v})
	}
	return elems
}

// listItemOffsets returns the offsets in a List's JSON text of its items.
func listItemOffsets(raw []byte) []int {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		start := skipJSONSpace(raw, int(dec.InputOffset()))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil
		}
		if t != "items" || len(v) == 0 || v[0] != '[' {
			continue
		}
		var offs []int
		for _, e := range arrayElems(v) {
			offs = append(offs, start+e.off)
		}
		return offs
	}
	return nil
}

// skipJSONSpace returns the offset of the first byte at or after off that
// is not JSON whitespace or a separator (',' ':').
func skipJSONSpace(data []byte, off int) int {
	for off < len(data) {
		switch data[off] {
		case ' ', '\t', '\r', '\n', ',', ':':
			off++
		default:
			return off
		}
	}
	return off
}

// lineAt returns the 1-based line of data that offset off is on.
func lineAt(data []byte, off int) int {
	return bytes.Count(data[:min(off, len(data))], []byte("\n")) + 1
}

// yamlDoc is one document of a YAML stream.
type yamlDoc struct {
	text []byte
	line int // the input line of text's first line
}

// splitYAML splits a YAML stream at its document markers: lines that are
// "---" (possibly followed by a space and more) or "...". Text after "--- "
// on the same line belongs to the next document.
func splitYAML(data []byte) []yamlDoc {
	var docs []yamlDoc
	start, startLine := 0, 1
	line := 1
	for off := 0; off < len(data); line++ {
		next := len(data)
		if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
			next = off + i + 1
		}
		l := bytes.TrimRight(data[off:next], "\r\n")
		switch {
		case bytes.HasPrefix(l, []byte("---")) && (len(l) == 3 || l[3] == ' ' || l[3] == '\t'):
			docs = append(docs, yamlDoc{data[start:off], startLine})
			start, startLine = off+3, line
		case bytes.Equal(bytes.TrimRight(l, " \t"), []byte("...")):
			docs = append(docs, yamlDoc{data[start:off], startLine})
			start, startLine = next, line+1
		}
		off = next
	}
	return append(docs, yamlDoc{data[start:], startLine})
}

// firstContentLine returns the input line of the first line of doc that
// is not blank or a comment.
func (doc yamlDoc) firstContentLine() int {
	n := doc.line
	for l := range bytes.Lines(doc.text) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			return n
		}
		n++
	}
	return doc.line
}

func (d *docDecoder) decodeYAML(data []byte) {
	for _, doc := range splitYAML(data) {
		if len(bytes.TrimSpace(doc.text)) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSONStrict(doc.text)
		if err != nil {
			d.n++
			d.yamlSyntax = true
			d.yamlError(doc, err)
			continue
		}
		d.value(j, doc.firstContentLine(), false)
	}
}

// yamlError records a YAML parse error, moving the line numbers it carries
// (which count from the document's first line) to lines of the input.
func (d *docDecoder) yamlError(doc yamlDoc, err error) {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	l := loc{doc: d.n, line: doc.firstContentLine()}
	if list, ok := strings.CutPrefix(msg, "unmarshal errors:"); ok {
		// "unmarshal errors:\n  line 2: key \"a\" already set in map\n  ..."
		for s := range strings.Lines(list) {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			el := l
			if n, rest, ok := cutLine(s); ok {
				el.line, s = doc.line+n-1, rest
			}
			d.fail(el, s)
		}
		return
	}
	if n, rest, ok := cutLine(msg); ok {
		l.line, msg = doc.line+n-1, rest
	}
	d.fail(l, msg)
}

// cutLine splits "line 12: text" into 12 and "text".
func cutLine(s string) (int, string, bool) {
	s, ok := strings.CutPrefix(s, "line ")
	if !ok {
		return 0, "", false
	}
	num, rest, ok := strings.Cut(s, ": ")
	if !ok {
		return 0, "", false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		return 0, "", false
	}
	return n, rest, true
}
