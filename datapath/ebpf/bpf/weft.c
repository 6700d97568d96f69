// weft's eBPF data plane: tc (tcx) programs on each endpoint's host-side
// veth and on the host's one collect-metadata VXLAN device. See the Go
// package documentation (datapath/ebpf/doc.go) for the design; the map
// layouts here are mirrored by the Go types bpf2go generates from them.

//go:build ignore

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define AF_INET6 10
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMP_TIMESTAMP 13
#define ICMP_TIMESTAMPREPLY 14
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define NSEC 1000000000ULL

// icmphdr is the start of an ICMP header (linux/icmp.h pulls in libc).
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
};

// Drop reasons (datapath.DropReason), counted per endpoint.
#define DROP_POLICY 1
#define DROP_NO_ROUTE 2
#define DROP_NO_LOCATION 3
#define NUM_DROP_REASONS 8

// The packet mark (datapath.Mark*): the sender's identity, "egress policy
// applied" and "trace" (what VXLAN-GBP carries).
#define MARK_IDENTITY 0xffff
#define MARK_APPLIED (1 << 19)
#define MARK_TRACE (1 << 22)
#define MARK_GBP (MARK_IDENTITY | MARK_APPLIED | MARK_TRACE)

// config.flags
#define CFG_HOLD 1 // hold a miss's packets in the VXLAN device's neighbour queue

// Endpoint flags (iface.flags of a sender, local_ep.flags of a receiver).
#define EP_EGRESS_ISOLATED 1
#define EP_INGRESS_ISOLATED 2
#define EP_ISOLATED (EP_EGRESS_ISOLATED | EP_INGRESS_ISOLATED)
#define EP_TX_SHAPED 4 // what it sends is shaped (iface.priority is its class)
#define EP_RX_SHAPED 8 // what it receives is shaped (local_ep.rx_class)

// Port set flags (pol_peer.flags).
#define PS_ALL 1  // everything
#define PS_ICMP 2 // some ICMP types (pol_icmp)

// A miss is reported again for the same destination after this long.
#define MISS_REPORT_NS (100ULL * 1000 * 1000)

// Connection state (conns): refreshed at most once a second, forgotten
// after the protocol's timeout.
#define CT_REFRESH_NS NSEC
#define CT_TCP_NS (7200 * NSEC)
#define CT_CLOSING_NS (10 * NSEC)
#define CT_UDP_NS (120 * NSEC)
#define CT_ICMP_NS (30 * NSEC)
#define CT_CLOSING 1 // a FIN or RST was seen

// Held packets are released by the agent with this MAC prefix; the VNI is
// in the last three bytes (see to_vxlan).
#define HOLD_MAC0 0x02
#define HOLD_MAC1 0x77
#define HOLD_MAC2 0x00

// put_gateway_mac writes the distributed gateway's MAC (datapath/ebpf
// GatewayMAC), which every host-side veth and the VXLAN device have, with
// immediates (no .rodata map).
static __always_inline void put_gateway_mac(__u8 *m)
{
	m[0] = 0x02;
	m[1] = 0x77;
	m[2] = 0x66;
	m[3] = 0x74;
	m[4] = 0x67;
	m[5] = 0x77;
}

// vip names an address in a VPC: every forwarding key starts with the VNI,
// so overlapping tenant addresses never meet.
struct vip {
	__u32 vni;
	__be32 ip;
};

// Shaped traffic goes through the HTB tree of the shaper veth, in the
// class the skb priority names, with the VNI and what is left to do in
// its destination MAC: SHAPE_MAC0, SHAPE_MAC1, the stage, the VNI's three
// bytes. from_shaper takes it on from the veth's peer.
#define SHAPE_MAC0 0x02
#define SHAPE_MAC1 0x77
#define STAGE_TX 0x01 // after its sender's class: its receiver's may follow
#define STAGE_RX 0x02 // after its receiver's class: deliver

// local_ep is an endpoint on this host, as a destination: its host-side
// veth, its MAC, its ingress policy (class) and the HTB class of what it
// receives.
struct local_ep {
	__u32 ifindex;
	__u8 mac[ETH_ALEN];
	__u16 flags;
	__u32 rx_class;
	__u64 in_class;
};

// iface is the endpoint behind a host-side veth, by the veth's ifindex, as
// a sender: its egress policy (class) and what classifies its traffic (skb
// priority: its HTB class on the VXLAN device and the uplink; the outer
// TOS).
struct iface {
	__u32 vni;
	__be32 ip;
	__u32 identity;
	__u8 mac[ETH_ALEN];
	__u16 flags;
	__u32 priority;
	__u8 tos;
	__u8 _pad[3];
	__u64 eg_class;
};

