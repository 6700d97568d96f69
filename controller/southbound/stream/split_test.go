package stream

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/wire"
)

func resources(n, size int) []wire.Resource {
	var out []wire.Resource
	for i := range n {
		out = append(out, wire.Resource{Key: wire.ResourceKey{Type: "endpoint", ID: fmt.Sprintf("acme/ep-%d", i)},
			Data: []byte(`"` + strings.Repeat("x", size) + `"`)})
	}
	return out
}

func deletes(n int) []wire.ResourceKey {
	var out []wire.ResourceKey
	for i := range n {
		out = append(out, wire.ResourceKey{Type: "endpoint", ID: fmt.Sprintf("acme/gone-%d", i)})
	}
	return out
}

func TestSplit(t *testing.T) {
	const maxFrame = 8 << 10
	tests := []struct {
		name       string
		d          wire.Delta
		wantFrames int
	}{
		{"empty snapshot is one frame", wire.Delta{ToVersion: 5, Snapshot: true}, 1},
		{"small delta is one frame", wire.Delta{FromVersion: 3, ToVersion: 5, Upserts: resources(3, 100), Deletes: deletes(2)}, 1},
		{"large snapshot", wire.Delta{ToVersion: 9, Snapshot: true, Upserts: resources(100, 500)}, 0},
		{"large compact snapshot", wire.Delta{ToVersion: 9, Snapshot: true, Upserts: resources(100, 500), CompactData: true}, 0},
		{"large delta with deletes", wire.Delta{FromVersion: 2, ToVersion: 9, Upserts: resources(40, 500), Deletes: deletes(500), ViewHash: make([]byte, wire.ViewHashSize)}, 0},
		{"one resource larger than a frame goes alone", wire.Delta{ToVersion: 9, Snapshot: true, Upserts: resources(1, maxFrame)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frames := split(tt.d, maxFrame)
			if tt.wantFrames > 0 && len(frames) != tt.wantFrames {
				t.Errorf("%d frames, want %d", len(frames), tt.wantFrames)
			}
			if tt.wantFrames == 0 && len(frames) < 2 {
				t.Errorf("%d frames, want several", len(frames))
			}
			joined := wire.Delta{FromVersion: tt.d.FromVersion, ToVersion: tt.d.ToVersion, Snapshot: tt.d.Snapshot, CompactData: tt.d.CompactData}
			for i, f := range frames {
				if f.FromVersion != tt.d.FromVersion || f.ToVersion != tt.d.ToVersion || f.Snapshot != tt.d.Snapshot || f.CompactData != tt.d.CompactData {
					t.Errorf("frame %d: versions %d→%d snapshot=%v compactData=%v", i, f.FromVersion, f.ToVersion, f.Snapshot, f.CompactData)
				}
				if f.More != (i < len(frames)-1) {
					t.Errorf("frame %d of %d: More=%v", i, len(frames), f.More)
				}
				if _, err := wire.AppendMessage(nil, &f, maxFrame); err != nil && len(f.Upserts)+len(f.Deletes) > 1 {
					t.Errorf("frame %d (%d resources): %v", i, len(f.Upserts)+len(f.Deletes), err)
				}
				joined.Upserts = append(joined.Upserts, f.Upserts...)
				joined.Deletes = append(joined.Deletes, f.Deletes...)
				if f.More && f.ViewHash != nil {
					t.Errorf("frame %d of %d carries the view hash; only the last does", i, len(frames))
				}
				joined.ViewHash = f.ViewHash
			}
			if diff := cmp.Diff(tt.d, joined); diff != "" {
				t.Errorf("frames joined (-want +got):\n%s", diff)
			}
		})
	}
}
