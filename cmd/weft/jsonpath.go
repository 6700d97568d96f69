package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// The -o jsonpath=TEMPLATE and --sort-by subset of kubectl's JSONPath: text
// with {actions}; an action is a path (.a.b, ['a.b'], [0], [-1], [*], .*,
// [?(@.path==VALUE)] or != or a bare [?(@.path)], from the current object
// or $ the root), a quoted literal ("\n"), or {range PATH}...{end}. Several
// results of one path print separated by spaces; a string prints as it
// is, anything else as JSON; a missing field prints nothing. Recursive
// descent (..), slices ([a:b]), unions ([a,b]) and other operators are
// refused with an error that says what this subset takes.
// (k8s.io/client-go/util/jsonpath is not used: its module would move five
// of this module's dependencies to other versions.)

// jpSupported is what the errors say this subset takes.
const jpSupported = `weft's jsonpath takes .field, ['field'], [n], [*], [?(@.path=="value")] (or !=), "literals" and {range ...}{end}`

// jsonPath is a parsed template.
type jsonPath struct{ nodes []jpNode }

// jpNode is a piece of a template: literal text, a path to print, or a
// range over a path's values with a body.
type jpNode struct {
	text  string
	path  []jpStep // nil for text
	root  bool     // the path starts at $
	rng   bool
	body  []jpNode
	isLit bool
}

// jpStep is one step of a path.
type jpStep struct {
	field  string
	index  *int
	all    bool
	filter *jpFilter
}

// jpFilter is [?(@.path OP value)]; op "" tests that the path exists.
type jpFilter struct {
	path  []jpStep
	op    string
	value any
}

// parseJSONPath parses a template. A template without any {action} is
// taken as one path ("metadata.name" or ".metadata.name"), as --sort-by
// and kubectl's jsonpath take it.
func parseJSONPath(tmpl string) (*jsonPath, error) {
	if !strings.Contains(tmpl, "{") {
		tmpl = "{" + tmpl + "}"
	}
	var stack [][]jpNode
	var cur []jpNode
	rest := tmpl
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			cur = append(cur, jpNode{text: rest, isLit: true})
			break
		}
		if i > 0 {
			cur = append(cur, jpNode{text: rest[:i], isLit: true})
		}
		end := actionEnd(rest[i:])
		if end < 0 {
			return nil, fmt.Errorf("jsonpath %q: unclosed {", tmpl)
		}
		action := strings.TrimSpace(rest[i+1 : i+end])
		rest = rest[i+end+1:]
		switch {
		case action == "end":
			if len(stack) == 0 {
				return nil, fmt.Errorf("jsonpath %q: {end} without {range}", tmpl)
			}
			parent := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			parent[len(parent)-1].body = cur
			cur = parent
		case strings.HasPrefix(action, "range "):
			n, err := parsePathNode(strings.TrimSpace(strings.TrimPrefix(action, "range ")))
			if err != nil {
				return nil, fmt.Errorf("jsonpath %q: %w", tmpl, err)
			}
			n.rng = true
			stack = append(stack, append(cur, n))
			cur = nil
		case strings.HasPrefix(action, `"`) || strings.HasPrefix(action, `'`):
			s, err := unquote(action)
			if err != nil {
				return nil, fmt.Errorf("jsonpath %q: literal %s: %w", tmpl, action, err)
			}
			cur = append(cur, jpNode{text: s, isLit: true})
		default:
			n, err := parsePathNode(action)
			if err != nil {
				return nil, fmt.Errorf("jsonpath %q: %w", tmpl, err)
			}
			cur = append(cur, n)
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("jsonpath %q: {range} without {end}", tmpl)
	}
	return &jsonPath{nodes: cur}, nil
}

// actionEnd returns the index of the } that closes the action s starts
// with, skipping quoted text, or -1.
func actionEnd(s string) int {
	var quote byte
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0 && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '}':
			return i
		}
	}
	return -1
}

