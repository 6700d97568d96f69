package controller_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/backup"
	"github.com/weftnet/weft/controller/secrets"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/internal/etcdtest"
)

// TestBackupRestore: a backup of a running controller, restored into a new
// data dir, serves every object; the agent of a host, programmed before,
// reconnects to the restored controller (same address) and reconciles to
// it without a single datapath write.
func TestBackupRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agentAddr := freeLoopback(t)
	a := startReplica(t, controller.Config{DataDir: t.TempDir(), AgentListen: agentAddr})
	api := apiClient(t, a)
	for _, o := range []apiv1.Object{etcdtest.Tenant("acme"), etcdtest.Host("h1", "192.0.2.10"), etcdtest.Host("h2", "192.0.2.11"),
		etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"),
		etcdtest.Endpoint("acme", "web-1", "a", "h1"), etcdtest.Endpoint("acme", "web-2", "a", "h1"), etcdtest.Endpoint("acme", "db-1", "a", "h2")} {
		if _, err := api.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	drv := simdp.New(simdp.Config{})
	ag := startAgent(ctx, t, agent.Config{
		Host: "h1", StreamAddrs: []string{agentAddr}, UDPAddr: agentAddr, UDPFollowsStream: true,
		Key: enrol(t, api, "h1", "192.0.2.10").key, Driver: drv,
		Backoff: backoff.Policy{Min: time.Millisecond, Max: 50 * time.Millisecond},
	})
	defer ag.Close()
	local := func() int {
		snap, err := drv.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Endpoints)
	}
	waitFor(t, "h1 programmed", func() bool { return ag.AppliedVersion() != 0 && local() == 2 })

	objects := func(api *client.Client) map[string]string {
		out := map[string]string{}
		for _, k := range []struct{ kind, tenant string }{{apiv1.KindTenant, ""}, {apiv1.KindHost, ""}, {apiv1.KindVPC, "acme"},
			{apiv1.KindSubnet, "acme"}, {apiv1.KindEndpoint, "acme"}} {
			objs, _, err := api.List(ctx, k.kind, k.tenant, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				out[apiv1.RefOf(o).String()] = identity(t, o)
			}
		}
		return out
	}
	before := objects(api)
	cli, err := a.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	key, err := secrets.ReadKeyFile(a.ClusterKeyFile())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "weft.backup")
	if _, err := backup.WriteFile(ctx, file, cli, key, backup.Lock{}); err != nil {
		t.Fatal(err)
	}
	writes := drv.Counts()
	held := ag.AppliedVersion()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(file, backup.RestoreConfig{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	b := startReplica(t, controller.Config{DataDir: dir, AgentListen: agentAddr})
	if diff := cmp.Diff(before, objects(apiClient(t, b))); diff != "" {
		t.Errorf("objects of the restored controller (-before +after):\n%s", diff)
	}
	waitFor(t, "h1 reconciled with the restored controller", func() bool {
		return ag.Stats().StreamConnects >= 2 && ag.Connected() && ag.AppliedVersion() != held
	})
	if diff := drv.Counts().Sub(writes); len(diff) != 0 {
		t.Errorf("datapath writes after the restore: %v, want none", diff)
	}
	if n := local(); n != 2 {
		t.Errorf("%d local endpoints after the restore, want 2", n)
	}
}

// identity is what a restore must keep of an object: its spec and what
// was allocated for it.
func identity(t *testing.T, o apiv1.Object) string {
	t.Helper()
	var alloc any
	switch o := o.(type) {
	case *apiv1.Endpoint:
		alloc = []string{o.Status.IP, o.Status.MAC}
	case *apiv1.VPC:
		alloc = o.Status.VNI
	case *apiv1.Host:
		alloc = o.Status.HostID
	}
	b, err := json.Marshal([]any{o.GetObjectMeta().Labels, reflect.ValueOf(o).Elem().FieldByName("Spec").Interface(), alloc})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
