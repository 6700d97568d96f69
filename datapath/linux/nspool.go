package linux

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath/internal/nlconv"
	"github.com/weftnet/weft/internal/netnsfile"
)

// Making a network namespace (unshare and a bind mount) is a fifth of what
// attaching an endpoint that has none costs. So the driver can keep a few
// empty namespaces made ahead (Config.NetnsPool; their loopback up),
// pinned as "<prefix>-<host>-p<n>", and give one to such an endpoint by
// pinning it at the endpoint's name too (a bind mount); unpinning the
// pool's name, and making the next one, is done off the attach path. The
// pool is started by the first endpoint whose namespace the driver makes
// (a host whose endpoints all come with a namespace, as from CNI, has
// none); a restarted driver adopts the namespaces an earlier one left in
// it, and Close and Teardown delete them (Teardown also those of an
// earlier driver). Measured on a loaded 2-core machine, it did not make
// successive attaches faster: making namespaces competes for the same
// CPUs and kernel locks as the attach.

// nsPool is the pool of empty endpoint namespaces.
type nsPool struct {
	dir, base string // a pooled namespace is dir/base<n>
	size      int
	log       *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	ready   []string // pinned, empty, to give
	retired []string // given: to unpin
	next    int
	kick    chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newNSPool(dir, base string, size int, log *slog.Logger) *nsPool {
	return &nsPool{dir: dir, base: base, size: size, log: log, kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// isPool reports whether name is one of the pool's.
func (p *nsPool) isPool(name string) bool {
	rest, ok := strings.CutPrefix(name, p.base)
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.ParseUint(rest, 10, 32)
	return err == nil
}

// take pins a pooled namespace at path (which must not exist) and reports
// whether it did; when it did not (no pool, none ready, an error), the
// caller makes the namespace itself. The first call starts the pool.
func (p *nsPool) take(path string) bool {
	if p.size <= 0 {
		return false
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	if !p.started {
		p.started = true
		p.adopt()
		p.wg.Add(1)
		go p.run()
	}
	var name string
	if len(p.ready) > 0 { // the oldest first: an adopted one before those made since
		name = p.ready[0]
		p.ready = p.ready[1:]
	}
	p.mu.Unlock()
	p.refill()
	if name == "" {
		return false
	}
	err := pinAt(filepath.Join(p.dir, name), path)
	if err != nil {
		p.log.Warn("pooled namespace not used", "netns", name, "err", err)
	}
	p.mu.Lock()
	closed := p.closed
	if !closed {
		p.retired = append(p.retired, name) // given or broken: unpinned either way
	}
	p.mu.Unlock()
	if closed { // close did not see it
		_ = netnsfile.Delete(p.dir, name)
	}
	p.refill()
	return err == nil
}

// pinAt pins the namespace pinned at src at dst too.
func pinAt(src, dst string) error {
	if !nlconv.IsNetns(src) {
		return fmt.Errorf("%s is not a pinned namespace", src)
	}
	f, err := os.OpenFile(dst, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("pin at %s: %w", dst, err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("pin at %s: bind mount: %w", dst, err)
	}
	return nil
}

func (p *nsPool) refill() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// adopt takes the pool namespaces an earlier driver left. The caller holds
// mu.
func (p *nsPool) adopt() {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !p.isPool(e.Name()) {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(e.Name(), p.base))
		p.next = max(p.next, n+1)
		if nlconv.IsNetns(filepath.Join(p.dir, e.Name())) && len(p.ready) < p.size {
			p.ready = append(p.ready, e.Name())
		} else {
			p.retired = append(p.retired, e.Name())
		}
	}
}

// run unpins the given namespaces and keeps size ready, until close.
func (p *nsPool) run() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		for {
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				return
			}
			var retire, mk string
			switch {
			case len(p.retired) > 0:
				retire = p.retired[0]
				p.retired = p.retired[1:]
			case len(p.ready) < p.size:
				mk = p.base + strconv.Itoa(p.next)
				p.next++
			}
			p.mu.Unlock()
			if retire == "" && mk == "" {
				break
			}
			if retire != "" {
				if err := netnsfile.Delete(p.dir, retire); err != nil {
					p.log.Warn("unpin pooled namespace", "netns", retire, "err", err)
				}
				continue
			}
			if err := makePooled(p.dir, mk); err != nil {
				p.log.Warn("make pooled namespace", "netns", mk, "err", err)
				_ = netnsfile.Delete(p.dir, mk)
				break // the next take tries again
			}
			p.mu.Lock()
			if p.closed {
				p.retired = append(p.retired, mk)
			} else {
				p.ready = append(p.ready, mk)
			}
			p.mu.Unlock()
		}
	}
}

// makePooled makes a pooled namespace with its loopback up, as an
// endpoint's namespace the driver makes is wanted.
func makePooled(dir, name string) error {
	path, err := netnsfile.Create(dir, name)
	if err != nil {
		return err
	}
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", path, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("set lo up in %s: %w", path, err)
	}
	return nil
}

// close stops the pool and deletes its namespaces (and those an earlier
// driver left, when remove is set even if the pool never started).
func (p *nsPool) close(remove bool) error {
	p.mu.Lock()
	wasClosed := p.closed
	p.closed = true
	started := p.started
	p.mu.Unlock()
	if started && !wasClosed {
		close(p.stop)
		p.wg.Wait()
	}
	p.mu.Lock()
	names := append(p.ready, p.retired...)
	p.ready, p.retired = nil, nil
	p.mu.Unlock()
	if remove {
		if ents, err := os.ReadDir(p.dir); err == nil {
			for _, e := range ents {
				if p.isPool(e.Name()) {
					names = append(names, e.Name())
				}
			}
		}
	}
	var errs []error
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if err := netnsfile.Delete(p.dir, n); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
