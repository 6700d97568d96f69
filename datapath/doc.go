// Package datapath defines the interface between a weft agent and the data
// plane of its host, and the types that cross it.
//
// The agent hands a Driver the whole desired state of the host with Set
// (level-based: the driver diffs against what is programmed and converges;
// the same state twice is a no-op). Remote endpoint locations are not part of
// that state: they are learned on demand. When a local endpoint sends to an
// address the driver cannot place, the driver emits a Miss; the agent asks
// the controller and answers with Learn. Forget invalidates what was learned.
//
// Drivers:
//
//   - datapath/linux: network namespaces, veth, VXLAN, nftables, tc.
//   - datapath/ebpf: tc programs and BPF maps, one VXLAN device per host.
//   - datapath/sim: in memory, cheap enough for 100,000 per process.
//
// Every driver passes the suite in datapath/conformance.
package datapath
