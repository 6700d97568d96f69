package v1

import (
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

func TestSetCondition(t *testing.T) {
	t0 := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0.Add(time.Hour)
	programmed := Condition{Type: ConditionPolicyProgrammed, Status: ConditionTrue, Reason: "Programmed", ObservedGeneration: 3, LastTransitionTime: "2024-01-02T03:04:05Z"}
	qos := Condition{Type: ConditionQoSProgrammed, Status: ConditionUnknown, LastTransitionTime: "2024-01-02T03:04:05Z"}
	tests := []struct {
		name        string
		conds       []Condition
		set         Condition
		want        []Condition
		wantChanged bool
	}{
		{name: "new condition gets now as its transition time",
			set:         Condition{Type: ConditionPolicyProgrammed, Status: ConditionTrue, ObservedGeneration: 1},
			want:        []Condition{{Type: ConditionPolicyProgrammed, Status: ConditionTrue, ObservedGeneration: 1, LastTransitionTime: "2024-01-02T04:04:05Z"}},
			wantChanged: true},
		{name: "new condition keeps a given transition time",
			conds:       []Condition{qos},
			set:         programmed,
			want:        []Condition{qos, programmed},
			wantChanged: true},
		{name: "same status, newer generation: transition time kept",
			conds: []Condition{programmed, qos},
			set:   Condition{Type: ConditionPolicyProgrammed, Status: ConditionTrue, Reason: "Programmed", ObservedGeneration: 4},
			want: []Condition{{Type: ConditionPolicyProgrammed, Status: ConditionTrue, Reason: "Programmed", ObservedGeneration: 4, LastTransitionTime: "2024-01-02T03:04:05Z"},
				qos},
			wantChanged: true},
		{name: "same status with another transition time given: stored one kept, nothing changed",
			conds: []Condition{programmed},
			set:   Condition{Type: ConditionPolicyProgrammed, Status: ConditionTrue, Reason: "Programmed", ObservedGeneration: 3, LastTransitionTime: "2030-01-01T00:00:00Z"},
			want:  []Condition{programmed}},
		{name: "status change moves the transition time",
			conds: []Condition{qos, programmed},
			set:   Condition{Type: ConditionPolicyProgrammed, Status: ConditionFalse, Reason: "Unsupported", Message: "IPv6 rule", ObservedGeneration: 4},
			want: []Condition{qos, {Type: ConditionPolicyProgrammed, Status: ConditionFalse, Reason: "Unsupported", Message: "IPv6 rule",
				ObservedGeneration: 4, LastTransitionTime: "2024-01-02T04:04:05Z"}},
			wantChanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conds := tt.conds
			changed := SetCondition(&conds, tt.set, now)
			if diff := gocmp.Diff(tt.want, conds); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed %v, want %v", changed, tt.wantChanged)
			}
			if again := SetCondition(&conds, tt.set, now.Add(time.Hour)); again {
				t.Errorf("setting the same condition again reported a change")
			}
		})
	}
}

func TestFindCondition(t *testing.T) {
	conds := []Condition{{Type: ConditionQoSProgrammed, Status: ConditionTrue}, {Type: ConditionPolicyProgrammed, Status: ConditionFalse}}
	if c := FindCondition(conds, ConditionPolicyProgrammed); c == nil || c.Status != ConditionFalse {
		t.Errorf("FindCondition(PolicyProgrammed) = %+v", c)
	} else if c.Status = ConditionTrue; conds[1].Status != ConditionTrue {
		t.Errorf("FindCondition did not return a pointer into the slice")
	}
	if c := FindCondition(conds, "Ready"); c != nil {
		t.Errorf("FindCondition(Ready) = %+v, want nil", c)
	}
	if c := FindCondition(nil, ConditionQoSProgrammed); c != nil {
		t.Errorf("FindCondition in nil = %+v, want nil", c)
	}
}

