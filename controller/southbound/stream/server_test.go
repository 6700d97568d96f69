package stream

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

func TestHandshake(t *testing.T) {
	e := newSenv(t, senvOpts{})
	e.base(1)
	now := time.Now()
	replayed := newHello(t, "h2", 0, now)
	tests := []struct {
		name string
		// before runs first (e.g. uses the Hello once).
		before func()
		hello  *wire.Hello // signed with key by the agent's handshake
		key    []byte
		raw    wire.Message // sent instead of a Hello
		// wantReason is the refusal counted ("": accepted).
		wantReason string
	}{
		{name: "ok", hello: newHello(t, "h1", 0, now), key: keyOf("h1")},
		{name: "bad mac", hello: newHello(t, "h1", 0, now), key: keyOf("h2"), wantReason: "auth"},
		{name: "unknown host", hello: newHello(t, "nope", 0, now), key: keyOf("nope"), wantReason: "unknown_host"},
		{name: "stale time", hello: newHello(t, "h1", 0, now.Add(-time.Hour)), key: keyOf("h1"), wantReason: "stale"},
		{name: "time in the future", hello: newHello(t, "h1", 0, now.Add(time.Hour)), key: keyOf("h1"), wantReason: "stale"},
		{name: "not a hello", raw: &wire.Ack{Version: 1}, wantReason: "protocol"},
		{name: "replayed hello", hello: replayed, key: keyOf("h2"), wantReason: "replay", before: func() {
			_, wc := e.dialRaw()
			h := *replayed
			if w, _, err := handshake2(t, wc, &h, keyOf("h2")); err != nil || w.Error != "" {
				t.Fatalf("first use of the hello refused: %v %#v", err, w)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			before := e.counter("weft_stream_handshake_failures_total", tt.wantReason)
			_, wc := e.dialRaw()
			var w *wire.Welcome
			var dk []byte
			if tt.raw != nil {
				send(t, wc, tt.raw)
				m, err := recv(t, wc)
				if err != nil {
					t.Fatalf("read welcome: %v", err)
				}
				w = m.(*wire.Welcome)
			} else {
				var err error
				if w, dk, err = handshake2(t, wc, tt.hello, tt.key); err != nil {
					t.Fatalf("handshake: %v", err)
				}
			}
			if tt.wantReason == "" {
				want := &wire.Welcome{HostID: 1, Epoch: e.c.Epoch(), Replicas: []string{"127.0.0.1:7001", "127.0.0.1:7002"}, Snapshot: true}
				if diff := gocmp.Diff(want, w); diff != "" {
					t.Errorf("welcome (-want +got):\n%s", diff)
				}
				if got, ok := e.srv.Key(1); !ok || !bytes.Equal(got, dk) {
					t.Errorf("the server's datagram key of host 1 is %x, the agent's %x", got, dk)
				}
				return
			}
			if w.Error == "" || dk != nil {
				t.Fatalf("accepted, want refused (%s)", tt.wantReason)
			}
			if _, err := recv(t, wc); err == nil {
				t.Error("connection still open after a refusal")
			}
			if got := e.counter("weft_stream_handshake_failures_total", tt.wantReason) - before; got != 1 {
				t.Errorf("refusals counted for %q: %v, want 1 (error %q)", tt.wantReason, got, w.Error)
			}
		})
	}
}

// handshake2 runs the agent's end of the handshake with a given Hello.
func handshake2(t *testing.T, wc *wire.Conn, h *wire.Hello, key []byte) (*wire.Welcome, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return wc.Handshake(ctx, h, key)
}

func TestHandshakeTimeout(t *testing.T) {
	e := newSenv(t, senvOpts{cfg: func(c *Config) { c.HandshakeTimeout = 50 * time.Millisecond }})
	_, wc := e.dialRaw()
	if _, err := recv(t, wc); err == nil { // the server hangs up
		t.Fatal("read succeeded, want the connection closed")
	}
	e.stop()
	if got := e.counter("weft_stream_handshake_failures_total", "timeout"); got != 1 {
		t.Errorf("timeouts counted: %v, want 1", got)
	}
}

func keys(d wire.Delta) (up, del []string) {
	for _, r := range d.Upserts {
		up = append(up, r.Key.String())
	}
	for _, k := range d.Deletes {
		del = append(del, k.String())
	}
	return up, del
}

func TestResumeFromVersion(t *testing.T) {
	e := newSenv(t, senvOpts{})
	e.base(3)

	a := e.connect("h1", 0, nil)
	if !a.welcome.Snapshot {
		t.Error("welcome of an agent with version 0: Snapshot not set")
	}
	if d := a.mustNext(); !d.Snapshot {
		t.Fatal("first delta is not a snapshot")
	}
	a.ack()
	held, heldView := a.version, a.view
	a.close()

	// Changes while the agent is away.
	ep := endpoint("acme", "h1-1", "a", "h1", "role", "db")
	e.update(ep)
	e.delete(apiv1.KindEndpoint, "acme", "h1-2")
	e.create(endpoint("acme", "h1-new", "a", "h1"))
	e.create(endpoint("acme", "h2-new", "a", "h2")) // not h1's business

	t.Run("resume sends exactly the changes", func(t *testing.T) {
		want, err := e.c.Delta("h1", held)
		if err != nil {
			t.Fatal(err)
		}
		a := e.connect("h1", held, heldView)
		if a.welcome.Snapshot {
			t.Error("welcome of a resumable agent: Snapshot set")
		}
		d := a.mustNext()
		if d.Snapshot || d.FromVersion != held {
			t.Fatalf("got %d→%d snapshot=%v, want a delta from %d", d.FromVersion, d.ToVersion, d.Snapshot, held)
		}
		up, del := keys(d)
		if diff := gocmp.Diff([]string{"endpoint/acme/h1-1", "endpoint/acme/h1-new"}, up); diff != "" {
			t.Errorf("upserts (-want +got):\n%s", diff)
		}
		if diff := gocmp.Diff([]string{"endpoint/acme/h1-2"}, del); diff != "" {
			t.Errorf("deletes (-want +got):\n%s", diff)
		}
		// CompactData is the compiler's note to the encoder, not sent.
		if diff := gocmp.Diff(want, d, cmpopts.IgnoreFields(wire.Delta{}, "CompactData")); diff != "" {
			t.Errorf("delta differs from the compiler's (-want +got):\n%s", diff)
		}
		now, _ := e.compiled("h1")
		if diff := gocmp.Diff(now, a.view); diff != "" {
			t.Errorf("agent's view after the delta (-want +got):\n%s", diff)
		}
		a.ack()
		a.close()
	})
	for _, tc := range []struct {
		name string
		from uint64
	}{
		{"reconnect with 0", 0},
		{"reconnect from the future", held + 1<<30},
		{"reconnect from another incarnation", held ^ 1<<60},
	} {
		t.Run(tc.name+" gets a snapshot", func(t *testing.T) {
			a := e.connect("h1", tc.from, nil)
			if !a.welcome.Snapshot {
				t.Error("Welcome.Snapshot not set")
			}
			d := a.mustNext()
			if !d.Snapshot || d.FromVersion != 0 {
				t.Fatalf("got %d→%d snapshot=%v, want a snapshot", d.FromVersion, d.ToVersion, d.Snapshot)
			}
			now, _ := e.compiled("h1")
			if diff := gocmp.Diff(now, a.view); diff != "" {
				t.Errorf("agent's view (-want +got):\n%s", diff)
			}
			a.close()
		})
	}
}

// waitHost waits until host's stored object satisfies ok, following the
// store's watch (no polling interval).
func waitHost(t *testing.T, st *store.Store, name string, ok func(*apiv1.Host) bool) *apiv1.Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rev := st.Revision()
	if o, found := st.Get(apiv1.KindHost, "", name); found && ok(o.(*apiv1.Host)) {
		return o.(*apiv1.Host)
	}
	ch, err := st.Watch(ctx, apiv1.KindHost, "", rev)
	if err != nil {
		t.Fatal(err)
	}
	for ev := range ch {
		if h := ev.Object.(*apiv1.Host); h.Metadata.Name == name && ev.Type != store.EventDeleted && ok(h) {
			return h
		}
	}
	o, _ := st.Get(apiv1.KindHost, "", name)
	t.Fatalf("host %s never reached the wanted status; last: %+v", name, o)
	return nil
}

