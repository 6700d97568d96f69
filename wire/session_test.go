package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// sealers returns a sealer and the matching opener of one direction of a
// session of host 1.
func sealers(t testing.TB, toAgent bool) (seal, open *frameSealer) {
	return sessionSealers(t, toAgent, 8)
}

// sessionSealers is sealers for the session whose controller nonce is
// made of the byte n.
func sessionSealers(t testing.TB, toAgent bool, n byte) (seal, open *frameSealer) {
	t.Helper()
	ks, err := deriveSession(rawKey(1), bytes.Repeat([]byte{9}, 32), bytes.Repeat([]byte{n}, AcceptNonceLen))
	if err != nil {
		t.Fatal(err)
	}
	a := ks.toController
	if toAgent {
		a = ks.toAgent
	}
	return &frameSealer{aead: a}, &frameSealer{aead: a}
}

// sealStream seals msgs into one byte stream.
func sealStream(t testing.TB, s *frameSealer, msgs ...Message) []byte {
	t.Helper()
	var stream []byte
	for _, m := range msgs {
		start := len(stream)
		var err error
		if stream, err = AppendMessage(stream, m, 0); err != nil {
			t.Fatal(err)
		}
		if stream, err = s.seal(stream, start); err != nil {
			t.Fatal(err)
		}
	}
	return stream
}

// openStream reads and opens every frame of stream.
func openStream(open *frameSealer, stream []byte) ([]Message, error) {
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	var out []Message
	for {
		t, body, err := fr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err == nil {
			body, err = open.open(t, body)
		}
		if err != nil {
			return out, err
		}
		m, err := DecodeMessage(t, body)
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestSealedFrames(t *testing.T) {
	msgs := sampleMessages()
	in := []Message{msgs["welcome"], msgs["delta"], msgs["invalidate"]}
	seal, open := sealers(t, true)
	stream := sealStream(t, seal, in...)
	got, err := openStream(open, stream)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, got, cmpOpts); d != "" {
		t.Errorf("opened (-want +got):\n%s", d)
	}

	first := 4 + int(binary.BigEndian.Uint32(stream)) // the Welcome frame
	tests := []struct {
		name   string
		stream func() []byte
		open   func() *frameSealer
	}{
		{"frames reordered", func() []byte {
			return append(bytes.Clone(stream[first:]), stream[:first]...)
		}, nil},
		{"a frame dropped", func() []byte { return stream[first:] }, nil},
		{"a frame replayed", func() []byte { return append(bytes.Clone(stream[:first]), stream...) }, nil},
		{"the other direction's key", func() []byte { return stream }, func() *frameSealer { _, o := sealers(t, false); return o }},
		{"another session's key", func() []byte { return stream }, func() *frameSealer { _, o := sessionSealers(t, true, 7); return o }},
		{"a frame's type changed", func() []byte {
			b := bytes.Clone(stream)
			b[4] = byte(FrameDelta)
			return b
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, o := sealers(t, true)
			if tt.open != nil {
				o = tt.open()
			}
			if _, err := openStream(o, tt.stream()); !errors.Is(err, ErrAuth) {
				t.Errorf("err = %v, want ErrAuth", err)
			}
		})
	}
	t.Run("every byte flipped", func(t *testing.T) {
		for i := range stream {
			b := bytes.Clone(stream)
			b[i] ^= 0x20
			_, o := sealers(t, true)
			got, err := openStream(o, b)
			if err == nil || len(got) > 0 && i < first {
				t.Fatalf("byte %d flipped: opened %d frames, err %v", i, len(got), err)
			}
			if !isAnyOf(err, ErrAuth, ErrShort, ErrTooLarge, ErrMalformed) {
				t.Fatalf("byte %d flipped: unexpected error %v", i, err)
			}
		}
	})
}

// isAnyOf reports whether err wraps one of sentinels.
func isAnyOf(err error, sentinels ...error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// fakeController answers the agent's Hello on the other end of a loopback
// connection as answer says, and returns what it read.
func fakeController(t *testing.T, answer func(ctx context.Context, c *Conn, h *Hello) error) (agent *Conn, done <-chan error) {
	t.Helper()
	c, s := loopbackPair(t)
	ctrl := NewConn(s, 0)
	errs := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := ctrl.ReadMessage(ctx)
		if err == nil {
			err = answer(ctx, ctrl, m.(*Hello))
		}
		errs <- err
	}()
	return NewConn(c, 0), errs
}

// TestHandshakeAuthenticatesTheController: only a controller with the host
// key gets past the agent's handshake.
func TestHandshakeAuthenticatesTheController(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		answer  func(ctx context.Context, c *Conn, h *Hello) error
		want    error  // of Handshake
		refusal string // the Error of the Welcome returned
	}{
		{"the real controller", func(ctx context.Context, c *Conn, h *Hello) error {
			if _, err := c.AcceptHello(ctx, h, rawKey(1)); err != nil {
				return err
			}
			return c.WriteMessage(ctx, &Welcome{HostID: 1})
		}, nil, ""},
		{"a controller without the host key", func(ctx context.Context, c *Conn, h *Hello) error {
			if _, err := c.AcceptHello(ctx, h, rawKey(2)); err != nil {
				return err
			}
			return c.WriteMessage(ctx, &Welcome{HostID: 1})
		}, ErrAuth, ""},
		{"a welcome in clear", func(ctx context.Context, c *Conn, h *Hello) error {
			return c.WriteMessage(ctx, &Welcome{HostID: 1})
		}, ErrAuth, ""},
		{"an accept, then a welcome in clear", func(ctx context.Context, c *Conn, h *Hello) error {
			if err := c.WriteMessage(ctx, &Accept{Nonce: make([]byte, AcceptNonceLen)}); err != nil {
				return err
			}
			return c.WriteMessage(ctx, &Welcome{HostID: 1})
		}, ErrAuth, ""},
		{"a refusal in clear", func(ctx context.Context, c *Conn, h *Hello) error {
			return c.WriteMessage(ctx, &Welcome{Error: "unknown host"})
		}, nil, "unknown host"},
		{"a refusal in clear above MaxHandshakeFrame", func(ctx context.Context, c *Conn, h *Hello) error {
			return c.WriteMessage(ctx, &Welcome{Error: strings.Repeat("x", MaxHandshakeFrame)})
		}, ErrTooLarge, ""},
		{"a sealed welcome above MaxHandshakeFrame", func(ctx context.Context, c *Conn, h *Hello) error {
			if _, err := c.AcceptHello(ctx, h, rawKey(1)); err != nil {
				return err
			}
			return c.WriteMessage(ctx, &Welcome{HostID: 1, Replicas: slices.Repeat([]string{"192.0.2.1:7444"}, MaxHandshakeFrame/16)})
		}, nil, ""},
		{"a delta instead of an accept", func(ctx context.Context, c *Conn, h *Hello) error {
			return c.WriteMessage(ctx, &Delta{ToVersion: 1})
		}, ErrMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			agent, done := fakeController(t, tt.answer)
			h := &Hello{Host: "h1", HostID: 1, Nonce: bytes.Repeat([]byte{1}, MinNonceLen), Time: now.Unix()}
			w, key, err := agent.Handshake(ctx, h, rawKey(1))
			if !errors.Is(err, tt.want) || tt.want != nil && err == nil {
				t.Fatalf("Handshake err = %v, want %v", err, tt.want)
			}
			if err := <-done; err != nil {
				t.Fatalf("controller: %v", err)
			}
			switch {
			case err != nil:
			case tt.refusal != "":
				if w.Error != tt.refusal || key != nil {
					t.Errorf("refusal: Welcome %+v, key %x: want Error %q and no key", w, key, tt.refusal)
				}
			case w.HostID != 1 || len(key) != KeySize:
				t.Errorf("Welcome %+v, key %x: want host ID 1 and a %d-byte key", w, key, KeySize)
			}
		})
	}
}

