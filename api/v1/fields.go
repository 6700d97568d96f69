package v1

import (
	"fmt"
	"slices"
	"strings"
)

// FieldSelector selects objects by the values of some of their fields, as
// Kubernetes' fieldSelector does: "spec.host=h1,status.phase!=Ready" holds
// for the objects whose every requirement holds. The empty selector
// selects everything. SelectableFields lists the fields of each kind.
type FieldSelector []FieldRequirement

// FieldRequirement is "Field=Value", or "Field!=Value" with Not.
type FieldRequirement struct {
	Field string
	Value string
	Not   bool
}

// SelectableFields returns the fields a field selector of kind may name:
// metadata.name, metadata.tenant for tenant-scoped kinds, and an
// Endpoint's spec.host, spec.subnet and status.phase and a Subnet's
// spec.vpc.
func SelectableFields(kind string) []string {
	k, ok := LookupKind(kind)
	if !ok {
		return nil
	}
	out := []string{"metadata.name"}
	if k.Namespaced {
		out = append(out, "metadata.tenant")
	}
	switch k.Kind {
	case KindEndpoint:
		out = append(out, "spec.host", "spec.subnet", "status.phase")
	case KindSubnet:
		out = append(out, "spec.vpc")
	}
	return out
}

// fieldValue returns the value of a selectable field of o.
func fieldValue(o Object, field string) string {
	m := o.GetObjectMeta()
	switch field {
	case "metadata.name":
		return m.Name
	case "metadata.tenant":
		return m.Tenant
	}
	switch o := o.(type) {
	case *Endpoint:
		switch field {
		case "spec.host":
			return o.Spec.Host
		case "spec.subnet":
			return o.Spec.Subnet
		case "status.phase":
			return o.Status.Phase
		}
	case *Subnet:
		if field == "spec.vpc" {
			return o.Spec.VPC
		}
	}
	return ""
}

// ParseFieldSelector parses a field selector of kind: comma-separated
// "field=value", "field==value" or "field!=value" requirements. A field
// the kind cannot be selected by is an error that lists those it can.
func ParseFieldSelector(kind, s string) (FieldSelector, error) {
	var sel FieldSelector
	fields := SelectableFields(kind)
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			if strings.TrimSpace(s) == "" {
				return nil, nil
			}
			return nil, fmt.Errorf("%q: empty requirement", s)
		}
		var r FieldRequirement
		var ok bool
		if r.Field, r.Value, ok = strings.Cut(part, "!="); ok {
			r.Not = true
		} else if r.Field, r.Value, ok = strings.Cut(part, "=="); !ok {
			if r.Field, r.Value, ok = strings.Cut(part, "="); !ok {
				return nil, fmt.Errorf("%q: want field=value, field==value or field!=value", part)
			}
		}
		r.Field, r.Value = strings.TrimSpace(r.Field), strings.TrimSpace(r.Value)
		if !slices.Contains(fields, r.Field) {
			return nil, fmt.Errorf("%q: %s cannot be selected by field %q (it can by %s)", part, kind, r.Field, strings.Join(fields, ", "))
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// Matches reports whether o satisfies every requirement of s.
func (s FieldSelector) Matches(o Object) bool {
	for _, r := range s {
		if (fieldValue(o, r.Field) == r.Value) == r.Not {
			return false
		}
	}
	return true
}

// Equals returns the value that s requires field to equal, if it has
// such a requirement: what an index of field is read with.
func (s FieldSelector) Equals(field string) (string, bool) {
	for _, r := range s {
		if r.Field == field && !r.Not {
			return r.Value, true
		}
	}
	return "", false
}

// String returns s in the syntax ParseFieldSelector reads.
func (s FieldSelector) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		op := "="
		if r.Not {
			op = "!="
		}
		parts[i] = r.Field + op + r.Value
	}
	return strings.Join(parts, ",")
}
