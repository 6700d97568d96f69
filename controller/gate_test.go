package controller_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/internal/etcdtest"
)

// TestAnswersAreCurrent: what one replica acknowledged, the other's next
// answer reflects, although each serves from its own cache: a get sees
// the update, a create of the deleted object succeeds, an update to the
// value the other replica's cache still holds is written.
func TestAnswersAreCurrent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := startReplica(t, controller.Config{DataDir: t.TempDir(), AgentListen: "off"})
	cli, err := a.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	b := startReplica(t, controller.Config{EtcdEndpoints: cli.Endpoints(), ClusterKeyFile: a.ClusterKeyFile(), AgentListen: "off"})
	apiA, apiB := apiClient(t, a), apiClient(t, b)
	tenant := func(v int) *apiv1.Tenant {
		o := etcdtest.Tenant("t")
		o.Metadata.Labels = map[string]string{"v": strconv.Itoa(v)}
		return o
	}
	if _, err := apiA.Create(ctx, tenant(0)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		if _, err := apiB.Update(ctx, tenant(i)); err != nil {
			t.Fatalf("update %d through b: %v", i, err)
		}
		got, err := apiA.Get(ctx, apiv1.KindTenant, "", "t")
		if err != nil || got.GetObjectMeta().Labels["v"] != strconv.Itoa(i) {
			t.Fatalf("get through a after update %d through b: %v, %v", i, got, err)
		}
		// b's cache may still hold i-1 after a's write of it: the update
		// back to i is written all the same.
		if _, err := apiA.Update(ctx, tenant(i-1)); err != nil {
			t.Fatal(err)
		}
		if _, err := apiB.Update(ctx, tenant(i)); err != nil {
			t.Fatal(err)
		}
		if got, err := apiA.Get(ctx, apiv1.KindTenant, "", "t"); err != nil || got.GetObjectMeta().Labels["v"] != strconv.Itoa(i) {
			t.Fatalf("update %d through b after a's back to %d: lost (%v, %v)", i, i-1, got, err)
		}
		if _, err := apiB.Delete(ctx, apiv1.KindTenant, "", "t"); err != nil {
			t.Fatalf("delete %d through b: %v", i, err)
		}
		if _, err := apiA.Create(ctx, tenant(i)); err != nil {
			t.Fatalf("create through a after the delete %d through b: %v", i, err)
		}
	}
}
