package capture

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/bpf"
)

// ErrFilter marks a filter expression that cannot be compiled.
var ErrFilter = errors.New("capture: filter")

// MaxProgram bounds a filter program, as the kernel does (BPF_MAXINSNS).
const MaxProgram = 4096

// Compiler compiles pcap-filter(7) expressions to classic BPF with
// libpcap's own pcap_compile, run in a child process: tcpdump -ddd. It is
// the one place weft compiles filters (the controller, when a Capture
// starts); the hosts receive only the bytecode. See the package
// documentation for why a child process and not a Go library.
type Compiler struct {
	// Path is the tcpdump binary (default "tcpdump", found in PATH).
	Path string
	// Timeout bounds one compilation (default 5s): a host name in the
	// expression is resolved.
	Timeout time.Duration
}

// Compile compiles expr for Ethernet frames; an empty expression takes
// every packet (nil). The program returns MaxSnap for a packet it takes,
// 0 for one it drops; CheckProgram accepts it.
func (c Compiler) Compile(ctx context.Context, expr string) ([]bpf.RawInstruction, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return nil, nil
	}
	path := cmp.Or(c.Path, "tcpdump")
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(c.Timeout, 5*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-ddd", "-y", "EN10MB", "-s", strconv.Itoa(MaxSnap), "--", expr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limited{&stdout, 1 << 20}, &limited{&stderr, 4 << 10}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(stderr.String()), "tcpdump: "))
			return nil, fmt.Errorf("%w %q: %s", ErrFilter, expr, cmp.Or(msg, err.Error()))
		}
		return nil, fmt.Errorf("%w %q: run libpcap's compiler (%s): %v", ErrFilter, expr, path, err)
	}
	prog, err := parseDDD(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrFilter, expr, err)
	}
	if err := CheckProgram(prog); err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrFilter, expr, err)
	}
	return prog, nil
}

// parseDDD reads tcpdump -ddd output: the instruction count, then "code
// jt jf k" per instruction, in decimal.
func parseDDD(out string) ([]bpf.RawInstruction, error) {
	f := strings.Fields(out)
	if len(f) == 0 {
		return nil, errors.New("no output")
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 || n > MaxProgram || len(f) != 1+4*n {
		return nil, fmt.Errorf("unexpected output %.40q", out)
	}
	prog := make([]bpf.RawInstruction, n)
	for i := range prog {
		var v [4]uint64
		for j, bits := range []int{16, 8, 8, 32} {
			if v[j], err = strconv.ParseUint(f[1+4*i+j], 10, bits); err != nil {
				return nil, fmt.Errorf("instruction %d: %v", i, err)
			}
		}
		prog[i] = bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])}
	}
	return prog, nil
}

// limited keeps at most n bytes and discards the rest.
type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// CheckProgram validates a classic BPF program as an agent receives it:
// every instruction decodes (golang.org/x/net/bpf), jumps stay inside the
// program and go forward, the last instruction returns, and it is at most
// MaxProgram long. The kernel checks again when it is attached.
func CheckProgram(prog []bpf.RawInstruction) error {
	if len(prog) == 0 || len(prog) > MaxProgram {
		return fmt.Errorf("program of %d instructions, want 1..%d", len(prog), MaxProgram)
	}
	insns, ok := bpf.Disassemble(prog)
	if !ok {
		return errors.New("program has an instruction that does not decode")
	}
	for i, in := range insns {
		far := -1 // how far it jumps; -1: it does not
		switch j := in.(type) {
		case bpf.Jump:
			far = int(j.Skip)
		case bpf.JumpIf:
			far = int(max(j.SkipTrue, j.SkipFalse))
		case bpf.JumpIfX:
			far = int(max(j.SkipTrue, j.SkipFalse))
		case bpf.RawInstruction:
			return fmt.Errorf("instruction %d (%#04x) is not classic BPF", i, j.Op)
		}
		if far >= len(insns)-i-1 {
			return fmt.Errorf("instruction %d jumps past the end", i)
		}
	}
	switch insns[len(insns)-1].(type) {
	case bpf.RetA, bpf.RetConstant:
	default:
		return errors.New("program does not end with a return")
	}
	return nil
}

// Encode turns a program into the API's form ([code, jt, jf, k]).
func Encode(prog []bpf.RawInstruction) [][4]uint32 {
	if prog == nil {
		return nil
	}
	out := make([][4]uint32, len(prog))
	for i, in := range prog {
		out[i] = [4]uint32{uint32(in.Op), uint32(in.Jt), uint32(in.Jf), in.K}
	}
	return out
}

// Decode turns the API's form back into a program and checks it
// (CheckProgram); empty is nil (every packet).
func Decode(p [][4]uint32) ([]bpf.RawInstruction, error) {
	if len(p) == 0 {
		return nil, nil
	}
	prog := make([]bpf.RawInstruction, len(p))
	for i, in := range p {
		if in[0] > 0xffff || in[1] > 0xff || in[2] > 0xff {
			return nil, fmt.Errorf("instruction %d out of range", i)
		}
		prog[i] = bpf.RawInstruction{Op: uint16(in[0]), Jt: uint8(in[1]), Jf: uint8(in[2]), K: in[3]}
	}
	if err := CheckProgram(prog); err != nil {
		return nil, err
	}
	return prog, nil
}

// VXLANPort is the UDP port of weft's overlay.
const VXLANPort = 4789

// UnderlayProgram selects the VXLAN packets of one VNI in Ethernet frames
// on an underlay interface (IPv4, UDP to VXLANPort, VNI in bytes 4..6 of
// the VXLAN header): a fixed program, no filter expression involved.
func UnderlayProgram(vni uint32) []bpf.RawInstruction {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},                           // ethertype
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0800, SkipTrue: 8}, // IPv4
		bpf.LoadAbsolute{Off: 23, Size: 1},                           // protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 17, SkipTrue: 6},     // UDP
		bpf.LoadMemShift{Off: 14},                                    // X = IP header length
		bpf.LoadIndirect{Off: 14 + 2, Size: 2},                       // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: VXLANPort, SkipTrue: 3},
		bpf.LoadIndirect{Off: 14 + 8 + 4, Size: 4}, // VNI << 8 | reserved
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: vni << 8, SkipTrue: 1},
		bpf.RetConstant{Val: MaxSnap},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic(fmt.Sprintf("capture: underlay program: %v", err)) // a constant program
	}
	return prog
}

// MaxSnap is what the programs return for a packet they take: all of it
// (the socket's snap length applies after).
const MaxSnap = 262144
