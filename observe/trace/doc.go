// Package trace is the host-independent half of weft's path trace: the
// report an agent sends about a trace (DecodeReport checks it; it is
// fuzzed) and the merge of every host's hops into one path (Merge,
// Outcome).
//
// # How a trace flows
//
//	weft trace --tenant T --from A --to B ──POST Trace──▶ controller
//	  resolves the ends (endpoints, hosts, addresses, VNI), draws a token,
//	  status Arming: the trace enters the views of the hosts of A and B
//	agents: the data plane sets up its observation (Observer.Observe) and
//	  reports Armed ──POST .../traces/NAME/report──▶ controller
//	every host armed: status Running, the trace's view resource Fires
//	source agent injects the probe at A's interface (or starts tagging)
//	every host reports the hops its kernel saw ──report──▶ controller:
//	  Merge into status.hops, Outcome: Completed, Delivered or Dropped
//	the CLI watches the object and prints the path
//
// Arming first is what keeps a probe from reaching the destination's
// application: the destination host consumes it at its last hop, which
// must be in place before the probe is released. A probe that reaches
// no end within the probe timeout completes as Dropped with the last
// point it was seen at. The kernel side, where each hop is the kernel's
// own observation, is datapath/linux (trace.go); datapath/sim answers from
// its model.
package trace
