package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sampleMessages() map[string]Message {
	return map[string]Message{
		"hello": &Hello{Host: "h1", HostID: 7, AgentVersion: "v0.1.0", ViewVersion: 42,
			Nonce: bytes.Repeat([]byte{1}, MinNonceLen), Time: 1_700_000_000, MAC: bytes.Repeat([]byte{2}, 32)},
		"welcome":         &Welcome{HostID: 7, Epoch: 3, Replicas: []string{"10.0.0.1:7000", "10.0.0.2:7000"}, ReplicasVersion: 2, Snapshot: true},
		"welcome refusal": &Welcome{Error: "unknown host h9"},
		"accept":          &Accept{Nonce: bytes.Repeat([]byte{3}, AcceptNonceLen)},
		"delta": &Delta{FromVersion: 41, ToVersion: 44,
			Upserts: []Resource{
				{Key: ResourceKey{Type: "endpoint", ID: "acme/web-1"}, Data: json.RawMessage(`{"ip":"10.0.1.10","mac":"02:00:00:00:00:01"}`)},
				{Key: ResourceKey{Type: "policy", ID: "acme/allow-web"}, Data: json.RawMessage(`{"html":"<b>&</b>"}`)},
			},
			Deletes: []ResourceKey{{Type: "route", ID: "r1"}},
		},
		"snapshot chunk": &Delta{ToVersion: 44, Snapshot: true, More: true,
			Upserts: []Resource{{Key: ResourceKey{Type: "vpc", ID: "acme/main"}}}},
		"ack":                          &Ack{Version: 44},
		"ack with a programming error": &Ack{Version: 44, Error: "program datapath: link vx100: no buffer space"},
		"nack":                         &Nack{Version: 44, Error: "program vxlan 100: no such device"},
		"invalidate": &Invalidate{VNI: 100, IP: netip.MustParseAddr("2001:db8::5"), Epoch: 12, HasLocation: true,
			Location: Location{HostIP: netip.MustParseAddr("192.0.2.12"), MAC: MACAddr{2, 0, 0, 0, 0, 5}, Identity: 9}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for name, msg := range sampleMessages() {
		t.Run(name, func(t *testing.T) {
			stream, err := AppendMessage([]byte("prefix"), msg, 0)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !bytes.HasPrefix(stream, []byte("prefix")) {
				t.Fatal("AppendMessage dropped the prefix")
			}
			fr := NewFrameReader(bytes.NewReader(stream[len("prefix"):]), 0)
			ft, body, err := fr.Next()
			if err != nil {
				t.Fatalf("read frame: %v", err)
			}
			if ft != msg.FrameType() {
				t.Errorf("frame type = %v, want %v", ft, msg.FrameType())
			}
			if bytes.HasSuffix(body, []byte("\n")) {
				t.Errorf("body ends with a newline")
			}
			got, err := DecodeMessage(ft, body)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if d := cmp.Diff(msg, got, cmpOpts); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestAppendMessageErrors(t *testing.T) {
	tests := []struct {
		name     string
		msg      Message
		maxFrame int
		want     error
	}{
		{"hello without host", &Hello{}, 0, ErrMalformed},
		{"hello with a short view hash", &Hello{Host: "h", ViewHash: []byte{1, 2}}, 0, ErrMalformed},
		{"delta with a long view hash", &Delta{ToVersion: 1, ViewHash: make([]byte, ViewHashSize+1)}, 0, ErrMalformed},
		{"delta going back", &Delta{FromVersion: 5, ToVersion: 4}, 0, ErrMalformed},
		{"snapshot with deletes", &Delta{ToVersion: 1, Snapshot: true, Deletes: []ResourceKey{{Type: "a", ID: "b"}}}, 0, ErrMalformed},
		{"resource without id", &Delta{ToVersion: 1, Upserts: []Resource{{Key: ResourceKey{Type: "endpoint"}}}}, 0, ErrMalformed},
		{"delete without type", &Delta{ToVersion: 1, Deletes: []ResourceKey{{ID: "x"}}}, 0, ErrMalformed},
		{"invalidate vni", &Invalidate{VNI: 1 << 24, IP: netip.MustParseAddr("10.0.0.1")}, 0, ErrMalformed},
		{"frame too large", &Nack{Error: strings.Repeat("e", 100)}, 64, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := AppendMessage([]byte("x"), tt.msg, tt.maxFrame)
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if string(out) != "x" {
				t.Errorf("AppendMessage left %q on error", out)
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	tests := []struct {
		name string
		t    FrameType
		body string
		want error
	}{
		{"unknown type", FrameType(0), `{}`, ErrUnknownType},
		{"unknown type 8", FrameType(8), `{}`, ErrUnknownType},
		{"accept without a nonce", FrameAccept, `{}`, ErrMalformed},
		{"not json", FrameAck, `version=1`, ErrMalformed},
		{"empty body", FrameAck, ``, ErrMalformed},
		{"trailing data", FrameAck, `{"version":1} {}`, ErrMalformed},
		{"wrong field type", FrameAck, `{"version":"one"}`, ErrMalformed},
		{"negative version", FrameAck, `{"version":-1}`, ErrMalformed},
		{"hello without host", FrameHello, `{"hostID":1}`, ErrMalformed},
		{"delta going back", FrameDelta, `{"fromVersion":2,"toVersion":1}`, ErrMalformed},
		{"invalidate bad ip", FrameInvalidate, `{"vni":1,"ip":"10.0.0.300"}`, ErrMalformed},
		{"invalidate zoned ip", FrameInvalidate, `{"vni":1,"ip":"fe80::1%eth0"}`, ErrMalformed},
		{"invalidate bad mac", FrameInvalidate, `{"vni":1,"ip":"10.0.0.1","location":{"mac":"x"}}`, ErrMalformed},
		{"unknown fields are ignored", FrameAck, `{"version":1,"future":true}`, nil},
		{"null is an empty message", FrameNack, `null`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMessage(tt.t, []byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Errorf("DecodeMessage(%v, %s) err = %v, want %v", tt.t, tt.body, err, tt.want)
			}
		})
	}
}

// TestMessageJSONNames pins the JSON field names, which are part of the
// protocol.
func TestMessageJSONNames(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
		want string
	}{
		{"ack", &Ack{Version: 3}, `{"version":3}`},
		{"ack with an error", &Ack{Version: 3, Error: "e"}, `{"version":3,"error":"e"}`},
		{"nack", &Nack{Version: 3, Error: "e"}, `{"version":3,"error":"e"}`},
		{"delta", &Delta{FromVersion: 1, ToVersion: 2, Upserts: []Resource{{Key: ResourceKey{Type: "vpc", ID: "a"}, Data: json.RawMessage(`{}`)}}},
			`{"fromVersion":1,"toVersion":2,"upserts":[{"key":{"type":"vpc","id":"a"},"data":{}}]}`},
		{"hello", &Hello{Host: "h", HostID: 1, ViewVersion: 2, Nonce: []byte{1}, Time: 3, MAC: []byte{4}},
			`{"host":"h","hostID":1,"viewVersion":2,"nonce":"AQ==","time":3,"mac":"BA=="}`},
		{"welcome", &Welcome{HostID: 1, Replicas: []string{"a"}}, `{"hostID":1,"replicas":["a"]}`},
		{"invalidate gone", &Invalidate{VNI: 5, IP: netip.MustParseAddr("10.0.0.1"), Epoch: 2},
			`{"vni":5,"ip":"10.0.0.1","epoch":2,"location":{"hostIP":"","mac":"00:00:00:00:00:00"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendMessage(nil, tt.msg, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b[FrameHeaderLen:]); got != tt.want {
				t.Errorf("body = %s\nwant   %s", got, tt.want)
			}
		})
	}
}

// TestFastDecodeTakesPlainBodies: the bodies AppendMessage writes for a
// session's frames take the one-pass decoder (FuzzFastDecode checks that
// it agrees with json.Unmarshal; this checks that it is used).
func TestFastDecodeTakesPlainBodies(t *testing.T) {
	msgs := sampleMessages()
	for name, m := range map[string]Message{"delta": msgs["delta"], "snapshot": snapshotDelta(t), "ack": msgs["ack"],
		"ack with an error": msgs["ack with a programming error"], "empty delta": &Delta{}} {
		t.Run(name, func(t *testing.T) {
			b := mustAppendMessage(t, m)[FrameHeaderLen:]
			var ok bool
			switch m.(type) {
			case *Delta:
				ok = fastDecodeDelta(b, &Delta{})
			case *Ack:
				ok = fastDecodeAck(b, &Ack{})
			}
			if !ok {
				t.Errorf("the fast decoder gave up on %s", b)
			}
		})
	}
}
