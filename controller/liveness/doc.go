// Package liveness tracks which hosts are alive from their UDP heartbeats.
// The table lives in memory; only state changes reach etcd, in batches.
//
// # The table
//
// A Table is a slice of fixed-size slots indexed by host ID (the
// controller hands out dense IDs, Host.status.hostID), sized up front for
// Config.Capacity hosts (default 2^20). A slot is BytesPerHost (40) bytes
// and holds no pointers, so 1,000,000 hosts take 40 MB that the garbage
// collector never scans:
//
//	lastSeen   int64   monotonic ns of the latest heartbeat   (atomic, Observe)
//	view       uint64  view version from the latest heartbeat (atomic, Observe)
//	health     uint32  health flags                           (atomic, Observe)
//	meta       uint32  state | flags (tracked, held) | flaps  (atomic, sweeper)
//	since      int64   when the state (or a hold-down) began  (sweeper)
//	flapStart  int64   start of the current flap window       (sweeper)
//
// Observe, the heartbeat hot path, is three atomic stores into the host's
// slot: no lock, no allocation, no contention between hosts. It does not
// change states; the sweeper does.
//
// # The sweeper
//
// Every SweepInterval (250 ms) the sweeper walks the slots up to the
// highest host ID seen (about 1 ms per million hosts) and moves each host
// by the age of its last heartbeat:
//
//	Unknown → Alive     a heartbeat arrived
//	Unknown → Dead      tracked (Track) but silent for DeadAfter
//	Alive   → Suspect   no heartbeat for SuspectAfter (1.5 s)
//	any     → Dead      no heartbeat for DeadAfter (2.5 s)
//	Suspect, Dead → Alive on a new heartbeat
//
// so a host that stops is Dead at most DeadAfter + SweepInterval = 2.75 s
// after its last heartbeat (the goal is 3 s).
//
// Flap damping: every drop out of Alive counts in the host's flap window
// (FlapWindow, 1 minute). A host that dropped more than MaxFlaps (3) times
// in the window is not Alive again on its first heartbeat: it stays (or
// becomes) Suspect, held, until HoldDown (10 s) of uninterrupted
// heartbeats have passed.
//
// # Transitions
//
// The sweeper queues each change as a Transition; every FlushInterval
// (500 ms) a separate goroutine hands the queued ones, coalesced per host,
// to the Sink, so a slow Sink never delays detection. A failing batch is
// handed again at the next flush (up to SinkAttempts times). RegistrySink
// is the Sink that writes Host.status.liveness and lastSeen through the
// registry and marks the endpoints of a dead host Lost.
//
// Metrics: weft_liveness_hosts{state}, weft_liveness_transitions_total{to},
// weft_liveness_sweep_duration_seconds, weft_liveness_sink_errors_total.
package liveness
