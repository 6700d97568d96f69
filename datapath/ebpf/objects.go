package ebpf

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath/internal/writes"
	"github.com/weftnet/weft/internal/netnsfile"
)

// objects are the driver's maps and programs, adopted from their pins or
// loaded from the embedded object (and pinned).
type objects struct {
	weftMaps
	weftPrograms
	ids   map[*ebpf.Program]ebpf.ProgramID
	names map[*ebpf.Program]string
}

func (o *objects) close() {
	_ = o.weftMaps.Close()
	_ = o.weftPrograms.Close()
}

// objectHash names the embedded BPF object: its programs are pinned under
// "progs-<hash>", so a driver adopts only programs built from the same
// source, and a new build replaces the programs of an old one.
func objectHash() string {
	s := sha256.Sum256(_WeftBytes)
	return hex.EncodeToString(s[:6])
}

// mountMu serializes the check-and-mount of bpffs in this process: two
// drivers mounting at once would stack two bpffs instances, the second
// hiding the first's pins. The mount table it guards is process-global.
var mountMu sync.Mutex

// ensureBPFFS mounts bpffs at path unless it is there.
func ensureBPFFS(path string, ops *writes.Counter) error {
	mountMu.Lock()
	defer mountMu.Unlock()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("bpffs: %w", err)
	}
	if err := ops.Write(writes.BPFFSMount, func() error { return unix.Mount("bpf", path, "bpf", 0, "mode=0700") }); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", path, err)
	}
	return nil
}

// loadObjects adopts the maps pinned in dir (creating and pinning those
// missing) and the programs pinned under dir/progs-<objectHash> (loading
// and pinning them if absent). Programs of another build are unpinned;
// the links that still run them are moved to the new ones by Set.
func loadObjects(dir string, ops *writes.Counter, log *slog.Logger) (*objects, error) {
	spec, err := loadWeft()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("pin directory: %w", err)
	}
	o := &objects{ids: map[*ebpf.Program]ebpf.ProgramID{}, names: map[*ebpf.Program]string{}}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	missing := 0
	for name := range spec.Maps {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			missing++
		}
	}
	err = spec.LoadAndAssign(&o.weftMaps, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Pinned by a build whose map layout differs: start over with fresh
		// maps (Set programs them again; learned remotes are learned again).
		log.Warn("pinned maps incompatible with this build, replacing them", "dir", dir, "err", err)
		for name := range spec.Maps {
			_ = ops.Write(writes.PinDel, func() error { return os.Remove(filepath.Join(dir, name)) })
		}
		missing = len(spec.Maps)
		err = spec.LoadAndAssign(&o.weftMaps, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("load maps: %w", err)
	}
	ops.Add(writes.MapCreate, uint64(missing))

	progDir := filepath.Join(dir, "progs-"+objectHash())
	progs := map[string]**ebpf.Program{"from_ep": &o.FromEp, "from_vxlan": &o.FromVxlan, "to_vxlan": &o.ToVxlan, "from_shaper": &o.FromShaper}
	adopted := 0
	for name, p := range progs {
		if *p, err = ebpf.LoadPinnedProgram(filepath.Join(progDir, name), nil); err == nil {
			adopted++
		}
	}
	if adopted != len(progs) {
		_ = o.weftPrograms.Close()
		o.weftPrograms = weftPrograms{}
		ops.Add(writes.ProgLoad, uint64(len(progs)))
		if err := spec.LoadAndAssign(&o.weftPrograms, opts); err != nil {
			o.close()
			return nil, fmt.Errorf("load programs: %w", err)
		}
		if err := os.MkdirAll(progDir, 0o700); err != nil {
			o.close()
			return nil, fmt.Errorf("pin programs: %w", err)
		}
		for name, p := range progs {
			path := filepath.Join(progDir, name)
			if err := ops.Write(writes.ProgPin, func() error {
				_ = os.Remove(path)
				return (*p).Pin(path)
			}); err != nil {
				o.close()
				return nil, fmt.Errorf("pin program %s: %w", name, err)
			}
		}
		log.Info("bpf programs loaded", "dir", progDir)
	}
	for name, p := range progs {
		o.names[*p] = name
		info, err := (*p).Info()
		if err != nil {
			o.close()
			return nil, fmt.Errorf("program info: %w", err)
		}
		id, _ := info.ID()
		o.ids[*p] = id
	}
	// Programs of other builds: the links still running them hold them.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "progs-") && e.Name() != filepath.Base(progDir) {
			_ = ops.Write(writes.ProgUnpin, func() error { return os.RemoveAll(filepath.Join(dir, e.Name())) })
		}
	}
	return o, nil
}

// ensureLink makes sure hook is attached with a tcx link, pinned as
// links/<name>: a pinned link on the right device and hook is kept (and
// moved to the current program if it runs another one); anything else is
// replaced. On a kernel without tcx it fails with ebpf.ErrNotSupported
// (link.AttachTCX runs cilium/ebpf's feature probe when an attach fails).
func (d *Driver) ensureLink(h hook) error {
	path := filepath.Join(d.pinDir, "links", h.name)
	attach := ebpf.AttachTCXIngress
	if h.egress {
		attach = ebpf.AttachTCXEgress
	}
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == h.ifindex && uint32(info.TCX().AttachType) == uint32(attach) {
			if info.Program != d.objs.ids[h.prog] {
				if err := d.ops.Write(writes.BPFLinkSet, func() error { return l.Update(h.prog) }); err != nil {
					l.Close()
					return fmt.Errorf("update link %s: %w", h.name, err)
				}
			}
			return l.Close()
		}
		// Its device is gone or another one: let it go.
		_ = d.ops.Write(writes.BPFLinkDel, l.Unpin)
		l.Close()
	}
	var l link.Link
	if err := d.ops.Write(writes.BPFLinkAdd, func() error {
		return netnsfile.DoFd(int(d.hostNS), func() error {
			var err error
			l, err = link.AttachTCX(link.TCXOptions{Interface: h.ifindex, Program: h.prog, Attach: attach})
			return err
		})
	}); err != nil {
		return fmt.Errorf("attach %s: %w", h.name, err)
	}
	defer l.Close()
	_ = os.Remove(path)
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pin link %s: %w", h.name, err)
	}
	return nil
}

// dropLink unpins (and so detaches) the link pinned as name.
func (d *Driver) dropLink(name string) error {
	path := filepath.Join(d.pinDir, "links", name)
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return d.ops.Write(writes.PinDel, func() error { return os.Remove(path) })
	}
	defer l.Close()
	return d.ops.Write(writes.BPFLinkDel, l.Unpin)
}

// pinnedLinks lists the names of the links pinned in the pin directory.
func (d *Driver) pinnedLinks() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(d.pinDir, "links"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}
