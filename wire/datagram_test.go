package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSealOpenRoundTrip(t *testing.T) {
	key := mustKey(t, 7)
	for name, body := range sampleBodies() {
		t.Run(name, func(t *testing.T) {
			hdr := Header{HostID: 7, Seq: 1234567}
			pkt, err := Seal([]byte("prefix"), hdr, body, key)
			if err != nil {
				t.Fatalf("seal: %v", err)
			}
			if !bytes.HasPrefix(pkt, []byte("prefix")) {
				t.Fatalf("Seal dropped the prefix of dst")
			}
			pkt = pkt[len("prefix"):]
			gotHdr, gotBody, err := OpenWithKey(pkt, key)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			hdr.Type = body.Type()
			if d := cmp.Diff(hdr, gotHdr); d != "" {
				t.Errorf("header (-want +got):\n%s", d)
			}
			got := newBody(gotHdr.Type)
			if err := got.UnmarshalBinary(gotBody); err != nil {
				t.Fatalf("decode body: %v", err)
			}
			if d := cmp.Diff(body, got, cmpOpts); d != "" {
				t.Errorf("body (-want +got):\n%s", d)
			}
		})
	}
}

// TestTagIsTruncatedHMAC pins the tag to its definition in doc.go, computed
// with crypto/hmac.
func TestTagIsTruncatedHMAC(t *testing.T) {
	pkt, err := Seal(nil, Header{HostID: 9, Seq: 1}, &Heartbeat{ViewVersion: 3}, mustKey(t, 9))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, rawKey(9))
	m.Write(pkt[:len(pkt)-TagLen])
	if want := m.Sum(nil)[:TagLen]; !bytes.Equal(pkt[len(pkt)-TagLen:], want) {
		t.Errorf("tag = %x, want %x", pkt[len(pkt)-TagLen:], want)
	}
	if len(pkt) != 52 {
		t.Errorf("heartbeat datagram is %d bytes, want 52 (doc.go)", len(pkt))
	}
}

func TestSealErrors(t *testing.T) {
	key := mustKey(t, 1)
	tests := []struct {
		name string
		hdr  Header
		body Body
		want error
	}{
		{"sequence 0", Header{HostID: 1}, &Heartbeat{}, ErrMalformed},
		{"bad body", Header{HostID: 1, Seq: 1}, &LookupRequest{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Seal([]byte("x"), tt.hdr, tt.body, key)
			if !errors.Is(err, tt.want) {
				t.Errorf("Seal err = %v, want %v", err, tt.want)
			}
			if string(out) != "x" {
				t.Errorf("Seal left %q in dst on error", out)
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	good, err := Seal(nil, Header{HostID: 1, Seq: 1}, &Heartbeat{}, mustKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	with := func(i int, b byte) []byte {
		p := bytes.Clone(good)
		p[i] = b
		return p
	}
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only", good[:HeaderLen], ErrShort},
		{"one short of the minimum", good[:MinDatagramSize-1], ErrShort},
		{"too large", make([]byte, MaxDatagramSize+1), ErrTooLarge},
		{"bad magic", with(0, 'X'), ErrBadMagic},
		{"version 2", with(2, 2), ErrVersion},
		{"type 0", with(3, 0), ErrUnknownType},
		{"type 7", with(3, 7), ErrUnknownType},
		{"good", good, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseHeader(tt.pkt); err != tt.want {
				t.Errorf("ParseHeader err = %v, want exactly %v", err, tt.want)
			}
		})
	}
}

func TestTypeDirection(t *testing.T) {
	tests := []struct {
		typ  Type
		want Direction
	}{
		{TypeHeartbeat, ToController},
		{TypeLookupRequest, ToController},
		{TypeHeartbeatAck, ToAgent},
		{TypeLookupReply, ToAgent},
		{TypeInvalidate, ToAgent},
		{Type(0), 0},
		{Type(200), 0},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			if got := tt.typ.Direction(); got != tt.want {
				t.Errorf("%v.Direction() = %v, want %v", tt.typ, got, tt.want)
			}
			if got := newBody(tt.typ); got != nil && got.Type() != tt.typ {
				t.Errorf("body of %v says type %v", tt.typ, got.Type())
			}
		})
	}
}

func TestSequence(t *testing.T) {
	tests := []struct {
		name  string
		now   time.Time
		first uint64
	}{
		{"starts above the clock", time.Unix(1_700_000_000, 5), 1_700_000_000_000_000_006},
		{"before 1970 starts at 1", time.Unix(-5, 0), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSequence(tt.now)
			if got := s.Next(); got != tt.first {
				t.Errorf("first Next() = %d, want %d", got, tt.first)
			}
			if got := s.Next(); got != tt.first+1 {
				t.Errorf("second Next() = %d, want %d", got, tt.first+1)
			}
		})
	}
	t.Run("skips 0 on wrap", func(t *testing.T) {
		s := &Sequence{}
		s.n.Store(^uint64(0))
		if got := s.Next(); got != 1 {
			t.Errorf("Next() after the largest value = %d, want 1", got)
		}
	})
}

func TestNewKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := NewKey(make([]byte, n)); err == nil {
			t.Errorf("NewKey of %d bytes: no error", n)
		}
	}
}
