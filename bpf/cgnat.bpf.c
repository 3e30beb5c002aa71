// SPDX-License-Identifier: GPL-2.0-only
/*
 * cgnat.bpf.c - the whole CGNAT data path: one XDP program per interface
 * role, all calling process().
 *
 * Configuration arrives as rodata (config.h, set by the daemon before
 * load) and maps (pools, prefixes, tx ports). Timeouts are not here: the
 * data path only stamps sessions' last_seen and TCP events; the daemon
 * expires state.
 *
 * A packet's way: parse.h, mac.h (sent to us?), then one translation
 * (nat.h, icmp.h, frag.h), each of which routes and forwards through
 * fwd.h, or a reason to pass or drop; neigh.h holds what waits for its
 * next hop; stats.h counts the reason and turns it into the XDP action.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "cgnat.h"
#include "addr.h"
#include "frag.h"
#include "icmp.h"
#include "mac.h"
#include "maps.h"
#include "nat.h"
#include "neigh.h"
#include "parse.h"
#include "sessions.h"
#include "stats.h"
#include "sweep.h"

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
	       is_internal(p->ip->saddr) &&
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

/* The daemon's sweep (sweep.h), run with BPF_PROG_TEST_RUN. */
SEC("syscall")
int sweep_tables(struct cgnat_sweep *ctx)
{
	return sweep(ctx);
}

/* The daemon's operations on the session table (sessions.h), run with
 * BPF_PROG_TEST_RUN. */
SEC("syscall")
int session_ops(struct cgnat_session_ops *ctx)
{
	return session_ops_do(ctx);
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
enum cgnat_sweep_limits _btf_sweep_limits = CGNAT_SWEEP_UDP_PORTS;
enum cgnat_sweep_class _btf_sweep_class = CGNAT_SC_TCP_EST;
enum cgnat_sweep_mode _btf_sweep_mode = CGNAT_SWEEP_FULL;
enum cgnat_sweep_flags _btf_sweep_flags = CGNAT_SWEEP_FILTER;
enum cgnat_slot_kind _btf_slot_kind = CGNAT_KIND_BIND_OUT;
struct cgnat_sweep _btf_sweep = {};
enum cgnat_session_table _btf_session_table = CGNAT_SEG_SLOTS;
enum cgnat_slot_state _btf_slot_state = CGNAT_SLOT_EMPTY;
enum cgnat_session_op_kind _btf_session_op_kind = CGNAT_SOP_GET;
struct cgnat_session_ops _btf_session_ops = {};
struct cgnat_bind_out _btf_bind_out = {};
