package backup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/controller/backup"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
)

// TestRoundTrip backs up an etcd with and without a passphrase, restores
// each into a new data dir and reads every key back from an etcd started
// there, at a revision above the original's; the backup and the restored
// cluster key are private files.
func TestRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := etcdtest.Start(t)
	want := map[string]string{}
	for i := range 300 {
		k, v := "/weft/k"+string(rune('a'+i%26))+string(rune('a'+i/26)), string(bytes.Repeat([]byte{byte(i)}, 1000))
		if _, err := env.Client.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	key := secrets.NewKey()
	for _, tc := range []struct {
		name       string
		passphrase string
	}{{"plain", ""}, {"encrypted", "correct horse battery staple"}} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "weft.backup")
			meta, err := backup.WriteFile(ctx, file, env.Client, key, backup.Lock{Passphrase: []byte(tc.passphrase), Iterations: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("backup file mode: %v %v, want 0600", fi.Mode(), err)
			}
			if (meta.Encryption != nil) != (tc.passphrase != "") {
				t.Errorf("encryption %+v with passphrase %q", meta.Encryption, tc.passphrase)
			}
			dir := filepath.Join(t.TempDir(), "restored")
			if _, err := backup.Restore(file, backup.RestoreConfig{DataDir: dir, Passphrase: []byte(tc.passphrase)}); err != nil {
				t.Fatal(err)
			}
			got, err := secrets.ReadKeyFile(filepath.Join(dir, "cluster.key"))
			if err != nil || !bytes.Equal(got, key) {
				t.Errorf("restored cluster key: %v", err)
			}
			e, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			cli, err := e.Client()
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			for k, v := range want {
				r, err := cli.Get(ctx, k)
				if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != v {
					t.Fatalf("restored %s: %v %v", k, r, err)
				}
				if r.Header.Revision <= meta.Revision+backup.RevisionBump-1 {
					t.Fatalf("restored revision %d, want above %d + %d", r.Header.Revision, meta.Revision, backup.RevisionBump)
				}
			}
			if _, err := backup.Restore(file, backup.RestoreConfig{DataDir: dir, Passphrase: []byte(tc.passphrase)}); err == nil {
				t.Error("a restore over existing etcd data succeeded")
			}
		})
	}
}

// TestRestoreCluster restores one backup into three members of a new
// cluster (each its name and peer URL, the same initial cluster), starts
// them over TLS and reads the data through each.
func TestRestoreCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := etcdtest.Start(t)
	if _, err := env.Client.Put(ctx, "/weft/k", "kept"); err != nil {
		t.Fatal(err)
	}
	key := secrets.NewKey()
	file := filepath.Join(t.TempDir(), "weft.backup")
	if _, err := backup.WriteFile(ctx, file, env.Client, key, backup.Lock{}); err != nil {
		t.Fatal(err)
	}
	ca, err := secrets.EtcdCA(key)
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []store.EmbedConfig
	var initial []string
	for i := range 3 {
		dir := t.TempDir()
		name := fmt.Sprintf("m%d", i)
		files, err := ca.WriteMemberFiles(filepath.Join(dir, "tls"), name, []string{"127.0.0.1"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		m := &store.MemberConfig{Name: name, PeerURL: "https://" + freeAddr(t), CAFile: files.CAFile, CertFile: files.CertFile, KeyFile: files.KeyFile}
		initial = append(initial, name+"="+m.PeerURL)
		cfgs = append(cfgs, store.EmbedConfig{Dir: filepath.Join(dir, "data"), Member: m})
	}
	members := make([]*store.Embedded, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		m := cfgs[i].Member
		m.InitialCluster = strings.Join(initial, ",")
		if _, err := backup.Restore(file, backup.RestoreConfig{DataDir: cfgs[i].Dir, Name: m.Name, PeerURL: m.PeerURL, InitialCluster: m.InitialCluster}); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { members[i], errs[i] = store.StartEmbedded(ctx, cfgs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		defer members[i].Close()
	}
	for i, e := range members {
		cli, err := e.Client()
		if err != nil {
			t.Fatal(err)
		}
		r, err := cli.Get(ctx, "/weft/k")
		cli.Close()
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "kept" {
			t.Errorf("member %d: %v %v", i, r, err)
		}
	}
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

// TestCorrupt: a flipped byte, a cut file or a wrong passphrase fail with
// ErrCorrupt.
func TestCorrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := etcdtest.Start(t)
	if _, err := env.Client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	for _, pass := range []string{"", "secret"} {
		var buf bytes.Buffer
		if _, err := backup.Write(ctx, &buf, env.Client, secrets.NewKey(), backup.Lock{Passphrase: []byte(pass), Iterations: 1000}); err != nil {
			t.Fatal(err)
		}
		good := buf.Bytes()
		for _, tc := range []struct {
			name string
			file []byte
			pass string
		}{
			{"flipped byte", flip(good, len(good)/2), pass},
			{"cut", good[:len(good)-10], pass},
			{"trailing data", append(bytes.Clone(good), 0), pass},
			{"wrong passphrase", good, pass + "x"},
		} {
			if pass == "" && tc.name == "wrong passphrase" {
				continue
			}
			t.Run(tc.name+"/"+map[bool]string{true: "encrypted", false: "plain"}[pass != ""], func(t *testing.T) {
				_, _, err := backup.Extract(bytes.NewReader(tc.file), []byte(tc.pass), filepath.Join(t.TempDir(), "snap"))
				if !errors.Is(err, backup.ErrCorrupt) {
					t.Errorf("Extract: %v, want ErrCorrupt", err)
				}
			})
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}
