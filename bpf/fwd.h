/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * fwd.h - the way out of every forwarded packet, in three steps:
 *   1. after the route (route.h), egress_ready(): what must hold before
 *      the packet may leave (TTL, next hop resolved);
 *   2. the caller rewrites the packet, and only then
 *   3. forward(): TTL decremented, MACs set, sent back out (tx.h) or
 *      redirected through the devmap.
 * Nothing is rewritten and no state is created before step 1 succeeds,
 * so a packet held for its next hop (neigh.h) re-runs exactly as if it
 * arrived then.
 */
#ifndef CGNAT_FWD_H
#define CGNAT_FWD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "icmp_gen.h"
#include "parse.h"
#include "route.h"
#include "tx.h"

/*
 * After fib_route(): CGNAT_CONTINUE when the packet may be rewritten and
 * forwarded, otherwise its reason (time exceeded sent, or fib_route()'s
 * drop). An unresolved next hop is CGNAT_DROP_NO_NEIGH with p->nexthop
 * set, whatever the TTL: process() then calls neigh_wait() once for every
 * path, which answers TTL <= 1 first. (Inlined at each call site, the
 * unresolved case would need stack the 6.1 verifier does not have.) After
 * anything but CGNAT_CONTINUE the packet must not be touched.
 */
static __always_inline int egress_ready(struct xdp_md *ctx, struct pkt *p,
					int rc, struct bpf_fib_lookup *fib)
{
	if (rc == CGNAT_DROP_NO_NEIGH) {
		p->nexthop = fib->ipv4_dst;
		p->nexthop_ifindex = fib->ifindex;
		return rc;
	}
	if (rc != CGNAT_CONTINUE)
		return rc;
	if (p->ip->ttl <= 1)
		return icmp_ttl_exceeded(ctx, p);
	return CGNAT_CONTINUE;
}

/* Decrement TTL with the incremental checksum update (RFC 1624); the
 * caller has checked ttl > 1. */
static __always_inline void ip_decrease_ttl(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check;

	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

/* Rewrite MACs and send back out (same interface, send_back()) or
 * XDP_REDIRECT through the devmap. Returns CGNAT_CONTINUE with p->action
 * set, or a reason. */
static __always_inline int forward(struct pkt *p, struct bpf_fib_lookup *fib)
{
	ip_decrease_ttl(p->ip);
	__builtin_memcpy(p->eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == p->ifindex)
		return send_back(p);
	return redirect_to(p, fib->ifindex);
}

#endif /* CGNAT_FWD_H */
