package buildinfo

import (
	"runtime"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Info
		want string
	}{
		{"release", Info{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.25", Platform: "linux/amd64"}, "v1.2.3 (go1.25, linux/amd64, abc)"},
		{"dirty", Info{Version: "(devel)", Revision: "abc", Modified: true, GoVersion: "go1.25", Platform: "linux/arm64"}, "(devel) (go1.25, linux/arm64, abc-dirty)"},
		{"no vcs", Info{Version: "(devel)", GoVersion: "go1.25", Platform: "linux/amd64"}, "(devel) (go1.25, linux/amd64)"},
		{"tags", Info{Version: "(devel)", Revision: "abc", GoVersion: "go1.25", Platform: "linux/amd64", Tags: "weftclearstream"}, "(devel) (go1.25, linux/amd64, abc, tags weftclearstream)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRead(t *testing.T) {
	i := Read()
	if i.Version == "" || i.GoVersion != runtime.Version() || i.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Read() = %+v", i)
	}
}