func unquote(s string) (string, error) {
	if len(s) < 2 || s[len(s)-1] != s[0] {
		return "", errors.New("unterminated")
	}
	if s[0] == '\'' {
		return s[1 : len(s)-1], nil
	}
	return strconv.Unquote(s)
}

func parsePathNode(s string) (jpNode, error) {
	n := jpNode{}
	switch {
	case strings.HasPrefix(s, "$"):
		n.root, s = true, s[1:]
	case strings.HasPrefix(s, "@"):
		s = s[1:]
	}
	steps, rest, err := parseSteps(s)
	if err == nil && rest != "" {
		err = fmt.Errorf("unexpected %q: %s", rest, jpSupported)
	}
	n.path = steps
	if n.path == nil {
		n.path = []jpStep{} // the current object itself
	}
	return n, err
}

// parseSteps parses steps until the end of s or a character that cannot
// continue a path (returned as rest).
func parseSteps(s string) (steps []jpStep, rest string, err error) {
	for s != "" {
		switch {
		case strings.HasPrefix(s, ".."):
			return nil, "", fmt.Errorf("recursive descent (..) is not supported: %s", jpSupported)
		case strings.HasPrefix(s, ".*"):
			steps, s = append(steps, jpStep{all: true}), s[2:]
		case s[0] == '.':
			end := strings.IndexAny(s[1:], ".[ =!)<>")
			if end < 0 {
				end = len(s) - 1
			}
			if end == 0 {
				return nil, "", fmt.Errorf("empty field name in %q", s)
			}
			steps, s = append(steps, jpStep{field: s[1 : 1+end]}), s[1+end:]
		case s[0] == '[':
			step, n, err := parseBracket(s)
			if err != nil {
				return nil, "", err
			}
			steps, s = append(steps, step), s[n:]
		default:
			if len(steps) == 0 && !strings.ContainsRune(" =!)<>", rune(s[0])) {
				s = "." + s // a first field without its dot: metadata.name
				continue
			}
			return steps, s, nil
		}
	}
	return steps, "", nil
}

// parseBracket parses a [...] step at the start of s and returns its length.
func parseBracket(s string) (jpStep, int, error) {
	switch {
	case strings.HasPrefix(s, "[*]"):
		return jpStep{all: true}, 3, nil
	case strings.HasPrefix(s, "['") || strings.HasPrefix(s, `["`):
		end := strings.Index(s[2:], string(s[1])+"]")
		if end < 0 {
			return jpStep{}, 0, fmt.Errorf("unclosed %s", s[:2])
		}
		return jpStep{field: s[2 : 2+end]}, end + 4, nil
	case strings.HasPrefix(s, "[?("):
		f, n, err := parseFilter(s[3:])
		if err != nil {
			return jpStep{}, 0, err
		}
		if !strings.HasPrefix(s[3+n:], ")]") {
			return jpStep{}, 0, fmt.Errorf("filter %q: want )] after it", s)
		}
		return jpStep{filter: f}, 3 + n + 2, nil
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return jpStep{}, 0, fmt.Errorf("unclosed [ in %q", s)
	}
	i, err := strconv.Atoi(strings.TrimSpace(s[1:end]))
	if err != nil {
		return jpStep{}, 0, fmt.Errorf("[%s] is not supported: %s", s[1:end], jpSupported)
	}
	return jpStep{index: &i}, end + 1, nil
}