// remote_ep is a learned endpoint on another host.
struct remote_ep {
	__be32 host; // underlay address
	__u32 identity;
	__u64 epoch;
};

// subnet_key is an LPM key: prefixlen counts the VNI's 32 bits and the
// prefix's bits.
struct subnet_key {
	__u32 prefixlen;
	__u32 vni;
	__be32 ip;
};

struct subnet {
	__be32 gateway;
};

// vpc is a VPC this host carries, with the minors of its HTB classes
// (its guaranteed minimum on the uplink, its caps on the VXLAN device; 0:
// none), which only the driver reads.
struct vpc {
	__u32 flags;
	__u16 minor;
	__u16 tx_minor;
	__u16 rx_minor;
	__u16 _pad;
};

struct config {
	__u32 vxlan_ifindex;
	__be32 underlay;
	__u32 flags;
	__u32 shaper_ifindex; // the shaper veth's end with the HTB tree
	__u32 sampling;       // N of 1-in-N flow sampling; 0: none
};

// counters are an endpoint's traffic, per CPU: tx is what it sent, rx what
// was delivered to it, drops what was dropped of either, by reason.
struct counters {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 drops[NUM_DROP_REASONS];
};

// miss is a ring buffer record: a local sender wants vni/ip.
struct miss {
	__u32 vni;
	__be32 ip;
};

// vxlan_md is the VXLAN-GBP tunnel option (struct vxlan_metadata).
struct vxlan_md {
	__u32 gbp;
};

struct arp_eth {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
};

// Security policy. A class is the compiled rules of one isolated
// direction (content-addressed: endpoints with the same rules share it).
// A peer, by identity (pol_ids) or address (pol_nets, longest prefix:
// each prefix holds what every prefix containing it allows), gives a port
// set: everything, or TCP/UDP/SCTP port blocks (pol_ports: the port with
// its low bits cleared, blocks says which block sizes exist) and ICMP
// types with their codes (pol_icmp).
struct id_key {
	__u64 class;
	__u32 identity;
	__u32 _pad;
};

struct net_key {
	__u32 prefixlen; // 64 (the class) + the prefix's bits
	__u32 class_lo;
	__u32 class_hi;
	__be32 ip;
};

struct pol_peer {
	__u64 set;
	__u32 flags;
	__u32 blocks;
};

struct port_key {
	__u64 set;
	__u8 proto;
	__u8 bits;
	__u16 port;
	__u32 _pad;
};

struct icmp_key {
	__u64 set;
	__u8 type;
	__u8 _pad[7];
};

struct icmp_codes {
	__u64 bits[4];
};

// ct_key is one direction of a connection in one VPC. An ICMP echo or
// timestamp request has its identifier as source port and its type as
// destination port; its reply the request's type as source port and the
// identifier as destination port: the reply's key is the request's
// reversed. It is a sampled flow's key too (flows), where ICMP has no
// source port and its type and code as destination port.
struct ct_key {
	__u32 vni;
	__be32 src;
	__be32 dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 _pad[3];
};

// ct is a connection: when it was last seen, and what its first packet
// was judged on (the sender's identity, an ICMP request's type and code).
struct ct {
	__u64 seen;
	__u32 identity;
	__u8 flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 _pad;
};

// flow is what a sampled flow's packets added up to on this host.
struct flow {
	__u64 packets;
	__u64 bytes;
	__u64 dropped;
	__u64 last;   // bpf_ktime_get_coarse_ns of its last packet
	__u32 reason; // why its last dropped packet was (DROP_*)
	__u32 _pad;
};

// frag_key is an IPv4 datagram whose first fragment passed: its other
// fragments (no ports) pass too.
struct frag_key {
	__u32 vni;
	__be32 src;
	__be32 dst;
	__be16 id;
	__u8 proto;
	__u8 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct vip);
	__type(value, struct local_ep);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} locals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct vip);
	__type(value, struct remote_ep);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} remotes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct subnet_key);
	__type(value, struct subnet);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} subnets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct vpc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vpcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct vip);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} miss_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct id_key);
	__type(value, struct pol_peer);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 20);
	__type(key, struct net_key);
	__type(value, struct pol_peer);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_nets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 21);
	__type(key, struct port_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct icmp_key);
	__type(value, struct icmp_codes);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_icmp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ct);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct frag_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

// drop counts a dropped packet.
static __always_inline int drop(struct __sk_buff *skb, struct counters *c, int reason)
{
	if (c)
		c->drops[reason & (NUM_DROP_REASONS - 1)]++;
	return TC_ACT_SHOT;
}

