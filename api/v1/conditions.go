package v1

import (
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Condition is one aspect of an object's state as the component that
// handles it last saw it, in the Kubernetes style: a type, whether it
// holds, and why. Endpoints and Hosts carry them in status.conditions.
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
	// ConditionReady is True when the endpoint's phase is Ready and both
	// conditions above are True for its current generation: everything
	// asked of it is programmed. The controller derives it on every write
	// of the endpoint (SetEndpointReady); `weft wait` waits for it.
	ConditionReady = "Ready"
)

// Host condition types, derived from the host's status fields by their
// writers (SetHostConditions), at the host's generation.
const (
	// ConditionAlive is True while the host's heartbeats arrive
	// (status.liveness Alive), Unknown while they are late (Suspect) or
	// not heard yet, False once the host is Dead.
	ConditionAlive = "Alive"
	// ConditionViewApplied is True once the host's agent acknowledged a
	// view (status.viewVersion) and programmed it, False with the agent's
	// error (status.lastError) when it refused or failed to program one.
	ConditionViewApplied = "ViewApplied"
)

// SetEndpointReady sets ep's ConditionReady from its phase and its
// PolicyProgrammed and QoSProgrammed conditions, and reports whether that
// changed it. A condition of an older generation than ep's is stale: Ready
// is False (reason Programming) until the agent reports the current one.
// The conditions slice is replaced, not modified, so ep may share it.
func SetEndpointReady(ep *Endpoint, now time.Time) bool {
	gen := ep.Metadata.Generation
	c := Condition{Type: ConditionReady, Status: ConditionTrue, Reason: "Programmed", ObservedGeneration: gen}
	if p := ep.Status.Phase; p != PhaseReady {
		c.Status, c.Reason, c.Message = ConditionFalse, p, ep.Status.Message
		if p == "" {
			c.Reason = PhasePending
		}
	} else {
		for _, typ := range []string{ConditionPolicyProgrammed, ConditionQoSProgrammed} {
			switch p := FindCondition(ep.Status.Conditions, typ); {
			case p == nil:
				c.Status, c.Reason, c.Message = ConditionFalse, "Programming", typ+" is not reported yet"
			case p.ObservedGeneration != 0 && p.ObservedGeneration < gen:
				c.Status, c.Reason, c.Message = ConditionFalse, "Programming",
					fmt.Sprintf("%s is of generation %d, the endpoint's is %d", typ, p.ObservedGeneration, gen)
			case p.Status != ConditionTrue:
				c.Status, c.Reason, c.Message = ConditionFalse, "Not"+typ, p.Message
			default:
				continue
			}
			break
		}
	}
	return setCondition(&ep.Status.Conditions, c, now)
}

// SetHostConditions sets h's ConditionAlive from status.liveness and
// ConditionViewApplied from status.viewVersion and lastError, at h's
// generation, and reports whether that changed them. A condition whose
// fields are unset (no liveness yet, no view acknowledged nor refused) is
// left out. The conditions slice is replaced, not modified.
func SetHostConditions(h *Host, now time.Time) bool {
	gen, st := h.Metadata.Generation, &h.Status
	changed := false
	if st.Liveness != "" {
		c := Condition{Type: ConditionAlive, Status: ConditionUnknown, Reason: "NotHeard", ObservedGeneration: gen}
		switch st.Liveness {
		case LivenessAlive:
			c.Status, c.Reason = ConditionTrue, "Heartbeating"
		case LivenessSuspect:
			c.Reason, c.Message = "HeartbeatsLate", "no heartbeat for a while; dead soon unless one comes"
		case LivenessDead:
			c.Status, c.Reason, c.Message = ConditionFalse, "HeartbeatsStopped", "no heartbeat for too long"
		}
		changed = setCondition(&st.Conditions, c, now)
	}
	if st.ViewVersion != 0 || st.LastError != "" {
		c := Condition{Type: ConditionViewApplied, Status: ConditionTrue, Reason: "Applied",
			Message: "view version " + strconv.FormatUint(st.ViewVersion, 10), ObservedGeneration: gen}
		if st.LastError != "" {
			c.Status, c.Reason, c.Message = ConditionFalse, "NotApplied", st.LastError
		}
		changed = setCondition(&st.Conditions, c, now) || changed
	}
	return changed
}

// setCondition is SetCondition on a copy of *conds, which replaces *conds
// if c changed it.
func setCondition(conds *[]Condition, c Condition, now time.Time) bool {
	cp := slices.Clone(*conds)
	if !SetCondition(&cp, c, now) {
		return false
	}
	*conds = cp
	return true
}

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
		v.conditions("status.conditions", o.Status.Conditions)
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
