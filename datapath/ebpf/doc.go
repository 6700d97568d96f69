// Package ebpf is a datapath.Driver on eBPF: tc programs (legacy tc
// filters or tcx links, see "Attaching programs") on each endpoint's
// host-side veth and on one collect-metadata VXLAN device per host,
// forwarding by lookups in BPF maps keyed by (VNI, address). It
// needs no router namespace per VPC: the VNI in every key keeps tenants
// whose addresses overlap apart. It enforces security policy and QoS with
// the linux driver's semantics and passes datapath/conformance, policy and
// QoS included, like the linux and sim drivers.
//
// # Layout on one host
//
//	host netns (the agent's; in tests a testnet host)
//	┌────────────────────────────────────────────────────────────────────────┐
//	│ ul0 192.0.2.11 (underlay)                UDP :4789 (the VXLAN socket)   │
//	│ wftbx   vxlan external (collect metadata), gbp, nolearning, port 4789,  │
//	│         MAC = GatewayMAC, MTU = underlay - 50                           │
//	│         ingress: from_vxlan        egress: to_vxlan      (tcx)          │
//	│ wftb<hash> veth, MAC = GatewayMAC, alias "weft:acme/web-1"              │
//	│         clsact ingress: from_ep    (one per local endpoint; tc)         │
//	│ wftbq ── wftbr  the shaper veth pair: wftbq holds the HTB tree of the   │
//	│         caps (see "Quality of service"); wftbr ingress: from_shaper     │
//	│ ul0 root qdisc htb 7766: with a capacity (minimums, priorities)         │
//	└───────┬────────────────────────────────────────────────────────────────┘
//	        │ veth
//	netns <prefix>-<host>-e<hash> (endpoint acme/web-1; or a given one)
//	┌────────────────────────────────────────────────────────────────────────┐
//	│ eth0 10.0.1.10/24 noprefixroute, MAC from the API                      │
//	│ default via 10.0.1.1 dev eth0 onlink (proto 87)                        │
//	│ neigh 10.0.1.1 -> GatewayMAC permanent                                 │
//	└────────────────────────────────────────────────────────────────────────┘
//
// The host namespace has no address, route or neighbour of any tenant: the
// kernel's IP stack never sees tenant packets there, so overlapping VPCs
// share nothing but the maps, where every key starts with the VNI.
//
// # Maps
//
// Programs and Go share the layouts in bpf/weft.c (bpf2go generates the Go
// types). Addresses are stored in network byte order.
//
//	locals    hash  (vni, ip) → host-side ifindex, MAC, flags,       local endpoints, as destinations
//	                ingress class, receive shaping class
//	ifaces    hash  ifindex → vni, ip, identity, MAC, flags,         the endpoint behind a veth, as sender
//	                egress class, skb priority, outer TOS
//	remotes   hash  (vni, ip) → host underlay, identity, epoch       learned (no prealloc, 1M)
//	subnets   LPM   (vni, prefix) → gateway                          the VPCs' subnets
//	vpcs      hash  vni → flags, HTB class minors (the driver's)     VNIs this host carries
//	config    array [0] → VXLAN and shaper ifindex, underlay, flags (hold)
//	counters  per-CPU hash  ifindex → tx/rx packets and bytes, drops by DropReason
//	miss_seen LRU   (vni, ip) → last report time                     miss rate limit (100 ms)
//	events    ring buffer (64 KiB) of misses (vni, ip)
//	pol_ids   hash  (class, identity) → port set                     policy peers by identity
//	pol_nets  LPM   (class, prefix) → port set                       policy peers by address
//	pol_ports hash  (port set, proto, block bits, port) → 1          port blocks of a port set
//	pol_icmp  hash  (port set, type) → code bitmap                   ICMP of a port set
//	conns     LRU   (vni, 5-tuple) → last seen, sender identity, flags, ICMP type/code
//	frags     LRU   (vni, src, dst, IP ID, proto) → time             datagrams whose first fragment passed
//	flows     LRU   (vni, 5-tuple) → packets, bytes, dropped,       sampled flows (Config.FlowSampling)
//	                last seen, drop reason
//
// Set writes vpcs, subnets, locals, ifaces, counters, config and the
// policy maps, and deletes connections a policy change no longer allows;
// Learn and Forget write remotes; the programs write conns, frags,
// miss_seen and counters. counters is the per-endpoint metrics source:
// Driver.Counters sums an endpoint's per-CPU values.
//
// # How a packet flows
//
// from_ep (tc ingress of the host-side veth: everything an endpoint sends)
// finds the sender in ifaces and counts it; sets the packet's mark (the
// sender's identity and "policy applied", datapath.Mark*) and skb priority
// (its class on the uplink, whatever the workload put there); drops a
// source address that is not the endpoint's (no spoofing); answers ARP for
// any address of the VPC's subnets but the endpoint's own with GatewayMAC
// (the endpoint has the gateway as a permanent neighbour, so only a
// workload that removed it asks); judges the packet by policy when the
// sender or a local destination is isolated (see "Security policy"); then
// looks the destination up by (VNI, IP):
//
//   - locals: decrement TTL, rewrite the MACs, bpf_redirect_peer to the
//     destination's veth peer (straight into the endpoint's namespace, no
//     second backlog queue); through the shaper if the sender or the
//     destination is shaped;
//   - remotes: decrement TTL, set the tunnel key (VNI, remote underlay,
//     source underlay, the sender's DSCP as outer TOS, TTL 64, zero UDP
//     checksum) and the mark's identity, "policy applied" and trace bits as
//     the VXLAN-GBP option, bpf_redirect to the VXLAN device, which
//     encapsulates and sends from the host's socket (a shaped sender's
//     packets go through the shaper first, which sets the key after);
//   - a gateway of the VPC (subnets LPM, value = gateway): an ICMP echo is
//     answered in BPF, anything else dropped;
//   - another address of the VPC's subnets: a miss (see "Learning");
//   - outside the VPC: dropped (no route).
//
// from_vxlan (tc ingress of the VXLAN device) reads the VNI from the tunnel
// key and the sender's identity from the GBP option (into the mark), looks
// up (VNI, inner destination) in locals, judges the packet by the
// destination's ingress policy if it is isolated, rewrites the MACs and
// redirects to the peer (through the shaper if the destination's receiving
// is shaped); anything else is dropped. The sender leaves the inner source
// MAC as the endpoint's: the VXLAN device drops frames whose source MAC is
// its own (GatewayMAC) as loops.
//
// Drops are counted per endpoint by datapath.DropReason (policy, no-route,
// unknown-location), at the sender and, for ingress policy, at the
// destination, beside the packets and bytes each endpoint sent and
// received; Traffic (datapath.TrafficReader) reads them for the agent's
// flow reports, and the sampled flows (see "Flows").
//
// # Flows
//
// With Config.FlowSampling N > 0, 1 in N flows (a VPC's 5-tuple; ICMP:
// type and code as destination port, no source port) are counted in the
// flows map, as the linux driver's flow hooks do: from_ep counts every
// TCP, UDP, SCTP, UDP-Lite and ICMP packet an endpoint sends, from_vxlan
// those arriving from another host for a local endpoint, each with the
// packets and bytes, the time of the last one, and the packets dropped
// after the flow was counted (policy, no route, unknown location) with
// the last reason. A flow is chosen by a hash of its key with the same
// seed on every host (MurmurHash3's finalizer over its words; not the
// linux driver's Jenkins hash, so hosts of the two drivers may sample
// different flows), so a sampled flow is counted on both hosts it
// crosses. Traffic reports the flows seen within
// datapath.FlowIdleTimeout and deletes older ones; the LRU map (65,536
// flows per host) evicts the least recent when full. The time of a flow's
// last packet is the tick's (bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC_COARSE
// in Go). TestFlowSampling.
//
// What it costs (every flow sampled: the agent's default --flow-sampling
// 1): a hash lookup, two atomic adds and a clock read per packet in from_ep
// and from_vxlan. Measured with the kernel's BPF run-time statistics
// (kernel.bpf_stats_enabled=1, mean ns per program run) in one run of
// the data plane benchmark's throughput and latency phases with the
// ebpf driver at flow sampling 1 and 0 side by side (weft bench datapath
// --datapath ebpf --ebpf-flow-sampling 1,0; 7 rounds at MTU 1500, load
// average 10-14 on 2 cores): a
// small packet (TCP request/response) costs from_ep 43 ns and from_vxlan
// 30 ns more with sampling than without (before the coarse clock, another
// run: 88 and 57 ns), a 64 KB GSO packet of a bulk stream about 100 and
// 77 ns. Four program runs per request/response (two each way) make
// about 0.15 µs of a round trip of about 8 µs here (2%); on a bulk stream
// it is under 1% of the time per packet. Neither difference showed in
// the interleaved throughput or round-trip figures themselves, which
// spread more than that at this load. Sampling 1 in N costs the same
// hash computation for every packet but the lookup only for the sampled
// flows.
//
// # Learning
//
// A miss writes (VNI, IP) to the ring buffer (at most once per 100 ms per
// destination: miss_seen), which the driver's reader turns into a
// datapath.Miss; the agent asks the controller and calls Learn, which
// writes remotes. The first packets are held, not dropped: from_ep sends
// them with bpf_redirect_neigh to the VXLAN device with the IPv6 next hop
// fd77:7766::<vni>:<ip>. The kernel queues them on that INCOMPLETE
// neighbour (up to unres_qlen_bytes) and, with app_solicit=1 and no
// unicast/multicast probes on the device, sends nothing (only an
// RTM_GETNEIGH, which nobody needs). Learn of a destination that missed in
// the last second then resolves the neighbour to 02:77:00:<vni> (the hold
// MAC) and deletes it: resolving transmits the queue at once through the
// VXLAN device, whose egress program to_vxlan recognises the hold MAC,
// takes the VNI from it, finds the remote just learned and sets the tunnel
// key (or redirects to a local endpoint if the destination moved here).
// Without an answer the neighbour fails after retrans_time (1 s) and its
// packets are dropped; the next packet asks again. Config.MissMode =
// MissDrop drops the first packets instead.
//
// Measured (BenchmarkFirstPacket, two hosts, an in-process table answers
// misses, the peer's host has forgotten the sender too, so request and
// reply both miss; 100 peers held, 10 dropped; two runs on 2 cores shared
// with other work, load average 9.4-9.7 and 15.7-17.3):
//
//   - hold: ICMP echo p50 0.19 / 0.19 ms, p99 4.3 / 3.8 ms, none lost; TCP
//     connect+hello p50 0.42 / 0.42 ms, p99 5.6 / 15.7 ms;
//   - drop: TCP connect+hello p50 2.05 s, p99 2.05 / 2.07 s (the SYN and
//     then the SYN-ACK are each retransmitted after 1 s); a single ping
//     never returns.
//
// Holding is kept: it is three to four orders of magnitude faster. The p99
// is the scheduling of the reader and the answering goroutine on a loaded
// machine, not the data path (warm echo p50 ~0.05 ms, TestConnectivityMatrix).
//
// # Security policy
//
// The semantics are datapath.EndpointPolicy's (Kubernetes
// NetworkPolicy), datapath.Flow's methods their reference: the sender's
// host judges its egress, the destination's host its ingress, with the
// sender's identity, which crosses hosts in the VXLAN-GBP group policy ID
// (the tunnel option; the collect-metadata device neither reads nor writes
// the mark itself) and stays in the mark inside the host (bits 0-15, the
// "policy applied" bit 19 and the trace bit 22 as datapath.Mark* lays them
// out). Everything lives in the host namespace and the maps, out of the
// workload's reach.
//
// Compiling: an isolated direction's rules make a class, named by a hash
// of its content (endpoints with the same rules share one; a changed
// policy makes a new class). Its peers by identity (ingress) and by
// address go into pol_ids and pol_nets, each giving a port set; pol_nets
// is a longest-prefix-match trie keyed by (class, address), in which each
// prefix holds the union of what it and every prefix containing it allow,
// and rules for all peers are the prefix 0.0.0.0/0, so one lookup finds
// everything an address is allowed. A port set (datapath/internal/ports,
// the linux driver's compiler) is everything, or port ranges split into
// aligned blocks (pol_ports, keyed by the port with its low bits cleared;
// the set's blocks bitmap says which of the 17 block sizes to try) and
// ICMP types with code bitmaps (pol_icmp). Judging a packet is at most a
// hash lookup by identity, an LPM lookup by address, and a hash lookup per
// block size the set uses: the cost does not grow with the rules.
//
// Set puts the classes of every VPC before any endpoint points at them,
// switches the endpoints' classes (ifaces, locals), then deletes what no
// endpoint uses: no packet sees half a change. A VPC whose entries the
// maps refuse (full) fails alone and keeps its old classes.
//
// Connection state: packets of a tracked connection pass either way; the
// first packet of one is judged and, when it starts a connection (a TCP
// SYN, UDP, an ICMP echo or timestamp request, other protocols by
// address), tracked in conns, keyed by VNI and 5-tuple (an ICMP request's
// identifier and type in place of ports, its reply's reversed), so tenants
// share no state. Only traffic of an isolated endpoint (sender or local
// destination) is tracked: where nothing is judged, no state is kept and
// no lookup made. A TCP segment that is not a SYN, without state, is judged
// on its own and starts nothing (as the linux driver's
// nf_conntrack_tcp_loose=0), so a flushed connection stays dead whatever
// its peer sends. Entries expire (TCP 2 h, 10 s after a FIN or RST, UDP 2
// min, ICMP 30 s) and the LRU map evicts under pressure. Fragments after
// the first pass if the first one did (frags).
//
// A Set that changes an endpoint's class, identity or address (a digest
// of them differs from the last one judged by) reads every tracked
// connection and judges it again like its first packet with
// datapath.Flow's methods (a local sender's current identity, a remote
// one's from the entry); those no longer allowed are deleted before Set
// returns, so the connection is dead when it does (conformance
// PolicyLiveConnections, e2e TestPolicy/ebpf).
//
// The kernel's own conntrack is reachable from tc through kfuncs
// (bpf_skb_ct_lookup, _alloc, bpf_ct_insert_entry; present on this
// kernel), but packets this driver redirects never pass netfilter: the
// programs would create every entry themselves, in zones per VNI, and Set
// would flush them over ctnetlink by zone. A BPF map is one hash lookup
// per packet of an isolated endpoint's traffic and none for the rest,
// deleted from Go like any map entry. Its cost, measured: see
// "Performance".
//
// # Quality of service
//
// What datapath.QoS, datapath.VPCQoS and HostConfig.CapacityBps ask for:
//
//   - Caps (MaxRateBps, each direction, an endpoint's and its VPC's) are
//     shaped, not policed: a token bucket that drops held one TCP stream to
//     4-7 Mbit/s under a 100 Mbit/s cap (whole GSO packets lost,
//     retransmission timeouts). Shaped traffic goes into the HTB tree of
//     wftbq, one end of a veth pair in the host namespace: under an
//     unlimited root, per VPC with a cap a class for what its endpoints
//     send and one for what they receive, each holding a class per shaped
//     endpoint (htb.CapTree, the linux driver's ifb tree); the skb
//     priority names the class. The program on the other end (from_shaper)
//     sends the packet on: after the sender's class to the receiver's class
//     if it is shaped, then to the endpoint, or to a remote one through the
//     VXLAN device. What is left to do and the VNI ride in the destination
//     MAC (02:77:<stage>:<vni>) across the veth. The tunnel key is set
//     after the queue: the kernel keeps it per CPU until the packet is
//     sent, and queued packets had theirs overwritten by the next packet's
//     (TestQoSCaps lost a fifth of a stream so). Traffic of unshaped
//     endpoints never touches the shaper.
//   - Minimums and priorities (with a capacity): an HTB tree on the
//     underlay device (htb.Uplink, the linux driver's), classified by the
//     skb priority from_ep and from_shaper set (its class, 7766:<minor>;
//     best effort without QoS, whatever the workload asked for with
//     SO_PRIORITY: TestQoSUplink); encapsulation in the same namespace keeps
//     it.
//   - DSCP: the tunnel key's TOS, so only the outer header carries it (the
//     kernel copies the inner ECN bits): TestQoSUplink captures it.
//
// Class minors (an endpoint's is the same on the shaper and the uplink)
// persist in the maps (iface priority, locals' receive class, the vpcs
// entry), so a restarted driver keeps them and writes nothing. Snapshot
// reads what is enforced back from the classes the maps name. A foreign
// root qdisc on the underlay device is left alone and reported in the
// QoSErr of every endpoint under QoS (TestQoSUplinkNotOurs); caps and DSCP
// still hold. Measured (TestQoSCaps, load 7-9): 93.6-95.6 Mbit/s of TCP
// payload under a 100 Mbit/s cap (95.5 is the cap's payload), sent and
// received, across hosts and on one host; a UDP flood held at 96.5; two
// endpoints under a 200 Mbit/s VPC cap 190.8 together.
//
// # What is pinned where
//
// bpffs is mounted at Config.BPFFS (/sys/fs/bpf) if it is not. Everything
// lives under PinDir: "<bpffs>/weft/<prefix>-<host>", so test hosts and
// several hosts on one machine do not clash:
//
//	<dir>/<map>                    every map (pinned by name by the loader)
//	<dir>/progs-<hash>/<program>   the programs of the object with that hash
//	<dir>/links/<veth name>        from_ep on that endpoint's veth (HooksTCX)
//	<dir>/links/vxlan-ingress      from_vxlan
//	<dir>/links/vxlan-egress       to_vxlan
//	<dir>/links/shaper-ingress     from_shaper
//
// tcx links are pinned and legacy tc filters belong to their device, so
// both outlive the agent: Close leaves the data plane in place and packets
// flow while no agent runs (headless); only new misses go unanswered.
//
// # Attaching programs
//
// A program runs on a device's ingress or egress either through a tcx
// link (kernel ≥ 6.6) or through legacy tc: a clsact qdisc and a cls_bpf
// filter in direct-action mode (priority 1, handle 1, named "weft-" and
// the program's name; the kernel holds the program). Config.Hooks
// chooses:
//
//   - HooksAuto (the default): endpoint veths by legacy tc, the VXLAN
//     device and the shaper by tcx links; on a kernel without tcx (an
//     attach fails with ebpf.ErrNotSupported: link.AttachTCX runs
//     cilium/ebpf's feature probe) by legacy tc too, for the driver's
//     life.
//   - HooksTCX: tcx links everywhere.
//   - HooksTC: legacy tc everywhere, the fallback path, which tests force
//     (TestLegacyTC).
//
// Why endpoints use legacy tc: attaching a tcx link swaps the device's
// program array and waits for an RCU grace period (synchronize_rcu) under
// the RTNL lock, about 10 ms on these machines, so attaches do not
// overlap and each endpoint costs one; a cls_bpf filter's first insert
// waits only for an expedited grace period, when it waits at all.
// BenchmarkAttach (one Set of 200 endpoints on an empty host, 3
// interleaved rounds, load average 9.9-11.4 on 2 cores): tcx links 66
// endpoints/s (50..66), legacy tc 238 (217..257), HooksAuto 193
// (168..366).
//
// A Set attaches in the new mode first, then removes what another mode
// left (a pinned tcx link; a filter of ours in a clsact qdisc): a tcx
// program runs before tc's filters and ours pass nothing on to them, so
// no packet goes unhandled while an agent restarted in another mode
// moves the hooks (TestLegacyTC switches under a 5 ms ping). The filter
// goes, not its clsact qdisc (left empty on our own device, which
// Teardown deletes): deleting the qdisc lost one of TestLegacyTC's pings
// in 3 of 26 runs, deleting the filter in 0 of 24 (2026-12-07, load
// average 2-4). A filter
// running another build's program is replaced in place. Set reads the
// filters of a device only if it has a clsact qdisc (one qdisc dump per
// Set tells).
//
// # Owned state, adoption, drift, teardown
//
// New adopts what a driver of the same host and prefix pinned: maps whose
// layout matches this build's (an incompatible one is replaced), the
// programs of this build's object hash (another build's are loaded,
// pinned, and the links moved to them with an atomic link update by the
// next Set), and reads back the VPCs and learned remotes, epochs included.
// Adopting intact state writes nothing, and the first Set of the same
// state writes nothing either: TestRestartAdoptsWithoutWrites restarts a
// driver under a 5 ms ping and loses none.
//
// Set reads the host namespace's links and qdiscs, the pinned links and
// the maps, and writes only what differs (Counts proves idempotence): a
// deleted veth, map entry or link, a VXLAN device set down or with wrong
// settings are repaired (TestDriftRepair); veths "wftb<hash>", links, map
// entries and endpoint namespaces "<prefix>-<host>-e<hash>" that are not
// desired are removed. Learned remotes follow their VPC and are repaired
// from memory. The maps sized for a million entries (remotes and the
// policy maps: walking one costs milliseconds however empty, the kernel
// visits every bucket) are read at most once per Config.MapResync (1 s);
// a Set in between trusts what the last one read and wrote and what
// Learn and Forget wrote since (TestMapResyncCache). The inside of an endpoint's namespace (interface, address,
// gateway neighbour, default route) and its program's filter are read
// when the endpoint is new or changed, its veth was re-made or set down,
// its device lost its clsact qdisc, or Config.EndpointResync (20 s, below
// the agent's 30 s reconcile; shortened by up to half by a hash of the
// endpoint's ID) passed since they were last read; a fresh veth's peer is
// written without reading (TestEndpointResyncCache). So a Set that
// attaches one endpoint more reads one namespace and one device's filters,
// not every endpoint's. A Set whose only change is endpoints more or
// fewer (none under QoS, on a host and VPCs without QoS, nothing
// refused), within Config.MapResync of the last Set that read the host
// and had no error, goes further (setNewEndpoints): it removes the ones
// that went (veth, link, namespace, map entries, unused policy classes)
// and makes the new ones (veth, inside, filter, policy classes, map
// entries) without dumping the host namespace's links and qdiscs,
// reading the VXLAN device, its sysctls and hooks, the shaper, the
// uplink's tree or any map: those grew with the endpoints and cost about
// two thirds of an attaching Set at 200 endpoints. Drift elsewhere (a
// veth deleted behind its back) waits for the next Set of any other
// change or the first after the interval
// (TestAttachTrustsWithinMapResync), as the linux driver's VPCResync
// does; a failure on the way sends the Set down the full path. So
// attaching one endpoint per Set costs the same on a host with 10 or
// 1,000 endpoints (see "Performance"), and detaching one reads nothing of
// the others either (not measured apart). A negative interval (either)
// makes every Set read everything. Tracked connections are judged again
// only while some endpoint is isolated (no program looks them up
// otherwise; the first Set that isolates one judges them all).
//
// Teardown closes the driver and removes the VXLAN device, the shaper
// veth, every "wftb<hash>" veth, the endpoint namespaces it made, its HTB
// tree on the underlay device and the pin directory (also when its
// context ends on the way: TestTeardownPastDeadline; a benchmark's
// teardown of 1,000 endpoints under load had left one); with the last
// references gone the kernel frees the programs, maps and links
// (TestTeardown checks by ID).
//
// # Refused VPCs
//
// A VPC this driver cannot program (an IPv6 subnet: ErrUnsupported), one
// Normalize found invalid (datapath.Desired.Invalid) and one whose policy
// entries the maps refuse fail alone: Set's error wraps a
// datapath.VPCError naming the VPC and why, the VPC keeps what was
// programmed before (no endpoint is added, removed or changed), its
// programmed endpoints report the reason in EndpointStatus.PolicyErr (and
// QoSErr), and every other VPC is programmed (TestRefusedVPC, conformance
// InvalidVPCContained). Nothing is silently ignored. IPv6 policy peers
// match nothing here: no packet of this IPv4 overlay can come from one.
//
// # Performance
//
// weft bench datapath --datapath linux,ebpf (7 rounds, one run on 2 cores
// shared with other work, load average 25-30, so the ratios spread
// widely): overlay/veth TCP throughput median 0.726 (0.644..1.292) at MTU
// 1500 against the linux driver's 0.607 (0.404..0.754), 0.677 against
// 0.508 at 9000; CPU per GB sender/receiver 3634/3720 ms against
// 4614/5039 (veth 3036/2536); TCP request/response p50 23.0 µs against
// 28.2 (veth 14.4); first packet to a never-seen peer p99 1.7 ms against
// 17.7; a restart's resync of 1,000 endpoints 0 writes and 0 lost echoes
// for both. Attaching endpoints one Set each runs at 7.7/s against 6.7/s,
// but 200 endpoints in one Set at 52/s against 221/s: attaching a tcx
// program waits for an RCU grace period under the RTNL lock (about 10 ms
// of each endpoint's 16 ms here), so attaches do not overlap. Endpoints
// are now attached by legacy tc (see "Attaching programs"): two runs of
// weft bench datapath --rounds 3 (2026-12-07, load average 19-23), one
// with --datapath linux,ebpf and one with ebpf,linux, gave one Set of 200
// endpoints 165.9/s and 259.5/s against the linux driver's 174.6/s and
// 79.8/s in the same runs (whichever driver runs second is slower: the
// first one's namespaces are still being freed); first packet p99 3.8 and
// 3.5 ms against 1.3 and 0.4 ms; in the second, answering (a miss
// received to Learn returned) took p99 0.53 ms: the rest lies between the
// BPF program and the answerer (ring buffer, reader) or in the held
// packet's release, not found yet.
//
// Where the overlay's throughput goes (the same bpf_stats run as in
// "Flows", no flow sampling): per 64 KB GSO packet of a bulk stream,
// from_ep runs about 360 ns, to_vxlan 90 ns and from_vxlan 380 ns, under
// 1 µs of the roughly 45 µs each such packet took end to end at that
// run's 11 Gbit/s: the programs are not what keeps the overlay below the
// veth pair. The rest is the kernel's: encapsulation and decapsulation, and
// four queues (the endpoint veth's backlog, the underlay veth's twice
// across the test bridge, the VXLAN device's GRO cell) where the veth
// pair has one; the packets stay 64 KB GSO packets all the way, so GRO
// has nothing to merge. On a small packet the four runs of a request and
// its response (from_ep, to_vxlan, from_vxlan each way) take about
// 0.7 µs of a round trip of about 8 µs.
//
// The test net's wire alone is below the goal. In one run of the
// throughput phase (ebpf, 5 rounds at MTU 1500, load average 3.4) TCP
// between the two host namespaces over the bare test underlay (veth,
// bridge, veth; no overlay) carried 0.837 of the veth pair in the same
// rounds, and the overlay 0.918 of that underlay (0.774 of the veth
// pair); both CPUs were 29% idle during the overlay's streams and the
// veth pair's alike (BBR paces them; see "What limits it" in
// datapath/linux). The overlay rides on that wire, so 0.95 of the veth
// pair is out of reach on this test net whatever the programs do: what
// is the driver's is the gap between the underlay and the overlay
// (encapsulation, the endpoint veth's backlog, the GRO cell). XDP does
// not close it (see "XDP: measured, not used"). BIG TCP was not tried
// again: the linux driver found that VXLAN takes packets above 64 KB only
// when bound to the underlay device, which this driver's collect-metadata
// device is not, and that they are segmented in software before the wire.
//
// Tried, not kept: decapsulating in a tc program on the underlay device's
// ingress (bpf_skb_adjust_room, then bpf_redirect_peer to the endpoint),
// which skips the IP stack, the UDP socket and the GRO cell. An
// experimental program, not in the tree, measured as a variant in the
// same rounds (three runs, 6-9 rounds at MTU 1500, load average 8-16):
// TCP request/response p50 10.8-10.9 -> 9.8-9.9 µs, bulk throughput 0.76,
// 1.23 and 1.12 of the driver's without it (too spread to call). It is not
// kept because on this kernel a program cannot clear a decapsulated GSO
// packet's tunnel state (SKB_GSO_UDP_TUNNEL, skb->encapsulation), which the
// kernel's VXLAN receive clears: an endpoint that forwards such a packet
// (a router or NAT in a VM) would have it segmented as a tunnel packet.
// bpf_skb_adjust_room's BPF_F_ADJ_ROOM_DECAP_L4_UDP (1 << 10) clears it
// in later kernels; this one refuses the flag (a test run of the program
// with it took the helper's error path, without it decapsulated). With
// it, or for packets that are not GSO, this is the next step for the
// receive path.
//
// Attaching one endpoint per Set (a Set with one endpoint more than the
// last, as an agent attaching containers one by one calls it) re-read
// every endpoint's namespace and filters and walked the remotes and
// policy maps (a million buckets each) on every Set; now it reads the new
// endpoint only (Config.EndpointResync) and the big maps once per
// Config.MapResync. The benchmark's attach phase (200 endpoints, linux
// and ebpf; two runs, load average 15-18): 45.8 and 70.5 endpoints/s with the
// defaults against 10.9 and 22.7 with every Set reading everything (the
// old behaviour) in the same runs; the linux driver 267 and 269. What a
// Set still costs at 200 endpoints: making the new endpoint (namespace,
// veth, inside, clsact and filter; its first filter waits for an
// expedited RCU grace period), the host namespace's link and qdisc dumps
// and the uplink's HTB tree, which grow with the endpoints.
//
// Measured step by step (a timer around each step of Set, 200 successive
// Sets on one host with the defaults, load average 3-5): a Set took 5.0
// ms on average, of which making the new endpoint 1.8 (namespace and veth
// 1.27, its inside 0.38, clsact and filter 0.13); the rest was reading
// what the Set before had left: the link dump 0.80, the qdisc dump 0.48,
// the ifaces, locals and vpcs maps 0.46, the subnets and counters maps
// 0.33, the namespace directory 0.17, judging the tracked connections
// again 0.14 (no endpoint was isolated), and the VXLAN device's sysctls
// and hooks, the shaper and the underlay's MTU 0.50. A Set that only
// attaches endpoints now skips all of it (setNewEndpoints, see "Owned
// state, adoption, drift, teardown"). One Set per endpoint, both drivers
// in the same run (2026-12-07, other work on the machine, load average
// 5.7-12): the attach phase alone with the ebpf driver first 417.2/s (p50
// 1.89 ms) and 428.5/s against the linux driver's 213.0/s (2.48 ms) and
// 268.3/s, with linux first 302.5/s (2.44 ms) and 288.9/s against 147.5/s
// (3.99 ms) and 184.2/s; weft bench datapath --datapath linux,ebpf
// --rounds 3, 292.5/s (p50 2.44 ms) against 176.6/s (3.13 ms).
//
// # Building the programs
//
// bpf/weft.c is compiled by clang-14 with libbpf-dev's headers (Debian
// bookworm) through bpf2go (go generate, see gen.go); weft_bpfel.o and
// weft_bpfel.go are committed, so `go build` needs no clang. The object is
// reproducible: the same source gives the same bytes in any directory.
//
// Not done yet: IPv6 overlay and underlay.
//
// # XDP: measured, not used
//
// Where XDP could help on these hosts is the underlay device receiving
// the VXLAN traffic: a program there could decapsulate and send a packet
// to its endpoint before the IP stack, the UDP socket and the VXLAN
// device's GRO cell. The least any program there costs was measured
// first: one that passes every packet (XDP_PASS, native mode on the test
// net's underlay veths of both hosts), as a variant of the ebpf driver in
// the same interleaved rounds as the driver without it (the benchmark's
// DatapathConfig.EBPFUnderlayXDP; MTU 1500, two runs of 5 and 6 rounds,
// load average 5-7 in the first, the second under a profiler): its
// overlay carried 0.323 (0.200..0.449) and 0.424 (0.349..0.575) of the
// driver's without it, at 2.5-4.6 times the CPU per GB; its TCP
// request/response p50 10.8 -> 11.8 µs, p99 45 -> 68 µs (first run). A
// veth with an XDP program receives in NAPI mode and copies every packet
// that is not one linear buffer, every 64 KB GSO packet of a stream,
// into page-pool pages before the program runs (skb_pp_cow_data
// under veth_xdp_rcv_skb in a profile of the run): that copy alone costs
// more than a decapsulating program could save. An endpoint's veth is the
// same; the VXLAN device runs XDP only in generic mode, after the packet
// is an skb. On a physical NIC native XDP sees MTU-sized frames before
// GRO, so a program that decapsulated and redirected there would hand
// the endpoint every frame alone, without GRO. XDP pays where packets are
// dropped or sent back early (a DDoS prefilter, a load balancer), which
// this driver does not do; so it has no XDP program.
package ebpf
