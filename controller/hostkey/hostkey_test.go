package hostkey

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/http"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

// env is a store with tokens, a keyring and a registry that deletes a
// Host's credentials with it.
type env struct {
	st     *store.Store
	cli    *clientv3.Client
	reg    *registry.Registry
	tokens *auth.Tokens
	keys   *Keyring
	sealer *secrets.Sealer
	enr    *Enroller
	authn  *auth.Authenticator
}

func start(t *testing.T, opts ...etcdtest.Options) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := etcdtest.Start(t, opts...)
	sealer, err := secrets.NewSealer(bytes.Repeat([]byte{7}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(auth.TokensConfig{Store: e.Store})
	if err != nil {
		t.Fatal(err)
	}
	if err := tokens.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tokens.Close() })
	reg, err := registry.New(registry.Config{Store: e.Store, HostDeleteOps: DeleteOps(e.Store, tokens)})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	keys := NewKeyring(e.Store, sealer, nil)
	if err := keys.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	return &env{st: e.Store, cli: e.Client, reg: reg, tokens: tokens, keys: keys, sealer: sealer,
		enr:   NewEnroller(EnrollerConfig{Store: e.Store, Registry: reg, Tokens: tokens, Keyring: keys, Sealer: sealer, CA: []byte("CA")}),
		authn: auth.NewAuthenticator(tokens, e.Store)}
}

