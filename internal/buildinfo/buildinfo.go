// Package buildinfo reads what the Go toolchain recorded in a weft binary
// (weft, weft-cni): the module version (a release tag, or a
// pseudo-version between tags; "(devel)" in a plain `go build`), the VCS
// revision it was built from and whether the tree had changes. Both
// binaries print it the same way (`weft version`, `weft-cni version`).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info is a binary's build information.
type Info struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// Tags are the build tags (`go build -tags`), if any: weftclearstream
	// marks the benchmark baseline whose config stream is not sealed.
	Tags      string `json:"tags,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Read returns the running binary's build information.
func Read() Info {
	v := Info{Version: "(devel)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		case "-tags":
			v.Tags = s.Value
		}
	}
	return v
}

// String is "VERSION (GO, PLATFORM[, REVISION[-dirty]])", what the
// binaries print after their name.
func (i Info) String() string {
	rev := i.Revision
	if i.Modified {
		rev += "-dirty"
	}
	if rev != "" {
		rev = ", " + rev
	}
	if i.Tags != "" {
		rev += ", tags " + i.Tags
	}
	return fmt.Sprintf("%s (%s, %s%s)", i.Version, i.GoVersion, i.Platform, rev)
}
