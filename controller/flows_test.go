package controller_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/flowagg"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/datapath"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/internal/etcdtest"
)

// TestFlowsEndToEnd: an agent whose (simulated) data plane carries
// traffic reports it; the controller answers the tenant's top-talkers
// query with the flow and its endpoints' names, another tenant with the
// same addresses sees none of it, and /metrics serves the VPC's counters,
// the southbound's health and the embedded etcd's own metrics.
func TestFlowsEndToEnd(t *testing.T) {
	c := startReplica(t, controller.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api, err := client.New("http://" + c.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	const host = "h1"
	objs := []apiv1.Object{etcdtest.Host(host, "192.0.2.10")}
	for _, tenant := range []string{"acme", "zeta"} {
		objs = append(objs, etcdtest.Tenant(tenant), etcdtest.VPC(tenant, "main", "10.0.0.0/16"), etcdtest.Subnet(tenant, "a", "main", "10.0.1.0/24"),
			etcdtest.Endpoint(tenant, "web", "a", host), etcdtest.Endpoint(tenant, "db", "a", host))
	}
	for _, o := range objs {
		if _, err := api.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	drv := simdp.New(simdp.Config{FlowSampling: 1})
	ag, err := agent.New(agent.Config{
		Host: host, StreamAddrs: []string{c.AgentAddr()}, UDPAddr: c.AgentAddr(),
		Key: hostkey.Derive(c.ClusterSecret(), host), Driver: drv, UnderlayIP: netip.MustParseAddr("192.0.2.10"),
		Backoff: backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond},
		Flows:   agent.FlowConfig{Interval: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	waitFor(t, "the view applied", func() bool { return ag.AppliedVersion() != 0 && ag.HostID() != 0 })
	o, err := api.Get(ctx, apiv1.KindEndpoint, "acme", "db")
	if err != nil {
		t.Fatal(err)
	}
	db := netip.MustParseAddr(o.(*apiv1.Endpoint).Status.IP)
	waitFor(t, "acme/web sends to acme/db", func() bool {
		dec, err := drv.Send("acme/web", simdp.Packet{Dst: db, Proto: datapath.ProtoTCP, SrcPort: 40000, DstPort: 5432, Bytes: 1500})
		return err == nil && dec.Verdict == simdp.VerdictLocal
	})
	for range 99 {
		if _, err := drv.Send("acme/web", simdp.Packet{Dst: db, Proto: datapath.ProtoTCP, SrcPort: 40000, DstPort: 5432, Bytes: 1500, Midstream: true}); err != nil {
			t.Fatal(err)
		}
	}

	query := func(tenant string) flowagg.FlowList {
		t.Helper()
		resp, err := api.Raw(ctx, http.MethodGet, "/apis/weft/v1/tenants/"+tenant+"/flows?top=5", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var l flowagg.FlowList
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&l) != nil {
			t.Fatalf("GET flows of %s: %s", tenant, resp.Status)
		}
		return l
	}
	var l flowagg.FlowList
	waitFor(t, "acme's flow in the top talkers", func() bool {
		l = query("acme")
		return len(l.Items) == 1 && l.Items[0].Packets == 100
	})
	if f := l.Items[0]; f.SrcEndpoint != "web" || f.DstEndpoint != "db" || f.Bytes != 150000 || f.Verdict != "allow" || f.Proto != "tcp" {
		t.Errorf("acme's top talker %+v: want web → db, 150000 bytes, allowed tcp", f)
	}
	if z := query("zeta"); len(z.Items) != 0 {
		t.Errorf("zeta sees flows: %+v", z.Items)
	}

	resp, err := api.Raw(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`weft_vpc_bytes_total{direction="sent",tenant="acme",vpc="main"} 150000`,
		`weft_vpc_bytes_total{direction="received",tenant="acme",vpc="main"} 150000`,
		"weft_southbound_programming_seconds_count",
		"weft_southbound_heartbeat_loss_ratio_bucket",
		"etcd_server_has_leader 1",
		"etcd_mvcc_db_total_size_in_bytes",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