// drop_flow counts a dropped packet of a sampled flow (f: NULL when its
// flow is not sampled).
static __always_inline int drop_flow(struct __sk_buff *skb, struct counters *c, struct flow *f, int reason)
{
	if (f) {
		__sync_fetch_and_add(&f->dropped, 1);
		f->reason = reason;
	}
	return drop(skb, c, reason);
}

// FLOW_SEED seeds the sampling hash: every host the same, so that a flow
// sampled at its sender's host is sampled at its receiver's too.
#define FLOW_SEED 0x77656674 // "weft"

// mix32 is MurmurHash3's finalizer.
static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

// sample counts a packet of VPC vni at ip in its flow's entry if the flow
// is sampled (1 in cfg->sampling, by a hash of its key) and returns the
// entry, NULL otherwise. Flows of TCP, UDP, SCTP, UDP-Lite and ICMP are
// sampled (as the linux driver does), not fragments after the first.
static __always_inline struct flow *sample(struct __sk_buff *skb, struct config *cfg, struct iphdr *ip, __u32 vni, __u32 len)
{
	if (!cfg || !cfg->sampling || (bpf_ntohs(ip->frag_off) & 0x1fff))
		return 0;
	__u32 sampling = cfg->sampling;
	struct ct_key k = {.vni = vni, .src = ip->saddr, .dst = ip->daddr, .proto = ip->protocol};
	__u32 off = ETH_HLEN + ip->ihl * 4;
	__u8 l4[4] = {};
	switch (k.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
	case IPPROTO_UDPLITE:
		if (bpf_skb_load_bytes(skb, off, l4, 4) < 0)
			return 0;
		k.sport = l4[0] | (__u16)l4[1] << 8;
		k.dport = l4[2] | (__u16)l4[3] << 8;
		break;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(skb, off, l4, 2) < 0)
			return 0;
		k.dport = l4[0] | (__u16)l4[1] << 8;
		break;
	default:
		return 0;
	}
	if (sampling > 1) {
		__u32 h = mix32(FLOW_SEED ^ vni);
		h = mix32(h ^ k.src);
		h = mix32(h ^ k.dst);
		h = mix32(h ^ (k.sport | (__u32)k.dport << 16));
		h = mix32(h ^ k.proto);
		if (h % sampling)
			return 0;
	}
	struct flow *f = bpf_map_lookup_elem(&flows, &k);
	if (!f) {
		struct flow nf = {};
		bpf_map_update_elem(&flows, &k, &nf, BPF_NOEXIST);
		f = bpf_map_lookup_elem(&flows, &k);
		if (!f)
			return 0;
	}
	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, len);
	// The tick's clock: a flow's last packet need not be known closer than
	// that, and it costs less per packet than bpf_ktime_get_ns.
	f->last = bpf_ktime_get_coarse_ns();
	return f;
}

static __always_inline void count_rx(__u32 ifindex, __u32 len)
{
	struct counters *c = bpf_map_lookup_elem(&counters, &ifindex);
	if (c) {
		c->rx_packets++;
		c->rx_bytes += len;
	}
}

// csum_replace2 updates a 16-bit one's complement checksum for one 16-bit
// word changing from old to new (RFC 1624).
static __always_inline void csum_replace2(__sum16 *sum, __be16 old, __be16 new)
{
	__u32 s = (__u16)~*sum + (__u16)~old + (__u16) new;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*sum = ~s;
}

// ttl_dec is ip_decrease_ttl: the packet is routed. It fails for a packet
// whose time is up.
static __always_inline int ttl_dec(struct iphdr *ip)
{
	if (ip->ttl <= 1)
		return -1;
	__u32 check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xffff));
	ip->ttl--;
	return 0;
}

// set_tunnel sends the packet to a remote endpoint's host: VNI, underlay
// address and outer TOS in the tunnel key, the packet mark's identity,
// "policy applied" and trace bits in the VXLAN-GBP option.
static __always_inline int set_tunnel(struct __sk_buff *skb, struct config *cfg, __u32 vni, __be32 host, __u8 tos, __u32 mark)
{
	struct bpf_tunnel_key key = {
		.tunnel_id = vni,
		.remote_ipv4 = bpf_ntohl(host),
		.local_ipv4 = bpf_ntohl(cfg->underlay),
		.tunnel_tos = tos,
		.tunnel_ttl = 64,
	};
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return -1;
	struct vxlan_md md = {.gbp = mark & MARK_GBP};
	if (bpf_skb_set_tunnel_opt(skb, &md, sizeof(md)) < 0)
		return -1;
	return 0;
}

