package compile

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/wire"
)

const testEpoch = 7

// clockView is a hostView with its own version clock.
type clockView struct {
	hv    *hostView
	clock uint64
}

func newClockView() *clockView { return &clockView{hv: newHostView(makeVersion(testEpoch, 0))} }

// encodedOf is data, split into data and tail at a '|' if it has one.
func encodedOf(data string) encoded {
	d, t, _ := strings.Cut(data, "|")
	return encoded{data: []byte(d), tail: []byte(t)}
}

// set makes the view hold exactly res (key ID → data, see encodedOf) and
// returns its version.
func (cv *clockView) set(horizon int, res map[string]string) uint64 {
	next := map[wire.ResourceKey]encoded{}
	for id, data := range res {
		next[wire.ResourceKey{Type: "t", ID: id}] = encodedOf(data)
	}
	cv.hv.apply(next, func() uint64 { cv.clock++; return makeVersion(testEpoch, cv.clock) }, horizon)
	return cv.hv.version()
}

func ids(d wire.Delta) (up, del []string) {
	for _, r := range d.Upserts {
		up = append(up, r.Key.ID+"="+string(r.Bytes()))
	}
	for _, k := range d.Deletes {
		del = append(del, k.ID)
	}
	return up, del
}

func TestHostViewVersions(t *testing.T) {
	cv := newClockView()
	v1 := cv.set(10, map[string]string{"a": "1", "b": "1"})
	if v2 := cv.set(10, map[string]string{"a": "1", "b": "1"}); v2 != v1 {
		t.Fatalf("unchanged bytes moved the version from %d to %d", v1, v2)
	}
	v2 := cv.set(10, map[string]string{"a": "1", "b": "2", "c": "1"})
	v3 := cv.set(10, map[string]string{"a": "1", "c": "1"})
	v4 := cv.set(10, map[string]string{"a": "1", "c": "1", "b": "3"}) // b comes back: no tombstone for it
	tests := []struct {
		name         string
		from         uint64
		wantSnapshot bool
		wantUp       []string
		wantDel      []string
	}{
		{"from v1", v1, false, []string{"b=3", "c=1"}, nil},
		{"from v2", v2, false, []string{"b=3"}, nil},
		{"from v3", v3, false, []string{"b=3"}, nil},
		{"from v4", v4, false, nil, nil},
		{"from 0", 0, true, []string{"a=1", "b=3", "c=1"}, nil},
		{"from the future", v4 + 1, true, []string{"a=1", "b=3", "c=1"}, nil},
		{"from another epoch", makeVersion(testEpoch+1, 2), true, []string{"a=1", "b=3", "c=1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := cv.hv.delta(tt.from, nil, testEpoch, v4)
			if d.Snapshot != tt.wantSnapshot || d.ToVersion != v4 {
				t.Fatalf("snapshot %v to %d, want %v to %d", d.Snapshot, d.ToVersion, tt.wantSnapshot, v4)
			}
			up, del := ids(d)
			if diff := cmp.Diff(tt.wantUp, up); diff != "" {
				t.Errorf("upserts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantDel, del); diff != "" {
				t.Errorf("deletes (-want +got):\n%s", diff)
			}
		})
	}
	cv.set(10, map[string]string{"a": "1"})
	_, del := ids(cv.hv.delta(v4, nil, testEpoch, v4))
	if diff := cmp.Diff([]string{"b", "c"}, del); diff != "" {
		t.Errorf("deletes after v4 (-want +got):\n%s", diff)
	}
}

func TestHostViewHorizon(t *testing.T) {
	tests := []struct {
		name    string
		horizon int
		// steps: each is the full resource set of one version.
		steps []map[string]string
		// fromStep: the step whose version the agent holds; want a snapshot?
		fromStep     int
		wantSnapshot bool
		wantTombs    int
	}{
		{"within the horizon", 3, []map[string]string{
			{"a": "1", "b": "1", "c": "1"}, {"b": "1", "c": "1"}, {"c": "1"}, {"c": "2"},
		}, 0, false, 2},
		{"beyond the horizon", 2, []map[string]string{
			{"a": "1", "b": "1", "c": "1"}, {"b": "1", "c": "1"}, {"c": "1"}, {"c": "2"},
		}, 0, true, 1},
		{"beyond the horizon, held after the pruned delete", 2, []map[string]string{
			{"a": "1", "b": "1", "c": "1"}, {"b": "1", "c": "1"}, {"c": "1"}, {"c": "2"},
		}, 1, false, 1},
		{"too many tombstones at once", 2, []map[string]string{
			{"a": "1", "b": "1", "c": "1", "d": "1"}, {},
		}, 0, true, 2},
		{"no deletes: any old version gets a delta", 1, []map[string]string{
			{"a": "1"}, {"a": "2"}, {"a": "3"}, {"a": "4"},
		}, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cv := newClockView()
			var vers []uint64
			for _, s := range tt.steps {
				vers = append(vers, cv.set(tt.horizon, s))
			}
			d := cv.hv.delta(vers[tt.fromStep], nil, testEpoch, vers[len(vers)-1])
			if d.Snapshot != tt.wantSnapshot {
				t.Errorf("Snapshot = %v, want %v", d.Snapshot, tt.wantSnapshot)
			}
			if _, n := cv.hv.stats(); n != tt.wantTombs {
				t.Errorf("%d tombstones kept, want %d", n, tt.wantTombs)
			}
			if len(cv.hv.tombQ) > tt.horizon {
				t.Errorf("tombstone queue holds %d, more than the horizon %d", len(cv.hv.tombQ), tt.horizon)
			}
		})
	}
}

