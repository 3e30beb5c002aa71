// SPDX-License-Identifier: GPL-2.0-only
/*
 * floor.bpf.c - the benchmark's yardstick (make bench, kit/src/bench.rs); not
 * part of cgnat's data path.
 *
 * xdp_floor is the least an XDP IPv4 router does per packet, done the way
 * cgnat does it (bpf/fwd.h): parse Ethernet and IPv4 with bounds checks,
 * bpf_fib_lookup as if from FIB_IFINDEX (the loopback device, as cgnat by
 * default), TTL decrement with the incremental checksum update, MAC
 * rewrite, then XDP_TX or bpf_redirect_map through a DEVMAP_HASH. What
 * cgnat costs beyond it is the price of translation and state.
 *
 * xdp_probe is the floor plus the two hash lookups of cgnat's fast path,
 * to tell what the lookups cost from what translation costs.
 * xdp_probe_line is the floor plus one lookup in a table of cache lines:
 * what a fast path with one lookup per packet in a table of its own
 * would pay instead.
 *
 * The other programs are measuring instruments:
 * - xdp_feed restores a pristine frame (the next one of the `frames`
 *   array, round robin) into the packet and tail-calls the program under
 *   test (feed_target[0]). BPF_PROG_TEST_RUN with repeat > 1 runs a program
 *   again and again on the same buffer, so without it every run after the
 *   first would see the frame the previous run rewrote (already
 *   translated, TTL lower): the wrong path. Its own cost is measured by
 *   tail-calling xdp_empty, and subtracted.
 * - xdp_gen is the traffic generator of the end-to-end benchmark: run with
 *   BPF_F_TEST_XDP_LIVE_FRAMES, it writes the whole frame (gen_frame) with
 *   a new source address and port (gen_subs subscribers x gen_ports ports)
 *   and returns XDP_TX, which live-frames mode transmits out of the
 *   ingress device. On kernels that refuse live frames it is attached to
 *   a veth fed by an AF_PACKET socket instead, and redirects each frame
 *   it writes to gen_redirect_ifindex.
 * - xdp_sink counts the IPv4 UDP frames that arrive at the far end (per
 *   CPU) and drops everything, or, as the reflector, sends each one back
 *   round as the generator's next frame.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "cgnat.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Largest frame xdp_feed restores (a power of two). */
#define BENCH_FRAME_MAX 256

/* ifindex handed to bpf_fib_lookup (0: the ingress interface). */
const volatile __u32 FIB_IFINDEX = 0;

/* Egress interfaces for XDP_REDIRECT, keyed by ifindex (as cgnat's). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

/* Route, TTL, MACs, transmit: the forwarding half of the floor. */
static __always_inline int floor_forward(struct xdp_md *ctx, struct ethhdr *eth,
					 struct iphdr *ip, __u32 tot)
{
	struct bpf_fib_lookup fib;
	__u32 check;
	long rc;

	if (ip->ttl <= 1)
		return XDP_PASS; /* the kernel sends time exceeded */
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.tot_len = tot;
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = FIB_IFINDEX ? FIB_IFINDEX : ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE ||
	    rc == BPF_FIB_LKUP_RET_PROHIBIT)
		return XDP_DROP;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS; /* local, no neighbour yet ...: the kernel's */

	/* RFC 1624 incremental update, as bpf/fwd.h ip_decrease_ttl() */
	check = (__u32)ip->check;
	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	rc = bpf_redirect_map(&tx_ports, fib.ifindex, 0);
	return rc == XDP_REDIRECT ? XDP_REDIRECT : XDP_DROP;
}

/* Ethernet and IPv4 header checks; returns the IP total length or 0. */
static __always_inline __u32 floor_parse(struct xdp_md *ctx, struct ethhdr **ethp,
					 struct iphdr **ipp, int *verdict)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 tot;

	*verdict = XDP_DROP;
	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		*verdict = XDP_PASS;
		return 0;
	}
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return 0;
	tot = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || ip->ihl < 5 || tot < ip->ihl * 4 ||
	    tot > (__u64)(data_end - (void *)ip))
		return 0;
	*ethp = eth;
	*ipp = ip;
	return tot;
}

SEC("xdp")
int xdp_floor(struct xdp_md *ctx)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	int verdict;
	__u32 tot = floor_parse(ctx, &eth, &ip, &verdict);

	if (!tot)
		return verdict;
	return floor_forward(ctx, eth, ip, tot);
}

/* floor_parse(), then the two port fields after the IPv4 header (TCP and
 * UDP alike) into *portsp; 0 (and *verdict) if the frame has no ports. */
static __always_inline __u32 floor_parse_ports(struct xdp_md *ctx, struct ethhdr **ethp,
					       struct iphdr **ipp, __be16 **portsp,
					       int *verdict)
{
	__u32 tot = floor_parse(ctx, ethp, ipp, verdict);
	__be16 *ports;

	if (!tot)
		return 0;
	ports = (void *)*ipp + (*ipp)->ihl * 4;
	if ((void *)(ports + 2) > (void *)(long)ctx->data_end) {
		*verdict = XDP_DROP;
		return 0;
	}
	*portsp = ports;
	return tot;
}

