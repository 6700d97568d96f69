// Package capture is the host-independent half of weft's packet capture:
// the filter compiler, the upload stream from agents to the collector,
// and the merger that turns every host's stream into one pcapng file.
//
// # How a capture flows
//
//	weft capture ... -w out.pcapng ─POST Capture─▶ controller ──────────────────────────────┐
//	   ▲                                           │ Compiler: filter → classic BPF, once     │
//	   │ GET .../captures/NAME/pcapng?follow=true  │ status.program, the hosts' views         │
//	   │ (the merged file as it grows)             ▼                                          │
//	collector (a replica) ◀─ upload stream ── agent on each host of a selected endpoint       │
//	  Merger: hosts' streams → one pcapng            AF_PACKET on the endpoint's veth (router │
//	  on disk, until the capture's TTL               side), the program attached, budgeted   ─┘
//
// # The filter: libpcap's compiler, in a child process
//
// A pcap-filter(7) expression is compiled in exactly one place, the
// controller, by Compiler: it runs tcpdump -ddd (libpcap's pcap_compile
// for an Ethernet link) with a timeout and bounded output, parses the
// instructions and checks them with golang.org/x/net/bpf (CheckProgram:
// every instruction decodes, jumps go forward inside the program, it ends
// with a return, at most MaxProgram long). Agents receive only the
// bytecode, check it the same way and let the kernel check it again when
// they attach it to their sockets. The weft binary (CLI, controller and
// agent) stays free of cgo.
//
// Why not a Go library: libpcap through cgo is ruled out, and the
// WebAssembly build of pcap_compile transpiled to Go (pgaskin/go-pcap-filter)
// is not served by the module proxy here. The one pure-Go compiler that is
// (packetcap/go-pcap/filter) is a hand-written reimplementation that
// compiles basic expressions wrongly without an error: on the packets of
// TestCompileFilter, "icmp" took TCP and UDP too, "tcp and not port 443"
// took every UDP and ICMP packet, "ip[9] == 1", "portrange 1000-2000" and
// "icmp[icmptype] == icmp-echo" took every packet, and "ip" produced a
// jump past the end. A capture filter that silently takes more than asked
// is worse than none, so weft uses libpcap itself, where tcpdump is
// installed on the controller; without it a Capture with a filter fails
// with that reason and one without a filter works.
//
// # The upload stream and the merge
//
// An agent sends each capture's packets in one long HTTP request body
// (Writer, Reader; the format is in record.go): interface declarations,
// packets with their kernel timestamps, direction and drop reason, Marks
// ("nothing earlier than T follows", with the count of packets lost) and
// an End. The collector decodes it strictly (FuzzReader) and hands it to
// a Merger, which writes a packet once every uploading host has shown
// that nothing earlier follows, or after Hold; the file's timestamps are
// therefore in order across hosts, and a packet that arrives after a
// later one was written is counted (Stats.Late), not written out of
// order. The pcapng has one interface block per (host, interface), with a
// comment naming the host, endpoint and interface, and on each packet a
// comment naming its host, endpoint and direction (and why it was
// dropped, for a dropped-only capture) plus the EPB direction flag.
package capture