// TestHostViewResume covers an agent that connects to a replica holding
// a version the view may have no history for (another replica's, or from
// before this view was compiled): its view hash decides.
func TestHostViewResume(t *testing.T) {
	hashOf := func(res map[string]string) []byte {
		var rs []wire.Resource
		for id, data := range res {
			rs = append(rs, wire.Resource{Key: wire.ResourceKey{Type: "t", ID: id}, Data: []byte(data)})
		}
		return wire.ViewHash(rs)
	}
	cur := map[string]string{"a": "1", "b": "2"}
	// A view compiled at revision 100 (its floor), changed at 120.
	hv := newHostView(makeVersion(testEpoch, 0))
	hv.start(makeVersion(testEpoch, 100))
	next := func(res map[string]string) map[wire.ResourceKey]encoded {
		m := map[wire.ResourceKey]encoded{}
		for id, data := range res {
			m[wire.ResourceKey{Type: "t", ID: id}] = encodedOf(data)
		}
		return m
	}
	hv.apply(next(map[string]string{"a": "1"}), func() uint64 { return makeVersion(testEpoch, 100) }, 10)
	hv.apply(next(cur), func() uint64 { return makeVersion(testEpoch, 120) }, 10)
	v := func(rev uint64) uint64 { return makeVersion(testEpoch, rev) }
	applied := v(150)
	tests := []struct {
		name         string
		from         uint64
		hash         []byte
		wantSnapshot bool
		wantFrom     uint64
		wantTo       uint64
		wantUp       []string
	}{
		{"before the floor, same content", v(50), hashOf(cur), false, v(50), v(120), nil},
		{"before the floor, other content", v(50), hashOf(map[string]string{"a": "0"}), true, 0, v(120), []string{"a=1", "b=2"}},
		{"before the floor, hash unknown", v(50), nil, true, 0, v(120), []string{"a=1", "b=2"}},
		{"within history, behind", v(110), hashOf(map[string]string{"a": "1"}), false, v(110), v(120), []string{"b=2"}},
		{"within history, hash unknown", v(110), nil, false, v(110), v(120), []string{"b=2"}},
		{"current", v(120), hashOf(cur), false, v(120), v(120), nil},
		{"after the last change, same content", v(140), hashOf(cur), false, v(140), v(140), nil},
		{"after the last change, hash unknown", v(140), nil, false, v(140), v(140), nil},
		{"after the last change, other content", v(140), hashOf(map[string]string{"c": "9"}), true, 0, v(120), []string{"a=1", "b=2"}},
		{"beyond the revision applied", v(151), hashOf(cur), true, 0, v(120), []string{"a=1", "b=2"}},
		{"another cluster", makeVersion(testEpoch+1, 120), hashOf(cur), true, 0, v(120), []string{"a=1", "b=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := hv.delta(tt.from, tt.hash, testEpoch, applied)
			if d.Snapshot != tt.wantSnapshot || d.FromVersion != tt.wantFrom || d.ToVersion != tt.wantTo {
				t.Errorf("delta %d→%d snapshot %v, want %d→%d snapshot %v", d.FromVersion, d.ToVersion, d.Snapshot, tt.wantFrom, tt.wantTo, tt.wantSnapshot)
			}
			up, del := ids(d)
			if diff := cmp.Diff(tt.wantUp, up); diff != "" || len(del) > 0 {
				t.Errorf("upserts (-want +got):\n%s deletes %v", diff, del)
			}
			if len(d.Upserts) > 0 && string(d.ViewHash) != string(hashOf(cur)) {
				t.Errorf("ViewHash %x, want the hash of the whole view %x", d.ViewHash, hashOf(cur))
			}
		})
	}
}