// FuzzSealedFrames opens arbitrary bytes as a sealed stream (no frame may
// open: the fuzzer does not know the key), then seals messages built from
// the input and checks that they open to themselves and that a byte
// flipped anywhere is refused.
func FuzzSealedFrames(f *testing.F) {
	seal, _ := sealers(f, true)
	f.Add(sealStream(f, seal, sampleMessages()["delta"]), uint16(7))
	f.Add([]byte{0, 0, 0, 17, 3, 1, 2, 3}, uint16(0))
	// Fresh sealers of the same keys for every input (the AEADs are
	// stateless; a sealer counts frames).
	_, other := sessionSealers(f, true, 0) // a session no seed is sealed for
	_, same := sealers(f, true)
	fresh := func(s *frameSealer) *frameSealer { return &frameSealer{aead: s.aead} }
	f.Fuzz(func(t *testing.T, data []byte, flip uint16) {
		got, err := openStream(fresh(other), data)
		if len(got) > 0 {
			t.Fatalf("opened %d frames of a stream sealed with another key", len(got))
		}
		if err != nil && !isAnyOf(err, ErrAuth, ErrShort, ErrTooLarge, ErrMalformed) {
			t.Fatalf("unexpected error %v", err)
		}
		src := fuzzSource{data}
		var msgs []Message
		for len(msgs) == 0 || len(src.b) > 0 && len(msgs) < 4 {
			msgs = append(msgs, src.message())
		}
		stream := sealStream(t, fresh(same), msgs...)
		got, err = openStream(fresh(same), stream)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if d := cmp.Diff(msgs, got, jsonOpts); d != "" {
			t.Fatalf("round trip (-want +got):\n%s", d)
		}
		stream[int(flip)%len(stream)] ^= 1 << (flip >> 13)
		if _, err := openStream(fresh(same), stream); err == nil {
			t.Fatalf("a stream with byte %d flipped opened", int(flip)%len(stream))
		}
	})
}
