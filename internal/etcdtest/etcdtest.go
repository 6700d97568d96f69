// Package etcdtest starts the real storage stack for tests: an embedded
// etcd in a temporary directory, a started store and a started registry,
// all closed when the test ends. It is imported only by tests.
package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/store"
)

// Env is a running embedded etcd with a store and a registry on it.
type Env struct {
	Client   *clientv3.Client
	Store    *store.Store
	Registry *registry.Registry
}

// Options adjust the configurations before the parts start.
type Options struct {
	Store func(*store.Config)
}

// Start brings the stack up in t.TempDir() and registers its shutdown
// (registry, store, client, etcd, in that order) with t.Cleanup.
func Start(t testing.TB, opts ...Options) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	emb, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	cli, err := emb.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	scfg := store.Config{Client: cli}
	for _, o := range opts {
		if o.Store != nil {
			o.Store(&scfg)
		}
	}
	st, err := store.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := registry.New(registry.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return &Env{Client: cli, Store: st, Registry: reg}
}