func TestHostViewPokes(t *testing.T) {
	cv := newClockView()
	ch := make(chan struct{}, 1)
	cv.hv.subs[ch] = struct{}{}
	cv.set(4, map[string]string{"a": "1"})
	cv.set(4, map[string]string{"a": "2"}) // the slot is full: must not block
	<-ch
	cv.set(4, map[string]string{"a": "2"}) // no change, no poke
	select {
	case <-ch:
		t.Error("poked without a change")
	default:
	}
}

func TestDeltaBeforeStart(t *testing.T) {
	c, err := New(Config{Store: new(store.Store), Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Delta("h1", 0); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Delta before Start: %v, want ErrNotStarted", err)
	}
	if got := EpochOf(c.Version("h1")); got != 3 {
		t.Errorf("version epoch %d, want 3", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{Store: new(store.Store)}, true},
		{"no store", Config{}, false},
		{"negative horizon", Config{Store: new(store.Store), TombstoneHorizon: -1}, false},
		{"epoch too large", Config{Store: new(store.Store), Epoch: MaxEpoch + 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestApplySplitData checks that a resource whose JSON is split into
// shared data and a tail (a compiled policy) changes when, and only when,
// its whole JSON does, however it is split, and that the deltas and the
// view hash carry the whole JSON.
func TestApplySplitData(t *testing.T) {
	cv := newClockView()
	v1 := cv.set(10, map[string]string{"p": `{"a":1,|"applies":["x"]}`, "q": `{"b":2}`})
	for _, tc := range []struct {
		name    string
		res     map[string]string
		changed bool
	}{
		{"same split", map[string]string{"p": `{"a":1,|"applies":["x"]}`, "q": `{"b":2}`}, false},
		{"split elsewhere", map[string]string{"p": `{"a":1,"applies":|["x"]}`, "q": `{"b":2}`}, false},
		{"not split", map[string]string{"p": `{"a":1,"applies":["x"]}`, "q": `{"b":2}`}, false},
		{"split now", map[string]string{"p": `{"a":1,"applies":["x"]}`, "q": `{|"b":2}`}, false},
		{"tail changed", map[string]string{"p": `{"a":1,|"applies":["y"]}`, "q": `{"b":2}`}, true},
		{"data changed", map[string]string{"p": `{"a":2,|"applies":["y"]}`, "q": `{"b":2}`}, true},
		{"longer tail", map[string]string{"p": `{"a":2,|"applies":["y","z"]}`, "q": `{"b":2}`}, true},
	} {
		before := cv.hv.version()
		after := cv.set(10, tc.res)
		if changed := after != before; changed != tc.changed {
			t.Errorf("%s: version %d → %d, want changed %v", tc.name, before, after, tc.changed)
		}
	}
	d := cv.hv.delta(v1, nil, testEpoch, 0)
	up, _ := ids(d)
	if want := []string{`p={"a":2,"applies":["y","z"]}`}; !cmp.Equal(up, want) {
		t.Errorf("delta upserts %q, want %q", up, want)
	}
	snap := cv.hv.delta(0, nil, testEpoch, 0)
	whole := []wire.Resource{{Key: wire.ResourceKey{Type: "t", ID: "p"}, Data: []byte(`{"a":2,"applies":["y","z"]}`)},
		{Key: wire.ResourceKey{Type: "t", ID: "q"}, Data: []byte(`{"b":2}`)}}
	if want := wire.ViewHash(whole); !bytes.Equal(snap.ViewHash, want) {
		t.Errorf("view hash %x, want %x (of the whole JSON)", snap.ViewHash, want)
	}
}