// pkt is what policy and connection tracking need of a packet.
struct pkt {
	__u32 vni;
	__be32 saddr, daddr;
	__u32 identity; // the sender's
	__u8 proto;
	__u8 frag; // FRAG_*
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 starts;    // allowed without state, it starts a connection
	__u8 trackable; // it has a connection key
	__u8 _pad;
	__u16 port; // destination port, host order
	__be16 sport, dport; // of the connection key
	__be16 ipid;
};

#define FRAG_NONE 0
#define FRAG_FIRST 1 // the first fragment: ports, and more to come
#define FRAG_LATER 2 // no ports

// parse reads what policy needs of an IPv4 packet of VPC vni at ip, sent
// with identity.
static __always_inline int parse(struct __sk_buff *skb, struct iphdr *ip, __u32 vni, __u32 identity, struct pkt *p)
{
	p->vni = vni;
	p->identity = identity;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ipid = ip->id;
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & 0x1fff) {
		p->frag = FRAG_LATER;
		return 0;
	}
	if (frag & 0x2000)
		p->frag = FRAG_FIRST;
	__u32 off = ETH_HLEN + ip->ihl * 4;
	__u8 l4[14] = {};
	switch (p->proto) {
	case IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, off, l4, 14) < 0)
			return -1;
		p->tcp_flags = l4[13];
		p->starts = (l4[13] & (TCP_SYN | TCP_ACK)) == TCP_SYN;
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_skb_load_bytes(skb, off, l4, 4) < 0)
			return -1;
		p->starts = 1;
		break;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return -1;
		p->icmp_type = l4[0];
		p->icmp_code = l4[1];
		__be16 id = l4[4] | (__u16)l4[5] << 8;
		switch (l4[0]) {
		case ICMP_ECHO:
		case ICMP_TIMESTAMP:
			p->sport = id;
			p->dport = bpf_htons(l4[0]);
			p->starts = 1;
			p->trackable = 1;
			break;
		case ICMP_ECHOREPLY:
			p->sport = bpf_htons(ICMP_ECHO);
			p->dport = id;
			p->trackable = 1;
			break;
		case ICMP_TIMESTAMPREPLY:
			p->sport = bpf_htons(ICMP_TIMESTAMP);
			p->dport = id;
			p->trackable = 1;
			break;
		}
		return 0;
	default:
		// Tracked by address only, as the kernel's generic tracker does.
		p->starts = 1;
		p->trackable = 1;
		return 0;
	}
	p->sport = l4[0] | (__u16)l4[1] << 8;
	p->dport = l4[2] | (__u16)l4[3] << 8;
	p->port = bpf_ntohs(p->dport);
	p->trackable = 1;
	return 0;
}

// ports_allow reports whether a peer's port set allows the packet.
static __noinline int ports_allow(struct pol_peer *pp, struct pkt *p)
{
	if (pp->flags & PS_ALL)
		return 1;
	if (p->proto == IPPROTO_ICMP) {
		if (!(pp->flags & PS_ICMP))
			return 0;
		struct icmp_key k = {.set = pp->set, .type = p->icmp_type};
		struct icmp_codes *c = bpf_map_lookup_elem(&pol_icmp, &k);
		__u8 code = p->icmp_code;
		return c && (c->bits[(code >> 6) & 3] >> (code & 63)) & 1;
	}
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return 0;
	__u64 set = pp->set;
	__u32 blocks = pp->blocks;
	for (__u32 b = 0; b <= 16; b++) {
		if (!(blocks & (1U << b)))
			continue;
		struct port_key k = {.set = set, .proto = p->proto, .bits = b, .port = p->port & ~((1U << b) - 1)};
		if (bpf_map_lookup_elem(&pol_ports, &k))
			return 1;
	}
	return 0;
}

// allowed reports whether a class lets a packet from or to peer (with the
// sender's identity, for ingress; 0: none) pass.
static __noinline int allowed(__u64 class, __u32 identity, __be32 peer, struct pkt *p)
{
	struct pol_peer *pp;
	if (identity) {
		struct id_key k = {.class = class, .identity = identity};
		pp = bpf_map_lookup_elem(&pol_ids, &k);
		if (pp && ports_allow(pp, p))
			return 1;
	}
	struct net_key nk = {.prefixlen = 96, .class_lo = (__u32)class, .class_hi = class >> 32, .ip = peer};
	pp = bpf_map_lookup_elem(&pol_nets, &nk);
	return pp && ports_allow(pp, p);
}

static __always_inline __u64 ct_timeout(__u8 proto, __u8 flags)
{
	if (flags & CT_CLOSING)
		return CT_CLOSING_NS;
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_SCTP:
		return CT_TCP_NS;
	case IPPROTO_ICMP:
		return CT_ICMP_NS;
	}
	return CT_UDP_NS;
}

