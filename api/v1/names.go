package v1

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Syntax rules for names, label keys and label values; they are the
// Kubernetes ones, so that users' habits and tooling carry over.

const (
	maxNameLen        = 63  // DNS-1123 label
	maxSubdomainLen   = 253 // DNS-1123 subdomain
	maxLabelNameLen   = 63  // name part of a label key, and a label value
	nameSyntaxMessage = "must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
	labelSyntaxRule   = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)

// nameError returns why s is not a valid object name (a DNS-1123 label such
// as "web-1"), or "" if it is.
func nameError(s string) string {
	switch {
	case s == "":
		return "is required"
	case len(s) > maxNameLen:
		return fmt.Sprintf("must be at most %d characters", maxNameLen)
	case !isDNSLabel(s):
		return nameSyntaxMessage
	}
	return ""
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

// isDNSLabel reports whether s is lower case alphanumerics and '-',
// starting and ending with an alphanumeric. It does not check the length.
func isDNSLabel(s string) bool {
	if s == "" || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// isDNSSubdomain reports whether s is dot-separated DNS labels of at most
// 253 characters in total ("example.com").
func isDNSSubdomain(s string) bool {
	if len(s) > maxSubdomainLen {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(part) {
			return false
		}
	}
	return true
}

// isLabelName reports whether s is alphanumerics, '-', '_' and '.',
// starting and ending with an alphanumeric; it does not check the length.
func isLabelName(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// labelKeyError returns why k is not a valid label key, or "" if it is. A
// key is an optional DNS subdomain prefix and '/', then a name of at most
// 63 characters: "app", "weft.io/tier".
func labelKeyError(k string) string {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		switch {
		case prefix == "":
			return "invalid label key: prefix before '/' must be non-empty"
		case !isDNSSubdomain(prefix):
			return "invalid label key: prefix before '/' must be a DNS subdomain of at most 253 characters, such as example.com"
		case strings.Contains(rest, "/"):
			return "invalid label key: must contain at most one '/'"
		}
		name = rest
	}
	switch {
	case name == "":
		return "invalid label key: name must be non-empty"
	case len(name) > maxLabelNameLen:
		return fmt.Sprintf("invalid label key: name must be at most %d characters", maxLabelNameLen)
	case !isLabelName(name):
		return "invalid label key: name " + labelSyntaxRule
	}
	return ""
}

// labelValueError returns why v is not a valid label value, or "" if it is.
// The empty value is valid.
func labelValueError(v string) string {
	switch {
	case v == "":
		return ""
	case len(v) > maxLabelNameLen:
		return fmt.Sprintf("invalid label value %q: must be at most %d characters", v, maxLabelNameLen)
	case !isLabelName(v):
		return fmt.Sprintf("invalid label value %q: %s", v, labelSyntaxRule)
	}
	return ""
}

// validateLabel checks one key/value pair, reporting both problems at path.
func validateLabel(path, k, v string) []FieldError {
	var errs []FieldError
	if msg := labelKeyError(k); msg != "" {
		errs = append(errs, FieldError{Field: path, Message: msg})
	}
	if msg := labelValueError(v); msg != "" {
		errs = append(errs, FieldError{Field: path, Message: msg})
	}
	return errs
}

// validateLabels checks a label map, in key order.
func validateLabels(path string, labels map[string]string) []FieldError {
	var errs []FieldError
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		errs = append(errs, validateLabel(path+"["+k+"]", k, labels[k])...)
	}
	return errs
}

// joinPath appends a field name to a path: joinPath("spec", "cidr") is
// "spec.cidr", joinPath("", "spec") is "spec".
func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
