/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * frag.h - fragments and the IP identification field.
 *
 * The first fragment of a datagram holds the L4 header and is translated
 * like a whole datagram (its L4 checksum covers the whole datagram, and the
 * incremental update stays right). Later fragments hold no ports:
 * - from a subscriber to the internet they are translated without state:
 *   the external address is a function of the subscriber's address (paired
 *   pooling) and the new IP ID a function of the old header (below), so
 *   they may arrive in any order (RFC 4787 REQ-14);
 * - inbound and hairpinned ones follow the first fragment's translation,
 *   remembered in the frags map for timeouts.fragment (RFC 6146
 *   FRAGMENT_MIN); one that comes before its first fragment is held in
 *   frag_stash (counted frag_held) and re-run by the daemon through this
 *   program once the first fragment has created the state (a
 *   BPF_PROG_TEST_RUN with live frames, so it is translated and sent by
 *   XDP like any other packet).
 * The frags map is bounded (nat.max_fragments) and separate from the
 * session tables, so a fragment flood cannot touch unfragmented traffic
 * (RFC 4787 REQ-14a): a full map only loses fragments.
 *
 * IP ID (RFC 7857 section 10, RFC 6864 section 5.3.1): every outbound
 * datagram that may be fragmented (DF clear) gets a new ID, a keyed hash of
 * (ID, source, destination, protocol), so datagrams of subscribers sharing
 * an external address do not share IDs toward one destination (but with
 * probability 1/65536 per pair), with no per-datagram state.
 */
#ifndef CGNAT_FRAG_H
#define CGNAT_FRAG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "config.h"
#include "events.h"
#include "fwd.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "route.h"
#include "stash.h"

static __always_inline __be16 frag_id(__be32 saddr, __be32 daddr, __be16 id,
				      __u8 proto)
{
	__u32 x = saddr ^ (daddr * 0x9E3779B1u) ^ (((__u32)id << 16) | proto) ^
		  ID_SECRET;

	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	x ^= x >> 16;
	return (__be16)x;
}

/* New ID for an outbound datagram, from its header before translation. */
static __always_inline void out_fix_id(struct iphdr *ip)
{
	if (!(ip->frag_off & bpf_htons(IP_DF)))
		ip_set_id(ip, frag_id(ip->saddr, ip->daddr, ip->id, ip->protocol));
}

/* The datagram a fragment belongs to, as its header names it now (taken
 * before translation for frag_remember()). */
static __always_inline struct cgnat_frag_key frag_key_of(const struct iphdr *ip)
{
	return (struct cgnat_frag_key){ .saddr = ip->saddr, .daddr = ip->daddr,
					.id = ip->id, .proto = ip->protocol };
}

/* After translating a first fragment: remember how, for the later ones. */
static __always_inline void frag_remember(struct pkt *p,
					  struct cgnat_frag_key *orig,
					  __u32 reason)
{
	struct cgnat_frag f = {};
	struct cgnat_event *ev;

	if (p->frag != FRAG_FIRST)
		return;
	f.saddr = p->ip->saddr;
	f.daddr = p->ip->daddr;
	f.id = p->ip->id;
	f.reason = reason;
	f.created_ns = bpf_ktime_get_coarse_ns();
	bpf_map_update_elem(&frags, orig, &f, BPF_ANY);
	/* later fragments came first: the daemon re-runs them now */
	if (bpf_map_delete_elem(&frag_pending, orig) == 0) {
		ev = event_new(CGNAT_EV_FRAG_READY);
		if (!ev)
			return;
		ev->frag = *orig;
		event_send(ev);
	}
}

/*
 * Hold a later fragment whose first fragment has not been seen (out of
 * order, RFC 4787 REQ-14): copy the frame into frag_stash and mark the
 * datagram pending. Returns CGNAT_FRAG_HELD, or CGNAT_DROP_FRAGMENT when
 * it cannot be held (too big, stash full).
 */
static __always_inline int frag_hold(struct xdp_md *ctx, struct pkt *p,
				     struct cgnat_frag_key *k)
{
	struct cgnat_stash_key sk = { .frag = *k, .frag_off = p->ip->frag_off };
	struct cgnat_stash *st = stash_frame(ctx, p);

	if (!st || bpf_map_update_elem(&frag_stash, &sk, st, BPF_NOEXIST))
		return CGNAT_DROP_FRAGMENT;
	bpf_map_update_elem(&frag_pending, k, &p->now, BPF_ANY);
	return CGNAT_FRAG_HELD;
}

/* A later fragment. CGNAT_CONTINUE when it is not ours. */
static __always_inline int nat_fragment(struct xdp_md *ctx, struct pkt *p,
					__u32 side)
{
	struct iphdr *ip = p->ip;
	struct cgnat_frag_key k = frag_key_of(ip);
	struct bpf_fib_lookup *fib = packet_fib();
	struct cgnat_subscriber *sub;
	struct cgnat_frag *f;
	__be32 ns, nd;
	__be16 nid;
	__u32 reason;
	int rc;

	if (!fib)
		return CGNAT_DROP_FIB_OTHER;
	f = bpf_map_lookup_elem(&frags, &k);
	if (f) {
		ns = f->saddr;
		nd = f->daddr;
		nid = f->id;
		reason = f->reason;
	} else {
		if (lpm_has(&pool_prefixes, ip->daddr) &&
		    ((side & CGNAT_SIDE_EXTERNAL) ||
		     is_internal(ip->saddr)))
			return frag_hold(ctx, p, &k); /* inbound or hairpin */
		if (!(side & CGNAT_SIDE_INTERNAL) ||
		    !is_internal(ip->saddr))
			return CGNAT_CONTINUE;
		sub = bpf_map_lookup_elem(&subscribers, &ip->saddr);
		if (HAS_EXEMPT && lpm_has(&exempt_any, ip->daddr)) {
			ns = ip->saddr; /* exempt: as it is */
			nid = ip->id;
			reason = CGNAT_FWD_EXEMPT;
		} else if (sub) {
			ns = sub->ext_addr;
			nid = frag_id(ip->saddr, ip->daddr, ip->id, ip->protocol);
			reason = CGNAT_FWD_OUT;
		} else {
			return CGNAT_DROP_FRAGMENT; /* no mapping yet */
		}
		nd = ip->daddr;
	}
	/* (no ICMP about a later fragment, RFC 1812 4.3.2.7) */
	rc = egress_ready(ctx, p, fib_route(ctx, p, ns, nd, fib), fib);
	if (rc != CGNAT_CONTINUE)
		return rc;
	ip_set_addr(ip, ADDR_SRC, ns);
	ip_set_addr(ip, ADDR_DST, nd);
	ip_set_id(ip, nid);
	rc = forward(p, fib);
	return rc == CGNAT_CONTINUE ? reason : rc;
}

#endif /* CGNAT_FRAG_H */
