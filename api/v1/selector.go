package v1

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Empty reports whether the selector has no requirements; an empty selector
// matches every set of labels.
func (s LabelSelector) Empty() bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// Matches reports whether labels satisfy every requirement of s. As in
// Kubernetes, NotIn and DoesNotExist match when the key is absent. A
// requirement with an unknown operator never matches (Validate rejects it).
func (s LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

func (r LabelSelectorRequirement) matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Operator {
	case OpIn:
		return ok && slices.Contains(r.Values, v)
	case OpNotIn:
		return !ok || !slices.Contains(r.Values, v)
	case OpExists:
		return ok
	case OpDoesNotExist:
		return !ok
	default:
		return false
	}
}

// Validate checks the selector's keys, values and operators. path names
// the selector in the errors ("spec.selector"); it may be empty.
func (s LabelSelector) Validate(path string) []FieldError {
	if n := len(s.MatchLabels) + len(s.MatchExpressions); n > MaxSelectorRequirements {
		return []FieldError{{Field: path, Message: fmt.Sprintf(
			"must have at most %d requirements (matchLabels and matchExpressions together), got %d", MaxSelectorRequirements, n)}}
	}
	errs := validateLabels(joinPath(path, "matchLabels"), s.MatchLabels)
	for i, r := range s.MatchExpressions {
		p := joinPath(path, "matchExpressions") + "[" + strconv.Itoa(i) + "]"
		if msg := labelKeyError(r.Key); msg != "" {
			errs = append(errs, FieldError{Field: p + ".key", Message: msg})
		}
		if len(r.Values) > MaxSelectorValues {
			errs = append(errs, FieldError{Field: p + ".values", Message: fmt.Sprintf("must have at most %d values, got %d", MaxSelectorValues, len(r.Values))})
			continue
		}
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				errs = append(errs, FieldError{Field: p + ".values", Message: "must be non-empty for operator " + r.Operator})
			}
			for j, v := range r.Values {
				if msg := labelValueError(v); msg != "" {
					errs = append(errs, FieldError{Field: p + ".values[" + strconv.Itoa(j) + "]", Message: msg})
				}
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) != 0 {
				errs = append(errs, FieldError{Field: p + ".values", Message: "must be empty for operator " + r.Operator})
			}
		default:
			errs = append(errs, FieldError{Field: p + ".operator",
				Message: fmt.Sprintf("unknown operator %q, want one of In, NotIn, Exists, DoesNotExist", r.Operator)})
		}
	}
	return errs
}

// String formats the selector in the syntax ParseSelector reads:
// matchLabels first, sorted by key ("a=b"), then the expressions in order
// ("c!=d", "e in (x,y)", "f notin (y,z)", "g", "!h"). NotIn with one value
// is written "k!=v"; In is always written as a set, so that a parsed
// selector prints back to a string that parses to the same selector.
func (s LabelSelector) String() string {
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		sep()
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(s.MatchLabels[k])
	}
	for _, r := range s.MatchExpressions {
		sep()
		switch r.Operator {
		case OpExists:
			b.WriteString(r.Key)
		case OpDoesNotExist:
			b.WriteByte('!')
			b.WriteString(r.Key)
		case OpNotIn:
			if len(r.Values) == 1 {
				b.WriteString(r.Key + "!=" + r.Values[0])
				continue
			}
			b.WriteString(r.Key + " notin (" + strings.Join(r.Values, ",") + ")")
		default:
			b.WriteString(r.Key + " " + strings.ToLower(r.Operator) + " (" + strings.Join(r.Values, ",") + ")")
		}
	}
	return b.String()
}

