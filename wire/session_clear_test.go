//go:build weftclearstream

package wire

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestClearStream checks the benchmark baseline build: frames keep the
// sealed stream's framing and sizes and open to what was sent, and a byte
// changed in a body is not detected (nothing is checked). Run it with
// `go test -tags weftclearstream -run TestClearStream ./wire`; the other
// tests of the package assume sealed frames.
func TestClearStream(t *testing.T) {
	if !ClearStream {
		t.Fatal("ClearStream is false in a weftclearstream build")
	}
	msgs := sampleMessages()
	in := []Message{msgs["welcome"], msgs["delta"], msgs["invalidate"]}
	seal, open := sealers(t, true)
	stream := sealStream(t, seal, in...)
	var plain []byte
	for _, m := range in {
		var err error
		if plain, err = AppendMessage(plain, m, 0); err != nil {
			t.Fatal(err)
		}
	}
	if want := len(plain) + len(in)*SealOverhead; len(stream) != want {
		t.Errorf("stream of %d bytes, want %d (the plain frames plus a tag each)", len(stream), want)
	}
	got, err := openStream(open, stream)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, got, cmpOpts); d != "" {
		t.Errorf("opened (-want +got):\n%s", d)
	}
	first := 4 + int(binary.BigEndian.Uint32(stream))
	b := bytes.Clone(stream)
	b[first-SealOverhead] ^= 0xff // a byte of the first frame's tag
	if _, err := openStream(sealersOpen(t), b); err != nil {
		t.Errorf("a changed tag was refused (%v): this build must not check frames", err)
	}
}

func sealersOpen(t *testing.T) *frameSealer { _, o := sealers(t, true); return o }
