package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The fuzz targets. Each checks, for its decoder: no panic on any input;
// only the documented errors; canonical encodings (what decodes re-encodes
// to the same bytes) or, for JSON, stable re-encoding; decode(encode(x)) ==
// x for values x built from the fuzz input (fuzzSource); truncations fail
// with ErrShort. Seeds are added with f.Add and checked in under
// testdata/fuzz/FuzzXxx (see corpus_test.go).

// fuzzSource builds structured values from fuzz input bytes; past the end
// it yields zeros.
type fuzzSource struct{ b []byte }

func (s *fuzzSource) byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *fuzzSource) bytes(n int) []byte {
	out := make([]byte, n)
	s.b = s.b[copy(out, s.b):]
	return out
}

func (s *fuzzSource) u16() uint16 { return binary.BigEndian.Uint16(s.bytes(2)) }
func (s *fuzzSource) u32() uint32 { return binary.BigEndian.Uint32(s.bytes(4)) }
func (s *fuzzSource) u64() uint64 { return binary.BigEndian.Uint64(s.bytes(8)) }
func (s *fuzzSource) bool() bool  { return s.byte()&1 == 1 }
func (s *fuzzSource) intn(n int) int {
	return int(s.byte()) % n
}

func (s *fuzzSource) addr(optional bool) netip.Addr {
	switch s.intn(3) {
	case 0:
		if optional {
			return netip.Addr{}
		}
		fallthrough
	case 1:
		return netip.AddrFrom4([4]byte(s.bytes(4)))
	default:
		return netip.AddrFrom16([16]byte(s.bytes(16)))
	}
}

// str returns a valid UTF-8 string: JSON replaces invalid bytes, so only
// valid strings round-trip.
func (s *fuzzSource) str(maxLen int) string {
	return strings.ToValidUTF8(string(s.bytes(s.intn(maxLen+1))), "\uFFFD")
}

func (s *fuzzSource) location() Location {
	return Location{HostIP: s.addr(true), MAC: MACAddr(s.bytes(6)), Identity: s.u32()}
}

func (s *fuzzSource) body(t Type) Body {
	switch t {
	case TypeHeartbeat:
		return &Heartbeat{ViewVersion: s.u64(), Health: Health(s.u32()), EndpointCount: s.u32(), UptimeSeconds: s.u32()}
	case TypeHeartbeatAck:
		return &HeartbeatAck{Epoch: s.u64(), ReplicasVersion: s.u64(), HeartbeatSeq: s.u64()}
	case TypeLookupRequest:
		m := &LookupRequest{}
		for range 1 + s.intn(MaxLookupBatch) {
			m.Queries = append(m.Queries, LookupQuery{RequestID: s.u32(), VNI: s.u32() & MaxVNI, IP: s.addr(false)})
		}
		return m
	case TypeLookupReply:
		m := &LookupReply{}
		for range 1 + s.intn(MaxLookupBatch) {
			m.Answers = append(m.Answers, LookupAnswer{RequestID: s.u32(), VNI: s.u32() & MaxVNI, IP: s.addr(false),
				Found: s.bool(), Location: s.location(), Epoch: s.u64(), TTL: s.u16()})
		}
		return m
	case TypeFlowReport:
		m := &FlowReport{IntervalMs: s.u32(), HeartbeatsSent: s.u32(), Sampling: s.u32()}
		varint := func() uint64 { return s.u64() >> (8 * s.intn(8)) }
		for range s.intn(4) {
			v := VPCCounters{VNI: s.u32() & MaxVNI, SentPackets: varint(), SentBytes: varint(), ReceivedPackets: varint(),
				ReceivedBytes: varint(), ConnsOut: varint(), ConnsIn: varint()}
			for i := range v.Drops {
				v.Drops[i] = varint()
			}
			m.VPCs = append(m.VPCs, v)
		}
		for range s.intn(8) {
			m.Flows = append(m.Flows, FlowEntry{VNI: s.u32() & MaxVNI, Src: s.addr(false), Dst: s.addr(false), Proto: s.byte(),
				SrcPort: s.u16(), DstPort: s.u16(), Bytes: varint(), Packets: varint(), Dropped: varint(), Reason: s.byte(),
				DurationMs: uint32(varint()), IdleMs: uint32(varint())})
		}
		return m
	default:
		return &Invalidate{VNI: s.u32() & MaxVNI, IP: s.addr(false), Epoch: s.u64(), HasLocation: s.bool(), Location: s.location()}
	}
}

