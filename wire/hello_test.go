package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

func signedHello(t testing.TB, now time.Time) *Hello {
	t.Helper()
	h := &Hello{Host: "h1", HostID: 1, AgentVersion: "v1", ViewVersion: 9, ViewHash: bytes.Repeat([]byte{5}, ViewHashSize),
		Nonce: bytes.Repeat([]byte{7}, MinNonceLen), Time: now.Unix()}
	if err := SignHello(h, rawKey(1)); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestVerifyHello(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const skew = 30 * time.Second
	tests := []struct {
		name   string
		mutate func(h *Hello)
		key    []byte
		now    time.Time
		want   error
	}{
		{"good", func(*Hello) {}, rawKey(1), now, nil},
		{"at the edge of the skew", func(*Hello) {}, rawKey(1), now.Add(skew), nil},
		{"stale", func(*Hello) {}, rawKey(1), now.Add(skew + time.Second), ErrStale},
		{"from the future", func(*Hello) {}, rawKey(1), now.Add(-skew - time.Second), ErrStale},
		{"wrong key", func(*Hello) {}, rawKey(2), now, ErrAuth},
		{"short key", func(*Hello) {}, rawKey(1)[:16], now, ErrAuth},
		{"bad MAC", func(h *Hello) { h.MAC[0] ^= 1 }, rawKey(1), now, ErrAuth},
		{"truncated MAC", func(h *Hello) { h.MAC = h.MAC[:16] }, rawKey(1), now, ErrAuth},
		{"no MAC", func(h *Hello) { h.MAC = nil }, rawKey(1), now, ErrAuth},
		{"host changed", func(h *Hello) { h.Host = "h2" }, rawKey(1), now, ErrAuth},
		{"host id changed", func(h *Hello) { h.HostID = 2 }, rawKey(1), now, ErrAuth},
		{"agent version changed", func(h *Hello) { h.AgentVersion = "v2" }, rawKey(1), now, ErrAuth},
		{"view version changed", func(h *Hello) { h.ViewVersion = 0 }, rawKey(1), now, ErrAuth},
		{"view hash changed", func(h *Hello) { h.ViewHash[0] ^= 1 }, rawKey(1), now, ErrAuth},
		{"view hash dropped", func(h *Hello) { h.ViewHash = nil }, rawKey(1), now, ErrAuth},
		{"nonce changed", func(h *Hello) { h.Nonce[3] ^= 1 }, rawKey(1), now, ErrAuth},
		{"time changed (stale MAC beats fresh time)", func(h *Hello) { h.Time++ }, rawKey(1), now, ErrAuth},
		{"fields shifted", func(h *Hello) { h.Host, h.AgentVersion = "h1v", "1" }, rawKey(1), now, ErrAuth},
		{"short nonce", func(h *Hello) { h.Nonce = h.Nonce[:MinNonceLen-1] }, rawKey(1), now, ErrMalformed},
		{"long nonce", func(h *Hello) { h.Nonce = make([]byte, MaxNonceLen+1) }, rawKey(1), now, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := signedHello(t, now)
			tt.mutate(h)
			if err := VerifyHello(h, tt.key, tt.now, skew); !errors.Is(err, tt.want) {
				t.Errorf("VerifyHello err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestHelloMACInput pins the MAC input documented in doc.go.
func TestHelloMACInput(t *testing.T) {
	h := signedHello(t, time.Unix(1_700_000_000, 0))
	in := []byte("weft-hello-v2\x00")
	in = append(in, 0, 0, 0, 2, 'h', '1')
	in = append(in, 0, 0, 0, 1)
	in = append(in, 0, 0, 0, 2, 'v', '1')
	in = append(in, 0, 0, 0, 0, 0, 0, 0, 9)
	in = append(in, 0, 0, 0, ViewHashSize)
	in = append(in, h.ViewHash...)
	in = append(in, 0, 0, 0, MinNonceLen)
	in = append(in, h.Nonce...)
	in = append(in, 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00) // 1_700_000_000
	m := hmac.New(sha256.New, rawKey(1))
	m.Write(in)
	if want := m.Sum(nil); !bytes.Equal(h.MAC, want) {
		t.Errorf("MAC = %x, want %x", h.MAC, want)
	}
}

func TestSignHelloErrors(t *testing.T) {
	tests := []struct {
		name  string
		hello Hello
		key   []byte
	}{
		{"short key", Hello{Host: "h", Nonce: make([]byte, MinNonceLen)}, make([]byte, 16)},
		{"no nonce", Hello{Host: "h"}, rawKey(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := SignHello(&tt.hello, tt.key); err == nil {
				t.Error("SignHello: no error")
			}
			if tt.hello.MAC != nil {
				t.Error("SignHello set a MAC on error")
			}
		})
	}
}

func TestNewNonce(t *testing.T) {
	a, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != MinNonceLen || bytes.Equal(a, b) {
		t.Errorf("nonces %x and %x: want two different %d-byte values", a, b, MinNonceLen)
	}
}
