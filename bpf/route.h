/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * route.h - where a packet goes: the kernel FIB, through a route cache.
 *
 * fib_route() asks the kernel FIB (bpf_fib_lookup) for the egress interface
 * and MACs of a packet and returns CGNAT_CONTINUE, CGNAT_PASS_LOCAL (the
 * destination is the router itself, or broadcast) or a drop reason.
 *
 * The lookup is made as if the packet came from FIB_IFINDEX (rodata; the
 * daemon sets the loopback device by default). The kernel refuses lookups
 * (BPF_FIB_LKUP_RET_FWD_DISABLED) unless forwarding is enabled on that
 * device, so enabling it on lo alone lets XDP route while every real
 * interface keeps forwarding off: the kernel itself can forward nothing.
 *
 * Successful answers are kept in the route cache ("routes", see struct
 * cgnat_route in include/cgnat.h) for at most ROUTE_CACHE_NS and until the
 * daemon reports a routing change, so a packet of an established flow
 * normally costs one array access instead of a FIB lookup.
 *
 * A next hop without a neighbour entry (BPF_FIB_LKUP_RET_NO_NEIGH) comes
 * back as CGNAT_DROP_NO_NEIGH with the egress device and the next hop in
 * *fib: egress_ready() (fwd.h) and neigh_wait() (neigh.h) hold the packet
 * while it resolves.
 */
#ifndef CGNAT_ROUTE_H
#define CGNAT_ROUTE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "clock.h"
#include "config.h"
#include "maps.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* The FIB query of the packet being handled, in per-CPU scratch (one
 * packet at a time per CPU); NULL only if the map is broken. */
static __always_inline struct bpf_fib_lookup *packet_fib(void)
{
	__u32 k = 0;

	return bpf_map_lookup_elem(&fib_scratch, &k);
}

/* The route cache's slot of destination daddr and TOS tos: a
 * multiplicative hash, its top bits. */
static __always_inline __u32 route_slot(__be32 daddr, __u8 tos)
{
	return ((daddr ^ (__u32)tos << 24) * 0x9e3779b1u) >> 16;
}

_Static_assert(CGNAT_ROUTE_SLOTS == 1 << 16, "route_slot() takes 16 bits");

/* The cached answer for fib's destination, into *fib (its egress device
 * and MACs) and *mtu: 1 if slot r holds it whole (seq even and unchanged
 * while it was read), of the current generation and young enough; else
 * 0, and fib->ifindex is as it was. */
static __always_inline int route_cached(struct cgnat_route *r, struct bpf_fib_lookup *fib,
					 __u16 *mtu, __u32 gen, __u32 now)
{
	__u32 seq = *(volatile __u32 *)&r->seq, in = fib->ifindex;

	if ((seq & 1) || r->daddr != fib->ipv4_dst || r->tos != fib->tos || r->gen != gen ||
	    now - r->stamp >= (__u32)(ROUTE_CACHE_NS >> CGNAT_TIME_SHIFT))
		return 0;
	fib->ifindex = r->ifindex;
	__builtin_memcpy(fib->smac, r->smac, ETH_ALEN);
	__builtin_memcpy(fib->dmac, r->dmac, ETH_ALEN);
	*mtu = r->mtu;
	asm volatile("" ::: "memory");
	if (*(volatile __u32 *)&r->seq == seq)
		return 1;
	fib->ifindex = in;
	return 0;
}

/* Writes sc->route into slot r, unless another CPU is writing it. */
static __always_inline void route_store(struct cgnat_route *r, struct cgnat_route_scratch *sc)
{
	__u32 seq = *(volatile __u32 *)&r->seq;

	if ((seq & 1) || __sync_val_compare_and_swap(&r->seq, seq, seq + 1) != seq)
		return;
	asm volatile("" ::: "memory");
	r->daddr = sc->route.daddr;
	r->tos = sc->route.tos;
	r->mtu = sc->route.mtu;
	r->ifindex = sc->route.ifindex;
	r->stamp = sc->route.stamp;
	r->gen = sc->route.gen;
	__builtin_memcpy(r->smac, sc->route.smac, ETH_ALEN);
	__builtin_memcpy(r->dmac, sc->route.dmac, ETH_ALEN);
	asm volatile("" ::: "memory");
	__sync_fetch_and_add(&r->seq, 1);
}

