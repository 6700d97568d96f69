package controller_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/flowagg"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/datapath"
	simdp "github.com/weftnet/weft/datapath/sim"
)

// TestFlowsEndToEnd: on a secure controller, an agent whose (simulated)
// data plane carries traffic reports it. A credential of the tenant reads
// the flow with its endpoints' names; another tenant's credential, whose
// endpoints have the same addresses, sees none of it and may not ask for
// it, nor may the agent; /metrics serves the VPC's counters, the
// southbound's health and the embedded etcd's own metrics.
func TestFlowsEndToEnd(t *testing.T) {
	s := startSecure(t, controller.Config{DataDir: t.TempDir(), AgentListen: "127.0.0.1:0"}, nil)
	for _, c := range []struct{ path, body string }{
		{"/hosts", obj("Host", "", "h1", `{"underlayIP":"192.0.2.10"}`)},
		{"/tenants", obj("Tenant", "", "acme", `{}`)},
		{"/tenants", obj("Tenant", "", "zeta", `{}`)},
		{"/tenants/acme/vpcs", obj("VPC", "", "main", `{"cidrs":["10.0.0.0/16"]}`)},
		{"/tenants/acme/subnets", obj("Subnet", "", "a", `{"vpc":"main","cidr":"10.0.1.0/24"}`)},
		{"/tenants/acme/endpoints", obj("Endpoint", "", "web", `{"subnet":"a","host":"h1","ip":"10.0.1.10"}`)},
		{"/tenants/acme/endpoints", obj("Endpoint", "", "db", `{"subnet":"a","host":"h1","ip":"10.0.1.20"}`)},
		{"/tenants/zeta/vpcs", obj("VPC", "", "main", `{"cidrs":["10.0.0.0/16"]}`)},
		{"/tenants/zeta/subnets", obj("Subnet", "", "a", `{"vpc":"main","cidr":"10.0.1.0/24"}`)},
		{"/tenants/zeta/endpoints", obj("Endpoint", "", "web", `{"subnet":"a","host":"h1","ip":"10.0.1.10"}`)},
		{"/tenants/zeta/endpoints", obj("Endpoint", "", "db", `{"subnet":"a","host":"h1","ip":"10.0.1.20"}`)},
	} {
		s.must(t, s.admin, "POST", c.path, c.body, http.StatusCreated)
	}
	e := s.enrol(t, "h1", "192.0.2.10")
	key, err := secrets.ParseKey(e.HostKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	drv := simdp.New(simdp.Config{FlowSampling: 1})
	ag := startAgent(ctx, t, agent.Config{
		Host: "h1", StreamAddrs: []string{s.c.AgentAddr()}, UDPAddr: s.c.AgentAddr(),
		Key: key, Driver: drv,
		Flows: agent.FlowConfig{Interval: 50 * time.Millisecond},
	})
	defer ag.Close()
	db := netip.MustParseAddr("10.0.1.20")
	waitFor(t, "acme/web sends to acme/db", func() bool {
		dec, err := drv.Send("acme/web", simdp.Packet{Dst: db, Proto: datapath.ProtoTCP, SrcPort: 40000, DstPort: 5432, Bytes: 1500})
		return err == nil && dec.Verdict == simdp.VerdictLocal
	})
	for range 99 {
		if _, err := drv.Send("acme/web", simdp.Packet{Dst: db, Proto: datapath.ProtoTCP, SrcPort: 40000, DstPort: 5432, Bytes: 1500, Midstream: true}); err != nil {
			t.Fatal(err)
		}
	}

	_, acme := s.token(t, "tenant-viewer", "acme", "")
	_, zeta := s.token(t, "tenant-admin", "zeta", "")
	query := func(token, tenant string, code int) flowagg.FlowList {
		t.Helper()
		var l flowagg.FlowList
		if b := s.must(t, token, "GET", "/tenants/"+tenant+"/flows?top=5", "", code); code == http.StatusOK {
			if err := json.Unmarshal([]byte(b), &l); err != nil {
				t.Fatal(err)
			}
		}
		return l
	}
	var l flowagg.FlowList
	waitFor(t, "acme's flow in the top talkers", func() bool {
		l = query(acme, "acme", http.StatusOK)
		return len(l.Items) == 1 && l.Items[0].Packets == 100
	})
	if f := l.Items[0]; f.SrcEndpoint != "web" || f.DstEndpoint != "db" || f.Bytes != 150000 || f.Verdict != "allow" || f.Proto != "tcp" {
		t.Errorf("acme's top talker %+v: want web → db, 150000 bytes, allowed tcp", f)
	}
	if z := query(zeta, "zeta", http.StatusOK); len(z.Items) != 0 {
		t.Errorf("zeta sees flows: %+v", z.Items)
	}
	query(zeta, "acme", http.StatusForbidden)
	query(acme, "zeta", http.StatusForbidden)
	query(e.Token, "acme", http.StatusForbidden) // the agent's credential

	code, metrics := doWith(t, s.hc, s.admin, "GET", s.base+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, want := range []string{
		`weft_vpc_bytes_total{direction="sent",tenant="acme",vpc="main"} 150000`,
		`weft_vpc_bytes_total{direction="received",tenant="acme",vpc="main"} 150000`,
		"weft_southbound_programming_seconds_count",
		"weft_southbound_heartbeat_loss_ratio_bucket",
		"etcd_server_has_leader 1",
		"etcd_mvcc_db_total_size_in_bytes",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
