package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/sim"
)

// TestLivenessFollowsOwnership: replicas A and B each serve a host. B and
// its host's agent stop: A, which outlives B, must not report B's host
// Suspect or Dead — not after B leaves the live members (10 s), nor after
// A's grace for hosts it adopts. Then A's host's agent and A stop, and A
// alone starts again (long before B would): it reports its own silent host
// Dead after its grace, and still leaves B's host alone — B stays the
// host's owner for replicas.DefaultOwnerTTL.
func TestLivenessFollowsOwnership(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const grace = 2 * time.Second
	dir := t.TempDir()
	aCfg := controller.WithTrackGrace(controller.Config{DataDir: dir, AgentListen: freeLoopback(t)}, grace)
	a := startReplica(t, aCfg)
	cli, err := a.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	b := startReplica(t, controller.WithTrackGrace(controller.Config{EtcdEndpoints: cli.Endpoints(), ClusterKeyFile: a.ClusterKeyFile()}, grace))
	api := apiClient(t, a)
	replicas := []string{a.AgentAddr(), b.AgentAddr()}
	hostOf := map[string]string{} // replica → a host ranking it first
	for i := 0; len(hostOf) < 2; i++ {
		h := fmt.Sprintf("h%d", i)
		if r := sim.ReplicaFor(h, replicas); hostOf[r] == "" {
			hostOf[r] = h
		}
	}
	hA, hB := hostOf[a.AgentAddr()], hostOf[b.AgentAddr()]
	agents := map[string]*agent.Agent{}
	for _, h := range []string{hA, hB} {
		if _, err := api.Create(ctx, etcdtest.Host(h, "192.0.2.10")); err != nil {
			t.Fatal(err)
		}
		ag := startAgent(ctx, t, agent.Config{
			Host: h, StreamAddrs: replicas, UDPAddr: sim.ReplicaFor(h, replicas), UDPFollowsStream: true,
			Key: enrol(t, api, h, "192.0.2.10").key, HeartbeatInterval: 200 * time.Millisecond,
		})
		t.Cleanup(func() { ag.Close() })
		agents[h] = ag
	}
	status := func(h string) (apiv1.HostStatus, string) {
		t.Helper()
		o, err := api.Get(ctx, apiv1.KindHost, "", h)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*apiv1.Host).Status, o.GetObjectMeta().ResourceVersion
	}
	for h, r := range map[string]string{hA: a.AgentAddr(), hB: b.AgentAddr()} {
		waitFor(t, h+" Alive on its replica", func() bool {
			st, _ := status(h)
			return st.Liveness == apiv1.LivenessAlive && st.Replica == r
		})
	}

	// A outlives B.
	agents[hB].Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_, rvB := status(hB)
	// B's lease expires after replicas.DefaultTTL (10 s); a host A adopted
	// then would be Dead after grace + 2.5 s.
	time.Sleep(10*time.Second + grace + 5*time.Second)
	if st, rv := status(hB); rv != rvB || st.Liveness != apiv1.LivenessAlive {
		t.Errorf("A wrote B's host %s after B stopped: resourceVersion %s -> %s, liveness %q", hB, rvB, rv, st.Liveness)
	}

	// A starts again, alone.
	agents[hA].Close()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = startReplica(t, aCfg)
	api = apiClient(t, a)
	waitFor(t, "A's own silent host Dead", func() bool {
		st, _ := status(hA)
		return st.Liveness == apiv1.LivenessDead
	})
	time.Sleep(grace)
	if st, rv := status(hB); rv != rvB || st.Liveness != apiv1.LivenessAlive {
		t.Errorf("A, restarted alone, wrote B's host %s: resourceVersion %s -> %s, liveness %q", hB, rvB, rv, st.Liveness)
	}
}
