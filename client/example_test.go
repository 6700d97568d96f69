package client_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/client/clientconfig"
	"github.com/weftnet/weft/controller"
)

// Apply is idempotent: applying the same objects twice changes nothing.
func ExampleClient_Apply() {
	ctx := context.Background()
	// A controller as `weft controller` runs it (API only, etcd embedded
	// in a scratch directory) stands in for yours in this example.
	dir, err := os.MkdirTemp("", "weft-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	ctrl, err := controller.New(controller.Config{DataDir: dir, APIListen: "127.0.0.1:0", AgentListen: "off"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := ctrl.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer ctrl.Close()

	// The controller wrote a context with its URL, its CA and a
	// cluster-admin token: the CLI's configuration ($WEFT_CONFIG) works too.
	cfg, err := clientconfig.Load(filepath.Join(dir, "admin.config"))
	if err != nil {
		fmt.Println(err)
		return
	}
	settings, err := cfg.Resolve(clientconfig.Overrides{})
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := client.New(settings.Server, client.WithCA(settings.CA), client.WithToken(settings.Token))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	tenant := apiv1.MustKind(apiv1.KindTenant).New()
	tenant.GetObjectMeta().Name = "acme"
	vpc := &apiv1.VPC{
		TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindVPC},
		Metadata: apiv1.ObjectMeta{Name: "main", Tenant: "acme"},
		Spec:     apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}},
	}
	for range 2 {
		for _, o := range []apiv1.Object{tenant, vpc} {
			result, _, err := c.Apply(ctx, o)
			if err != nil {
				fmt.Println(err)
				return
			}
			fmt.Println(apiv1.RefOf(o), result)
		}
	}
	// Output:
	// tenant/acme created
	// vpc/acme/main created
	// tenant/acme unchanged
	// vpc/acme/main unchanged
}
