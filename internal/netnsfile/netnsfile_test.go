package netnsfile

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
}

func TestCreateDelete(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path, err := Create(dir, "wftnf-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(dir, "wftnf-test") })
	if path != filepath.Join(dir, "wftnf-test") {
		t.Errorf("path %s", path)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Fatalf("%s is not a pinned namespace (statfs type %x, %v)", path, st.Type, err)
	}
	if _, err := Create(dir, "wftnf-test"); err == nil {
		t.Errorf("creating an existing name succeeded")
	}
	if err := Delete(dir, "wftnf-test"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("after Delete: %v", err)
	}
	if err := Delete(dir, "wftnf-test"); err != nil {
		t.Errorf("deleting a missing name: %v", err)
	}
}

// TestDo enters a fresh namespace by path and by descriptor: fn runs
// inside, a process it starts runs inside, fn's error comes back as it
// is, and the caller's namespace is unchanged afterwards.
func TestDo(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path, err := Create(dir, "wftnf-do")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(dir, "wftnf-do") })
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	errFn := errors.New("fn failed")
	for _, tc := range []struct {
		name string
		do   func(func() error) error
	}{
		{"path", func(fn func() error) error { return Do(path, fn) }},
		{"fd", func(fn func() error) error { return DoFd(fd, fn) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inside string
			var out []byte
			if err := tc.do(func() error {
				var err error
				if inside, err = os.Readlink("/proc/thread-self/ns/net"); err != nil {
					return err
				}
				// A child inherits the namespace of the thread that forks it.
				out, err = exec.Command("cat", "/proc/net/dev").Output()
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if inside != want {
				t.Errorf("fn ran in %s, want %s", inside, want)
			}
			if s := string(out); !strings.Contains(s, "lo:") || strings.Count(s, ":") != 1 {
				t.Errorf("the child saw other devices than lo:\n%s", s)
			}
			if err := tc.do(func() error { return errFn }); err != errFn {
				t.Errorf("fn's error came back as %v, want it as it is", err)
			}
			if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != self {
				t.Errorf("caller's namespace %s after Do, want %s", now, self)
			}
		})
	}
	if err := Do(filepath.Join(dir, "missing"), func() error { return nil }); err == nil {
		t.Error("Do in a missing namespace succeeded")
	}
}
