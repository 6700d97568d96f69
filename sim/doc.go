// Package sim runs weft at scale on one machine: a controller (one or more
// replicas sharing one etcd) and N simulated hosts, each a real agent
// (package agent) with its own TCP config stream, host key and host ID,
// speaking the real southbound protocol over loopback to a datapath/sim
// driver. The agents of a process share UDP sockets (udpmux.Mux,
// AgentsPerSocket agents each): every agent still seals its datagrams with
// its own key, ID and sequence numbers, the controller answers to the
// address they come from, and the mux hands each answer to the agent whose
// host ID it carries.
//
// # Processes
//
// A process may hold at most 20,000 open files, and an agent holds one (its
// stream), so a large run spreads over processes: with
// Config.Exec set, every controller replica and every group of agents runs
// in a child process (the weft binary re-executed with the hidden
// subcommand ChildCommand, which calls RunChild). Replica 0 serves the
// embedded etcd from the run's data dir; the others share it through its
// client URL. Each agent streams to the replica its rendezvous hash picks
// among all replicas and sends its datagrams to that same replica, from
// its group's UDP socket bound on one of several 127.1.x.1 source addresses
// (10,000 agents per address). Without Exec everything runs in this process
// (small runs, tests).
//
// # Child processes
//
// Every child process weft starts (a replica or a group of agents of a
// simulation, and the load generators of the benchmarks in sim/bench)
// speaks one protocol. The parent runs the binary with the hidden
// subcommand ChildCommand (the weft binary, or a test binary whose TestMain
// calls RunChild when it sees that argument) and writes a JSON header,
// {"role": ROLE, "debug": BOOL, "spec": {...}}, then command lines on the
// child's stdin. The child (RunChild) runs the role, the simulation's own
// or one of the ChildRoles it was given, answers with JSON lines on its
// stdout, each with a type "t" ("ready", "stats", ..., "error" with "err"),
// and logs to its stderr. A child stops when its stdin closes (and is
// killed if its parent dies), so nothing outlives the parent. StartChild
// starts one, in a process or in this one over pipes, and Child is the
// parent's end.
//
// # A run
//
// Setup bulk-loads the state before any agent starts: tenants, VPCs (one
// subnet each), hosts, endpoints and, if asked for, security policies are
// created through the registry (the controller's validating, allocating
// write path, which also gives every endpoint its security identity) by
// many concurrent writers against the embedded etcd; then the replicas
// start on it. Layout fixes where everything goes: endpoint e is on host
// e mod N, in VPC (e + e/N) mod K, so each host's endpoints spread over
// VPCs and each VPC's over hosts; with policies, endpoints carry an app
// label and each policy selects one app of its VPC. An agent counts as
// programmed when its stream is up, the view it holds is applied to its
// driver and that view holds exactly the endpoints Layout puts on its host
// (with the policies, compiled for them, that were loaded before the
// replicas started).
//
// # Traces and captures
//
// The simulated hosts answer traces and captures (weft trace, weft
// capture, the Trace and Capture objects) as real ones do: each agent
// reports what its driver observed to its replica's API, as a real agent
// does with its ObservationReporter (the replicas serve their API over
// plain HTTP on loopback without credentials, so the agents present
// none), and the drivers of one agents process share one simulated
// underlay (datapath/sim.Underlay), so a probe encapsulated on one host
// arrives at the destination host's driver and both hosts report their
// hops, merged by the controller into one path. A probe for a host of
// another agents process goes to the parent as a "crossing" line, and
// the parent hands it to that process with the command "arrive", whose
// underlay delivers it. An agent keeps no goroutine or buffer
// for observations until its view first holds a trace or a capture
// (agent.Config.ObserveOnDemand), so 100,000 agents cost no more for it.
package sim
