// Package demo is weft's lab: a small data centre made of network
// namespaces on one Linux machine (a testnet.Net), with a real `weft agent
// --datapath linux` (or ebpf: LabConfig.Datapath) process in every host
// namespace, and the `weft demo` flow built on it (Run).
//
// # The lab
//
//	root netns (the user's)                 "<prefix>-ul" (underlay)
//	┌──────────────────────────────┐        ┌───────────────────────────────┐
//	│ <prefix>-ctl 198.51.100.1/24 ├─veth───┤ ctl ─┐                        │
//	│ controller API :7443,        │        │      br0 ─ h1 ─ h2 ─ h3       │
//	│ agents :7444 (TCP and UDP)   │        └──────────┬────┬────┬──────────┘
//	└──────────────────────────────┘                   │veth│    │
//	"<prefix>-h1": ul0 192.0.2.11/24 (underlay, VXLAN) + 198.51.100.11/24
//	(control), runs `weft agent --host h1 --netns-prefix <prefix>`, whose
//	datapath makes "<prefix>-h1-v<vni>" and "<prefix>-h1-e<hash>".
//
// The underlay addresses are the example's (192.0.2.0/24, TEST-NET-1). The
// controller is reached on a separate control subnet (TEST-NET-2 by
// default, TEST-NET-3 if the machine already routes that) on the same
// bridge, so that the lab never adds an address of a subnet the machine
// itself uses: many machines, this one included, use TEST-NET-1 for real.
// Without a root link (Options.RootLink false; the tests) the control
// address sits on br0 inside the underlay namespace and a controller is run
// there, so nothing at all is added to the root namespace.
//
// Everything the lab makes is named with its prefix and removed by name by
// Close, also after a failure half-way; Close first stops the agents and
// tears down their data planes through the lab's driver.
package demo
