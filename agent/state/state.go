package state

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"

	"github.com/weftnet/weft/wire"
)

// FileName is the name of the view file in the state directory.
const FileName = "view.json"

// formatVersion is the version of the file format.
const formatVersion = 1

// ErrNoView is returned by Load when the directory holds no view.
var ErrNoView = errors.New("state: no persisted view")

// View is the view of one host at one version. Treat it as immutable: Apply
// returns a new View and never changes its receiver.
type View struct {
	// Host is the host's name.
	Host string
	// HostID is the host's number on the UDP channel (0 if unknown).
	HostID uint32
	// Version is the view version, as numbered by the controller (0: none).
	Version uint64
	// resources sorted by key (compareKeys), one per key. A sorted slice
	// costs a third of a map's memory, is the order the controller sends
	// and the view hash needs, and views are small: a lookup is a binary
	// search.
	resources []wire.Resource
	// hash is wire.ViewHash of the resources.
	hash []byte
}

// emptyHash is the hash of a view without resources.
var emptyHash = wire.ViewHash(nil)

// New returns an empty view (version 0) of a host.
func New(host string) *View {
	return &View{Host: host, hash: emptyHash}
}

// compareKeys orders resources by type, then ID.
func compareKeys(a, b wire.ResourceKey) int {
	return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.ID, b.ID))
}

func compareResources(a, b wire.Resource) int { return compareKeys(a.Key, b.Key) }

// Hash returns wire.ViewHash of the view's resources; the caller must not
// modify it.
func (v *View) Hash() []byte { return v.hash }

// Len returns the number of resources.
func (v *View) Len() int { return len(v.resources) }

// Get returns the resource with key k.
func (v *View) Get(k wire.ResourceKey) (wire.Resource, bool) {
	i, ok := slices.BinarySearchFunc(v.resources, k, func(r wire.Resource, k wire.ResourceKey) int { return compareKeys(r.Key, k) })
	if !ok {
		return wire.Resource{}, false
	}
	return v.resources[i], true
}

// Resources returns the resources sorted by type, then ID.
func (v *View) Resources() []wire.Resource { return slices.Clone(v.resources) }

// All returns an iterator over the resources, sorted by type, then ID,
// without copying them. The caller must not modify their Data.
func (v *View) All() iter.Seq[wire.Resource] {
	return func(yield func(wire.Resource) bool) {
		for _, r := range v.resources {
			if !yield(r) {
				return
			}
		}
	}
}

// WithHostID returns v with HostID set (v itself if it already has it).
func (v *View) WithHostID(id uint32) *View {
	if v.HostID == id {
		return v
	}
	n := *v
	n.HostID = id
	return &n
}

// Apply returns the view that results from applying the frames of one
// delta, in order. The frames are the parts of a multi-frame delta (all but
// the last with More set) and carry the same versions. If the first frame is
// a Snapshot the result holds only the resources of the frames; otherwise
// each frame's Deletes, then its Upserts, are applied to a copy of v. The
// result has the frames' ToVersion. Apply does not check FromVersion against
// v.Version: that is the caller's protocol decision.
func (v *View) Apply(frames ...*wire.Delta) (*View, error) {
	if len(frames) == 0 {
		return nil, errors.New("state: apply: no frames")
	}
	first := frames[0]
	nops := 0
	for i, f := range frames {
		if f.FromVersion != first.FromVersion || f.ToVersion != first.ToVersion || f.Snapshot != first.Snapshot {
			return nil, fmt.Errorf("state: apply: frame %d is delta %d→%d (snapshot %v), frame 0 is %d→%d (snapshot %v)",
				i, f.FromVersion, f.ToVersion, f.Snapshot, first.FromVersion, first.ToVersion, first.Snapshot)
		}
		if f.More != (i < len(frames)-1) {
			return nil, fmt.Errorf("state: apply: delta %d→%d: frame %d of %d has More=%v", f.FromVersion, f.ToVersion, i, len(frames), f.More)
		}
	}
	for _, f := range frames {
		for _, r := range f.Upserts {
			if r.Key.Type == "" || r.Key.ID == "" {
				return nil, fmt.Errorf("state: apply delta to version %d: resource %q has an empty type or id", f.ToVersion, r.Key)
			}
		}
		nops += len(f.Deletes) + len(f.Upserts)
	}
	n := &View{Host: v.Host, HostID: v.HostID, Version: first.ToVersion}
	var base []wire.Resource
	if !first.Snapshot {
		base = v.resources
	}
	if first.Snapshot && len(frames) == 1 && len(first.Deletes) == 0 && isStrictlySorted(first.Upserts) {
		// What a controller sends: one frame, sorted, no key twice.
		n.resources = slices.Clone(first.Upserts)
	} else {
		n.resources = merge(base, changes(frames, nops))
	}
	n.hash = wire.ViewHash(n.resources) // sorted already: the sort moves nothing
	return n, nil
}

