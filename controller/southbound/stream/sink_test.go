package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/lifecycle"
)

// fakeHosts is a StatusWriter over an in-memory set of hosts that records
// every write.
type fakeHosts struct {
	hosts  map[string]apiv1.HostStatus
	writes []string
	fail   int // fail this many writes
}

func (f *fakeHosts) PatchStatus(_ context.Context, ref apiv1.Ref, patch func(apiv1.Object) bool) (apiv1.Object, error) {
	st, ok := f.hosts[ref.Name]
	if !ok {
		return nil, &apiv1.StatusError{Code: 404, Reason: apiv1.ReasonNotFound, Message: "not found"}
	}
	h := &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: ref.Name}, Status: st}
	if !patch(h) {
		return h, nil
	}
	if f.fail > 0 {
		f.fail--
		return nil, errors.New("etcd unavailable")
	}
	f.hosts[h.Metadata.Name] = h.Status
	f.writes = append(f.writes, fmt.Sprintf("%s view=%d err=%q agent=%q", h.Metadata.Name, h.Status.ViewVersion, h.Status.LastError, h.Status.AgentVersion))
	return h, nil
}

func TestRegistrySinkCoalesces(t *testing.T) {
	f := &fakeHosts{hosts: map[string]apiv1.HostStatus{"h1": {Liveness: apiv1.LivenessAlive}, "h2": {}}}
	s, err := NewRegistrySink(RegistrySinkConfig{Registry: f, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	steps := []struct {
		name       string
		do         func()
		failWrites int
		want       []string
	}{
		{"a thousand acks are one write", func() {
			s.Connected("h1", "agent/1")
			for v := uint64(1); v <= 1000; v++ {
				s.Acked("h1", v, "")
			}
		}, 0, []string{`h1 view=1000 err="" agent="agent/1"`}},
		{"nothing pending, nothing written", func() {}, 0, nil},
		{"an unchanged status is not written", func() { s.Acked("h1", 1000, "") }, 0, nil},
		{"nack sets lastError", func() { s.Nacked("h2", 7, "boom") }, 0, []string{`h2 view=0 err="boom" agent=""`}},
		{"nack then ack in one interval clears it", func() {
			s.Nacked("h2", 8, "again")
			s.Acked("h2", 8, "")
		}, 0, []string{`h2 view=8 err="" agent=""`}},
		{"ack then nack keeps both", func() {
			s.Acked("h1", 1001, "")
			s.Nacked("h1", 1002, "bad")
		}, 0, []string{`h1 view=1001 err="bad" agent="agent/1"`}},
		{"an ack with a programming error sets lastError", func() { s.Acked("h1", 1002, "program datapath: EBUSY") }, 0,
			[]string{`h1 view=1002 err="program datapath: EBUSY" agent="agent/1"`}},
		{"the same version acked without one clears it", func() { s.Acked("h1", 1002, "") }, 0,
			[]string{`h1 view=1002 err="" agent="agent/1"`}},
		{"a long error is cut", func() { s.Nacked("h1", 1003, strings.Repeat("é", maxLastError)) }, 0,
			[]string{fmt.Sprintf(`h1 view=1002 err=%q agent="agent/1"`, strings.Repeat("é", (maxLastError-3)/2)+"…")}},
		{"unknown host is skipped", func() { s.Acked("ghost", 1, "") }, 0, nil},
		{"a failed write is retried at the next flush", func() { s.Acked("h2", 9, "") }, 1, nil},
		{"retry, merged under a newer update", func() { s.Connected("h2", "agent/2") }, 0, []string{`h2 view=9 err="" agent="agent/2"`}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			f.fail = st.failWrites
			f.writes = nil
			s.flush(ctx)
			if diff := cmp.Diff(st.want, f.writes); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
		})
	}
	if got := f.hosts["h1"].Liveness; got != apiv1.LivenessAlive {
		t.Errorf("liveness %q: the sink must leave other status fields alone", got)
	}
}

// TestRegistrySinkReplica: a connect records the replica the host streams
// from; acks leave it alone.
func TestRegistrySinkReplica(t *testing.T) {
	f := &fakeHosts{hosts: map[string]apiv1.HostStatus{"h1": {Replica: "10.0.0.9:7444"}}}
	s, err := NewRegistrySink(RegistrySinkConfig{Registry: f, Workers: 1, Replica: "10.0.0.1:7444"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.Acked("h1", 3, "")
	s.flush(ctx)
	if got := f.hosts["h1"].Replica; got != "10.0.0.9:7444" {
		t.Errorf("after an ack: replica %q, want the previous one kept", got)
	}
	s.Connected("h1", "agent/1")
	s.flush(ctx)
	if got := f.hosts["h1"].Replica; got != "10.0.0.1:7444" {
		t.Errorf("after a connect: replica %q, want 10.0.0.1:7444", got)
	}
}

// TestRegistrySinkLiveness: liveness queued by the liveness sink goes out
// in the same write as the stream's fields, and lastSeen never moves back.
func TestRegistrySinkLiveness(t *testing.T) {
	f := &fakeHosts{hosts: map[string]apiv1.HostStatus{"h1": {}}}
	s, err := NewRegistrySink(RegistrySinkConfig{Registry: f, Workers: 1, Replica: "10.0.0.1:7444"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

	s.Connected("h1", "agent/1")
	s.QueueLiveness("h1", apiv1.LivenessAlive, t0)
	s.Acked("h1", 5, "")
	s.flush(ctx)
	want := apiv1.HostStatus{AgentVersion: "agent/1", Replica: "10.0.0.1:7444", ViewVersion: 5,
		Liveness: apiv1.LivenessAlive, LastSeen: t0.Format(time.RFC3339Nano), Conditions: []apiv1.Condition{
			{Type: apiv1.ConditionAlive, Status: apiv1.ConditionTrue, Reason: "Heartbeating"},
			{Type: apiv1.ConditionViewApplied, Status: apiv1.ConditionTrue, Reason: "Applied", Message: "view version 5"}}}
	if diff := cmp.Diff(want, f.hosts["h1"], cmpopts.IgnoreFields(apiv1.Condition{}, "LastTransitionTime")); diff != "" {
		t.Errorf("status after connect+alive+ack (-want +got):\n%s", diff)
	}
	if len(f.writes) != 1 {
		t.Errorf("%d writes, want 1: %q", len(f.writes), f.writes)
	}

	// Suspect with a zero lastSeen keeps the stored lastSeen; an older
	// lastSeen (a retried update) does not overwrite a newer one.
	s.QueueLiveness("h1", apiv1.LivenessSuspect, time.Time{})
	s.flush(ctx)
	s.QueueLiveness("h1", apiv1.LivenessDead, t0.Add(-time.Minute))
	s.flush(ctx)
	if got := f.hosts["h1"]; got.Liveness != apiv1.LivenessDead || got.LastSeen != t0.Format(time.RFC3339Nano) {
		t.Errorf("liveness %q lastSeen %q, want Dead and %s kept", got.Liveness, got.LastSeen, t0.Format(time.RFC3339Nano))
	}

	// Two transitions in one interval: the newest state and lastSeen win.
	s.QueueLiveness("h1", apiv1.LivenessAlive, t0.Add(time.Minute))
	s.QueueLiveness("h1", apiv1.LivenessSuspect, time.Time{})
	f.writes = nil
	s.flush(ctx)
	if got := f.hosts["h1"]; got.Liveness != apiv1.LivenessSuspect || got.LastSeen != t0.Add(time.Minute).Format(time.RFC3339Nano) || len(f.writes) != 1 {
		t.Errorf("liveness %q lastSeen %q (%d writes), want Suspect, %s, 1 write", got.Liveness, got.LastSeen, len(f.writes), t0.Add(time.Minute).Format(time.RFC3339Nano))
	}
}

// TestRegistrySinkLivenessOwner: a queued Suspect or Dead is written only
// if the stored host is still this replica's (Owns); Alive always is.
func TestRegistrySinkLivenessOwner(t *testing.T) {
	f := &fakeHosts{hosts: map[string]apiv1.HostStatus{"h1": {Replica: "b", Liveness: apiv1.LivenessAlive}}}
	s, err := NewRegistrySink(RegistrySinkConfig{Registry: f, Workers: 1, Replica: "a",
		Owns: func(h *apiv1.Host) bool { return h.Status.Replica == "a" }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.QueueLiveness("h1", apiv1.LivenessDead, time.Time{})
	s.flush(ctx)
	if got := f.hosts["h1"].Liveness; got != apiv1.LivenessAlive {
		t.Errorf("Dead queued for a host of replica b: %q, want Alive kept", got)
	}
	s.Connected("h1", "agent/1") // the agent moves here: the host is a's
	s.QueueLiveness("h1", apiv1.LivenessDead, time.Time{})
	s.flush(ctx)
	if got := f.hosts["h1"]; got.Liveness != apiv1.LivenessDead || got.Replica != "a" {
		t.Errorf("Dead queued with the host's connect here: %q on %q, want Dead on a", got.Liveness, got.Replica)
	}
}

// TestRegistrySinkLifecycle: Start once (its ctx bounds nothing after it),
// Close idempotent with one last flush of what is pending.
func TestRegistrySinkLifecycle(t *testing.T) {
	f := &fakeHosts{hosts: map[string]apiv1.HostStatus{"h1": {}}}
	s, err := NewRegistrySink(RegistrySinkConfig{Registry: f, Workers: 1, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := s.Start(context.Background()); !errors.Is(err, lifecycle.ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	s.Acked("h1", 4, "")
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{`h1 view=4 err="" agent=""`}, f.writes); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if err := s.Start(context.Background()); !errors.Is(err, lifecycle.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}
