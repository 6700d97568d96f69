package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/store"
)

// TestEtcdNoSpace fills the etcd of a controller past its quota: etcd
// raises its NOSPACE alarm, the controller refuses writes with a 503 that
// says so and reports it on /readyz; deletes still pass; once space is
// freed, 'weft etcd defrag' compacts, defragments and disarms the alarm,
// and writes pass again.
func TestEtcdNoSpace(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: t.TempDir(), QuotaBackendBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	endpoints := cli.Endpoints()
	ctl, err := controller.New(controller.Config{DataDir: t.TempDir(), EtcdEndpoints: endpoints, APIListen: "127.0.0.1:0", AgentListen: "off", InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	api, err := client.New("http://"+ctl.APIAddr(), client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	tenant := func(name string) *apiv1.Tenant {
		return &apiv1.Tenant{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindTenant}, Metadata: apiv1.ObjectMeta{Name: name}}
	}
	if _, err := api.Create(ctx, tenant("before")); err != nil {
		t.Fatal(err)
	}

	// Another user of the cluster fills it until etcd refuses.
	junk := strings.Repeat("x", 512<<10)
	var n int
	for n = 0; ; n++ {
		if _, err := cli.Put(ctx, "/junk/"+string(rune('a'+n%26))+strings.Repeat("z", n/26), junk); err != nil {
			if !errors.Is(err, rpctypes.ErrNoSpace) {
				t.Fatalf("fill etcd: %v, want NOSPACE", err)
			}
			break
		}
	}
	eventually(t, time.Minute, func() string {
		_, err := api.Create(ctx, tenant("during"))
		if apiv1.ReasonOf(err) == apiv1.ReasonUnavailable && strings.Contains(err.Error(), "out of space") {
			return ""
		}
		return "a write under NOSPACE: " + errString(err) + ", want a 503 saying etcd is out of space"
	})
	resp, err := http.Get("http://" + ctl.APIAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz under NOSPACE: %s, want 503", resp.Status)
	}
	if _, err := api.Delete(ctx, apiv1.KindTenant, "", "before"); err != nil {
		t.Errorf("a delete under NOSPACE: %v", err)
	}

	if _, err := cli.Delete(ctx, "/junk/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, env: map[string]string{}}
	out := h.ok("etcd", "defrag", "--etcd-endpoints", strings.Join(endpoints, ","))
	if !strings.Contains(out, "defragmented") || !strings.Contains(out, "disarmed NOSPACE") {
		t.Errorf("weft etcd defrag printed:\n%s", out)
	}
	eventually(t, time.Minute, func() string {
		if _, err := api.Create(ctx, tenant("after")); err != nil {
			return "a write after the defragmentation: " + err.Error()
		}
		return ""
	})
}

func errString(err error) string {
	if err == nil {
		return "success"
	}
	return err.Error()
}
