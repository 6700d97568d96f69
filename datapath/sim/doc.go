// Package sim is an in-memory datapath.Driver for scale runs and for tests
// of the layers above the data plane.
//
// A Driver keeps the normalized desired state, the learned remotes and a
// count of every add/update/del per object kind. It starts no goroutines
// (a traced probe waiting for a location has a timer) and allocates its maps and its Misses channel lazily, so one process can
// host 100,000 of them (see BenchmarkMemory for bytes per driver). Resolve
// decides a packet's fate the way the linux driver's per-VPC router does,
// including the on-demand learn path: an unknown destination inside the VPC
// emits a Miss; once Learn'd, it forwards to the remote host. QoS is kept
// as state: Snapshot reports what the linux driver enforces of it
// (datapath.QoS.Enforced), Counts its changes (kind "qos").
//
// It answers traces and captures (datapath.Observer) from the same model:
// a probe takes the path Send would give it, hop by hop, with the policy
// verdicts and the rule that decided, waits for an unknown location as a
// packet does (and is dropped for it after LocationHold), and crosses to
// the destination host's driver over a shared Underlay (Config.Underlay;
// to another process's through Underlay.Elsewhere and Underlay.Arrive);
// a capture records well-formed synthesized frames of what Send and
// Deliver see at its endpoints, through its BPF filter and budget (see
// observe.go).
//
//	d := sim.New(sim.Config{})
//	_ = d.Set(ctx, desired)
//	dec, _ := d.Resolve("acme/web-1", netip.MustParseAddr("10.0.1.20"))
//	// dec.Verdict == sim.VerdictMiss and d.Misses() yields {VNI, 10.0.1.20}
package sim
