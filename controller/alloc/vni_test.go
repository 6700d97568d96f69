package alloc

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNewVNIs(t *testing.T) {
	tests := []struct {
		name     string
		min, max uint32
		wantErr  error
	}{
		{name: "default range", min: DefaultMinVNI, max: MaxVNI},
		{name: "full range", min: MinVNI, max: MaxVNI},
		{name: "single", min: 7, max: 7},
		{name: "zero", min: 0, max: 10, wantErr: ErrOutOfRange},
		{name: "above 24 bits", min: 1, max: MaxVNI + 1, wantErr: ErrOutOfRange},
		{name: "inverted", min: 10, max: 9, wantErr: ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVNIs(tt.min, tt.max)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewVNIs(%d, %d) error = %v, want %v", tt.min, tt.max, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			got, err := v.Allocate()
			if err != nil || got != tt.min {
				t.Errorf("first Allocate() = %d, %v; want %d", got, err, tt.min)
			}
		})
	}
}

// allocN allocates n VNIs and fails the test on error.
func allocN(t *testing.T, v *VNIs, n int) []uint32 {
	t.Helper()
	var out []uint32
	for range n {
		x, err := v.Allocate()
		if err != nil {
			t.Fatalf("Allocate() after %v: %v", out, err)
		}
		out = append(out, x)
	}
	return out
}

func TestVNIsNextFitAndExhaustion(t *testing.T) {
	v, err := NewVNIs(10, 14)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{10, 11, 12}, allocN(t, v, 3)); diff != "" {
		t.Errorf("first allocations (-want +got):\n%s", diff)
	}
	v.Release(11)
	// Next-fit: 11 was released but the cursor goes on to 13, 14 first.
	if diff := cmp.Diff([]uint32{13, 14, 11}, allocN(t, v, 3)); diff != "" {
		t.Errorf("allocations after release (-want +got):\n%s", diff)
	}
	if _, err := v.Allocate(); !errors.Is(err, ErrExhausted) {
		t.Errorf("Allocate() on a full range: error = %v, want ErrExhausted", err)
	}
	if got := v.Used(); got != 5 {
		t.Errorf("Used() = %d, want 5", got)
	}
	v.Release(12)
	v.Release(12) // twice: a no-op
	v.Release(99) // out of range: a no-op
	if got := v.Used(); got != 4 {
		t.Errorf("Used() after releases = %d, want 4", got)
	}
	if diff := cmp.Diff([]uint32{12}, allocN(t, v, 1)); diff != "" {
		t.Errorf("allocation in a full-but-one range (-want +got):\n%s", diff)
	}
}

// TestVNIsWordBoundaries allocates ranges whose ends fall inside and on
// bitmap words, checking every value is handed out once and none outside.
func TestVNIsWordBoundaries(t *testing.T) {
	tests := []struct {
		name     string
		min, max uint32
	}{
		{name: "one word", min: 1, max: 64},
		{name: "word plus one", min: 1, max: 65},
		{name: "two words minus one", min: 100, max: 226},
		{name: "top of the range", min: MaxVNI - 130, max: MaxVNI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVNIs(tt.min, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			got := allocN(t, v, int(tt.max-tt.min+1))
			var want []uint32
			for x := tt.min; x <= tt.max; x++ {
				want = append(want, x)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("allocations (-want +got):\n%s", diff)
			}
			if x, err := v.Allocate(); !errors.Is(err, ErrExhausted) {
				t.Errorf("Allocate() on a full range = %d, %v; want ErrExhausted", x, err)
			}
		})
	}
}

func TestVNIsReserve(t *testing.T) {
	v, err := NewVNIs(100, 200)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		vni     uint32
		wantErr error
	}{
		{name: "free", vni: 150},
		{name: "again", vni: 150, wantErr: ErrInUse},
		{name: "first", vni: 100},
		{name: "last", vni: 200},
		{name: "below", vni: 99, wantErr: ErrOutOfRange},
		{name: "above", vni: 201, wantErr: ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := v.Reserve(tt.vni); !errors.Is(err, tt.wantErr) {
				t.Errorf("Reserve(%d) error = %v, want %v", tt.vni, err, tt.wantErr)
			}
		})
	}
	if got := v.Used(); got != 3 {
		t.Errorf("Used() = %d, want 3", got)
	}
	for _, x := range []uint32{100, 150, 200} {
		if !v.InUse(x) {
			t.Errorf("InUse(%d) = false after Reserve", x)
		}
	}
	if v.InUse(99) || v.InUse(101) {
		t.Errorf("InUse reports a VNI that was never reserved")
	}
	// Allocation skips the reserved VNIs.
	seen := map[uint32]bool{}
	for {
		x, err := v.Allocate()
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if x == 100 || x == 150 || x == 200 || seen[x] {
			t.Fatalf("Allocate() = %d: reserved or already allocated", x)
		}
		seen[x] = true
	}
	if len(seen) != 98 {
		t.Errorf("allocated %d VNIs around 3 reserved ones in 101, want 98", len(seen))
	}
}
