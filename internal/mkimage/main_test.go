package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The release's platforms, with the ELF machine of their binaries.
var platforms = []struct {
	platform string
	machine  elf.Machine
}{
	{"linux/amd64", elf.EM_X86_64},
	{"linux/arm64", elf.EM_AARCH64},
}

// buildBinaries builds a small static program for every platform into
// DIR/<os>-<arch>/, as weft and as weft-cni, and returns DIR.
func buildBinaries(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for name, body := range map[string]string{
		"go.mod":  "module hello\n\ngo 1.26\n",
		"main.go": "package main\n\nfunc main() { println(\"hello\") }\n",
	} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dist := t.TempDir()
	for _, p := range platforms {
		goos, goarch, _ := strings.Cut(p.platform, "/")
		dir := filepath.Join(dist, goos+"-"+goarch)
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "weft"), ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build for %s: %v\n%s", p.platform, err, out)
		}
		b, err := os.ReadFile(filepath.Join(dir, "weft"))
		if err != nil {
			t.Fatal(err)
		}
		// weft-cni differs from weft, so that a mix-up shows.
		if err := os.WriteFile(filepath.Join(dir, "weft-cni"), append(b, "cni"...), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dist
}

func mkimage(t *testing.T, dist, out string) {
	t.Helper()
	args := []string{"-o", out, "-version", "v1.2.3", "-revision", "0123abcd", "-created", "2026-12-07T10:00:00Z"}
	for _, p := range platforms {
		args = append(args, p.platform+"="+filepath.Join(dist, strings.ReplaceAll(p.platform, "/", "-")))
	}
	var stderr bytes.Buffer
	if err := run(args, &stderr); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, stderr.String())
	}
}

// file is an entry of an image's file system.
type file struct {
	Mode    int64
	ModTime string
	Owner   int
	SHA256  string // of a regular file's content
}

func sum(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// TestImage builds the image of binaries built for every platform and
// reads it back: a tagged index of one image per platform, each with the
// entrypoint weft, its platform's two binaries in /usr/local/bin and
// nothing else; a second build gives the same bytes.
func TestImage(t *testing.T) {
	dist := buildBinaries(t)
	out := filepath.Join(t.TempDir(), "oci")
	mkimage(t, dist, out)

	top, err := layout.ImageIndexFromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].MediaType != types.OCIImageIndex ||
		tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" {
		t.Fatalf("index.json: want one image index tagged v1.2.3, got %+v", tm.Manifests)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || im.Annotations["org.opencontainers.image.revision"] != "0123abcd" {
		t.Errorf("index: media type %s, annotations %v", im.MediaType, im.Annotations)
	}
	var got []string
	for _, d := range im.Manifests {
		got = append(got, d.Platform.String())
	}
	var want []string
	for _, p := range platforms {
		want = append(want, p.platform)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("platforms of the index (-want +got):\n%s", diff)
	}

	for i, p := range platforms {
		t.Run(strings.ReplaceAll(p.platform, "/", "-"), func(t *testing.T) {
			d := im.Manifests[i]
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
				t.Errorf("manifest: %s, config %s, layers %+v; want an OCI manifest of one OCI layer", m.MediaType, m.Config.MediaType, m.Layers)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(p.platform, (&v1.Platform{OS: cf.OS, Architecture: cf.Architecture}).String()); diff != "" {
				t.Errorf("config platform (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"/usr/local/bin/weft"}, cf.Config.Entrypoint); diff != "" {
				t.Errorf("entrypoint (-want +got):\n%s", diff)
			}

			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := layers[0].Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			files := map[string]file{}
			var weft []byte
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				f := file{Mode: h.Mode, ModTime: h.ModTime.UTC().Format("2006-01-02T15:04:05Z"), Owner: h.Uid + h.Gid}
				if h.Typeflag == tar.TypeReg {
					b, err := io.ReadAll(tr)
					if err != nil {
						t.Fatal(err)
					}
					f.SHA256 = sum(b)
					if h.Name == "usr/local/bin/weft" {
						weft = b
					}
				}
				files[h.Name] = f
			}
			bin := filepath.Join(dist, strings.ReplaceAll(p.platform, "/", "-"))
			wantFiles := map[string]file{}
			for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
				wantFiles[d] = file{Mode: 0o755, ModTime: "2026-12-07T10:00:00Z"}
			}
			for _, n := range []string{"weft", "weft-cni"} {
				b, err := os.ReadFile(filepath.Join(bin, n))
				if err != nil {
					t.Fatal(err)
				}
				wantFiles["usr/local/bin/"+n] = file{Mode: 0o755, ModTime: "2026-12-07T10:00:00Z", SHA256: sum(b)}
			}
			if diff := cmp.Diff(wantFiles, files); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
			if ef, err := elf.NewFile(bytes.NewReader(weft)); err != nil || ef.Machine != p.machine {
				t.Errorf("usr/local/bin/weft: want an ELF executable for %s, got %v", p.machine, err)
			}
		})
	}

	again := filepath.Join(t.TempDir(), "oci")
	mkimage(t, dist, again)
	for _, f := range []string{"index.json", "oci-layout"} {
		a, _ := os.ReadFile(filepath.Join(out, f))
		b, err := os.ReadFile(filepath.Join(again, f))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same binaries (%v)", f, err)
		}
	}
}

// TestUsage: what mkimage refuses.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	noWeft := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "weft"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := []string{"-version", "v1", "-revision", "r", "-created", "2026-12-07T10:00:00Z"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no platform", append([]string{"-o", filepath.Join(t.TempDir(), "o")}, good...), "at least one platform"},
		{"no version", []string{"-o", filepath.Join(t.TempDir(), "o"), "-revision", "r", "-created", "2026-12-07T10:00:00Z", "linux/amd64=" + dir}, "-version"},
		{"bad time", []string{"-o", filepath.Join(t.TempDir(), "o"), "-version", "v1", "-revision", "r", "-created", "yesterday", "linux/amd64=" + dir}, "-created"},
		{"bad platform", append(append([]string{"-o", filepath.Join(t.TempDir(), "o")}, good...), "amd64"), "want OS/ARCH=DIR"},
		{"no weft", append(append([]string{"-o", filepath.Join(t.TempDir(), "o")}, good...), "linux/amd64="+noWeft), "no weft"},
		{"output exists", append(append([]string{"-o", t.TempDir()}, good...), "linux/amd64="+dir), "must not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run(%q) = %v, want an error about %q", tc.args, err, tc.want)
			}
		})
	}
}