// ct_hit reports whether the packet belongs to a connection the data plane
// tracks (either way), and refreshes it.
static __noinline int ct_hit(struct ct_key *k, struct pkt *p, __u64 now)
{
	struct ct *v = bpf_map_lookup_elem(&conns, k);
	if (!v) {
		struct ct_key r = {.vni = k->vni, .src = k->dst, .dst = k->src, .sport = k->dport, .dport = k->sport, .proto = k->proto};
		v = bpf_map_lookup_elem(&conns, &r);
		if (!v)
			return 0;
	}
	__u64 seen = v->seen;
	if (now - seen > ct_timeout(k->proto, v->flags))
		return 0;
	if (p->proto == IPPROTO_TCP) {
		if ((v->flags & CT_CLOSING) && p->starts)
			return 0; // a new connection on the tuple of a closed one
		if (p->tcp_flags & (TCP_FIN | TCP_RST))
			v->flags |= CT_CLOSING;
	}
	if (now - seen > CT_REFRESH_NS)
		v->seen = now;
	return 1;
}

// enforce decides a packet by policy: a packet of a tracked connection
// passes; otherwise the egress of its sender (src: NULL when remote) and
// the ingress of its destination (dst: NULL when remote) judge it, with
// the sender's identity, and an allowed packet that starts a connection is
// tracked. It returns 0 to pass, -1 to drop.
static __noinline int enforce(struct pkt *p, struct iface *src, struct local_ep *dst)
{
	__u64 now = bpf_ktime_get_ns();
	__be32 saddr = p->saddr, daddr = p->daddr;
	struct frag_key fk = {.vni = p->vni, .src = saddr, .dst = daddr, .id = p->ipid, .proto = p->proto};
	if (p->frag == FRAG_LATER)
		return bpf_map_lookup_elem(&frags, &fk) ? 0 : -1;
	struct ct_key k = {.vni = p->vni, .src = saddr, .dst = daddr, .sport = p->sport, .dport = p->dport, .proto = p->proto};
	if (!p->trackable || !ct_hit(&k, p, now)) {
		if (src && (src->flags & EP_EGRESS_ISOLATED) && !allowed(src->eg_class, 0, daddr, p))
			return -1;
		if (dst && (dst->flags & EP_INGRESS_ISOLATED) && !allowed(dst->in_class, p->identity, saddr, p))
			return -1;
		if (p->trackable && p->starts) {
			struct ct v = {.seen = now, .identity = p->identity, .icmp_type = p->icmp_type, .icmp_code = p->icmp_code};
			bpf_map_update_elem(&conns, &k, &v, BPF_ANY);
		}
	}
	if (p->frag == FRAG_FIRST)
		bpf_map_update_elem(&frags, &fk, &now, BPF_ANY);
	return 0;
}

// to_shaper sends a packet whose destination MAC names its VNI and stage
// into the shaper's HTB class.
static __noinline int to_shaper(struct __sk_buff *skb, __u32 class)
{
	struct config *cfg = get_config();
	if (!cfg || !cfg->shaper_ifindex)
		return TC_ACT_SHOT;
	skb->priority = class;
	return bpf_redirect(cfg->shaper_ifindex, 0);
}

static __always_inline void put_shape_mac(__u8 *m, __u8 stage, __u32 vni)
{
	m[0] = SHAPE_MAC0;
	m[1] = SHAPE_MAC1;
	m[2] = stage;
	m[3] = vni >> 16;
	m[4] = vni >> 8;
	m[5] = vni;
}

// arp_reply answers an endpoint's ARP request for any address of its VPC's
// subnets but its own with the gateway's MAC.
static __always_inline int arp_reply(struct __sk_buff *skb, struct ethhdr *eth, void *end, __u32 ifindex, struct iface *src,
				     struct counters *c)
{
	struct arp_eth *a = (void *)(eth + 1);
	if ((void *)(a + 1) > end)
		return drop(skb, c, DROP_NO_ROUTE);
	if (a->htype != bpf_htons(1) || a->ptype != bpf_htons(ETH_P_IP) || a->hlen != ETH_ALEN || a->plen != 4 ||
	    a->op != bpf_htons(1))
		return drop(skb, c, DROP_NO_ROUTE);
	__be32 tpa, spa;
	__builtin_memcpy(&tpa, a->tpa, 4);
	__builtin_memcpy(&spa, a->spa, 4);
	if (tpa == src->ip)
		return drop(skb, c, DROP_NO_ROUTE); // duplicate address detection, gratuitous ARP
	struct subnet_key sk = {.prefixlen = 64, .vni = src->vni, .ip = tpa};
	if (!bpf_map_lookup_elem(&subnets, &sk))
		return drop(skb, c, DROP_NO_ROUTE);
	a->op = bpf_htons(2);
	__builtin_memcpy(a->tha, a->sha, ETH_ALEN);
	__builtin_memcpy(a->tpa, &spa, 4);
	put_gateway_mac(a->sha);
	__builtin_memcpy(a->spa, &tpa, 4);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	put_gateway_mac(eth->h_source);
	return bpf_redirect(ifindex, 0);
}

