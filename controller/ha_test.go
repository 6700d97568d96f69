package controller_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/internal/etcdtest"
)

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// haMembers returns the configurations of n replicas embedding the
// members of one etcd cluster on loopback, sharing a cluster key.
func haMembers(t *testing.T, n int) []controller.Config {
	t.Helper()
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := secrets.WriteKeyFile(key, secrets.NewKey()); err != nil {
		t.Fatal(err)
	}
	var cfgs []controller.Config
	var initial []string
	for i := range n {
		c := controller.Config{DataDir: t.TempDir(), ClusterKeyFile: key, EtcdName: fmt.Sprintf("m%d", i),
			EtcdPeerListen: "https://" + freeLoopback(t), EtcdClientListen: "https://" + freeLoopback(t)}
		initial = append(initial, c.EtcdName+"="+c.EtcdPeerListen)
		cfgs = append(cfgs, c)
	}
	for i := range cfgs {
		cfgs[i].EtcdInitialCluster = strings.Join(initial, ",")
	}
	return cfgs
}

// startReplicas starts replicas together: each waits for an etcd quorum.
func startReplicas(t *testing.T, cfgs ...controller.Config) []*controller.Controller {
	t.Helper()
	cs := make([]*controller.Controller, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() { cs[i] = startReplica(t, cfg) })
	}
	wg.Wait()
	for _, c := range cs {
		if c == nil {
			t.FailNow() // startReplica reported why
		}
	}
	return cs
}

func apiClient(t *testing.T, c *controller.Controller) *client.Client {
	t.Helper()
	api, err := client.New("http://"+c.APIAddr(), client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	return api
}

// readyz returns the status and body of a replica's /readyz.
func readyz(c *controller.Controller) (int, string) {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + c.APIAddr() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestEmbeddedHA: three replicas each embed a member of one etcd cluster
// (peers over TLS from the cluster key's etcd CA); what one writes the
// others serve; a fourth joins the running cluster and a client-only
// replica reaches the members' client URLs. When two of the three
// original members stop, the last one refuses writes at once with the
// reason, refuses gets (linearizable) but serves lists from its cache,
// says so on /readyz and closes its agents' config streams;
// once a member is back it serves writes and agents again.
func TestEmbeddedHA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfgs := haMembers(t, 3)
	cs := startReplicas(t, cfgs...)
	a, c := apiClient(t, cs[0]), apiClient(t, cs[2])
	for _, o := range []apiv1.Object{etcdtest.Tenant("acme"), etcdtest.Host("h1", "192.0.2.10"), etcdtest.VPC("acme", "main", "10.0.0.0/16"),
		etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"), etcdtest.Endpoint("acme", "web-1", "a", "h1")} {
		if _, err := a.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the endpoint served by the third replica", func() bool {
		_, err := c.Get(ctx, apiv1.KindEndpoint, "acme", "web-1")
		return err == nil
	})

	join := controller.Config{DataDir: t.TempDir(), ClusterKeyFile: cfgs[0].ClusterKeyFile, EtcdName: "m3",
		EtcdPeerListen: "https://" + freeLoopback(t), EtcdJoin: cfgs[1].EtcdClientListen}
	d := startReplicas(t, join)[0]
	if _, err := apiClient(t, d).Get(ctx, apiv1.KindEndpoint, "acme", "web-1"); err != nil {
		t.Errorf("the joined replica: %v", err)
	}
	e := startReplica(t, controller.Config{ClusterKeyFile: cfgs[0].ClusterKeyFile,
		EtcdEndpoints: []string{cfgs[0].EtcdClientListen, cfgs[1].EtcdClientListen, cfgs[2].EtcdClientListen}})
	if _, err := apiClient(t, e).Create(ctx, etcdtest.Endpoint("acme", "web-2", "a", "h1")); err != nil {
		t.Errorf("a write through the client-only replica: %v", err)
	}
	cli, err := cs[0].EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 4 {
		t.Fatalf("members: %v %v, want 4", ml, err)
	}
	for _, m := range ml.Members {
		if m.Name == "m3" {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range []*controller.Controller{d, e} {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// An agent streams from replica 0, which then loses its quorum.
	ag := startAgent(ctx, t, agent.Config{
		Host: "h1", StreamAddrs: []string{cs[0].AgentAddr()}, UDPAddr: cs[0].AgentAddr(), UDPFollowsStream: true,
		Key:     enrol(t, a, "h1", "192.0.2.10").key,
		Backoff: backoff.Policy{Min: time.Millisecond, Max: 100 * time.Millisecond},
	})
	defer ag.Close()
	waitFor(t, "the agent connected", ag.Connected)
	for _, r := range cs[1:] {
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "/readyz reporting the lost quorum", func() bool {
		code, body := readyz(cs[0])
		return code == http.StatusServiceUnavailable && strings.Contains(body, "quorum")
	})
	start := time.Now()
	_, err = a.Create(ctx, etcdtest.Endpoint("acme", "web-3", "a", "h1"))
	if took := time.Since(start); apiv1.ReasonOf(err) != apiv1.ReasonUnavailable || !strings.Contains(err.Error(), "quorum") || took > 2*time.Second {
		t.Errorf("a write without quorum: %v after %s, want a 503 naming the quorum at once", err, took)
	}
	if objs, _, err := a.List(ctx, apiv1.KindEndpoint, "acme", ""); err != nil || len(objs) != 2 {
		t.Errorf("a list without quorum: %d objects, %v; want the 2 of the cache", len(objs), err)
	}
	start = time.Now()
	_, err = a.Get(ctx, apiv1.KindEndpoint, "acme", "web-1")
	if took := time.Since(start); apiv1.ReasonOf(err) != apiv1.ReasonUnavailable || took > 2*time.Second {
		t.Errorf("a get without quorum: %v after %s, want a 503 at once (a get is linearizable)", err, took)
	}
	waitFor(t, "the agent fenced off", func() bool { return !ag.Connected() })

	startReplicas(t, cfgs[1])
	waitFor(t, "/readyz ok again", func() bool { code, _ := readyz(cs[0]); return code == http.StatusOK })
	if _, err := a.Create(ctx, etcdtest.Endpoint("acme", "web-3", "a", "h1")); err != nil {
		t.Errorf("a write with the quorum back: %v", err)
	}
	waitFor(t, "the agent back", ag.Connected)
}