// identity authenticates a token as the API does.
func (e *env) identity(tok string) (*auth.Identity, error) {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return e.authn.Authenticate(r)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// TestEnrollAndDelete: a bootstrap token enrols its host once; the key and
// the agent token work until the Host is deleted, and a Host created again
// under the same name revives neither.
func TestEnrollAndDelete(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := start(t)
	boot, err := e.tokens.Create(ctx, auth.TokenRequest{Scope: auth.Scope{Role: auth.RoleBootstrap, Host: "h1"}})
	if err != nil {
		t.Fatal(err)
	}
	bootID, err := e.identity(boot.Secret)
	if err != nil {
		t.Fatal(err)
	}
	req := EnrollRequest{Host: "h1", UnderlayIP: "192.0.2.1"}
	if _, err := e.enr.Enroll(ctx, bootID, EnrollRequest{Host: "h2", UnderlayIP: "192.0.2.2"}); !apiv1.IsForbidden(err) {
		t.Fatalf("bootstrap token of h1 enrolling h2: %v, want 403", err)
	}
	got, err := e.enr.Enroll(ctx, bootID, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.enr.Enroll(ctx, bootID, req); apiv1.ReasonOf(err) != apiv1.ReasonUnauthorized {
		t.Fatalf("second enrolment with the bootstrap token: %v, want 401", err)
	}
	if _, err := e.identity(boot.Secret); err == nil {
		t.Fatal("the used bootstrap token still authenticates")
	}
	key, _ := hex.DecodeString(got.HostKey)
	h, ok := e.st.Get(apiv1.KindHost, "", "h1")
	if !ok || h.GetObjectMeta().UID != got.HostUID || got.CA != "CA" {
		t.Fatalf("enrolment %+v for Host %v", got, h)
	}
	id := h.(*apiv1.Host).Status.HostID
	// Enroll returns once this replica knows the key and the token.
	if k, ok := e.keys.ByName("h1"); !ok || !bytes.Equal(k, key) {
		t.Fatalf("ByName(h1) = %x %v, want the enrolled key", k, ok)
	}
	if k, ok := e.keys.ByID(id); !ok || !bytes.Equal(k, key) {
		t.Fatalf("ByID(%d) = %x %v, want the enrolled key", id, k, ok)
	}
	agent, err := e.identity(got.Token)
	if err != nil || agent.Role != auth.RoleAgent || agent.Host != "h1" || agent.HostUID != got.HostUID {
		t.Fatalf("agent token: %+v %v", agent, err)
	}

	if _, err := e.reg.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the deleted host's key and token refused", func() bool {
		_, byName := e.keys.ByName("h1")
		_, byID := e.keys.ByID(id)
		_, err := e.identity(got.Token)
		return !byName && !byID && err != nil
	})
	resp, err := e.cli.Get(ctx, e.st.Key(prefix), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("host keys left in etcd after the delete: %d (%v)", resp.Count, err)
	}
	// The token store follows etcd: the delete reaches it a moment later.
	waitUntil(t, "the deleted host's tokens gone", func() bool { return len(e.tokens.List()) == 0 })

	// Same name, new Host: nothing of the old one works.
	if _, err := e.reg.Create(ctx, etcdtest.Host("h1", "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.keys.ByName("h1"); ok {
		t.Error("a re-created Host has the deleted one's key")
	}
	if _, err := e.identity(got.Token); err == nil {
		t.Error("the deleted Host's agent token works for the re-created Host")
	}
}

// TestKeyringRefusesForeignKeys: a key sealed under another cluster key,
// or copied to another Host's place, is not used.
func TestKeyringRefusesForeignKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := start(t)
	var uids []string
	for i, name := range []string{"h1", "h2", "h3"} {
		out, err := e.reg.Create(ctx, etcdtest.Host(name, "192.0.2."+strconv.Itoa(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, out.GetObjectMeta().UID)
	}
	other, _ := secrets.NewSealer(bytes.Repeat([]byte{8}, secrets.KeySize))
	good := PutOp(e.st, e.sealer, uids[0], bytes.Repeat([]byte{1}, 32))
	moved := clientv3.OpPut(e.st.Key(prefix+uids[2]), string(e.sealer.Seal(e.st.Key(prefix+uids[0]), bytes.Repeat([]byte{1}, 32))))
	if _, err := e.cli.Txn(ctx).Then(good, PutOp(e.st, other, uids[1], bytes.Repeat([]byte{2}, 32)), moved).Commit(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "h1's key", func() bool { _, ok := e.keys.ByName("h1"); return ok })
	for _, h := range []string{"h2", "h3"} {
		if _, ok := e.keys.ByName(h); ok {
			t.Errorf("%s: a key that does not open for it is used", h)
		}
	}
}

// TestKeyringForgetsHostDeletedInCompactedGap: a keyring that loses its
// watches (the store drops it as a slow subscriber) while one Host is
// deleted and another enrolled, and whose history to resume from is then
// compacted, must stop answering for the deleted host and answer for the
// new one.
func TestKeyringForgetsHostDeletedInCompactedGap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := start(t, etcdtest.Options{Store: func(c *store.Config) { c.RingSize, c.SubscriberBacklog = 4, 4 }})
	enrol := func(name, ip string) uint32 {
		t.Helper()
		if _, err := e.enr.Enroll(ctx, &auth.Anonymous, EnrollRequest{Host: name, UnderlayIP: ip}); err != nil {
			t.Fatal(err)
		}
		h, _ := e.st.Get(apiv1.KindHost, "", name)
		return h.(*apiv1.Host).Status.HostID
	}
	// touch changes h0: an event the keyring follows.
	touch := func(n int) int64 {
		t.Helper()
		h := etcdtest.Host("h0", "192.0.2.100")
		h.Metadata.Labels = map[string]string{"n": strconv.Itoa(n)}
		out, err := e.reg.Update(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		rev, _ := strconv.ParseInt(out.GetObjectMeta().ResourceVersion, 10, 64)
		return rev
	}
	enrol("h0", "192.0.2.100")
	gone := enrol("h1", "192.0.2.1")

	// Hold the keyring's follow goroutines while more than their backlog
	// happens: the store drops them. Then, unseen, delete h1, enrol h2,
	// and compact the history the keyring would resume from.
	e.keys.mu.Lock()
	locked := true
	defer func() {
		if locked {
			e.keys.mu.Unlock()
		}
	}()
	for i := range 16 {
		touch(i)
	}
	if _, err := e.reg.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	// Enrol h2 by hand (Enroll waits for the held keyring).
	out, err := e.reg.Create(ctx, etcdtest.Host("h2", "192.0.2.2"))
	if err != nil {
		t.Fatal(err)
	}
	added := out.(*apiv1.Host).Status.HostID
	if _, err := e.cli.Txn(ctx).Then(PutOp(e.st, e.sealer, out.GetObjectMeta().UID, bytes.Repeat([]byte{2}, 32))).Commit(); err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := range 8 {
		last = touch(100 + i)
	}
	if _, err := e.cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	if e.st.Stats().DroppedWatchers == 0 {
		t.Fatal("the store dropped no watcher: the test did not exercise a lost watch")
	}
	e.keys.mu.Unlock()
	locked = false

	waitUntil(t, "the keys after the compacted gap", func() bool {
		_, stale := e.keys.ByID(gone)
		_, fresh := e.keys.ByID(added)
		return !stale && fresh
	})
	if _, ok := e.keys.HostID("h1"); ok {
		t.Error("HostID still answers for the deleted h1")
	}
}

// TestKeyringOnChange: the OnChange function hears of a host when it
// enrols, when it enrols again (a new key) and when its Host is deleted,
// each time once the keyring answers with the change.
func TestKeyringOnChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := start(t)
	type change struct {
		host string
		key  []byte // ByName's answer when the change was heard
	}
	changes := make(chan change, 1024)
	e.keys.OnChange(func(hosts []string) {
		for _, h := range hosts {
			k, _ := e.keys.ByName(h)
			changes <- change{h, k}
		}
	})
	defer e.keys.OnChange(nil)
	admin := &auth.Identity{Role: auth.RoleClusterAdmin}
	// heard waits for a change of h1 whose key is want (nil: none).
	heard := func(what string, want []byte) {
		t.Helper()
		for {
			select {
			case c := <-changes:
				if c.host == "h1" && bytes.Equal(c.key, want) {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: not heard within 10s", what)
			}
		}
	}
	for i := range 2 {
		got, err := e.enr.Enroll(ctx, admin, EnrollRequest{Host: "h1", UnderlayIP: "192.0.2.1"})
		if err != nil {
			t.Fatal(err)
		}
		key, _ := hex.DecodeString(got.HostKey)
		heard("enrolment "+strconv.Itoa(i+1), key)
	}
	if _, err := e.reg.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	heard("the Host's delete", nil)
}
