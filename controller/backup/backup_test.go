package backup_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
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