// gateway_reply answers an ICMP echo request to a gateway address.
static __always_inline int gateway_reply(struct __sk_buff *skb, struct ethhdr *eth, void *end, __u32 ifindex,
					 struct counters *c)
{
	struct iphdr *ip = (void *)(eth + 1);
	struct icmphdr *ic = (void *)(ip + 1);
	if ((void *)(ic + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_ICMP || ic->type != ICMP_ECHO || ic->code != 0)
		return drop(skb, c, DROP_NO_ROUTE);
	__be32 a = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = a;
	__be16 *ttlw = (__be16 *)&ip->ttl; // ttl and protocol
	__be16 old = *ttlw;
	ip->ttl = 64;
	csum_replace2(&ip->check, old, *ttlw);
	ic->type = ICMP_ECHOREPLY;
	csum_replace2(&ic->checksum, bpf_htons(ICMP_ECHO << 8), bpf_htons(ICMP_ECHOREPLY << 8));
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	put_gateway_mac(eth->h_source);
	return bpf_redirect(ifindex, 0);
}

// miss reports an unknown destination of a VPC to the agent and holds the
// packet (or drops it: Config.MissMode).
static __always_inline int miss(struct __sk_buff *skb, struct vip *key, struct counters *c, struct flow *f)
{
	struct config *cfg = get_config();
	if (!cfg)
		return drop_flow(skb, c, f, DROP_NO_LOCATION);
	__u64 now = bpf_ktime_get_ns();
	__u64 *seen = bpf_map_lookup_elem(&miss_seen, key);
	if (!seen || now - *seen > MISS_REPORT_NS) {
		bpf_map_update_elem(&miss_seen, key, &now, BPF_ANY);
		struct miss ev = {.vni = key->vni, .ip = key->ip};
		bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
	}
	if (!(cfg->flags & CFG_HOLD) || !cfg->vxlan_ifindex)
		return drop_flow(skb, c, f, DROP_NO_LOCATION);
	// The kernel queues the packet on an incomplete neighbour fd77:7766::
	// <vni>:<ip> of the VXLAN device; the agent resolves it once it knows
	// the location, and the queue drains through to_vxlan.
	struct bpf_redir_neigh nh = {.nh_family = AF_INET6};
	nh.ipv6_nh[0] = bpf_htonl(0xfd777766);
	nh.ipv6_nh[1] = 0;
	nh.ipv6_nh[2] = bpf_htonl(key->vni);
	nh.ipv6_nh[3] = key->ip;
	return bpf_redirect_neigh(cfg->vxlan_ifindex, &nh, sizeof(nh), 0);
}

// from_ep runs on tc ingress of an endpoint's host-side veth: everything
// the endpoint sends.
SEC("tcx/ingress")
int from_ep(struct __sk_buff *skb)
{
	// Context fields are read once, up front: the verifier refuses a
	// context access through a pointer the compiler offset.
	__u32 ifindex = skb->ifindex;
	__u32 len = skb->len;
	__u32 mark = skb->mark;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct iface *src = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!src)
		return TC_ACT_SHOT;
	struct counters *c = bpf_map_lookup_elem(&counters, &ifindex);
	if (c) {
		c->tx_packets++;
		c->tx_bytes += len;
	}
	// The workload chose neither: its class on the uplink and its mark
	// are the driver's.
	mark = (mark & MARK_TRACE) | src->identity | MARK_APPLIED;
	skb->mark = mark;
	skb->priority = src->priority;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return drop(skb, c, DROP_NO_ROUTE);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return arp_reply(skb, eth, end, ifindex, src, c);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return drop(skb, c, DROP_NO_ROUTE);
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return drop(skb, c, DROP_NO_ROUTE);
	if (ip->saddr != src->ip)
		return drop(skb, c, DROP_NO_ROUTE); // spoofed: no route back to it here
	struct flow *f = sample(skb, get_config(), ip, src->vni, len);

