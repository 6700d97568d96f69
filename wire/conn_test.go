package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// loopbackPair returns both ends of a loopback TCP connection.
func loopbackPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		accepted <- result{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		client.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() {
		client.Close()
		r.c.Close()
	})
	return client, r.c
}

// TestConnSession runs a whole session: Hello, Accept, then sealed frames
// both ways, two of them written concurrently.
func TestConnSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, s := loopbackPair(t)
	agent, ctrl := NewConn(c, 0), NewConn(s, 4096)
	now := time.Unix(1_700_000_000, 0)
	msgs := sampleMessages()

	// The controller: verify the Hello, accept it, welcome, send a delta
	// and an invalidate from two goroutines, then read the Ack.
	var wg sync.WaitGroup
	ctrlErr := make(chan error, 1)
	ctrlKey := make(chan []byte, 1)
	wg.Go(func() {
		ctrlErr <- func() error {
			m, err := ctrl.ReadMessage(ctx)
			if err != nil {
				return fmt.Errorf("read hello: %w", err)
			}
			h, ok := m.(*Hello)
			if !ok {
				return fmt.Errorf("got %T, want *Hello", m)
			}
			if err := VerifyHello(h, rawKey(h.HostID), now, time.Minute); err != nil {
				return err
			}
			dk, err := ctrl.AcceptHello(ctx, h, rawKey(h.HostID))
			if err != nil {
				return err
			}
			ctrlKey <- dk
			ctrl.SetMaxFrame(0)
			if err := ctrl.WriteMessage(ctx, &Welcome{HostID: h.HostID, Snapshot: true}); err != nil {
				return err
			}
			var wwg sync.WaitGroup
			errs := make(chan error, 2)
			wwg.Go(func() { errs <- ctrl.WriteMessage(ctx, msgs["delta"]) })
			wwg.Go(func() { errs <- ctrl.WriteMessage(ctx, msgs["invalidate"]) })
			wwg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					return err
				}
			}
			m, err = ctrl.ReadMessage(ctx)
			if err != nil {
				return fmt.Errorf("read ack: %w", err)
			}
			if d := cmp.Diff(msgs["ack"], m); d != "" {
				return fmt.Errorf("ack (-want +got):\n%s", d)
			}
			return nil
		}()
	})

	hello := signedHello(t, now)
	w, agentKey, err := agent.Handshake(ctx, hello, rawKey(1))
	if err != nil {
		t.Fatal(err)
	}
	got := []Message{w}
	for range 2 {
		m, err := agent.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if err := agent.WriteMessage(ctx, msgs["ack"]); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-ctrlErr; err != nil {
		t.Fatalf("controller: %v", err)
	}
	if dk := <-ctrlKey; len(agentKey) != KeySize || string(dk) != string(agentKey) {
		t.Errorf("datagram keys: agent %x, controller %x: want the same %d bytes", agentKey, dk, KeySize)
	}
	// The delta and the invalidate race; order them by frame type.
	sort.Slice(got[1:], func(i, j int) bool { return got[1+i].FrameType() < got[1+j].FrameType() })
	want := []Message{&Welcome{HostID: 1, Snapshot: true}, msgs["delta"], msgs["invalidate"]}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("agent received (-want +got):\n%s", d)
	}

	// The agent closes: the controller sees a clean end of stream.
	agent.Close()
	if _, err := ctrl.ReadMessage(ctx); err != io.EOF {
		t.Errorf("after close: err = %v, want io.EOF", err)
	}
}

func TestConnContext(t *testing.T) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled while blocked", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
		{"already cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			ca, cb := NewConn(a, 0), NewConn(b, 0)
			ctx, cancel := tt.ctx()
			_, err := ca.ReadMessage(ctx)
			cancel()
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadMessage err = %v, want %v", err, tt.want)
			}
			// No byte was consumed: the next read, without a deadline,
			// must work (the cancelled one left no deadline behind).
			bg := context.Background()
			done := make(chan error, 1)
			go func() { done <- cb.WriteMessage(bg, &Ack{Version: 5}) }()
			m, err := ca.ReadMessage(bg)
			if err != nil {
				t.Fatalf("read after the cancelled one: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(&Ack{Version: 5}, m); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestConnWriteBlockedCancelled(t *testing.T) {
	a, b := net.Pipe() // unbuffered: a write blocks until read
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := NewConn(a, 0).WriteMessage(ctx, &Ack{Version: 1}); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteMessage err = %v, want context.Canceled", err)
	}
}

func TestConnFrameErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name     string
		raw      func() []byte // written by the peer
		maxFrame int
		want     error
		next     bool // the stream is still in step afterwards
	}{
		{"unknown frame type is skippable", func() []byte {
			b, _ := AppendFrame(nil, FrameType(42), []byte(`{}`), 0)
			return b
		}, 0, ErrUnknownType, true},
		{"invalid body", func() []byte {
			b, _ := AppendFrame(nil, FrameAck, []byte(`nope`), 0)
			return b
		}, 0, ErrMalformed, false},
		{"oversized frame", func() []byte {
			b, _ := AppendFrame(nil, FrameNack, []byte(strings.Repeat("x", 200)), 0)
			return b
		}, 100, ErrTooLarge, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := loopbackPair(t)
			raw := append(tt.raw(), mustAppendMessage(t, &Ack{Version: 9})...)
			if _, err := c.Write(raw); err != nil {
				t.Fatal(err)
			}
			conn := NewConn(s, tt.maxFrame)
			if _, err := conn.ReadMessage(ctx); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !tt.next {
				return
			}
			m, err := conn.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("next message: %v", err)
			}
			if d := cmp.Diff(&Ack{Version: 9}, m); d != "" {
				t.Errorf("next message (-want +got):\n%s", d)
			}
		})
	}
}

func TestConnWriteTooLarge(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	// Nothing reads b: a write that reached the pipe would block forever.
	err := NewConn(a, 64).WriteMessage(context.Background(), &Nack{Error: strings.Repeat("x", 100)})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
}

func mustAppendMessage(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := AppendMessage(nil, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConnContextReuse covers the registration a Conn keeps for a context
// passed to ReadMessage again and again: it still unblocks a read when the
// context is cancelled, a context cancelled between reads leaves no
// deadline behind for the next one, and Close drops it.
func TestConnContextReuse(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ca, cb := NewConn(a, 0), NewConn(b, 0)
	bg := context.Background()
	send := func(v uint64) <-chan error {
		done := make(chan error, 1)
		go func() { done <- cb.WriteMessage(bg, &Ack{Version: v}) }()
		return done
	}
	read := func(ctx context.Context, want uint64) {
		t.Helper()
		done := send(want)
		m, err := ca.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", want, err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(&Ack{Version: want}, m); d != "" {
			t.Fatalf("(-want +got):\n%s", d)
		}
	}

	// Cancelled while blocked, on the third read with the same context
	// (the registration is kept since the second).
	ctx, cancel := context.WithCancel(bg)
	read(ctx, 1)
	read(ctx, 2)
	if ca.rwait.done == nil {
		t.Errorf("no registration kept for a context used twice in a row")
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := ca.ReadMessage(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("read cancelled while blocked: err = %v, want context.Canceled", err)
	}
	read(bg, 3)

	// Cancelled between reads: the callback moves the deadline to the
	// past, the next read with another context must not see it.
	ctx, cancel = context.WithCancel(bg)
	read(ctx, 4)
	read(ctx, 5)
	cancel()
	time.Sleep(10 * time.Millisecond) // let the callback run
	if _, err := ca.ReadMessage(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("read with a cancelled context: err = %v, want context.Canceled", err)
	}
	dctx, dcancel := context.WithTimeout(bg, time.Minute)
	read(dctx, 6)
	dcancel()
	read(bg, 7)

	// A deadline that passes on a kept registration.
	dctx, dcancel = context.WithTimeout(bg, 300*time.Millisecond)
	defer dcancel()
	read(dctx, 8)
	read(dctx, 9)
	if _, err := ca.ReadMessage(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read past the deadline: err = %v, want context.DeadlineExceeded", err)
	}

	// Close drops the registration of a long-lived context.
	ctx, cancel = context.WithCancel(bg)
	defer cancel()
	read(ctx, 10)
	read(ctx, 11)
	ca.Close()
	if ca.rwait.done != nil {
		t.Errorf("registration kept after Close")
	}
	if _, err := ca.ReadMessage(ctx); err == nil {
		t.Errorf("read after Close: no error")
	}
	if ca.rwait.done != nil {
		t.Errorf("read after Close registered the context")
	}
}

// discardConn is a net.Conn whose writes succeed and go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }

// TestWriteSnapshotBuffer checks that a snapshot written after a small
// frame, as on every new connection, is assembled in a pooled buffer of
// its size, not in a small one grown by a new allocation each time.
func TestWriteSnapshotBuffer(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items on purpose under the race detector")
	}
	snap := &Delta{ToVersion: 9, Snapshot: true, CompactData: true}
	for i := range 40 {
		snap.Upserts = append(snap.Upserts, Resource{Key: ResourceKey{Type: "policy", ID: fmt.Sprintf("t/p%d", i)},
			Data: []byte(`{"name":"` + strings.Repeat("x", 400) + `"}`)})
	}
	write := func() {
		c := NewConn(discardConn{}, 0)
		if err := c.WriteMessage(context.Background(), &Welcome{HostID: 1}); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteMessage(context.Background(), snap); err != nil {
			t.Fatal(err)
		}
	}
	write()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 50
	for range n {
		write()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 4096 {
		t.Errorf("a new connection's welcome and %d-byte snapshot allocate %d bytes, want the snapshot's buffer from the pool",
			deltaFrameSize(snap), per)
	}
}
