/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * neigh.h - frames whose next hop has no link-layer address yet.
 *
 * egress_ready() (fwd.h) notes such a next hop (BPF_FIB_LKUP_RET_NO_NEIGH)
 * in p->nexthop and ends the packet's way with CGNAT_DROP_NO_NEIGH;
 * process() then calls neigh_wait(), once for every path, which decides
 * in the order of RFC 1812 5.3.1 and 4.3.3.1:
 *   1. TTL <= 1: time exceeded (11/0), whatever the state of the next hop
 *      (the error goes back where the packet came from, no neighbour
 *      needed), so traceroute's first probe always shows this hop;
 *   2. otherwise:
 *      - resolution failed less than CGNAT_NEIGH_FAILED_MS ago: ICMP host
 *        unreachable (3/1, rate-limited), as the kernel does for its own
 *        queue when resolution fails;
 *      - otherwise the frame is copied, as it arrived, into neigh_hold
 *        (at most CGNAT_HOLD_PER_HOP per next hop, CGNAT_HOLD_TOTAL in
 *        all; beyond, CGNAT_DROP_NO_NEIGH) and the daemon is told (at most
 *        once per NEIGH_REPORT_NS per next hop) to ask the kernel to
 *        resolve it. When the kernel reports the neighbour valid, or
 *        failed, the daemon re-runs the held frames through this program
 *        (BPF_PROG_TEST_RUN) and sends what it returns (src/inject.rs):
 *        they are then forwarded, or answered with 3/1.
 * Nothing is rewritten and no state is created before egress_ready(), so
 * a held frame re-runs exactly as if it arrived then.
 */
#ifndef CGNAT_NEIGH_H
#define CGNAT_NEIGH_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "events.h"
#include "icmp_gen.h"
#include "maps.h"
#include "parse.h"
#include "stash.h"

#define NEIGH_REPORT_NS 100000000ULL /* 100 ms */

/* A fresh next hop's state (in rodata: nothing to build on the stack). */
static const struct cgnat_neigh neigh_init;

/* The state of the next hop *nexthop (a field of the FIB answer). */
static __always_inline struct cgnat_neigh *neigh_state(__be32 *nexthop)
{
	struct cgnat_neigh *n = bpf_map_lookup_elem(&neigh, nexthop);

	if (n)
		return n;
	bpf_map_update_elem(&neigh, nexthop, &neigh_init, BPF_NOEXIST);
	return bpf_map_lookup_elem(&neigh, nexthop);
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
	event_send(ev);
}

/* Copy the frame into neigh_hold under (nexthop, slot). */
static __always_inline int neigh_stash(struct xdp_md *ctx, struct pkt *p,
				       __be32 nexthop, __u32 slot)
{
	struct cgnat_hold_key k = { .nexthop = nexthop, .slot = slot };
	struct cgnat_stash *st = stash_frame(ctx, p);

	if (!st || bpf_map_update_elem(&neigh_hold, &k, st, BPF_NOEXIST))
		return CGNAT_DROP_NO_NEIGH; /* too big, or all CGNAT_HOLD_TOTAL in use */
	return CGNAT_NEIGH_HELD;
}

/* The next hop p->nexthop has no neighbour entry: hold the frame, or
 * answer it when resolution failed recently. */
static __always_inline int neigh_wait(struct xdp_md *ctx, struct pkt *p)
{
	struct cgnat_neigh *n;
	__u32 slot;

	/* RFC 1812 5.3.1: TTL first; the error needs no neighbour */
	if (p->ip->ttl <= 1)
		return icmp_ttl_exceeded(ctx, p);
	n = neigh_state(&p->nexthop);
	if (!n)
		return CGNAT_DROP_NO_NEIGH;
	/* signed: a stamp the daemon took a moment "after" p->now is recent */
	if (n->failed_ns &&
	    (__s64)(p->now - n->failed_ns) < CGNAT_NEIGH_FAILED_MS * 1000000LL)
		return icmp_host_unreach(ctx, p, CGNAT_DROP_NEIGH_FAILED);
	neigh_report(n, p->nexthop_ifindex, p->nexthop, p->now);
	slot = __sync_fetch_and_add(&n->held, 1);
	if (slot >= CGNAT_HOLD_PER_HOP)
		return CGNAT_DROP_NO_NEIGH;
	return neigh_stash(ctx, p, p->nexthop, slot);
}

#endif /* CGNAT_NEIGH_H */
