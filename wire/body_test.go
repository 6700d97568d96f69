package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBodyRoundTrip(t *testing.T) {
	for name, body := range sampleBodies() {
		t.Run(name, func(t *testing.T) {
			enc, err := body.AppendBinary(nil)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			got := newBody(body.Type())
			if err := got.UnmarshalBinary(enc); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if d := cmp.Diff(body, got, cmpOpts); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
			// Append-style: encoding after a prefix leaves the prefix.
			enc2, err := body.AppendBinary([]byte("prefix"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc2, append([]byte("prefix"), enc...)) {
				t.Errorf("AppendBinary with prefix = %x, want prefix + %x", enc2, enc)
			}
		})
	}
}

func TestBodyTruncatedIsShort(t *testing.T) {
	for name, body := range sampleBodies() {
		t.Run(name, func(t *testing.T) {
			enc, err := body.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			for n := range len(enc) {
				// A copy exactly n bytes long, so any read past the end
				// would panic instead of reading spare capacity.
				cut := bytes.Clone(enc[:n])
				if err := newBody(body.Type()).UnmarshalBinary(cut); !errors.Is(err, ErrShort) {
					t.Errorf("decode of first %d of %d bytes: err = %v, want ErrShort", n, len(enc), err)
				}
			}
			if err := newBody(body.Type()).UnmarshalBinary(append(bytes.Clone(enc), 0)); !errors.Is(err, ErrMalformed) {
				t.Errorf("decode with a trailing byte: err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestBodyEncodedSizes(t *testing.T) {
	tests := []struct {
		name string
		body Body
		want int
	}{
		{"heartbeat", &Heartbeat{}, HeartbeatLen},
		{"heartbeat ack", &HeartbeatAck{}, HeartbeatAckLen},
		{"lookup request v4", &LookupRequest{Queries: []LookupQuery{{IP: netip.MustParseAddr("10.0.0.1")}}}, 1 + 13},
		{"lookup request v6", &LookupRequest{Queries: []LookupQuery{{IP: netip.MustParseAddr("::1")}}}, 1 + 25},
		{"lookup reply smallest", &LookupReply{Answers: []LookupAnswer{{IP: netip.MustParseAddr("10.0.0.1")}}}, 1 + 35},
		{"lookup reply largest", &LookupReply{Answers: []LookupAnswer{{IP: netip.MustParseAddr("::1"), Location: Location{HostIP: netip.MustParseAddr("::2")}}}}, 1 + 63},
		{"invalidate smallest", &Invalidate{IP: netip.MustParseAddr("10.0.0.1")}, 29},
		{"invalidate largest", &Invalidate{IP: netip.MustParseAddr("::1"), Location: Location{HostIP: netip.MustParseAddr("::2")}}, 57},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.body.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.want {
				t.Errorf("encoded size = %d, want %d (the doc.go tables)", len(b), tt.want)
			}
		})
	}
	// The largest datagram of all: a full batch of the largest answers.
	full := &LookupReply{Answers: make([]LookupAnswer, MaxLookupBatch)}
	for i := range full.Answers {
		full.Answers[i] = LookupAnswer{IP: netip.MustParseAddr("::1"), Location: Location{HostIP: netip.MustParseAddr("::2")}}
	}
	pkt, err := Seal(nil, Header{HostID: 1, Seq: 1}, full, mustKey(t, 1))
	if err != nil {
		t.Fatalf("seal full reply: %v", err)
	}
	if len(pkt) != 1041 {
		t.Errorf("full reply datagram is %d bytes, want 1041 (doc.go)", len(pkt))
	}
}

func TestBodyEncodeErrors(t *testing.T) {
	v4 := netip.MustParseAddr("10.0.0.1")
	zoned := netip.MustParseAddr("fe80::1%eth0")
	queries := func(n int) []LookupQuery {
		q := make([]LookupQuery, n)
		for i := range q {
			q[i].IP = v4
		}
		return q
	}
	tests := []struct {
		name string
		body Body
		want error
	}{
		{"empty lookup request", &LookupRequest{}, ErrMalformed},
		{"lookup batch too large", &LookupRequest{Queries: queries(MaxLookupBatch + 1)}, ErrTooLarge},
		{"vni above 24 bits", &LookupRequest{Queries: []LookupQuery{{VNI: MaxVNI + 1, IP: v4}}}, ErrMalformed},
		{"query without ip", &LookupRequest{Queries: []LookupQuery{{VNI: 1}}}, ErrMalformed},
		{"query with zone", &LookupRequest{Queries: []LookupQuery{{IP: zoned}}}, ErrMalformed},
		{"empty lookup reply", &LookupReply{}, ErrMalformed},
		{"answer host ip with zone", &LookupReply{Answers: []LookupAnswer{{IP: v4, Location: Location{HostIP: zoned}}}}, ErrMalformed},
		{"invalidate without ip", &Invalidate{VNI: 1}, ErrMalformed},
		{"invalidate vni", &Invalidate{VNI: 1 << 24, IP: v4}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.body.AppendBinary([]byte("x"))
			if !errors.Is(err, tt.want) {
				t.Errorf("AppendBinary err = %v, want %v", err, tt.want)
			}
			if string(b) != "x" {
				t.Errorf("AppendBinary appended %q on error", b[1:])
			}
		})
	}
}

func TestBodyDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		body Body
		in   []byte
		want error
	}{
		{"heartbeat empty", &Heartbeat{}, nil, ErrShort},
		{"lookup count 0", &LookupRequest{}, []byte{0}, ErrMalformed},
		{"lookup count 17", &LookupRequest{}, []byte{17}, ErrTooLarge},
		{"lookup vni 25 bits", &LookupRequest{}, []byte{1, 0, 0, 0, 1, 1, 0, 0, 0, 4, 10, 0, 0, 1}, ErrMalformed},
		{"lookup family 0", &LookupRequest{}, []byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0}, ErrMalformed},
		{"lookup family 5", &LookupRequest{}, []byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 5, 10, 0, 0, 1}, ErrMalformed},
		{"lookup v6 cut", &LookupRequest{}, []byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 6, 10, 0, 0, 1}, ErrShort},
		{"lookup second query missing", &LookupRequest{}, []byte{2, 0, 0, 0, 1, 0, 0, 0, 0, 4, 10, 0, 0, 1}, ErrShort},
		{"invalidate reserved flag", &Invalidate{},
			[]byte{0, 0, 0, 1, 4, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrMalformed},
		{"invalidate optional address absent", &Invalidate{},
			[]byte{0, 0, 0, 1, 4, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.body.UnmarshalBinary(tt.in); !errors.Is(err, tt.want) {
				t.Errorf("UnmarshalBinary(%x) err = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestBodyDecodeReusesSlices(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	src := sampleBodies()["lookup request batch"].(*LookupRequest)
	enc, err := src.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	var dst LookupRequest
	if err := dst.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := dst.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("decoding into a used LookupRequest allocates %v times, want 0", allocs)
	}
}

func TestMACAddrText(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    MACAddr
		wantErr bool
	}{
		{"colons", `"02:57:46:00:00:01"`, MACAddr{2, 0x57, 0x46, 0, 0, 1}, false},
		{"eui64 refused", `"02:57:46:00:00:01:02:03"`, MACAddr{}, true},
		{"garbage", `"zz"`, MACAddr{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got MACAddr
			err := json.Unmarshal([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("unmarshal %s: err = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("unmarshal %s = %v, want %v", tt.in, got, tt.want)
			}
			if err == nil {
				out, _ := json.Marshal(got)
				if string(out) != tt.in {
					t.Errorf("marshal = %s, want %s", out, tt.in)
				}
			}
		})
	}
}
