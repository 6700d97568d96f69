package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/compile"
	"github.com/weftnet/weft/controller/registry"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/etcdtest"
	"github.com/weftnet/weft/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's embedded server and client keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// keyOf is the test's per-host key.
func keyOf(host string) []byte {
	k := sha256.Sum256([]byte("key-" + host))
	return k[:]
}

// knownHosts are the hosts the test server has keys for.
var knownHosts = map[string]uint32{"h1": 1, "h2": 2, "h3": 3}

// senv is embedded etcd, store, registry, compiler and a Server on loopback.
type senv struct {
	t        *testing.T
	st       *store.Store
	reg      *registry.Registry
	c        *compile.Compiler
	srv      *Server
	addr     string
	metrics  *prometheus.Registry
	sink     *RegistrySink
	served   chan error
	stopped  sync.Once
	barriers int
}

type senvOpts struct {
	cfg func(*Config)
	// sink runs a RegistrySink (flushing every 20ms) as the Status.
	sink bool
	// listener wraps the server's listener.
	listener func(net.Listener) net.Listener
}

func newSenv(t *testing.T, o senvOpts) *senv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	etcd := etcdtest.Start(t)
	st, reg := etcd.Store, etcd.Registry
	c, err := compile.New(compile.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	e := &senv{t: t, st: st, reg: reg, c: c, metrics: prometheus.NewRegistry(), served: make(chan error, 1)}
	cfg := Config{
		Compiler: c,
		Keys: func(h string) ([]byte, bool) {
			_, ok := knownHosts[h]
			return keyOf(h), ok
		},
		HostID: func(h string) (uint32, bool) {
			id, ok := knownHosts[h]
			return id, ok
		},
		Registerer: e.metrics,
		Replicas:   func() []string { return []string{"127.0.0.1:7001", "127.0.0.1:7002"} },
	}
	if o.sink {
		sink, err := NewRegistrySink(RegistrySinkConfig{Registry: reg, Interval: 20 * time.Millisecond, Registerer: e.metrics})
		if err != nil {
			t.Fatal(err)
		}
		if err := sink.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sink.Close() })
		e.sink = sink
		cfg.Status = sink
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	if o.listener != nil {
		l = o.listener(l)
	}
	go func() { e.served <- srv.Serve(context.Background(), l) }()
	e.srv = srv
	t.Cleanup(e.stop)
	return e
}

// stop closes the server and checks that Serve returned cleanly.
func (e *senv) stop() {
	e.stopped.Do(func() {
		e.srv.Close()
		if err := <-e.served; err != nil {
			e.t.Errorf("Serve: %v", err)
		}
	})
}