/*
 * bpf_fib_lookup() through the route cache: same contract (*fib in, answer
 * in *fib, BPF_FIB_LKUP_RET_* out). A global function, so the verifier
 * checks it once instead of at each of fib_route()'s many inlined sites.
 *
 * A miss asks the FIB; a successful answer is cached together with the
 * path MTU, which the FIB reports only when a packet exceeds it: a second
 * lookup with the largest length asks for it (on a miss only).
 */
__noinline int cgnat_fib_lookup(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
			     __u64 now_ns)
{
	__u32 zero = 0, now = cgnat_time(now_ns), gen;
	struct cgnat_route_scratch *sc;
	struct cgnat_route_gen *g;
	struct cgnat_route *r;
	int rc;

	if (!ctx || !fib)
		return BPF_FIB_LKUP_RET_NOT_FWDED;
	g = ROUTE_CACHE_NS ? bpf_map_lookup_elem(&route_gen, &zero) : 0;
	sc = bpf_map_lookup_elem(&route_scratch, &zero);
	if (!g || !g->enabled || !sc)
		return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);

	gen = g->gen; /* read before the lookup it stamps */
	zero = route_slot(fib->ipv4_dst, fib->tos);
	r = bpf_map_lookup_elem(&routes, &zero);
	if (!r)
		return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (route_cached(r, fib, &sc->route.mtu, gen, now)) {
		if (fib->tot_len > sc->route.mtu) {
			fib->mtu_result = sc->route.mtu;
			return BPF_FIB_LKUP_RET_FRAG_NEEDED;
		}
		return BPF_FIB_LKUP_RET_SUCCESS;
	}

	/* a miss: keep the inputs, which the answer overwrites */
	sc->route.daddr = fib->ipv4_dst;
	sc->route.tos = fib->tos;
	sc->route.gen = gen;
	sc->in_ifindex = fib->ifindex;
	sc->saddr = fib->ipv4_src;
	sc->len = fib->tot_len;
	rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc;
	sc->route.ifindex = fib->ifindex;
	sc->route.stamp = now;
	sc->route.mtu = 0xffff;
	__builtin_memcpy(sc->route.smac, fib->smac, ETH_ALEN);
	__builtin_memcpy(sc->route.dmac, fib->dmac, ETH_ALEN);
	/* the path MTU: ask again with the largest length (FRAG_NEEDED
	 * returns before writing the answer fields) */
	fib->ifindex = sc->in_ifindex;
	fib->ipv4_src = sc->saddr;
	fib->ipv4_dst = sc->route.daddr;
	fib->tot_len = 0xffff;
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), 0) == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		sc->route.mtu = fib->mtu_result;
	route_store(r, sc);
	/* back to the first answer. The MACs need no restoring: FRAG_NEEDED
	 * returns before writing them, and a success (an MTU of 64 KiB)
	 * writes the same route's. (Copying them back made the function's
	 * frame 40 bytes, 64 once rounded, which 6.1 adds to the program's
	 * own against its 512-byte limit.) */
	fib->ifindex = sc->route.ifindex;
	fib->ipv4_dst = sc->route.daddr;
	fib->tot_len = sc->len;
	return BPF_FIB_LKUP_RET_SUCCESS;
}

static __always_inline int fib_route(struct xdp_md *ctx, struct pkt *p,
				     __be32 saddr, __be32 daddr,
				     struct bpf_fib_lookup *fib)
{
	int rc;

	/* the inputs, and 0 in what may hold another lookup's output where
	 * an input shares its place (tos within rt_metric); ports stay 0 */
	fib->family = AF_INET;
	fib->rt_metric = 0;
	fib->tos = p->ip->tos;
	fib->l4_protocol = p->proto;
	fib->tot_len = bpf_ntohs(p->ip->tot_len);
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = FIB_IFINDEX ? FIB_IFINDEX : p->ifindex;

	rc = cgnat_fib_lookup(ctx, fib, p->now);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		return CGNAT_CONTINUE;
	case BPF_FIB_LKUP_RET_NOT_FWDED:
		return CGNAT_PASS_LOCAL;
	case BPF_FIB_LKUP_RET_BLACKHOLE:
	case BPF_FIB_LKUP_RET_UNREACHABLE:
	case BPF_FIB_LKUP_RET_PROHIBIT:
		return CGNAT_DROP_NO_ROUTE;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return CGNAT_DROP_NO_NEIGH; /* fib: egress ifindex, next hop */
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return CGNAT_DROP_FRAG_NEEDED;
	default:
		return CGNAT_DROP_FIB_OTHER;
	}
}

#endif /* CGNAT_ROUTE_H */
