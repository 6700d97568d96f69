package v1

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Condition is one aspect of an object's state as the component that
// handles it last saw it, in the Kubernetes style: a type, whether it
// holds, and why. Endpoints carry them in status.conditions; other kinds
// may later.
type Condition struct {
	// Type names the aspect, in CamelCase (ConditionPolicyProgrammed).
	Type string `json:"type"`
	// Status is ConditionTrue, ConditionFalse or ConditionUnknown.
	Status string `json:"status"`
	// Reason is a CamelCase word saying why, for programs ("Unsupported").
	Reason string `json:"reason,omitempty"`
	// Message says why for people, at most MaxMessageLen characters.
	Message string `json:"message,omitempty"`
	// ObservedGeneration is the metadata.generation of the object that
	// the condition describes: a condition of an older generation is stale.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// LastTransitionTime is when Status last changed, RFC 3339 UTC.
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
}

// Condition statuses (Condition.Status).
const (
	ConditionTrue    = "True"
	ConditionFalse   = "False"
	ConditionUnknown = "Unknown"
)

// Endpoint condition types, set by the endpoint's agent.
const (
	// ConditionPolicyProgrammed is True once the kernel accepted the
	// security policy of the endpoint's generation ObservedGeneration
	// (also when no policy selects it), False with the reason if it did not.
	ConditionPolicyProgrammed = "PolicyProgrammed"
	// ConditionQoSProgrammed is the same for the endpoint's QoSClass and
	// its VPC's QoS.
	ConditionQoSProgrammed = "QoSProgrammed"
)

// Limits on status written by agents and the controller.
const (
	MaxConditions = 16
	// MaxMessageLen limits a condition's message, an endpoint's
	// status.message and a host's status.lastError, in characters.
	MaxMessageLen = 1024
	maxReasonLen  = 128
)

// FindCondition returns the condition of type typ in conds, or nil.
func FindCondition(conds []Condition, typ string) *Condition {
	if i := indexCondition(conds, typ); i >= 0 {
		return &conds[i]
	}
	return nil
}

// SetCondition sets c in *conds, replacing the condition of the same type
// or adding it, and reports whether anything changed (so that a writer can
// skip a status write that would change nothing). LastTransitionTime moves
// to c's, or to now if c has none, only when the status changes (or the
// condition is new); otherwise the stored one is kept.
func SetCondition(conds *[]Condition, c Condition, now time.Time) bool {
	if c.LastTransitionTime == "" {
		c.LastTransitionTime = now.UTC().Format(time.RFC3339)
	}
	old := FindCondition(*conds, c.Type)
	if old == nil {
		*conds = append(*conds, c)
		return true
	}
	if old.Status == c.Status {
		c.LastTransitionTime = old.LastTransitionTime
	}
	if *old == c {
		return false
	}
	*old = c
	return true
}

// ValidateStatus checks the status of o as its writers (agents, the
// controller) report it: conditions are well formed and unique by type,
// and free text is at most MaxMessageLen characters. Status is not part
// of ValidateObject: a client's status is dropped on create and update.
func ValidateStatus(o Object) []FieldError {
	var v fieldErrors
	switch o := o.(type) {
	case *Endpoint:
		v.message("status.message", o.Status.Message)
		v.conditions("status.conditions", o.Status.Conditions)
	case *Host:
		v.message("status.lastError", o.Status.LastError)
	case *Trace, *Capture:
		v.observeStatus(o)
	}
	return v
}

func (v *fieldErrors) message(field, s string) {
	if n := utf8.RuneCountInString(s); n > MaxMessageLen {
		v.add(field, fmt.Sprintf("must be at most %d characters, got %d", MaxMessageLen, n))
	}
}

func (v *fieldErrors) conditions(field string, conds []Condition) {
	if v.tooMany(field, len(conds), MaxConditions, "conditions") {
		return
	}
	for i, c := range conds {
		f := field + "[" + strconv.Itoa(i) + "]"
		if msg := camelCaseError(c.Type, true); msg != "" {
			v.add(f+".type", msg)
		} else if j := indexCondition(conds[:i], c.Type); j >= 0 {
			v.add(f+".type", fmt.Sprintf("duplicate of %s[%d]", field, j))
		}
		switch c.Status {
		case ConditionTrue, ConditionFalse, ConditionUnknown:
		default:
			v.add(f+".status", fmt.Sprintf("unknown status %q, want %s, %s or %s", c.Status, ConditionTrue, ConditionFalse, ConditionUnknown))
		}
		if msg := camelCaseError(c.Reason, false); msg != "" {
			v.add(f+".reason", msg)
		}
		v.message(f+".message", c.Message)
		if c.ObservedGeneration < 0 {
			v.add(f+".observedGeneration", "must not be negative")
		}
		if t := c.LastTransitionTime; t != "" {
			if _, err := time.Parse(time.RFC3339, t); err != nil {
				v.add(f+".lastTransitionTime", fmt.Sprintf("invalid time %q, want RFC 3339 such as 2024-01-02T03:04:05Z", t))
			}
		}
	}
}

// indexCondition returns the index of the condition of type typ in conds, or -1.
func indexCondition(conds []Condition, typ string) int {
	for i, c := range conds {
		if c.Type == typ {
			return i
		}
	}
	return -1
}

// camelCaseError returns why s is not a CamelCase word (letters and
// digits, starting with a letter, at most 128 characters), or "".
func camelCaseError(s string, required bool) string {
	switch {
	case s == "" && required:
		return MsgRequired
	case len(s) > maxReasonLen:
		return fmt.Sprintf("must be at most %d characters", maxReasonLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) || i == 0 && !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return "must be a CamelCase word: letters and digits, starting with a letter"
		}
	}
	return ""
}