func isStrictlySorted(rs []wire.Resource) bool {
	for i := 1; i < len(rs); i++ {
		if compareKeys(rs[i-1].Key, rs[i].Key) >= 0 {
			return false
		}
	}
	return true
}

// change is one word of a delta on one key: an upsert (r) or a delete,
// the seq-th of the delta.
type change struct {
	r   wire.Resource
	del bool
	seq int
}

// changes returns the net effect of the frames (each frame's Deletes,
// then its Upserts, in order) sorted by key, one change per key.
func changes(frames []*wire.Delta, n int) []change {
	cs := make([]change, 0, n)
	for _, f := range frames {
		for _, k := range f.Deletes {
			cs = append(cs, change{r: wire.Resource{Key: k}, del: true, seq: len(cs)})
		}
		for _, r := range f.Upserts {
			cs = append(cs, change{r: r, seq: len(cs)})
		}
	}
	// Of several changes to one key, the last in delta order wins.
	slices.SortFunc(cs, func(a, b change) int { return cmp.Or(compareKeys(a.r.Key, b.r.Key), cmp.Compare(a.seq, b.seq)) })
	out := cs[:0]
	for i, c := range cs {
		if i+1 < len(cs) && cs[i+1].r.Key == c.r.Key {
			continue
		}
		out = append(out, c)
	}
	return out
}

// merge applies sorted changes to sorted resources and returns the result
// in a new slice.
func merge(base []wire.Resource, cs []change) []wire.Resource {
	out := make([]wire.Resource, 0, len(base)+len(cs))
	i := 0
	for _, c := range cs {
		for i < len(base) && compareKeys(base[i].Key, c.r.Key) < 0 {
			out = append(out, base[i])
			i++
		}
		if i < len(base) && base[i].Key == c.r.Key {
			i++ // replaced or deleted
		}
		if !c.del {
			out = append(out, c.r)
		}
	}
	return append(out, base[i:]...)
}

// file is the on-disk form of a View.
type file struct {
	Format    int             `json:"format"`
	Host      string          `json:"host"`
	HostID    uint32          `json:"hostID,omitempty"`
	Version   uint64          `json:"version"`
	Resources []wire.Resource `json:"resources"`
}

// Marshal returns the view's file form.
func (v *View) Marshal() ([]byte, error) {
	res := v.resources
	if res == nil {
		res = []wire.Resource{}
	}
	b, err := json.Marshal(file{Format: formatVersion, Host: v.Host, HostID: v.HostID, Version: v.Version, Resources: res})
	if err != nil {
		return nil, fmt.Errorf("state: encode view of %q at version %d: %w", v.Host, v.Version, err)
	}
	return b, nil
}

// Unmarshal parses a view file.
func Unmarshal(b []byte) (*View, error) {
	var f file
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("state: decode view: %w", err)
	}
	if dec.More() {
		return nil, errors.New("state: decode view: trailing data after the view")
	}
	if f.Format != formatVersion {
		return nil, fmt.Errorf("state: decode view: format %d, want %d", f.Format, formatVersion)
	}
	if f.Host == "" {
		return nil, errors.New("state: decode view: empty host")
	}
	v := New(f.Host)
	v.HostID, v.Version = f.HostID, f.Version
	seen := make(map[wire.ResourceKey]bool, len(f.Resources))
	for i, r := range f.Resources {
		if r.Key.Type == "" || r.Key.ID == "" {
			return nil, fmt.Errorf("state: decode view: resource %d: empty type or id", i)
		}
		if seen[r.Key] {
			return nil, fmt.Errorf("state: decode view: duplicate resource %s", r.Key)
		}
		seen[r.Key] = true
	}
	slices.SortFunc(f.Resources, compareResources) // Marshal wrote them sorted
	if len(f.Resources) > 0 {
		v.resources = f.Resources
	}
	v.hash = wire.ViewHash(v.resources)
	return v, nil
}

// Save writes the view to dir/FileName atomically, creating dir (0700) if
// needed.
func (v *View) Save(dir string) (err error) {
	b, err := v.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state: save view: %w", err)
	}
	tmp, err := os.CreateTemp(dir, FileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("state: save view: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("state: save view: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("state: save view: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state: save view: close %s: %w", tmp.Name(), err)
	}
	path := filepath.Join(dir, FileName)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state: save view: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("state: save view: fsync directory %s: %w", dir, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Load reads the view saved in dir. It returns ErrNoView if there is none.
func Load(dir string) (*View, error) {
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoView
	}
	if err != nil {
		return nil, fmt.Errorf("state: load view: %w", err)
	}
	v, err := Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("state: load %s: %w", path, err)
	}
	return v, nil
}