func (s *fuzzSource) resourceKey() ResourceKey {
	return ResourceKey{Type: "t" + s.str(8), ID: "i" + s.str(16)}
}

func (s *fuzzSource) message() Message {
	switch FrameType(1 + s.intn(6)) {
	case FrameHello:
		return &Hello{Host: "h" + s.str(16), HostID: s.u32(), AgentVersion: s.str(8), ViewVersion: s.u64(),
			Nonce: s.bytes(s.intn(MaxNonceLen + 1)), Time: int64(s.u64()), MAC: s.bytes(s.intn(40))}
	case FrameWelcome:
		m := &Welcome{HostID: s.u32(), Epoch: s.u64(), ReplicasVersion: s.u64(), Snapshot: s.bool(), Error: s.str(20)}
		for range s.intn(4) {
			m.Replicas = append(m.Replicas, s.str(24))
		}
		return m
	case FrameDelta:
		from := s.u64()
		m := &Delta{FromVersion: from, ToVersion: from + uint64(s.u16()), Snapshot: s.bool(), More: s.bool()}
		for range s.intn(5) {
			var data json.RawMessage
			switch s.intn(3) {
			case 1:
				data, _ = json.Marshal(s.str(20))
			case 2:
				data, _ = json.Marshal(map[string]any{s.str(5): s.u32(), "b": s.bool()})
			}
			m.Upserts = append(m.Upserts, Resource{Key: s.resourceKey(), Data: data})
		}
		if !m.Snapshot {
			for range s.intn(5) {
				m.Deletes = append(m.Deletes, s.resourceKey())
			}
		}
		return m
	case FrameAck:
		return &Ack{Version: s.u64(), Error: s.str(40)}
	case FrameNack:
		return &Nack{Version: s.u64(), Error: s.str(40)}
	default:
		return s.body(TypeInvalidate).(*Invalidate)
	}
}

// jsonOpts compares JSON documents by meaning rather than spelling.
var jsonOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.FilterPath(func(p cmp.Path) bool { return !isRawMessage(p) }, cmpopts.EquateEmpty()),
	// A Comparer for json.RawMessage would also match []byte fields
	// (assignable types), hence the filter on the exact type.
	cmp.FilterPath(isRawMessage, cmp.Comparer(func(a, b []byte) bool {
		if len(a) == 0 || len(b) == 0 {
			return len(a) == len(b)
		}
		var ca, cb bytes.Buffer
		return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
	})),
}

func isRawMessage(p cmp.Path) bool { return p.Last().Type() == reflect.TypeFor[json.RawMessage]() }

// isOneOf reports whether err is exactly one of the sentinels (the UDP
// path returns them unwrapped).
func isOneOf(err error, sentinels ...error) bool {
	for _, s := range sentinels {
		if err == s {
			return true
		}
	}
	return false
}

// fuzzKeyring knows hosts 1 to 3.
func fuzzKeyring() *testKeyring { return newTestKeyring(1, 2, 3) }

// sealedSamples returns one sealed datagram per sample body, for seeds.
func sealedSamples(t testing.TB) [][]byte {
	var out [][]byte
	seq := uint64(1)
	for _, name := range []string{"heartbeat", "heartbeat ack", "lookup request batch", "lookup reply batch", "invalidate moved", "invalidate gone"} {
		pkt, err := Seal(nil, Header{HostID: 1, Seq: seq}, sampleBodies()[name], mustKey(t, 1))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pkt)
		seq++
	}
	return out
}

