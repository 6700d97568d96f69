package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/weftnet/weft/wire"
)

func res(typ, id, data string) wire.Resource {
	return wire.Resource{Key: wire.ResourceKey{Type: typ, ID: id}, Data: json.RawMessage(data)}
}

func key(typ, id string) wire.ResourceKey { return wire.ResourceKey{Type: typ, ID: id} }

// dump prints a view as comparable text.
func dump(v *View) []string {
	out := []string{v.Host + " id=" + itoa(uint64(v.HostID)) + " v=" + itoa(v.Version)}
	for _, r := range v.Resources() {
		out = append(out, r.Key.String()+" "+string(r.Data))
	}
	return out
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func TestApply(t *testing.T) {
	base, err := New("h1").Apply(&wire.Delta{ToVersion: 3, Snapshot: true, Upserts: []wire.Resource{
		res("vpc", "acme/main", `{"vni":1}`), res("endpoint", "acme/a", `{"ip":"10.0.0.2"}`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		frames  []*wire.Delta
		want    []string
		wantErr bool
	}{
		{
			name:   "delta upserts and deletes",
			frames: []*wire.Delta{{FromVersion: 3, ToVersion: 4, Upserts: []wire.Resource{res("endpoint", "acme/b", `{"ip":"10.0.0.3"}`)}, Deletes: []wire.ResourceKey{key("endpoint", "acme/a")}}},
			want:   []string{"h1 id=0 v=4", `endpoint/acme/b {"ip":"10.0.0.3"}`, `vpc/acme/main {"vni":1}`},
		},
		{
			name:   "snapshot replaces",
			frames: []*wire.Delta{{ToVersion: 9, Snapshot: true, Upserts: []wire.Resource{res("host", "h1", `{}`)}}},
			want:   []string{"h1 id=0 v=9", `host/h1 {}`},
		},
		{
			name: "multi-frame delta applies every frame in order",
			frames: []*wire.Delta{
				{FromVersion: 3, ToVersion: 5, More: true, Upserts: []wire.Resource{res("endpoint", "acme/a", `{"ip":"10.0.0.9"}`)}},
				{FromVersion: 3, ToVersion: 5, Deletes: []wire.ResourceKey{key("vpc", "acme/main")}, Upserts: []wire.Resource{res("vpc", "acme/other", `{"vni":2}`)}},
			},
			want: []string{"h1 id=0 v=5", `endpoint/acme/a {"ip":"10.0.0.9"}`, `vpc/acme/other {"vni":2}`},
		},
		{
			name: "multi-frame snapshot",
			frames: []*wire.Delta{
				{ToVersion: 7, Snapshot: true, More: true, Upserts: []wire.Resource{res("vpc", "x/y", `1`)}},
				{ToVersion: 7, Snapshot: true, Upserts: []wire.Resource{res("vpc", "x/z", `2`)}},
			},
			want: []string{"h1 id=0 v=7", `vpc/x/y 1`, `vpc/x/z 2`},
		},
		{
			name:    "frames with different versions",
			frames:  []*wire.Delta{{FromVersion: 3, ToVersion: 5, More: true}, {FromVersion: 3, ToVersion: 6}},
			wantErr: true,
		},
		{
			name:    "last frame with More",
			frames:  []*wire.Delta{{FromVersion: 3, ToVersion: 5, More: true}},
			wantErr: true,
		},
		{
			name:    "empty key",
			frames:  []*wire.Delta{{FromVersion: 3, ToVersion: 4, Upserts: []wire.Resource{res("", "x", `1`)}}},
			wantErr: true,
		},
		{name: "no frames", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := dump(base)
			got, err := base.Apply(tc.frames...)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Apply succeeded with %v, want an error", dump(got))
				}
			} else if err != nil {
				t.Fatal(err)
			} else if diff := cmp.Diff(tc.want, dump(got)); diff != "" {
				t.Errorf("view after Apply (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, dump(base)); diff != "" {
				t.Errorf("Apply changed its receiver (-before +after):\n%s", diff)
			}
		})
	}
}

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := Load(dir); !errors.Is(err, ErrNoView) {
		t.Fatalf("Load of an empty directory = %v, want ErrNoView", err)
	}
	v, err := New("h1").WithHostID(42).Apply(&wire.Delta{ToVersion: 12, Snapshot: true, Upserts: []wire.Resource{
		res("vpc", "acme/main", `{"vni":1}`), res("host", "h1", `{"name":"h1"}`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(dump(v), dump(got)); diff != "" {
		t.Errorf("loaded view (-saved +loaded):\n%s", diff)
	}
	if !bytes.Equal(got.Hash(), v.Hash()) {
		t.Errorf("loaded view hash %x, saved %x", got.Hash(), v.Hash())
	}
	// Save again over the old file: no temporary file stays behind.
	next, err := got.Apply(&wire.Delta{FromVersion: 12, ToVersion: 13, Deletes: []wire.ResourceKey{key("vpc", "acme/main")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Save(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{FileName}, names); diff != "" {
		t.Errorf("files in the state directory (-want +got):\n%s", diff)
	}
	got, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"h1 id=42 v=13", `host/h1 {"name":"h1"}`}, dump(got)); diff != "" {
		t.Errorf("reloaded view (-want +got):\n%s", diff)
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"not json", `{"format":1,`},
		{"wrong format", `{"format":2,"host":"h1","version":1,"resources":[]}`},
		{"no host", `{"format":1,"version":1,"resources":[]}`},
		{"duplicate resource", `{"format":1,"host":"h1","version":1,"resources":[{"key":{"type":"vpc","id":"a/b"}},{"key":{"type":"vpc","id":"a/b"}}]}`},
		{"empty key", `{"format":1,"host":"h1","version":1,"resources":[{"key":{"type":"","id":"a/b"}}]}`},
		{"trailing data", `{"format":1,"host":"h1","version":1,"resources":[]} {}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			v, err := Load(dir)
			if err == nil || errors.Is(err, ErrNoView) {
				t.Fatalf("Load = %v, %v; want a decode error", v, err)
			}
		})
	}
}

// TestHash checks that a view's hash is the hash of its resources, as the
// controller computes it, however the view was reached.
func TestHash(t *testing.T) {
	a, b := res("endpoint", "acme/a", `{"ip":"10.0.0.2"}`), res("vpc", "acme/main", `{"vni":1}`)
	if got, want := New("h1").Hash(), wire.ViewHash(nil); !bytes.Equal(got, want) {
		t.Errorf("empty view hash %x, want %x", got, want)
	}
	snap, err := New("h1").Apply(&wire.Delta{ToVersion: 3, Snapshot: true, Upserts: []wire.Resource{b, a}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := snap.Hash(), wire.ViewHash([]wire.Resource{a, b}); !bytes.Equal(got, want) {
		t.Errorf("snapshot hash %x, want %x", got, want)
	}
	// The same set reached by deltas hashes the same.
	v, err := New("h1").Apply(&wire.Delta{ToVersion: 1, Snapshot: true, Upserts: []wire.Resource{res("qos", "acme/q", `{}`), a}})
	if err != nil {
		t.Fatal(err)
	}
	if v, err = v.Apply(&wire.Delta{FromVersion: 1, ToVersion: 2, Upserts: []wire.Resource{b}, Deletes: []wire.ResourceKey{key("qos", "acme/q")}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Hash(), snap.Hash()) {
		t.Errorf("hash after deltas %x, after snapshot %x", v.Hash(), snap.Hash())
	}
	if bytes.Equal(v.WithHostID(9).Hash(), New("h1").Hash()) || !bytes.Equal(v.WithHostID(9).Hash(), v.Hash()) {
		t.Error("WithHostID changed the hash")
	}
}

// TestApplyLikeAMap replays random deltas and snapshots, single- and
// multi-frame, against a map that applies each frame's Deletes, then its
// Upserts, in order: the view holds what the map holds, sorted, with the
// map's hash, and Apply never changes its receiver.
func TestApplyLikeAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []wire.ResourceKey{key("endpoint", "a/1"), key("endpoint", "a/2"), key("endpoint", "b/1"),
		key("host", "h1"), key("qos", "a/q"), key("vpc", "a/main"), key("vpc", "b/main")}
	randKey := func() wire.ResourceKey { return keys[rng.IntN(len(keys))] }
	v, want := New("h1"), map[wire.ResourceKey]wire.Resource{}
	for step := range 2000 {
		snapshot := rng.IntN(5) == 0
		frames := make([]*wire.Delta, 1+rng.IntN(3))
		next := maps.Clone(want)
		if snapshot {
			next = map[wire.ResourceKey]wire.Resource{}
		}
		for i := range frames {
			f := &wire.Delta{FromVersion: v.Version, ToVersion: v.Version + 1, Snapshot: snapshot, More: i < len(frames)-1}
			for range rng.IntN(3) {
				k := randKey()
				f.Deletes = append(f.Deletes, k)
				delete(next, k)
			}
			for range rng.IntN(5) {
				r := wire.Resource{Key: randKey(), Data: json.RawMessage(itoa(uint64(step)))}
				f.Upserts = append(f.Upserts, r)
				next[r.Key] = r
			}
			frames[i] = f
		}
		before := dump(v)
		got, err := v.Apply(frames...)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, dump(v)); diff != "" {
			t.Fatalf("step %d: Apply changed its receiver (-before +after):\n%s", step, diff)
		}
		wantRes := slices.SortedFunc(maps.Values(next), compareResources)
		if diff := cmp.Diff(wantRes, got.Resources(), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("step %d: resources after %d frames (snapshot %v) (-map +view):\n%s", step, len(frames), snapshot, diff)
		}
		if !bytes.Equal(got.Hash(), wire.ViewHash(wantRes)) {
			t.Fatalf("step %d: hash %x, want %x", step, got.Hash(), wire.ViewHash(wantRes))
		}
		for _, k := range keys {
			r, ok := got.Get(k)
			if w, wok := next[k]; ok != wok || !bytes.Equal(r.Data, w.Data) {
				t.Fatalf("step %d: Get(%s) = %s, %v; want %s, %v", step, k, r.Data, ok, w.Data, wok)
			}
		}
		if got.Len() != len(next) {
			t.Fatalf("step %d: Len %d, want %d", step, got.Len(), len(next))
		}
		v, want = got, next
	}
}
