// Package netnsfile creates, enters and deletes network namespaces named
// by files: namespaces pinned in a directory (like `ip netns add/del`,
// which use /var/run/netns) and any other namespace file
// (/proc/PID/ns/net, an open descriptor). It shells out to nothing. The
// linux datapath, the test network and the demo all make and enter their
// namespaces here.
package netnsfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// DefaultDir is where named network namespaces live (as with `ip netns`).
const DefaultDir = "/var/run/netns"

// Create makes a new network namespace and pins it at dir/name. The
// namespace starts with only a down loopback.
func Create(dir, name string) (path string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	path = filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread goes back to its namespace afterwards: destroying it
		// instead would kill the children it forked with a parent-death
		// signal (a test's agents). Only if that fails it stays locked,
		// and the runtime destroys it when the goroutine returns.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open the thread's netns: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		merr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if merr != nil {
			merr = fmt.Errorf("bind mount: %w", merr)
		}
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- merr
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	return path, nil
}

// Delete unpins dir/name. The kernel destroys the namespace, and every
// interface in it, once nothing else holds it. A missing name is not an error.
func Delete(dir, name string) error {
	path := filepath.Join(dir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// Do runs fn on an OS thread that has entered the network namespace at
// path, then moves the thread back. Sockets fn opens stay in that
// namespace and may be used from any goroutine afterwards; a process fn
// starts (exec.Cmd.Start) runs in it. fn runs on another goroutine: in a
// test it must not call t.Fatal. fn's error is returned as it is.
func Do(path string, fn func() error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	defer unix.Close(fd)
	return do(fd, " "+path, fn)
}

// DoFd is Do for a namespace held open as the descriptor fd.
func DoFd(fd int, fn func() error) error { return do(fd, "", fn) }

// do is Do; name (" <path>" or "") goes into its own errors.
func do(fd int, name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns%s: %w", name, err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns%s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime destroys the thread with the goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns%s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
