package linux

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// qosProgram is the tc classifier the driver attaches (direct action) to
// the clsact ingress and egress of a shaped endpoint's veth, ahead of the
// mirred action that redirects the packet to an ifb of the VPC: it sets
// skb->priority to the endpoint's HTB class and lets the next filter run.
// Four instructions stand in for the skbedit action, which this kernel
// lacks. A priority must be set before HTB sees the packet: HTB classifies
// by skb->priority first, and a workload (root in its namespace) can put
// any value there (SO_PRIORITY), which the veth carries across; the
// program overwrites it. (bpf_redirect could replace the mirred action on
// ingress, but not on egress: unlike mirred it does not record the device
// in skb_iif, where the ifb returns the packet.)
type qosProgram struct {
	classid uint32 // skb->priority to set
}

// qosFilterName names the driver's cls_bpf filters (TCA_BPF_NAME).
const qosFilterName = "wft-qos"

// eBPF encoding (include/uapi/linux/bpf.h).
const (
	bpfMovImm      = 0xb7 // BPF_ALU64 | BPF_MOV | BPF_K
	bpfStxMemW     = 0x63 // BPF_STX | BPF_MEM | BPF_W
	bpfExit        = 0x95 // BPF_JMP | BPF_EXIT
	skbPriorityOff = 32   // offsetof(struct __sk_buff, priority)
	tcActUnspec    = -1   // TC_ACT_UNSPEC: go on with the next filter
)

func (p qosProgram) insns() []byte {
	ins := func(b []byte, code, dst, src uint8, off int16, imm int32) []byte {
		b = append(b, code, src<<4|dst)
		b = binary.LittleEndian.AppendUint16(b, uint16(off))
		return binary.LittleEndian.AppendUint32(b, uint32(imm))
	}
	b := make([]byte, 0, 4*8)
	b = ins(b, bpfMovImm, 2, 0, 0, int32(p.classid)) // r2 = classid
	b = ins(b, bpfStxMemW, 1, 2, skbPriorityOff, 0)  // skb->priority = r2
	b = ins(b, bpfMovImm, 0, 0, 0, tcActUnspec)      // r0 = TC_ACT_UNSPEC
	return ins(b, bpfExit, 0, 0, 0, 0)
}

// isTag reports whether tag, as the kernel reports it for an attached
// program, is this program's: the first 8 bytes of the SHA-256 of its
// instructions (of their SHA-1 on older kernels), in hex.
func (p qosProgram) isTag(tag string) bool {
	s256, s1 := sha256.Sum256(p.insns()), sha1.Sum(p.insns())
	return tag == hex.EncodeToString(s256[:8]) || tag == hex.EncodeToString(s1[:8])
}

// bpfProgLoadAttr is the head of union bpf_attr for BPF_PROG_LOAD.
type bpfProgLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
	progName    [16]byte
}

// load loads the program into the kernel and returns its descriptor; the
// caller closes it once a filter holds the program.
func (p qosProgram) load() (int, error) {
	code := p.insns()
	license := []byte("Dual MIT/GPL\x00")
	log := make([]byte, 4096)
	attr := bpfProgLoadAttr{
		progType: unix.BPF_PROG_TYPE_SCHED_CLS,
		insnCnt:  uint32(len(code) / 8),
		insns:    uint64(uintptr(unsafe.Pointer(&code[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1,
		logSize:  uint32(len(log)),
		logBuf:   uint64(uintptr(unsafe.Pointer(&log[0]))),
	}
	copy(attr.progName[:], "wft_qos")
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if errno != 0 {
		return -1, fmt.Errorf("load qos program: %w (verifier: %s)", errno, unix.ByteSliceToString(log))
	}
	return int(fd), nil
}
