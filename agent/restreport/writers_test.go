package restreport

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/controller/southbound/stream"
)

// TestStatusWritersKeepEachOthersFields: the three writers of status write
// one Host and one Endpoint concurrently, many rounds each, each through
// its own code path: the liveness sink (Host liveness and lastSeen; the
// Endpoint's phase Lost while the host is dead and Ready when it is back),
// the config stream's sink (Host agentVersion, replica, viewVersion,
// lastError) and this reporter over the REST API (the Endpoint's netns,
// phase, message and conditions). At the end every field holds its writer's last
// value: no writer overwrote another's, and the allocated fields are kept.
func TestStatusWritersKeepEachOthersFields(t *testing.T) {
	const rounds = 40
	ctx := t.Context()
	srv, reporter := newAPI(t)
	network(t, srv, "web")
	hostRef := apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}
	epRef := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web"}
	reporter.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	host0 := stored(t, srv, hostRef).(*apiv1.Host)
	ep0 := stored(t, srv, epRef).(*apiv1.Endpoint)

	live, err := liveness.NewRegistrySink(liveness.RegistrySinkConfig{
		Store: srv.Env.Store, Registry: srv.Env.Registry, MarkRate: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	streams, err := stream.NewRegistrySink(stream.RegistrySinkConfig{
		Registry: srv.Env.Registry, Replica: "10.0.0.1:7444", Interval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer streams.Close()

	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lastSeen := func(i int) time.Time { return seen.Add(time.Duration(i) * time.Second) }
	netns := func(i int) string { return fmt.Sprintf("/var/run/netns/wft-h1-%d", i) }
	var g errgroup.Group
	g.Go(func() error { // the liveness tracker: the host dies and comes back, ending Alive
		for i := range rounds {
			to, from := liveness.Dead, liveness.Alive
			if i%2 == 1 {
				to, from = from, to
			}
			tr := liveness.Transition{HostID: host0.Status.HostID, From: from, To: to, At: lastSeen(i), LastSeen: lastSeen(i)}
			if err := live.Transitions(ctx, []liveness.Transition{tr}); err != nil {
				return fmt.Errorf("liveness round %d: %w", i, err)
			}
		}
		return nil
	})
	g.Go(func() error { // the config stream: connects, acks, and last a nack
		for i := range rounds {
			streams.Connected("h1", fmt.Sprint("agent-", i))
			streams.Acked("h1", uint64(i+1), "")
			time.Sleep(time.Millisecond) // let flushes interleave with the other writers
		}
		streams.Nacked("h1", rounds+1, "veth: EEXIST")
		return nil
	})
	g.Go(func() error { // the agent: the endpoint is Ready, in a new namespace each round
		for i := range rounds {
			rep := agent.EndpointReport{ID: "acme/web", Netns: netns(i), Phase: agent.PhaseReady}
			if err := reporter.ReportEndpoints(ctx, []agent.EndpointReport{rep}); err != nil {
				return fmt.Errorf("report round %d: %w", i, err)
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	streams.Close() // flushes what is pending

	wantHost := host0.Status // hostID: allocated, kept
	wantHost.Liveness = liveness.Alive.String()
	wantHost.LastSeen = lastSeen(rounds - 1).Format(time.RFC3339Nano)
	wantHost.AgentVersion = fmt.Sprint("agent-", rounds-1)
	wantHost.Replica = "10.0.0.1:7444"
	wantHost.ViewVersion = rounds
	wantHost.LastError = "veth: EEXIST"
	wantHost.Conditions = []apiv1.Condition{
		{Type: apiv1.ConditionAlive, Status: apiv1.ConditionTrue, Reason: "Heartbeating", ObservedGeneration: 1},
		{Type: apiv1.ConditionViewApplied, Status: apiv1.ConditionFalse, Reason: "NotApplied", Message: "veth: EEXIST", ObservedGeneration: 1}}
	if diff := cmp.Diff(wantHost, stored(t, srv, hostRef).(*apiv1.Host).Status, cmpopts.IgnoreFields(apiv1.Condition{}, "LastTransitionTime")); diff != "" {
		t.Errorf("host status (-want +got):\n%s", diff)
	}
	// Phase: the agent's last report is Ready, and the liveness sink's last
	// write returned the endpoint from Lost to Ready (or found it Ready).
	wantEP := ep0.Status // ip, mac, vni, host: allocated, kept
	wantEP.Netns, wantEP.Phase, wantEP.Message = netns(rounds-1), apiv1.PhaseReady, ""
	for _, typ := range []string{apiv1.ConditionPolicyProgrammed, apiv1.ConditionQoSProgrammed} {
		wantEP.Conditions = append(wantEP.Conditions, apiv1.Condition{Type: typ, Status: apiv1.ConditionTrue,
			Reason: ReasonProgrammed, LastTransitionTime: "2026-01-02T03:04:05Z"})
	}
	if diff := cmp.Diff(wantEP, stored(t, srv, epRef).(*apiv1.Endpoint).Status, ignoreReady); diff != "" {
		t.Errorf("endpoint status (-want +got):\n%s", diff)
	}
}
