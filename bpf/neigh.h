/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * neigh.h - the last steps before a routed packet leaves: TTL, then the
 * next hop's link-layer address.
 *
 * egress_ready() takes fib_route()'s verdict and decides, in the order of
 * RFC 1812 5.3.1 and 4.3.3.1:
 *   1. TTL <= 1: time exceeded (11/0), whatever the state of the next hop
 *      (the error goes back where the packet came from, no neighbour
 *      needed), so traceroute's first probe always shows this hop;
 *   2. next hop without a neighbour entry (BPF_FIB_LKUP_RET_NO_NEIGH):
 *      - resolution failed less than CGNAT_NEIGH_FAILED_MS ago: ICMP host
 *        unreachable (3/1, rate-limited), as the kernel does for its own
 *        queue when resolution fails;
 *      - otherwise the frame is copied, as it arrived, into neigh_hold
 *        (at most CGNAT_HOLD_PER_HOP per next hop, CGNAT_HOLD_TOTAL in
 *        all; beyond, CGNAT_DROP_NO_NEIGH) and the daemon is told (at most
 *        once per NEIGH_REPORT_NS per next hop) to ask the kernel to
 *        resolve it. When the kernel reports the neighbour valid, or
 *        failed, the daemon re-runs the held frames through this program
 *        (BPF_PROG_TEST_RUN with live frames): they are then forwarded,
 *        or answered with 3/1.
 * Nothing is rewritten and no state is created before egress_ready(), so
 * a held frame re-runs exactly as if it arrived then.
 */
#ifndef CGNAT_NEIGH_H
#define CGNAT_NEIGH_H

#include "maps.h"
#include "parse.h"
#include "fwd.h"
#include "icmp_gen.h"
#include "events.h"

#define NEIGH_REPORT_NS 100000000ULL /* 100 ms */

/* A fresh next hop's state, kept off the stack (on 6.1 the program and
 * cgnat_fib_lookup() share 512 bytes of it). */
static const struct cgnat_neigh neigh_init;

static __always_inline struct cgnat_neigh *neigh_state(__be32 nexthop)
{
	struct cgnat_neigh *n = bpf_map_lookup_elem(&neigh, &nexthop);

	if (n)
		return n;
	bpf_map_update_elem(&neigh, &nexthop, &neigh_init, BPF_NOEXIST);
	return bpf_map_lookup_elem(&neigh, &nexthop);
}

/* Ask the daemon to have `nexthop` resolved (rate-limited per next hop). */
static __always_inline void neigh_report(struct cgnat_neigh *n, __u32 ifindex,
					 __be32 nexthop, __u64 now)
{
	struct cgnat_event *ev;

	if (n->reported_ns && now - n->reported_ns < NEIGH_REPORT_NS)
		return;
	n->reported_ns = now;
	ev = event_new(CGNAT_EV_NEIGH_MISS);
	if (!ev)
		return;
	ev->ifindex = ifindex;
	ev->addr = nexthop;
	bpf_ringbuf_submit(ev, 0);
}

/* Copy the frame into neigh_hold under (nexthop, slot). */
static __always_inline int neigh_stash(struct xdp_md *ctx, struct pkt *p,
				       __be32 nexthop, __u32 slot)
{
	__u64 len = ctx->data_end - ctx->data;
	struct cgnat_hold_key *k;
	struct cgnat_stash *st;
	__u32 zero = 0;

	/* bounds on the whole 64-bit register, signed and unsigned, kept
	 * apart (see frag_hold() in frag.h) */
	barrier_var(len);
	if (len > CGNAT_STASH_BYTES)
		return CGNAT_DROP_NO_NEIGH;
	barrier_var(len);
	if ((__s64)len < 1)
		return CGNAT_DROP_NO_NEIGH;
	st = bpf_map_lookup_elem(&stash_scratch, &zero);
	k = bpf_map_lookup_elem(&hold_key_scratch, &zero);
	if (!st || !k)
		return CGNAT_DROP_NO_NEIGH;
	k->nexthop = nexthop;
	k->slot = slot;
	st->len = len;
	st->ifindex = p->ifindex;
	st->created_ns = p->now;
	if (bpf_xdp_load_bytes(ctx, 0, st->data, len))
		return CGNAT_DROP_NO_NEIGH;
	if (bpf_map_update_elem(&neigh_hold, k, st, BPF_NOEXIST))
		return CGNAT_DROP_NO_NEIGH; /* all CGNAT_HOLD_TOTAL in use */
	return CGNAT_NEIGH_HELD;
}

/* The next hop fib->ipv4_dst on fib->ifindex has no neighbour entry. */
static __always_inline int neigh_wait(struct xdp_md *ctx, struct pkt *p,
				      struct bpf_fib_lookup *fib)
{
	__be32 nexthop = fib->ipv4_dst;
	struct cgnat_neigh *n = neigh_state(nexthop);
	__u32 slot;

	if (!n)
		return CGNAT_DROP_NO_NEIGH;
	if (n->failed_ns &&
	    p->now - n->failed_ns < CGNAT_NEIGH_FAILED_MS * 1000000ULL)
		return icmp_host_unreach(ctx, p, CGNAT_DROP_NEIGH_FAILED);
	neigh_report(n, fib->ifindex, nexthop, p->now);
	slot = __sync_fetch_and_add(&n->held, 1);
	if (slot >= CGNAT_HOLD_PER_HOP)
		return CGNAT_DROP_NO_NEIGH;
	return neigh_stash(ctx, p, nexthop, slot);
}

/*
 * After fib_route(): CGNAT_CONTINUE when the packet may be rewritten and
 * forwarded, otherwise its final reason (an ICMP error sent, the frame
 * held, or fib_route()'s drop). After anything but CGNAT_CONTINUE the
 * packet must not be touched.
 */
static __always_inline int egress_ready(struct xdp_md *ctx, struct pkt *p,
					int rc, struct bpf_fib_lookup *fib)
{
	if (rc != CGNAT_CONTINUE && rc != CGNAT_DROP_NO_NEIGH)
		return rc;
	if (p->ip->ttl <= 1)
		return icmp_ttl_exceeded(ctx, p);
	if (rc == CGNAT_DROP_NO_NEIGH)
		return neigh_wait(ctx, p, fib);
	return CGNAT_CONTINUE;
}

#endif /* CGNAT_NEIGH_H */
