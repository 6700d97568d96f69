package hostkey

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

func TestDerive(t *testing.T) {
	s1, s2 := bytes.Repeat([]byte{1}, SecretSize), bytes.Repeat([]byte{2}, SecretSize)
	a, b := Derive(s1, "h1"), Derive(s1, "h1")
	if !bytes.Equal(a, b) || len(a) != SecretSize {
		t.Fatalf("Derive not deterministic or wrong size: %x %x", a, b)
	}
	for _, other := range [][]byte{Derive(s1, "h2"), Derive(s2, "h1"), Derive(s1, "h1\x00")} {
		if bytes.Equal(a, other) {
			t.Errorf("distinct inputs give the same key %x", a)
		}
	}
	path := filepath.Join(t.TempDir(), "k")
	if err := WriteFile(path, a); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil || !bytes.Equal(got, a) {
		t.Errorf("key file round trip: %x %v", got, err)
	}
	for _, bad := range []string{"zz", "abcd", ""} {
		if _, err := ParseHex(bad); err == nil {
			t.Errorf("ParseHex(%q) accepted", bad)
		}
	}
}

func TestSecretAndKeyring(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := etcdtest.Start(t)
	cli, st, reg := env.Client, env.Store, env.Registry
	s1, err := LoadOrCreateSecret(ctx, cli, "/weft/secrets/cluster")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := LoadOrCreateSecret(ctx, cli, "/weft/secrets/cluster")
	if err != nil || !bytes.Equal(s1, s2) {
		t.Fatalf("second load gave another secret (%v)", err)
	}
	kr := NewKeyring(s1, st, nil)
	if err := kr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	out, err := reg.Create(ctx, &apiv1.Host{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindHost},
		Metadata: apiv1.ObjectMeta{Name: "h1"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.1"}})
	if err != nil {
		t.Fatal(err)
	}
	id := out.(*apiv1.Host).Status.HostID
	deadline := time.Now().Add(5 * time.Second)
	for {
		if key, ok := kr.ByID(id); ok {
			if !bytes.Equal(key, Derive(s1, "h1")) {
				t.Fatalf("ByID key differs from Derive")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyring never learned host ID %d", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, ok := kr.HostID("h1"); !ok || got != id {
		t.Errorf("HostID(h1) = %d %v, want %d", got, ok, id)
	}
	if _, err := reg.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	for deadline = time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := kr.ByID(id); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyring kept the key of a deleted host")
		}
	}
}

// TestKeyringForgetsHostDeletedInCompactedGap: a keyring that loses its
// watch (the store drops it as a slow subscriber) while one Host is deleted
// and another created, and whose history to resume from is then compacted,
// must stop answering for the deleted host and answer for the new one.
func TestKeyringForgetsHostDeletedInCompactedGap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := etcdtest.Start(t, etcdtest.Options{Store: func(c *store.Config) { c.RingSize, c.SubscriberBacklog = 4, 4 }})
	cli, st, reg := env.Client, env.Store, env.Registry
	mustCreate := func(name, ip string) *apiv1.Host {
		t.Helper()
		out, err := reg.Create(ctx, etcdtest.Host(name, ip))
		if err != nil {
			t.Fatal(err)
		}
		return out.(*apiv1.Host)
	}
	// touch changes h0: an event the keyring follows.
	touch := func(n int) int64 {
		t.Helper()
		h := etcdtest.Host("h0", "192.0.2.100")
		h.Metadata.Labels = map[string]string{"n": strconv.Itoa(n)}
		out, err := reg.Update(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		rev, _ := strconv.ParseInt(out.GetObjectMeta().ResourceVersion, 10, 64)
		return rev
	}
	mustCreate("h0", "192.0.2.100")
	gone := mustCreate("h1", "192.0.2.1").Status.HostID

	secret := bytes.Repeat([]byte{7}, SecretSize)
	kr := NewKeyring(secret, st, nil)
	if err := kr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer kr.Close()
	if _, ok := kr.ByID(gone); !ok {
		t.Fatal("keyring does not know h1 after Start")
	}

	// Hold the keyring's follow goroutine in its first event while more
	// than its backlog happens: the store drops it. Then, unseen, delete h1,
	// create h2, and compact the history the keyring would resume from.
	kr.mu.Lock()
	locked := true
	defer func() {
		if locked {
			kr.mu.Unlock()
		}
	}()
	for i := range 16 {
		touch(i)
	}
	if _, err := reg.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	added := mustCreate("h2", "192.0.2.2").Status.HostID
	var last int64
	for i := range 8 {
		last = touch(100 + i)
	}
	if _, err := cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	if st.Stats().DroppedWatchers == 0 {
		t.Fatal("the store dropped no watcher: the test did not exercise a lost watch")
	}
	kr.mu.Unlock()
	locked = false

	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, stale := kr.ByID(gone)
		_, fresh := kr.ByID(added)
		if !stale && fresh {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the compacted gap: key of deleted h1 (ID %d) known = %v, key of new h2 (ID %d) known = %v; want false, true",
				gone, stale, added, fresh)
		}
	}
	if _, ok := kr.HostID("h1"); ok {
		t.Error("HostID still answers for the deleted h1")
	}
}
