// SPDX-License-Identifier: GPL-2.0-only
/*
 * cgnat.bpf.c - the whole CGNAT data path: one XDP program per interface
 * role, all calling process().
 *
 * Configuration arrives as rodata (set by the daemon before load) and maps
 * (pools, prefixes, tx ports). Timeouts are not here: the data path only
 * stamps last_seen_ns and TCP events; the daemon expires state.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "cgnat.h"

/* ifindex handed to bpf_fib_lookup (0: the ingress interface). */
const volatile __u32 FIB_IFINDEX = 0;
/* Number of valid entries in pool_addrs. */
const volatile __u32 POOL_LEN = 0;
/* Inbound packets refresh sessions (RFC 4787 REQ-6a: MAY; off by
 * default, so outsiders cannot keep a mapping alive). */
const volatile __u8 INBOUND_REFRESH = 0;
/* Filtering per protocol (enum cgnat_filtering); endpoint-independent by
 * default (RFC 4787 REQ-8, RFC 6888 REQ-7). */
const volatile __u8 FILTER_UDP = CGNAT_FILTER_EIF;
const volatile __u8 FILTER_TCP = CGNAT_FILTER_EIF;
const volatile __u8 FILTER_ICMP = CGNAT_FILTER_EIF;
/* Keep the parity of the source port in random allocations (RFC 4787
 * REQ-4; RFC 7857 section 8 allows turning it off, as by default here). */
const volatile __u8 PRESERVE_PARITY = 0;
/* Generated ICMP errors per second and CPU (RFC 1812 4.3.2.8 rate
 * limit; also the burst). 0: never generate. */
const volatile __u32 ICMP_RATE = 100;
/* Port allocation (enum cgnat_alloc_mode) and its geometry. */
const volatile __u8 ALLOC_MODE = CGNAT_ALLOC_DYNAMIC;
const volatile __u32 BLOCK_SIZE = 256;       /* port-block: ports per block */
const volatile __u32 MAX_BLOCKS = 4;         /* port-block: per subscriber */
const volatile __u32 BLOCKS_PER_ADDR = 252;  /* (65536 - 1024) / BLOCK_SIZE */
const volatile __u32 DET_HOSTS = 0;          /* deterministic: per address */
const volatile __u32 DET_PORTS = 0;          /* deterministic: per subscriber */
/* Per-subscriber limits (RFC 6888 REQ-4, REQ-5; 0: none): bindings per
 * protocol, sessions, new bindings per second. */
const volatile __u32 LIMIT_PORTS = 0;
const volatile __u32 LIMIT_SESSIONS = 0;
const volatile __u32 RATE_NEW = 0;
/* nat.exempt has entries. */
const volatile __u8 HAS_EXEMPT = 0;
/* Key of the IP ID hash (frag.h); random, set by the daemon. */
const volatile __u32 ID_SECRET = 0;
/* Clamp the MSS option of TCP SYNs to at most this (0: off). */
const volatile __u16 MSS_CLAMP = 0;
/* Route cache entries are trusted this long (0: no cache); see
 * struct cgnat_route. Bounds staleness even if the daemon misses a change. */
const volatile __u64 ROUTE_CACHE_NS = 1000000000ULL;
/* Frames that leave by the interface they came in on are redirected to it
 * through the devmap instead of XDP_TX (tx.h; for veth). */
const volatile __u8 TX_REDIRECT = 0;

#include "maps.h"
#include "parse.h"
#include "stats.h"
#include "fwd.h"
#include "nat.h"
#include "icmp.h"
#include "neigh.h"

/*
 * RFC 6598 section 4: shared (internal) addresses are filtered on ingress
 * links. From outside, a packet to the pool claiming a subscriber's address
 * is spoofed: it must neither reach another subscriber through a mapping
 * nor create state. (One-armed, the addresses are all there is to tell the
 * direction by.)
 */
static __always_inline int spoofed_from_outside(struct pkt *p, __u32 side)
{
	return side == CGNAT_SIDE_EXTERNAL &&
	       lpm_has(&internal_prefixes, p->ip->saddr) &&
	       lpm_has(&pool_prefixes, p->ip->daddr);
}

/* TCP, UDP, ICMP echo (and first fragments): by direction. */
static __always_inline int nat_query(struct xdp_md *ctx, struct pkt *p,
				     __u32 side)
{
	int rc = CGNAT_CONTINUE;

	if (spoofed_from_outside(p, side))
		return CGNAT_DROP_SPOOFED;
	if (side & CGNAT_SIDE_INTERNAL)
		rc = nat_outbound(ctx, p);
	if (rc == CGNAT_CONTINUE && (side & CGNAT_SIDE_EXTERNAL))
		rc = nat_inbound(ctx, p);
	return rc;
}