/* ---- xdp_probe: the floor plus cgnat's two fast-path lookups ---- */

/*
 * A component measurement: what the two hash lookups of cgnat's outbound
 * fast path (binding by internal endpoint, then session by external and
 * remote endpoints, bpf/nat.h nat_outbound) add to the floor, in maps of
 * cgnat's own key and value types, sized and filled like cgnat's.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct cgnat_endpoint);
	__type(value, struct cgnat_binding);
} probe_bind SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct cgnat_session_key);
	__type(value, struct cgnat_session);
} probe_sess SEC(".maps");

/* Sessions the probe found (keeps the lookups' results used). */
__u64 probe_hits = 0;

SEC("xdp")
int xdp_probe(struct xdp_md *ctx)
{
	struct cgnat_endpoint ik = {};
	struct cgnat_session_key sk = {};
	struct cgnat_binding *b;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 *ports;
	int verdict;
	__u32 tot = floor_parse_ports(ctx, &eth, &ip, &ports, &verdict);

	if (!tot)
		return verdict;
	ik.addr = ip->saddr;
	ik.port = ports[0];
	ik.proto = ip->protocol;
	b = bpf_map_lookup_elem(&probe_bind, &ik);
	if (b) {
		sk.ext_addr = b->addr;
		sk.ext_port = b->port;
		sk.rem_addr = ip->daddr;
		sk.rem_port = ports[1];
		sk.proto = ip->protocol;
		if (bpf_map_lookup_elem(&probe_sess, &sk))
			probe_hits++;
	}
	return floor_forward(ctx, eth, ip, tot);
}

/* ---- xdp_probe_line: the floor plus one lookup in a table of lines ---- */

/*
 * A design measurement: one lookup per established packet in a table laid
 * out for it, against cgnat's two kernel hash lookups. A BPF array of
 * 64-byte slots (one cache line each: the 5-tuple, and room for a
 * translation and a session's state), open addressing with linear
 * probing from probe_line_hash(), which Floor::fill_lines
 * (kit/src/floor.rs) computes the same way.
 */
struct probe_line {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 used;
	__u8 _pad[2];
	__u8 state[48];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_line);
} probe_lines SEC(".maps");

/* slots of probe_lines - 1 (a power of two less one; set by the loader) */
__u32 probe_lines_mask = 0;
/* Flows xdp_probe_line found. */
__u64 probe_line_hits = 0;

/* Slots a lookup tries before it gives up (the loader never fills a
 * longer run). */
#define PROBE_LINE_TRIES 64

/* The first slot of a 5-tuple, from its fields as they lie in the packet
 * (network order, read as host integers). */
static __always_inline __u32 probe_line_hash(__u32 saddr, __u32 daddr, __u16 sport,
					     __u16 dport, __u8 proto)
{
	__u64 h = ((__u64)saddr << 32) | daddr;

	/* the finalizer of MurmurHash3 over both words */
	h ^= (((__u64)sport << 24) | ((__u64)dport << 8) | proto) * 0x9e3779b97f4a7c15ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (__u32)h;
}

SEC("xdp")
int xdp_probe_line(struct xdp_md *ctx)
{
	struct probe_line *l;
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 *ports;
	__u32 slot, i;
	int verdict;
	__u32 tot = floor_parse_ports(ctx, &eth, &ip, &ports, &verdict);

	if (!tot)
		return verdict;
	slot = probe_line_hash(ip->saddr, ip->daddr, ports[0], ports[1], ip->protocol);
	for (i = 0; i < PROBE_LINE_TRIES; i++) {
		__u32 k = (slot + i) & probe_lines_mask;

		l = bpf_map_lookup_elem(&probe_lines, &k);
		if (!l || !l->used)
			break;
		if (l->saddr == ip->saddr && l->daddr == ip->daddr &&
		    l->sport == ports[0] && l->dport == ports[1] &&
		    l->proto == ip->protocol) {
			probe_line_hits++;
			break;
		}
	}
	return floor_forward(ctx, eth, ip, tot);
}

/* ---- xdp_feed: a pristine frame per run, then the program under test ---- */

struct bench_frame {
	__u32 len;
	__u32 _pad;
	__u8 data[BENCH_FRAME_MAX];
};

/* The frames, used round robin (sized by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_frame);
} frames SEC(".maps");

/* Next frame, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} feed_cursor SEC(".maps");

/* [0]: the program under test. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} feed_target SEC(".maps");

/* Frames in use in `frames` (set by the loader). */
__u32 feed_frames = 1;