// parseFilter parses "@.path OP value" up to the closing ")".
func parseFilter(s string) (*jpFilter, int, error) {
	if !strings.HasPrefix(s, "@") {
		return nil, 0, fmt.Errorf("filter %q: want @.path: %s", s, jpSupported)
	}
	steps, rest, err := parseSteps(s[1:])
	if err != nil {
		return nil, 0, err
	}
	f := &jpFilter{path: steps}
	trimmed := strings.TrimLeft(rest, " ")
	if strings.HasPrefix(trimmed, ")") {
		return f, len(s) - len(trimmed), nil
	}
	for _, op := range []string{"==", "!="} {
		if strings.HasPrefix(trimmed, op) {
			f.op = op
		}
	}
	if f.op == "" {
		return nil, 0, fmt.Errorf("filter %q: only == and != are supported", s)
	}
	val := strings.TrimLeft(trimmed[2:], " ")
	end := strings.IndexByte(val, ')')
	if val != "" && (val[0] == '"' || val[0] == '\'') {
		end = strings.IndexByte(val[1:], val[0]) + 2
	}
	if end <= 0 {
		return nil, 0, fmt.Errorf("filter %q: want a value and )", s)
	}
	lit := strings.TrimSpace(val[:end])
	switch {
	case lit[0] == '"' || lit[0] == '\'':
		f.value, err = unquote(lit)
	case lit == "true" || lit == "false":
		f.value = lit == "true"
	default:
		if _, err = strconv.ParseFloat(lit, 64); err == nil {
			f.value = json.Number(lit)
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("filter %q: value %s: %w", s, lit, err)
	}
	return f, len(s) - len(val) + end, nil
}

// execute renders the template over data (a decoded JSON value).
func (p *jsonPath) execute(data any) (string, error) {
	var b strings.Builder
	if err := render(&b, p.nodes, data, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

func render(b *strings.Builder, nodes []jpNode, root, cur any) error {
	for _, n := range nodes {
		if n.isLit {
			b.WriteString(n.text)
			continue
		}
		from := cur
		if n.root {
			from = root
		}
		vals := evalSteps([]any{from}, n.path)
		if n.rng {
			if len(vals) == 1 {
				if arr, ok := vals[0].([]any); ok {
					vals = arr
				}
			}
			for _, v := range vals {
				if err := render(b, n.body, root, v); err != nil {
					return err
				}
			}
			continue
		}
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(' ')
			}
			s, err := jpText(v)
			if err != nil {
				return err
			}
			b.WriteString(s)
		}
	}
	return nil
}

// evalSteps follows steps from each of vals; missing fields yield nothing.
func evalSteps(vals []any, steps []jpStep) []any {
	for _, st := range steps {
		var next []any
		for _, v := range vals {
			switch {
			case st.all:
				next = append(next, children(v)...)
			case st.index != nil:
				if arr, ok := v.([]any); ok {
					i := *st.index
					if i < 0 {
						i += len(arr)
					}
					if i >= 0 && i < len(arr) {
						next = append(next, arr[i])
					}
				}
			case st.filter != nil:
				for _, c := range children(v) {
					if st.filter.matches(c) {
						next = append(next, c)
					}
				}
			default:
				if m, ok := v.(map[string]any); ok {
					if c, ok := m[st.field]; ok {
						next = append(next, c)
					}
				}
			}
		}
		vals = next
	}
	return vals
}

// children returns the elements of an array, or the values of an object
// in key order.
func children(v any) []any {
	switch v := v.(type) {
	case []any:
		return v
	case map[string]any:
		var out []any
		for _, k := range slices.Sorted(maps.Keys(v)) {
			out = append(out, v[k])
		}
		return out
	}
	return nil
}

func (f *jpFilter) matches(v any) bool {
	got := evalSteps([]any{v}, f.path)
	if f.op == "" {
		return len(got) > 0
	}
	eq := len(got) == 1 && jpEqual(got[0], f.value)
	return eq == (f.op == "==")
}

func jpEqual(a, b any) bool {
	if x, ok := a.(json.Number); ok {
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		fx, errx := x.Float64()
		fy, erry := y.Float64()
		return errx == nil && erry == nil && fx == fy
	}
	return a == b
}

// jpText renders one value: a string as it is, anything else as JSON.
func jpText(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("jsonpath: %w", err)
	}
	return string(b), nil
}

// toJSONValue converts v (an object, a list) to the decoded JSON value a
// template runs over.
func toJSONValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err == nil {
		var out any
		if out, err = apiv1.DecodeJSONValue(b); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("jsonpath: %w", err)
}
