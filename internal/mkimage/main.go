// Command mkimage writes the OCI image of a weft release without a
// container daemon (with go-containerregistry): an OCI image layout
// directory whose index.json names one image index, tagged with the
// version, of one image per platform. Each image is scratch (the
// binaries are static) plus one layer holding every file of the
// platform's directory in /usr/local/bin (weft, weft-cni); its entrypoint
// is /usr/local/bin/weft. scripts/release.sh runs it:
//
//	go run ./internal/mkimage -o dist/oci -version v0.3.0 -revision SHA -created 2026-12-07T10:00:00Z \
//	    linux/amd64=dist/linux-amd64 linux/arm64=dist/linux-arm64
//
// The same inputs give the same bytes: the layer's entries are sorted and
// owned by root with fixed modes, every time in the image is -created (the
// commit's time), and gzip and JSON encoding are deterministic. Tools
// that read OCI layouts take it as is, e.g.
// `skopeo copy oci:dist/oci:v0.3.0 docker://registry/weft:v0.3.0`.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// binDir is where the binaries are in the image; entrypoint runs weft.
const (
	binDir     = "usr/local/bin"
	entrypoint = "/" + binDir + "/weft"
	source     = "https://github.com/weftnet/weft"
)

// config is what an image is made of.
type config struct {
	out       string // the OCI layout directory to create
	version   string
	revision  string
	created   time.Time
	platforms []platformDir
}

// platformDir is a platform and the directory of its binaries.
type platformDir struct {
	platform v1.Platform
	dir      string
}

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// run parses the command line and writes the image.
func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mkimage -o DIR -version V -revision SHA -created RFC3339 OS/ARCH[/VARIANT]=DIR...")
		fs.PrintDefaults()
	}
	var (
		c       config
		created string
	)
	fs.StringVar(&c.out, "o", "", "the OCI image layout directory to create (must not exist)")
	fs.StringVar(&c.version, "version", "", "the release's version: the index's tag and org.opencontainers.image.version")
	fs.StringVar(&c.revision, "revision", "", "the release's VCS revision (org.opencontainers.image.revision)")
	fs.StringVar(&created, "created", "", "the time of every file and of the images, RFC 3339 (the commit's time)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.out == "" || c.version == "" || c.revision == "" || created == "" || fs.NArg() == 0 {
		fs.Usage()
		return errors.New("-o, -version, -revision, -created and at least one platform are required")
	}
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	c.created = t.UTC()
	for _, a := range fs.Args() {
		p, dir, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q: want OS/ARCH=DIR", a)
		}
		plat, err := v1.ParsePlatform(p)
		if err != nil || plat.OS == "" || plat.Architecture == "" {
			return fmt.Errorf("%q: want OS/ARCH=DIR", a)
		}
		c.platforms = append(c.platforms, platformDir{platform: *plat, dir: dir})
	}
	return write(c)
}

// write makes the index of c's images and writes it as a new OCI layout.
func write(c config) error {
	idx, err := index(c)
	if err != nil {
		return err
	}
	if _, err := os.Stat(c.out); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("-o %s: must not exist (%v)", c.out, err)
	}
	p, err := layout.Write(c.out, empty.Index)
	if err != nil {
		return fmt.Errorf("write %s: %w", c.out, err)
	}
	tag := map[string]string{"org.opencontainers.image.ref.name": c.version}
	if err := p.AppendIndex(idx, layout.WithAnnotations(tag)); err != nil {
		return fmt.Errorf("write %s: %w", c.out, err)
	}
	return nil
}

// annotations are the OCI annotations of the index and of every image.
func (c config) annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":    "weft",
		"org.opencontainers.image.source":   source,
		"org.opencontainers.image.version":  c.version,
		"org.opencontainers.image.revision": c.revision,
		"org.opencontainers.image.created":  c.created.Format(time.RFC3339),
	}
}

// index is the image index of one image per platform.
func index(c config) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pd := range c.platforms {
		img, err := image(c, pd)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", pd.platform, err)
		}
		plat := pd.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
	}
	return mutate.Annotations(idx, c.annotations()).(v1.ImageIndex), nil
}

// image is scratch plus one layer of pd's binaries.
func image(c config, pd platformDir) (v1.Image, error) {
	layer, err := binariesLayer(pd.dir, c.created)
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{Created: v1.Time{Time: c.created}, CreatedBy: "weft " + c.version + ": the binaries in /" + binDir}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = pd.platform.OS, pd.platform.Architecture, pd.platform.Variant
	cf.Created = v1.Time{Time: c.created}
	cf.Config.Entrypoint = []string{entrypoint}
	cf.Config.Env = []string{"PATH=/" + binDir}
	cf.Config.Labels = c.annotations()
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	return mutate.Annotations(img, c.annotations()).(v1.Image), nil
}

// binariesLayer is a layer with every regular file of dir in binDir,
// mode 0755, owned by root, at time t. It needs weft.
func binariesLayer(dir string, t time.Time) (v1.Layer, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("%s: %s is not a regular file", dir, e.Name())
		}
		names = append(names, e.Name())
	}
	if !slices.Contains(names, path.Base(entrypoint)) {
		return nil, fmt.Errorf("%s: no %s", dir, path.Base(entrypoint))
	}
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(name string, typ byte, size int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Size: size, Mode: 0o755, ModTime: t, Format: tar.FormatUSTAR}
	}
	for _, d := range []string{"usr/", "usr/local/", binDir + "/"} {
		if err := tw.WriteHeader(hdr(d, tar.TypeDir, 0)); err != nil {
			return nil, err
		}
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(hdr(binDir+"/"+n, tar.TypeReg, int64(len(b)))); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}