SEC("xdp")
int xdp_feed(struct xdp_md *ctx)
{
	__u32 zero = 0, idx, len;
	struct bench_frame *f;
	__u32 *cur;

	cur = bpf_map_lookup_elem(&feed_cursor, &zero);
	if (!cur)
		return XDP_ABORTED;
	idx = *cur;
	*cur = idx + 1 >= feed_frames ? 0 : idx + 1;
	f = bpf_map_lookup_elem(&frames, &idx);
	if (!f)
		return XDP_ABORTED;
	len = f->len;
	if (len == 0 || len > BENCH_FRAME_MAX)
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, f->data, len))
		return XDP_ABORTED;
	bpf_tail_call(ctx, &feed_target, 0);
	return XDP_ABORTED;
}

/* Tail-call target that does nothing: the cost of xdp_feed itself. */
SEC("xdp")
int xdp_empty(struct xdp_md *ctx)
{
	return XDP_DROP;
}

/* ---- xdp_gen: the live-frames traffic generator ---- */

/*
 * Live-frames mode recycles a page once the frame in it has been sent and
 * freed, but does not copy the original frame in again: the generator
 * would send what the router and the sink left in it (MACs, TTL and
 * addresses rewritten). So each frame is written whole from gen_frame.
 */
__u8 gen_frame[BENCH_FRAME_MAX];
__u32 gen_len = 0;	/* bytes of gen_frame: Ethernet, IPv4 (IHL 5), UDP */
__u32 gen_subs = 1;	/* distinct source addresses ... */
__u32 gen_ports = 1;	/* ... times distinct source ports */
__u32 gen_src_base = 0; /* first source address, host order */
__u32 gen_port_base = 10000;
__u64 gen_seq = 0;
/* Pacing (0: none): at most gen_limit frames in all, one per gen_gap_ns.
 * A frame that is not due is dropped before it is written; a run that
 * falls behind by more than 64 gaps starts again from now. */
__u64 gen_limit = 0;
__u64 gen_gap_ns = 0;
__u64 gen_next_ns = 0;
__u64 gen_sent = 0;
/* 0: XDP_TX (live frames); else redirect there (attached, fed by a socket) */
__u32 gen_redirect_ifindex = 0;

/* Writes frame gen_seq of the cycle over the packet (which must hold
 * gen_len bytes): gen_frame with its source address and port, and the IP
 * checksum. 0 on success. */
static __always_inline int gen_write(struct xdp_md *ctx)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	void *data, *data_end;
	__u32 n, len = gen_len, sum = 0;
	__u16 *w;
	int i;

	if (len < sizeof(*eth) + sizeof(*ip) + sizeof(*udp) || len > BENCH_FRAME_MAX)
		return -1;
	if (bpf_xdp_store_bytes(ctx, 0, gen_frame, len))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return -1;
	n = gen_seq++;
	ip->saddr = bpf_htonl(gen_src_base + n % gen_subs);
	udp->source = bpf_htons(gen_port_base + (n / gen_subs) % gen_ports);
	udp->check = 0;
	ip->check = 0;
	w = (void *)ip;
	for (i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = (__sum16)~sum;
	return 0;
}

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	if (gen_limit && gen_sent >= gen_limit)
		return XDP_DROP;
	if (gen_gap_ns) {
		__u64 now = bpf_ktime_get_ns();

		if (now < gen_next_ns)
			return XDP_DROP;
		if (gen_next_ns + 64 * gen_gap_ns < now)
			gen_next_ns = now;
		gen_next_ns += gen_gap_ns;
	}
	gen_sent++;
	if (gen_write(ctx))
		return XDP_DROP;
	if (gen_redirect_ifindex)
		return bpf_redirect(gen_redirect_ifindex, 0);
	return XDP_TX;
}

/* ---- xdp_sink: count, then drop or reflect ---- */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

/*
 * The reflector: with sink_reflect set, xdp_sink writes each frame it
 * counts over as the generator's next one (gen_write, gen_sent counts
 * them) and sends it through reflect_port[0], the generator's veth toward
 * the router. The frames seeded into the loop then go round it at the
 * pace of its slowest stage, so a router slower than the sink runs
 * saturated. A DEVMAP, because that veth is in another namespace: its
 * entry, written there, holds the device itself.
 */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} reflect_port SEC(".maps");

__u32 sink_reflect = 0;

/* Counts IPv4 UDP frames only (what xdp_gen sends, translated or not):
 * the far end's own IPv6 and ARP chatter is no received traffic. */
SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)(long)ctx->data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 zero = 0;
	__u64 *c;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP)
		return XDP_DROP;
	c = bpf_map_lookup_elem(&sink_count, &zero);
	if (c)
		(*c)++;
	if (!sink_reflect || gen_write(ctx))
		return XDP_DROP;
	gen_sent++;
	return bpf_redirect_map(&reflect_port, 0, XDP_DROP);
}

/* For the far end of veth links in test beds: a veth delivers frames sent
 * to it by XDP_TX only if its peer runs an XDP program (GRO alone is
 * enough for XDP_REDIRECT). */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