// FuzzOpen feeds arbitrary datagrams to Verifier.Open (and ParseHeader),
// then decodes the body of any it accepts.
func FuzzOpen(f *testing.F) {
	for _, p := range sealedSamples(f) {
		f.Add(p)
	}
	f.Add([]byte("WF\x01\x01"))
	f.Add(make([]byte, MinDatagramSize))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, dir := range []Direction{ToController, ToAgent} {
			v := mustVerifier(t, fuzzKeyring(), dir)
			hdr, body, err := v.Open(pkt)
			if err != nil {
				if !isOneOf(err, ErrShort, ErrTooLarge, ErrBadMagic, ErrVersion, ErrUnknownType, ErrDirection, ErrUnknownHost, ErrAuth, ErrReplay) {
					t.Fatalf("Open: unexpected error %v", err)
				}
				continue
			}
			if phdr, err := ParseHeader(pkt); err != nil || phdr != hdr {
				t.Fatalf("Open accepted %+v but ParseHeader says %+v, %v", hdr, phdr, err)
			}
			if !bytes.Equal(body, pkt[HeaderLen:len(pkt)-TagLen]) {
				t.Fatalf("body is not the bytes between header and tag")
			}
			if _, _, err := v.Open(pkt); err != ErrReplay {
				t.Fatalf("second Open: err = %v, want ErrReplay", err)
			}
			checkBodyDecode(t, hdr.Type, body)
		}
	})
}

// checkBodyDecode decodes arbitrary bytes as a body of type typ: errors are
// the body sentinels; what decodes re-encodes to the same bytes, and each
// of its truncations fails with ErrShort.
func checkBodyDecode(t *testing.T, typ Type, b []byte) {
	t.Helper()
	body := newBody(typ)
	err := body.UnmarshalBinary(b)
	if err != nil {
		if !isOneOf(err, ErrShort, ErrMalformed, ErrTooLarge) {
			t.Fatalf("decode %v: unexpected error %v", typ, err)
		}
		return
	}
	enc, err := body.AppendBinary(nil)
	if err != nil {
		t.Fatalf("re-encode decoded %v %+v: %v", typ, body, err)
	}
	if !bytes.Equal(enc, b) {
		t.Fatalf("decoded %v re-encodes to %x, input was %x", typ, enc, b)
	}
	for n := range len(b) {
		if err := newBody(typ).UnmarshalBinary(bytes.Clone(b[:n])); err != ErrShort {
			t.Fatalf("decode %v of the first %d of %d bytes: err = %v, want ErrShort", typ, n, len(b), err)
		}
	}
}

// checkBodyRoundTrip builds a body of type typ from the input, encodes and
// decodes it.
func checkBodyRoundTrip(t *testing.T, typ Type, data []byte) {
	t.Helper()
	src := fuzzSource{data}
	want := src.body(typ)
	enc, err := want.AppendBinary(nil)
	if err != nil {
		t.Fatalf("encode %+v: %v", want, err)
	}
	got := newBody(typ)
	if err := got.UnmarshalBinary(enc); err != nil {
		t.Fatalf("decode %x: %v", enc, err)
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
}

func addBodySeeds(f *testing.F, typ Type) {
	for _, b := range sampleBodies() {
		if b.Type() == typ {
			enc, err := b.AppendBinary(nil)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(enc)
		}
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
}

func fuzzBody(f *testing.F, typ Type) {
	addBodySeeds(f, typ)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkBodyDecode(t, typ, data)
		checkBodyRoundTrip(t, typ, data)
	})
}

func FuzzHeartbeat(f *testing.F)     { fuzzBody(f, TypeHeartbeat) }
func FuzzHeartbeatAck(f *testing.F)  { fuzzBody(f, TypeHeartbeatAck) }
func FuzzLookupRequest(f *testing.F) { fuzzBody(f, TypeLookupRequest) }
func FuzzLookupReply(f *testing.F)   { fuzzBody(f, TypeLookupReply) }
func FuzzInvalidate(f *testing.F)    { fuzzBody(f, TypeInvalidate) }
func FuzzFlowReport(f *testing.F)    { fuzzBody(f, TypeFlowReport) }

