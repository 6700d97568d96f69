package controller_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
)

// TestExternalCluster: a separately started 3-member etcd cluster (etcd's
// server package at the go.mod version; TLS between the members and for
// clients, with certificates of the operator's CA) and two controllers as
// its clients (EtcdEndpoints with EtcdCACert, EtcdCert, EtcdKey): what one
// writes the other serves at once; with the leader member stopped, both
// still serve writes and reads.
func TestExternalCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Last: the members' connections end a few seconds after the members
	// stop (a read deadline), after the package's leak check would look.
	t.Cleanup(func() { waitGoroutinesGone(t, "net/http.(*connReader).abortPendingRead") })
	ca, err := secrets.EtcdCA(secrets.NewKey()) // the operator's CA: any will do
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []store.EmbedConfig
	var initial, urls []string
	for i := range 3 {
		dir := t.TempDir()
		name := fmt.Sprintf("e%d", i)
		files, err := ca.WriteMemberFiles(filepath.Join(dir, "tls"), name, []string{"127.0.0.1"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		m := &store.MemberConfig{Name: name, PeerURL: "https://" + freeLoopback(t), ClientURL: "https://" + freeLoopback(t),
			CAFile: files.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}
		initial, urls = append(initial, name+"="+m.PeerURL), append(urls, m.ClientURL)
		cfgs = append(cfgs, store.EmbedConfig{Dir: filepath.Join(dir, "etcd"), Member: m})
	}
	members := make([]*store.Embedded, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		cfgs[i].Member.InitialCluster = strings.Join(initial, ",")
		wg.Go(func() { members[i], errs[i] = store.StartEmbedded(ctx, cfgs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		t.Cleanup(func() { members[i].Close() })
	}

	clientFiles, err := ca.WriteMemberFiles(filepath.Join(t.TempDir(), "weft"), "weft", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := secrets.WriteKeyFile(key, secrets.NewKey()); err != nil {
		t.Fatal(err)
	}
	replica := func() controller.Config {
		return controller.Config{DataDir: t.TempDir(), ClusterKeyFile: key, AgentListen: "off", EtcdEndpoints: urls,
			EtcdCACert: clientFiles.CAFile, EtcdCert: clientFiles.CertFile, EtcdKey: clientFiles.KeyFile}
	}
	cs := startReplicas(t, replica(), replica())
	a, b := apiClient(t, cs[0]), apiClient(t, cs[1])
	if _, err := a.Create(ctx, etcdtest.Tenant("acme")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, apiv1.KindTenant, "", "acme"); err != nil {
		t.Fatalf("b reads a's write: %v", err)
	}

	tc, err := ca.ClientTLS("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: urls, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	leader := -1
	for i, u := range urls {
		if st, err := cli.Status(ctx, u); err == nil && st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	members[leader].Close()
	for i, api := range []*client.Client{a, b} {
		name := fmt.Sprintf("after-%d", i)
		waitFor(t, "a write through replica "+name+" with the leader member stopped", func() bool {
			_, err := api.Create(ctx, etcdtest.Tenant(name))
			return err == nil || apiv1.ReasonOf(err) == apiv1.ReasonAlreadyExists
		})
	}
	for _, name := range []string{"acme", "after-0", "after-1"} {
		if _, err := a.Get(ctx, apiv1.KindTenant, "", name); err != nil {
			t.Errorf("get %s through a: %v", name, err)
		}
	}
}

// waitGoroutinesGone waits until no goroutine has fn on its stack.
func waitGoroutinesGone(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	waitFor(t, "goroutines in "+fn+" gone", func() bool {
		n := runtime.Stack(buf, true)
		return !bytes.Contains(buf[:n], []byte(fn))
	})
}