// do runs one registry write and waits until the compiler has applied it.
func (e *senv) do(write func(ctx context.Context) (apiv1.Object, error)) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := write(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := e.c.WaitForRevision(ctx, e.st.Revision()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *senv) create(objs ...apiv1.Object) {
	e.t.Helper()
	for _, o := range objs {
		e.do(func(ctx context.Context) (apiv1.Object, error) { return e.reg.Create(ctx, o) })
	}
}

func (e *senv) update(o apiv1.Object) {
	e.t.Helper()
	e.do(func(ctx context.Context) (apiv1.Object, error) { return e.reg.Update(ctx, o) })
}

func (e *senv) delete(kind, tenant, name string) {
	e.t.Helper()
	e.do(func(ctx context.Context) (apiv1.Object, error) {
		return e.reg.Delete(ctx, apiv1.Ref{Kind: kind, Tenant: tenant, Name: name})
	})
}

// createMany creates objs concurrently (the store groups the commits),
// then makes a write alone, a precise barrier, and waits for the compiler.
func (e *senv) createMany(objs ...apiv1.Object) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, o := range objs {
		g.Go(func() error {
			_, err := e.reg.Create(gctx, o)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		e.t.Fatal(err)
	}
	barrier := tenant("barrier-" + strconv.Itoa(e.barriers))
	e.barriers++
	e.create(barrier)
}

// base creates a tenant, three hosts, a VPC with one large subnet, and n
// endpoints on each of h1 and h2.
func (e *senv) base(n int) {
	e.create(tenant("acme"), host("h1", "192.0.2.1"), host("h2", "192.0.2.2"), host("h3", "192.0.2.3"),
		vpc("acme", "main", "10.0.0.0/16"), subnet("acme", "a", "main", "10.0.0.0/16"))
	var eps []apiv1.Object
	for i := range n {
		eps = append(eps, endpoint("acme", fmt.Sprintf("h1-%d", i), "a", "h1"), endpoint("acme", fmt.Sprintf("h2-%d", i), "a", "h2"))
	}
	e.createMany(eps...)
}

// counter returns the value of a counter (with the given label values, in
// order) in the server's metrics; 0 if absent.
func (e *senv) counter(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i, lp := range m.GetLabel() {
				if i < len(labels) && lp.GetValue() != labels[i] {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// recSink records StatusSink calls.
type recSink struct {
	mu        sync.Mutex
	events    []string
	connected chan string
}

func newRecSink() *recSink { return &recSink{connected: make(chan string, 16)} }

func (r *recSink) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recSink) Connected(host, agentVersion string) {
	r.add("connected " + host + " " + agentVersion)
	r.connected <- host
}
func (r *recSink) Acked(host string, v uint64, programErr string) {
	if programErr != "" {
		r.add(fmt.Sprintf("acked %s %d %s", host, v, programErr))
		return
	}
	r.add(fmt.Sprintf("acked %s %d", host, v))
}
func (r *recSink) Nacked(host string, v uint64, err string) {
	r.add(fmt.Sprintf("nacked %s %d %s", host, v, err))
}
func (r *recSink) Disconnected(host string) { r.add("disconnected " + host) }

func (r *recSink) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

// ---- objects ----

// Object builders shared with the other controller packages' tests.
var (
	tm       = etcdtest.TypeMeta
	tenant   = etcdtest.Tenant
	host     = etcdtest.Host
	vpc      = etcdtest.VPC
	subnet   = etcdtest.Subnet
	endpoint = etcdtest.Endpoint
)

// ---- the test agent ----

// agent is a minimal agent: Hello, then deltas applied to a map and acked.
type agent struct {
	t       *testing.T
	host    string
	nc      net.Conn
	wc      *wire.Conn
	welcome *wire.Welcome
	dgKey   []byte // the session's datagram key
	version uint64
	view    map[wire.ResourceKey]string
}

// newHello returns a Hello of host holding version, sent at now (not
// signed yet).
func newHello(t *testing.T, host string, version uint64, now time.Time) *wire.Hello {
	t.Helper()
	nonce, err := wire.NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	return &wire.Hello{Host: host, HostID: knownHosts[host], AgentVersion: "test-agent/1", ViewVersion: version,
		Nonce: nonce, Time: now.Unix()}
}

// signedHello returns a Hello signed with key, sent at now.
func signedHello(t *testing.T, host string, key []byte, version uint64, now time.Time) *wire.Hello {
	t.Helper()
	h := newHello(t, host, version, now)
	if err := wire.SignHello(h, key); err != nil {
		t.Fatal(err)
	}
	return h
}

// handshake runs the agent's end of the handshake on wc.
func handshake(t *testing.T, wc *wire.Conn, host string, key []byte, version uint64) (*wire.Welcome, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return wc.Handshake(ctx, newHello(t, host, version, time.Now()), key)
}

// dialRaw opens a connection to the server.
func (e *senv) dialRaw() (net.Conn, *wire.Conn) {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	return nc, wire.NewConn(nc, 0)
}

// send writes one message with a test deadline.
func send(t *testing.T, wc *wire.Conn, m wire.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := wc.WriteMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
}

// recv reads one message with a test deadline.
func recv(t *testing.T, wc *wire.Conn) (wire.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return wc.ReadMessage(ctx)
}

// connect runs the handshake of an agent holding version (and the view
// held, which may be nil) and fails the test if it is refused.
func (e *senv) connect(host string, version uint64, held map[wire.ResourceKey]string) *agent {
	e.t.Helper()
	nc, wc := e.dialRaw()
	w, dk, err := handshake(e.t, wc, host, keyOf(host), version)
	if err != nil {
		e.t.Fatalf("handshake: %v", err)
	}
	if w.Error != "" {
		e.t.Fatalf("refused: %s", w.Error)
	}
	if held == nil {
		held = map[wire.ResourceKey]string{}
	}
	return &agent{t: e.t, host: host, nc: nc, wc: wc, welcome: w, dgKey: dk, version: version, view: held}
}

// next reads one delta, joining its frames.
func (a *agent) next() (wire.Delta, error) {
	var d wire.Delta
	for i := 0; ; i++ {
		m, err := recv(a.t, a.wc)
		if err != nil {
			return wire.Delta{}, err
		}
		f, ok := m.(*wire.Delta)
		if !ok {
			return wire.Delta{}, fmt.Errorf("want a Delta, got %v", m.FrameType())
		}
		if i > 0 && (f.FromVersion != d.FromVersion || f.ToVersion != d.ToVersion || f.Snapshot != d.Snapshot) {
			return wire.Delta{}, fmt.Errorf("frame %d of a delta %d→%d is %d→%d", i, d.FromVersion, d.ToVersion, f.FromVersion, f.ToVersion)
		}
		d.FromVersion, d.ToVersion, d.Snapshot = f.FromVersion, f.ToVersion, f.Snapshot
		d.Upserts = append(d.Upserts, f.Upserts...)
		d.Deletes = append(d.Deletes, f.Deletes...)
		if !f.More {
			d.ViewHash = f.ViewHash
			return d, nil
		}
	}
}

// mustNext reads one delta and applies it.
func (a *agent) mustNext() wire.Delta {
	a.t.Helper()
	d, err := a.next()
	if err != nil {
		a.t.Fatalf("%s: read delta: %v", a.host, err)
	}
	a.apply(d)
	return d
}

// apply applies d as an agent does: only from the version held, unless a snapshot.
func (a *agent) apply(d wire.Delta) {
	a.t.Helper()
	if d.Snapshot {
		a.view = map[wire.ResourceKey]string{}
	} else if d.FromVersion != a.version {
		a.t.Fatalf("%s: delta from %d, agent holds %d", a.host, d.FromVersion, a.version)
	}
	for _, k := range d.Deletes {
		delete(a.view, k)
	}
	for _, r := range d.Upserts {
		a.view[r.Key] = string(r.Data)
	}
	a.version = d.ToVersion
	if d.ViewHash == nil {
		if len(d.Upserts)+len(d.Deletes) > 0 {
			a.t.Errorf("%s: delta to %d with changes but no view hash", a.host, d.ToVersion)
		}
		return
	}
	var rs []wire.Resource
	for k, data := range a.view {
		rs = append(rs, wire.Resource{Key: k, Data: []byte(data)})
	}
	if got := wire.ViewHash(rs); !bytes.Equal(got, d.ViewHash) {
		a.t.Errorf("%s: view at %d hashes to %x, the delta says %x", a.host, d.ToVersion, got, d.ViewHash)
	}
}

func (a *agent) ack() { a.t.Helper(); send(a.t, a.wc, &wire.Ack{Version: a.version}) }

func (a *agent) close() { a.nc.Close() }

// compiled returns the compiler's current view of host as key → data.
func (e *senv) compiled(host string) (map[wire.ResourceKey]string, uint64) {
	e.t.Helper()
	d, err := e.c.Delta(host, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[wire.ResourceKey]string{}
	for _, r := range d.Upserts {
		out[r.Key] = string(r.Bytes())
	}
	return out, d.ToVersion
}