func TestNackReachesHostStatus(t *testing.T) {
	e := newSenv(t, senvOpts{sink: true})
	e.base(2)
	a := e.connect("h1", 0, nil)
	d := a.mustNext()
	const msg = "datapath: program vxlan 4096: device busy"
	send(t, a.wc, &wire.Nack{Version: d.ToVersion, Error: msg})

	again, err := a.next()
	if err != nil {
		t.Fatal(err)
	}
	if !again.Snapshot {
		t.Errorf("answer to a Nack: %d→%d snapshot=%v, want a snapshot", again.FromVersion, again.ToVersion, again.Snapshot)
	}
	h := waitHost(t, e.st, "h1", func(h *apiv1.Host) bool { return h.Status.LastError == msg })
	if h.Status.AgentVersion != "test-agent/1" {
		t.Errorf("agentVersion %q, want test-agent/1", h.Status.AgentVersion)
	}
	a.apply(again)
	a.ack()
	h = waitHost(t, e.st, "h1", func(h *apiv1.Host) bool { return h.Status.ViewVersion == a.version })
	if h.Status.LastError != "" {
		t.Errorf("lastError %q after an Ack, want it cleared", h.Status.LastError)
	}
}

func TestSlowAgentGetsOneCoalescedDelta(t *testing.T) {
	const (
		endpoints = 64
		workers   = 64
		changes   = 10_000
	)
	e := newSenv(t, senvOpts{cfg: func(c *Config) {
		c.AckTimeout = 5 * time.Minute // the agent is slow, not dead
		c.MaxFrame = 8 << 10           // several frames per snapshot
	}})
	e.base(endpoints)
	a := e.connect("h1", 0, nil)
	snap := a.mustNext()
	if !snap.Snapshot {
		t.Fatal("first delta is not a snapshot")
	}
	viewSize := len(snap.Upserts)
	// The agent does not ack (nor read) while its view changes 10,000 times.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range (changes + workers - 1) / workers {
				name := fmt.Sprintf("h1-%d", w*endpoints/workers+i%(endpoints/workers))
				if _, err := e.reg.Update(ctx, endpoint("acme", name, "a", "h1", "n", strconv.Itoa(i))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A write made alone is a precise barrier for the compiler.
	tn := tenant("acme")
	tn.Spec.Description = "barrier"
	e.update(tn)

	if got := e.counter("weft_stream_deltas_total"); got != 1 {
		t.Fatalf("%v deltas sent before the agent acked, want 1 (the snapshot in flight)", got)
	}
	if v := e.c.Version("h1"); v <= snap.ToVersion {
		t.Fatalf("view version %d did not move past %d", v, snap.ToVersion)
	}
	a.ack()
	d := a.mustNext()
	cur := e.c.Version("h1")
	if d.Snapshot || d.FromVersion != snap.ToVersion || d.ToVersion != cur {
		t.Fatalf("got %d→%d snapshot=%v, want one delta %d→%d", d.FromVersion, d.ToVersion, d.Snapshot, snap.ToVersion, cur)
	}
	var want []string
	for i := range endpoints {
		want = append(want, fmt.Sprintf("endpoint/acme/h1-%d", i))
	}
	slices.Sort(want)
	up, del := keys(d)
	if diff := gocmp.Diff(want, up); diff != "" {
		t.Errorf("upserts (-want +got):\n%s", diff)
	}
	if len(del) != 0 || len(up) > viewSize {
		t.Errorf("%d upserts and %d deletes for a view of %d resources", len(up), len(del), viewSize)
	}
	now, _ := e.compiled("h1")
	if diff := gocmp.Diff(now, a.view); diff != "" {
		t.Errorf("agent's view (-want +got):\n%s", diff)
	}
	if got := e.counter("weft_stream_deltas_total"); got != 2 {
		t.Errorf("%v deltas sent in all, want 2", got)
	}
	t.Logf("%d updates became %d view versions and one delta of %d resources (view: %d)",
		(changes+workers-1)/workers*workers, (cur-snap.ToVersion)&(1<<44-1), len(up), viewSize)
}

// smallBuffers makes the server's socket send buffers small, so that a
// peer that does not read stalls the server's writes quickly.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

func TestStalledStreamDoesNotBlockOthers(t *testing.T) {
	rec := newRecSink()
	e := newSenv(t, senvOpts{
		cfg: func(c *Config) {
			c.Status = rec
			c.AckTimeout = 5 * time.Minute // the stalled write must outlive the test
		},
		listener: func(l net.Listener) net.Listener { return smallBuffers{l} },
	})
	e.base(1)
	// h1's snapshot is far larger than the socket buffers.
	e.createMany(bigEndpoints("h1")...)
	snap, err := e.c.Delta("h1", 0)
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, r := range snap.Upserts {
		size += len(r.Data) + len(r.Tail)
	}
	// Both socket buffers are set to 4 KiB (the kernel doubles that and
	// turns off autotuning): together they hold a few tens of KiB at most.
	if size < 100<<10 {
		t.Fatalf("h1's snapshot is %d bytes: too small to stall a stream", size)
	}

	// The stalled agent says hello and never reads.
	nc := stalledDial(t, e.addr)
	defer nc.Close()
	send(t, wire.NewConn(nc, 0), signedHello(t, "h1", keyOf("h1"), 0, time.Now()))
	if h := <-rec.connected; h != "h1" {
		t.Fatalf("connected %s, want h1", h)
	}

	// Another host's session works throughout, and changes to the stalled
	// host's view do not hold up the compiler either.
	b := e.connect("h2", 0, nil)
	<-rec.connected
	b.mustNext()
	b.ack()
	for i := range 3 {
		e.create(endpoint("acme", fmt.Sprintf("more-h1-%d", i), "a", "h1"))
		e.create(endpoint("acme", fmt.Sprintf("more-h2-%d", i), "a", "h2"))
		d := b.mustNext()
		up, _ := keys(d)
		if diff := gocmp.Diff([]string{fmt.Sprintf("endpoint/acme/more-h2-%d", i)}, up); diff != "" {
			t.Errorf("h2 delta %d (-want +got):\n%s", i, diff)
		}
		b.ack()
	}
	if n := e.srv.Sessions(); n != 2 {
		t.Errorf("%d sessions, want 2 (the stalled one is still open)", n)
	}
	e.stop() // Close must unblock the stalled write
	for _, ev := range rec.take() {
		if strings.HasPrefix(ev, "acked h1 ") {
			t.Errorf("the stalled agent acked: %s", ev)
		}
	}
}

func TestSecondConnectionReplacesFirst(t *testing.T) {
	rec := newRecSink()
	e := newSenv(t, senvOpts{cfg: func(c *Config) { c.Status = rec }})
	e.base(1)
	a1 := e.connect("h1", 0, nil)
	a1.mustNext()
	a1.ack()
	acked1 := a1.version
	// The next delta starts from the acked version: the Ack was processed.
	e.create(endpoint("acme", "early", "a", "h1"))
	a1.mustNext() // applied, not acked
	a2 := e.connect("h1", a1.version, a1.view)
	if a2.welcome.Snapshot {
		t.Error("the replacing session could not resume")
	}
	if _, err := a1.next(); err == nil {
		t.Error("the replaced connection is still open")
	}
	if n := e.srv.Sessions(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	e.create(endpoint("acme", "late", "a", "h1"))
	a2.mustNext()
	a2.ack()
	acked2 := a2.version
	e.create(endpoint("acme", "later", "a", "h1"))
	a2.mustNext()
	e.stop()
	v1, v2 := strconv.FormatUint(acked1, 10), strconv.FormatUint(acked2, 10)
	want := []string{"connected h1 test-agent/1", "acked h1 " + v1, "connected h1 test-agent/1", "acked h1 " + v2, "disconnected h1"}
	if diff := gocmp.Diff(want, rec.take()); diff != "" {
		t.Errorf("status events (-want +got):\n%s", diff)
	}
	if got := e.counter("weft_stream_session_ends_total", reasonReplaced); got != 1 {
		t.Errorf("replaced sessions counted: %v, want 1", got)
	}
}

func TestAckTimeoutClosesSession(t *testing.T) {
	e := newSenv(t, senvOpts{cfg: func(c *Config) { c.AckTimeout = 100 * time.Millisecond }})
	e.base(1)
	a := e.connect("h1", 0, nil)
	a.mustNext() // and never ack
	if _, err := a.next(); err == nil {
		t.Fatal("session still open without an ack")
	}
	e.stop()
	if got := e.counter("weft_stream_session_ends_total", reasonAckTimeout); got != 1 {
		t.Errorf("ack timeouts counted: %v, want 1", got)
	}
}

func TestViewResourcesDecode(t *testing.T) {
	// The stream carries what package view decodes.
	e := newSenv(t, senvOpts{})
	e.base(1)
	a := e.connect("h1", 0, nil)
	d := a.mustNext()
	types := map[string]int{}
	for _, r := range d.Upserts {
		if _, err := view.Decode(r); err != nil {
			t.Errorf("decode %s: %v", r.Key, err)
		}
		types[r.Key.Type]++
	}
	want := map[string]int{view.TypeHost: 1, view.TypeVPC: 1, view.TypeEndpoint: 1}
	if diff := gocmp.Diff(want, types); diff != "" {
		t.Errorf("resource types (-want +got):\n%s", diff)
	}
}

// TestAdmission: with MaxHandshakes 1, a connection that has not sent a
// Hello holds no token; an agent whose first view cannot be written (it
// does not read) holds the only one, and a second agent gets no Welcome
// until that write fails; an agent that gave up while it waited for a
// token costs no compile and no session.
func TestAdmission(t *testing.T) {
	rec := newRecSink()
	e := newSenv(t, senvOpts{
		cfg:      func(c *Config) { c.MaxHandshakes = 1; c.Status = rec; c.AckTimeout = 5 * time.Minute },
		listener: func(l net.Listener) net.Listener { return smallBuffers{l} },
	})
	e.base(1)
	e.createMany(bigEndpoints("h1")...)

	// A silent connection takes no token: h2 gets in past it.
	silent, _ := e.dialRaw()
	defer silent.Close()
	a := e.connect("h2", 0, nil)
	<-rec.connected
	a.mustNext()
	a.close()

	// h1 says Hello and never reads: the write of its snapshot stalls
	// with the only token.
	stalled := stalledDial(t, e.addr)
	defer stalled.Close()
	send(t, wire.NewConn(stalled, 0), signedHello(t, "h1", keyOf("h1"), 0, time.Now()))
	if h := <-rec.connected; h != "h1" {
		t.Fatalf("connected %s, want h1", h)
	}
	// h3 says Hello and hangs up before being admitted.
	nc3, wc3 := e.dialRaw()
	send(t, wc3, signedHello(t, "h3", keyOf("h3"), 0, time.Now()))
	time.Sleep(100 * time.Millisecond) // verified and waiting before h2
	nc3.Close()
	// h2 waits.
	_, wc2 := e.dialRaw()
	got := make(chan error, 1)
	go func() {
		w, _, err := handshake(t, wc2, "h2", keyOf("h2"), 0)
		if err == nil && w.Error != "" {
			err = fmt.Errorf("refused: %s", w.Error)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second agent answered (%v) while the first held the only handshake", err)
	case <-time.After(300 * time.Millisecond):
	}
	// h1 goes away: its write fails, h2 gets in.
	stalled.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second agent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second agent not welcomed after the first's write failed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.counter("weft_stream_handshake_failures_total", "abandoned") != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.counter("weft_stream_handshake_failures_total", "abandoned"); n != 1 {
		t.Errorf("abandoned handshakes counted %v, want 1 (h3)", n)
	}
	for _, ev := range rec.take() {
		if strings.Contains(ev, "h3") {
			t.Errorf("status event %q for the agent that hung up", ev)
		}
	}
}

// bigEndpoints returns endpoints that make host's snapshot far larger
// than the socket buffers of smallBuffers and stalledDial.
func bigEndpoints(host string) []apiv1.Object {
	var big []apiv1.Object
	for i := range 100 {
		ep := endpoint("acme", fmt.Sprintf("big-%d", i), "a", host)
		ep.Metadata.Labels = map[string]string{}
		for j := range 20 {
			ep.Metadata.Labels[fmt.Sprintf("key-%02d", j)] = fmt.Sprintf("%060d", j)
		}
		big = append(big, ep)
	}
	return big
}

// stalledDial connects with a 4 KiB receive buffer (the kernel doubles
// it and turns off autotuning), for an agent that will not read.
func stalledDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
		return cmp.Or(err, serr)
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// TestMaxSessions: a replica with MaxSessions established refuses a new
// agent ("replica full"), but lets a connected agent replace its session.
func TestMaxSessions(t *testing.T) {
	e := newSenv(t, senvOpts{cfg: func(c *Config) { c.MaxSessions = 1 }})
	e.base(1)
	first := e.connect("h1", 0, nil)
	first.mustNext()
	first.ack()
	_, wc := e.dialRaw()
	w, _, err := handshake(t, wc, "h2", keyOf("h2"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.Error, "replica full") {
		t.Fatalf("agent beyond MaxSessions got %#v, want a Welcome refusing it (replica full)", w)
	}
	if n := e.counter("weft_stream_handshake_failures_total", "full"); n != 1 {
		t.Errorf("refusals counted %v, want 1", n)
	}
	again := e.connect("h1", 0, nil) // replaces h1's own session
	again.mustNext()
}

// TestMove: Move tells every agent with a session to move (a Welcome with
// the reason as its Error), ends the sessions and takes no new agent.
func TestMove(t *testing.T) {
	e := newSenv(t, senvOpts{})
	e.base(1)
	a := e.connect("h1", 0, nil)
	a.mustNext()
	a.ack()
	e.srv.Move(t.Context(), "lost its etcd quorum")
	m, err := recv(t, a.wc)
	if w, ok := m.(*wire.Welcome); err != nil || !ok || w.Error != "lost its etcd quorum" {
		t.Fatalf("after Move: %v %v, want a Welcome with the reason", m, err)
	}
	if _, err := recv(t, a.wc); err == nil {
		t.Error("the session is still open after Move")
	}
	if c, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		c.Close()
		t.Error("the server still takes connections after Move")
	}
	if got := e.counter("weft_stream_session_ends_total", reasonMoved); got != 1 {
		t.Errorf("moved sessions counted: %v, want 1", got)
	}
}
