package store

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftnet/weft/controller/secrets"
)

// testMember is one member of a test cluster on loopback.
type testMember struct {
	cfg EmbedConfig
	e   *Embedded
}

// memberConfigs returns n member configurations on free loopback ports,
// with TLS files issued by the etcd CA of one cluster key.
func memberConfigs(t *testing.T, n int) ([]EmbedConfig, *secrets.CA) {
	t.Helper()
	ca, err := secrets.EtcdCA(secrets.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []EmbedConfig
	var initial []string
	for i := range n {
		dir := t.TempDir()
		files, err := ca.WriteMemberFiles(filepath.Join(dir, "tls"), fmt.Sprintf("m%d", i), []string{"127.0.0.1"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		m := &MemberConfig{Name: fmt.Sprintf("m%d", i), PeerURL: "https://" + freeAddr(t), ClientURL: "https://" + freeAddr(t),
			CAFile: files.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}
		initial = append(initial, m.Name+"="+m.PeerURL)
		cfgs = append(cfgs, EmbedConfig{Dir: filepath.Join(dir, "etcd"), Logger: testLogger(), Member: m})
	}
	for i := range cfgs {
		cfgs[i].Member.InitialCluster = strings.Join(initial, ",")
	}
	return cfgs, ca
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startMembers starts the members together (each waits for a quorum).
func startMembers(t *testing.T, ctx context.Context, cfgs []EmbedConfig) []*Embedded {
	t.Helper()
	es := make([]*Embedded, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() { es[i], errs[i] = StartEmbedded(ctx, cfg) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		t.Cleanup(func() { es[i].Close() })
	}
	return es
}

// tlsClient is a client of the members' TCP client URLs.
func tlsClient(t *testing.T, ca *secrets.CA, urls ...string) *clientv3.Client {
	t.Helper()
	tc, err := ca.ClientTLS("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: urls, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestEmbeddedCluster: three members form a cluster over TLS; a write
// through one is read through another; with one member closed the other
// two still commit; a fourth added as a learner joins, promotes itself and
// can be removed; a client without the CA's certificate is refused.
func TestEmbeddedCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfgs, ca := memberConfigs(t, 4)
	joiner := cfgs[3]
	cfgs = cfgs[:3]
	for i := range cfgs {
		cfgs[i].Member.InitialCluster = strings.Join(strings.Split(cfgs[i].Member.InitialCluster, ",")[:3], ",")
	}
	es := startMembers(t, ctx, cfgs)
	cli := tlsClient(t, ca, cfgs[0].Member.ClientURL, cfgs[1].Member.ClientURL, cfgs[2].Member.ClientURL)
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	local, err := es[2].Client()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	if r, err := local.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v1" {
		t.Fatalf("read through member 2's socket: %v %v", r, err)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("member list: %v %v", ml, err)
	}

	// A member refuses to change the membership until it has been
	// connected to a quorum for 5 s (etcd's strict reconfiguration check).
	var add *clientv3.MemberAddResponse
	waitUntil(t, ctx, "the learner added", func() bool {
		add, err = local.MemberAddAsLearner(ctx, []string{joiner.Member.PeerURL})
		return err == nil
	})
	var initial []string
	for _, m := range add.Members {
		name := m.Name
		if m.ID == add.Member.ID {
			name = joiner.Member.Name
		}
		initial = append(initial, name+"="+m.PeerURLs[0])
	}
	joiner.Member.InitialCluster, joiner.Member.Existing = strings.Join(initial, ","), true
	j := startMembers(t, ctx, []EmbedConfig{joiner})[0]
	jc, err := j.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer jc.Close()
	if j.etcd.Server.IsLearner() {
		t.Fatal("the joined member is still a learner after its start")
	}
	if r, err := jc.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v1" {
		t.Fatalf("read through the new member: %v %v", r, err)
	}
	if _, err := local.MemberRemove(ctx, add.Member.ID); err != nil {
		t.Fatalf("remove the new member: %v", err)
	}
	es[0].Close()
	if _, err := local.Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("write with two of three members: %v", err)
	}

	// Without a certificate of the cluster's etcd CA, no client gets in.
	other, err := secrets.EtcdCA(secrets.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := other.ClientTLS("intruder", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tc.RootCAs = ca.Pool() // trusts the members, presents a foreign certificate
	bad, err := clientv3.New(clientv3.Config{Endpoints: []string{cfgs[1].Member.ClientURL}, TLS: tc, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if _, err := bad.Get(short, "k"); err == nil {
		t.Error("a client with a certificate of another CA read the store")
	}
}

// TestSingleBecomesMember: a single member's data dir restarted as a
// member with a peer URL advertises it, so that a second member can join.
func TestSingleBecomesMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfgs, _ := memberConfigs(t, 2)
	single, err := StartEmbedded(ctx, EmbedConfig{Dir: cfgs[0].Dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := single.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Put(ctx, "k", "kept"); err != nil {
		t.Fatal(err)
	}
	sc.Close()
	single.Close()

	first := cfgs[0]
	first.Member.InitialCluster = ""
	e := startMembers(t, ctx, []EmbedConfig{first})[0]
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 1 || ml.Members[0].PeerURLs[0] != first.Member.PeerURL {
		t.Fatalf("members after the restart: %v %v, want one at %s", ml, err, first.Member.PeerURL)
	}
	waitUntil(t, ctx, "the learner added", func() bool {
		_, err = cli.MemberAddAsLearner(ctx, []string{cfgs[1].Member.PeerURL})
		return err == nil
	})
	second := cfgs[1]
	second.Member.InitialCluster = ml.Members[0].Name + "=" + first.Member.PeerURL + "," + second.Member.Name + "=" + second.Member.PeerURL
	second.Member.Existing = true
	s := startMembers(t, ctx, []EmbedConfig{second})[0]
	if s.etcd.Server.IsLearner() {
		t.Fatal("the second member is still a learner after its start")
	}
	c2, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if r, err := c2.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "kept" {
		t.Fatalf("the single member's data through the second: %v %v", r, err)
	}
}

func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
