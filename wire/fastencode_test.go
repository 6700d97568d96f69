package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
)

// jsonFrame is AppendMessage's frame of m as encoding/json alone writes
// it (the encoder before the Delta fast path), or its error.
func jsonFrame(m Message) ([]byte, error) {
	var w appendWriter
	enc := json.NewEncoder(&w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(w.b, []byte("\n")), nil
}

func TestAppendDeltaJSON(t *testing.T) {
	for name, d := range map[string]*Delta{
		"snapshot":      snapshotDelta(t),
		"empty":         {FromVersion: 3, ToVersion: 3},
		"empty upserts": {ToVersion: 1, Snapshot: true, Upserts: []Resource{}},
		"more, deletes": {FromVersion: 1, ToVersion: 9, More: true, Deletes: []ResourceKey{{Type: "endpoint", ID: "t/a"}, {Type: "policy", ID: "t/p"}}},
		"no data":       {ToVersion: 2, Upserts: []Resource{{Key: ResourceKey{Type: "host", ID: "h"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := jsonFrame(d)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := appendDeltaJSON(nil, d)
			if !ok {
				t.Fatal("fast encoder gave up")
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("fast encoder wrote\n%s\nencoding/json\n%s", got, want)
			}
		})
	}
	// What the fast path must leave to encoding/json (which compacts,
	// escapes or refuses): AppendMessage writes encoding/json's bytes or
	// error.
	for name, r := range map[string]Resource{
		"spaces":        {Key: ResourceKey{Type: "vpc", ID: "t/v"}, Data: json.RawMessage(`{ "a": [1, 2] }`)},
		"invalid":       {Key: ResourceKey{Type: "vpc", ID: "t/v"}, Data: json.RawMessage(`{"a":`)},
		"two values":    {Key: ResourceKey{Type: "vpc", ID: "t/v"}, Data: json.RawMessage(`{}{}`)},
		"escaped key":   {Key: ResourceKey{Type: "vpc", ID: "t/\"v\""}, Data: json.RawMessage(`{}`)},
		"non-ASCII key": {Key: ResourceKey{Type: "vpc", ID: "t/vé"}, Data: json.RawMessage(`{}`)},
		"html":          {Key: ResourceKey{Type: "vpc", ID: "t/<v>&"}, Data: json.RawMessage(`{"s":"<&> \u2028"}`)},
		"escapes":       {Key: ResourceKey{Type: "vpc", ID: "t/v"}, Data: json.RawMessage(`{"s":"a \" b\\"}`)},
	} {
		t.Run(name, func(t *testing.T) {
			d := &Delta{ToVersion: 1, Snapshot: true, Upserts: []Resource{r}}
			want, werr := jsonFrame(d)
			got, gerr := AppendMessage(nil, d, 0)
			if (werr != nil) != (gerr != nil) {
				t.Fatalf("encoding/json error %v, AppendMessage error %v", werr, gerr)
			}
			if gerr == nil && !bytes.Equal(got[FrameHeaderLen:], want) {
				t.Fatalf("AppendMessage wrote\n%s\nencoding/json\n%s", got[FrameHeaderLen:], want)
			}
		})
	}
}

// FuzzAppendDelta checks that a Delta's frame is encoding/json's, byte
// for byte, whatever its keys and data.
func FuzzAppendDelta(f *testing.F) {
	f.Add("policy", "t0/sp1", []byte(`{"tenant":"t0","name":"sp1","ingress":[{"name":"t0/sp1 ingress[0]"}],"applies":["t0/e1"]}`), uint64(7), true, []byte{1, 2, 3})
	f.Add("vpc", "t/v", []byte(` {"a":1}`), uint64(0), false, []byte(nil))
	f.Add("x", "\u2028", []byte(`"\u00e9\\"`), uint64(1), false, []byte{})
	f.Add("", "", []byte(`[1,2.5e3,-0,true,false,null,{"":""}]`), uint64(1<<63), true, []byte{0})
	f.Fuzz(func(t *testing.T, typ, id string, data []byte, ver uint64, more bool, hash []byte) {
		d := &Delta{FromVersion: ver / 2, ToVersion: ver, More: more, ViewHash: hash,
			Upserts: []Resource{{Key: ResourceKey{Type: typ, ID: id}, Data: data}, {Key: ResourceKey{Type: id, ID: typ}}},
			Deletes: []ResourceKey{{Type: typ, ID: id}}}
		want, werr := jsonFrame(d)
		if got, ok := appendDeltaJSON(nil, d); ok {
			if werr != nil {
				t.Fatalf("fast encoder took %+v, encoding/json fails: %v", d, werr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("fast encoder wrote\n%q\nencoding/json\n%q", got, want)
			}
		}
		// The data split into Data and Tail anywhere: the same frame, or
		// the same failure, and the same hash.
		cut := int(ver % uint64(len(data)+1))
		split := *d
		split.Upserts = slices.Clone(d.Upserts)
		split.Upserts[0].Data, split.Upserts[0].Tail = data[:cut:cut], data[cut:]
		for _, compact := range []bool{false, true} {
			if compact && werr != nil {
				continue // the sender vouches for the data: only valid data
			}
			d.CompactData, split.CompactData = compact, compact
			whole, err := AppendMessage(nil, d, 0)
			got, serr := AppendMessage(nil, &split, 0)
			if (err == nil) != (serr == nil) || !bytes.Equal(got, whole) {
				t.Fatalf("compact %v: with data %q and tail %q the frame is %q (%v), whole %q (%v)",
					compact, data[:cut], data[cut:], got, serr, whole, err)
			}
		}
		if h, hs := ViewHash(slices.Clone(d.Upserts)), ViewHash(slices.Clone(split.Upserts)); !bytes.Equal(h, hs) {
			t.Fatalf("view hash with a tail %x, whole %x", hs, h)
		}
	})
}

// BenchmarkAppendSnapshot: a controller's encoding of one host's snapshot
// (snapshotDelta: a host, a VPC, 10 endpoints and their policy) into a
// frame, in a buffer that starts small, as on a new connection.
func BenchmarkAppendSnapshot(b *testing.B) {
	for _, compact := range []bool{false, true} {
		b.Run(fmt.Sprintf("compactData=%v", compact), func(b *testing.B) {
			d := snapshotDelta(b)
			d.CompactData = compact
			b.ReportAllocs()
			for b.Loop() {
				if _, err := AppendMessage(make([]byte, 0, 512), d, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCompactDataUnchecked: with CompactData the encoder trusts the
// sender and copies data as it is; without, it checks it.
func TestCompactDataUnchecked(t *testing.T) {
	d := &Delta{ToVersion: 1, Snapshot: true, Upserts: []Resource{{Key: ResourceKey{Type: "vpc", ID: "t/v"}, Data: json.RawMessage(`{"a":1}`)}}}
	want, err := jsonFrame(d)
	if err != nil {
		t.Fatal(err)
	}
	d.CompactData = true
	if got, ok := appendDeltaJSON(nil, d); !ok || !bytes.Equal(got, want) {
		t.Fatalf("with CompactData: %q, %v; want %q", got, ok, want)
	}
	d.CompactData = false
	d.Upserts[0].Data = json.RawMessage(`{"a":`)
	if _, err := AppendMessage(nil, d, 0); err == nil {
		t.Fatal("AppendMessage of invalid data without CompactData succeeded")
	}
}

// TestResourceTail checks that a resource whose JSON is Data followed by
// Tail is written, hashed and decoded as the one with the whole JSON in
// Data, by the fast encoder and by encoding/json (which the encoder falls
// back to when it cannot vouch for the data, and for a key it would
// have to escape).
func TestResourceTail(t *testing.T) {
	whole := []byte(`{"tenant":"t","name":"p","applies":["t/a","t/b"]}`)
	cut := bytes.Index(whole, []byte(`"applies"`))
	for _, tc := range []struct {
		name    string
		compact bool
		key     ResourceKey
	}{
		{"compact", true, ResourceKey{Type: "policy", ID: "t/p"}},
		{"checked", false, ResourceKey{Type: "policy", ID: "t/p"}},
		{"escaped key", true, ResourceKey{Type: "policy", ID: "t/\"p\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			split := &Delta{ToVersion: 4, Snapshot: true, CompactData: tc.compact, Upserts: []Resource{
				{Key: ResourceKey{Type: "host", ID: "h"}, Data: []byte(`{"name":"h"}`)},
				{Key: tc.key, Data: whole[:cut:cut], Tail: whole[cut:]},
			}}
			one := &Delta{ToVersion: 4, Snapshot: true, CompactData: tc.compact, Upserts: []Resource{
				{Key: ResourceKey{Type: "host", ID: "h"}, Data: []byte(`{"name":"h"}`)},
				{Key: tc.key, Data: whole},
			}}
			if got, want := ViewHash(split.Upserts), ViewHash(one.Upserts); !bytes.Equal(got, want) {
				t.Errorf("ViewHash with a tail %x, without %x", got, want)
			}
			got, err := AppendMessage(nil, split, 0)
			if err != nil {
				t.Fatal(err)
			}
			want, err := AppendMessage(nil, one, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("with a tail the frame is\n%s\nwithout\n%s", got, want)
			}
			if n := deltaFrameSize(split); n < len(got)+SealOverhead {
				t.Errorf("deltaFrameSize %d < frame %d + seal", n, len(got))
			}
			m, err := DecodeMessage(FrameDelta, got[5:])
			if err != nil {
				t.Fatal(err)
			}
			r := m.(*Delta).Upserts[1]
			if !bytes.Equal(r.Data, whole) || r.Tail != nil || !bytes.Equal(r.Bytes(), whole) {
				t.Errorf("decoded resource data %q tail %q, want %q and none", r.Data, r.Tail, whole)
			}
			if !bytes.Equal(split.Upserts[1].Data, whole[:cut]) {
				t.Errorf("encoding changed the sender's resource: data %q", split.Upserts[1].Data)
			}
		})
	}
}
