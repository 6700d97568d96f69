package netnsfile

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCreateDelete(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
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