// FuzzSealOpen seals structured datagrams of every type and checks the
// round trip, that flipping any single byte (with an input-chosen mask)
// fails authentication without moving the replay window, and that every
// truncation fails.
func FuzzSealOpen(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add(bytes.Repeat([]byte{3}, 200))
	f.Add(bytes.Repeat([]byte{0xa5, 0x3c}, 400))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := fuzzSource{data}
		typ := Type(1 + src.intn(6))
		host := uint32(1 + src.intn(3))
		seq := src.u64()
		if seq == 0 {
			seq = 1
		}
		mask := src.byte()
		if mask == 0 {
			mask = 1
		}
		want := src.body(typ)
		key := mustKey(t, host)
		pkt, err := Seal(nil, Header{HostID: host, Seq: seq}, want, key)
		if err != nil {
			t.Fatalf("seal %+v: %v", want, err)
		}

		hdr, body, err := OpenWithKey(pkt, key)
		if err != nil {
			t.Fatalf("OpenWithKey: %v", err)
		}
		if hdr != (Header{Type: typ, HostID: host, Seq: seq}) {
			t.Fatalf("header %+v, want type %v host %d seq %d", hdr, typ, host, seq)
		}
		got := newBody(typ)
		if err := got.UnmarshalBinary(body); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if d := cmp.Diff(want, got, cmpOpts); d != "" {
			t.Fatalf("round trip (-want +got):\n%s", d)
		}

		v := mustVerifier(t, fuzzKeyring(), typ.Direction())
		bad := bytes.Clone(pkt)
		for i := range bad {
			bad[i] ^= mask
			_, _, err := v.Open(bad)
			switch {
			case err == nil:
				t.Fatalf("byte %d ^ %#x accepted", i, mask)
			case i >= HeaderLen && err != ErrAuth:
				t.Fatalf("byte %d ^ %#x (body or tag): err = %v, want ErrAuth", i, mask, err)
			}
			bad[i] ^= mask
		}
		for n := range len(pkt) {
			_, _, err := v.Open(bytes.Clone(pkt[:n]))
			if n < MinDatagramSize && err != ErrShort || n >= MinDatagramSize && err != ErrAuth {
				t.Fatalf("datagram cut to %d of %d bytes: err = %v", n, len(pkt), err)
			}
		}
		for n := range len(body) {
			if err := newBody(typ).UnmarshalBinary(bytes.Clone(body[:n])); err != ErrShort {
				t.Fatalf("body cut to %d of %d bytes: err = %v, want ErrShort", n, len(body), err)
			}
		}
		// The failures above did not move the window.
		if _, _, err := v.Open(pkt); err != nil {
			t.Fatalf("Open after the rejected variants: %v", err)
		}
		if _, _, err := v.Open(pkt); err != ErrReplay {
			t.Fatalf("Open again: err = %v, want ErrReplay", err)
		}
	})
}

// FuzzReplayWindow drives the window with sequence numbers near its top
// and far jumps, against a model that remembers every number accepted.
func FuzzReplayWindow(f *testing.F) {
	f.Add([]byte{0, 5, 1, 3, 2, 70, 3, 1})
	f.Add(bytes.Repeat([]byte{1, 64, 2, 63}, 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := fuzzSource{data}
		var seqs []uint64
		top := uint64(0)
		for len(src.b) > 0 && len(seqs) < 1000 {
			var s uint64
			switch src.intn(4) {
			case 0:
				s = src.u64() // anywhere
			case 1:
				s = top + uint64(src.byte()) // a little ahead
			case 2:
				s = top - uint64(src.byte()) // a little behind (may wrap)
			default:
				s = top + uint64(src.u32()) // a jump
			}
			seqs = append(seqs, s)
			top = max(top, s)
		}
		checkWindowModel(t, seqs)
	})
}

