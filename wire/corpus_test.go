package wire

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the generated seed files testdata/fuzz/FuzzXxx/seed-*")

// TestSeedCorpus checks that every fuzz target has a checked-in seed
// corpus; with -update-corpus it first regenerates the seed-* files from
// structured values (the other files there are inputs the fuzzer found
// interesting, copied from its cache).
func TestSeedCorpus(t *testing.T) {
	targets := fuzzTargets(t)
	seeds := generatedSeeds(t)
	for name := range seeds {
		if !targets[name] {
			t.Errorf("seeds generated for %s, which is not a fuzz target", name)
		}
	}
	if *updateCorpus {
		for name, list := range seeds {
			dir := filepath.Join("testdata", "fuzz", name)
			old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
			for _, f := range old {
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, vals := range list {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), marshalCorpus(vals), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for name := range targets {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", name, "*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Errorf("%s has no seed corpus in testdata/fuzz/%s (run go test -run TestSeedCorpus -update-corpus)", name, name)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("go test fuzz v1\n")) {
				t.Errorf("%s is not in the go test fuzz v1 format", f)
			}
		}
	}
}

// fuzzTargets returns the names of the Fuzz functions of this package.
func fuzzTargets(t *testing.T) map[string]bool {
	t.Helper()
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", func(fi os.FileInfo) bool {
		return strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Fuzz") {
					out[fd.Name.Name] = true
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no fuzz targets found")
	}
	return out
}

// generatedSeeds builds seeds from structured values made from a fixed
// pseudo-random stream, so regenerating them gives the same files.
func generatedSeeds(t *testing.T) map[string][][]any {
	rng := rand.New(rand.NewPCG(7, 11))
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	src := func(n int) *fuzzSource { return &fuzzSource{randBytes(n)} }
	seeds := map[string][][]any{}
	add := func(name string, vals ...any) { seeds[name] = append(seeds[name], vals) }

	for i := range 10 {
		s := src(400)
		typ := Type(1 + i%5)
		host := uint32(1 + i%3)
		pkt, err := Seal(nil, Header{HostID: host, Seq: s.u64() | 1}, s.body(typ), mustKey(t, host))
		if err != nil {
			t.Fatal(err)
		}
		add("FuzzOpen", pkt)
	}
	for _, b := range []struct {
		name string
		typ  Type
	}{
		{"FuzzHeartbeat", TypeHeartbeat}, {"FuzzHeartbeatAck", TypeHeartbeatAck}, {"FuzzLookupRequest", TypeLookupRequest},
		{"FuzzLookupReply", TypeLookupReply}, {"FuzzInvalidate", TypeInvalidate},
	} {
		for range 4 {
			enc, err := src(1200).body(b.typ).AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			add(b.name, enc)
		}
	}
	for _, n := range []int{8, 40, 300, 1200} {
		add("FuzzSealOpen", randBytes(n))
		add("FuzzMessageRoundTrip", randBytes(n))
		add("FuzzReplayWindow", randBytes(n))
		add("FuzzMAC", randBytes(KeySize), randBytes(n))
	}
	for i := range 4 {
		var stream []byte
		s := src(2000)
		for range 1 + i {
			var err error
			if stream, err = AppendMessage(stream, s.message(), 0); err != nil {
				t.Fatal(err)
			}
		}
		add("FuzzFrameReader", stream, uint16([]int{0, 64, 1000, 65535}[i]))
	}
	for range 8 {
		m := src(600).message()
		b, err := AppendMessage(nil, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		add("FuzzDecodeMessage", byte(m.FrameType()), b[FrameHeaderLen:])
	}
	for i := range 4 {
		seal, _ := sealers(t, true)
		s := src(1500)
		var msgs []Message
		for range 1 + i {
			msgs = append(msgs, s.message())
		}
		add("FuzzSealedFrames", sealStream(t, seal, msgs...), uint16(rng.Uint32()))
	}
	for i := range 4 {
		add("FuzzHello", randBytes(10+20*i), rng.Uint32(), rng.Uint64(), int64(rng.Uint64()), uint8(i*3))
	}
	for range 4 {
		m := src(900).message()
		if _, ok := m.(*Delta); !ok {
			m = &Ack{Version: rng.Uint64()}
		}
		b, err := AppendMessage(nil, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		add("FuzzFastDecode", b[FrameHeaderLen:])
	}
	// Targets added later draw last, so the older seeds stay as they were.
	for range 4 {
		enc, err := src(1200).body(TypeFlowReport).AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		add("FuzzFlowReport", enc)
	}
	for i := range 4 {
		data := []string{`{"tenant":"t0","name":"sp1","applies":["t0/e1"]}`, ` {"a": 1}`, `[1,"\u00e9",null]`, `{"a":`}[i]
		add("FuzzAppendDelta", string(randBytes(4+i)), "t/"+string(randBytes(i)), []byte(data), rng.Uint64(), i%2 == 0, randBytes(ViewHashSize*(i%2)))
	}
	return seeds
}

// marshalCorpus writes values in the go test fuzz v1 format, like the
// fuzzer's own cache files.
func marshalCorpus(vals []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		case uint16, uint32, uint64, int64:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		default:
			panic(fmt.Sprintf("marshalCorpus: unsupported %T", v))
		}
	}
	return b.Bytes()
}
