package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/wire"
)

// FuzzUnmarshal decodes arbitrary view files: what decodes holds its
// resources sorted, one per key, with the hash of them, and survives
// Marshal and Unmarshal unchanged.
func FuzzUnmarshal(f *testing.F) {
	v, err := New("h1").Apply(&wire.Delta{ToVersion: 7, Snapshot: true, Upserts: []wire.Resource{
		{Key: wire.ResourceKey{Type: "vpc", ID: "acme/main"}, Data: json.RawMessage(`{"vni":100}`)},
		{Key: wire.ResourceKey{Type: "endpoint", ID: "acme/web"}, Data: json.RawMessage(`{"ip":"10.0.1.10"}`)},
	}})
	if err != nil {
		f.Fatal(err)
	}
	b, err := v.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"format":1,"host":"h","resources":[{"key":{"type":"a","id":"b"}},{"key":{"type":"a","id":"b"}}]}`))
	f.Add([]byte(`{"format":1,"host":"h","resources":null} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Unmarshal(data)
		if err != nil {
			return
		}
		checkView(t, v)
		b, err := v.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a decoded view: %v", err)
		}
		v2, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("Unmarshal of %s: %v", b, err)
		}
		checkView(t, v2)
		b2, err := v2.Marshal()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("a second round trip changed the file:\n%s\n%s (%v)", b, b2, err)
		}
		if v2.Host != v.Host || v2.HostID != v.HostID || v2.Version != v.Version || v2.Len() != v.Len() {
			t.Fatalf("round trip: %s/%d/%d/%d resources, want %s/%d/%d/%d",
				v2.Host, v2.HostID, v2.Version, v2.Len(), v.Host, v.HostID, v.Version, v.Len())
		}
	})
}

// checkView checks a view's invariants: resources strictly sorted by key,
// none with an empty type or ID, and the hash of them.
func checkView(t *testing.T, v *View) {
	t.Helper()
	rs := v.Resources()
	for i, r := range rs {
		if r.Key.Type == "" || r.Key.ID == "" {
			t.Fatalf("resource %d has an empty key: %v", i, r.Key)
		}
		if i > 0 && compareKeys(rs[i-1].Key, r.Key) >= 0 {
			t.Fatalf("resources %d and %d out of order: %v, %v", i-1, i, rs[i-1].Key, r.Key)
		}
	}
	if !bytes.Equal(v.Hash(), wire.ViewHash(rs)) {
		t.Fatalf("hash %x, want %x", v.Hash(), wire.ViewHash(rs))
	}
}

// deltaSource builds deltas from fuzz input: a few resource types and IDs,
// so that keys repeat within and across frames.
type deltaSource struct{ b []byte }

func (s *deltaSource) next() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *deltaSource) key() wire.ResourceKey {
	c := s.next()
	typ := []string{"endpoint", "vpc", "policy", ""}[c&3]
	id := []string{"acme/a", "acme/b", "globex/a", "x", "y", "z", "", "acme/c"}[c>>2&7]
	return wire.ResourceKey{Type: typ, ID: id}
}

// frames returns the frames of one delta.
func (s *deltaSource) frames(from, to uint64) []*wire.Delta {
	snapshot := s.next()&1 == 1
	n := 1 + int(s.next()%4)
	var out []*wire.Delta
	for i := range n {
		d := &wire.Delta{FromVersion: from, ToVersion: to, Snapshot: snapshot, More: i < n-1}
		for range s.next() % 5 {
			d.Upserts = append(d.Upserts, wire.Resource{Key: s.key(), Data: json.RawMessage(fmt.Sprint(s.next()))})
		}
		if !snapshot {
			for range s.next() % 4 {
				d.Deletes = append(d.Deletes, s.key())
			}
		}
		out = append(out, d)
	}
	if s.next()%16 == 0 { // now and then a frame that does not belong
		out[len(out)-1].More = !out[len(out)-1].More
	}
	return out
}

// FuzzApply applies deltas made from the input to a view and compares the
// result with a map that applies each frame's deletes, then its upserts:
// same resources, sorted, with their hash; a delta whose frames disagree
// or hold an empty key is refused and changes nothing.
func FuzzApply(f *testing.F) {
	f.Add([]byte{1, 2, 3, 0x11, 7, 0x22, 9, 2, 0x11, 0x13})
	f.Add([]byte{0, 3, 4, 0, 1, 4, 2, 8, 3, 5, 9, 12, 2, 0, 1, 2, 3})
	f.Add(bytes.Repeat([]byte{0x5a, 0x33, 0x0f}, 40))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &deltaSource{b: data}
		v := New("h1")
		model := map[wire.ResourceKey]string{}
		for version := uint64(1); len(src.b) > 0 && version < 20; version++ {
			frames := src.frames(v.Version, version)
			next, err := v.Apply(frames...)
			want := maps.Clone(model)
			valid := true
			if frames[0].Snapshot {
				want = map[wire.ResourceKey]string{}
			}
			for i, fr := range frames {
				valid = valid && fr.More == (i < len(frames)-1)
				for _, k := range fr.Deletes {
					delete(want, k)
				}
				for _, r := range fr.Upserts {
					valid = valid && r.Key.Type != "" && r.Key.ID != ""
					want[r.Key] = string(r.Data)
				}
			}
			if !valid {
				if err == nil {
					t.Fatalf("version %d: Apply took an invalid delta", version)
				}
				continue
			}
			if err != nil {
				t.Fatalf("version %d: Apply: %v", version, err)
			}
			checkView(t, next)
			got := map[wire.ResourceKey]string{}
			for _, r := range next.Resources() {
				got[r.Key] = string(r.Data)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("version %d (-model +view):\n%s", version, d)
			}
			if next.Version != version || len(v.Resources()) != len(model) {
				t.Fatalf("version %d: the result is at %d, or Apply changed its receiver", version, next.Version)
			}
			v, model = next, want
		}
	})
}