// FuzzMAC checks the precomputed-state HMAC against crypto/hmac.
func FuzzMAC(f *testing.F) {
	f.Add(rawKey(1), []byte("hello"))
	f.Add(make([]byte, KeySize), bytes.Repeat([]byte{1}, 200))
	f.Fuzz(func(t *testing.T, rawk, msg []byte) {
		raw := make([]byte, KeySize)
		copy(raw, rawk)
		k, err := NewKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		var got [32]byte
		k.sum(&got, msg)
		m := hmac.New(sha256.New, raw)
		m.Write(msg)
		if want := m.Sum(nil); !bytes.Equal(got[:], want) {
			t.Fatalf("HMAC = %x, want %x", got, want)
		}
	})
}

// FuzzFrameReader reads frames from an arbitrary stream: bounded frames,
// documented errors, and the frames read re-encode to the bytes consumed.
func FuzzFrameReader(f *testing.F) {
	var stream []byte
	for _, m := range sampleMessages() {
		stream, _ = AppendMessage(stream, m, 0)
	}
	f.Add(stream, uint16(4096))
	f.Add(stream[:len(stream)-3], uint16(0))
	f.Add([]byte{0, 0, 0, 0, 1}, uint16(10))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, uint16(10))
	f.Fuzz(func(t *testing.T, data []byte, maxFrame uint16) {
		limit := int(maxFrame)
		if limit == 0 {
			limit = DefaultMaxFrame
		}
		fr := NewFrameReader(bytes.NewReader(data), int(maxFrame))
		// The same stream a byte per read: the same frames and end.
		slow := NewFrameReader(iotest.OneByteReader(bytes.NewReader(data)), int(maxFrame))
		var again []byte
		for {
			ft, body, err := fr.Next()
			sft, sbody, serr := slow.Next()
			if ft != sft || !bytes.Equal(body, sbody) || (err == nil) != (serr == nil) || err != nil && !errors.Is(serr, errors.Unwrap(err)) && serr != err {
				t.Fatalf("one byte per read: %v %q %v, want %v %q %v", sft, sbody, serr, ft, body, err)
			}
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrShort) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("Next: unexpected error %v", err)
				}
				if err == io.EOF && len(again) != len(data) {
					t.Fatalf("io.EOF after %d of %d bytes", len(again), len(data))
				}
				break
			}
			if 1+len(body) > limit {
				t.Fatalf("frame of %d bytes over the limit %d", 1+len(body), limit)
			}
			if again, err = AppendFrame(again, ft, body, limit); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, again) {
				t.Fatalf("frames read do not re-encode to the input")
			}
		}
	})
}

