// Package linux is the real datapath.Driver: it programs a host's Linux
// data plane with network namespaces, veth pairs and VXLAN, through
// netlink only (vishvananda/netlink, mdlayher/netlink for the miss
// listener, google/nftables), never by running ip(8), tc(8) or nft(8).
//
// # Layout on one host
//
// One router namespace per VPC on the host isolates VPCs whose address
// ranges overlap (the kernel has no VRF here). Each endpoint has its own
// namespace (made by the driver, or given, e.g. by a container runtime),
// joined to its VPC's router by a veth pair.
//
//	host netns (the agent's; in tests a testnet host)
//	┌──────────────────────────────────────────────────────────────────────────┐
//	│ eth0/ul0 192.0.2.11 (underlay)        UDP :4789 socket of every VXLAN dev│
//	│                                       (created here, so it stays here)   │
//	└───────▲──────────────────────────────────────────────────────────────────┘
//	        │ VXLAN/UDP to the remote host's underlay IP
//	netns <prefix>-<host>-v100 (router of VPC acme/main, VNI 100)
//	┌──────────────────────────────────────────────────────────────────────────┐
//	│ wftx100  vxlan id 100, local 192.0.2.11, nolearning, MAC = VTEPMAC(self) │
//	│          neigh app_solicit=1 mcast_solicit=0 ucast_solicit=0             │
//	│ lo       10.0.1.1/32 10.0.2.1/32   (the distributed gateways)            │
//	│ routes (proto 87):  10.0.1.0/24 dev wftx100   10.0.2.0/24 dev wftx100    │
//	│                     10.0.1.10/32 dev wfteXXXX (one per local endpoint)   │
//	│ neigh:  10.0.1.10 -> 02:..:0a permanent on wfteXXXX (no ARP)             │
//	│         learned: 10.0.2.20 -> VTEPMAC(192.0.2.12) permanent on wftx100   │
//	│ fdb:    VTEPMAC(192.0.2.12) dst 192.0.2.12 on wftx100                    │
//	│ wfteXXXX veth, MAC = GatewayMAC, alias "weft:acme/web-1"                 │
//	└───────┬──────────────────────────────────────────────────────────────────┘
//	        │ veth
//	netns <prefix>-<host>-e<hash> (endpoint acme/web-1; or a given one)
//	┌──────────────────────────────────────────────────────────────────────────┐
//	│ eth0 10.0.1.10/24 noprefixroute, MAC from the API                        │
//	│ default via 10.0.1.1 dev eth0 onlink (proto 87)                          │
//	│ neigh 10.0.1.1 -> GatewayMAC permanent (no ARP)                          │
//	└──────────────────────────────────────────────────────────────────────────┘
//
// All overlay links (VXLAN, both veth ends) get MTU = underlay MTU - 50
// (see "Tuning").
//
// # How a packet flows
//
// The endpoint sends everything, its own subnet included (noprefixroute),
// to the gateway, whose MAC it knows: the frame lands on the router's veth
// (MAC GatewayMAC = its own) and is routed in the VPC namespace. A local
// destination matches its /32 route and permanent neighbour. Any other
// address of the VPC matches a subnet route through the VXLAN device, whose
// neighbour entry maps the IP to the destination host's VTEPMAC; the FDB
// maps that MAC to the host's underlay address; the frame leaves as
// VXLAN/UDP from the host namespace's socket. The receiving VXLAN device
// (in the same VNI's router on the other host) sees its own MAC as
// destination and routes the packet to its /32. Inter-subnet routing thus
// happens on the source host, and there is no L2 flooding anywhere: no
// bridge, no default FDB entry, no ARP on the overlay.
//
// # How a miss is learned
//
// With app_solicit=1 and no unicast/multicast probes on the VXLAN device,
// the first packet to an unknown remote IP makes the kernel create an
// INCOMPLETE neighbour, queue the packet (up to unres_qlen_bytes), and send
// an RTM_GETNEIGH request to the RTNLGRP_NEIGH multicast group of the VPC
// namespace. A listener per VPC (one netlink socket and goroutine) turns it
// into Miss{VNI, IP}. The agent asks the controller and calls Learn, which
// installs the FDB entry for the remote host (once per host, reference
// counted) and then the permanent neighbour; the neighbour update releases
// the queued packets. Nothing is lost unless no answer comes within the
// neighbour retransmit time (1 s): then the entry fails and the next packet
// asks again. Measured here (BenchmarkFirstPacket, two hosts, in-process
// controller): an ICMP echo to a never-seen remote, whose request and reply
// both miss, comes back in about 0.2-0.3 ms; TestConnectivityMatrix logs
// the first-packet round trips of every pair. The data plane benchmark
// (sim/bench Datapath, 100 never-seen peers, request and reply both held)
// measured p50 0.085-0.090 ms, p99 0.42-0.58 ms, max 0.60-0.70 ms over
// three runs on a quiet machine, none lost.
//
// # What the driver owns
//
// Namespaces named "<prefix>-<host>-v<vni>" and "<prefix>-<host>-e<hash>"
// (named namespaces are global on a machine, so the host name is part of
// the mark); inside them, links "wftx<vni>" and "wfte<hash>" (alias
// "weft:<endpoint ID>"); routes of protocol RouteProtocol (87); in each
// VPC namespace the nftables table "ip weft" (PolicyTable, see "Security
// policy"). Set diffs
// the whole desired state against the kernel and writes only what differs:
// a second Set of the same state, or the first Set of a restarted driver
// over intact state, writes nothing (Counts proves it). It re-reads the
// VPC namespaces on every Set but one that only attaches new endpoints
// within Config.VPCResync (1 s) of a full one (see "Attaching"), and an
// endpoint's namespace when its Config.EndpointResync (20 s, below the
// agent's 30 s reconcile) has passed or the endpoint changed. Anything of ours that is not desired is
// removed, including namespaces of an earlier driver of the same host and
// prefix. A restarted driver adopts learned remotes from the VXLAN
// neighbour and FDB entries. Drift (a deleted veth, route, address,
// neighbour, a VXLAN device set down or with wrong settings, a VPC
// namespace unpinned behind our back) is repaired by the next Set that
// reads it: the next full Set in a VPC namespace, the first after the
// resync interval inside an endpoint's (the agent's reconcile, every 30 s,
// is one).
//
// Close leaves the data plane in place: packets keep flowing while the
// agent is down (headless); only new misses go unanswered. Teardown removes
// everything the driver owns on the host; devices are deleted explicitly
// before a namespace is unpinned, because namespace destruction is
// asynchronous and would keep the VNI registered in the host namespace.
//
// A veth end brought up before its peer has its queue activated later by
// the kernel's linkwatch work and drops packets until then; the driver
// ends endpoint setup with an RTM_GETLINK for each end, which runs pending
// linkwatch work for the device, so the endpoint's first packets are not
// lost.
//
// # Attaching
//
// An agent attaching containers one after the other sets states that
// differ by one endpoint each. What such a Set costs was once dominated by
// reading: every endpoint namespace (a socket, a handle and four dumps
// each) and every VPC namespace (links, routes, addresses, neighbours,
// remotes, the policy table, qdiscs), all growing with the endpoints on
// the host. Now:
//
//   - an endpoint namespace is re-read only when its resync interval
//     (Config.EndpointResync, default 20 s, shortened by up to half by a
//     hash of the endpoint's ID so that endpoints attached together are
//     not all re-read by one Set) has passed or the endpoint changed; a
//     fresh veth's peer is written without reading;
//   - a Set whose only change is new endpoints (without QoS, in VPCs
//     without QoS, on an unchanged host) within Config.VPCResync (1 s) of
//     a full Set attaches them from what that Set read and wrote
//     (attach.go): per endpoint the veth and its inside, a /32 route and a
//     neighbour; per VPC the policy table, diffed against the table last
//     written while the nftables generation says nobody else committed;
//   - the connection-flush dump after a policy change is skipped in a VPC
//     whose table judges nothing (no isolated endpoint): there everything
//     is allowed;
//   - a quick attach neither looks its veth up before creating it nor
//     reads the nftables generation a second time after its commit
//     (every commit adds one); with Config.NetnsPool, an endpoint without
//     a namespace of its own gets one made ahead (nspool.go, pinned as
//     "<prefix>-<host>-p<n>" and refilled in the background). What an
//     attach costs is now mostly the kernel's: creating the veth pair
//     (about half), the endpoint's namespace (a fifth), its inside.
//
// Drift is still repaired: by the first full Set (any Set that is not only
// attaching, or comes later than VPCResync) in the VPC namespaces, and
// after the resync interval inside the endpoint namespaces. Negative
// intervals make every Set read everything, as before.
//
// # Why a namespace per VPC
//
// Alternatives weighed: per-VPC routing tables selected by "ip rule iif"
// in one namespace share one local address table (every VPC's gateway
// 10.0.0.1 is a local address there, so overlapping gateways collide), one
// conntrack table (zones needed everywhere) and one nftables ruleset, and
// rules grow linearly with VPCs; VRF is absent from this kernel; eBPF
// (tc/tcx programs + maps, one VXLAN device in external/GBP mode) scales
// best but is a separate driver to come. A namespace per VPC isolates
// routes, local addresses, neighbours, conntrack, nftables (the per-VPC
// policy tables of a later issue) and sysctls completely, with plain kernel
// routing. Its costs, measured on this 2-core machine (go test -bench):
//
//   - a VPC (namespace, VXLAN device, sysctls, gateway, one endpoint) added
//     and removed: ~70 ms, 30 writes (BenchmarkVPCAddRemove);
//   - an endpoint with its own namespace added and removed: ~33 ms, 12
//     writes; about 25 ms of that is the kernel waiting for RCU grace
//     periods when deleting the veth (BenchmarkEndpointAddRemove);
//   - a Set that finds nothing to do, 10 / 50 endpoints: 2.0 / 11 ms
//     re-reading every endpoint namespace, 0.5 / 1.4 ms with EndpointResync
//     (BenchmarkSetUnchanged);
//   - per VPC in the agent: one netlink handle, one listener socket and
//     goroutine.
//
// And from the data plane benchmark (sim/bench Datapath; three runs on a
// quiet machine, load average 0.6-3.7):
//
//   - 200 endpoints attached one Set at a time, each Set with one endpoint
//     more: 39-46 endpoints/s, p50 21.4-26.2 ms per Set, growing with the
//     number of endpoints (the last Set 43.7-44.5 ms) because every Set
//     re-reads every endpoint namespace; with EndpointResync = 1m: 245-253
//     endpoints/s, p50 3.3-3.5 ms, p99 8.1-10.6 ms;
//   - 200 endpoints in one Set: 396-422 ms (474-504 endpoints/s), 10 writes
//     each;
//   - a restarted driver over 1,000 endpoints in 10 VPCs: New 5-7 ms + Set
//     207-237 ms, no write, and a ping every 10 ms across the restart lost
//     nothing.
//
// Learn, Forget and Status take only a short lock, so a long Set (deleting
// veths) does not delay the first packet of a new flow.
//
// # Tuning
//
// Measured with the data plane benchmark (sim/bench Datapath, `weft bench
// datapath`): one TCP stream from an endpoint on one test host to an
// endpoint on the other, against the same sender and receiver over a plain
// veth pair between two namespaces and over the bare underlay (host to
// host), in interleaved rounds; figures are medians of three runs on a
// quiet machine (an earlier series of three agreed within 0.02). What the
// driver does, and why:
//
//   - MTU from the underlay: every overlay link gets the underlay MTU minus
//     VXLAN's 50 bytes, so nothing is fragmented and a jumbo underlay (9000,
//     as data centres run) gives endpoints 8950. It is the largest gain
//     measured: overlay/veth 0.723 -> 0.794 (overlay 13.25 -> 15.33
//     Gbit/s) on the test net.
//   - GSO end to end, no segmentation anywhere: the endpoint's TCP hands 64
//     KB TSO packets to its veth (veths take TSO and every UDP-tunnel GSO
//     type), the router forwards them whole, the VXLAN device encapsulates
//     them whole (SKB_GSO_UDP_TUNNEL), the underlay passes them on and the
//     receiving VXLAN socket decapsulates them whole (tcpdump at MTU 1500:
//     64,308-byte TCP packets on both routers' veths, 64,382-byte UDP
//     datagrams on the receiving host's underlay). From a real NIC, the
//     VXLAN device's GRO cells coalesce.
//   - Checksums: VXLAN over IPv4 sends a zero UDP checksum (the kernel's
//     default, kept), and the inner TCP checksum stays CHECKSUM_PARTIAL
//     across the veths: no software checksum on the path (csum_partial does
//     not show in perf profiles).
//   - Routed, not bridged: no bridge, no flooding, no ARP, no FDB learning
//     (the VXLAN device is nolearning, so received frames do not update the
//     FDB).
//   - The router namespace does not early-demux (ip_early_demux=0): it only
//     forwards, and early demux would look a socket up for every packet
//     before routing it. Config.Untuned leaves the kernel's default, for
//     the benchmark's table. Its gain is below what the benchmark can
//     resolve here (0.711 -> 0.711; 0.699 -> 0.706 in the earlier series);
//     it is kept because it costs nothing.
//
// Tried and not kept (the first in the benchmark's table, the others in a
// shell replica of this layout): strict rp_filter costs a FIB lookup per
// packet, but turning it off bought nothing measurable (0.689 against
// 0.711) and would let endpoints spoof addresses; veth GRO (NAPI mode)
// takes TCP packets only from a veth without TSO, or with an XDP program
// (veth_skb_is_eligible_for_gro), so turning it on changed nothing
// measurable and giving up TSO for it would cost far more; RPS on the router's veth moves the forwarding to
// another CPU only when the flow hash picks one, so single streams got
// faster or slower by chance (rounds from 0.50 to 0.99); BIG TCP
// (gso_ipv4_max_size above 64 KB, which VXLAN accepts only when bound to
// the underlay device) makes packets a UDP datagram cannot carry, so they
// are segmented to the MTU in software before the wire (on the test net by
// the bridge, on the sender's CPU).
//
// What limits it (the goal is 90% of the veth pair): with BBR, the
// default congestion control here, one stream reaches overlay/veth 0.723
// (underlay MTU 1500) and 0.794 (9000), and neither CPU is saturated
// (18-29% of CPU time idle, the busiest CPU 74-85% busy, in the runs
// where nothing else ran): BBR's pacing and window
// follow the path's delay, and every packet crosses more softirq queues
// than on the veth pair (endpoint veth, underlay veth, bridge, veth, GRO
// cell, endpoint veth, and two IP forwards each way). With reno (one run)
// the streams are CPU bound instead (MTU 9000: busiest CPU 95% busy,
// softirq 54% of all CPU time) and the ratio is worse, 0.43/0.48 (overlay
// 21.7/30.2 against veth 48.7/62.7 Gbit/s), because the veth pair's one
// hop is so cheap.
//
// Most of the overlay's cost is the tunnel itself, not the endpoint hops:
// in a shell replica of this layout (iperf3, six interleaved rounds, MTU
// 1500) router-to-router over VXLAN, with no endpoint veth and no
// forwarding, got 12.9 Gbit/s against endpoint-to-endpoint 12.1, the bare
// underlay 15.1 and the veth pair 17.0. An eBPF fast path skipping the
// router's IP stack and one queue per direction (bpf_redirect_peer,
// bpf_redirect_neigh) would therefore win a few percent at most here; it
// belongs to the ebpf driver, and it would bypass the router's rp_filter
// and the netfilter hooks that policies will use. The test net's wire
// costs too: joined directly by one veth pair instead of veth, bridge and
// veth, the hosts reach 0.727. The test bridge's br_netfilter hooks (on
// once the module is loaded) cost too: turning them off took 0.683 to
// 0.711, and the test net now does (internal/testnet).
//
// # Quality of service
//
// What datapath.QoS, datapath.VPCQoS and HostConfig.CapacityBps ask for is
// enforced in the VPC namespaces and the host namespace, never in an
// endpoint's (its workload is root there: TestQoSCaps flushes every qdisc,
// queue length and nftables rule inside it, and the caps hold):
//
//	host netns
//	  <UnderlayDev>  root qdisc htb 7766: default 2        only with CapacityBps
//	    7766:1       rate = ceil = capacity
//	      7766:2     best effort: rate = capacity - what is guaranteed, prio 7
//	      7766:<v>   a VPC with a minimum: rate = its minimum, ceil = capacity
//	        7766:<e>   ... its endpoints' classes
//	      7766:<e>   an endpoint under QoS: rate = its minimum (else 1 B/s),
//	                 ceil = capacity, prio = its Priority (7 without QoS of its own)
//	  table ip weft-qos                                    (QoSTable)
//	    map eps  { VNI . inner source address : classid 7766:<e> }
//	    map dscp { classid : jump dscp-N }
//	    chain post { type filter hook postrouting priority mangle
//	      udp dport 4789 meta priority set (@th,96,24 . @th,336,32) map @eps meta priority vmap @dscp }
//	    chain dscp-N { ip dscp set N }                     (ECN bits kept, checksum fixed)
//	VPC netns, when one of its endpoints is shaped (it or its VPC has a cap)
//	  wftqtx, wftqrx  ifb, queue 100, root qdisc htb 7766: (same tree in both)
//	    7766:1       rate = ceil = the VPC's cap (none: 2^44-1 B/s)
//	      7766:<e>   a shaped endpoint: ceil = its cap (none: 2^44-1 B/s), rate =
//	                 ceil, or with a VPC cap an equal share of it
//	  wfteXXXX       clsact (a shaped endpoint's veth)
//	    ingress  pref 1 bpf "wft-qos" direct-action: skb->priority = 7766:<e>
//	             pref 2 u32 match all, mirred egress redirect to wftqtx
//	    egress   pref 1 the same program, pref 3 u32 match all, mirred to wftqrx
//
// Minors 0x10..0xfffe are allocated host-wide to the endpoints under QoS
// (QoS of their own, or their VPC has) and to the VPCs with a minimum; an
// endpoint's minor is the same on the uplink and in its VPC's ifbs. They
// persist in the kernel, in the host table's endpoint map and, for a VPC,
// as the parent of its endpoints' classes on the uplink, so a restarted
// driver takes them back and writes nothing (TestQoSRestartAndPrune).
//
// How each direction is shaped. What an endpoint sends enters its veth's
// clsact ingress; the program sets its class and mirred redirects it to
// wftqtx, whose HTB holds it to the endpoint's cap under the VPC's; the
// ifb hands it back to the veth's receive path (past the clsact) and it is
// routed, to the VXLAN device or to another endpoint of the host. What it
// receives, from the VXLAN device or from a neighbour, is routed to its
// veth, whose clsact egress does the same into wftqrx, after which the
// ifb transmits it on the veth. Both directions so hold every protocol and
// same-host traffic. On the uplink, the encapsulated packets of every VPC
// leave through the host namespace (the VXLAN sockets live there): the
// table finds the endpoint by VNI and inner source address (unique in a
// VPC; the router's strict rp_filter drops spoofed sources), sets its
// class as the priority, by which the uplink's HTB classifies (a minimum
// is guaranteed, and what is left is lent by priority), and writes the
// endpoint's DSCP into the outer header only (TestQoSOuterDSCP captures
// it on the underlay with the inner header and the ECN bits unchanged).
//
// Why so, on this kernel: it has htb, tbf, clsact, ifb, u32, mirred and
// cls_bpf, but no fq, skbedit, police or matchall. HTB classifies by
// skb->priority before its filters, and a workload can put any priority
// on its packets (SO_PRIORITY) that the veth carries across: a packet of
// priority 7766:0 would pass HTB unshaped, one naming a faster neighbour's
// class would get that class's cap. The four-instruction program (loaded with bpf(2), checked by its tag,
// the SHA-256 of its instructions) overwrites it, which TestQoSCaps proves
// for 7766:0, 7766:1 and a faster neighbour's class. An nftables egress
// hook on the ifb would have done it, but packets redirected from a tc
// ingress skip that hook. bpf_redirect could replace mirred on ingress,
// but not on egress, where it leaves skb_iif (the device an ifb returns
// packets to) at the input device. The two u32 redirects have distinct
// priorities because u32 keeps the hash tables of every filter under a
// qdisc in one list, which the kernel dumps by priority. The uplink's
// class cannot be chosen in the VPC namespace: IP forwarding resets
// skb->priority (which also keeps a workload from choosing a guaranteed
// class there: TestQoSMinimums), and crossing into the host namespace
// scrubs the mark; hence the table after encapsulation. Without
// CapacityBps the uplink is not shaped: minimums and priorities are not
// enforced (datapath.QoS.Enforced), DSCP and caps are.
//
// Owned, idempotent, contained: the qdisc handle 7766:, the table name,
// the ifb names and the filter name mark what is ours; a root qdisc on the
// underlay device that is neither the kernel's default nor ours is
// someone else's, left alone, and reported. Classes are compared field by
// field (rate, ceil, burst, quantum, prio, parent), filters by the
// program's tag and the redirect's target, the table by its contents
// (sets, elements, chains, rules re-marshalled) and, when any of it
// differs, replaced in one atomic batch. A VPC's failure (its ifbs,
// classes or filters) is that VPC's: Set's error names it, its endpoints'
// QoSErr says why and they keep forwarding, the rest is programmed
// (TestQoSContainedPerVPC); a failure of the host's part is reported for
// every endpoint under QoS. HTB counts whole frames: on the ifbs the
// endpoint's Ethernet frame, on the uplink the encapsulated one; a class's
// burst is 64 KiB plus a millisecond at its rate, its quantum the kernel's
// default made explicit (rate/10 within 2,000..200,000 bytes).
//
// Measured here (go test -run TestQoS, real namespaces, a loaded 2-core
// machine): a 100 Mbit/s cap gives TCP 94.3-95.6 Mbit/s of payload in
// each direction, to a remote endpoint and on the same host (95.5 is the
// cap: 1398 payload bytes per 1464-byte frame), UDP and ICMP floods of
// 1400-byte payloads 96.4-97.1 (97.1); minimums of 300 and 100 Mbit/s on a
// 500 Mbit/s uplink, against a best-effort endpoint with two streams, got
// 277.0 and 92.4 Mbit/s of payload, the minimums exactly in 1514-byte
// wire frames, and best effort the rest (92.2); a VPC cap of 200 Mbit/s
// over two endpoints gave 191.1 sent and 190.7 received (191.0).
//
// The cost to an endpoint without a cap (BenchmarkQoSOverhead: one TCP
// stream between two hosts, 15 interleaved rounds with the QoS tree on
// both hosts and without): four runs on a machine shared with other work
// (load average 3.8 to 8.9; single rounds ranged from 2.5 to 14.7 Gbit/s)
// gave median ratios of 0.79, 1.11, 0.99 and 0.92, 0.97 over all 60
// rounds (geometric mean 0.99): what the stream pays, a table rule and an
// HTB qdisc on the uplink per packet, is below what this machine resolves.
// A stream through the ifbs too (its VPC capped far above the path) paid
// more: 0.87 over the 60 rounds (an ifb queue and softirq hop each way).
// An unchanged Set of a host without QoS reads its state (the uplink's
// qdisc, the host's tables, a qdisc dump per VPC namespace): 0.63 -> 0.82
// ms for 10 endpoints (BenchmarkSetUnchanged, resync 1m).
//
// # Security policy
//
// The semantics are datapath.EndpointPolicy's (Kubernetes NetworkPolicy);
// datapath.Flow's methods are their reference, which the sim driver
// decides with and the tests compare this driver's verdicts to. All of
// it lives in the VPC's router namespace, outside the endpoint's, where
// the workload (root in its own namespace) cannot touch it: flushing its
// nftables, deleting its qdiscs, rewriting its routes, marking its packets
// or taking another endpoint's address (the router's strict rp_filter
// drops that) lifts nothing (TestPolicyHoldsAgainstWorkload).
//
// Identity. The router marks every packet from an endpoint's veth with
// the endpoint's identity and datapath.MarkPolicyApplied (its egress is
// enforced here), whatever mark it came with (crossing the veth scrubbed
// it anyway). The VXLAN devices are created with "gbp": on transmit the
// kernel copies the mark's bits 0-15, 19 and 22 into the VXLAN-GBP header
// (group policy ID, A and D bits), and on receive back into the mark,
// after vxlan_rcv scrubbed the packet crossing from the host namespace
// into the router's. TestPolicyIdentityOverGBP proves it on this kernel:
// identity 0x1234 with the trace bit and a drop reason set on the sender
// arrives as 0x1234|A|D, without the drop reason, which stays host-local
// (datapath.Mark*). A receiving host enforces ingress by that identity
// without knowing the sender; the underlay is trusted to carry it. A VXLAN
// device without gbp (an older driver's) is re-created; a host without
// gbp drops packets with the GBP flag (a reserved bit to it), so the hosts
// of a VPC move to GBP together.
//
// The table, in each VPC namespace, programmed over netlink
// (google/nftables) in one transaction per VPC per Set:
//
//	table ip weft
//	  map marks    { ifname : mark }     every local endpoint veth -> identity|A
//	  map egress   { ifname : verdict }  accept (not isolated) or jump e_<hash>
//	  map ingress  { ifname : verdict }  accept or jump i_<hash>
//	  set egress_drops, ingress_drops { ifname, dynamic }  per endpoint drop counters
//	  (with flow hooks, see "Flows and counters": egress_conns, ingress_conns,
//	   flows, flows_dropped, the maps flow_*_protos and the chains flow_*)
//	  chain prerouting (filter, priority mangle)
//	    meta mark set iifname map @marks
//	    ct state established,related accept     (* only with an isolated endpoint)
//	    iifname vmap @egress
//	    iifname "wfte*" jump egress_deny   denied, or a veth the table does not know (fail closed)
//	  chain forward (filter, priority filter)
//	    ct state established,related accept     (*)
//	    ct mark set meta mark   (*) the sender's identity, for the flush below
//	    oifname vmap @ingress
//	    oifname "wfte*" jump ingress_deny
//	  chain egress_deny
//	    update @egress_drops { iifname counter }
//	    drop
//	  chain ingress_deny       the same with oifname and ingress_drops
//	  chain i_<hash> (a class: one isolated direction's rules)
//	    meta mark & 0xffff -> @i_<hash>_ids -> port set ID; ID . l4proto . th dport in @i_<hash>_l4b0 accept
//	    ... the same ID . l4proto . (th dport & ~(2^b-1)) in @..._l4b<b> accept, ICMP in @..._icmpt/_icmpc,
//	        everything in @..._all
//	    ip saddr -> @i_<hash>_addrs (single addresses) -> port set ID; the same lookups
//	    ip saddr -> @i_<hash>_nets (address ranges, an interval map) -> port set ID; the same
//	  chain e_<hash>           the same by ip daddr
//
// A packet to or from no endpoint (from the VXLAN device, to it) leaves
// each rule at its first test, and the drop path's counting is a chain of
// its own, so such a packet meets one compare per direction there.
//
// Egress is judged in prerouting, so it covers the gateway too; ingress
// in forward. Traffic between two endpoints of a host crosses both
// chains of one router: the sender's egress, then the receiver's ingress
// with the sender's identity from the mark. Across hosts, the sender's
// router judges egress and the receiver's ingress.
//
// Why the cost of a packet does not grow with the rules: a class maps the
// peer (identity, or address) to a port set ID and looks (ID, protocol,
// port) up in sets keyed exactly; port ranges are split into aligned
// blocks (at most 32 per range) matched by masking the port. Every lookup
// is a hash lookup but the one of address ranges, an interval tree
// (O(log n) in the ranges; single addresses, as the /32 peers a selector
// resolves to, are hashed); a class chain has at most one rule per peer
// kind and port set kind, however many rules it compiles. Not used: concatenated interval sets
// (pipapo), whose lookup walks bitmaps as long as the set; and a chain
// per distinct port set, which made thousands of kernel objects for
// rules with distinct ports (1,000 such rules overflowed the socket with
// acknowledgements).
//
// Classes are named by a hash of their compiled content (and of the
// layout's version): endpoints with the same rules in a direction share
// one, a class never changes, a changed policy makes a new class, the
// dispatch maps switch to it and the classes no longer used are deleted,
// all in one transaction, so no packet sees half a change. A Set reads the
// table back (chains and sets by name, the dispatch maps' elements, the
// base chains' rules by their comments) and writes nothing when it
// matches, which is also how a restarted driver adopts it; a table whose
// fixed part is not as this driver writes it is rebuilt whole, still in
// one transaction. The table is written before the VPC's endpoints, so a
// new veth comes up with its rules in place.
//
// Connection state. Conntrack is per namespace, so per VPC: overlapping
// tenants never share it. Only the table of a VPC with an isolated
// endpoint on the host has the rules marked (*): where nothing is judged,
// nothing needs state, and the router's packets pay no conntrack (with
// it, TestQoSCaps's ICMP flood under a 97.1 Mbit/s cap reached 86.7 and
// 86.8 Mbit/s in two runs at load 8-9, without it 94.7). The first
// isolated endpoint rebuilds the table with
// them, in one transaction; connections open before are then judged
// packet by packet, as below. After a transaction that changed an endpoint's
// class or identity, every entry of the namespace is judged again like
// the connection's first packet (with the current identity of a local
// sender, or the remote sender's from the entry's mark), and the entries
// no longer allowed are deleted before Set returns: the connection is
// dead when Set returns (TestPolicyMatrix, the conformance suite), and
// allowed connections never notice. The router runs with
// nf_conntrack_tcp_loose=0: a TCP segment without state is invalid and
// makes none, and invalid packets are judged on their own, in the
// direction they go. With loose pickup, the answer of a flushed
// connection's peer would have been taken for a new connection the other
// way, and the flushed side's segments for its replies. A connection that
// began before its router saw it (the endpoint migrated here) keeps
// passing as far as the policies allow each direction on its own.
//
// Failures stay in their VPC: a VPC whose transaction the kernel refuses
// keeps its last rules (the transaction is atomic), its new endpoints are
// not attached, its endpoints report the error in PolicyErr, and Set's
// error wraps a datapath.VPCError for it; the other VPCs are programmed.
// The same holds for a VPC Normalize found invalid (Desired.Invalid) and
// one this driver cannot program (an IPv6 subnet)
// (TestVPCFailuresContained, the conformance suite).
//
// Measured on this 2-core machine, shared with other jobs (load average
// given with each figure):
//
//   - The cost per packet does not grow with the rules (BenchmarkPolicyRuleCost:
//     `go test ./datapath/linux -run '^$' -bench PolicyRuleCost -benchtime 1x
//     -policy.rounds 45 -policy.duration 1s -v`): a client on one host and
//     a server on another in a VPC with 10, 1k, 10k and 100k rules (half on
//     the server's ingress, by identity, /32 address and port range, half on
//     the client's egress; the server admits the client by address, so the
//     identity map misses first), interleaved rounds of 1 s per rule count
//     and mode. Per round the rate is taken from the median transaction time
//     (the count per second is also reported: on this shared machine it
//     measures the client's share of the CPU more than the data path).
//     45 rounds, load 4-5: a new TCP connection each (every first packet
//     judged on both hosts) 4,706 / 4,685 / 4,782 / 4,629 per s, ratio
//     100k/10 of the medians 0.984, per round 1.039 (0.657..1.803); one
//     connection, request/response 35,257 / 35,221 / 35,221 / 35,170 per s,
//     ratio 0.998 (per round 0.999, 0.743..1.337). Rounds vary far more than
//     the effect sought: 15-round runs gave for connections 0.897 (per round
//     0.985) at load 4-5, 1.149 (1.002) at load 6-7 and 1.003 (1.034) at
//     load 12-15, and for request/response 0.996, 1.000 and 1.001.
//   - Installing them: a Set of those 4 VPCs, 55,505 rules per host, 322 /
//     527 ms (load 5; 191 / 295 ms in an earlier run at load 6);
//     TestPolicyRuleCounts, 10,000 rules on one endpoint,
//     116-266 ms; compiling 100,000 rules 87 ms (BenchmarkCompilePolicies,
//     load 8), then cached while the policies stay the same.
//   - A policy change on a host with 1,000 endpoints in 10 VPCs, each with a
//     policy (BenchmarkPolicyChange: `go test ./datapath/linux -run '^$'
//     -bench PolicyChange -benchtime 1x -policy.changes 100 -v`), changing
//     an endpoint of the VPC converged last, load 4-5: in force (its
//     transaction committed, seen as the namespace's new nftables
//     generation) p50 6.4 ms, p99 23 ms after the Set began; the Set returns
//     after p50 67 ms, p99 108 ms, most of which an unchanged Set costs too
//     (p50 43 ms: reading the VPC namespaces). With EndpointResync 0 (every
//     endpoint namespace re-read) in force p50 5.0 ms, p99 27 ms, returned
//     p50 375 ms. (At load 7: in force p50 26 ms, p99 129 ms, before every
//     VPC's policy was committed ahead of the namespaces' reads.)
//
// # Flows and counters
//
// Traffic (datapath.TrafficReader) reads what the kernel counts anyway,
// and what the flow hooks add to the policy table (Config.FlowSampling;
// none when 0):
//
//   - per endpoint, the router-side veth's statistics: its receive side is
//     what the endpoint sent (dropped by policy or not), its transmit side
//     what was delivered to it. A GSO packet counts once with all its
//     bytes, as everywhere in the kernel;
//
//   - per endpoint, the policy table's drop counters (egress_drops,
//     ingress_drops) and, with the hooks, its TCP connections: a rule per
//     direction counts SYNs without ACK in egress_conns / ingress_conns;
//
//   - per VPC, its router's drops that belong to no endpoint: no route
//     (Ip OutNoRoutes, IpExt InNoRoutes of the namespace's SNMP counters),
//     MTU (Ip FragFails) and QoS (the drops of its ifbs' HTB roots);
//
//   - sampled flows: before the egress dispatch (every packet an endpoint
//     sends) and before the ingress dispatch (packets from the VXLAN
//     device to an endpoint; a local sender's were sampled on its egress),
//     a rule loads the 5-tuple (ICMP: type and code as the destination
//     port) and, when a Jenkins hash of it with a fixed seed is 0 modulo
//     FlowSampling, counts the packet in the dynamic set "flows" { 5-tuple
//     counter, timeout 30s }; the drop paths count the sampled packets
//     they drop in "flows_dropped". Sampling by hash keeps a sampled
//     flow whole, and every host makes the same choice, so a flow is
//     sampled on both its hosts or on neither (TestFlowSampling); the
//     kernel counts, the agent only reads the sets every interval. A set
//     holds at most 65,536 flows per VPC; past that, new flows are not
//     sampled until idle ones time out.
//
// The hooks' rules, in order:
//
//	prerouting: meta mark set iifname map @marks meta l4proto vmap @flow_out_protos
//	            (the marking rule goes on to the flow chain of the packet's
//	            protocol: tcp, udp/sctp/udplite, icmp; a packet from no
//	            endpoint has left it at the marks lookup); [ct]; dispatch;
//	            deny
//	forward:    oifname "wfte*" meta l4proto vmap @flow_in_protos; [ct];
//	            dispatch; deny
//	egress_deny, ingress_deny: count drops; meta l4proto vmap
//	            @flow_drop_protos; drop
//	flow_out_tcp: count the SYN (tcp flags & (fin|syn|rst|ack) == syn)
//	            in egress_conns; sample the flow in flows
//	flow_out_port, flow_out_icmp: sample the flow
//	flow_in_tcp: count the SYN in ingress_conns; iifname "wftx*" sample
//	flow_in_port, flow_in_icmp: iifname "wftx*" sample
//	flow_drop_port, flow_drop_icmp: sample into flows_dropped
//
// Measured (go test -run 'TestTrafficCounters|TestFlowSampling', real
// namespaces): 300 pings counted 303-305 packets each way (the extra ones
// are the pinger's ticks before Stop), a 64 MiB TCP transfer 67,372,044
// bytes sent and 67,371,954 received (+0.4%: headers), the same on the
// sampled flow on both hosts; 2,000 UDP flows sampled 1 in 8 gave 236
// (250 expected), the same on both hosts.
//
// The hooks' cost to a stream, installed and idle (BenchmarkFlowHooks:
// `WEFT_FLOW_ROUNDS=N go test ./datapath/linux -run '^$' -bench FlowHooks
// -benchtime 1x -v`, one TCP stream between two hosts, interleaved
// rounds): what a packet pays is the protocol lookup, a jump, the SYN
// test for TCP, the five loads of the flow key (for 1 in N a Jenkins hash
// of it) and, for a sampled flow, the dynamic set's update and counter.
// Before the hooks were chains of their own (each hook a rule of the
// base chains that loaded the interface name again) the idle cost was
// 0.980 (every flow) and 0.974 (1 in 64) on a quiet machine, 31 rounds.
// On a loaded machine throughput measures the CPU share the stream gets
// more than the path's cost: WEFT_STREAM_WINDOWS=1 logs each round's
// window, and the nftables functions' CPU per GB can then be cut from a
// system profile (`perf record -k CLOCK_MONOTONIC -a -g`) by state.
//
// # Trace and capture
//
// The driver implements datapath.Observer. A hop of a trace is the
// kernel's own observation of the marked packet, never the driver's
// belief about its configuration: nftables trace events (NFTA_TRACE_*,
// read from a netlink socket per namespace). While a trace needs it, and
// only then, a namespace (a VPC router's, the host's) holds the table
// "netdev weft-trace" (TraceTable), whose base chains are bound to single
// devices, so that traffic no trace selects passes none of them but on
// the devices a crossing trace needs:
//
//   - at the ingress of the source endpoint's veth, the trace's packets
//     (the 5-tuple; a probe's IP identification is the trace's token)
//     jump to tr_<token>, which sets nftrace, and to the empty nr_<token>
//     when the kernel's FIB lookup finds no route for them;
//   - at the egress of the VPC's VXLAN device (a trace leaving the host),
//     they get the trace mark, which VXLAN-GBP carries as its D bit;
//   - in the host namespace, at the underlay device's egress (ingress on
//     the destination's host), encapsulated traced packets (the D bit
//     tested first, then the VNI and the inner header) jump to
//     to_<vni>_<token> (ti_);
//   - at the ingress of the VXLAN device on the destination's host,
//     packets with the mark and the trace's header jump to tr_<token>;
//   - at the egress of the destination endpoint's veth, a probe is
//     dropped (consumed) and a live trace's packet seen delivered.
//
// A shaped endpoint (QoS) is the exception: tc redirects what it sends to
// an ifb at its veth's ingress, before the netdev hook, and the ifb hands
// the packet back past that hook with the flag that makes it skip every
// netdev egress hook on the host. A trace from such an endpoint is
// selected and followed in the table "ip weft-trace" instead, as all
// traces once were: in the router's prerouting (select, FIB check, and
// after the policy's mangle the trace mark), its postrouting (a probe
// consumed on the same host) and the host's output and postrouting (the
// encapsulated packet): every packet of those namespaces passes those
// chains while such a trace lasts (internal/e2e TestObserve, whose source
// is shaped, follows it).
//
// With nftrace set, the kernel reports every rule and chain verdict the
// packet meets, and the hops come from those events and the headers they
// carry: the source veth, the policy table's prerouting (the VPC router,
// the egress verdict), its forward hook (the route taken: the output
// interface of its first event there; the ingress verdict), the
// encapsulation (outer addresses, VNI, DSCP), the underlay, the
// decapsulation and the delivery. The rule a policy verdict names is
// found by the endpoint's policy semantics
// (datapath.EndpointPolicy.Decide) on those headers. A packet the FIB had
// no route for is reported dropped for no route once the policy has let
// it pass (routing drops it then); a packet sent to a VXLAN device whose
// neighbour entry stays unresolved is dropped for an unknown location.
//
// A probe is a real frame written into the source endpoint's namespace on
// its interface (a packet socket), so the router sees it as the endpoint
// would send it; the destination host's table drops it in postrouting on
// the destination's veth, so it never reaches an application. A live
// trace marks the next Count packets of its 5-tuple instead, until Until.
// With no trace and no dropped-only capture, no table, rule or listener
// is left: an idle host pays nothing.
//
// A capture is a packet socket (AF_PACKET) per captured veth (and the
// underlay for its VNIs), with the capture's classic BPF program attached
// so the kernel hands over only what the filter takes, and only from that
// interface; a token bucket bounds each host's rate (the excess is
// counted as lost). A dropped-only capture traces the endpoints' packets
// in the table "ip weft-trace" (in the router's prerouting hook, within
// the rate, by an nftables limit) and records those the policy drops and
// those the route check after it finds no route for.
//
// The cost to traffic a trace or capture does not select is measured by
// BenchmarkObserveHooks (`go test ./datapath/linux -run '^$' -bench
// ObserveHooks -benchtime 1x -v`).
//
// Not done yet: IPv6 overlay and underlay.
package linux
