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

// config.flags
#define CFG_HOLD 1 // hold a miss's packets in the VXLAN device's neighbour queue

// A miss is reported again for the same destination after this long.
#define MISS_REPORT_NS (100ULL * 1000 * 1000)

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

// local_ep is an endpoint on this host: its host-side veth and its MAC.
struct local_ep {
	__u32 ifindex;
	__u8 mac[ETH_ALEN];
	__u16 _pad;
};

// iface is the endpoint behind a host-side veth, by the veth's ifindex.
struct iface {
	__u32 vni;
	__be32 ip;
	__u32 identity;
	__u8 mac[ETH_ALEN];
	__u16 _pad;
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

struct vpc {
	__u32 flags;
};

struct config {
	__u32 vxlan_ifindex;
	__be32 underlay;
	__u32 flags;
};

// counters are an endpoint's traffic, per CPU: tx is what it sent, rx what
// was delivered to it.
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

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline int drop(struct counters *c, int reason)
{
	if (c)
		c->drops[reason & (NUM_DROP_REASONS - 1)]++;
	return TC_ACT_SHOT;
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

// set_tunnel sends the packet to a remote endpoint's host: VNI and
// underlay address in the tunnel key, the sender's identity in the
// VXLAN-GBP option.
static __always_inline int set_tunnel(struct __sk_buff *skb, struct config *cfg, __u32 vni, __be32 host, __u32 identity)
{
	struct bpf_tunnel_key key = {
		.tunnel_id = vni,
		.remote_ipv4 = bpf_ntohl(host),
		.local_ipv4 = bpf_ntohl(cfg->underlay),
		.tunnel_ttl = 64,
	};
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return -1;
	if (identity) {
		struct vxlan_md md = {.gbp = identity & 0xffff};
		if (bpf_skb_set_tunnel_opt(skb, &md, sizeof(md)) < 0)
			return -1;
	}
	return 0;
}

// arp_reply answers an endpoint's ARP request for any address of its VPC's
// subnets but its own with the gateway's MAC.
static __always_inline int arp_reply(struct ethhdr *eth, void *end, __u32 ifindex, struct iface *src, struct counters *c)
{
	struct arp_eth *a = (void *)(eth + 1);
	if ((void *)(a + 1) > end)
		return drop(c, DROP_NO_ROUTE);
	if (a->htype != bpf_htons(1) || a->ptype != bpf_htons(ETH_P_IP) || a->hlen != ETH_ALEN || a->plen != 4 ||
	    a->op != bpf_htons(1))
		return drop(c, DROP_NO_ROUTE);
	__be32 tpa, spa;
	__builtin_memcpy(&tpa, a->tpa, 4);
	__builtin_memcpy(&spa, a->spa, 4);
	if (tpa == src->ip)
		return drop(c, DROP_NO_ROUTE); // duplicate address detection, gratuitous ARP
	struct subnet_key sk = {.prefixlen = 64, .vni = src->vni, .ip = tpa};
	if (!bpf_map_lookup_elem(&subnets, &sk))
		return drop(c, DROP_NO_ROUTE);
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
static __always_inline int gateway_reply(struct ethhdr *eth, void *end, __u32 ifindex, struct counters *c)
{
	struct iphdr *ip = (void *)(eth + 1);
	struct icmphdr *ic = (void *)(ip + 1);
	if ((void *)(ic + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_ICMP || ic->type != ICMP_ECHO || ic->code != 0)
		return drop(c, DROP_NO_ROUTE);
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
static __always_inline int miss(struct vip *key, struct counters *c)
{
	struct config *cfg = get_config();
	if (!cfg)
		return drop(c, DROP_NO_LOCATION);
	__u64 now = bpf_ktime_get_ns();
	__u64 *seen = bpf_map_lookup_elem(&miss_seen, key);
	if (!seen || now - *seen > MISS_REPORT_NS) {
		bpf_map_update_elem(&miss_seen, key, &now, BPF_ANY);
		struct miss ev = {.vni = key->vni, .ip = key->ip};
		bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
	}
	if (!(cfg->flags & CFG_HOLD) || !cfg->vxlan_ifindex)
		return drop(c, DROP_NO_LOCATION);
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
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct iface *src = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!src)
		return TC_ACT_SHOT;
	struct counters *c = bpf_map_lookup_elem(&counters, &ifindex);
	if (c) {
		c->tx_packets++;
		c->tx_bytes += len;
	}
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return drop(c, DROP_NO_ROUTE);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return arp_reply(eth, end, ifindex, src, c);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return drop(c, DROP_NO_ROUTE);
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return drop(c, DROP_NO_ROUTE);
	if (ip->saddr != src->ip)
		return drop(c, DROP_NO_ROUTE); // spoofed: no route back to it here

	struct vip key = {.vni = src->vni, .ip = ip->daddr};
	struct local_ep *l = bpf_map_lookup_elem(&locals, &key);
	if (l) {
		if (ttl_dec(ip) < 0)
			return drop(c, DROP_NO_ROUTE);
		__builtin_memcpy(eth->h_dest, l->mac, ETH_ALEN);
		put_gateway_mac(eth->h_source);
		count_rx(l->ifindex, len);
		return bpf_redirect_peer(l->ifindex, 0);
	}
	struct remote_ep *r = bpf_map_lookup_elem(&remotes, &key);
	if (r) {
		struct config *cfg = get_config();
		if (!cfg || !cfg->vxlan_ifindex)
			return drop(c, DROP_NO_ROUTE);
		if (ttl_dec(ip) < 0)
			return drop(c, DROP_NO_ROUTE);
		// The inner source MAC stays the sender's: the receiving VXLAN
		// device drops frames from its own MAC (the gateway's) as loops.
		put_gateway_mac(eth->h_dest);
		if (set_tunnel(skb, cfg, src->vni, r->host, src->identity) < 0)
			return drop(c, DROP_NO_ROUTE);
		return bpf_redirect(cfg->vxlan_ifindex, 0);
	}
	struct subnet_key sk = {.prefixlen = 64, .vni = src->vni, .ip = ip->daddr};
	struct subnet *s = bpf_map_lookup_elem(&subnets, &sk);
	if (!s)
		return drop(c, DROP_NO_ROUTE);
	if (s->gateway == ip->daddr)
		return gateway_reply(eth, end, ifindex, c);
	if (ttl_dec(ip) < 0)
		return drop(c, DROP_NO_ROUTE);
	return miss(&key, c);
}

// from_vxlan runs on tc ingress of the VXLAN device: packets from other
// hosts, delivered by VNI and inner destination.
SEC("tcx/ingress")
int from_vxlan(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct bpf_tunnel_key tk = {};
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0)
		return TC_ACT_SHOT;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_SHOT;
	struct vip key = {.vni = tk.tunnel_id, .ip = ip->daddr};
	struct local_ep *l = bpf_map_lookup_elem(&locals, &key);
	if (!l)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, l->mac, ETH_ALEN);
	put_gateway_mac(eth->h_source);
	count_rx(l->ifindex, len);
	return bpf_redirect_peer(l->ifindex, 0);
}

// to_vxlan runs on tc egress of the VXLAN device. Packets from_ep sent to
// a known remote already carry their tunnel key and pass. Packets a miss
// held come out of the neighbour queue once the agent resolved it, with
// the hold MAC (VNI in its last three bytes) as destination: they get
// their tunnel key here.
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
	if (sl) {
		struct iface *src = bpf_map_lookup_elem(&ifaces, &sl->ifindex);
		if (src)
			identity = src->identity;
		__builtin_memcpy(eth->h_source, sl->mac, ETH_ALEN);
	} else {
		eth->h_source[5] ^= 1; // anything but the VXLAN device's own MAC
	}
	struct vip key = {.vni = vni, .ip = ip->daddr};
	struct remote_ep *r = bpf_map_lookup_elem(&remotes, &key);
	if (r) {
		put_gateway_mac(eth->h_dest);
		if (set_tunnel(skb, cfg, vni, r->host, identity) < 0)
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}
	// The destination moved to this host while its packets were held.
	struct local_ep *l = bpf_map_lookup_elem(&locals, &key);
	if (!l)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, l->mac, ETH_ALEN);
	put_gateway_mac(eth->h_source);
	count_rx(l->ifindex, len);
	return bpf_redirect(l->ifindex, 0);
}