/* A later fragment: it follows its first fragment's translation. */
static __always_inline int nat_later(struct xdp_md *ctx, struct pkt *p,
				     __u32 side)
{
	if (spoofed_from_outside(p, side))
		return CGNAT_DROP_SPOOFED;
	return nat_fragment(ctx, p, side);
}

static __always_inline int nat_icmp_error(struct xdp_md *ctx, struct pkt *p,
					  __u32 side)
{
	int rc = CGNAT_CONTINUE;

	if (spoofed_from_outside(p, side))
		return CGNAT_DROP_SPOOFED;
	if (side & CGNAT_SIDE_INTERNAL)
		rc = nat_icmp_error_out(ctx, p);
	if (rc == CGNAT_CONTINUE && (side & CGNAT_SIDE_EXTERNAL))
		rc = nat_icmp_error_in(ctx, p);
	return rc;
}

static __always_inline int process(struct xdp_md *ctx, __u32 side)
{
	struct pkt p = { .now = bpf_ktime_get_coarse_ns() };
	__u64 bytes = ctx->data_end - ctx->data;
	int rc;

	p.ifindex = ctx->ingress_ifindex;
	rc = parse_packet(ctx, &p);
	if (rc == CGNAT_CONTINUE && !addressed_to_us(&p, side))
		rc = CGNAT_PASS_NOT_FOR_US;
	if (rc == CGNAT_CONTINUE && p.frag == FRAG_LATER)
		rc = nat_later(ctx, &p, side);
	else if (rc == CGNAT_CONTINUE && p.inner)
		rc = nat_icmp_error(ctx, &p, side);
	else if (rc == CGNAT_CONTINUE)
		rc = nat_query(ctx, &p, side);
	if (rc == CGNAT_CONTINUE)
		rc = nat_other(ctx, &p, side);
	if (rc == CGNAT_DROP_NO_NEIGH && p.nexthop)
		rc = neigh_wait(ctx, &p);
	count(rc, bytes);
	return reason_action(rc, p.action);
}

/* Attached to the subscriber-side interface. */
SEC("xdp")
int xdp_internal(struct xdp_md *ctx)
{
	return process(ctx, CGNAT_SIDE_INTERNAL);
}

/* Attached to the upstream interface. */
SEC("xdp")
int xdp_external(struct xdp_md *ctx)
{
	return process(ctx, CGNAT_SIDE_EXTERNAL);
}

/* One-armed: both roles on one interface, told apart by address. */
SEC("xdp")
int xdp_one_armed(struct xdp_md *ctx)
{
	return process(ctx, CGNAT_SIDE_BOTH);
}

/* Not part of the NAT: an XDP_PASS program for the far end of veth links
 * in test beds. A veth delivers frames sent to it by XDP_TX only if its
 * peer runs an XDP program (GRO alone is enough for XDP_REDIRECT). */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

/* Types that no map names: these globals put them into BTF, so the daemon
 * gets them from the generated skeleton instead of a hand-made copy. */
struct cgnat_event _btf_event = {};
struct cgnat_meta _btf_meta = {};
enum cgnat_stat _btf_stat = CGNAT_STAT__MAX;
enum cgnat_tcp_state _btf_tcp_state = CGNAT_TCP_INIT;
enum cgnat_tcp_event _btf_tcp_event = CGNAT_TCP_SYN_OUT;
enum cgnat_session_flag _btf_session_flag = CGNAT_SESS_INBOUND;
enum cgnat_binding_flag _btf_binding_flag = CGNAT_BIND_QUARANTINE;
enum cgnat_event_type _btf_event_type = CGNAT_EV_NEIGH_MISS;
enum cgnat_filtering _btf_filtering = CGNAT_FILTER_EIF;
enum cgnat_alloc_mode _btf_alloc_mode = CGNAT_ALLOC_DYNAMIC;
enum cgnat_proto_idx _btf_proto_idx = CGNAT_PI_TCP;
enum cgnat_time _btf_time = CGNAT_TIME_SHIFT;
enum cgnat_hold_limit _btf_hold_limit = CGNAT_HOLD_PER_HOP;
enum cgnat_proto _btf_proto = CGNAT_PROTO_TCP;
enum cgnat_event_lost _btf_event_lost = CGNAT_EVENT_SLOTS;
enum cgnat_ports _btf_ports = CGNAT_PORT_MIN;
