package testnet

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/netnsfile"
)

// DefaultDir is where named network namespaces live (as with `ip netns`).
const DefaultDir = "/var/run/netns"

// CreateNamed makes a network namespace pinned at dir/name and returns its
// path (see package netnsfile).
func CreateNamed(dir, name string) (string, error) { return netnsfile.Create(dir, name) }

// DeleteNamed unpins dir/name; a missing name is not an error.
func DeleteNamed(dir, name string) error { return netnsfile.Delete(dir, name) }

// Do runs fn on an OS thread that has entered the network namespace at
// path, then moves the thread back. Sockets fn opens stay in that namespace
// and may be used from any goroutine afterwards. fn runs on another
// goroutine: it must not call t.Fatal.
func Do(path string, fn func() error) error {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime destroys the thread with the goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Exec runs a program inside the network namespace at path (the child
// inherits the namespace of the thread that forks it) and returns its
// combined output.
func Exec(ctx context.Context, path, name string, args ...string) ([]byte, error) {
	var out []byte
	err := Do(path, func() error {
		var err error
		out, err = exec.CommandContext(ctx, name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		return out, fmt.Errorf("exec %s in %s: %w", name, path, err)
	}
	return out, nil
}