// FuzzDecodeMessage decodes arbitrary frame bodies as every message type:
// what decodes re-encodes and decodes to the same message; a decoded Hello
// goes through VerifyHello.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := AppendMessage(nil, m, 0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(m.FrameType()), b[FrameHeaderLen:])
	}
	f.Add(byte(FrameHello), mustJSON(f, signedHello(f, time.Unix(1_700_000_000, 0))))
	f.Add(byte(FrameDelta), []byte(`{"toVersion":1,"upserts":[{"key":{"type":"a","id":"b"},"data":  [1, 2 ,{"x":null}]}]}`))
	f.Add(byte(0), []byte(`{}`))
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		m, err := DecodeMessage(FrameType(typ), body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("DecodeMessage: unexpected error %v", err)
			}
			return
		}
		if m.FrameType() != FrameType(typ) {
			t.Fatalf("decoded %T from a %v frame", m, FrameType(typ))
		}
		enc, err := AppendMessage(nil, m, 0)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := DecodeMessage(FrameType(typ), enc[FrameHeaderLen:])
		if err != nil {
			t.Fatalf("decode re-encoded %s: %v", enc[FrameHeaderLen:], err)
		}
		if d := cmp.Diff(m, m2, jsonOpts); d != "" {
			t.Fatalf("decode(encode(decode(b))) differs (-first +second):\n%s", d)
		}
		if h, ok := m.(*Hello); ok {
			err := VerifyHello(h, rawKey(h.HostID), time.Unix(h.Time, 0), time.Minute)
			if err == nil && !bytes.Equal(h.MAC, helloMAC(h, rawKey(h.HostID))) {
				t.Fatalf("VerifyHello accepted a wrong MAC")
			}
			if err != nil && !errors.Is(err, ErrAuth) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrStale) {
				t.Fatalf("VerifyHello: unexpected error %v", err)
			}
		}
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzMessageRoundTrip builds messages of every type from the input and
// sends them through the frame encoder, the frame reader and the decoder.
func FuzzMessageRoundTrip(f *testing.F) {
	for i := range 6 {
		f.Add([]byte{byte(i)})
		f.Add(append([]byte{byte(i)}, bytes.Repeat([]byte{byte(i * 37)}, 120)...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		src := fuzzSource{data}
		var want []Message
		var stream []byte
		for len(want) == 0 || len(src.b) > 0 && len(want) < 8 {
			m := src.message()
			var err error
			if stream, err = AppendMessage(stream, m, 0); err != nil {
				t.Fatalf("encode %+v: %v", m, err)
			}
			want = append(want, m)
		}
		fr := NewFrameReader(bytes.NewReader(stream), 0)
		var got []Message
		for {
			ft, body, err := fr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("read frame %d: %v", len(got), err)
			}
			m, err := DecodeMessage(ft, body)
			if err != nil {
				t.Fatalf("decode frame %d %s: %v", len(got), body, err)
			}
			got = append(got, m)
		}
		if d := cmp.Diff(want, got, jsonOpts); d != "" {
			t.Fatalf("round trip (-want +got):\n%s", d)
		}
	})
}

// FuzzHello signs structured Hellos: each verifies (also after a JSON round
// trip), and changing any field, the key or the MAC fails with ErrAuth.
func FuzzHello(f *testing.F) {
	f.Add([]byte("h1"), uint32(1), uint64(0), int64(1_700_000_000), uint8(0))
	f.Add([]byte("node-17.rack-3"), uint32(17), uint64(1<<40), int64(-1), uint8(3))
	f.Add([]byte{}, uint32(0), ^uint64(0), int64(1<<62), uint8(6))
	f.Fuzz(func(t *testing.T, data []byte, hostID uint32, view uint64, ts int64, which uint8) {
		src := fuzzSource{data}
		h := &Hello{Host: "h" + src.str(32), HostID: hostID, AgentVersion: src.str(8), ViewVersion: view,
			Nonce: src.bytes(MinNonceLen + src.intn(MaxNonceLen-MinNonceLen+1)), Time: ts}
		key := rawKey(hostID)
		if err := SignHello(h, key); err != nil {
			t.Fatal(err)
		}
		now := time.Unix(ts, 0)
		if err := VerifyHello(h, key, now, time.Second); err != nil {
			t.Fatalf("VerifyHello of a signed hello: %v", err)
		}
		enc, err := AppendMessage(nil, h, 0)
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeMessage(FrameHello, enc[FrameHeaderLen:])
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyHello(m.(*Hello), key, now, time.Second); err != nil {
			t.Fatalf("VerifyHello after a JSON round trip: %v", err)
		}
		bad := *h
		bad.Nonce = bytes.Clone(h.Nonce)
		bad.MAC = bytes.Clone(h.MAC)
		badKey := key
		switch which % 9 {
		case 0:
			bad.Host += "x"
		case 1:
			bad.HostID++
		case 2:
			bad.AgentVersion += "x"
		case 3:
			bad.ViewVersion++
		case 4:
			bad.Nonce[len(bad.Nonce)-1] ^= 1
		case 5:
			bad.Time++
			now = now.Add(time.Second) // still fresh: only the MAC can refuse it
		case 6:
			bad.MAC[int(which)%len(bad.MAC)] ^= 0x40
		case 7:
			badKey = rawKey(hostID + 1)
		case 8:
			bad.MAC = bad.MAC[:len(bad.MAC)-1]
		}
		if err := VerifyHello(&bad, badKey, now, time.Second); !errors.Is(err, ErrAuth) {
			t.Fatalf("VerifyHello with change %d: err = %v, want ErrAuth", which%9, err)
		}
		if !utf8.ValidString(h.Host) {
			t.Fatalf("generator produced invalid UTF-8")
		}
	})
}

