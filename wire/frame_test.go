package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type frame struct {
	T    FrameType
	Body []byte
}

func readAllFrames(fr *FrameReader) ([]frame, error) {
	var out []frame
	for {
		t, b, err := fr.Next()
		if err != nil {
			return out, err
		}
		out = append(out, frame{t, bytes.Clone(b)})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*frameChunk+17) // grows the buffer in steps
	tests := []struct {
		name   string
		frames []frame
	}{
		{"none", nil},
		{"empty body", []frame{{FrameAck, nil}}},
		{"several", []frame{{FrameHello, []byte(`{"host":"h1"}`)}, {FrameAck, []byte(`{}`)}, {FrameType(99), []byte("opaque")}}},
		{"large body", []frame{{FrameDelta, big}, {FrameAck, []byte("1")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stream []byte
			for _, f := range tt.frames {
				var err error
				if stream, err = AppendFrame(stream, f.T, f.Body, 0); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readAllFrames(NewFrameReader(bytes.NewReader(stream), 0))
			if err != io.EOF {
				t.Errorf("end of stream: err = %v, want io.EOF", err)
			}
			if d := cmp.Diff(tt.frames, got, cmpOpts); d != "" {
				t.Errorf("frames (-want +got):\n%s", d)
			}
		})
	}
}

func frameHeader(n uint32, t FrameType) []byte {
	return append(binary.BigEndian.AppendUint32(nil, n), byte(t))
}

func TestFrameReaderErrors(t *testing.T) {
	good, err := AppendFrame(nil, FrameAck, []byte(`{"version":1}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		in       []byte
		maxFrame int
		frames   int // complete frames before the error
		want     error
	}{
		{"truncated header", good[:3], 0, 0, ErrShort},
		{"truncated body", good[:len(good)-1], 0, 0, ErrShort},
		{"second frame truncated", append(bytes.Clone(good), good[:7]...), 0, 1, ErrShort},
		{"zero length", frameHeader(0, 0), 0, 0, ErrMalformed},
		{"over the limit", append(frameHeader(101, FrameDelta), make([]byte, 100)...), 100, 0, ErrTooLarge},
		{"at the limit", append(frameHeader(100, FrameDelta), make([]byte, 99)...), 100, 1, io.EOF},
		{"announces 4 GiB", frameHeader(^uint32(0), FrameDelta), 0, 0, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAllFrames(NewFrameReader(bytes.NewReader(tt.in), tt.maxFrame))
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if len(got) != tt.frames {
				t.Errorf("read %d frames before the error, want %d", len(got), tt.frames)
			}
		})
	}
}

func TestAppendFrameTooLarge(t *testing.T) {
	out, err := AppendFrame([]byte("x"), FrameDelta, make([]byte, 100), 100)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
	if string(out) != "x" {
		t.Errorf("AppendFrame appended on error")
	}
}

// allocatedBytes returns how many bytes f allocates.
func allocatedBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestFrameReaderMemoryFollowsBytesReceived(t *testing.T) {
	const limit = 2 * frameChunk // far below what the announced lengths would take
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"oversized frame is not allocated", frameHeader(1<<30, FrameDelta), ErrTooLarge},
		{"announced 16 MiB, sent 10 bytes", append(frameHeader(DefaultMaxFrame, FrameDelta), make([]byte, 10)...), ErrShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := NewFrameReader(bytes.NewReader(tt.in), DefaultMaxFrame)
			var err error
			n := allocatedBytes(func() { _, _, err = fr.Next() })
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if n > limit {
				t.Errorf("Next allocated %d bytes, want at most %d", n, limit)
			}
		})
	}
}

func TestFrameReaderDropsLargeBuffers(t *testing.T) {
	var stream []byte
	stream, _ = AppendFrame(stream, FrameDelta, make([]byte, 2*frameRetain), 0)
	stream, _ = AppendFrame(stream, FrameAck, []byte("1"), 0)
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	if _, _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if fr.body != nil {
		t.Errorf("after a small frame the reader keeps a %d-byte body buffer, want none", cap(*fr.body))
	}
}

func TestBufPool(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 5000, frameChunk, frameRetain, frameRetain + 1, 3 << 20} {
		p := getBuf(n)
		if len(*p) != 0 || cap(*p) < n {
			t.Errorf("getBuf(%d): len %d cap %d", n, len(*p), cap(*p))
		}
		if n > frameRetain && cap(*p) != n {
			t.Errorf("getBuf(%d): cap %d, want exactly %d for an unpooled size", n, cap(*p), n)
		}
		*p = append(*p, 1)
		putBuf(p)
	}
	// A buffer that grew to a size between classes serves the class below.
	b := make([]byte, 0, 3000)
	putBuf(&b)
	if p := getBuf(2048); cap(*p) < 2048 || len(*p) != 0 {
		t.Errorf("getBuf(2048) after putting 3000: len %d cap %d", len(*p), cap(*p))
	}
}