	__u32 vni = src->vni;
	struct vip key = {.vni = vni, .ip = ip->daddr};
	struct local_ep *l = bpf_map_lookup_elem(&locals, &key);
	struct remote_ep *r = 0;
	int gw = 0;
	if (!l && !(r = bpf_map_lookup_elem(&remotes, &key))) {
		// Neither a local endpoint nor a learned one: a gateway, an
		// address of the VPC to learn, or no route.
		struct subnet_key sk = {.prefixlen = 64, .vni = vni, .ip = ip->daddr};
		struct subnet *s = bpf_map_lookup_elem(&subnets, &sk);
		if (!s)
			return drop_flow(skb, c, f, DROP_NO_ROUTE);
		gw = s->gateway == ip->daddr;
	}
	if ((src->flags | (l ? l->flags : 0)) & EP_ISOLATED) {
		struct pkt p = {};
		if (parse(skb, ip, vni, src->identity, &p) < 0 || enforce(&p, src, l) < 0)
			return drop_flow(skb, c, f, DROP_POLICY);
	}
	if (gw)
		return gateway_reply(skb, eth, end, ifindex, c);
	if (l) {
		if (ttl_dec(ip) < 0)
			return drop_flow(skb, c, f, DROP_NO_ROUTE);
		if (src->flags & EP_TX_SHAPED) {
			put_shape_mac(eth->h_dest, STAGE_TX, vni);
			return to_shaper(skb, src->priority);
		}
		if (l->flags & EP_RX_SHAPED) {
			put_shape_mac(eth->h_dest, STAGE_RX, vni);
			return to_shaper(skb, l->rx_class);
		}
		__builtin_memcpy(eth->h_dest, l->mac, ETH_ALEN);
		put_gateway_mac(eth->h_source);
		count_rx(l->ifindex, len);
		return bpf_redirect_peer(l->ifindex, 0);
	}
	if (r) {
		struct config *cfg = get_config();
		if (!cfg || !cfg->vxlan_ifindex)
			return drop_flow(skb, c, f, DROP_NO_ROUTE);
		if (ttl_dec(ip) < 0)
			return drop_flow(skb, c, f, DROP_NO_ROUTE);
		if (src->flags & EP_TX_SHAPED) {
			// The tunnel key is per CPU until the packet is sent: it is
			// set once the packet is out of the shaper's queue.
			put_shape_mac(eth->h_dest, STAGE_TX, vni);
			return to_shaper(skb, src->priority);
		}
		// The inner source MAC stays the sender's: the receiving VXLAN
		// device drops frames from its own MAC (the gateway's) as loops.
		put_gateway_mac(eth->h_dest);
		if (set_tunnel(skb, cfg, vni, r->host, src->tos, mark) < 0)
			return drop_flow(skb, c, f, DROP_NO_ROUTE);
		return bpf_redirect(cfg->vxlan_ifindex, 0);
	}
	if (ttl_dec(ip) < 0)
		return drop_flow(skb, c, f, DROP_NO_ROUTE);
	return miss(skb, &key, c, f);
}

// from_vxlan runs on tc ingress of the VXLAN device: packets from other
// hosts, delivered by VNI and inner destination, judged by the
// destination's ingress policy with the sender's identity from VXLAN-GBP.
SEC("tcx/ingress")
int from_vxlan(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct bpf_tunnel_key tk = {};
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0)
		return TC_ACT_SHOT;
	struct vxlan_md md = {};
	if (bpf_skb_get_tunnel_opt(skb, &md, sizeof(md)) < 0)
		md.gbp = 0;
	skb->mark = md.gbp & MARK_GBP;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_SHOT;
	__u32 vni = tk.tunnel_id;
	struct vip key = {.vni = vni, .ip = ip->daddr};
	struct local_ep *l = bpf_map_lookup_elem(&locals, &key);
	if (!l)
		return TC_ACT_SHOT;
	struct counters *c = bpf_map_lookup_elem(&counters, &l->ifindex);
	struct flow *f = sample(skb, get_config(), ip, vni, len);
	if (l->flags & EP_ISOLATED) {
		struct pkt p = {};
		if (parse(skb, ip, vni, md.gbp & MARK_IDENTITY, &p) < 0 || enforce(&p, 0, l) < 0)
			return drop_flow(skb, c, f, DROP_POLICY);
	}
	if (l->flags & EP_RX_SHAPED) {
		put_shape_mac(eth->h_dest, STAGE_RX, vni);
		return to_shaper(skb, l->rx_class);
	}
	__builtin_memcpy(eth->h_dest, l->mac, ETH_ALEN);
	put_gateway_mac(eth->h_source);
	if (c) {
		c->rx_packets++;
		c->rx_bytes += len;
	}
	return bpf_redirect_peer(l->ifindex, 0);
}