// ParseSelector parses the label selector syntax of the CLI's -l flag and
// the REST labelSelector parameter: comma-separated requirements
//
//	a=b  a==b  a!=b  a in (x,y)  a notin (x,y)  a  !a
//
// "k=v" goes to MatchLabels (unless k is already there, then it becomes
// "k in (v)"), "k!=v" becomes NotIn with one value. Values may be empty
// ("k=", "k in (,x)"; "k in ()" is the set of the empty value). The empty
// string is the empty selector, which matches everything. The result is
// validated.
func ParseSelector(s string) (LabelSelector, error) {
	var sel LabelSelector
	p := selectorParser{s: s}
	p.skipSpace()
	for !p.eof() {
		if err := p.requirement(&sel); err != nil {
			return LabelSelector{}, fmt.Errorf("parse label selector %q: %w", s, err)
		}
		p.skipSpace()
		if p.eof() {
			break
		}
		if p.s[p.i] != ',' {
			return LabelSelector{}, fmt.Errorf("parse label selector %q: want ',' at offset %d", s, p.i)
		}
		p.i++
		p.skipSpace()
		if p.eof() {
			return LabelSelector{}, fmt.Errorf("parse label selector %q: want a requirement after the last ','", s)
		}
	}
	if errs := sel.Validate(""); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
			if e.Field == "" { // the whole selector
				msgs[i] = e.Message
			}
		}
		return LabelSelector{}, fmt.Errorf("label selector %q: %s", s, strings.Join(msgs, "; "))
	}
	return sel, nil
}

type selectorParser struct {
	s string
	i int
}

func (p *selectorParser) eof() bool { return p.i >= len(p.s) }

func (p *selectorParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// word reads a key, value or operator word: everything up to a space or
// one of the punctuation characters of the syntax.
func (p *selectorParser) word() string {
	start := p.i
	for p.i < len(p.s) && !strings.ContainsRune(" \t,=!()", rune(p.s[p.i])) {
		p.i++
	}
	return p.s[start:p.i]
}

var errNoKey = errors.New("want a label key")

func (p *selectorParser) requirement(sel *LabelSelector) error {
	if p.s[p.i] == '!' {
		p.i++
		p.skipSpace()
		key := p.word()
		if key == "" {
			return fmt.Errorf("%w after '!' at offset %d", errNoKey, p.i)
		}
		sel.MatchExpressions = append(sel.MatchExpressions, LabelSelectorRequirement{Key: key, Operator: OpDoesNotExist})
		return nil
	}
	start := p.i
	key := p.word()
	if key == "" {
		return fmt.Errorf("%w at offset %d", errNoKey, start)
	}
	p.skipSpace()
	if p.eof() || p.s[p.i] == ',' {
		sel.MatchExpressions = append(sel.MatchExpressions, LabelSelectorRequirement{Key: key, Operator: OpExists})
		return nil
	}
	switch rest := p.s[p.i:]; {
	case strings.HasPrefix(rest, "=="), strings.HasPrefix(rest, "!="), strings.HasPrefix(rest, "="):
		not := rest[0] == '!'
		if strings.HasPrefix(rest, "=") && !strings.HasPrefix(rest, "==") {
			p.i++
		} else {
			p.i += 2
		}
		p.skipSpace()
		v := p.word()
		switch {
		case not:
			sel.MatchExpressions = append(sel.MatchExpressions, LabelSelectorRequirement{Key: key, Operator: OpNotIn, Values: []string{v}})
		case hasKey(sel.MatchLabels, key):
			sel.MatchExpressions = append(sel.MatchExpressions, LabelSelectorRequirement{Key: key, Operator: OpIn, Values: []string{v}})
		default:
			if sel.MatchLabels == nil {
				sel.MatchLabels = map[string]string{}
			}
			sel.MatchLabels[key] = v
		}
		return nil
	}
	opAt := p.i
	var op string
	switch w := p.word(); w {
	case "in":
		op = OpIn
	case "notin":
		op = OpNotIn
	default:
		return fmt.Errorf("want =, ==, !=, in or notin after %q at offset %d, got %q", key, opAt, w)
	}
	p.skipSpace()
	if p.eof() || p.s[p.i] != '(' {
		return fmt.Errorf("want '(' after %q at offset %d", strings.ToLower(op), p.i)
	}
	p.i++
	// Values are split at commas like strings.Split does, so "()" is the
	// set of the empty value and "(,x)" is {"", "x"}: every set String
	// writes parses back to itself.
	var values []string
	for {
		p.skipSpace()
		values = append(values, p.word())
		p.skipSpace()
		if p.eof() {
			return fmt.Errorf("want ')' to close the values of %q", key)
		}
		c := p.s[p.i]
		p.i++
		if c == ')' {
			break
		}
		if c != ',' {
			return fmt.Errorf("want ',' or ')' at offset %d, got %q", p.i-1, c)
		}
	}
	sel.MatchExpressions = append(sel.MatchExpressions, LabelSelectorRequirement{Key: key, Operator: op, Values: values})
	return nil
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
