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
// handed again at the next flush (up to SinkAttempts times). A BatchSink
// is called at every flush, with the state counts and even without
// transitions. RegistrySink is the BatchSink that writes
// Host.status.liveness and lastSeen through the registry (or queues them
// to a HostStatusQueue that merges them with the host's other status
// fields) and marks the endpoints of a dead host Lost.
//
// # Mass disruption
//
// When a large share of the hosts stop being Alive at once (by default
// 55% of the hosts Alive, Suspect or Dead, if there are at least 50), the
// likely cause is the controller, the network or the power, not the hosts
// (Kubernetes' node lifecycle controller reasons the same way). While such
// a disruption lasts, RegistrySink still writes hosts Dead, but marks no
// endpoint Lost, and does not write the drops from Alive to Suspect that
// come and go by the thousand when every agent is late. It ends when the
// share has stayed below the threshold for 10 s; the endpoints of the
// hosts still dead are marked then. Outside a disruption, endpoints are
// marked at most 500 per second (1,000 at once), so that a disruption
// ending, or a large failure below the threshold, does not load etcd with
// one storm of writes. See RegistrySinkConfig.
//
// Metrics: weft_liveness_hosts{state}, weft_liveness_transitions_total{to},
// weft_liveness_sweep_duration_seconds, weft_liveness_sink_errors_total;
// RegistrySink's: weft_liveness_disrupted,
// weft_liveness_endpoint_markings_deferred_total{reason},
// weft_liveness_endpoint_markings_pending,
// weft_liveness_suspect_writes_skipped_total.
package liveness