// to_vxlan runs on tc egress of the VXLAN device. Packets from_ep sent to
// a known remote already carry their tunnel key and pass. Packets a miss
// held come out of the neighbour queue once the agent resolved it, with
// the hold MAC (VNI in its last three bytes) as destination: they get
// their tunnel key here (their sender's egress policy judged them before
// they were held).
SEC("tcx/egress")
int to_vxlan(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_SHOT;
	if (eth->h_dest[0] != HOLD_MAC0 || eth->h_dest[1] != HOLD_MAC1 || eth->h_dest[2] != HOLD_MAC2)
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_SHOT;
	__u32 vni = ((__u32)eth->h_dest[3] << 16) | ((__u32)eth->h_dest[4] << 8) | eth->h_dest[5];
	struct config *cfg = get_config();
	if (!cfg)
		return TC_ACT_SHOT;

	struct vip skey = {.vni = vni, .ip = ip->saddr};
	struct local_ep *sl = bpf_map_lookup_elem(&locals, &skey);
	__u32 identity = 0;
	__u8 tos = 0;
	if (sl) {
		struct iface *src = bpf_map_lookup_elem(&ifaces, &sl->ifindex);
		if (src) {
			identity = src->identity;
			tos = src->tos;
			skb->priority = src->priority;
		}
		__builtin_memcpy(eth->h_source, sl->mac, ETH_ALEN);
	} else {
		eth->h_source[5] ^= 1; // anything but the VXLAN device's own MAC
	}
	__u32 mark = identity | MARK_APPLIED;
	skb->mark = mark;
	struct vip key = {.vni = vni, .ip = ip->daddr};
	struct remote_ep *r = bpf_map_lookup_elem(&remotes, &key);
	if (r) {
		put_gateway_mac(eth->h_dest);
		if (set_tunnel(skb, cfg, vni, r->host, tos, mark) < 0)
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}
	// The destination moved to this host while its packets were held.
	struct local_ep *l = bpf_map_lookup_elem(&locals, &key);
	if (!l)
		return TC_ACT_SHOT;
	if (l->flags & EP_ISOLATED) {
		struct pkt p = {};
		if (parse(skb, ip, vni, identity, &p) < 0 || enforce(&p, 0, l) < 0)
			return TC_ACT_SHOT;
	}
	if (l->flags & EP_RX_SHAPED) {
		put_shape_mac(eth->h_dest, STAGE_RX, vni);
		return to_shaper(skb, l->rx_class);
	}
	__builtin_memcpy(eth->h_dest, l->mac, ETH_ALEN);
	put_gateway_mac(eth->h_source);
	count_rx(l->ifindex, len);
	return bpf_redirect(l->ifindex, 0);
}

// from_shaper runs on tc ingress of the shaper veth's peer: packets out of
// their class, sent on: after the sender's class to the receiver's class
// if it has one, else to a local endpoint, or to a remote one through the
// VXLAN device with its tunnel key (set here, after the queue: the kernel
// keeps a tunnel key per CPU until the packet is sent).
SEC("tcx/ingress")
int from_shaper(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u32 mark = skb->mark; // kept by the veth within the namespace
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || eth->h_dest[0] != SHAPE_MAC0 ||
	    eth->h_dest[1] != SHAPE_MAC1)
		return TC_ACT_SHOT;
	__u8 stage = eth->h_dest[2];
	__u32 vni = ((__u32)eth->h_dest[3] << 16) | ((__u32)eth->h_dest[4] << 8) | eth->h_dest[5];
	struct vip key = {.vni = vni, .ip = ip->daddr};
	struct local_ep *l = bpf_map_lookup_elem(&locals, &key);
	if (l) {
		if (stage == STAGE_TX && (l->flags & EP_RX_SHAPED)) {
			eth->h_dest[2] = STAGE_RX;
			return to_shaper(skb, l->rx_class);
		}
		__builtin_memcpy(eth->h_dest, l->mac, ETH_ALEN);
		put_gateway_mac(eth->h_source);
		count_rx(l->ifindex, len);
		return bpf_redirect_peer(l->ifindex, 0);
	}
	struct remote_ep *r = bpf_map_lookup_elem(&remotes, &key);
	struct config *cfg = get_config();
	if (!r || !cfg || !cfg->vxlan_ifindex)
		return TC_ACT_SHOT;
	__u32 prio = 0;
	__u8 tos = 0;
	struct vip skey = {.vni = vni, .ip = ip->saddr};
	struct local_ep *sl = bpf_map_lookup_elem(&locals, &skey);
	if (sl) {
		struct iface *src = bpf_map_lookup_elem(&ifaces, &sl->ifindex);
		if (src) {
			prio = src->priority;
			tos = src->tos;
		}
	}
	put_gateway_mac(eth->h_dest);
	skb->priority = prio;
	if (set_tunnel(skb, cfg, vni, r->host, tos, mark) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}