func TestValidateStatus(t *testing.T) {
	ok := Condition{Type: ConditionPolicyProgrammed, Status: ConditionTrue, Reason: "Programmed", ObservedGeneration: 2, LastTransitionTime: "2024-01-02T03:04:05Z"}
	ep := func(conds ...Condition) *Endpoint { return &Endpoint{Status: EndpointStatus{Conditions: conds}} }
	long := strings.Repeat("é", MaxMessageLen+1)
	tests := []struct {
		name string
		obj  Object
		want []FieldError
	}{
		{name: "valid conditions", obj: ep(ok, Condition{Type: ConditionQoSProgrammed, Status: ConditionUnknown}, Condition{Type: "Ready2", Status: ConditionFalse, Message: long[:2*MaxMessageLen]})},
		{name: "no status", obj: &Endpoint{}},
		{name: "16 conditions", obj: ep(func() []Condition {
			var cs []Condition
			for i := range 16 {
				cs = append(cs, Condition{Type: "T" + string(rune('a'+i)), Status: ConditionTrue})
			}
			return cs
		}()...)},
		{name: "17 conditions", obj: ep(nOf(17, ok)...),
			want: []FieldError{{Field: "status.conditions", Message: "must have at most 16 conditions, got 17"}}},
		{name: "condition fields invalid", obj: ep(Condition{Type: "Policy Programmed", Status: "true", Reason: "not-camel", Message: long, ObservedGeneration: -1, LastTransitionTime: "yesterday"}),
			want: []FieldError{
				{Field: "status.conditions[0].type", Message: "must be a CamelCase word: letters and digits, starting with a letter"},
				{Field: "status.conditions[0].status", Message: `unknown status "true", want True, False or Unknown`},
				{Field: "status.conditions[0].reason", Message: "must be a CamelCase word: letters and digits, starting with a letter"},
				{Field: "status.conditions[0].message", Message: "must be at most 1024 characters, got 1025"},
				{Field: "status.conditions[0].observedGeneration", Message: "must not be negative"},
				{Field: "status.conditions[0].lastTransitionTime", Message: `invalid time "yesterday", want RFC 3339 such as 2024-01-02T03:04:05Z`},
			}},
		{name: "condition type missing and reason too long", obj: ep(Condition{Status: ConditionTrue, Reason: strings.Repeat("A", 129)}),
			want: []FieldError{
				{Field: "status.conditions[0].type", Message: "is required"},
				{Field: "status.conditions[0].reason", Message: "must be at most 128 characters"},
			}},
		{name: "reason of 128 characters, starting with a digit refused", obj: ep(ok, Condition{Type: "1st", Status: ConditionTrue, Reason: strings.Repeat("A", 128)}),
			want: []FieldError{{Field: "status.conditions[1].type", Message: "must be a CamelCase word: letters and digits, starting with a letter"}}},
		{name: "condition type twice", obj: ep(ok, Condition{Type: ConditionQoSProgrammed, Status: ConditionTrue}, ok),
			want: []FieldError{{Field: "status.conditions[2].type", Message: "duplicate of status.conditions[0]"}}},
		{name: "endpoint message too long", obj: &Endpoint{Status: EndpointStatus{Message: long}},
			want: []FieldError{{Field: "status.message", Message: "must be at most 1024 characters, got 1025"}}},
		{name: "host lastError of 1024 characters", obj: &Host{Status: HostStatus{LastError: long[:2*MaxMessageLen]}}},
		{name: "host lastError too long", obj: &Host{Status: HostStatus{LastError: long}},
			want: []FieldError{{Field: "status.lastError", Message: "must be at most 1024 characters, got 1025"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := gocmp.Diff(tt.want, ValidateStatus(tt.obj)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetEndpointReady(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	ts := "2024-01-02T03:04:05Z"
	cond := func(typ, status string, gen int64, msg string) Condition {
		return Condition{Type: typ, Status: status, ObservedGeneration: gen, Message: msg, LastTransitionTime: ts}
	}
	policy, qos := cond(ConditionPolicyProgrammed, ConditionTrue, 2, ""), cond(ConditionQoSProgrammed, ConditionTrue, 2, "")
	for _, tc := range []struct {
		name          string
		phase, msg    string
		conds         []Condition
		status        string
		reason, wmsg  string
		wantUnchanged bool
	}{
		{name: "new endpoint", status: ConditionFalse, reason: PhasePending},
		{name: "pending", phase: PhasePending, conds: []Condition{policy, qos}, status: ConditionFalse, reason: PhasePending},
		{name: "lost", phase: PhaseLost, msg: "host h1 is dead", conds: []Condition{policy, qos}, status: ConditionFalse, reason: PhaseLost, wmsg: "host h1 is dead"},
		{name: "programmed", phase: PhaseReady, conds: []Condition{policy, qos}, status: ConditionTrue, reason: "Programmed"},
		{name: "conditions without generation count", phase: PhaseReady,
			conds:  []Condition{cond(ConditionPolicyProgrammed, ConditionTrue, 0, ""), cond(ConditionQoSProgrammed, ConditionTrue, 0, "")},
			status: ConditionTrue, reason: "Programmed"},
		{name: "QoS not reported", phase: PhaseReady, conds: []Condition{policy}, status: ConditionFalse, reason: "Programming", wmsg: "QoSProgrammed is not reported yet"},
		{name: "stale policy", phase: PhaseReady, conds: []Condition{cond(ConditionPolicyProgrammed, ConditionTrue, 1, ""), qos},
			status: ConditionFalse, reason: "Programming", wmsg: "PolicyProgrammed is of generation 1, the endpoint's is 2"},
		{name: "QoS failed", phase: PhaseReady, conds: []Condition{policy, cond(ConditionQoSProgrammed, ConditionFalse, 2, "no HTB")},
			status: ConditionFalse, reason: "NotQoSProgrammed", wmsg: "no HTB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := &Endpoint{Metadata: ObjectMeta{Generation: 2}, Status: EndpointStatus{Phase: tc.phase, Message: tc.msg, Conditions: tc.conds}}
			shared := ep.Status.Conditions
			if !SetEndpointReady(ep, now) {
				t.Fatal("no change reported")
			}
			want := Condition{Type: ConditionReady, Status: tc.status, Reason: tc.reason, Message: tc.wmsg, ObservedGeneration: 2, LastTransitionTime: ts}
			if d := gocmp.Diff(&want, FindCondition(ep.Status.Conditions, ConditionReady)); d != "" {
				t.Errorf("Ready (-want +got):\n%s", d)
			}
			if d := gocmp.Diff(tc.conds, shared); d != "" {
				t.Errorf("the slice the endpoint had was modified:\n%s", d)
			}
			if SetEndpointReady(ep, now.Add(time.Hour)) {
				t.Error("setting Ready again reported a change")
			}
			if errs := ValidateStatus(ep); len(errs) > 0 {
				t.Errorf("ValidateStatus: %v", errs)
			}
		})
	}
}

func TestSetHostConditions(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	ts := "2024-01-02T03:04:05Z"
	for _, tc := range []struct {
		name string
		st   HostStatus
		want []Condition
	}{
		{name: "nothing known"},
		{name: "alive, view applied", st: HostStatus{Liveness: LivenessAlive, ViewVersion: 7}, want: []Condition{
			{Type: ConditionAlive, Status: ConditionTrue, Reason: "Heartbeating", ObservedGeneration: 3, LastTransitionTime: ts},
			{Type: ConditionViewApplied, Status: ConditionTrue, Reason: "Applied", Message: "view version 7", ObservedGeneration: 3, LastTransitionTime: ts}}},
		{name: "suspect", st: HostStatus{Liveness: LivenessSuspect}, want: []Condition{
			{Type: ConditionAlive, Status: ConditionUnknown, Reason: "HeartbeatsLate", Message: "no heartbeat for a while; dead soon unless one comes", ObservedGeneration: 3, LastTransitionTime: ts}}},
		{name: "dead, view refused", st: HostStatus{Liveness: LivenessDead, ViewVersion: 7, LastError: "bad view"}, want: []Condition{
			{Type: ConditionAlive, Status: ConditionFalse, Reason: "HeartbeatsStopped", Message: "no heartbeat for too long", ObservedGeneration: 3, LastTransitionTime: ts},
			{Type: ConditionViewApplied, Status: ConditionFalse, Reason: "NotApplied", Message: "bad view", ObservedGeneration: 3, LastTransitionTime: ts}}},
		{name: "unknown", st: HostStatus{Liveness: LivenessUnknown}, want: []Condition{
			{Type: ConditionAlive, Status: ConditionUnknown, Reason: "NotHeard", ObservedGeneration: 3, LastTransitionTime: ts}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Host{Metadata: ObjectMeta{Generation: 3}, Status: tc.st}
			if changed := SetHostConditions(h, now); changed != (tc.want != nil) {
				t.Errorf("changed = %v", changed)
			}
			if d := gocmp.Diff(tc.want, h.Status.Conditions); d != "" {
				t.Errorf("conditions (-want +got):\n%s", d)
			}
			if SetHostConditions(h, now.Add(time.Hour)) {
				t.Error("setting them again reported a change")
			}
		})
	}
}
