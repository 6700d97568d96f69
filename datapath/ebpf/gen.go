package ebpf

// The BPF programs are compiled with Debian bookworm's clang-14 and
// libbpf-dev headers; the objects are committed, so `go build` needs no
// clang. CI regenerates them and fails if they differ.
//
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -mcpu=v3 -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package ebpf weft bpf/weft.c
