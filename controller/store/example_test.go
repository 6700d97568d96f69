package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
)

// Start an embedded etcd, create a Host with a conditional write and read
// it back from the cache.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "weft-store-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	etcd, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		panic(err)
	}
	defer etcd.Close()
	cli, err := etcd.Client()
	if err != nil {
		panic(err)
	}
	defer cli.Close()
	s, err := store.New(store.Config{Client: cli})
	if err != nil {
		panic(err)
	}
	if err := s.Start(ctx); err != nil {
		panic(err)
	}
	defer s.Close()

	h := apiv1.MustKind(apiv1.KindHost).New().(*apiv1.Host)
	h.Metadata.Name = "h1"
	h.Spec.UnderlayIP = "192.0.2.11"
	value, err := store.EncodeObject(h)
	if err != nil {
		panic(err)
	}
	key := s.ObjectKey(apiv1.RefOf(h))
	res, err := s.Commit(ctx, store.Txn{
		Compares: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, // create only
		Ops:      []clientv3.Op{clientv3.OpPut(key, string(value))},
	})
	if err != nil {
		panic(err)
	}
	if err := s.WaitForRevision(ctx, res.Revision); err != nil { // read your write
		panic(err)
	}
	got, _ := s.Get("host", "", "h1")
	fmt.Println(key, res.Succeeded, got.(*apiv1.Host).Spec.UnderlayIP)
	// Output: /weft/v1/hosts/h1 true 192.0.2.11
}