// fastDecodeSeeds are bodies at the edges of the fast decoder's plain form.
var fastDecodeSeeds = []string{
	`{"fromVersion":1,"toVersion":2,"snapshot":true,"more":false,"upserts":[{"key":{"type":"a","id":"b"},"data":{"x":[1,-2.5e+3,"\u00e9\n",true,false,null]}}],"deletes":[{"type":"c","id":"d"}],"viewHash":"AAECAwQFBgcICQoLDA0ODw=="}`,
	` { "toVersion" : 18446744073709551615 , "upserts" : [ ] , "deletes" : [ ] , "viewHash" : "" } `,
	`{"toVersion":18446744073709551616}`,
	`{"toVersion":1,"ToVersion":2}`,
	`{"toVersion":1,"toVersion":2}`,
	`{"toVersion":01}`,
	`{"toVersion":1.0}`,
	`{"toVersion":1e2}`,
	`{"toVersion":-0}`,
	`{"toVersion":null}`,
	`{"snapshot":truex}`,
	`{"upserts":[{"key":{"type":"a","id":"b"}},{"key":{"type":"a","id":"c"},"data":null}]}`,
	`{"upserts":[{"key":{"type":"a","id":"b"}}],"upserts":[{"key":{"id":"c"}}]}`,
	`{"upserts":null}`,
	`{"upserts":[{"key":{"type":"\u0061","id":"b"}}]}`,
	`{"upserts":[{"key":{"type":"é","id":"b\xff"}}]}`,
	`{"upserts":[{"KEY":{"type":"a","id":"b"}}]}`,
	`{"ſnapshot":true}`,
	`{"unknown":{"a":[1,{"b":"\\"}],"c":"\ud800"},"version":3}`,
	`{"viewHash":"AA=A"}`,
	`{"viewHash":[1,2]}`,
	`{"data":"x"}`,
	`{"toVersion":1}x`,
	`null`,
	`{"version":42}`,
	`{"Version":42}`,
	`[{"version":42}]`,
	`{"version":"42"}`,
	`{"version":42,"error":"program datapath: boom"}`,
	`{"version":42,"error":"a \"quoted\" reason"}`,
	`{"version":42,"error":null}`,
	`{"version":42,"Error":"x","error":"y"}`,
	`{"version":42,"error":"é\xff"}`,
}

// FuzzFastDecode checks the one-pass decoder of Delta and Ack bodies
// against json.Unmarshal: whenever it decodes a body, json.Unmarshal
// decodes it without error to exactly the same value.
func FuzzFastDecode(f *testing.F) {
	for _, m := range []Message{sampleMessages()["delta"], sampleMessages()["ack"], sampleMessages()["ack with a programming error"], snapshotDelta(f)} {
		b, err := AppendMessage(nil, m, 0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[FrameHeaderLen:])
	}
	for _, s := range fastDecodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var wantD, gotD Delta
		errD := json.Unmarshal(body, &wantD)
		if fastDecodeDelta(body, &gotD) {
			if errD != nil {
				t.Fatalf("fast decoder took %q as a Delta, json.Unmarshal fails: %v", body, errD)
			}
			if d := cmp.Diff(wantD, gotD); d != "" {
				t.Fatalf("Delta from %q (-json.Unmarshal +fast):\n%s", body, d)
			}
		}
		var wantA, gotA Ack
		errA := json.Unmarshal(body, &wantA)
		if fastDecodeAck(body, &gotA) {
			if errA != nil {
				t.Fatalf("fast decoder took %q as an Ack, json.Unmarshal fails: %v", body, errA)
			}
			if wantA != gotA {
				t.Fatalf("Ack from %q: json.Unmarshal %+v, fast %+v", body, wantA, gotA)
			}
		}
	})
}
