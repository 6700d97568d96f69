package controller_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/datapath"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/internal/etcdtest"
)

// TestRollingRestart restarts the three replicas of an embedded HA
// cluster one after another while agents stream from them: the agents
// move between replicas, no host's datapath is written again and no
// endpoint is marked Lost.
func TestRollingRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfgs := haMembers(t, 3)
	for i := range cfgs {
		cfgs[i].AgentListen = freeLoopback(t)
	}
	cs := startReplicas(t, cfgs...)
	api := apiClient(t, cs[0])
	const hosts = 6
	objs := []apiv1.Object{etcdtest.Tenant("acme"), etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24")}
	for h := range hosts {
		host := fmt.Sprintf("h%d", h)
		objs = append(objs, etcdtest.Host(host, fmt.Sprintf("192.0.2.%d", 10+h)),
			etcdtest.Endpoint("acme", host+"-a", "a", host), etcdtest.Endpoint("acme", host+"-b", "a", host))
	}
	for _, o := range objs {
		if _, err := api.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	addrs := []string{cfgs[0].AgentListen, cfgs[1].AgentListen, cfgs[2].AgentListen}
	type host struct {
		ag  *agent.Agent
		drv *simdp.Driver
	}
	var hs []host
	for h := range hosts {
		name, ip := fmt.Sprintf("h%d", h), fmt.Sprintf("192.0.2.%d", 10+h)
		drv := simdp.New(simdp.Config{})
		ag := startAgent(ctx, t, agent.Config{
			Host: name, StreamAddrs: addrs, UDPAddr: addrs[0], UDPFollowsStream: true,
			Key: enrol(t, api, name, ip).key, Driver: drv, UnderlayIP: netip.MustParseAddr(ip),
			Backoff: backoff.Policy{Min: time.Millisecond, Max: 100 * time.Millisecond},
		})
		defer ag.Close()
		hs = append(hs, host{ag, drv})
	}
	local := func(d *simdp.Driver) int {
		snap, err := d.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Endpoints)
	}
	for _, h := range hs {
		waitFor(t, "every host programmed", func() bool { return h.ag.Connected() && local(h.drv) == 2 })
	}
	before := make([]datapath.Counts, len(hs))
	for i, h := range hs {
		before[i] = h.drv.Counts()
	}

	for i := range cs {
		if err := cs[i].Close(); err != nil {
			t.Fatal(err)
		}
		cs[i] = startReplicas(t, cfgs[i])[0]
		waitFor(t, fmt.Sprintf("replica %d ready again", i), func() bool { code, _ := readyz(cs[i]); return code == 200 })
	}
	for i, h := range hs {
		waitFor(t, "every agent connected after the roll", h.ag.Connected)
		// Every replica went away once: every agent moved at least once.
		if n := h.ag.Stats().StreamConnects; n < 2 {
			t.Errorf("host h%d: %d stream connections, want a move to another replica", i, n)
		}
	}
	api = apiClient(t, cs[0])
	eps, _, err := api.List(ctx, apiv1.KindEndpoint, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range eps {
		if ep := o.(*apiv1.Endpoint); ep.Status.Phase == apiv1.PhaseLost {
			t.Errorf("endpoint %s marked Lost during the roll: %s", ep.Metadata.Name, ep.Status.Message)
		}
	}
	for i, h := range hs {
		if diff := h.drv.Counts().Sub(before[i]); len(diff) != 0 {
			t.Errorf("host h%d: datapath writes during the roll: %v, want none", i, diff)
		}
	}
}
